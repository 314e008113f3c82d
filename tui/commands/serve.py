"""`runctl serve [ROOT] [--port P] [--host H]`: the terminal UI in a browser, through textual-serve.

textual-serve (the optional extra `runctl[serve]`) starts one `runctl ROOT` process per browser
connection and relays its terminal over a websocket. It has no authentication, so the aiohttp app
it builds is wrapped in a middleware that asks for a random token, as Jupyter does: the URL
printed at start carries it (`?token=...`); that first request also sets a cookie (HttpOnly,
SameSite=Strict) so the page's own requests (static files, the websocket) pass. Anything without
the token, or the cookie, gets 403. The server binds 127.0.0.1 by default and is reached through an
SSH tunnel (`ssh -L 8000:localhost:8000 host`); binding another address needs `--host` and warns.

This is the one module that leans on textual-serve's internals (Server's `_make_app`,
`handle_index`, `on_startup` and `public_url`): pyproject pins textual-serve to the range this was
tested with, and tests/tui/test_serve.py drives the real server with headless Chromium.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import secrets
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from runctl.runs.errors import RunctlError

TOKEN_PARAM = "token"


def run(args: argparse.Namespace) -> int:
    try:
        from textual_serve.server import Server
    except ImportError:
        raise RunctlError("serve needs textual-serve: pip install 'runctl[serve]' (or pip install textual-serve)") \
            from None
    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise RunctlError(f"{root}: no such directory")
    if not 0 < args.port < 65536:
        raise RunctlError(f"--port {args.port}: must be between 1 and 65535")
    token = secrets.token_urlsafe(24)
    if not _is_loopback(args.host):
        sys.stderr.write(f"runctl: warning: serving on {args.host}, reachable from other machines; anyone with "
                         "the URL (its token) controls your runs. The safe way is the default 127.0.0.1 and "
                         f"`ssh -L {args.port}:localhost:{args.port} HOST`\n")
    command = served_command(root, args.engine)
    server = token_server(Server, command, host=args.host, port=args.port, token=token)
    shown_host = "localhost" if _is_loopback(args.host) else args.host
    print(f"runctl serve: open http://{shown_host}:{args.port}/?{TOKEN_PARAM}={token}", flush=True)
    server.serve()
    return 0


def served_command(root: Path, engine: str = "thread") -> str:
    """The shell command textual-serve starts for each browser session: the UI on `root`."""
    return shlex.join([sys.executable, "-m", "runctl", str(root.resolve()), "--engine", engine])


def token_server(server_class: type, command: str, *, host: str, port: int, token: str) -> Any:
    """A textual-serve Server whose every request must carry `token` (query) or its cookie."""
    from aiohttp import web

    cookie = f"runctl_token_{port}"

    @web.middleware
    async def require_token(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        supplied = request.query.get(TOKEN_PARAM)
        if supplied is not None and hmac.compare_digest(supplied.encode(), token.encode()):
            response = await handler(request)
            if not response.prepared:  # a websocket's response is already sent
                response.set_cookie(cookie, token, httponly=True, samesite="Strict", path="/")
            return response
        if hmac.compare_digest(request.cookies.get(cookie, "").encode(), token.encode()):
            return await handler(request)
        raise web.HTTPForbidden(text="runctl serve: this URL needs its token (the URL `runctl serve` printed)\n")

    class TokenServer(server_class):  # type: ignore[misc, valid-type]
        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(require_token)
            return app

        async def handle_index(self, request: web.Request) -> Any:
            # The page's own URLs (static files, the websocket) on the host the browser used, so a
            # tunnel's localhost and 127.0.0.1 both work and the cookie goes with them.
            self.public_url = f"{request.scheme}://{request.host}"
            return await super().handle_index(request)

        async def on_startup(self, app: web.Application) -> None:
            pass  # textual-serve's banner prints a URL without the token

    return TokenServer(command, host=host, port=port, title="runctl")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
