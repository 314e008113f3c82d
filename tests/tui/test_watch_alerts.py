"""`runctl watch` as a user leaves it running: alerts from real engine runs reach a real local HTTP
endpoint through apprise's json:// and a shell command through --exec; history is not news and
one run's repeated event is sent once within the window. (Engine runs in subprocesses, the custom
test task, tests/support/tasks.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli, runctl_running
from support.configs import write_hang_config
from support.filesystems import tmpfs
from support.waiting import wait_for

WAIT_SECONDS = 120.0


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server on a random port; yields its json:// URL and the bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "body": json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def config(path: Path, **model: int) -> Path:
    """Four steps of the test task, a checkpoint every 2; `model` knobs such as nan_at=3."""
    return write_hang_config(path, max_steps=4, checkpoint_every=2, **model)


def test_alerts_reach_an_http_endpoint_and_a_command(tmp_path: Path, endpoint) -> None:
    url, received = endpoint
    root, out = tmp_path / "runs", tmp_path / "alerts.txt"
    root.mkdir()
    trained = run_cli(["train", config(tmp_path / "ok.yaml"), "--root", root, "--name", "old"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    command = f'printf "%s|%s|%s|%s\\n" "$RUNCTL_RUN" "$RUNCTL_EVENT" "$RUNCTL_STATE" "$RUNCTL_MESSAGE" >> {out}'
    with runctl_running(["watch", root, "--notify", url, "--exec", command, "--interval", "0.2"], tmp_path) as watch:
        assert watch.stdout.readline().startswith(f"watching {root}")
        for _ in range(2):  # finished twice within the window: one alert
            assert run_cli(["extend", "old", "--root", root, "--steps", "1"], tmp_path).returncode == 0
        boom = run_cli(["train", config(tmp_path / "nan.yaml", nan_at=3), "--root", root, "--name", "boom"], tmp_path)
        assert boom.returncode == 1, boom.stderr
        # Scans go in order, so every earlier alert was sent before the crash's.
        lines = wait_for(lambda: out.exists() and "boom|crashed" in out.read_text() and out.read_text(),
                         WAIT_SECONDS, "the crash's alert")
        wait_for(lambda: any(r["body"]["title"] == "runctl: boom crashed" for r in received), WAIT_SECONDS,
                 "the crash's POST")
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(30) == 0

    rows = [line.split("|", 3) for line in lines.splitlines()]
    assert [(run, kind) for run, kind, _, _ in rows] == [("old", "finished"), ("boom", "nan"), ("boom", "crashed")]
    assert (rows[0][2], rows[2][2]) == ("finished", "crashed")
    assert rows[0][3] == "old finished at step 5"
    assert rows[2][3].startswith("boom crashed at step 2: ") and "non-finite" in rows[2][3]
    titles = [r["body"]["title"] for r in received]
    assert titles == ["runctl: old finished", "runctl: boom nan", "runctl: boom crashed"]
    assert all(r["path"] == "/hook" for r in received)
    crashed = received[2]["body"]
    assert crashed["message"] == rows[2][3] and crashed["type"] == "failure"
    assert received[0]["body"]["message"] == rows[0][3] and received[0]["body"]["type"] == "success"


def test_runs_deeper_than_the_root_s_children_alert_under_their_path(tmp_path: Path) -> None:
    """As `runctl ls` finds them: a run that appears in ROOT/team/exp/ while watching is found there
    and named by its path under ROOT (its events are news from the first line: it finished)."""
    root, out, elsewhere = tmp_path / "runs", tmp_path / "alerts.txt", tmp_path / "elsewhere"
    (root / "team" / "exp").mkdir(parents=True)
    elsewhere.mkdir()
    trained = run_cli(["train", config(tmp_path / "ok.yaml"), "--root", elsewhere, "--name", "new"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    command = f'printf "%s|%s|%s\\n" "$RUNCTL_RUN" "$RUNCTL_EVENT" "$RUNCTL_RUN_DIR" >> {out}'
    with runctl_running(["watch", root, "--exec", command, "--interval", "0.2"], tmp_path) as watch:
        assert watch.stdout.readline().startswith(f"watching {root}")
        os.rename(elsewhere / "new", root / "team" / "exp" / "new")
        wait_for(lambda: out.exists() and "team/exp/new|finished" in out.read_text(), WAIT_SECONDS,
                 "the nested run's alert")
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(30) == 0
    rows = [line.split("|") for line in out.read_text().splitlines()]
    assert rows == [["team/exp/new", "finished", str(root / "team" / "exp" / "new")]]


def test_a_disk_that_fills_while_a_run_checkpoints_alerts_once(tmp_path: Path) -> None:
    """On a real small file system: the run's checkpoints land while free space is under the
    --disk-free-mb threshold (a ballast file took the rest), and the command hears `disk_low` for
    that run once within the window, beside the run's `finished`."""
    with tmpfs(tmp_path / "disk", "24m") as disk:
        root, out = disk / "runs", tmp_path / "alerts.txt"
        root.mkdir()
        free = shutil.disk_usage(disk).free
        with open(disk / "ballast", "wb") as ballast:  # leaves about 6 MiB free
            ballast.truncate(0)
            ballast.write(b"\0" * (free - 6 * 1024**2))
        command = f'printf "%s|%s|%s\\n" "$RUNCTL_RUN" "$RUNCTL_EVENT" "$RUNCTL_MESSAGE" >> {out}'
        with runctl_running(["watch", root, "--exec", command, "--interval", "0.2", "--disk-free-mb", "8"],
                            tmp_path) as watch:
            assert watch.stdout.readline().startswith(f"watching {root}")
            trained = run_cli(["train", config(tmp_path / "ok.yaml"), "--root", root, "--name", "full"], tmp_path)
            assert trained.returncode == 0, trained.stderr
            wait_for(lambda: out.exists() and "full|finished" in out.read_text(), WAIT_SECONDS, "the finish alert")
            wait_for(lambda: "full|disk_low" in out.read_text(), WAIT_SECONDS, "the disk alert")
            watch.send_signal(signal.SIGTERM)
            assert watch.wait(30) == 0
    rows = [line.split("|", 2) for line in out.read_text().splitlines()]
    disk_rows = [row for row in rows if row[1] == "disk_low"]
    assert len(disk_rows) == 1, rows  # two checkpoints under the threshold, one alert in the window
    assert disk_rows[0][2].startswith("full: disk filling: ") and f"on {root} while it writes checkpoints" in disk_rows[0][2]
    assert sorted(kind for _, kind, _ in rows) == ["disk_low", "finished"]
