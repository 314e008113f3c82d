"""Appending JSON lines when a write fails half-way (disk full) or a writer was killed mid-line:
the next line must still be whole, so readers lose only the torn one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from runctl.runs.atomic import JsonlAppender, append_jsonl

REPO = Path(__file__).resolve().parents[2]


def parsed_lines(path: Path) -> list[object]:
    """Each line parsed, or the string "TORN" for a line that is not JSON."""
    out: list[object] = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append("TORN")
    return out


def test_append_after_a_writer_killed_mid_line_starts_a_new_line(tmp_path: Path) -> None:
    for append in (append_jsonl, lambda path, obj: JsonlAppender(path).append(obj)):
        path = tmp_path / f"log-{len(list(tmp_path.iterdir()))}.jsonl"
        path.write_text('{"step":1}\n{"step":2,"lo')  # what a kill -9 during a write leaves
        append(path, {"step": 3})
        assert parsed_lines(path) == [{"step": 1}, "TORN", {"step": 3}]
        append(path, {"step": 4})  # and no extra blank line once the tail is whole
        assert path.read_text().endswith('{"step":3}\n{"step":4}\n')


def test_a_write_cut_short_by_a_full_file_system_leaves_only_that_line_torn(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel refuse bytes past a size (EFBIG), as a full disk refuses them
    # (ENOSPC): a real partial write, in a child so the limit cannot touch this process.
    path = tmp_path / "metrics.jsonl"
    script = textwrap.dedent(f"""
        import os, resource, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from runctl.runs.atomic import JsonlAppender
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        appender = JsonlAppender({str(path)!r})
        appender.append({{"step": 1}})
        size = os.path.getsize({str(path)!r})
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, hard))
        try:
            appender.append({{"step": 2, "text": "x" * 200}})
        except OSError as exc:
            print("failed", exc.errno)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
        appender.append({{"step": 3}})
        appender.close()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("failed"), result.stdout
    assert parsed_lines(path) == [{"step": 1}, "TORN", {"step": 3}]
    assert len(path.read_text().splitlines()[1]) == 20  # the bytes the limit let through
