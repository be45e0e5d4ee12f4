"""A Deployment's model server on this machine: started beside the version serving, trusted once
it answers /health with the token only its start knows, then put behind the Deployment's front
port (router.py), which stays put while versions switch behind it; the old version stops last.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.backends.base import BackendError
from reconciler.backends.local.processes import (
    ArgvForJobFile,
    LocalProcesses,
    free_port,
    job_argv,
    job_environment,
    port_is_free,
    read_exit_file,
    with_last_line,
)
from reconciler.backends.local.table import (
    ROUTER_KIND,
    SERVER_KIND,
    Row,
    current_routers,
    current_server,
    current_servers,
    finish,
    last_router,
    mark_stopped,
    rows,
    transaction,
    unfinished_rows,
)
from reconciler.fileio import write_text_atomic
from reconciler.jobs.jobfile import JobFile, ServeOptions
from reconciler.redaction import redact
from reconciler.state import ServerObservation

FRONT_PORT_TIMEOUT_S = 60.0  # a front port process starts in well under a second


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


class LocalServers:
    """Starts, switches and checks the model servers of Deployments, as processes of `processes`.

    `serve_argv` builds a server's command from its job file (default: `tuneops run serve`);
    `environment_of` gives the environment a job or server runs with (credentials, file roots).
    """

    def __init__(self, processes: LocalProcesses, *, port_range: tuple[int, int],
                 serve_argv: ArgvForJobFile | None,
                 environment_of: Callable[[JobFile], dict[str, str]]) -> None:
        self.processes = processes
        self.state_dir = processes.state_dir
        self.python = processes.python
        self.port_range = port_range
        self.serve_argv = serve_argv
        self.environment_of = environment_of

    def serve(self, job: JobFile, *, model_fingerprint: str, model_version: str | None,
              health_timeout: float = 600) -> ServerObservation:
        """Start the new version beside the one serving, on a port of its own; once it answers as
        the process started, point the Deployment's front port at it, then stop the old version
        (it answers what it has begun first). A start that fails touches nothing that serves."""
        with self.processes.table() as table:
            self.processes.refresh(table, unfinished_rows(table, "kind IN (?, ?) AND name = ?",
                                                          (SERVER_KIND, ROUTER_KIND, job.name)))
            old = rows(table, "kind = ? AND name = ? AND stopped = 0", (SERVER_KIND, job.name))
            previous = current_server(table, job.name)
            router = current_routers(table).get(job.name)
            front_before = last_router(table, job.name)
        serving = server_observation(previous, router) if previous is not None else None
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
            if front_port is not None:  # the first start, or after `tuneops stop`: nothing reaches the
                # old servers (one started before front ports may hold the port wanted)
                self.processes.stop_rows(old)
                write_route(route, server)
                router = self._start_router(job.name, front_port, route)
                why = self._await_front(router, server)
                if why is not None:
                    self.processes.stop_rows([router])
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
            self.processes.stop_rows([server])  # never a server nobody knows about
            raise
        self.processes.stop_rows(old)
        return server_observation(server, router, healthy=True)

    def _start_server(self, job: JobFile, model_fingerprint: str, model_version: str | None) -> Row:
        """The model server, on a port of its own, with a token only this start knows."""
        port, token = free_port(), secrets.token_hex(16)
        served = job.model_copy(update={"serve": ServeOptions(host="127.0.0.1", port=port, token=token)})
        argv = self.serve_argv or (lambda job_file: job_argv(served, job_file, python=self.python))
        return self.processes.start(SERVER_KIND, job.name, job.fingerprint, argv, job_text=served.to_json(),
                           environment=self.environment_of(served), port=port,
                           url=f"http://127.0.0.1:{port}",
                           model_fingerprint=model_fingerprint, model_version=model_version, token=token)

    def _start_router(self, name: str, port: int, route: Path) -> Row:
        argv = [self.python, "-m", "reconciler.backends.local.router", "--listen", f"127.0.0.1:{port}",
                "--upstream-file", str(route)]
        return self.processes.start(ROUTER_KIND, name, "", argv, environment=job_environment(), port=port,
                           url=f"http://127.0.0.1:{port}")

    def _failed_start(self, server: Row, router: Row | None, why: str, kept: str) -> ServerObservation:
        """The new server gone, and why. While the old version serves, it stays the Deployment's
        server; otherwise the failure is what `status` and the next plan see."""
        self.processes.kill_group(server)
        with self.processes.table() as table, transaction(table):
            finish(table, server["id"], time.time(), read_exit_file(server["exit_file"]), why)
            table.execute("UPDATE processes SET message = ? WHERE id = ?", (why, server["id"]))
            if kept:
                mark_stopped(table, server["id"])
            (server,) = rows(table, "id = ?", (server["id"],))
        failed = server_observation(server, router)
        return dataclasses.replace(failed, message=f"{why}{kept}")

    def _await_health(self, server: Row, timeout: float) -> str | None:
        """None once the server answers /health as the start that launched it; else why not (the
        process is then gone). Another process answering on its port is never taken for it."""
        deadline = time.monotonic() + timeout
        someone_else = False
        while True:
            if not self.processes.alive(server):
                with self.processes.table() as table:
                    (server,) = self.processes.refresh(table, [server])
                return server["message"] or f"exited with {server['exit_code']}"
            answer = health(server["url"])
            if answers_as(answer, server):
                return None
            someone_else = someone_else or answer is not None
            if time.monotonic() >= deadline:
                self.processes.kill_group(server)
                why = f"did not answer {server['url']}/health within {timeout:g} s"
                if someone_else:
                    why += ": another process answers on that port"
                return with_last_line(why, server["log_path"])
            time.sleep(0.1)

    def _await_front(self, router: Row, server: Row, timeout: float = FRONT_PORT_TIMEOUT_S) -> str | None:
        """None once the front port answers as `server` (the switch took effect); else why not."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.processes.alive(router):
                with self.processes.table() as table:
                    (router,) = self.processes.refresh(table, [router])
                return f"front port {router['port']}: {router['message'] or 'exited'}"
            if answers_as(health(router["url"]), server):
                return None
            if time.monotonic() >= deadline:
                return f"the front port {router['url']} did not move to the new version within {timeout:g} s"
            time.sleep(0.05)

    def _front_port(self, name: str, front_before: Row | None, previous: Row | None) -> int:
        """The port the Deployment answered on before (its URL stays), else the first free one.
        A server from before front ports answers on its own port, and is stopped to free it."""
        with self.processes.table() as table:
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


def server_observation(row: Row, router: Row | None, *, healthy: bool | None = None) -> ServerObservation:
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
        job=read_job(row["job_file"]))


def write_route(route: Path, server: Row) -> None:
    """Where the front port forwards (router.py): replaced whole, so it reads the old or the new."""
    write_text_atomic(route, json.dumps({"url": server["url"], "version": server["model_version"]}) + "\n")


def read_job(path: str | None) -> dict | None:
    """The job file a server was started with: its spec and lineage tell a later plan what
    changed. None when it is gone or unreadable (the plan then reports a plain fingerprint change)."""
    if not path:
        return None
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
