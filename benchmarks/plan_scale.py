"""Whole-process benchmark of `tuneops plan` against a real MLflow server, every resource built.

For each size N (default 100 and 1,000 resources) it generates the validate benchmark's spec
repository (N/5 of each kind: Dataset, BaseModel, FineTune, Evaluation, Deployment; every
twentieth BaseModel gains an `architecture:` block), then makes every resource read as built
and running, the way the runtime and the local backend leave them:

- one FINISHED MLflow run per Dataset, FineTune and Evaluation, at the fingerprint the
  reconciler computes (`load_project(root).inputs[rid].fingerprint`), with the runtime's tags
  (kind, name, fingerprint, status=complete, output, spec, lineage, git commit; the dataset
  digest, the registered model version, the passed gate and the scored model version);
- one live server row per Deployment in the local backend's process table
  (`.tuneops/processes.db`), whose pid is a sleeping child of this script and whose URL answers
  `/health` from this script, with the job file it was "started" from.

So the online plan is all `noop`: the full comparison work, nothing to do. It then times whole
processes, `tuneops plan PATH --format json` (median of `--repeat` runs after one warm-up) and
the same with `--offline` (reads no state) as the baseline of the same session, and counts the
HTTP requests one online plan makes: to MLflow through a counting reverse proxy that the
project's `trackingUri` points at, and to the Deployments' health URLs. It never asserts on
time; it exits non-zero only when the plan is not what was set up (not all `noop`).

    python benchmarks/plan_scale.py                        # sizes 100,1000, 5 repetitions
    python benchmarks/plan_scale.py --sizes 1000 --repeat 9 --json
    python benchmarks/plan_scale.py --sizes 1000 --keep    # keep the server up to profile (Ctrl-C)

Needs the project with mlflow installed (for `mlflow server` and the setup's MlflowClient).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from common import (  # benchmarks/common.py, beside this script
    fresh_workdir,
    git_commit,
    print_table,
    stop_like_ctrl_c,
)
from validate_scale import CHILD_ENV, generate

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from reconciler.project import Project
    from reconciler.specs.base import Resource, ResourceId

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
DEFAULT_WORKDIR = HERE / ".work" / "plan-scale"  # git-ignored
TARGET_S = {1_000: 5.0}
API = "/api/2.0/mlflow/"  # left out of the table's column names  # online plan, median wall clock

sys.path.insert(0, str(PROJECT_ROOT))  # the reconciler, when run from a checkout without install

ARCHITECTURE = """\
  architecture:
    hiddenSize: 896
    numLayers: 24
    numAttentionHeads: 14
    numKeyValueHeads: 2
    intermediateSize: 4864
    vocabSize: 151936
    tieWordEmbeddings: true
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- servers

class MlflowServer:
    """`mlflow server` on 127.0.0.1 with SQLite, as tests/support/runtime_support.py starts it."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.log = (root / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=root,
            start_new_session=True)  # its own process group: uvicorn and job runners go with it

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"mlflow server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"mlflow server not ready after {timeout} s")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's process group (uvicorn, job runners): Linux /proc."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == self.process.pid:  # fields[2] is the process group
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 180, window: float = 5, busy: float = 0.25) -> float:
        """Wait until the server's processes use under `busy` of a core over `window` seconds.

        After `/health` first answers, `mlflow server`'s job-runner processes keep starting up:
        on 2 cores they take most of the CPU for about 30 s, which would be timed as the plan's."""
        if not Path("/proc/self/stat").exists():
            return 0.0
        start = time.monotonic()
        used = self.cpu_seconds()
        while time.monotonic() - start < timeout:
            time.sleep(window)
            now = self.cpu_seconds()
            if now - used < busy * window:
                break
            used = now
        return time.monotonic() - start

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


