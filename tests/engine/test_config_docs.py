"""The config's documentation is generated from its model: README's key table, ARCHITECTURE's schema
block and the listing's run.yaml keys fail here when they drift from engine/schema.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runctl.engine.config_docs import config_table, stale_files
from runctl.engine.schema import CONFIG_KEYS, LISTING_KEYS, SECTIONS
from runctl.runs import run_yaml

REPO = Path(__file__).resolve().parents[2]


def test_generated_docs_match_the_model() -> None:
    stale = stale_files(REPO)
    assert stale == [], f"{stale} differ from engine/schema.py: run python -m runctl.engine.config_docs --write"


def test_the_check_command_reports_a_stale_file(tmp_path: Path) -> None:
    for name in ("README.md", "docs/ARCHITECTURE.md", "runs/run_yaml.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((REPO / name).read_text())
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| `optim.lr` | `0.001` |", "| `optim.lr` | `0.01` |"))
    assert stale_files(tmp_path) == [readme]
    result = subprocess.run([sys.executable, "-m", "runctl.engine.config_docs"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_table_has_every_key() -> None:
    table = config_table()
    keys = [key for key in CONFIG_KEYS if key not in SECTIONS and key != "model"]
    keys += [f"{section}.{key}" for section, fields in SECTIONS.items() for key in fields]
    for key in keys:
        assert f"| `{key}` |" in table, key


def test_listing_reads_the_models_listing_keys() -> None:
    assert run_yaml._LISTING_KEYS == frozenset(LISTING_KEYS)
