"""`tuneops reconcile`: the daemon against a real bare remote, a real MLflow server and the local
backend. Commits are pushed by an author clone, as people do; the daemon is a real process."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.http_support import Receiver
from tests.support.reconcile_support import CLI_ENV, GIT_ENV, QUICKSTART
from tests.support.runtime_support import free_port, needs_training

pytestmark = [needs_training, pytest.mark.slow]
SECRET = "webhook-secret-for-tests"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


class Author:
    """A clone that commits and pushes the spec folder `specs/` (the quickstart's dataset)."""

    def __init__(
        self, root: Path, tracking_uri: str, spec_files: tuple[str, ...] = ("base-model.yaml", "dataset.yaml")
    ):
        self.remote = root / "remote.git"
        git(root, "init", "-q", "--bare", "-b", "main", str(self.remote))
        self.clone = root / "author"
        git(root, "clone", "-q", str(self.remote), str(self.clone))
        specs = self.clone / "specs"
        specs.mkdir()
        for name in spec_files:
            shutil.copy(QUICKSTART / name, specs / name)
        shutil.copytree(QUICKSTART / "data", specs / "data")
        shutil.copytree(QUICKSTART / "models", specs / "models")
        self.experiment = f"daemon-{uuid.uuid4().hex[:8]}"
        (specs / "tuneops.yaml").write_text(
            f"backend: local\nmlflow:\n  trackingUri: {tracking_uri}\n  experiment: {self.experiment}\n"
        )
        (self.clone / ".gitignore").write_text(".tuneops/\n")

    def push(self, message: str) -> str:
        git(self.clone, "add", "-A")
        git(self.clone, "commit", "-q", "-m", message)
        git(self.clone, "push", "-q", "origin", "HEAD:main")
        return git(self.clone, "rev-parse", "HEAD")

    def edit(self, old: str, new: str) -> None:
        path = self.clone / "specs" / "dataset.yaml"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))

    def plan(self) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "plan", "specs", "--format", "json"],
            cwd=self.clone,
            env={**os.environ, **CLI_ENV},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return {f"{a['kind']}/{a['name']}": a for a in json.loads(done.stdout)["actions"]}


STARTED: list[DaemonProcess] = []


@pytest.fixture(autouse=True)
def no_daemon_left_behind():
    yield
    while STARTED:
        process = STARTED.pop().process
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