class CountingServer:
    """A threaded HTTP server on 127.0.0.1 that counts requests by `METHOD /path` (no query).

    With `upstream`, a reverse proxy that forwards each request there and adds up how long the
    upstream took to answer; without, it answers every request 200 `{}` (the Deployments' `/health`)."""

    def __init__(self, upstream: str | None = None):
        self.counts: Counter[str] = Counter()
        self.upstream_s = 0.0
        self.lock = threading.Lock()
        counter = self
        target = upstream.removeprefix("http://") if upstream else None

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                with counter.lock:
                    counter.counts[f"{self.command} {self.path.partition('?')[0]}"] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if target is None:
                    status, headers, payload = 200, [("Content-Type", "application/json")], b"{}"
                else:
                    connection = http.client.HTTPConnection(target, timeout=60)
                    start = time.perf_counter()
                    try:
                        forwarded = {k: v for k, v in self.headers.items()
                                     if k.lower() not in ("host", "connection", "content-length")}
                        connection.request(self.command, self.path, body=body, headers=forwarded)
                        response = connection.getresponse()
                        payload = response.read()
                        status = response.status
                        headers = [(k, v) for k, v in response.getheaders()
                                   if k.lower() not in ("connection", "content-length", "transfer-encoding")]
                    finally:
                        connection.close()
                    with counter.lock:
                        counter.upstream_s += time.perf_counter() - start
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self) -> tuple[Counter[str], float]:
        """The counts and upstream seconds so far, and start again from zero."""
        with self.lock:
            taken = self.counts, self.upstream_s
            self.counts, self.upstream_s = Counter(), 0.0
        return taken

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- the repository

def generate_repo(root: Path, n: int, tracking_uri: str, experiment: str) -> None:
    """validate_scale's repository, pointed at `tracking_uri`; every 20th BaseModel gets an
    `architecture:` block, so memory planning runs for the FineTunes on those."""
    generate(root, n)
    (root / "tuneops.yaml").write_text(
        "# Generated by benchmarks/plan_scale.py\nbackend: local\nmlflow:\n"
        f"  trackingUri: {tracking_uri}\n  experiment: {experiment}\n", encoding="utf-8")
    for path in sorted((root / "base-models").rglob("*.yaml")):
        documents = path.read_text(encoding="utf-8").split("---\n")
        for index, document in enumerate(documents):
            number = int(re.search(r"name: qwen-base-(\d+)", document).group(1))
            if number % 20 == 0:
                documents[index] = document + ARCHITECTURE
        path.write_text("---\n".join(documents), encoding="utf-8")


# --------------------------------------------------------------------------- making it built

@dataclass
class Setup:
    runs: int = 0
    servers: int = 0
    seconds: float = 0.0


def _run_tags(project: Project, rid: ResourceId, tracking: ModuleType,
              resolved_spec: Callable[[Resource], dict]) -> dict[str, str]:
    item = project.inputs[rid]
    fingerprint = item.fingerprint
    spec = resolved_spec(project.specs.get(rid).resource)
    lineage = {"recipe": item.recipe, "inputs": item.inputs, "sources": item.sources}
    tags = {
        tracking.TAG_KIND: rid.kind,
        tracking.TAG_NAME: rid.name,
        tracking.TAG_FINGERPRINT: fingerprint,
        tracking.TAG_STATUS: tracking.STATUS_COMPLETE,
        tracking.TAG_OUTPUT: str(project.storage_root / rid.kind.lower() / rid.name / fingerprint[:12]),
        tracking.TAG_GIT_COMMIT: "3f2c1a9" + "0" * 33,
        tracking.TAG_SPEC: json.dumps(spec, sort_keys=True, separators=(",", ":")),
        tracking.TAG_LINEAGE: json.dumps(lineage, sort_keys=True, separators=(",", ":")),
    }
    if rid.kind == "Dataset":
        tags[tracking.TAG_DATASET_DIGEST] = "sha256:" + fingerprint
    elif rid.kind == "FineTune":
        tags[tracking.TAG_REGISTERED_VERSION] = f"{rid.name}/1"
    elif rid.kind == "Evaluation":
        fine_tune = project.specs.get(rid).resource.spec.model.fine_tune
        tags[tracking.gate_tag(rid.name)] = "passed"
        tags[tracking.TAG_MODEL_VERSION] = f"{fine_tune}/1"
    return tags


