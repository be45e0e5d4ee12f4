"""The reconcile daemon: keep MLflow and the backend converged on a branch (`tuneops reconcile`).

Each tick fetches the branch into a cache folder, validates the specs, and runs `tuneops apply
--yes` on them as a child process (its own memory, its own signal handling, the same output a
person sees). A commit that does not validate is never applied: the checkout goes back to the
last good commit, the bad one is reported once, and later ticks skip it until the branch moves.
Failures back off exponentially with jitter. SIGTERM stops the loop and passes the signal to a
running apply, which stops after its current steps; jobs keep running and the next apply adopts
them, so a restart neither loses nor duplicates work.

Only one daemon acts per cache folder: an exclusive file lock, held for the daemon's life; a
second one waits as a standby and takes over when the first dies. A small HTTP server answers
`/healthz`, `/readyz` (after the first successful sync), Prometheus `/metrics`, and
`POST /hooks/git` (GitHub's `X-Hub-Signature-256`), which wakes the loop early; daemon_http.py
serves them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler import redaction
from reconciler.config import STATE_DIR
from reconciler.daemon.http import Endpoints, HttpServer, ListenError, RefusalLog
from reconciler.daemon.notify import Notification, Notifier, events_after_apply
from reconciler.errors import TuneopsError
from reconciler.git.info import credential_free_remote, without_credentials
from reconciler.lock import ApplyLock, Locked

DAEMON_LOCK = "daemon.lock"
WEBHOOK_SECRET_ENV = "TUNEOPS_WEBHOOK_SECRET"
SPEC_REPO_ENV = "TUNEOPS_SPEC_REPO"  # --repo from the environment (cli.py), off the command line
DAEMON_ONLY_VARIABLES = frozenset({WEBHOOK_SECRET_ENV, SPEC_REPO_ENV})


class DaemonError(TuneopsError, RuntimeError):
    """A setting or a repository the daemon cannot work with (one line)."""


@dataclass(frozen=True)
class DaemonConfig:
    repo: str  # URL or path of the Git repository
    cache_dir: Path
    branch: str = "main"
    path: str = "."  # the spec folder inside the repository
    interval: float = 60.0
    once: bool = False
    listen: tuple[str, int] | None = None
    webhook_secret: bytes | None = None
    max_backoff: float = 600.0
    lease: str | None = None  # lead through this coordination.k8s.io Lease instead of the file lock
    lease_duration: float = 15.0
    notify_url: str | None = None
    notify_style: str = "json"  # or "slack"

    @property
    def checkout(self) -> Path:
        return self.cache_dir / "checkout"

    @property
    def spec_root(self) -> Path:
        return self.checkout / self.path


class GitMirror:
    """The branch, fetched and reset into a checkout of its own. Untracked files survive a reset
    except the state folder's siblings: `.tuneops/` (local backend state) is kept."""

    def __init__(self, repo: str, branch: str, checkout: Path):
        self.repo, self.branch, self.checkout = repo, branch, checkout
        # A token in the remote travels in git's environment, not its command line or .git/config.
        self.url, self.environment = credential_free_remote(repo, {**os.environ, "GIT_TERMINAL_PROMPT": "0"})

    def sync(self) -> str:
        if not (self.checkout / ".git").is_dir():
            self.checkout.parent.mkdir(parents=True, exist_ok=True)
            self._git(None, "clone", "--quiet", "--no-checkout", self.url, str(self.checkout))
        else:  # a checkout an earlier tuneops cloned kept the token in its config
            self._git(self.checkout, "remote", "set-url", "origin", self.url)
        self._git(
            self.checkout,
            "fetch",
            "--quiet",
            "--prune",
            "origin",
            f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}",
        )
        return self.reset(f"origin/{self.branch}")

    def reset(self, commit: str) -> str:
        self._git(self.checkout, "reset", "--quiet", "--hard", commit)
        self._git(self.checkout, "clean", "--quiet", "-fd", "-e", STATE_DIR)
        return self._git(self.checkout, "rev-parse", "HEAD").strip()

    def _git(self, cwd: Path | None, *args: str) -> str:
        command = ["git", *(["-C", str(cwd)] if cwd else []), *args]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=300,
                env=self.environment,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DaemonError(f"git {args[0]} failed: {error}") from None
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no message"])[-1].replace(self.repo, self.shown)
            raise DaemonError(f"git {args[0]} of {self.shown} ({self.branch}) failed: {why}")
        return done.stdout

    @property
    def shown(self) -> str:
        return without_credentials(self.repo)


