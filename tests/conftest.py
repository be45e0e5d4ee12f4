"""Shared test helpers: write a spec repository into tmp_path, run the real CLI as a process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# The tiny models the tests train gain nothing from a second compute thread per process, and on
# a 2-core CI machine the jobs, servers and MLflow of one test share the cores: one thread each
# (set before torch is imported, so the test process and every job it starts inherit it).
# Users' jobs keep torch's default, or their share of the cores with local.maxParallel > 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The tests start hundreds of Python processes (`tuneops` commands, jobs, servers). Some
# sandboxes export PYTHONDONTWRITEBYTECODE=1, which makes each of them compile the project from
# source again; they may cache bytecode, as every normal install does (as benchmarks/ do). This
# process keeps the setting it started with; only the processes the tests start see the change.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

API = "apiVersion: tuneops.dev/v1alpha1"

# A small valid repository, written per test and then broken in one place.
VALID_SPECS = {
    "base-model.yaml": f"""
        {API}
        kind: BaseModel
        metadata:
          name: tiny
        spec:
          source: file://models/tiny
        """,
    "dataset.yaml": f"""
        {API}
        kind: Dataset
        metadata:
          name: chats
        spec:
          source: file://data/chats.jsonl
          schema:
            type: chat
        """,
    "fine-tune.yaml": f"""
        {API}
        kind: FineTune
        metadata:
          name: sft
        spec:
          baseModel: tiny
          datasets:
            - name: chats
          adapter:
            r: 8
          training:
            learningRate: 2e-4
        """,
    "evaluation.yaml": f"""
        {API}
        kind: Evaluation
        metadata:
          name: sft-quality
        spec:
          model:
            fineTune: sft
          dataset:
            name: chats
          metrics: [perplexity, rougeL]
          gates:
            - metric: rougeL
              min: 0.3
        """,
    "deployment.yaml": f"""
        {API}
        kind: Deployment
        metadata:
          name: bot
        spec:
          model:
            fineTune: sft
          requires: [sft-quality]
        """,
    "data/chats.jsonl": '{"messages": [{"role": "user", "content": "hi"}]}\n',
}


@dataclass(frozen=True)
class Symlink:
    """A file of a test repository that is a symbolic link to `target`, as Git commits one."""

    target: str


def write_repo(root: Path, files: dict[str, str | bytes | Symlink]) -> Path:
    """Write `files` (relative path -> text, dedented; raw bytes; or a Symlink) under `root`."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Symlink):
            path.symlink_to(content.target)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    return root


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_tuneops(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 60, stdin: str = "", file_modes_apply: bool = False) -> CliResult:
    """Run `tuneops` as a real process (python -m reconciler), as a user would. Its input is
    `stdin` and then end of file, never the terminal the tests run in: no terminal, as in CI.
    `file_modes_apply`: even when the tests run as root, `chmod 000` stops its reads (see
    `honour_file_modes`)."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    full_env.pop("TUNEOPS_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=stdin,
                          preexec_fn=honour_file_modes if file_modes_apply and os.geteuid() == 0 else None)
    return CliResult(done.returncode, done.stdout, done.stderr)


def honour_file_modes() -> None:
    """In a child about to run: drop the capabilities that let root read and search any file
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from its bounding set, so root meets file modes as
    any other user does. Needs CAP_SETPCAP; `file_modes_can_apply` says whether it works here."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.fixture(scope="session")
def file_modes_can_apply(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip a test that needs `chmod 000` to stop reads where it cannot: as root, without the
    right to drop root's override."""
    if os.geteuid() != 0:
        return
    secret = tmp_path_factory.mktemp("modes") / "secret"
    secret.write_text("x")
    secret.chmod(0)
    try:
        done = subprocess.run([sys.executable, "-c", f"open({str(secret)!r}).read()"], capture_output=True,
                              preexec_fn=honour_file_modes, timeout=60)
    except subprocess.SubprocessError:
        pytest.skip("running as root without CAP_SETPCAP: chmod 000 cannot stop root's reads here")
    if b"PermissionError" not in done.stderr:
        pytest.skip("running as root and chmod 000 does not stop reads even without CAP_DAC_OVERRIDE")


@pytest.fixture(scope="session", autouse=True)
def jobs_by_hand_may_read_test_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that start `tuneops run` themselves, not through a backend, say what an operator
    running a job by hand would: it may read file:// paths in this session's temporary folders
    and in this repository's examples. A backend sets its own roots over these; the tests of the
    confinement itself set theirs, or none."""
    from reconciler.specs.confinement import FILE_ROOTS_ENV

    before = os.environ.get(FILE_ROOTS_ENV)
    os.environ[FILE_ROOTS_ENV] = os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(REPO_ROOT)])
    yield
    if before is None:
        os.environ.pop(FILE_ROOTS_ENV, None)
    else:
        os.environ[FILE_ROOTS_ENV] = before


@pytest.fixture
def valid_repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "specs", VALID_SPECS)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama-architecture model, built once per session with the fruit task's words."""
    pytest.importorskip("transformers", reason="needs the [train] extra")
    from reconciler.runtime.tiny_model import build, corpus_from_jsonl
    from tests.support.runtime_support import FRUIT_DATA

    return build(tmp_path_factory.mktemp("models") / "tiny-llama", corpus=corpus_from_jsonl(FRUIT_DATA))


@pytest.fixture(scope="session")
def mlflow_server_process(tmp_path_factory: pytest.TempPathFactory):
    """The `mlflow server` process of the session, started and not yet waited for."""
    pytest.importorskip("mlflow", reason="needs the [train] extra")
    from tests.support.runtime_support import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_process):
    """A real `mlflow server` on 127.0.0.1 (SQLite, temporary artifacts), shared by the session."""
    mlflow_server_process.wait_ready()
    return mlflow_server_process


@pytest.fixture(scope="session", autouse=True)
def mlflow_server_starts_with_the_session(request: pytest.FixtureRequest) -> None:
    """A new `mlflow server` spends 10-20 s of one core creating its database before it answers.
    When a test of this session uses it, it is started with the session's first test, so that it
    gets ready beside the tests before that one instead of in that test's setup."""
    if importlib.util.find_spec("mlflow") is None:
        return
    if any("mlflow_server" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("mlflow_server_process")


@pytest.fixture
def time_zone():
    """Sets TZ for the test (time.tzset), and puts the machine's back after it."""
    before = os.environ.get("TZ")

    def use(zone: str) -> None:
        os.environ["TZ"] = zone
        time.tzset()

    yield use
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()
