"""The local backend: jobs and model servers as processes on this machine, remembered in SQLite.

Every process runs under the supervisor (supervise.py) in a session of its own, so it outlives the
`tuneops apply` that started it. The process table (`<state dir>/processes.db`) lets any later tuneops
find it, tell it from an unrelated process that reuses its pid, and learn how it ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.backends.base import STOPPED, BackendError, BackendState, JobObservation, ServerObservation
from reconciler.fileio import write_text_atomic
from reconciler.jobfile import JobFile, ServeOptions
from reconciler.state_files import is_state_database_error, looks_damaged, sqlite_file_problem

DISAPPEARED = "the process disappeared without an exit status (killed?)"
_DAMAGED_HINT = (" (if no tuneops job or model server is running, move it aside and tuneops starts an "
                 "empty one; running ones are then not known to it)")
STOP_GRACE_SECONDS = 20.0
SERVER_KIND = "Deployment"

Row = dict[str, Any]  # one row of the process table
ArgvForJobFile = Callable[[Path], Sequence[str]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, name TEXT NOT NULL, fingerprint TEXT NOT NULL, attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL, pid_start_ticks INTEGER, argv TEXT NOT NULL, job_file TEXT,
    log_path TEXT NOT NULL, exit_file TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL,
    exit_code INTEGER, message TEXT NOT NULL DEFAULT '', port INTEGER, url TEXT,
    model_fingerprint TEXT, model_version TEXT, stopped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS processes_by_resource ON processes (kind, name, fingerprint);
"""


def job_argv(job: JobFile, job_file: Path, *, processes: int = 1, python: str = sys.executable,
             master_port: int | None = None) -> list[str]:
    """`tuneops run <command> --job FILE`, under torchrun when the job wants several processes."""
    run = ["-m", "reconciler", "run", job.command, "--job", str(job_file)]
    if processes <= 1:
        return [python, *run]
    port = master_port if master_port is not None else free_port()
    return [python, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(port), *run]