class Metrics:
    """The series docs/daemon.md documents, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "tuneops_reconcile_duration_seconds",
            "Duration of one reconcile tick.",
            registry=self.registry,
            buckets=(1, 5, 15, 60, 300, 900, 3600, 14400),
        )
        self.ticks = Counter(
            "tuneops_reconcile_total", "Reconcile ticks by outcome.", ["outcome"], registry=self.registry
        )
        self.actions = Counter(
            "tuneops_plan_actions_total",
            "Planned actions applied, by action.",
            ["action"],
            registry=self.registry,
        )
        self.failures = Counter(
            "tuneops_reconcile_failures_total", "Ticks that failed (git, apply).", registry=self.registry
        )
        self.last_sync = Gauge(
            "tuneops_last_sync_timestamp_seconds",
            "When the last successful sync ended.",
            registry=self.registry,
        )
        self.commit = Gauge(
            "tuneops_synced_commit_info",
            "The commit last applied (value 1).",
            ["commit"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "tuneops_leader", "1 when this daemon is the one that acts.", registry=self.registry
        )

    def synced(self, commit: str) -> None:
        self.commit.clear()
        self.commit.labels(commit=commit).set(1)
        self.last_sync.set_to_current_time()

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class DaemonState:
    last_good: str | None = None
    bad: set[str] = field(default_factory=set)
    ready: bool = False
    failures: int = 0


class Daemon:
    def __init__(self, config: DaemonConfig, *, say: Callable[[str], None] = print):
        redaction.remember_credentials_of(config.repo)  # a token in the remote is masked in every line
        self.config, self.say = config, lambda line: say(redaction.redact(line))
        self.mirror = GitMirror(config.repo, config.branch, config.checkout)
        self.metrics = Metrics()
        style = "slack" if config.notify_style == "slack" else "json"
        self.notifier = Notifier(config.notify_url, style, self.say)
        self.state = DaemonState()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._child: subprocess.Popen | None = None
        self._child_lock = threading.Lock()
        self._http: HttpServer | None = None
        self._commit: str | None = None
        self._last_error = ""

    # -- one tick ----------------------------------------------------------------------------

    def tick(self) -> str:
        """Sync, validate, apply: 'applied', 'noop', 'invalid', 'interrupted' or 'failed'."""
        started = time.monotonic()
        try:
            outcome = self._tick()
        except DaemonError as error:
            self.say(f"error: {error}")
            self._last_error = str(error)
            outcome = "failed"
        if outcome == "failed" and self._last_error:
            self._notify("reconcile_failed", self._last_error)
        self.metrics.duration.observe(time.monotonic() - started)
        self.metrics.ticks.labels(outcome=outcome).inc()
        if outcome == "failed":
            self.metrics.failures.inc()
            self.state.failures += 1
        else:
            self.state.failures = 0
        return outcome

    def _notify(self, event: str, message: str, resource: str | None = None,
                model_version: str | None = None) -> None:
        self.notifier.send(Notification(event, self.mirror.shown, self.config.branch,  # type: ignore[arg-type]
                                        self._commit or "", message, resource, model_version))

    def _tick(self) -> str:
        from reconciler.project import ProjectError, ProjectInvalid, load_project

        self._last_error = ""
        commit = self._commit = self.mirror.sync()
        if commit in self.state.bad:
            self._back_to_last_good()
            return "invalid"
        try:
            load_project(self.config.spec_root)
        except ProjectInvalid as invalid:
            self.state.bad.add(commit)
            errors = invalid.result.errors
            self.say(
                f"commit {commit[:12]} does not validate ({len(errors)} error(s)); not applied, keeping "
                f"{(self.state.last_good or 'nothing')[:12]}"
            )
            for problem in errors[:10]:
                self.say(f"  {problem.text()}")
            first = errors[0].text().replace(str(self.config.checkout) + "/", "") if errors else ""
            self._notify("invalid_commit", f"{len(errors)} error(s), not applied: {first}")
            self._back_to_last_good()
            return "invalid"
        except (ProjectError, OSError) as error:
            raise DaemonError(f"cannot load {self.config.path} at {commit[:12]}: {error}") from None
        plan = self._run_json("plan", "--format", "json")
        changes = plan.get("has_changes") or any(a["action"] == "wait" for a in plan.get("actions", []))
        outcome = "noop"
        if changes:
            self.say(f"applying {commit[:12]}: {_counts(plan)}")
            code = self._run_apply()
            if self.stopping.is_set():  # stopped mid-apply: not synced; the next daemon adopts the jobs
                return "interrupted"
            if code != 0:
                raise DaemonError(f"apply of {commit[:12]} exited {code} (its output is above)")
            for action in plan.get("actions", []):
                if action["action"] != "noop":
                    self.metrics.actions.labels(action=action["action"]).inc()
            after = self._run_json("plan", "--format", "json")
            for event, resource, message, version in events_after_apply(plan, after):
                self._notify(event, message, resource, version)
            outcome = "applied"
        self.state.last_good = commit
        self.state.ready = True
        self.metrics.synced(commit)
        return outcome

    def _back_to_last_good(self) -> None:
        if self.state.last_good:
            self.mirror.reset(self.state.last_good)

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "reconciler", *args]

    def _run_json(self, *args: str) -> dict:
        done = subprocess.run(
            self._command(args[0], str(self.config.spec_root), *args[1:]),
            capture_output=True,
            text=True,
            timeout=900,
            env=self._child_env(),
        )
        if done.returncode != 0:
            raise DaemonError(f"tuneops {args[0]} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return json.loads(done.stdout)

    def _run_apply(self) -> int:
        with self._child_lock:
            if self.stopping.is_set():
                return 1
            self._child = subprocess.Popen(
                self._command("apply", str(self.config.spec_root), "--yes"),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=self._child_env(),
            )
        assert self._child.stdout is not None
        for line in self._child.stdout:
            self.say(f"  | {line.rstrip()}")
        code = self._child.wait()
        with self._child_lock:
            self._child = None
        return code

    @staticmethod
    def _child_env() -> dict[str, str]:
        # The applies it starts, and the jobs those start, need neither the webhook's secret nor
        # the spec repository's URL (which may hold a token): a job's code could print them.
        kept = {key: value for key, value in os.environ.items() if key not in DAEMON_ONLY_VARIABLES}
        return {**kept, "TUNEOPS_PLAIN": "1", "NO_COLOR": "1"}

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        self._serve_http()
        leadership = LeaseLeadership(self) if self.config.lease else FileLeadership(self)
        try:
            leadership.acquire()
            while not self.stopping.is_set():
                outcome = self.tick()
                if self.config.once:
                    return 0 if outcome != "failed" else 1
                self._sleep(self._delay(outcome))
            return 1 if leadership.lost else 0
        finally:
            leadership.release()
            if self._http is not None:
                self._http.stop()

    def leading(self, how: str = "") -> None:
        self.metrics.leader.set(1)
        self.say(f"leading{how}: reconciling {self.mirror.shown} ({self.config.branch}) every "
                 f"{self.config.interval:g}s")

    def _delay(self, outcome: str) -> float:
        if outcome != "failed":
            return self.config.interval
        backoff = min(self.config.interval * 2 ** min(self.state.failures, 16), self.config.max_backoff)
        return backoff * random.uniform(0.8, 1.2)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if self.wake.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                self.wake.clear()
                return

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop after the current step: a running apply gets the signal and stops after its steps."""
        self.stopping.set()
        self.wake.set()
        with self._child_lock:
            if self._child is not None and self._child.poll() is None:
                self._child.send_signal(signal.SIGTERM)

    # -- HTTP --------------------------------------------------------------------------------

    def _serve_http(self) -> None:
        if self.config.listen is None:
            return
        refused = RefusalLog(self.say)
        endpoints = Endpoints(ready=lambda: self.state.ready, metrics=self.metrics.exposition,
                              wake=self.wake.set, secret=self.config.webhook_secret, say=self.say,
                              refused=refused)
        try:
            self._http = HttpServer(self.config.listen, endpoints, self.say, refused)
        except ListenError as error:
            raise DaemonError(str(error)) from None
        self._http.start()


