"""The local backend: jobs and model servers as processes on this machine, remembered in SQLite.

Every process runs under the supervisor (supervise.py) in a session of its own, so it outlives the
`tuneops apply` that started it. The process table (`<state dir>/processes.db`, local_table.py) lets
any later tuneops find it, tell it from an unrelated process that reuses its pid, and learn how it
ended. A Deployment answers on a front port (router.py) that stays put while versions switch
behind it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
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

from reconciler.backends.base import BackendError
from reconciler.backends.local.table import (
    ROUTER_KIND,
    SERVER_KIND,
    ProcessTable,
    Row,
    count_attempts,
    current_routers,
    current_server,
    current_servers,
    finish,
    insert,
    last_router,
    mark_stopped,
    newest_job,
    newest_jobs,
    rows,
    transaction,
    unfinished_rows,
)
from reconciler.fileio import write_text_atomic
from reconciler.jobs.jobfile import JobFile, ServeOptions
from reconciler.redaction import DAEMON_ONLY_VARIABLES, redact, redact_lines
from reconciler.specs.confinement import FILE_ROOTS_ENV, FileRoots
from reconciler.state import STOPPED, BackendState, JobObservation, ServerObservation

DISAPPEARED = "the process disappeared without an exit status (killed?)"
STOP_GRACE_SECONDS = 20.0
FRONT_PORT_TIMEOUT_S = 60.0  # a front port process starts in well under a second
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
                    credentials: Mapping[str, str] | None = None) -> dict[str, str]:
    """Unbuffered logs, quiet tokenizers, and DeepSpeed on CPU for a fine-tune that asks for no GPU.
    `credentials` (MLflow's variables, redaction.credentials_environment) reach the job here,
    never through its job file or command line; what only the reconcile daemon may hold
    (redaction.DAEMON_ONLY_VARIABLES) never does."""
    inherited = {key: value for key, value in (os.environ if base is None else base).items()
                 if key not in DAEMON_ONLY_VARIABLES}
    environment = {**inherited, **(credentials or {})}
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


def _with_last_line(message: str, log_path: str) -> str:
    last = last_log_line(log_path)
    return f"{message}: {last}" if last else message


def health(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """What `url`/health answers with 200 (its JSON, or {} when it is not JSON); None: no answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(f"{url}/health", timeout=timeout) as response:
            if response.status != 200:
                return None
            answer = json.loads(response.read() or b"{}")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return answer if isinstance(answer, dict) else {}


def answers_as(answer: dict[str, Any] | None, server: Row) -> bool:
    """The health answer came from the process this row started: it repeats the start's token.
    (A row from before tokens has none: any answer counts, as it did then.)"""
    return answer is not None and (server["token"] is None or answer.get("token") == server["token"])


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
                 credentials: Mapping[str, str] | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.file_roots = file_roots or FileRoots.of_project(self.state_dir.parent)
        self.credentials = dict(credentials or {})
        self.python = python
        self.port_range = port_range
        self.serve_argv = serve_argv
        self.database = self.state_dir / "processes.db"
        self._lock = threading.Lock()
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # started here: reaped by poll()
        self._processes = ProcessTable(self.database)

    # -- jobs --------------------------------------------------------------------------------------

    def observe(self) -> BackendState:
        if not self._table_exists():  # nothing was ever started here; looking must not create it
            return BackendState((), ())
        with self._table() as table:
            self._refresh(table, unfinished_rows(table))
            jobs = tuple(self._job_observation(row) for row in newest_jobs(table))
            servers, routers = current_servers(table), current_routers(table)
        return BackendState(jobs=jobs, servers=tuple(self._server_observation(row, routers.get(row["name"]))
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
        row = self._start(kind, name, fingerprint, argv, job_text=job_text, environment=environment)
        return self._job_observation({**row, "attempts": row["attempt"]})

    def wait(self, kind: str, name: str, fingerprint: str, *, poll: float = 1.0,
             stop_event: threading.Event | None = None) -> JobObservation:
        while True:
            with self._table() as table:
                key = (kind, name, fingerprint)
                where = "kind = ? AND name = ? AND fingerprint = ?"
                self._refresh(table, unfinished_rows(table, where, key))
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
        with self._table() as table:
            live = rows(table, "kind IN (?, ?) AND name = ? AND stopped = 0", (*kinds, name))
        stopped = self._stop_rows(live)
        if kind == SERVER_KIND:  # its front port is gone: where it forwarded means nothing now
            (self.state_dir / "routes" / f"{name}.json").unlink(missing_ok=True)
        return stopped

    def log_file(self, kind: str, name: str, fingerprint: str | None = None) -> Path | None:
        if not self._table_exists():
            return None
        with self._table() as table:
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
        with log.open("r", encoding="utf-8", errors="replace") as handle:
            lines = handle.readlines()
            yield from redact_lines(lines[-tail:] if tail else lines)
            while follow:
                line = handle.readline()
                if line:
                    yield redact(line)
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
        """Start the new version beside the one serving, on a port of its own; once it answers as
        the process started, point the Deployment's front port at it, then stop the old version
        (it answers what it has begun first). A start that fails touches nothing that serves."""
        with self._table() as table:
            self._refresh(table, unfinished_rows(table, "kind IN (?, ?) AND name = ?",
                                                 (SERVER_KIND, ROUTER_KIND, job.name)))
            old = rows(table, "kind = ? AND name = ? AND stopped = 0", (SERVER_KIND, job.name))
            previous = current_server(table, job.name)
            router = current_routers(table).get(job.name)
            front_before = last_router(table, job.name)
        serving = self._server_observation(previous, router) if previous is not None else None
        kept = (f"; {serving.model_version or 'the previous version'} keeps serving at {serving.url}"
                if serving is not None and serving.phase == "serving" else "")
        if router is not None and router["finished_at"] is not None:
            router = None  # a front port that ended is started again

        front_port = None if router is not None else self._front_port(job.name, front_before, previous)
        server = self._start_server(job, model_fingerprint, model_version)
        try:
            why = self._await_health(server, health_timeout)
            if why is not None:
                return self._failed_start(server, router, why, kept)
            route = self.state_dir / "routes" / f"{job.name}.json"
            if front_port is not None:  # the first start, or after `tuneops stop`: nothing reaches the old
                self._stop_rows(old)  # servers (one started before front ports may hold the port wanted)
                write_route(route, server)
                router = self._start_router(job.name, front_port, route)
                why = self._await_front(router, server)
                if why is not None:
                    self._stop_rows([router])
                    return self._failed_start(server, None, why, "")
            else:
                assert router is not None
                before = route.read_text(encoding="utf-8") if route.is_file() else None
                write_route(route, server)
                why = self._await_front(router, server)
                if why is not None:
                    if before is not None:
                        write_text_atomic(route, before)
                    return self._failed_start(server, router, why, kept)
        except BaseException:
            self._stop_rows([server])  # never a server nobody knows about
            raise
        self._stop_rows(old)
        return self._server_observation(server, router, healthy=True)

    def _start_server(self, job: JobFile, model_fingerprint: str, model_version: str | None) -> Row:
        """The model server, on a port of its own, with a token only this start knows."""
        port, token = free_port(), secrets.token_hex(16)
        served = job.model_copy(update={"serve": ServeOptions(host="127.0.0.1", port=port, token=token)})
        argv = self.serve_argv or (lambda job_file: job_argv(served, job_file, python=self.python))
        return self._start(SERVER_KIND, job.name, job.fingerprint, argv, job_text=served.to_json(),
                           environment=self._job_environment(served), port=port,
                           url=f"http://127.0.0.1:{port}",
                           model_fingerprint=model_fingerprint, model_version=model_version, token=token)

    def _job_environment(self, job: JobFile) -> dict[str, str]:
        return {**job_environment(job, credentials=self.credentials),
                FILE_ROOTS_ENV: self.file_roots.environment_value()}

    def _start_router(self, name: str, port: int, route: Path) -> Row:
        argv = [self.python, "-m", "reconciler.backends.local.router", "--listen", f"127.0.0.1:{port}",
                "--upstream-file", str(route)]
        return self._start(ROUTER_KIND, name, "", argv, environment=job_environment(), port=port,
                           url=f"http://127.0.0.1:{port}")

    def _failed_start(self, server: Row, router: Row | None, why: str, kept: str) -> ServerObservation:
        """The new server gone, and why. While the old version serves, it stays the Deployment's
        server; otherwise the failure is what `status` and the next plan see."""
        self._kill_group(server)
        with self._table() as table, transaction(table):
            finish(table, server["id"], time.time(), _read_exit_file(server["exit_file"]), why)
            table.execute("UPDATE processes SET message = ? WHERE id = ?", (why, server["id"]))
            if kept:
                mark_stopped(table, server["id"])
            (server,) = rows(table, "id = ?", (server["id"],))
        failed = self._server_observation(server, router)
        return dataclasses.replace(failed, message=f"{why}{kept}")

    def _await_health(self, server: Row, timeout: float) -> str | None:
        """None once the server answers /health as the start that launched it; else why not (the
        process is then gone). Another process answering on its port is never taken for it."""
        deadline = time.monotonic() + timeout
        someone_else = False
        while True:
            if not self._alive(server):
                with self._table() as table:
                    (server,) = self._refresh(table, [server])
                return server["message"] or f"exited with {server['exit_code']}"
            answer = health(server["url"])
            if answers_as(answer, server):
                return None
            someone_else = someone_else or answer is not None
            if time.monotonic() >= deadline:
                self._kill_group(server)
                why = f"did not answer {server['url']}/health within {timeout:g} s"
                if someone_else:
                    why += ": another process answers on that port"
                return _with_last_line(why, server["log_path"])
            time.sleep(0.1)

    def _await_front(self, router: Row, server: Row, timeout: float = FRONT_PORT_TIMEOUT_S) -> str | None:
        """None once the front port answers as `server` (the switch took effect); else why not."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._alive(router):
                with self._table() as table:
                    (router,) = self._refresh(table, [router])
                return f"front port {router['port']}: {router['message'] or 'exited'}"
            if answers_as(health(router["url"]), server):
                return None
            if time.monotonic() >= deadline:
                return f"the front port {router['url']} did not move to the new version within {timeout:g} s"
            time.sleep(0.05)

    def _front_port(self, name: str, front_before: Row | None, previous: Row | None) -> int:
        """The port the Deployment answered on before (its URL stays), else the first free one.
        A server from before front ports answers on its own port, and is stopped to free it."""
        with self._table() as table:
            taken = {row["port"] for row in (*current_routers(table).values(), *current_servers(table))
                     if row["name"] != name and row["finished_at"] is None}
        unrouted = (previous if previous is not None and previous["token"] is None
                    and previous["finished_at"] is None else None)
        before = front_before or unrouted
        if before is not None and before["port"] not in taken and (before is unrouted or
                                                                   port_is_free(before["port"])):
            return before["port"]
        low, high = self.port_range
        for port in range(low, high + 1):
            if port not in taken and port_is_free(port):
                return port
        raise BackendError(f"Deployment {name}: no free port in {low}-{high} on 127.0.0.1")

    # -- processes ---------------------------------------------------------------------------------

    def _start(self, kind: str, name: str, fingerprint: str, argv: Sequence[str] | ArgvForJobFile, *,
               job_text: str | None = None, job_file: Path | None = None,
               environment: Mapping[str, str] | None = None, **server: Any) -> Row:
        """Start `argv` under the supervisor and record it, numbering the attempt inside one transaction."""
        with self._table() as table, transaction(table):
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
                finish(table, row["id"], finished_at, exit_code, message)
                row = {**row, "finished_at": finished_at, "exit_code": exit_code, "message": message}
            current.append(row)
        return current

    def _stop_rows(self, stopping: list[Row]) -> list[str]:
        """SIGTERM every live process group, then wait for each; mark all rows stopped."""
        with self._table() as table:
            stopping = self._refresh(table, stopping)  # an ending that came first is not a stop
        live = [row for row in stopping if row["finished_at"] is None]
        for row in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(row["pid"], signal.SIGTERM)
        for row in live:
            self._kill_group(row, signalled=True)
        with self._table() as table, transaction(table):
            for row in stopping:
                if row["finished_at"] is None:
                    finish(table, row["id"], time.time(), _read_exit_file(row["exit_file"]), STOPPED)
                mark_stopped(table, row["id"])
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
            exit_code=row["exit_code"], message=redact(row["message"]), handle=f"pid {row['pid']}",
            log=row["log_path"])

    def _server_observation(self, row: Row, router: Row | None, *,
                            healthy: bool | None = None) -> ServerObservation:
        """A Deployment's server as clients see it: at its front port's URL (a server started
        before front ports answers on its own), serving once that URL answers as this start."""
        url = router["url"] if router is not None else row["url"]
        message = redact(row["message"])  # a row from before messages were redacted, too
        if row["finished_at"] is not None:
            phase, message = "failed", message or f"exited with {row['exit_code']}"
        elif router is not None and router["finished_at"] is not None:
            phase, message = "failed", f"its front port {url} closed: {router['message'] or 'exited'}"
        else:
            healthy = answers_as(health(url), row) if healthy is None else healthy
            phase = "serving" if healthy else "starting"
        return ServerObservation(
            name=row["name"], fingerprint=row["fingerprint"],
            model_fingerprint=row["model_fingerprint"] or "", model_version=row["model_version"], phase=phase,
            url=url, started_at=row["started_at"],
            message=message, handle=f"pid {row['pid']}", log=row["log_path"],
            job=_read_job(row["job_file"]))

    def _table_exists(self) -> bool:
        """False when nothing was ever started here; one that cannot even be looked at counts
        as there, so opening it names the file and what is wrong."""
        try:
            return self.database.exists()
        except OSError:
            return True

    def _table(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._processes.connect()


# -- files ------------------------------------------------------------------------------------------


def _private_log(path: Path) -> Any:
    """A log opened for appending, readable by its owner only: jobs print what they print."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")


def write_route(route: Path, server: Row) -> None:
    """Where the front port forwards (router.py): replaced whole, so it reads the old or the new."""
    write_text_atomic(route, json.dumps({"url": server["url"], "version": server["model_version"]}) + "\n")


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
