"""Hostile requests to the daemon's endpoints (`tuneops reconcile --listen`), over raw sockets
to a real daemon process: each is answered with its status and refused in one log line, never a
traceback, and none makes the daemon's memory or threads grow with what a client sends.

The daemon's repository does not exist, so its ticks fail and back off: the HTTP server is what
is under test, and it must serve whatever the loop does.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.reconcile_support import CLI_ENV
from tests.support.runtime_support import free_port

pytestmark = pytest.mark.slow
SECRET = b"webhook-secret-for-tests"
BODY = b'{"ref": "refs/heads/main", "after": "0123456789abcdef"}'


def signed(body: bytes) -> bytes:
    """The X-Hub-Signature-256 header GitHub sends with this body."""
    return b"X-Hub-Signature-256: sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()


def hook(*headers: bytes, body: bytes = b"") -> bytes:
    lines = b"".join(header + b"\r\n" for header in headers)
    return b"POST /hooks/git HTTP/1.1\r\nHost: daemon\r\n" + lines + b"\r\n" + body


def length(body: bytes) -> bytes:
    return b"Content-Length: %d" % len(body)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body


def read_answer(sock: socket.socket) -> Answer:
    """One HTTP response, read from the socket as it comes (no client library in between)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the daemon closed the connection without an answer (got {data!r})"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(rest) < size:
        chunk = sock.recv(65536)
        assert chunk, "the daemon closed the connection in the middle of its answer"
        rest += chunk
    return Answer(int(lines[0].split()[1]), headers, rest[:size])


