"""Supervised processes on this machine, remembered in the process table.

Every process runs under the supervisor (supervise.py) in a session of its own, so it outlives the
`tuneops apply` that started it. The process table (`<state dir>/processes.db`, table.py) lets any
later tuneops find it, tell it from an unrelated process that reuses its pid, and learn how it
ended. Here too: what a job runs as (its command line and environment) and free local ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.backends.base import BackendError
from reconciler.backends.local.table import (
    ProcessTable,
    Row,
    count_attempts,
    finish,
    insert,
    mark_stopped,
    transaction,
)
from reconciler.fileio import write_text_atomic
from reconciler.redaction import DAEMON_ONLY_VARIABLES, redact
from reconciler.state import STOPPED

if TYPE_CHECKING:
    from reconciler.jobs.jobfile import JobFile

DISAPPEARED = "the process disappeared without an exit status (killed?)"
STOP_GRACE_SECONDS = 20.0
ArgvForJobFile = Callable[[Path], Sequence[str]]


def job_argv(job: JobFile, job_file: Path, *, processes: int = 1, python: str = sys.executable,
             master_port: int | None = None) -> list[str]:
    """`tuneops run <command> --job FILE`, under torchrun when the job wants several processes."""
    run = ["-m", "reconciler", "run", job.command, "--job", str(job_file)]
    if processes <= 1:
        return [python, *run]
    port = master_port if master_port is not None else free_port()
    return [python, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(port), *run]


def job_environment(job: JobFile | None = None, base: Mapping[str, str] | None = None,
                    credentials: Mapping[str, str] | None = None, jobs_at_once: int = 1) -> dict[str, str]:
    """Unbuffered logs, quiet tokenizers, and DeepSpeed on CPU for a fine-tune that asks for no GPU.
    `credentials` (MLflow's variables, redaction.credentials_environment) reach the job here,
    never through its job file or command line; what only the reconcile daemon may hold
    (redaction.DAEMON_ONLY_VARIABLES) never does. With `jobs_at_once` jobs sharing the machine,
    each gets its share of the cores for its compute threads (OMP_NUM_THREADS, unless set):
    each taking them all would make them fight over every core."""
    inherited = {key: value for key, value in (os.environ if base is None else base).items()
                 if key not in DAEMON_ONLY_VARIABLES}
    environment = {**inherited, **(credentials or {})}
    environment.setdefault("PYTHONUNBUFFERED", "1")
    environment.setdefault("TOKENIZERS_PARALLELISM", "false")
    if jobs_at_once > 1:
        environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs_at_once)))
    if job is not None and job.kind == "FineTune":
        resources = job.spec.get("resources") or {}
        if not resources.get("gpusPerNode"):
            environment.setdefault("DS_ACCELERATOR", "cpu")
    return environment


def free_port() -> int:
    """A port nobody listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Bind as a server would (SO_REUSEADDR), so a port in TIME_WAIT counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); None without /proc."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def process_alive(pid: int, ticks: int | None) -> bool:
    """Alive, and the same process as the one recorded: a reused pid starts at other ticks."""
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X") and (ticks is None or stat[1] == ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[19])


def last_log_line(path: str | Path | None, limit: int = 200) -> str:
    """The last non-empty line of a log, redacted: usually the `error: ...` a job printed before
    exiting, which failure messages, the process table and `status` repeat."""
    if not path:
        return ""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 65536))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return redact(lines[-1])[:limit] if lines else ""


def with_last_line(message: str, log_path: str) -> str:
    """`message`, followed by the log's last line when it has one: why a process ended."""
    last = last_log_line(log_path)
    return f"{message}: {last}" if last else message


