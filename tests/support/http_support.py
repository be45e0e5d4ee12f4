"""HTTP for tests: a webhook endpoint that keeps the JSON it is sent, a client that polls a URL
through a server switch and keeps every failed request, and a proxy that asks for a password."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict] = []
        received = self.received

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()


class Poller:
    """GETs a URL over and over on a thread, as a client would during a switch, keeping every
    answer and every failed request. `wait_for_answers(n)` waits until n more have come."""

    def __init__(self, url: str, pause: float = 0.01) -> None:
        self.url, self.pause = url, pause
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._answered = threading.Condition()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for_answers(self, more: int, timeout: float = 60) -> None:
        """Block until `more` answers have come after this call (a guard, not a measurement)."""
        with self._answered:
            target = len(self.answers) + more
            assert self._answered.wait_for(lambda: len(self.answers) >= target or bool(self.failures),
                                           timeout), f"no answers from {self.url}"

    def _poll(self) -> None:
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not self._stop.is_set():
            try:
                with opener.open(self.url, timeout=30) as response:
                    answer = response.read().decode()
            except (OSError, urllib.error.URLError) as error:
                answer = None
                failure = f"{type(error).__name__}: {error}"
            with self._answered:
                if answer is None:
                    self.failures.append(failure)
                else:
                    self.answers.append(answer)
                self._answered.notify_all()
            self._stop.wait(self.pause)


class BasicAuthProxy:
    """A server in front of another that answers 401 unless a request carries this user and
    password (basic auth), as an MLflow behind an authenticating proxy does; it counts both kinds.
    (`mlflow server --app-name basic-auth` needs the mlflow[auth] extra, which is not installed.)"""

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "proxy-authorization", "proxy-authenticate"}

    def __init__(self, upstream: str, username: str, password: str) -> None:
        self.authorized = 0
        self.refused: list[str] = []
        expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        target = urlsplit(upstream)
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.headers.get("Authorization") != expected:
                    proxy.refused.append(f"{self.command} {self.path}")
                    self._answer(401, {"WWW-Authenticate": 'Basic realm="mlflow"'}, b"")
                    return
                proxy.authorized += 1
                headers = {key: value for key, value in self.headers.items()
                           if key.lower() not in proxy.HOP_BY_HOP and key.lower() != "host"}
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    content = response.read()
                    kept = {key: value for key, value in response.getheaders()
                            if key.lower() not in proxy.HOP_BY_HOP and key.lower() != "content-length"}
                    self._answer(response.status, kept, content)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict[str, str], content: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
