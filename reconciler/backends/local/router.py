"""`python -m reconciler.backends.local.router --listen HOST:PORT --upstream-file PATH`: a Deployment's
front port on the local backend, forwarding each request to the model server named in PATH.

Why a front port of its own: a version switch must not refuse a single request. The new version
starts beside the old one on a port of its own, and only once it answers its health check as the
process that was started does the backend rewrite PATH; every request after that goes to the new
version, the old one finishes what it was answering and is stopped. This is what a Kubernetes
Service in front of a rolling update does. Loading the new model into the old server process
instead would save the hop, but a start that fails hard (out of memory, a crash in a native
library) would take the serving version down with it, and the backend could no longer run any
server command it likes; here a failed start touches nothing that serves.

A request the upstream refused, or closed without answering (the old version stopping at that
moment), is sent again to whatever PATH names then: the model server's routes have no side
effects, so a repeat is safe. Standard library only: it starts in a moment and never fails to
import.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

RETRY_SECONDS = 2.0  # how long a refused request keeps being tried before the client gets 502
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


class Upstream:
    """The model server behind the front port: PATH read again whenever it changes (the backend
    replaces it atomically), so a switch needs no signal and takes effect for the next request."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._address: tuple[str, int] | None = None

    def address(self) -> tuple[str, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if seen != self._seen:
                self._seen, self._address = seen, self._read()
            return self._address

    def _read(self) -> tuple[str, int] | None:
        try:
            route = json.loads(self.path.read_text(encoding="utf-8"))
            url = urlsplit(route["url"])
            address = (url.hostname or "127.0.0.1", url.port or 80)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        print(f"forwarding to {route['url']} ({route.get('version') or 'unversioned'})", flush=True)
        return address


class NoUpstream(Exception):
    """No model server answered: the client gets this status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def send_upstream(upstream: Upstream, method: str, path: str, body: bytes,
                  headers: dict[str, str]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """The upstream's response, trying again (at PATH's upstream of the moment) when a request is
    refused or dropped unanswered; raises NoUpstream when none answers within RETRY_SECONDS."""
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        address = upstream.address()
        if address is None:
            raise NoUpstream(503, "no model server is behind this port yet")
        connection = http.client.HTTPConnection(*address, timeout=RETRY_SECONDS)
        try:
            connection.connect()
            connection.sock.settimeout(None)  # generating an answer takes as long as it takes
            connection.request(method, path, body=body, headers={**headers, "Connection": "close"})
            return connection, connection.getresponse()
        except (ConnectionError, http.client.BadStatusLine, TimeoutError) as error:
            connection.close()
            if time.monotonic() >= deadline:
                raise NoUpstream(502, f"the model server at {address[0]}:{address[1]} did not answer: "
                                      f"{error}") from None
            time.sleep(0.02)


class Forward(BaseHTTPRequestHandler):
    """Every method, every path: the request as received, the response as the upstream sent it."""

    protocol_version = "HTTP/1.1"
    upstream: Upstream  # set on the subclass main() makes

    def do_GET(self) -> None:
        self.forward()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def forward(self) -> None:
        body = self._body()
        if body is None:
            return
        headers = {key: value for key, value in self.headers.items() if key.lower() not in HOP_BY_HOP}
        try:
            connection, response = send_upstream(self.upstream, self.command, self.path, body, headers)
        except NoUpstream as error:
            self._error(error.status, str(error), "server_error")
            return
        try:
            self._relay(response)
        finally:
            connection.close()

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._error(411, "send the request body with a Content-Length", "invalid_request_error")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._error(400, "Content-Length is not a number", "invalid_request_error")
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        length = response.getheader("Content-Length")
        bodiless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        chunked = length is None and not bodiless
        if length is not None:
            self.send_header("Content-Length", length)
        if chunked:  # a streamed answer stays streamed
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if bodiless:
            return
        try:
            while data := response.read1(65536):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (ConnectionError, http.client.HTTPException):
            self.close_connection = True  # cut off mid-answer: the client must not wait for more

    def _error(self, status: int, message: str, kind: str) -> None:
        """OpenAI's error body, as the model server would answer it."""
        body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per request would fill the log with health checks


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # clients that arrive together all wait in the queue


def parse(argv: list[str]) -> tuple[str, int, Path]:
    usage = "usage: python -m reconciler.backends.local.router --listen HOST:PORT --upstream-file PATH"
    if len(argv) != 4 or argv[0] != "--listen" or argv[2] != "--upstream-file":
        raise SystemExit(usage)
    host, _, port = argv[1].rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(usage)
    return host, int(port), Path(argv[3])


def main(argv: list[str] | None = None) -> int:
    host, port, path = parse(sys.argv[1:] if argv is None else argv)
    handler = type("ForwardTo", (Forward,), {"upstream": Upstream(path)})
    try:
        server = FrontServer((host, port), handler)
    except OSError as error:
        print(f"error: cannot listen on {host}:{port}: {(error.strerror or str(error)).lower()}",
              file=sys.stderr, flush=True)
        return 1

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"front port {host}:{port} open, forwarding to the server in {path}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
