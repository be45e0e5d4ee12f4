"""Applying a project: under its apply lock, plan against the actual state, refuse an unsafe
prune, then run the plan's steps (apply.Executor) and read back what serves.

The command line and the daemon both come here, in-process; what the user sees (the plan, a
question, the progress lines) stays with them through the callbacks and the reporter.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.errors import TuneopsError

if TYPE_CHECKING:
    from reconciler.apply.executor import ApplyResult, Reporter
    from reconciler.plan.project_plan import PlannedProject
    from reconciler.specs.base import ResourceId
    from reconciler.state import ActualState


@dataclass(frozen=True)
class ApplyOutcome:
    """The plan that was applied and, when its steps ran, their result and the state after."""

    planned: PlannedProject
    result: ApplyResult | None = None  # None: nothing to apply, or not confirmed
    state_after: ActualState | None = None

    @property
    def nothing_to_apply(self) -> bool:
        return not self.planned.has_work

    @property
    def failed(self) -> bool:
        return self.result is not None and bool(self.result.failed)


class PolicyRefused(TuneopsError):
    """The plan breaks a plan-level policy that nobody approved: nothing is applied."""

    def __init__(self, errors: tuple[str, ...]):
        count = f"{len(errors)} polic{'y' if len(errors) == 1 else 'ies'}"
        super().__init__(f"the plan breaks {count} (shown above), so nothing was applied: fix it, or "
                         "approve it with --approve POLICY --reason TEXT")


def apply_project(project: Any, *, targets: frozenset[ResourceId] | None = None, prune: bool = False,
                  force: bool = False, retry_failed: bool = False, reporter: Reporter,
                  stop: threading.Event | None = None,
                  shown: Callable[[PlannedProject], None] = lambda planned: None,
                  go_ahead: Callable[[PlannedProject], bool] = lambda planned: True,
                  applied_by: str | None = None) -> ApplyOutcome:
    """One apply of `project` (a `Project`), holding its apply lock throughout."""
    from reconciler.lock import ApplyLock

    lock = ApplyLock(project.state_dir)
    try:
        lock.acquire()
    except OSError as error:
        raise TuneopsError(f"cannot lock {lock.path}: {error.strerror or error}") from None
    try:
        planned = project.plan(targets=targets, prune=prune, retry_failed=retry_failed, creating=True)
        shown(planned)
        if not planned.has_work:
            return ApplyOutcome(planned)
        if planned.plan.policy_errors:
            raise PolicyRefused(planned.plan.policy_errors)
        check_prune_of(planned, force)
        if not go_ahead(planned):
            return ApplyOutcome(planned)
        record_overrides(planned, applied_by)
        result = run_steps(planned, reporter, stop, applied_by)
        return ApplyOutcome(planned, result, state_after(project, planned.store, planned.backend))
    finally:
        lock.release()


def check_prune_of(planned: PlannedProject, force: bool) -> None:
    """PruneRefused for a prune that deletes more than prune.maxDeletes, or everything live."""
    from reconciler.apply.executor import check_prune

    state = planned.state
    live = [s for s in state.backend.servers if s.is_live]
    live += [j for j in state.backend.jobs if j.is_live]
    check_prune(planned.plan, planned.project.settings.prune.max_deletes, force, len(live))


def record_overrides(planned: PlannedProject, applied_by: str | None) -> None:
    """Write to MLflow each policy violation let through for a resource this apply changes,
    before it changes it: once per policy, spec content, commit, approver and reason."""
    from reconciler.actor import who_applies
    from reconciler.apply.executor import WORK
    from reconciler.git.info import git_origin
    from reconciler.tracking.overrides import Override, override_key, read_overrides, record_override

    project = planned.project
    work = [action for action in planned.plan.actions if action.action in WORK]
    changed = {action.resource for action in work}
    commit, by = git_origin(project.root).commit, applied_by or who_applies()
    overrides = []
    for violation in project.approved_violations():
        target = violation.target
        if target.id not in changed:
            continue
        built = project.inputs.get(target.id)
        overrides.append(Override(policy=violation.policy.resource.name, resource=str(target.id),
                                  where=f"{target.file}:{target.position(violation.path).line}",
                                  approved_by=violation.approval.by, reason=violation.approval.reason,
                                  commit=commit, applied_by=by,
                                  fingerprint=built.fingerprint if built is not None else ""))
    # a plan-level policy's override is of this plan: what it would do, as its fingerprint
    plan_digest = hashlib.sha256(json.dumps(sorted((str(a.resource), str(a.action), a.fingerprint or "")
                                                   for a in work)).encode()).hexdigest()
    for result in planned.plan.policy_results:
        if result.approval is not None:
            overrides.append(Override(policy=result.policy, resource="plan", where=result.where,
                                      approved_by=result.approval.by, reason=result.approval.reason,
                                      commit=commit, applied_by=by, fingerprint=plan_digest))
    for cost in planned.plan.teams:  # a team let over its budget: per team and plan
        if cost.over_budget and cost.approval is not None and changed & set(cost.costly):
            overrides.append(Override(policy="budget", resource=f"team {cost.team}",
                                      where=f"tuneops.yaml: teams.{cost.team}.budget",
                                      approved_by=cost.approval.by, reason=cost.approval.reason,
                                      commit=commit, applied_by=by, fingerprint=plan_digest))
    if not overrides or planned.store is None:
        return
    experiment = planned.store.ensure_experiment(project.experiment)
    recorded = {override_key(o) for o in read_overrides(planned.store, experiment)}
    for override in overrides:
        if override_key(override) not in recorded:
            record_override(planned.store, experiment, override)
            recorded.add(override_key(override))


def run_steps(planned: PlannedProject, reporter: Reporter, stop: threading.Event | None,
              applied_by: str | None = None) -> ApplyResult:
    from reconciler.apply.executor import Executor
    from reconciler.git.info import git_origin

    project = planned.project
    executor = Executor(project, planned.plan, planned.backend, planned.store, git_origin(project.root),
                        reporter, max_parallel=max_parallel(project.settings),
                        max_attempts=project.settings.max_attempts, stop=stop, state=planned.state,
                        applied_by=applied_by)
    with reporter:
        return executor.run()


def max_parallel(settings: Any) -> int:
    """Jobs apply runs at once: this machine's share, or what the cluster (and its queues) takes."""
    if settings.backend == "kubernetes":
        return settings.kubernetes.max_parallel
    return settings.local.max_parallel


def state_after(project: Any, store: Any, backend: Any) -> ActualState | None:
    """What serves now and what scored it; the servers alone when MLflow cannot be read."""
    if backend is None:
        return None
    from reconciler.state import ActualState

    try:
        return project.read_state(store, backend)
    except Exception:  # the endpoints are a courtesy: the apply itself is done
        return ActualState({}, {}, {}, backend.observe())