class DaemonProcess:
    def __init__(self, remote: Path, cache: Path, log: Path, *extra: str, env: dict[str, str] | None = None,
                 host: str = "127.0.0.1"):
        self.port = free_port()
        self.log = log
        command = [
            sys.executable,
            "-m",
            "reconciler",
            "reconcile",
            "--repo",
            str(remote),
            "--path",
            "specs",
            "--interval",
            "1",
            "--cache-dir",
            str(cache),
            "--listen",
            f"{host}:{self.port}",
            *extra,
        ]
        STARTED.append(self)
        self.process = subprocess.Popen(
            command,
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **CLI_ENV, "TUNEOPS_WEBHOOK_SECRET": SECRET, **(env or {})},
        )

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def post_hook(self, body: bytes, signature: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["X-Hub-Signature-256"] = signature
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/hooks/git", data=body, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code

    def metric(self, name: str, labels: str = "") -> float | None:
        try:
            status, text = self.get("/metrics")
        except OSError:
            return None
        match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if status == 200 and match else None

    def wait_for(self, what: str, check: Callable[[], object], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.process.poll() is None, f"the daemon exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"{what}: not within {timeout}s\n{self.log.read_text()[-3000:]}"
            )
            time.sleep(0.3)

    def synced(self, commit: str) -> bool:
        return self.metric("tuneops_synced_commit_info", f'{{commit="{commit}"}}') == 1.0

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def runs_of(tracking_uri: str, experiment: str, fingerprint: str) -> int:
    """Complete or not, every run recorded for that fingerprint in the author's experiment."""
    import mlflow

    from reconciler.tracking import vocabulary as tracking
    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return len(
        client.search_runs([found.experiment_id], f"tags.`{tracking.TAG_FINGERPRINT}` = '{fingerprint}'")
    )


def test_the_daemon_applies_pushes_skips_invalid_commits_and_survives_a_restart(
    tmp_path: Path, mlflow_server
):
    author = Author(tmp_path, mlflow_server.uri)
    first = author.push("a dataset")
    cache, log = tmp_path / "cache", tmp_path / "daemon.log"
    hook = Receiver()
    daemon = DaemonProcess(author.remote, cache, log, "--notify", hook.url)
    daemon.wait_for("listening", lambda: daemon.metric("tuneops_leader") is not None, timeout=60)
    assert daemon.get("/healthz")[0] == 200
    # 1. The first commit is applied within an interval of the daemon starting.
    daemon.wait_for("first commit applied", lambda: daemon.synced(first))
    assert daemon.get("/readyz")[0] == 200
    status, page = daemon.get("/")  # the dashboard, on loopback with no token
    assert status == 200 and 'data-resource="Dataset/fruit-colors" data-phase="Ready"' in page, page[-2000:]
    built = author.plan()["Dataset/fruit-colors"]
    assert built["action"] == "noop"
    assert runs_of(mlflow_server.uri, author.experiment, built["fingerprint"]) == 1

    # 2. An invalid commit is not applied: the checkout stays on the last good commit.
    author.edit("train: 0.8", "train: 8")
    bad = author.push("a typo")
    daemon.wait_for(
        "invalid commit reported",
        lambda: (daemon.metric("tuneops_reconcile_total", '{outcome="invalid"}') or 0) >= 1,
    )
    assert git(cache / "checkout", "rev-parse", "HEAD") == first
    assert f"commit {bad[:12]} does not validate" in log.read_text()
    assert re.search(r"dataset\.yaml:\d+:\d+ error spec\.split\.train", log.read_text())
    assert daemon.synced(first) and not daemon.synced(bad)
    daemon.wait_for(
        "invalid commit notified", lambda: any(m["event"] == "invalid_commit" for m in hook.received)
    )
    (notice,) = [m for m in hook.received if m["event"] == "invalid_commit"]
    assert notice["commit"] == bad and notice["branch"] == "main" and notice["repo"] == str(author.remote)
    assert "1 error(s), not applied: specs/dataset.yaml:12:12 error spec.split.train" in notice["message"]

    # 3. A fix is applied; its revert costs nothing (the old fingerprint is built).
    author.edit("train: 8", "train: 0.7\n    # more validation data")
    author.edit("validation: 0.1", "validation: 0.2")
    fixed = author.push("more validation data")
    daemon.wait_for("fix applied", lambda: daemon.synced(fixed))
    changed = author.plan()["Dataset/fruit-colors"]
    assert changed["action"] == "noop" and changed["fingerprint"] != built["fingerprint"]
    git(author.clone, "revert", "--no-edit", f"{first}..{fixed}")  # the fix, then the typo
    git(author.clone, "push", "-q", "origin", "HEAD:main")
    reverted = git(author.clone, "rev-parse", "HEAD")
    daemon.wait_for("revert synced", lambda: daemon.synced(reverted))
    assert author.plan()["Dataset/fruit-colors"]["fingerprint"] == built["fingerprint"]
    assert runs_of(mlflow_server.uri, author.experiment, built["fingerprint"]) == 1  # nothing rebuilt

    # 4. The webhook: a bad signature is refused, a good one accepted.
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert daemon.post_hook(body, "sha256=" + "0" * 64) == 401
    assert daemon.post_hook(body, None) == 401
    assert daemon.post_hook(body, good) == 202

    # 5. The documented series are exposed.
    _, metrics = daemon.get("/metrics")
    for series in (
        "tuneops_reconcile_duration_seconds_bucket",
        "tuneops_reconcile_total",
        'tuneops_plan_actions_total{action="rebuild"}',
        "tuneops_reconcile_failures_total",
        "tuneops_last_sync_timestamp_seconds",
        "tuneops_synced_commit_info",
        "tuneops_leader 1.0",
    ):
        assert series in metrics, series

    # 6. A second daemon on the same cache folder waits; it never applies.
    standby_log = tmp_path / "standby.log"
    standby = DaemonProcess(author.remote, cache, standby_log)
    standby.wait_for("standby", lambda: standby.metric("tuneops_leader") == 0.0, timeout=60)
    assert "standby:" in standby_log.read_text()

    # 7. SIGTERM in the middle of an apply, then a restart: nothing lost, nothing twice.
    author.edit("test: 0.1", "test: 0.15")
    author.edit("validation: 0.1", "validation: 0.05")
    moved = author.push("a bigger test split")

    def started() -> bool:
        text = log.read_text()
        head = f"applying {moved[:12]}"
        return head in text and "Dataset/fruit-colors: started" in text.split(head)[-1]

    daemon.wait_for("job started", started)
    assert daemon.stop() == 0  # mid-apply: the job was submitted and runs on
    after = log.read_text().split(f"applying {moved[:12]}")[-1]
    assert "apply was interrupted" in after and "done after" not in after, after
    standby.wait_for("the standby takes over and applies", lambda: standby.synced(moved))
    assert standby.metric("tuneops_leader") == 1.0
    latest = author.plan()["Dataset/fruit-colors"]
    assert latest["action"] == "noop"
    assert runs_of(mlflow_server.uri, author.experiment, latest["fingerprint"]) == 1
    assert standby.stop() == 0


def test_replicas_in_a_cluster_lead_through_a_lease(tmp_path: Path, mlflow_server):
    """The Lease lives in a FAKE API server (tests/support/fake_kube.py); the project runs locally."""
    from tests.support.fake_kube import FakeKubeApi

    author = Author(tmp_path, mlflow_server.uri, spec_files=("base-model.yaml",))  # nothing to build
    first = author.push("a base model")
    with FakeKubeApi() as cluster:
        env = {"KUBECONFIG": str(cluster.kubeconfig(tmp_path / "kubeconfig", namespace="ml"))}
        a = DaemonProcess(
            author.remote, tmp_path / "cache-a", tmp_path / "a.log", "--lease", "tuneops", env=env
        )
        a.wait_for("a leads and syncs", lambda: a.synced(first))
        b = DaemonProcess(
            author.remote, tmp_path / "cache-b", tmp_path / "b.log", "--lease", "tuneops", env=env
        )
        b.wait_for(
            "b waits",
            lambda: "standby: Lease ml/tuneops is held by" in (tmp_path / "b.log").read_text(),
            timeout=60,
        )
        assert b.metric("tuneops_leader") == 0.0
        assert not (tmp_path / "cache-b" / "checkout").exists()  # a standby does not even fetch
        holder = cluster.get("Lease", "tuneops", "ml")["spec"]["holderIdentity"]
        assert holder.endswith(f"-{a.process.pid}")
        assert a.stop() == 0  # releases the Lease: b need not wait it out
        b.wait_for("b takes over", lambda: b.synced(first), timeout=60)
        assert cluster.get("Lease", "tuneops", "ml")["spec"]["holderIdentity"].endswith(f"-{b.process.pid}")
        assert b.stop() == 0


def test_an_invalid_commit_leaves_the_model_serving(tmp_path: Path, mlflow_server):
    from reconciler.backends.local.backend import LocalBackend

    names = ("base-model.yaml", "dataset.yaml", "fine-tune.yaml", "evaluation.yaml", "deployment.yaml")
    author = Author(tmp_path, mlflow_server.uri, spec_files=names)
    first = author.push("the quickstart")
    cache, log = tmp_path / "cache", tmp_path / "daemon.log"
    token = "dashboard-token-for-tests-0123"
    # Listening on every address, as in a pod: the dashboard at / then asks for its token.
    daemon = DaemonProcess(author.remote, cache, log, host="0.0.0.0", env={"TUNEOPS_UI_TOKEN": token})
    state = LocalBackend(cache / "checkout" / "specs" / ".tuneops")
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        daemon.wait_for("trained, evaluated and served", lambda: daemon.synced(first), timeout=600)
        (served,) = state.observe().servers
        assert served.phase == "serving"
        assert daemon.get("/healthz")[0] == 200  # the kubelet's probes need no token
        status, refused = daemon.get("/")
        assert status == 401 and "Bearer" in refused and token not in refused
        status, page = daemon.get("/", bearer)
        assert status == 200, page
        for resource in ("Dataset/fruit-colors", "FineTune/fruit-sft", "Deployment/fruit-bot"):
            assert f'data-resource="{resource}" data-phase="Ready"' in page
        assert f"last applied <code>{first[:12]}</code>" in page
        assert token not in page and token not in log.read_text()
        author.edit("train: 0.8", "train: 8")
        bad = author.push("a typo")
        daemon.wait_for(
            "invalid commit skipped", lambda: f"commit {bad[:12]} does not validate" in log.read_text()
        )
        daemon.wait_for("the plan page names the commit not applied", lambda: f"next <code>{bad[:12]} (does "
                        "not validate)</code>" in daemon.get("/plan", bearer)[1], timeout=30)
        time.sleep(3)  # a few more ticks: still nothing applied
        (still,) = state.observe().servers
        assert (still.handle, still.model_version, still.phase) == (
            served.handle,
            served.model_version,
            "serving",
        )
        with urllib.request.urlopen(f"{still.url}/health", timeout=10) as answer:
            assert answer.status == 200
        assert git(cache / "checkout", "rev-parse", "HEAD") == first
    finally:
        daemon.stop()
        for server in state.observe().servers:
            state.stop("Deployment", server.name)