class FileLeadership:
    """An exclusive lock on the cache folder: daemons sharing one volume lead one at a time."""

    lost = False

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.lock = ApplyLock(daemon.config.cache_dir, DAEMON_LOCK,
                              busy="another `tuneops reconcile` acts on this cache folder; this one waits")

    def acquire(self) -> None:
        told = False
        while not self.daemon.stopping.is_set():
            try:
                self.lock.acquire()
                self.daemon.leading()
                return
            except Locked as error:
                if not told:
                    self.daemon.say(f"standby: {error}")
                    told = True
                self.daemon.stopping.wait(min(self.daemon.config.interval, 5.0))
        raise SystemExit(0)

    def release(self) -> None:
        self.lock.release()


class LeaseLeadership:
    """A coordination.k8s.io/v1 Lease: replicas in a cluster lead one at a time. The holder
    renews it every third of its duration; one that cannot renew for a whole duration stops
    (exit 1, so Kubernetes restarts it as a standby): another may lead by then."""

    def __init__(self, daemon: Daemon):
        import socket

        from reconciler.backends.kubernetes.api import KubeApi, load_connection
        from reconciler.backends.kubernetes.lease import LeaseLock

        self.daemon = daemon
        connection = load_connection()
        self.identity = f"{socket.gethostname()}-{os.getpid()}"
        self.lease = LeaseLock(KubeApi(connection), connection.namespace, daemon.config.lease or "",
                               self.identity, duration=daemon.config.lease_duration)
        self.lost = False

    def acquire(self) -> None:
        told = False
        while not self.daemon.stopping.is_set():
            if self._try():
                self.daemon.leading(f" (Lease {self.lease.namespace}/{self.lease.name} as {self.identity})")
                threading.Thread(target=self._renew, daemon=True, name="tuneops-lease").start()
                return
            if not told and self.lease.holder:
                self.daemon.say(f"standby: Lease {self.lease.namespace}/{self.lease.name} is held by "
                                f"{self.lease.holder}")
                told = True
            self.daemon.stopping.wait(self.lease.duration / 3)
        raise SystemExit(0)

    def _try(self) -> bool:
        try:
            return self.lease.try_acquire_or_renew()
        except Exception as error:  # noqa: BLE001 - an API error is a failed attempt, not a crash
            self.daemon.say(f"lease: {error}")
            return False

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self.daemon.stopping.wait(self.lease.duration / 3):
            if self._try():
                renewed = time.monotonic()
            elif time.monotonic() - renewed > self.lease.duration:
                self.lost = True
                self.daemon.metrics.leader.set(0)
                self.daemon.say(f"lost the Lease (now held by {self.lease.holder}): stopping")
                self.daemon.stop()
                return

    def release(self) -> None:
        if not self.lost:
            with contextlib.suppress(Exception):
                self.lease.release()


def _counts(plan: dict) -> str:
    counts = {
        action: count for action, count in (plan.get("counts") or {}).items() if count and action != "noop"
    }
    return ", ".join(f"{count} {action}" for action, count in counts.items()) or "adopting running jobs"
