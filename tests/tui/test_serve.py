"""`runctl serve` end to end: headless Chromium (Debian's `chromium`, driven by Playwright) loads
the page with the printed token, sees the runs list in the terminal stream, opens a run with Enter;
requests without the token, with a wrong one, or to the websocket without the cookie get 403.

The terminal is drawn on a canvas, so the test reads what the app sends: the websocket frames
carry the terminal output, in which the run's name and the run view's tab labels appear as text.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from support.cli import free_port
from support.run_view import write_run
from support.waiting import wait_for

CHROMIUM = shutil.which("chromium")
WAIT_SECONDS = 90.0
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's "
                                                          "chromium with apt-get; here it could not be)")


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError as err:
        if isinstance(err.reason, ConnectionRefusedError):
            return 0  # not listening yet
        raise


@needs_chromium
def test_the_ui_in_a_browser_with_the_token_and_403_without(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    root = tmp_path / "runs"
    root.mkdir()
    write_run(root, "alpha")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "runctl", "serve", root, "--port", str(port), "--engine",
                               "process"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        line = server.stdout.readline()
        assert line.startswith(f"runctl serve: open http://localhost:{port}/?token="), line + server.stderr.read()
        url = line.split("open ", 1)[1].strip()
        token = url.split("token=", 1)[1]
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: status_of(f"{base}/") == 403, WAIT_SECONDS, "the server to answer", interval=0.1)
        assert status_of(f"{base}/?token=wrong{token}") == 403
        assert status_of(f"{base}/static/js/textual.js") == 403
        assert status_of(f"{base}/ws", {"Connection": "Upgrade", "Upgrade": "websocket",
                                        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZQ=="}) == 403
        assert status_of(f"{base}/?token={token}") == 200

        received: list[str] = []

        def on_websocket(ws) -> None:
            ws.on("framereceived", lambda payload: received.append(
                payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload))

        def wait_to_see(page, text: str, what: str) -> None:
            """Playwright delivers frames while it runs, so the wait is its own (not a sleep)."""
            deadline = time.monotonic() + WAIT_SECONDS
            while text not in "".join(received):
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                page.wait_for_timeout(100)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                page = browser.new_page()
                page.on("websocket", on_websocket)
                page.goto(url)
                wait_to_see(page, "alpha", "the runs list in the browser")
                # The session's UI is a process of the server's, started with the engine host asked for.
                uis = [child.cmdline() for child in psutil.Process(server.pid).children(recursive=True)
                       if "runctl" in child.cmdline() and "serve" not in child.cmdline()]
                assert [cmd[-3:] for cmd in uis] == [[str(root.resolve()), "--engine", "process"]], uis
                assert "Checkpoints" not in "".join(received)
                page.locator("textarea.xterm-helper-textarea").focus()  # keys, not a click, reach the app
                page.keyboard.press("Enter")
                wait_to_see(page, "Checkpoints", "Enter to open the run view (its tabs)")
            finally:
                browser.close()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def test_another_address_than_loopback_warns(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "runctl", "serve", tmp_path, "--host", "0.0.0.0", "--port",
                               str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        warning = server.stderr.readline()
        assert warning.startswith("runctl: warning: serving on 0.0.0.0, reachable from other machines")
        assert f"ssh -L {port}:localhost:{port}" in warning
        assert server.stdout.readline().startswith(f"runctl serve: open http://0.0.0.0:{port}/?token=")
        wait_for(lambda: status_of(f"http://127.0.0.1:{port}/") == 403, WAIT_SECONDS,
                 "the server to refuse a request without token", interval=0.1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_a_bad_engine_host_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "runctl", "serve", tmp_path, "--engine", "gpu"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--engine: invalid choice: 'gpu'" in result.stderr