class LocalProcesses:
    """Starts commands under the supervisor in sessions of their own, numbers their attempts in the
    process table, tells whether each still runs (reaping the ones started here), records how it
    ended, and stops process groups: SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, state_dir: Path, python: str) -> None:
        self.state_dir = state_dir
        self.python = python
        self.database = self.state_dir / "processes.db"
        self._lock = threading.Lock()
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # started here: reaped by poll()
        self._processes = ProcessTable(self.database)

    def start(self, kind: str, name: str, fingerprint: str, argv: Sequence[str] | ArgvForJobFile, *,
              job_text: str | None = None, job_file: Path | None = None,
              environment: Mapping[str, str] | None = None, **server: Any) -> Row:
        """Start `argv` under the supervisor and record it, numbering the attempt inside one transaction."""
        with self.table() as table, transaction(table):
            attempt = count_attempts(table, kind, name, fingerprint) + 1
            stem = "-".join(part for part in (kind.lower(), name, fingerprint[:16], str(attempt)) if part)
            if job_text is not None:
                job_file = self.state_dir / "jobs" / f"{stem}.json"
                write_text_atomic(job_file, job_text, private=True)
            if callable(argv) and job_file is None:
                raise ValueError("an argv built from the job file needs job_text or job_file")
            command = [str(part) for part in (argv(job_file) if callable(argv) else argv)]
            log_path = self.state_dir / "logs" / f"{stem}.log"
            exit_file = self.state_dir / "exits" / f"{stem}.exit"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            exit_file.unlink(missing_ok=True)  # left by a table that was deleted since
            supervised = [self.python, "-m", "reconciler.backends.local.supervise",
                          "--exit-file", str(exit_file), "--", *command]
            try:
                with _private_log(log_path) as log, open(os.devnull, "rb") as nothing:
                    process = subprocess.Popen(
                        supervised, stdin=nothing, stdout=log, stderr=subprocess.STDOUT,
                        cwd=self.state_dir.parent, start_new_session=True,
                        env=dict(environment) if environment is not None else job_environment())
            except OSError as error:
                raise BackendError(f"{kind} {name}: cannot start {self.python}: "
                                   f"{error.strerror or error}") from None
            with self._lock:
                self._children[process.pid] = process
            row: Row = {
                "kind": kind, "name": name, "fingerprint": fingerprint, "attempt": attempt,
                "pid": process.pid, "pid_start_ticks": start_ticks(process.pid), "argv": json.dumps(command),
                "job_file": str(job_file) if job_file else None, "log_path": str(log_path),
                "exit_file": str(exit_file), "started_at": time.time(), "finished_at": None,
                "exit_code": None, "message": "", "port": None, "url": None, "model_fingerprint": None,
                "model_version": None, "stopped": 0, "token": None, **server,
            }
            try:
                row["id"] = insert(table, row)
            except BaseException:
                self.kill_group(row, grace=0)
                raise
            return row

    def alive(self, row: Row) -> bool:
        with self._lock:
            child = self._children.get(row["pid"])
            if child is not None and child.poll() is not None:  # ours: reap it, no zombie is left
                del self._children[row["pid"]]
                return False
        return process_alive(row["pid"], row["pid_start_ticks"])

    def refresh(self, table: sqlite3.Connection, rows: list[Row]) -> list[Row]:
        """Record how each process that is no longer alive ended; return the rows as they are now."""
        current = []
        for row in rows:
            if row["finished_at"] is None and not self.alive(row):
                exit_code = read_exit_file(row["exit_file"])
                if exit_code is None:
                    finished_at, message = time.time(), DISAPPEARED
                else:
                    finished_at = _mtime(row["exit_file"])
                    message = "" if exit_code == 0 else with_last_line(f"exited with {exit_code}",
                                                                       row["log_path"])
                finish(table, row["id"], finished_at, exit_code, message)
                row = {**row, "finished_at": finished_at, "exit_code": exit_code, "message": message}
            current.append(row)
        return current

    def stop_rows(self, stopping: list[Row]) -> list[str]:
        """SIGTERM every live process group, then wait for each; mark all rows stopped."""
        with self.table() as table:
            stopping = self.refresh(table, stopping)  # an ending that came first is not a stop
        live = [row for row in stopping if row["finished_at"] is None]
        for row in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(row["pid"], signal.SIGTERM)
        for row in live:
            self.kill_group(row, signalled=True)
        with self.table() as table, transaction(table):
            for row in stopping:
                if row["finished_at"] is None:
                    finish(table, row["id"], time.time(), read_exit_file(row["exit_file"]), STOPPED)
                mark_stopped(table, row["id"])
        return [f"pid {row['pid']}" for row in live]

    def kill_group(self, row: Row, *, grace: float = STOP_GRACE_SECONDS, signalled: bool = False) -> None:
        """SIGTERM the process group, SIGKILL what is left after `grace` seconds."""
        if not self.alive(row):
            return
        if not signalled:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(row["pid"], signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive(row) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive(row):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(row["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self.alive(row) and time.monotonic() < deadline:
                time.sleep(0.05)

    def table_exists(self) -> bool:
        """False when nothing was ever started here; one that cannot even be looked at counts
        as there, so opening it names the file and what is wrong."""
        try:
            return self.database.exists()
        except OSError:
            return True

    def table(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._processes.connect()


# -- files ------------------------------------------------------------------------------------------


def _private_log(path: Path) -> Any:
    """A log opened for appending, readable by its owner only: jobs print what they print."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def read_exit_file(path: str) -> int | None:
    """The exit status the supervisor wrote; None while it runs, or when it died without writing."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return time.time()
