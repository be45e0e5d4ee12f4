"""The local backend: jobs and model servers as processes on this machine, remembered in SQLite.

`LocalBackend` is what the rest of tuneops talks to. Its processes run under the supervisor and
are recorded in the process table (processes.py, table.py), so any later tuneops finds them; a
Deployment's server is started and switched behind its front port by servers.py. Here: jobs,
what runs now, stopping, and reading logs.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from reconciler.backends.base import BackendError
from reconciler.backends.local.processes import (
    ArgvForJobFile,
    LocalProcesses,
    free_port,
    job_argv,
    job_environment,
)
from reconciler.backends.local.servers import LocalServers, server_observation
from reconciler.backends.local.table import (
    ROUTER_KIND,
    SERVER_KIND,
    Row,
    current_routers,
    current_servers,
    newest_job,
    newest_jobs,
    rows,
    unfinished_rows,
)
from reconciler.jobs.jobfile import JobFile
from reconciler.redaction import redact, redact_lines
from reconciler.specs.confinement import FILE_ROOTS_ENV, FileRoots
from reconciler.state import STOPPED, BackendState, JobObservation, ServerObservation


class LocalBackend:
    """Runs `tuneops run` as supervised processes under `state_dir` (usually `<spec root>/.tuneops`).

    `serve_argv` builds a model server's command from its job file; the default is `tuneops run serve`.
    `file_roots` are the folders its jobs may read file:// paths from (default: the spec repository
    `state_dir` belongs to); jobs learn them from the environment, not from their job file.
    `credentials`: environment variables every job and server gets (the tracking URI's credentials,
    which its job file does not hold).
    """

    name = "local"

    def __init__(self, state_dir: Path, *, python: str = sys.executable,
                 port_range: tuple[int, int] = (8000, 8999),
                 serve_argv: ArgvForJobFile | None = None, file_roots: FileRoots | None = None,
                 credentials: Mapping[str, str] | None = None, jobs_at_once: int = 1) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.jobs_at_once = max(1, jobs_at_once)  # local.maxParallel: the jobs sharing this machine's cores
        self.file_roots = file_roots or FileRoots.of_project(self.state_dir.parent)
        self.credentials = dict(credentials or {})
        self.python = python
        self.processes = LocalProcesses(self.state_dir, python)
        self.database = self.processes.database
        self.servers = LocalServers(self.processes, port_range=port_range, serve_argv=serve_argv,
                                    environment_of=self._job_environment)

    # -- jobs --------------------------------------------------------------------------------------

    def observe(self) -> BackendState:
        if not self.processes.table_exists():  # nothing was ever started here; looking must not create it
            return BackendState((), ())
        with self.processes.table() as table:
            self.processes.refresh(table, unfinished_rows(table))
            jobs = tuple(self._job_observation(row) for row in newest_jobs(table))
            servers, routers = current_servers(table), current_routers(table)
        return BackendState(jobs=jobs, servers=tuple(server_observation(row, routers.get(row["name"]))
                                                     for row in servers))

    def submit(self, job: JobFile, *, processes: int = 1) -> JobObservation:
        if job.kind == SERVER_KIND:
            raise BackendError(f"Deployment {job.name}: a model server is started by serve(), not submit()")
        master_port = free_port() if processes > 1 else None
        return self.start_process(
            job.kind, job.name, job.fingerprint,
            lambda job_file: job_argv(job, job_file, processes=processes, python=self.python,
                                      master_port=master_port),
            job_text=job.to_json(), environment=self._job_environment(job))

    def start_process(self, kind: str, name: str, fingerprint: str, argv: Sequence[str] | ArgvForJobFile,
                      *, job_text: str | None = None,
                      environment: Mapping[str, str] | None = None) -> JobObservation:
        """Start any command as an attempt of (kind, name, fingerprint); `argv` may be built from the
        job file's path. Tests start plain `python -c` commands this way."""
        row = self.processes.start(kind, name, fingerprint, argv, job_text=job_text, environment=environment)
        return self._job_observation({**row, "attempts": row["attempt"]})

    def wait(self, kind: str, name: str, fingerprint: str, *, poll: float = 0.25,
             stop_event: threading.Event | None = None) -> JobObservation:
        """A job on this machine, looked at four times a second (a row of SQLite and a pid): the
        next step starts as soon as this one ends, not up to a second later."""
        while True:
            with self.processes.table() as table:
                key = (kind, name, fingerprint)
                where = "kind = ? AND name = ? AND fingerprint = ?"
                self.processes.refresh(table, unfinished_rows(table, where, key))
                row = newest_job(table, *key)
            if row is None:
                raise BackendError(f"{kind} {name}: no job with fingerprint {fingerprint[:16]} was started")
            job = self._job_observation(row)
            if job.phase != "running":
                return job
            if stop_event is not None:
                if stop_event.wait(poll):
                    return job
            else:
                time.sleep(poll)

    def stop(self, kind: str, name: str) -> list[str]:
        kinds = (SERVER_KIND, ROUTER_KIND) if kind == SERVER_KIND else (kind, kind)  # with its front port
        with self.processes.table() as table:
            live = rows(table, "kind IN (?, ?) AND name = ? AND stopped = 0", (*kinds, name))
        stopped = self.processes.stop_rows(live)
        if kind == SERVER_KIND:  # its front port is gone: where it forwarded means nothing now
            (self.state_dir / "routes" / f"{name}.json").unlink(missing_ok=True)
        return stopped

    def log_file(self, kind: str, name: str, fingerprint: str | None = None) -> Path | None:
        if not self.processes.table_exists():
            return None
        with self.processes.table() as table:
            if fingerprint is None:
                found = rows(table, "kind = ? AND name = ? ORDER BY id DESC LIMIT 1", (kind, name))
            else:
                found = rows(table, "kind = ? AND name = ? AND fingerprint = ? ORDER BY id DESC LIMIT 1",
                             (kind, name, fingerprint))
        return Path(found[0]["log_path"]) if found else None

    def logs(self, kind: str, name: str, *, fingerprint: str | None = None, tail: int | None = None,
             follow: bool = False) -> Iterator[str] | None:
        log = self.log_file(kind, name, fingerprint)
        if log is None or not log.is_file():
            return None
        return self._log_lines(log, kind, name, tail, follow)

    def _log_lines(self, log: Path, kind: str, name: str, tail: int | None, follow: bool) -> Iterator[str]:
        """The log's lines (only the last `tail`, read from the end: a log of gigabytes costs what
        its tail does), then, with `follow`, each new line until the job or server ends."""
        with log.open("rb") as handle:
            lines = last_lines(handle, tail) if tail else handle.readlines()
            yield from redact_lines(line.decode("utf-8", "replace") for line in lines)
            while follow:
                line = handle.readline()
                if line:
                    yield redact(line.decode("utf-8", "replace"))
                elif self._running(kind, name):
                    time.sleep(0.5)
                else:
                    return

    def _running(self, kind: str, name: str) -> bool:
        state = self.observe()
        if kind == "Deployment":
            server = state.server(name)
            return server is not None and server.is_live
        return any(j.kind == kind and j.name == name and j.is_live
                   for j in state.jobs)

    # -- model servers -----------------------------------------------------------------------------

    def serve(self, job: JobFile, *, model_fingerprint: str, model_version: str | None,
              health_timeout: float = 600) -> ServerObservation:
        """Start the new version beside the one serving and switch the Deployment's front port to
        it once it answers as the process started (servers.py)."""
        return self.servers.serve(job, model_fingerprint=model_fingerprint, model_version=model_version,
                                  health_timeout=health_timeout)

    def _job_environment(self, job: JobFile) -> dict[str, str]:
        return {**job_environment(job, credentials=self.credentials, jobs_at_once=self.jobs_at_once),
                FILE_ROOTS_ENV: self.file_roots.environment_value()}

    # -- observations ------------------------------------------------------------------------------

    def _job_observation(self, row: Row) -> JobObservation:
        if row["finished_at"] is None:
            phase = "running"
        else:
            phase = "succeeded" if row["exit_code"] == 0 and row["message"] != STOPPED else "failed"
        return JobObservation(
            kind=row["kind"], name=row["name"], fingerprint=row["fingerprint"], phase=phase,
            attempts=row["attempts"], started_at=row["started_at"], finished_at=row["finished_at"],
            exit_code=row["exit_code"], message=redact(row["message"]), handle=f"pid {row['pid']}",
            log=row["log_path"])


def last_lines(handle: BinaryIO, count: int, block: int = 64 * 1024,
               max_bytes: int = 8 * 1024 * 1024) -> list[bytes]:
    """The last `count` lines of a binary file, read backwards a block at a time (at most
    `max_bytes` of them: a line longer than that is cut); the handle is left at the end, where
    a follow goes on reading."""
    end = handle.seek(0, os.SEEK_END)
    position, buffer = end, b""
    while position > 0 and buffer.count(b"\n") <= count and len(buffer) < max_bytes:
        step = min(block, position)
        position -= step
        handle.seek(position)
        buffer = handle.read(step) + buffer
    handle.seek(end)
    return buffer.splitlines(keepends=True)[-count:] if count > 0 else []
