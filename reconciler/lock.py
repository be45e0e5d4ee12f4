"""One apply at a time per state folder.

An exclusive `flock` on `.tuneops/apply.lock`: the kernel drops it when its holder dies, so a
lock left by a killed apply is taken over without any staleness guess. The file says who holds
it, for the message the second apply prints.
"""

from __future__ import annotations

import datetime
import fcntl
import os
from pathlib import Path

from reconciler.errors import TemporaryError

LOCK_FILE = "apply.lock"


class Locked(TemporaryError, RuntimeError):
    """Another apply holds the lock; the message names its PID and start time."""


class ApplyLock:
    def __init__(self, state_dir: Path, name: str = LOCK_FILE,
                 busy: str = "another `tuneops apply` is running on this project; wait for it, or stop "
                             "it (its jobs keep running and the next apply adopts them)"):
        self.path = state_dir / name
        self.busy = busy
        self._handle: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            os.close(handle)
            raise Locked(f"{self.path} is locked by {holder}: {self.busy}") from None
        now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"PID {os.getpid()} since {now}\n".encode(), 0)
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            os.ftruncate(self._handle, 0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> ApplyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
