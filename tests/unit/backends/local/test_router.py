"""A Deployment's front port (reconciler/backends/local/router.py) as a real process, in front of real
HTTP servers: it forwards requests as they came, follows its upstream file, and says in OpenAI's
error shape when no model server answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.backends.local.processes import free_port
from reconciler.fileio import write_text_atomic


class Upstream:
    """An HTTP server that answers every request with what it received, labelled."""

    def __init__(self, label: str, *, close_delimited: bool = False) -> None:
        class Echo(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0" if close_delimited else "HTTP/1.1"

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.dumps({"label": label, "method": self.command, "path": self.path,
                                   "body": self.rfile.read(length).decode(),
                                   "header": self.headers.get("X-Request-Id")}).encode()
                self.send_response(418 if self.path == "/teapot" else 200)
                self.send_header("Content-Type", "application/json")
                if not close_delimited:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def point(route: Path, url: str) -> None:
    write_text_atomic(route, json.dumps({"url": url, "version": "sft/1"}) + "\n")


def call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"X-Request-Id": "r-17"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def start_router(port: int, route: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "reconciler.backends.local.router", "--listen", f"127.0.0.1:{port}",
            "--upstream-file", str(route)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    route, port = tmp_path / "routes" / "bot.json", free_port()
    router = start_router(port, route)
    try:
        assert router.stdout.readline().startswith(f"front port 127.0.0.1:{port} open")
        yield f"http://127.0.0.1:{port}", route
    finally:
        router.terminate()
        router.communicate(timeout=30)


def test_a_request_is_forwarded_as_it_came_and_answered_as_the_upstream_answered(front) -> None:
    url, route = front
    upstream = Upstream("v1")
    try:
        point(route, upstream.url)
        status, answer = call(f"{url}/v1/completions?x=1", b'{"prompt": "hi"}')
        assert status == 200
        assert answer == {"label": "v1", "method": "POST", "path": "/v1/completions?x=1",
                          "body": '{"prompt": "hi"}', "header": "r-17"}
        assert call(f"{url}/teapot")[0] == 418
    finally:
        upstream.close()


def test_the_next_request_goes_where_the_upstream_file_points_now(front) -> None:
    url, route = front
    old, new = Upstream("v1"), Upstream("v2", close_delimited=True)
    try:
        point(route, old.url)
        assert call(f"{url}/health")[1]["label"] == "v1"
        point(route, new.url)
        assert call(f"{url}/health")[1]["label"] == "v2"  # a body without a length is relayed whole
        old.close()  # nothing goes to the old one any more
        assert [call(f"{url}/health")[1]["label"] for _ in range(3)] == ["v2"] * 3
    finally:
        new.close()


def test_without_a_model_server_the_client_is_told_so_in_openais_shape(front) -> None:
    url, route = front
    status, answer = call(f"{url}/health")
    assert status == 503 and answer["error"]["message"] == "no model server is behind this port yet"
    point(route, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    status, answer = call(f"{url}/v1/models")
    assert status == 502 and answer["error"]["type"] == "server_error"
    assert answer["error"]["message"].startswith("the model server at 127.0.0.1:")


def test_a_port_that_cannot_be_bound_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        router = start_router(port, tmp_path / "route.json")
        _, stderr = router.communicate(timeout=30)
    assert router.returncode == 1
    assert stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: address already in use"


def test_sigterm_closes_the_front_port(tmp_path: Path) -> None:
    port = free_port()
    router = start_router(port, tmp_path / "route.json")
    router.stdout.readline()
    router.terminate()
    assert router.wait(30) == 0
    router.communicate()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
