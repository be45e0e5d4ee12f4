"""HTTP for tests: a webhook endpoint that keeps the JSON it is sent, and a client that polls a URL
through a server switch and keeps every failed request."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict] = []
        received = self.received

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the base class's name
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
