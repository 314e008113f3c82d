"""FittedDataTable measures its rows of text cells itself: the column widths and the scrollable
size it reaches are the ones Textual's DataTable reaches for the same rows, whatever the cells hold
(wide characters, styles, markup-looking text, empty cells, a line break) and whether rows come all
at once or in two batches."""

from __future__ import annotations

from rich.text import Text
from runctl.tui.widgets.fitted_table import FittedDataTable, text_width
from support.waiting import pilot_wait_for
from textual.app import App, ComposeResult
from textual.widgets import DataTable

ROWS = [
    [Text("gpt-small-lr3e-4  hf-trainer", style="bold"), Text("✔ finished", style="cyan"), Text("6/6")],
    [Text("模型-训练-长名字"), Text("▶ running"), Text("")],
    [Text("[bold]not markup[/bold]"), Text("⚠ interrupted"), Text("12000/100000")],
    [Text("two\nlines here"), Text("-"), Text("😀😀😀😀😀😀😀")],
]
MORE = [[Text("a much longer run name than any before it"), Text("?"), Text("1")]]


class TwoTables(App[None]):
    def compose(self) -> ComposeResult:
        yield FittedDataTable(id="fitted")
        yield DataTable(id="plain")

    def on_mount(self) -> None:
        for table in self.query(DataTable):
            for label in ("Name", "State", "Step"):
                table.add_column(label, key=label)


def _dimensions(table: DataTable) -> tuple[list[int], object]:
    return [column.content_width for column in table.columns.values()], table.virtual_size


async def test_widths_and_size_match_datatables_own_measurement() -> None:
    app = TwoTables()
    async with app.run_test(size=(200, 40)) as pilot:
        fitted, plain = app.query_one("#fitted", DataTable), app.query_one("#plain", DataTable)
        for batch in (ROWS, MORE):
            for table in (fitted, plain):
                for cells in batch:
                    table.add_row(*cells)
            await pilot_wait_for(pilot, lambda: not fitted._require_update_dimensions
                                 and not plain._require_update_dimensions, "both tables measured")
            await pilot.pause()
            assert _dimensions(fitted) == _dimensions(plain)
        assert _dimensions(fitted)[0][0] == text_width(MORE[0][0]) > len("Name")


def test_text_width_is_the_widest_line_in_cells() -> None:
    assert text_width(Text("模型")) == 4
    assert text_width(Text("ab\nabcd")) == 4
    assert text_width(Text("")) == 0
