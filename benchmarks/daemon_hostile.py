"""What hostile clients cost the reconcile daemon's HTTP endpoints: its threads and peak memory.

    python benchmarks/daemon_hostile.py [--idle 300] [--megabytes 400]

The daemon (`tuneops reconcile --listen`, a real process, a repository that does not exist so
its ticks only fail and back off) is sent, in turn: `--idle` connections that send nothing, then
a `POST /hooks/git` with `Content-Length: -1` followed by `--megabytes` of body, then one with a
Content-Length over the cap followed by the same. After each, its thread count and peak resident
memory (`VmHWM`) are read from /proc, with how much of each body the daemon took before it
closed the connection. Target (issue 16): neither grows with what a client sends.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, git_commit, print_table

SECRET = b"benchmark-secret"
BODY = b'{"ref": "refs/heads/main"}'


def usage(pid: int) -> tuple[int, float]:
    """(threads, peak resident memory in MiB) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))
    return threads, int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024


def post(port: int, length: bytes, megabytes: int) -> tuple[str, int]:
    """The daemon's status line, and how many body bytes it took before closing."""
    signature = b"sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest().encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /hooks/git HTTP/1.1\r\nHost: d\r\nContent-Length: " + length
                     + b"\r\nX-Hub-Signature-256: " + signature + b"\r\n\r\n")
        chunk, sent = b"x" * 2**20, 0
        try:
            while sent < megabytes * 2**20:
                sent += sock.send(chunk)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            answer = sock.recv(200).split(b"\r\n")[0].decode("latin-1") or "(closed)"
        except OSError as error:
            answer = f"({error.strerror or error})"
    return answer, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--megabytes", type=int, default=400)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="daemon-hostile-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "reconcile", "--repo", str(folder / "nowhere.git"), "--interval",
         "60", "--cache-dir", str(folder / "cache"), "--listen", f"127.0.0.1:{port}"],
        cwd=HERE.parent, stdout=(folder / "daemon.log").open("w"), stderr=subprocess.STDOUT,
        env={**os.environ, "TUNEOPS_WEBHOOK_SECRET": SECRET.decode()})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit(f"the daemon did not listen: see {folder / 'daemon.log'}") from None
                time.sleep(0.2)
        rows = [["after", "threads", "peak RSS (MiB)", "answer", "body sent until closed (MiB)"]]
        threads, peak = usage(daemon.pid)
        rows.append(["start", str(threads), f"{peak:.1f}", "", ""])
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(options.idle)]
        time.sleep(2)
        threads, peak = usage(daemon.pid)
        rows.append([f"{options.idle} idle connections", str(threads), f"{peak:.1f}", "", ""])
        for sock in idle:
            sock.close()
        for label, length in (("Content-Length: -1", b"-1"), ("Content-Length over the cap", b"419430400")):
            answer, sent = post(port, length, options.megabytes)
            time.sleep(1)
            threads, peak = usage(daemon.pid)
            rows.append([f"{label} + {options.megabytes} MB", str(threads), f"{peak:.1f}", answer,
                         f"{sent / 2**20:.0f}"])
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    print(f"commit {git_commit()}; Python {sys.version.split()[0]}; {os.cpu_count()} cores")
    print_table(rows)


if __name__ == "__main__":
    main()
