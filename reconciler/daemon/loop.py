"""The reconcile daemon: keep MLflow and the backend converged on a branch (`tuneops reconcile`).

Each tick fetches the branch into a cache folder, validates the specs, and plans and applies
them in-process through the project façade (project.py), as `tuneops apply --yes` would, under
the project's apply lock; its output goes to the log, redacted, each line after `  | `. An apply
that fails or crashes is a failed tick, never the daemon's end. A commit that does not validate
is never applied: the checkout goes back to the last good commit, the bad one is reported once,
and later ticks skip it until the branch moves. Failures back off exponentially with jitter.
SIGTERM stops the loop and a running apply after its current steps; jobs keep running and the
next apply adopts them, so a restart neither loses nor duplicates work. The jobs the backends
start never inherit the daemon's webhook secret or repository URL (redaction.DAEMON_ONLY_VARIABLES).

Only one daemon acts per cache folder: an exclusive file lock, held for the daemon's life; a
second one waits as a standby and takes over when the first dies. A small HTTP server answers
`/healthz`, `/readyz` (after the first successful sync), Prometheus `/metrics`, and
`POST /hooks/git` (GitHub's `X-Hub-Signature-256`), which wakes the loop early; daemon_http.py
serves them.
"""

from __future__ import annotations

import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import redaction
from reconciler.daemon.http import Endpoints, HttpServer, ListenError, RefusalLog
from reconciler.daemon.leadership import FileLeadership, LeaseLeadership
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.notify import Notification, Notifier, events_after_apply
from reconciler.errors import TuneopsError
from reconciler.git.mirror import GitMirror

if TYPE_CHECKING:
    from reconciler.project import Project