class RunningDaemon:
    def __init__(self, root: Path):
        self.port = free_port()
        self.log = root / "daemon.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "reconcile", "--repo", str(root / "nowhere.git"),
             "--interval", "60", "--cache-dir", str(root / "cache"), "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, **CLI_ENV, "TUNEOPS_WEBHOOK_SECRET": SECRET.decode()})
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"the daemon does not answer: {self.log.read_text()}"
            try:
                if self.send(b"GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n").status == 200:
                    break
            except OSError:
                time.sleep(0.2)

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30, source_address=(source, 0))

    def send(self, request: bytes, source: str = "127.0.0.1") -> Answer:
        with self.connect(source) as sock:
            sock.sendall(request)
            return read_answer(sock)

    def usage(self) -> tuple[int, int]:
        """(threads, peak resident memory in KiB) of the daemon, from /proc: the peak, so that a
        body read whole and freed again still counts."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))
        return threads, int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1))

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(30)
        return self.log.read_text()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    running = RunningDaemon(tmp_path_factory.mktemp("daemon"))
    yield running
    log = running.stop()
    assert "Traceback" not in log, log[-3000:]


# (what is sent, the status expected, what its log line says)
HOSTILE = {
    "no Content-Length": (hook(signed(BODY)), 411, "Content-Length is required"),
    "a negative Content-Length": (hook(b"Content-Length: -1", signed(BODY)), 400, "bad Content-Length"),
    "a non-numeric Content-Length": (hook(b"Content-Length: lots", signed(BODY)), 400, "bad Content-Length"),
    "two different Content-Lengths": (hook(b"Content-Length: 3", b"Content-Length: 4"), 400,
                                      "Content-Length"),
    "a chunked body": (hook(b"Transfer-Encoding: chunked", signed(BODY), body=b"5\r\nhello\r\n0\r\n\r\n"),
                       411, "chunked"),
    "a body over the cap, not sent": (hook(b"Content-Length: 400000000", signed(BODY)), 413,
                                      "400000000 bytes is over the 25 MiB limit"),
    "no signature": (hook(length(BODY), body=BODY), 401, "bad or missing X-Hub-Signature-256"),
    "a wrong signature": (hook(length(BODY), b"X-Hub-Signature-256: sha256=" + b"0" * 64, body=BODY), 401,
                          "bad or missing X-Hub-Signature-256"),
    "a non-ASCII signature": (hook(length(BODY), "X-Hub-Signature-256: sha256=é".encode("latin-1"),
                                   body=BODY), 401, "bad or missing X-Hub-Signature-256"),
    "a signature of another body": (hook(length(BODY), signed(b"{}"), body=BODY), 401,
                                    "bad or missing X-Hub-Signature-256"),
    "headers over 16 KiB": (hook(b"X-Padding: " + b"a" * 20000, length(BODY), signed(BODY), body=BODY),
                            431, "headers over 16 KiB"),
    "not HTTP": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40 + b"\r\n\r\n", 400, "400 to"),
    "a non-ASCII path": (b"GET /h\xe9althz HTTP/1.1\r\nHost: d\r\n\r\n", 400, "400 to"),
    # Other paths are the dashboard's, which refuses in one line of the same log.
    "an unknown route": (b"GET /admin%0aFAKE-LINE HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404,
                         "/admin\\nFAKE-LINE"),
    "a page asked for by another host name": (b"GET / HTTP/1.1\r\nHost: d\r\n\r\n", 403, "DNS rebinding"),
    "a write to the dashboard": (b"POST /plan HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405,
                                 "read-only"),
    "the hook read with GET": (b"GET /hooks/git HTTP/1.1\r\nHost: d\r\n\r\n", 405, "POST only"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_request_is_answered_and_refused_in_one_line(daemon: RunningDaemon, case: str):
    request, status, logged = HOSTILE[case]
    answer = daemon.send(request)
    assert answer.status == status, (answer.status, answer.body)
    assert answer.body.strip(), "a refusal says why"
    deadline = time.monotonic() + 30
    while not any(line.startswith("http: ") and logged in line
                  for line in daemon.log.read_text().splitlines()):
        assert time.monotonic() < deadline, f"no log line with {logged!r}: {daemon.log.read_text()[-3000:]}"
        time.sleep(0.1)
    assert "Traceback" not in daemon.log.read_text()
    assert "FAKE-LINE\n" not in daemon.log.read_text(), "a path must not write lines of its own"


def test_a_replayed_delivery_wakes_the_loop_once(daemon: RunningDaemon):
    body = b'{"ref": "refs/heads/main", "after": "%s"}' % os.urandom(8).hex().encode()
    first = hook(length(body), signed(body), b"X-GitHub-Delivery: 11111111-aaaa", body=body)
    assert daemon.send(first).status == 202
    assert daemon.send(first).status == 200  # the same delivery again
    renamed = hook(length(body), signed(body), b"X-GitHub-Delivery: 22222222-bbbb", body=body)
    assert daemon.send(renamed).status == 200  # its body under another delivery id: still a replay
    other = body.replace(b"main", b"mainline")
    assert daemon.send(hook(length(other), signed(other), body=other)).status == 202
    log = daemon.log.read_text()
    assert log.count("webhook: delivery 11111111-aaaa accepted: reconciling now") == 1
    assert "webhook: delivery 22222222-bbbb was accepted before (a replay)" in log


def test_hostile_clients_leave_memory_and_threads_bounded(daemon: RunningDaemon):
    threads_before, memory_before = daemon.usage()

    # 300 idle connections from one address: no thread each, at most 32 held, and the probe
    # from another address is answered while they are open (127.0.0.2 is loopback too).
    idle = [daemon.connect("127.0.0.2") for _ in range(300)]
    assert daemon.send(b"GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n", source="127.0.0.3").status == 200
    threads_idle, _ = daemon.usage()
    assert threads_idle <= threads_before + 2, (threads_before, threads_idle)
    for sock in idle:  # each is refused (503) or, idle too long, closed by the daemon
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data == b"" or data.startswith(b"HTTP/1.1 503 "), data
        sock.close()

    # A negative Content-Length followed by 400 MB: refused at the headers, the rest unread.
    with daemon.connect() as sock:
        sock.sendall(hook(b"Content-Length: -1", signed(BODY)))
        assert read_answer(sock).status == 400
        sent = blast(sock, 400 * 2**20)
    assert sent < 64 * 2**20, f"the daemon read {sent} bytes of a refused body"

    # A body over the cap sent anyway: 413 at the headers, the connection closed unread.
    with daemon.connect() as sock:
        sock.sendall(hook(b"Content-Length: 419430400", signed(BODY)))
        assert read_answer(sock).status == 413
        sent = blast(sock, 400 * 2**20)
    assert sent < 64 * 2**20, f"the daemon read {sent} bytes of a body over the cap"

    # A body at the cap with a wrong signature: hashed as it streams in, never kept.
    size = 25 * 2**20
    with daemon.connect() as sock:
        sock.sendall(hook(b"Content-Length: %d" % size, b"X-Hub-Signature-256: sha256=" + b"0" * 64))
        blast(sock, size)
        assert read_answer(sock).status == 401

    threads_after, memory_after = daemon.usage()
    assert threads_after <= threads_before + 2, (threads_before, threads_after)
    grown = memory_after - memory_before
    assert grown < 48 * 1024, f"peak resident memory grew {grown} KiB"
    log = daemon.log.read_text()
    assert "Traceback" not in log
    assert "http: 503 to 127.0.0.2:" in log and "too many connections" in log


def blast(sock: socket.socket, size: int) -> int:
    """Send up to `size` bytes; return how many the daemon took before it closed the connection."""
    chunk, sent = b"x" * 2**20, 0
    try:
        while sent < size:
            sent += sock.send(chunk[: size - sent])
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_a_port_that_is_taken_fails_the_start_in_one_line(daemon: RunningDaemon, tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "reconcile", "--repo", str(tmp_path / "nowhere.git"),
         "--cache-dir", str(tmp_path / "cache"), "--listen", f"127.0.0.1:{daemon.port}"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **CLI_ENV})
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{daemon.port}: address already in use" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