def job_environment(job: JobFile | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Unbuffered logs, quiet tokenizers, and DeepSpeed on CPU for a fine-tune that asks for no GPU."""
    environment = dict(os.environ if base is None else base)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    environment.setdefault("TOKENIZERS_PARALLELISM", "false")
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
    """The last non-empty line of a log: usually the `error: ...` a job printed before exiting."""
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
    return lines[-1][:limit] if lines else ""


def _with_last_line(message: str, log_path: str) -> str:
    last = last_log_line(log_path)
    return f"{message}: {last}" if last else message


def _healthy(url: str, timeout: float = 1.0) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


class LocalBackend:
    """Runs `tuneops run` as supervised processes under `state_dir` (usually `<spec root>/.tuneops`).

    `serve_argv` builds a model server's command from its job file; the default is `tuneops run serve`.
    """

    name = "local"

    def __init__(self, state_dir: Path, *, python: str = sys.executable,
                 port_range: tuple[int, int] = (8000, 8999),
                 serve_argv: ArgvForJobFile | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.python = python
        self.port_range = port_range
        self.serve_argv = serve_argv
        self.database = self.state_dir / "processes.db"
        self._lock = threading.Lock()
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # started here: reaped by poll()
        self._table_ready = False
        self._table_setup = threading.Lock()  # threads creating the table at once: one does it

    # -- jobs --------------------------------------------------------------------------------------

    def observe(self) -> BackendState:
        with self._table() as table:
            self._refresh(table, _unfinished_rows(table))
            jobs = tuple(self._job_observation(row) for row in _newest_jobs(table))
            servers = _current_servers(table)
        return BackendState(jobs=jobs, servers=tuple(self._server_observation(row) for row in servers))

    def submit(self, job: JobFile, *, processes: int = 1) -> JobObservation:
        if job.kind == SERVER_KIND:
            raise BackendError(f"Deployment {job.name}: a model server is started by serve(), not submit()")
        master_port = free_port() if processes > 1 else None
        return self.start_process(
            job.kind, job.name, job.fingerprint,
            lambda job_file: job_argv(job, job_file, processes=processes, python=self.python,
                                      master_port=master_port),
            job_text=job.to_json(), environment=job_environment(job))

    def start_process(self, kind: str, name: str, fingerprint: str, argv: Sequence[str] | ArgvForJobFile,
                      *, job_text: str | None = None,
                      environment: Mapping[str, str] | None = None) -> JobObservation:
        """Start any command as an attempt of (kind, name, fingerprint); `argv` may be built from the
        job file's path. Tests start plain `python -c` commands this way."""
        row = self._start(kind, name, fingerprint, argv, job_text=job_text, environment=environment)
        return self._job_observation({**row, "attempts": row["attempt"]})

    def wait(self, kind: str, name: str, fingerprint: str, *, poll: float = 1.0,
             stop_event: threading.Event | None = None) -> JobObservation:
        while True:
            with self._table() as table:
                key = (kind, name, fingerprint)
                where = "kind = ? AND name = ? AND fingerprint = ?"
                self._refresh(table, _unfinished_rows(table, where, key))
                row = _newest_job(table, *key)
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
        with self._table() as table:
            rows = _rows(table, "kind = ? AND name = ? AND stopped = 0", (kind, name))
        return self._stop_rows(rows)

    def log_file(self, kind: str, name: str) -> Path | None:
        with self._table() as table:
            rows = _rows(table, "kind = ? AND name = ? ORDER BY id DESC LIMIT 1", (kind, name))
        return Path(rows[0]["log_path"]) if rows else None

    def logs(self, kind: str, name: str, *, tail: int | None = None,
             follow: bool = False) -> Iterator[str] | None:
        log = self.log_file(kind, name)
        if log is None or not log.is_file():
            return None
        return self._log_lines(log, kind, name, tail, follow)

    def _log_lines(self, log: Path, kind: str, name: str, tail: int | None, follow: bool) -> Iterator[str]:
        with log.open("r", encoding="utf-8", errors="replace") as handle:
            lines = handle.readlines()
            yield from lines[-tail:] if tail else lines
            while follow:
                line = handle.readline()
                if line:
                    yield line
                elif self._running(kind, name):
                    time.sleep(0.5)
                else:
                    return

    def _running(self, kind: str, name: str) -> bool:
        state = self.observe()
        if kind == "Deployment":
            server = state.server(name)
            return server is not None and server.phase != "failed"
        return any(j.kind == kind and j.name == name and j.phase in ("running", "pending")
                   for j in state.jobs)

    # -- model servers -----------------------------------------------------------------------------

    def serve(self, job: JobFile, *, model_fingerprint: str, model_version: str | None,
              health_timeout: float = 600) -> ServerObservation:
        with self._table() as table:
            self._refresh(table, _unfinished_rows(table, "kind = ? AND name = ?", (SERVER_KIND, job.name)))
            previous = _current_server(table, job.name)
            replaced = _rows(table, "kind = ? AND name = ? AND stopped = 0", (SERVER_KIND, job.name))
            taken = {row["port"] for row in _current_servers(table) if row["name"] != job.name}
        port = previous["port"] if previous else self._first_free_port(taken, job.name)
        was_serving = previous is not None and previous["finished_at"] is None
        self._stop_rows(replaced)
        self._await_port(port, job.name)

        served = job.model_copy(update={"serve": ServeOptions(host="127.0.0.1", port=port)})
        argv = self.serve_argv or (lambda job_file: job_argv(served, job_file, python=self.python))
        row = self._start(SERVER_KIND, job.name, job.fingerprint, argv, job_text=served.to_json(),
                          environment=job_environment(served), port=port, url=f"http://127.0.0.1:{port}",
                          model_fingerprint=model_fingerprint, model_version=model_version)
        new = self._await_health(row, health_timeout)
        if new.phase == "serving" or not was_serving:
            return new
        assert previous is not None
        self._stop_rows([row])
        self._await_port(port, job.name)
        restarted = self._await_health(self._restart(previous), health_timeout)
        outcome = ("the previous version was restarted and serves" if restarted.phase == "serving"
                   else f"restarting the previous version failed too: {restarted.message}")
        return dataclasses.replace(new, message=f"{new.message}; {outcome}")

    def _restart(self, previous: Row) -> Row:
        """The previous server again, from its own job file and command, on its own port."""
        argv = json.loads(previous["argv"])
        return self._start(SERVER_KIND, previous["name"], previous["fingerprint"], argv,
                           job_file=Path(previous["job_file"]) if previous["job_file"] else None,
                           environment=job_environment(), port=previous["port"], url=previous["url"],
                           model_fingerprint=previous["model_fingerprint"],
                           model_version=previous["model_version"])

    def _await_health(self, row: Row, timeout: float) -> ServerObservation:
        deadline = time.monotonic() + timeout
        while True:
            if not self._alive(row):
                with self._table() as table:
                    (row,) = self._refresh(table, [row])
                return self._server_observation(row, healthy=False)
            if _healthy(row["url"]):
                return self._server_observation(row, healthy=True)
            if time.monotonic() >= deadline:
                self._kill_group(row)
                message = _with_last_line(f"did not answer {row['url']}/health within {timeout:g} s",
                                          row["log_path"])
                with self._table() as table:
                    _finish(table, row["id"], time.time(), _read_exit_file(row["exit_file"]), message)
                    row = _rows(table, "id = ?", (row["id"],))[0]
                return self._server_observation(row, healthy=False)
            time.sleep(0.1)

    def _first_free_port(self, taken: set[int], name: str) -> int:
        low, high = self.port_range
        for port in range(low, high + 1):
            if port not in taken and port_is_free(port):
                return port
        raise BackendError(f"Deployment {name}: no free port in {low}-{high} on 127.0.0.1")

    @staticmethod
    def _await_port(port: int, name: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_is_free(port):
            if time.monotonic() >= deadline:
                raise BackendError(f"Deployment {name}: port {port} on 127.0.0.1 is in use by another "
                                   "program")
            time.sleep(0.1)

    # -- processes ---------------------------------------------------------------------------------

    def _start(self, kind: str, name: str, fingerprint: str, argv: Sequence[str] | ArgvForJobFile, *,
               job_text: str | None = None, job_file: Path | None = None,
               environment: Mapping[str, str] | None = None, **server: Any) -> Row:
        """Start `argv` under the supervisor and record it, numbering the attempt inside one transaction."""
        with self._table() as table, _transaction(table):
            attempt = _count_attempts(table, kind, name, fingerprint) + 1
            stem = f"{kind.lower()}-{name}-{fingerprint[:16]}-{attempt}"
            if job_text is not None:
                job_file = self.state_dir / "jobs" / f"{stem}.json"
                write_text_atomic(job_file, job_text)
            if callable(argv) and job_file is None:
                raise ValueError("an argv built from the job file needs job_text or job_file")
            command = [str(part) for part in (argv(job_file) if callable(argv) else argv)]
            log_path = self.state_dir / "logs" / f"{stem}.log"
            exit_file = self.state_dir / "exits" / f"{stem}.exit"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            exit_file.unlink(missing_ok=True)  # left by a table that was deleted since
            supervised = [self.python, "-m", "reconciler.backends.supervise", "--exit-file", str(exit_file),
                          "--", *command]
            try:
                with open(log_path, "ab") as log, open(os.devnull, "rb") as nothing:
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
                "model_version": None, "stopped": 0, **server,
            }
            try:
                row["id"] = _insert(table, row)
            except BaseException:
                self._kill_group(row, grace=0)
                raise
            return row

    def _alive(self, row: Row) -> bool:
        with self._lock:
            child = self._children.get(row["pid"])
            if child is not None and child.poll() is not None:  # ours: reap it, no zombie is left
                del self._children[row["pid"]]
                return False
        return process_alive(row["pid"], row["pid_start_ticks"])

    def _refresh(self, table: sqlite3.Connection, rows: list[Row]) -> list[Row]:
        """Record how each process that is no longer alive ended; return the rows as they are now."""
        current = []
        for row in rows:
            if row["finished_at"] is None and not self._alive(row):
                exit_code = _read_exit_file(row["exit_file"])
                if exit_code is None:
                    finished_at, message = time.time(), DISAPPEARED
                else:
                    finished_at = _mtime(row["exit_file"])
                    message = "" if exit_code == 0 else _with_last_line(f"exited with {exit_code}",
                                                                        row["log_path"])
                _finish(table, row["id"], finished_at, exit_code, message)
                row = {**row, "finished_at": finished_at, "exit_code": exit_code, "message": message}
            current.append(row)
        return current

    def _stop_rows(self, rows: list[Row]) -> list[str]:
        """SIGTERM every live process group, then wait for each; mark all rows stopped."""
        with self._table() as table:
            rows = self._refresh(table, rows)  # an ending that came first is not a stop
        live = [row for row in rows if row["finished_at"] is None]
        for row in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(row["pid"], signal.SIGTERM)
        for row in live:
            self._kill_group(row, signalled=True)
        with self._table() as table, _transaction(table):
            for row in rows:
                if row["finished_at"] is None:
                    _finish(table, row["id"], time.time(), _read_exit_file(row["exit_file"]), STOPPED)
                table.execute("UPDATE processes SET stopped = 1 WHERE id = ?", (row["id"],))
        return [f"pid {row['pid']}" for row in live]

    def _kill_group(self, row: Row, *, grace: float = STOP_GRACE_SECONDS, signalled: bool = False) -> None:
        """SIGTERM the process group, SIGKILL what is left after `grace` seconds."""
        if not self._alive(row):
            return
        if not signalled:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(row["pid"], signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._alive(row) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._alive(row):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(row["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self._alive(row) and time.monotonic() < deadline:
                time.sleep(0.05)

    # -- observations ------------------------------------------------------------------------------

    def _job_observation(self, row: Row) -> JobObservation:
        if row["finished_at"] is None:
            phase = "running"
        else:
            phase = "succeeded" if row["exit_code"] == 0 and row["message"] != STOPPED else "failed"
        return JobObservation(
            kind=row["kind"], name=row["name"], fingerprint=row["fingerprint"], phase=phase,
            attempts=row["attempts"], started_at=row["started_at"], finished_at=row["finished_at"],
            exit_code=row["exit_code"], message=row["message"], handle=f"pid {row['pid']}",
            log=row["log_path"])

    def _server_observation(self, row: Row, *, healthy: bool | None = None) -> ServerObservation:
        if row["finished_at"] is not None:
            phase = "failed"
        else:
            healthy = _healthy(row["url"]) if healthy is None else healthy
            phase = "serving" if healthy else "starting"
        message = row["message"] or (f"exited with {row['exit_code']}" if phase == "failed" else "")
        return ServerObservation(
            name=row["name"], fingerprint=row["fingerprint"],
            model_fingerprint=row["model_fingerprint"] or "", model_version=row["model_version"], phase=phase,
            url=row["url"], started_at=row["started_at"],
            message=message, handle=f"pid {row['pid']}", log=row["log_path"],
            job=_read_job(row["job_file"]))

    @contextlib.contextmanager
    def _table(self) -> Iterator[sqlite3.Connection]:
        """A new connection per use: callers may be on several threads or in several processes.
        A table that cannot be opened (damaged, unreadable, a folder in its place) is a
        BackendError naming the file."""
        if not self._table_ready:
            problem = sqlite_file_problem(self.database)
            if problem:
                raise BackendError(f"cannot use the process table: {problem}"
                                   + _DAMAGED_HINT * looks_damaged(problem))
        try:
            self.database.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise BackendError(f"cannot open the process table {self.database}: {error}") from None
        connection.row_factory = sqlite3.Row
        try:
            try:
                connection.execute("PRAGMA busy_timeout = 30000")
                if not self._table_ready:
                    # Switching to WAL takes an exclusive lock that busy_timeout does not wait for:
                    # several threads doing it on a new database at once got "database is locked".
                    with self._table_setup:
                        if not self._table_ready:
                            connection.execute("PRAGMA journal_mode = WAL")
                            connection.executescript(_SCHEMA)
                            self._table_ready = True
            except sqlite3.Error as error:
                if not is_state_database_error(error):
                    raise
                raise BackendError(f"cannot use the process table {self.database}: {error}"
                                   + _DAMAGED_HINT * looks_damaged(str(error))) from None
            yield connection
        finally:
            connection.close()


# -- the process table -------------------------------------------------------------------------------


@contextlib.contextmanager
def _transaction(table: sqlite3.Connection) -> Iterator[None]:
    table.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        table.execute("ROLLBACK")
        raise
    table.execute("COMMIT")


def _rows(table: sqlite3.Connection, where: str, parameters: Sequence[Any] = ()) -> list[Row]:
    return [dict(row) for row in table.execute(f"SELECT * FROM processes WHERE {where}", parameters)]


def _unfinished_rows(table: sqlite3.Connection, where: str = "1",
                     parameters: Sequence[Any] = ()) -> list[Row]:
    return _rows(table, f"finished_at IS NULL AND ({where})", parameters)


def _insert(table: sqlite3.Connection, row: Row) -> int:
    columns = [column for column in row if column != "id"]
    cursor = table.execute(
        f"INSERT INTO processes ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [row[column] for column in columns])
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _finish(table: sqlite3.Connection, row_id: int, finished_at: float, exit_code: int | None,
            message: str) -> None:
    table.execute("UPDATE processes SET finished_at = ?, exit_code = ?, message = ? "
                  "WHERE id = ? AND finished_at IS NULL", (finished_at, exit_code, message, row_id))


def _count_attempts(table: sqlite3.Connection, kind: str, name: str, fingerprint: str) -> int:
    query = "SELECT COUNT(*) FROM processes WHERE kind = ? AND name = ? AND fingerprint = ?"
    return table.execute(query, (kind, name, fingerprint)).fetchone()[0]


_NEWEST_JOBS = """
SELECT p.*, newest.attempts FROM processes p JOIN (
    SELECT MAX(id) AS id, COUNT(*) AS attempts FROM processes WHERE kind != 'Deployment' {where}
    GROUP BY kind, name, fingerprint) newest ON p.id = newest.id ORDER BY p.id
"""


def _newest_jobs(table: sqlite3.Connection) -> list[Row]:
    return [dict(row) for row in table.execute(_NEWEST_JOBS.format(where=""))]


def _newest_job(table: sqlite3.Connection, kind: str, name: str, fingerprint: str) -> Row | None:
    query = _NEWEST_JOBS.format(where="AND kind = ? AND name = ? AND fingerprint = ?")
    rows = [dict(row) for row in table.execute(query, (kind, name, fingerprint))]
    return rows[0] if rows else None


def _current_servers(table: sqlite3.Connection) -> list[Row]:
    return _rows(table, "id IN (SELECT MAX(id) FROM processes WHERE kind = 'Deployment' AND stopped = 0 "
                        "GROUP BY name) ORDER BY id")


def _current_server(table: sqlite3.Connection, name: str) -> Row | None:
    rows = [row for row in _current_servers(table) if row["name"] == name]
    return rows[0] if rows else None


def _read_exit_file(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return time.time()


def _read_job(path: str | None) -> dict | None:
    """The job file a server was started with: its spec and lineage tell a later plan what
    changed. None when it is gone or unreadable (the plan then reports a plain fingerprint change)."""
    if not path:
        return None
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