WEBHOOK_SECRET_ENV = "TUNEOPS_WEBHOOK_SECRET"
SPEC_REPO_ENV = "TUNEOPS_SPEC_REPO"  # --repo from the environment (the cli), off the command line


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
    ui_token: str | None = None  # the dashboard's, required beyond loopback (TUNEOPS_UI_TOKEN)

    @property
    def checkout(self) -> Path:
        return self.cache_dir / "checkout"

    @property
    def spec_root(self) -> Path:
        return self.checkout / self.path




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
        self._http: HttpServer | None = None
        self._commit: str | None = None
        self._last_error = ""
        self._retry_after: float | None = None  # a TemporaryError's own delay, for the next sleep

    # -- one tick ----------------------------------------------------------------------------

    def tick(self) -> str:
        """Sync, validate, apply: 'applied', 'noop', 'invalid', 'interrupted' or 'failed'."""
        started = time.monotonic()
        self._retry_after = None
        try:
            outcome = self._tick()
        except TuneopsError as error:
            self.say(f"error: {error}")
            self._last_error = str(error)
            if self._retry_after is None:  # the plan or apply step may have remembered its cause's
                self._remember_retry(error)
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
        from reconciler.project import Project, ProjectError, ProjectInvalid

        self._last_error = ""
        commit = self._commit = self.mirror.sync()
        if commit in self.state.bad:
            self._back_to_last_good()
            return "invalid"
        try:
            project = Project.load(self.config.spec_root)
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
        plan = self._plan_json(project)
        changes = plan.get("has_changes") or any(a["action"] == "wait" for a in plan.get("actions", []))
        outcome = "noop"
        if changes:
            self.say(f"applying {commit[:12]}: {_counts(plan)}")
            failed = self._apply(project)
            if self.stopping.is_set():  # stopped mid-apply: not synced; the next daemon adopts the jobs
                return "interrupted"
            if failed:
                raise DaemonError(f"apply of {commit[:12]} exited 1 (its output is above)")
            for action in plan.get("actions", []):
                if action["action"] != "noop":
                    self.metrics.actions.labels(action=action["action"]).inc()
            after = self._plan_json(project)
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

    def _plan_json(self, project: Project) -> dict[str, Any]:
        """The plan against the actual state, in its JSON form (what notifications compare)."""
        from reconciler.plan.report import plan_json

        try:
            return plan_json(project.plan().plan)
        except TuneopsError as error:
            self._remember_retry(error)
            raise DaemonError(f"tuneops plan failed: error: {error}") from None
        except Exception as error:  # a bug in planning fails the tick, not the daemon
            raise DaemonError(f"tuneops plan failed: internal error: {type(error).__name__}: "
                              f"{error}") from None

    def _apply(self, project: Project) -> bool:
        """`tuneops apply --yes`, in-process, its lines in the log: True when it failed."""
        from reconciler.apply.executor import Reporter
        from reconciler.plan.report import plan_text
        from reconciler.redaction import redact
        from reconciler.tracking.sample_request import endpoint_lines

        def echo(text: str) -> None:
            for line in text.splitlines() or [""]:
                self.say(f"  | {line}")

        def shown(planned: Any) -> None:
            echo(plan_text(planned.plan, planned.header, color=False, estimates=planned.estimates()))
            echo("")

        try:
            outcome = project.apply(reporter=Reporter(echo), stop=self.stopping, shown=shown,
                                    applied_by=f"tuneops daemon on {socket.gethostname()}")
        except TuneopsError as error:
            echo(f"error: {error}")
            self._remember_retry(error)
            return True
        except Exception as error:  # an apply that crashes is a failed tick
            echo(f"tuneops: internal error: {type(error).__name__}: {error}")
            return True
        if outcome.result is None:
            return False
        echo("\n" + outcome.result.summary())
        for line in endpoint_lines(project.specs, outcome.state_after):
            echo(line)
        for step in outcome.result.failed:
            echo(f"error: {step.resource}: {redact(step.message)}")
        return outcome.failed

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

    def _remember_retry(self, error: TuneopsError) -> None:
        """A TemporaryError says when trying again may pass (an API's Retry-After, a lock held);
        the next sleep takes that instead of the blind exponential backoff."""
        self._retry_after = error.delay if error.retryable and error.delay is not None else None

    def _delay(self, outcome: str) -> float:
        if outcome != "failed":
            return self.config.interval
        if self._retry_after is not None:
            return min(max(self._retry_after, 1.0), self.config.max_backoff) * random.uniform(1.0, 1.2)
        backoff = min(self.config.interval * 2 ** min(self.state.failures, 16), self.config.max_backoff)
        return backoff * random.uniform(0.8, 1.2)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if self.wake.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                self.wake.clear()
                return

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop after the current step: a running apply stops after its current steps."""
        self.stopping.set()
        self.wake.set()

    # -- HTTP --------------------------------------------------------------------------------

    def _serve_http(self) -> None:
        if self.config.listen is None:
            return
        refused = RefusalLog(self.say)
        endpoints = Endpoints(ready=lambda: self.state.ready, metrics=self.metrics.exposition,
                              wake=self.wake.set, secret=self.config.webhook_secret, say=self.say,
                              refused=refused, dashboard=self._dashboard(refused))
        try:
            self._http = HttpServer(self.config.listen, endpoints, self.say, refused)
        except ListenError as error:
            raise DaemonError(str(error)) from None
        self._http.start()


    def _dashboard(self, refused: RefusalLog) -> Any:
        """The dashboard at `/`, of the specs at the commit checked out, with the commits this
        daemon applied last and works towards."""
        from reconciler.project import Project
        from reconciler.ui.app import Dashboard, is_loopback
        from reconciler.ui.snapshot import SnapshotSource

        def commits() -> dict[str, str]:
            shown = {"last applied": (self.state.last_good or "nothing yet")[:12]}
            if self._commit and self._commit != self.state.last_good:
                shown["next"] = self._commit[:12] + (" (does not validate)" if self._commit in self.state.bad
                                                     else "")
            return shown

        def load() -> Project:
            if self.state.last_good is None and not self.config.spec_root.is_dir():
                raise DaemonError(f"waiting for the first checkout of {self.mirror.shown} "
                                  f"({self.config.branch})")
            return Project.load(self.config.spec_root)

        assert self.config.listen is not None
        source = SnapshotSource(load, context=commits)
        return Dashboard(source, loopback=is_loopback(self.config.listen[0]), token=self.config.ui_token,
                         refused=refused)


def _counts(plan: dict) -> str:
    counts = {
        action: count for action, count in (plan.get("counts") or {}).items() if count and action != "noop"
    }
    return ", ".join(f"{count} {action}" for action, count in counts.items()) or "adopting running jobs"
