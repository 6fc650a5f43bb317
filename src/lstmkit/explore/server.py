"""A tiny local server for the explorer page: 127.0.0.1 only, files inside one folder only, GET and
HEAD only. The page works from file:// as well; the server is a convenience for browsers or
machines where opening local files is awkward (e.g. through an SSH tunnel)."""

from __future__ import annotations

import mimetypes
import os
import sys
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["ExplorerServer", "serve"]

HOST = "127.0.0.1"
_ALLOWED_HOSTS = {"127.0.0.1", "localhost"}


class _Handler(BaseHTTPRequestHandler):
    server_version = "lstmkit-explore"
    sys_version = ""
    root: Path  # set on the subclass made per server

    # Every method other than GET and HEAD, including unknown ones, is answered 405.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _resolve(self) -> tuple[HTTPStatus, Path | None]:
        """The file a request path names, or why not. Decoding happens once; a decoded path with
        '..', a backslash, a NUL or a drive/absolute part is refused, and the resolved file (after
        following links) must still lie inside the root."""
        raw = urlsplit(self.path).path
        path = unquote(raw, errors="strict")
        if "\x00" in path or "\\" in path:
            return HTTPStatus.BAD_REQUEST, None
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." or ":" in p for p in parts):
            return HTTPStatus.FORBIDDEN, None
        try:
            target = self.root.joinpath(*parts).resolve(strict=False)
        except (OSError, RuntimeError):
            return HTTPStatus.NOT_FOUND, None
        if target != self.root and self.root not in target.parents:
            return HTTPStatus.FORBIDDEN, None
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            return HTTPStatus.NOT_FOUND, None
        return HTTPStatus.OK, target

    def _serve(self, body: bool) -> None:
        host = (self.headers.get("Host") or HOST).rsplit(":", 1)[0].strip("[]").lower()
        if host not in _ALLOWED_HOSTS:  # DNS rebinding: a foreign name pointing at 127.0.0.1
            self.send_error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return
        try:
            status, target = self._resolve()
        except UnicodeDecodeError:
            status, target = HTTPStatus.BAD_REQUEST, None
        if target is None:
            self.send_error(status)
            return
        try:
            data = target.read_bytes()
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            sys.stderr.write("explore server: " + (format % args) + "\n")


class ExplorerServer:
    """A running server: ``url``, ``stop()``; also a context manager."""

    def __init__(self, directory: str | os.PathLike[str], port: int = 0, *, verbose: bool = False) -> None:
        root = Path(directory).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"serve: {directory} is not a folder")
        handler = type("Handler", (_Handler,), {"root": root})
        self.httpd = ThreadingHTTPServer((HOST, port), handler)
        self.httpd.daemon_threads = True
        self.httpd.verbose = verbose  # type: ignore[attr-defined]
        self.root = root
        self.host, self.port = self.httpd.server_address[0], int(self.httpd.server_address[1])
        self.url = f"http://{HOST}:{self.port}/"
        self._thread: threading.Thread | None = None

    def start(self) -> ExplorerServer:
        """Serve in a background (daemon) thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="lstmkit-explore", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> ExplorerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    directory: str | os.PathLike[str],
    port: int = 0,
    open_browser: bool = False,
    *,
    block: bool = True,
    verbose: bool = False,
) -> ExplorerServer:
    """Serve ``directory`` at http://127.0.0.1:PORT/ (port 0: any free port).

    With ``block=True`` (the CLI's ``--serve``) it prints the URL and serves until Ctrl-C, then
    returns the stopped server. With ``block=False`` it serves from a background thread and returns
    at once; call ``.stop()`` (or use it as a context manager) when done.
    """
    server = ExplorerServer(directory, port, verbose=verbose)
    if not block:
        server.start()
        if open_browser:
            webbrowser.open(server.url)
        return server
    print(f"Serving {server.root} at {server.url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return server
