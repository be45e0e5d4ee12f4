"""The local backend with real processes: what it observes, what survives, what it stops and serves.

Jobs here are plain `python -c` commands started through `start_process`, so the process table,
the supervisor and the observations are exercised without training anything.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.backends.base import BackendError
from reconciler.backends.local.backend import LocalBackend
from reconciler.backends.local.processes import (
    DISAPPEARED,
    free_port,
    job_argv,
    job_environment,
    process_alive,
    start_ticks,
)
from reconciler.jobs.jobfile import JobFile, MlflowTarget
from reconciler.state import STOPPED, BackendState
from tests.support.http_support import Poller

FINGERPRINT = "a" * 64
OTHER_FINGERPRINT = "b" * 64
HAS_PROC = Path("/proc/self/stat").exists()

# Waits until the file named by its first argument exists: a job that runs as long as a test wants.
WAIT_FOR_FILE = ("import pathlib, sys, time\n"
                 "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.02)\n"
                 "print('done')")
SLEEP = "import time; time.sleep(60)"


def python(code: str, *args: object) -> list[str]:
    return [sys.executable, "-c", code, *map(str, args)]


def pid_of(handle: str) -> int:
    return int(handle.removeprefix("pid "))


def job(kind: str = "FineTune", name: str = "sft", fingerprint: str = FINGERPRINT, spec: dict | None = None,
        root: Path = Path("/tmp/store")) -> JobFile:
    return JobFile(kind=kind, name=name, fingerprint=fingerprint, spec=spec or {}, storage_root=str(root),
                   mlflow=MlflowTarget(tracking_uri="sqlite:///unused.db"))


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / ".tuneops"
    yield state
    if (state / "processes.db").exists():  # tests leave no server (or front port) behind
        with sqlite3.connect(state / "processes.db") as table:
            names = {name for (name,) in table.execute(
                "SELECT DISTINCT name FROM processes WHERE kind IN ('Deployment', 'Router')")}
        for name in names:
            LocalBackend(state).stop("Deployment", name)


@pytest.fixture
def backend(state_dir: Path) -> LocalBackend:
    return LocalBackend(state_dir)


def test_a_job_is_running_until_it_exits_then_succeeded(backend: LocalBackend, tmp_path: Path) -> None:
    release = tmp_path / "release"
    started = backend.start_process("Dataset", "chats", FINGERPRINT, python(WAIT_FOR_FILE, release))
    assert (started.phase, started.attempts, started.exit_code) == ("running", 1, None)
    assert backend.observe().job("Dataset", "chats", FINGERPRINT).phase == "running"

    release.touch()
    done = backend.wait("Dataset", "chats", FINGERPRINT, poll=0.05)
    assert (done.phase, done.exit_code, done.message) == ("succeeded", 0, "")
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert Path(done.log).read_text().strip() == "done"
    assert Path(done.log).name == f"dataset-chats-{FINGERPRINT[:16]}-1.log"


def test_a_failed_job_says_its_exit_code_and_the_last_line_of_its_log(backend: LocalBackend) -> None:
    code = ("import sys\nprint('loading')\n"
            "print('error: dataset chats: row 17 is not JSON', file=sys.stderr)\nprint('   ')\nsys.exit(3)")
    backend.start_process("Dataset", "chats", FINGERPRINT, python(code))
    failed = backend.wait("Dataset", "chats", FINGERPRINT, poll=0.05)
    assert (failed.phase, failed.exit_code) == ("failed", 3)
    assert failed.message == "exited with 3: error: dataset chats: row 17 is not JSON"
    assert backend.observe().job("Dataset", "chats", FINGERPRINT) == failed


def test_attempts_are_counted_per_fingerprint_and_logs_are_kept_per_attempt(backend: LocalBackend) -> None:
    for fingerprint in (FINGERPRINT, FINGERPRINT, OTHER_FINGERPRINT):
        backend.start_process("FineTune", "sft", fingerprint, python("print('attempt')"))
        backend.wait("FineTune", "sft", fingerprint, poll=0.05)
    state = backend.observe()
    assert state.job("FineTune", "sft", FINGERPRINT).attempts == 2
    assert state.job("FineTune", "sft", FINGERPRINT).log.endswith(f"-{FINGERPRINT[:16]}-2.log")
    assert state.job("FineTune", "sft", OTHER_FINGERPRINT).attempts == 1
    assert len(state.jobs) == 2
    assert backend.log_file("FineTune", "sft").name == f"finetune-sft-{OTHER_FINGERPRINT[:16]}-1.log"
    assert backend.log_file("FineTune", "other") is None


def test_attempt_numbers_stay_unique_when_threads_start_the_same_job(backend: LocalBackend) -> None:
    started = []
    threads = [threading.Thread(target=lambda: started.append(
        backend.start_process("Dataset", "chats", FINGERPRINT, python("pass")))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(job.attempts for job in started) == [1, 2, 3, 4]
    assert backend.wait("Dataset", "chats", FINGERPRINT, poll=0.05).attempts == 4


def test_a_job_whose_supervisor_is_killed_disappeared(backend: LocalBackend) -> None:
    started = backend.start_process("Evaluation", "quality", FINGERPRINT, python(SLEEP))
    os.killpg(pid_of(started.handle), signal.SIGKILL)
    failed = backend.wait("Evaluation", "quality", FINGERPRINT, poll=0.05)
    assert (failed.phase, failed.exit_code, failed.message) == ("failed", None, DISAPPEARED)


def test_another_backend_on_the_same_state_dir_adopts_a_running_job(state_dir: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    LocalBackend(state_dir).start_process("Dataset", "chats", FINGERPRINT, python(WAIT_FOR_FILE, release))

    adopter = LocalBackend(state_dir)
    assert adopter.observe().job("Dataset", "chats", FINGERPRINT).phase == "running"
    stop_waiting = threading.Event()
    stop_waiting.set()
    interrupted = adopter.wait("Dataset", "chats", FINGERPRINT, poll=0.05, stop_event=stop_waiting)
    assert interrupted.phase == "running"

    threading.Timer(0.3, release.touch).start()
    assert adopter.wait("Dataset", "chats", FINGERPRINT, poll=0.05).phase == "succeeded"


def test_a_job_outlives_the_apply_that_started_it(state_dir: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    apply = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from reconciler.backends.local.backend import LocalBackend
        job = LocalBackend(Path({str(state_dir)!r})).start_process(
            "FineTune", "sft", {FINGERPRINT!r}, [sys.executable, "-c", {WAIT_FOR_FILE!r}, {str(release)!r}])
        print(job.handle, flush=True)
        time.sleep(60)
        """)
    process = subprocess.Popen([sys.executable, "-c", apply], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        handle = process.stdout.readline().strip()
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the apply and its process group, as a terminal would
        process.wait()
        process.stdout.close()
    assert handle.startswith("pid ")

    backend = LocalBackend(state_dir)
    time.sleep(0.2)
    running = backend.observe().job("FineTune", "sft", FINGERPRINT)
    assert (running.phase, running.handle) == ("running", handle)
    release.touch()
    assert backend.wait("FineTune", "sft", FINGERPRINT, poll=0.05).phase == "succeeded"


@pytest.mark.skipif(not HAS_PROC, reason="start ticks come from /proc")
def test_a_reused_pid_is_not_the_recorded_process(backend: LocalBackend, state_dir: Path) -> None:
    me = os.getpid()
    assert process_alive(me, start_ticks(me))
    assert not process_alive(me, start_ticks(me) + 1)

    started = backend.start_process("Dataset", "chats", FINGERPRINT, python(SLEEP))
    pid = pid_of(started.handle)
    try:
        with sqlite3.connect(state_dir / "processes.db") as table:  # as if the pid now belonged to another
            table.execute("UPDATE processes SET pid_start_ticks = pid_start_ticks + 1")
        observed = backend.observe().job("Dataset", "chats", FINGERPRINT)
        assert (observed.phase, observed.message) == ("failed", DISAPPEARED)
        assert process_alive(pid, None)  # the real process was left alone
    finally:
        os.killpg(pid, signal.SIGKILL)


def test_stop_ends_the_whole_process_group(backend: LocalBackend) -> None:
    code = textwrap.dedent("""
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(grandchild.pid, flush=True)
        time.sleep(60)
        """)
    started = backend.start_process("FineTune", "sft", FINGERPRINT, python(code))
    log = Path(started.log)
    deadline = time.monotonic() + 10
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(log.read_text().split()[0])
    assert process_alive(grandchild, None)

    assert backend.stop("FineTune", "sft") == [started.handle]
    assert not process_alive(pid_of(started.handle), None)
    assert not process_alive(grandchild, None)
    stopped = backend.observe().job("FineTune", "sft", FINGERPRINT)
    assert (stopped.phase, stopped.message) == ("failed", STOPPED)
    assert backend.stop("FineTune", "sft") == []


def test_several_processes_run_under_torchrun(tmp_path: Path) -> None:
    fine_tune = job()
    job_file = tmp_path / "job.json"
    run = ["-m", "reconciler", "run", "finetune", "--job", str(job_file)]
    assert job_argv(fine_tune, job_file, python="py") == ["py", *run]
    assert job_argv(fine_tune, job_file, processes=2, python="py", master_port=29511) == [
        "py", "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29511", *run]
    assert "--master_port" in job_argv(fine_tune, job_file, processes=4)


def test_a_fine_tune_without_gpus_gets_deepspeed_on_cpu() -> None:
    assert job_environment(job(), base={})["DS_ACCELERATOR"] == "cpu"
    on_gpus = job_environment(job(spec={"resources": {"gpusPerNode": 2}}), base={})
    assert "DS_ACCELERATOR" not in on_gpus
    assert on_gpus["PYTHONUNBUFFERED"] == "1" and on_gpus["TOKENIZERS_PARALLELISM"] == "false"
    assert job_environment(job(), base={"DS_ACCELERATOR": "cuda"})["DS_ACCELERATOR"] == "cuda"


def test_jobs_that_share_the_machine_share_its_cores(monkeypatch) -> None:
    """Two jobs at once each taking every core make both slower: each gets its share."""
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert "OMP_NUM_THREADS" not in job_environment(job(), base={})  # alone: torch's default
    assert job_environment(job(), base={}, jobs_at_once=4)["OMP_NUM_THREADS"] == "4"
    assert job_environment(job(), base={}, jobs_at_once=32)["OMP_NUM_THREADS"] == "1"
    assert job_environment(job(), base={"OMP_NUM_THREADS": "8"}, jobs_at_once=4)["OMP_NUM_THREADS"] == "8"


# Stands in for the interpreter: runs the supervisor for real, and for the job prints what it was given.
STAND_IN_PYTHON = """#!/bin/sh
if [ "$2" = reconciler.backends.local.supervise ]; then exec {python} "$@"; fi
echo "argv: $*"
echo "DS_ACCELERATOR=$DS_ACCELERATOR"
echo "error: this python only says what it was asked to run"
exit 2
"""


def test_submit_writes_the_job_file_and_runs_tuneops_run(state_dir: Path, tmp_path: Path) -> None:
    stand_in = tmp_path / "python"
    stand_in.write_text(STAND_IN_PYTHON.format(python=shlex.quote(sys.executable)))
    stand_in.chmod(0o755)
    backend = LocalBackend(state_dir, python=str(stand_in))

    started = backend.submit(job(), processes=2)
    job_file = state_dir / "jobs" / f"finetune-sft-{FINGERPRINT[:16]}-1.json"
    assert json.loads(job_file.read_text()) == json.loads(job().to_json())
    failed = backend.wait("FineTune", "sft", FINGERPRINT, poll=0.05)
    assert (started.phase, failed.phase, failed.exit_code) == ("running", "failed", 2)
    assert failed.message == "exited with 2: error: this python only says what it was asked to run"
    log = Path(failed.log).read_text()
    assert "argv: -m torch.distributed.run --nproc_per_node 2 --master_port " in log
    assert f" -m reconciler run finetune --job {job_file}\n" in log
    assert "DS_ACCELERATOR=cpu\n" in log


# -- model servers --------------------------------------------------------------------------------------

# Stands in for `tuneops run serve`: loads for a while, then answers /health as the start it was
# launched as (the token in its job file) and /version with its label; SIGTERM ends it gracefully.
STAND_IN_SERVER = """
import http.server, json, signal, sys, threading, time
serve = json.load(open(sys.argv[1]))["serve"]
label, loading = sys.argv[2], float(sys.argv[3])
time.sleep(loading)
token = "an earlier start" if label == "impostor" else serve.get("token")
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        health = {"status": "ok", "model": "bot", "version": label, "token": token}
        body = json.dumps(health).encode() if self.path == "/health" else label.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((serve["host"], serve["port"]), Handler)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
"""
BROKEN_SERVER = "import sys; print('error: cannot load the model: no adapter_config.json'); sys.exit(1)"
SILENT_SERVER = "import time; time.sleep(60)"


def get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as response:
        return response.read().decode()


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    script = tmp_path / "stand_in_server.py"
    script.write_text(STAND_IN_SERVER)
    return script


@pytest.fixture
def ports() -> tuple[int, int]:
    low = free_port()
    return low, low + 20


def serving(state_dir: Path, ports: tuple[int, int], stand_in: Path, label: str, *,
            loading: float = 0.0) -> LocalBackend:
    """A backend whose model servers are the stand-in, labelled `label`."""
    return LocalBackend(state_dir, port_range=ports, serve_argv=lambda job_file: [
        sys.executable, str(stand_in), str(job_file), label, str(loading)])


def test_a_version_switch_loses_no_request_and_then_stops_the_old_version(
        state_dir: Path, ports: tuple[int, int], stand_in: Path) -> None:
    first = serving(state_dir, ports, stand_in, "v1").serve(
        job("Deployment", "bot"), model_fingerprint="1" * 64, model_version="sft/1", health_timeout=30)
    assert first.phase == "serving" and get(f"{first.url}/version") == "v1"
    assert ports[0] <= int(first.url.rsplit(":", 1)[1]) <= ports[1]

    with Poller(f"{first.url}/version") as clients:
        clients.wait_for_answers(3)
        # The new version takes a while to load, as a model does: the old one answers meanwhile.
        second = serving(state_dir, ports, stand_in, "v2", loading=0.5).serve(
            job("Deployment", "bot", OTHER_FINGERPRINT), model_fingerprint="2" * 64, model_version="sft/2",
            health_timeout=30)
        clients.wait_for_answers(3)
    assert clients.failures == []
    assert (second.phase, second.url, second.model_version) == ("serving", first.url, "sft/2")
    assert "v1" in clients.answers and clients.answers[-1] == "v2"
    assert clients.answers == sorted(clients.answers), "v1 answered again after v2 took over"
    assert not process_alive(pid_of(first.handle), None)
    job_file = state_dir / "jobs" / f"deployment-bot-{OTHER_FINGERPRINT[:16]}-1.json"
    serve = json.loads(job_file.read_text())["serve"]
    assert serve["host"] == "127.0.0.1" and len(serve["token"]) >= 32
    health = json.loads(get(f"{second.url}/health"))
    assert (health["version"], health["token"]) == ("v2", serve["token"])

    current = LocalBackend(state_dir).observe().server("bot")
    assert (current.phase, current.fingerprint, current.url) == ("serving", OTHER_FINGERPRINT, first.url)
    assert json.loads((state_dir / "routes" / "bot.json").read_text())["version"] == "sft/2"
    LocalBackend(state_dir).stop("Deployment", "bot")
    assert not (state_dir / "routes" / "bot.json").exists()  # nothing left that points at a dead server


def test_a_new_version_that_fails_to_start_leaves_the_old_one_serving(
        state_dir: Path, ports: tuple[int, int], stand_in: Path) -> None:
    first = serving(state_dir, ports, stand_in, "v1").serve(
        job("Deployment", "bot"), model_fingerprint="1" * 64, model_version="sft/1", health_timeout=30)
    broken = LocalBackend(state_dir, port_range=ports,
                          serve_argv=lambda _: [sys.executable, "-c", BROKEN_SERVER])
    with Poller(f"{first.url}/version") as clients:
        clients.wait_for_answers(3)
        failed = broken.serve(job("Deployment", "bot", "c" * 64), model_fingerprint="3" * 64,
                              model_version="sft/3", health_timeout=30)
        clients.wait_for_answers(3)
    assert clients.failures == [] and set(clients.answers) == {"v1"}
    assert failed.phase == "failed"
    assert failed.message == ("exited with 1: error: cannot load the model: no adapter_config.json; "
                              f"sft/1 keeps serving at {first.url}")
    current = broken.observe().server("bot")
    assert (current.phase, current.fingerprint, current.model_version, current.url, current.handle) == (
        "serving", FINGERPRINT, "sft/1", first.url, first.handle)

    stopped = broken.stop("Deployment", "bot")
    assert first.handle in stopped and len(stopped) == 2  # the server and its front port
    assert broken.observe().server("bot") is None
    with pytest.raises(OSError):
        get(f"{first.url}/version")


def test_a_server_that_answers_health_as_another_start_is_not_trusted(
        state_dir: Path, ports: tuple[int, int], stand_in: Path) -> None:
    failed = serving(state_dir, ports, stand_in, "impostor").serve(
        job("Deployment", "bot"), model_fingerprint="1" * 64, model_version="sft/1", health_timeout=1)
    assert failed.phase == "failed"
    assert "within 1 s" in failed.message and "another process answers" in failed.message
    assert not process_alive(pid_of(failed.handle), None)


def test_a_server_that_never_answers_fails_and_is_killed(state_dir: Path, ports: tuple[int, int]) -> None:
    backend = LocalBackend(state_dir, port_range=ports,
                           serve_argv=lambda _: [sys.executable, "-c", SILENT_SERVER])
    failed = backend.serve(job("Deployment", "bot"), model_fingerprint="1" * 64, model_version=None,
                           health_timeout=0.5)
    assert failed.phase == "failed"
    assert failed.message.startswith("did not answer http://127.0.0.1:") and "within 0.5 s" in failed.message
    assert not process_alive(pid_of(failed.handle), None)
    assert backend.observe() == BackendState(jobs=(), servers=(failed,))


def test_a_process_table_from_before_start_tokens_gains_the_column(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    with sqlite3.connect(state_dir / "processes.db") as table:  # the schema tuneops first shipped
        table.execute("""CREATE TABLE processes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL, name TEXT NOT NULL, fingerprint TEXT NOT NULL, attempt INTEGER NOT NULL,
            pid INTEGER NOT NULL, pid_start_ticks INTEGER, argv TEXT NOT NULL, job_file TEXT,
            log_path TEXT NOT NULL, exit_file TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL,
            exit_code INTEGER, message TEXT NOT NULL DEFAULT '', port INTEGER, url TEXT,
            model_fingerprint TEXT, model_version TEXT, stopped INTEGER NOT NULL DEFAULT 0)""")
    backend = LocalBackend(state_dir)
    backend.start_process("Dataset", "chats", FINGERPRINT, python("pass"))
    assert backend.wait("Dataset", "chats", FINGERPRINT, poll=0.05).phase == "succeeded"


def test_without_a_free_front_port_nothing_is_started(state_dir: Path, stand_in: Path) -> None:
    with socket.socket() as taken:  # another program holds the only port the backend may use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        backend = serving(state_dir, (port, port), stand_in, "v1")
        with pytest.raises(BackendError, match=f"no free port in {port}-{port}"):
            backend.serve(job("Deployment", "bot"), model_fingerprint="1" * 64, model_version="sft/1",
                          health_timeout=30)
    assert backend.observe() == BackendState(jobs=(), servers=())
    assert not list((state_dir / "jobs").glob("deployment-*.json"))


@pytest.mark.slow  # runs a dataset job
def test_a_job_reads_files_only_where_its_backend_says(tmp_path: Path) -> None:
    """The folders a job may read come from the backend (the repository its state folder is in,
    and the allowed roots), not from the job file nor from the environment apply runs in."""
    data = tmp_path / "elsewhere.jsonl"
    data.write_text('{"text": "a"}\n')
    project = tmp_path / "project"
    backend = LocalBackend(project / ".tuneops")
    tracking = MlflowTarget(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset = JobFile(kind="Dataset", name="chats", fingerprint=FINGERPRINT, spec={
        "source": "file://elsewhere.jsonl", "schema": {"type": "text"}}, source=f"file://{data}",
        storage_root=str(tmp_path / "store"), mlflow=tracking)
    backend.submit(dataset)
    failed = backend.wait("Dataset", "chats", FINGERPRINT, poll=0.05)
    log = Path(failed.log).read_text()
    assert (failed.phase, failed.exit_code) == ("failed", 1), log
    assert (f"error: dataset 'chats': {data} is outside the folders this job may read "
            f"(TUNEOPS_FILE_ROOTS={project})\n") in log
