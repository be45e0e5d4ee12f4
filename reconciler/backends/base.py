"""What apply needs from a place that runs jobs: start one, watch it, stop it, serve a model.

What it observes are the frozen records of `reconciler.state` (JobObservation, ServerObservation),
read from the backend's own bookkeeping, so a job started by an earlier (killed) apply is seen
exactly like one started now.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from reconciler.errors import TuneopsError
from reconciler.state import BackendState, JobObservation, ServerObservation

if TYPE_CHECKING:
    from reconciler.jobs.jobfile import JobFile

class BackendError(TuneopsError, RuntimeError):
    """A failure a user can act on, in one line: cannot start a process, a port is busy..."""


class Backend(Protocol):
    """A place that runs `tuneops run` jobs and model servers."""

    name: str

    def observe(self) -> BackendState: ...

    def submit(self, job: JobFile, *, processes: int = 1) -> JobObservation:
        """Start `job` and return at once (phase running)."""
        ...

    def wait(self, kind: str, name: str, fingerprint: str, *, poll: float = 1.0,
             stop_event: threading.Event | None = None) -> JobObservation:
        """Block until that job finishes, even one started by another process."""
        ...

    def serve(self, job: JobFile, *, model_fingerprint: str, model_version: str | None,
              health_timeout: float = 600) -> ServerObservation: ...

    def stop(self, kind: str, name: str) -> list[str]:
        """Stop every live process of this resource; return the handles stopped."""
        ...

    def log_file(self, kind: str, name: str, fingerprint: str | None = None) -> Path | None:
        """The newest log of that resource (of that fingerprint, when given), when it is a local file."""
        ...

    def logs(self, kind: str, name: str, *, fingerprint: str | None = None, tail: int | None = None,
             follow: bool = False) -> Iterator[str] | None:
        """The newest log of that resource, or of its job at `fingerprint`, line by line (None: it
        has not run); `follow` keeps yielding lines until it ends."""
        ...
