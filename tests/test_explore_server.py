"""The explorer's local server: 127.0.0.1 only, files inside its folder only, GET and HEAD only."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lstmkit.explore import ExplorerServer, serve


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ExplorerServer, Path]]:
    base = tmp_path_factory.mktemp("serve")
    root = base / "explore"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>ok</title>explorer page", encoding="utf-8")
    (root / "sub").mkdir()
    (root / "sub" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (base / "secret.txt").write_text("do not serve", encoding="utf-8")
    os.symlink(base / "secret.txt", root / "link.txt")
    server = serve(root, port=0, block=False)
    yield server, root
    server.stop()


def request(server: ExplorerServer, method: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    # skip_host lets us send the raw path and our own Host header, exactly as written
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or f"127.0.0.1:{server.port}")
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_binds_loopback_and_serves_the_page(site: tuple[ExplorerServer, Path]) -> None:
    server, _ = site
    assert server.httpd.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/"
    for path in ("/", "/index.html", "/?x=1"):
        status, body = request(server, "GET", path)
        assert status == 200 and b"explorer page" in body
    status, body = request(server, "HEAD", "/index.html")
    assert status == 200 and body == b""
    assert request(server, "GET", "/sub/a.png") == (200, b"\x89PNG\r\n\x1a\n")
    assert request(server, "GET", "/missing.html")[0] == 404
    assert request(server, "GET", "/", host="localhost")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/..%2fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/sub/../../secret.txt",
        "/link.txt",  # a link inside that points outside
        "//etc/passwd",
        "/%00index.html",
        "/%ff",
    ],
)
def test_refuses_anything_outside_the_folder(site: tuple[ExplorerServer, Path], path: str) -> None:
    server, _ = site
    status, body = request(server, "GET", path)
    assert status in (400, 403, 404), (path, status)
    assert b"do not serve" not in body and b"root:" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_only_get_and_head(site: tuple[ExplorerServer, Path], method: str) -> None:
    server, _ = site
    assert request(server, method, "/index.html")[0] == 405


def test_refuses_foreign_host_header(site: tuple[ExplorerServer, Path]) -> None:
    server, _ = site
    assert request(server, "GET", "/", host="evil.example:80")[0] == 403


def test_stop_releases_the_port(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("x", encoding="utf-8")
    with serve(tmp_path, block=False) as server:
        assert request(server, "GET", "/")[0] == 200
        port = server.port
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/")
    with pytest.raises(FileNotFoundError):
        ExplorerServer(tmp_path / "nope")
