"""What apply needs from a place that runs jobs: start one, watch it, stop it, serve a model.

Observations are frozen records read from the backend's own bookkeeping, so a plan can be
computed from them without touching the world, and a job started by an earlier (killed) apply is
seen exactly like one started now.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from reconciler.jobfile import JobFile

STOPPED = "stopped by tuneops"
"""The message of a job or server ended by `tuneops stop` (or a prune): not a failure of its own."""

JobPhase = Literal["pending", "running", "succeeded", "failed"]
ServerPhase = Literal["starting", "serving", "failed"]


@dataclass(frozen=True)
class JobObservation:
    """The newest attempt of one job: a (kind, name, fingerprint)."""

    kind: str  # "Dataset" | "FineTune" | "Evaluation"
    name: str
    fingerprint: str
    phase: JobPhase
    attempts: int  # attempts made for this (kind, name, fingerprint), this one included
    started_at: float  # unix seconds
    finished_at: float | None
    exit_code: int | None
    message: str  # "" or why it failed, one line
    handle: str  # e.g. "pid 1234"
    log: str | None  # path of its log file


@dataclass(frozen=True)
class ServerObservation:
    """The current model server of one Deployment."""

    name: str  # the Deployment's name
    fingerprint: str  # the Deployment's fingerprint
    model_fingerprint: str  # the FineTune (or BaseModel) being served
    model_version: str | None  # "registered-model/version"
    phase: ServerPhase
    url: str | None
    started_at: float
    message: str
    handle: str
    log: str | None
    # The job file it was started with: its spec and lineage say what a later change changed.
    job: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    # Changed outside tuneops (e.g. `kubectl edit`): what and by whom, one line; "" when not.
    drift: str = ""


@dataclass(frozen=True)
class BackendState:
    """Everything a backend runs or ran, as of one look."""

    jobs: tuple[JobObservation, ...] = ()  # the newest attempt per (kind, name, fingerprint)
    servers: tuple[ServerObservation, ...] = ()  # the current (not stopped) server per Deployment

    def job(self, kind: str, name: str, fingerprint: str) -> JobObservation | None:
        for job in self.jobs:
            if (job.kind, job.name, job.fingerprint) == (kind, name, fingerprint):
                return job
        return None

    def server(self, name: str) -> ServerObservation | None:
        for server in self.servers:
            if server.name == name:
                return server
        return None


class BackendError(RuntimeError):
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