def make_built(root: Path, mlflow_uri: str, experiment: str, sleeper_pid: int, health_url: str) -> Setup:
    """One FINISHED run per built resource (straight to the server, not through the proxy), and a
    live server row per Deployment."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow import MlflowClient

    from reconciler.backends.local.backend import LocalBackend
    from reconciler.backends.local.processes import start_ticks
    from reconciler.fingerprint import resolved_spec
    from reconciler.project import load_project
    from reconciler.specs.base import ResourceId
    from reconciler.state import BUILT_KINDS
    from reconciler.tracking import vocabulary as tracking

    start = time.perf_counter()
    project = load_project(root)
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = client.create_experiment(experiment)
    built = [rid for rid in project.graph.order if rid.kind in BUILT_KINDS]
    now_ms = int(time.time() * 1000)

    def create(index_rid: tuple[int, ResourceId]) -> None:
        index, rid = index_rid
        run = client.create_run(experiment_id, start_time=now_ms - 3_600_000 + index,
                                tags=_run_tags(project, rid, tracking, resolved_spec), run_name=rid.name)
        client.set_terminated(run.info.run_id, "FINISHED", end_time=now_ms + index)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, enumerate(built)))

    backend = LocalBackend(project.state_dir)
    backend.observe()  # creates the process table
    ticks = start_ticks(sleeper_pid)
    jobs = project.state_dir / "servers"
    jobs.mkdir(parents=True, exist_ok=True)
    rows = []
    for rid in project.graph.order:
        if rid.kind != "Deployment":
            continue
        item = project.inputs[rid]
        resource = project.specs.get(rid).resource
        fine_tune = resource.spec.model.fine_tune
        job_file = jobs / f"{rid.name}.json"
        job_file.write_text(json.dumps({  # what the plan reads of a server's job file
            "kind": rid.kind, "name": rid.name, "fingerprint": item.fingerprint,
            "spec": resolved_spec(resource),
            "lineage": {"recipe": item.recipe, "inputs": item.inputs, "sources": item.sources}}))
        rows.append(("Deployment", rid.name, item.fingerprint, 1, sleeper_pid, ticks,
                     json.dumps(["sleep"]), str(job_file), str(jobs / f"{rid.name}.log"),
                     str(jobs / f"{rid.name}.exit"), time.time(), None, health_url,
                     project.inputs[ResourceId("FineTune", fine_tune)].fingerprint, f"{fine_tune}/1"))
    with contextlib.closing(sqlite3.connect(backend.database)) as table, table:
        table.executemany(
            "INSERT INTO processes (kind, name, fingerprint, attempt, pid, pid_start_ticks, argv, job_file, "
            "log_path, exit_file, started_at, port, url, model_fingerprint, model_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return Setup(runs=len(built), servers=len(rows), seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------- measuring

def plan_argv(repo: Path, offline: bool) -> list[str]:
    return [sys.executable, "-m", "reconciler", "plan", str(repo), "--format", "json",
            *(["--offline"] if offline else [])]


def run_plan(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          env=CHILD_ENV)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(argv)} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed, proc.stdout.decode()


@dataclass
class Result:
    size: int
    setup: Setup
    counts: dict[str, int]  # the online plan's action counts
    online: list[float] = field(default_factory=list)
    offline: list[float] = field(default_factory=list)
    mlflow_requests: dict[str, int] = field(default_factory=dict)  # one online plan
    health_requests: int = 0  # one online plan
    mlflow_s: float = 0.0  # MLflow's answer time per timed online plan (mean), seen from the proxy

    @property
    def ratio(self) -> float:
        return statistics.median(self.online) / statistics.median(self.offline)

    def as_json(self) -> dict:
        return {"size": self.size, "runs_created": self.setup.runs, "servers": self.setup.servers,
                "setup_s": round(self.setup.seconds, 1), "plan_counts": self.counts,
                "online_s": {"median": statistics.median(self.online), "min": min(self.online),
                             "runs": self.online},
                "offline_s": {"median": statistics.median(self.offline), "min": min(self.offline),
                              "runs": self.offline},
                "ratio": self.ratio, "target_s": TARGET_S.get(self.size),
                "mlflow_requests": {"total": sum(self.mlflow_requests.values()), **self.mlflow_requests},
                "mlflow_answer_s": self.mlflow_s,
                "health_requests": self.health_requests}


def measure(size: int, workdir: Path, mlflow: MlflowServer, proxy: CountingServer, health: CountingServer,
            sleeper_pid: int, repeat: int) -> Result:
    repo = workdir / f"repo-{size}"
    experiment = f"plan-scale-{size}"
    generate_repo(repo, size, proxy.uri, experiment)
    setup = make_built(repo, mlflow.uri, experiment, sleeper_pid, health.uri)
    print(f"{size} resources: {setup.runs} MLflow runs and {setup.servers} server rows "
          f"in {setup.seconds:.1f} s", file=sys.stderr)
    online, offline = plan_argv(repo, False), plan_argv(repo, True)
    waited = mlflow.wait_idle()
    print(f"waited {waited:.0f} s for the MLflow server to go idle", file=sys.stderr)

    proxy.take(), health.take()
    _, output = run_plan(online)  # the warm-up run: counted, checked
    (mlflow_requests, _), (health_requests, _) = proxy.take(), health.take()
    counts = json.loads(output)["counts"]
    not_noop = {action: count for action, count in counts.items() if count and action != "noop"}
    if not_noop or counts["noop"] != size:
        raise SystemExit(f"FAIL: the online plan of {size} built resources is not all noop: {counts}")
    run_plan(offline)

    result = Result(size, setup, counts, mlflow_requests=dict(sorted(mlflow_requests.items())),
                    health_requests=sum(health_requests.values()))
    for round_index in range(repeat):  # interleaved: drift spreads over both
        result.online.append(run_plan(online)[0])
        result.offline.append(run_plan(offline)[0])
        print(f"{size}: round {round_index + 1}/{repeat} online {result.online[-1]:.2f} s, "
              f"offline {result.offline[-1]:.2f} s", file=sys.stderr)
    again, result.mlflow_s = proxy.take()
    result.mlflow_s /= repeat
    expected = Counter({path: count * repeat for path, count in mlflow_requests.items()})
    if again != expected:
        print(f"warning: timed runs made {dict(again)} MLflow requests, expected {dict(expected)}",
              file=sys.stderr)
    return result


# --------------------------------------------------------------------------- report

def environment() -> dict[str, str]:
    import mlflow  # already imported by the setup
    import pydantic

    return {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "platform": platform.platform(), "cpus": str(os.cpu_count()),
            "mlflow": mlflow.__version__, "pydantic": pydantic.VERSION,
            "commit": git_commit()}


def table(results: list[Result]) -> list[list[str]]:
    endpoints = sorted({path for r in results for path in r.mlflow_requests})
    rows = [["Resources", "Plan counts", "Online median s", "Online min s", "Offline median s",
             "Online / offline", "MLflow answer s", "MLflow requests",
             *[path.replace(API, "") for path in endpoints], "Health checks"]]
    for r in results:
        counts = ", ".join(f"{count} {action}" for action, count in r.counts.items() if count)
        rows.append([f"{r.size:,}", counts, f"{statistics.median(r.online):.3f}", f"{min(r.online):.3f}",
                     f"{statistics.median(r.offline):.3f}", f"{r.ratio:.2f}x", f"{r.mlflow_s:.3f}",
                     str(sum(r.mlflow_requests.values())),
                     *[str(r.mlflow_requests.get(path, 0)) for path in endpoints], str(r.health_requests)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000",
                        help="comma-separated numbers of resources, multiples of 5 (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command (default: 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="where the repositories and the MLflow database go "
                             "(default: benchmarks/.work/plan-scale)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the servers up after measuring, until Ctrl-C or SIGTERM (to profile)")
    args = parser.parse_args()
    sizes = [int(size.replace("_", "").replace(",", "")) for size in args.sizes.split(",") if size.strip()]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if any(size <= 0 or size % 5 for size in sizes):
        parser.error("every size must be a positive multiple of 5")

    stop_like_ctrl_c()
    workdir = fresh_workdir(args.workdir)
    mlflow = proxy = health = sleeper = None
    try:
        started = time.perf_counter()
        mlflow = MlflowServer(workdir / "mlflow")
        # The Deployments' "server process": alive while the benchmark runs, never signalled by a plan.
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(86400)"])
        mlflow.wait_ready()
        proxy, health = CountingServer(mlflow.uri), CountingServer()
        print(f"mlflow server {mlflow.uri} (pid {mlflow.process.pid}, ready in "
              f"{time.perf_counter() - started:.1f} s), counting proxy {proxy.uri}, health {health.uri}",
              file=sys.stderr)
        results = [measure(size, workdir, mlflow, proxy, health, sleeper.pid, args.repeat) for size in sizes]
        env = environment()
        if args.json:
            print(json.dumps({"environment": env, "repeat": args.repeat,
                              "results": [r.as_json() for r in results]}, indent=2))
        else:
            print(f"\n{env['date']}  Python {env['python']}  {env['cpus']} CPUs  mlflow {env['mlflow']}  "
                  f"commit {env['commit']}  ({args.repeat} runs each after one warm-up, wall clock, "
                  "whole processes)")
            print_table(table(results))
            for r in results:
                target = TARGET_S.get(r.size)
                if target is not None:
                    met = statistics.median(r.online) <= target
                    print(f"target: online plan of {r.size:,} resources <= {target:g} s: "
                          f"{'met' if met else 'NOT met'}")
        if args.keep:
            print(f"servers kept up; plan with: {' '.join(plan_argv(workdir / f'repo-{sizes[-1]}', False))}"
                  " (Ctrl-C or SIGTERM to stop)", file=sys.stderr)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    finally:
        for server in (proxy, health):
            if server is not None:
                server.stop()
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        if mlflow is not None:
            mlflow.stop()


if __name__ == "__main__":
    main()
