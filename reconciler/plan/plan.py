"""(desired specs, actual state) -> Plan: one action per resource, frozen, with the reason.

Building the plan has no side effects: it reads the SpecSet, the fingerprints and an
ActualState snapshot, and returns data that `apply` executes and `plan_report` prints.

Actions: create (never built), rebuild (fingerprint changed: directly, or because a named
upstream changed), update (operational change only), delete (pruned), noop, wait (running),
retry (failed, attempts left), blocked (an upstream is not ready, a gate failed, or attempts
are used up), suspended.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.fingerprint import (
    FingerprintInput,
    operational_spec,
    operational_view,
    produced_view,
    recipe_changes,
)
from reconciler.graph import DependencyGraph
from reconciler.plan.blocked import (
    AttemptsBlock,
    BackendBlock,
    BlockedBy,
    FailedEvaluation,
    GateBlock,
    NoTrialPassed,
    UpstreamBlock,
    UpstreamNotReady,
)
from reconciler.plan.gates import GateResult, verdict_of_run
from reconciler.plan.in_use import versions_in_use
from reconciler.plan.sweeps import SweepEstimate, SweepView, sweep_view
from reconciler.specs.base import ResourceId
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.specset import SpecSet
from reconciler.specs.sweep import SweepResource, is_trial_name
from reconciler.state import STOPPED, ActualState, BuiltRun
from reconciler.sweeps.limits import trial_limit
from reconciler.sweeps.trials import sweep_evaluations

FORMAT_VERSION = 1


class Action(enum.StrEnum):
    CREATE = "create"
    REBUILD = "rebuild"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "noop"
    WAIT = "wait"
    RETRY = "retry"
    BLOCKED = "blocked"
    SUSPENDED = "suspended"


CHANGES = frozenset({Action.CREATE, Action.REBUILD, Action.UPDATE, Action.DELETE, Action.RETRY})
"""Actions that do something: a plan with any of these has changes (exit 2 with --detailed-exitcode)."""
PENDING = frozenset({Action.CREATE, Action.REBUILD, Action.RETRY, Action.WAIT})
"""The resource will be (re)built by this apply: its dependents can be planned behind it."""
ACTION_ORDER = (Action.CREATE, Action.REBUILD, Action.UPDATE, Action.RETRY, Action.WAIT, Action.DELETE,
                Action.BLOCKED, Action.SUSPENDED, Action.NOOP)


@dataclass(frozen=True)
class FieldChange:
    path: str  # dotted, camelCase: "training.learningRate"
    before: Any
    after: Any


@dataclass(frozen=True)
class ServeTarget:
    """The model version a Deployment serves (or will serve once its upstream is built)."""

    fine_tune: str
    model_fingerprint: str
    model_version: str | None  # "registered/version" when built


@dataclass(frozen=True)
class PlannedAction:
    resource: ResourceId
    action: Action
    fingerprint: str | None  # desired; None for a delete
    previous: str | None = None  # the fingerprint in use before (serving, or what it was built from)
    compared_with: str | None = None  # that version in words: "fruit-sft/1, serving"
    reason: str = ""
    changes: tuple[FieldChange, ...] = ()
    upstream: tuple[ResourceId, ...] = ()  # the upstreams that changed, or that block this one
    depends_on: tuple[ResourceId, ...] = ()
    file: str | None = None
    serve: ServeTarget | None = None
    attempt: int = 0  # for retry: the attempt this apply makes
    blocked_by: BlockedBy | None = None  # for blocked: what holds it back, as data (the reason says it)
    reason_time: float | None = None  # unix seconds of the time the reason names (in UTC, as utc_iso writes)
    sweep: SweepView | None = field(default=None, compare=False)  # Sweeps: the trials, for reports
    sweep_estimate: SweepEstimate | None = field(default=None, compare=False)  # set by project_plan

    @property
    def is_change(self) -> bool:
        return self.action in CHANGES


@dataclass(frozen=True)
class PlanOptions:
    prune: bool = False
    max_attempts: int = 2
    retry_failed: bool = False  # give failed jobs a fresh set of attempts
    target: frozenset[ResourceId] | None = None  # only these and what they depend on
    multi_node: bool = False  # the backend can start a fine-tune on several machines
    # trainings a team budget holds back (plan/costs.py budget_blocks): resource -> BudgetBlock
    over_budget: tuple[tuple[ResourceId, Any], ...] = ()


@dataclass(frozen=True)
class Plan:
    actions: tuple[PlannedAction, ...]  # dependencies first; deletes last
    impact: Mapping[ResourceId, tuple[ResourceId, ...]]  # changed resource -> what it reaches downstream
    unmanaged: tuple[str, ...] = ()  # live objects without a spec, kept because prune is off
    state_read: bool = True
    options: PlanOptions = field(default_factory=PlanOptions)
    # tuneops.yaml fields a branch changes (plan --base): policy, storage and credentials' homes
    # are for the reviewer to see, even where no resource changes.
    settings_changes: tuple[FieldChange, ...] = ()
    # what a reviewer should know that is no error: "file:line:col warning path: message (hint)"
    warnings: tuple[str, ...] = ()
    # plan-level policies it breaks (plan/policies.py): an unapproved `error` one stops the apply
    policy_results: tuple[Any, ...] = ()
    # each team's share of the plan, spend and budget (plan/costs.py TeamCost); () without teams
    teams: tuple[Any, ...] = ()

    @property
    def policy_errors(self) -> tuple[str, ...]:
        return tuple(result.text() for result in self.policy_results if result.stops_apply)

    @property
    def has_changes(self) -> bool:
        return any(action.is_change for action in self.actions)

    def counts(self) -> dict[str, int]:
        counts = {str(action): 0 for action in ACTION_ORDER}
        for planned in self.actions:
            counts[str(planned.action)] += 1
        return counts

    def get(self, resource: ResourceId) -> PlannedAction | None:
        for planned in self.actions:
            if planned.resource == resource:
                return planned
        return None

    def deletes(self) -> list[PlannedAction]:
        return [a for a in self.actions if a.action == Action.DELETE]


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any], prefix: str = "") -> list[FieldChange]:
    """Field-level differences between two spec views; nested mappings are walked, lists compared
    whole. Unchanged fields never appear."""
    before = before or {}
    changes: list[FieldChange] = []
    for key in sorted(set(before) | set(after)):
        path = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes += diff(old, new, path + ".")
        elif old != new:
            changes.append(FieldChange(path, old, new))
    return changes


def settings_diff(before: Any, after: Any) -> tuple[FieldChange, ...]:
    """The tuneops.yaml fields that differ between two ProjectSettings, named as written there."""
    if before is None:
        return ()
    def written(settings: Any) -> dict[str, Any]:
        return settings.model_dump(by_alias=True, mode="json")

    return tuple(diff(written(before), written(after)))


class _Planner:
    def __init__(self, specs: SpecSet, graph: DependencyGraph, inputs: Mapping[ResourceId, FingerprintInput],
                 actual: ActualState, options: PlanOptions):
        self.specs, self.graph, self.inputs, self.actual, self.options = specs, graph, inputs, actual, options
        self.planned: dict[ResourceId, PlannedAction] = {}
        self.in_use = versions_in_use(graph, actual)  # what a change is compared with
        self._sweep_views: dict[str, SweepView] = {}

    # -- shared ------------------------------------------------------------------------------

    def fingerprint(self, rid: ResourceId) -> str:
        return self.inputs[rid].fingerprint

    def _why_rebuild(self, rid: ResourceId, previous: BuiltRun | Mapping[str, Any] | None,
                     ) -> tuple[str, tuple[FieldChange, ...], tuple[ResourceId, ...]]:
        """Why the fingerprint differs from what was built before: spec fields, upstreams, sources."""
        current = self.inputs[rid]
        if isinstance(previous, BuiltRun):
            spec, lineage = previous.spec, previous.lineage
        else:
            spec = (previous or {}).get("spec")
            lineage = (previous or {}).get("lineage")
        before = produced_view(rid.kind, spec) if spec else None
        changes = tuple(diff(before, current.spec)) if before is not None else ()
        reasons: list[str] = []
        if changes:
            reasons.append("spec changed")
        elif spec is None:
            reasons.append("fingerprint changed")
        upstream: list[ResourceId] = []
        if lineage:
            old_inputs = lineage.get("inputs") or {}
            for dep, fp in current.inputs.items():
                if old_inputs.get(dep) != fp:
                    kind, _, name = dep.partition("/")
                    upstream.append(ResourceId(kind, name))
            old_sources = lineage.get("sources") or {}
            for path, digest in current.sources.items():
                if old_sources.get(path) != digest:
                    reasons.append(f"{path} content changed")
            recipe = lineage.get("recipe")
            if recipe not in (None, current.recipe):
                known = str(recipe).isdigit()
                changed = recipe_changes(rid.kind, int(recipe), current.recipe) if known else ()
                reasons.append(f"runtime recipe {recipe} -> {current.recipe}"
                               + (": " + "; ".join(changed) if changed else ""))
        if upstream:
            reasons.append("upstream changed: " + ", ".join(map(str, upstream)))
        if not reasons:
            reasons.append("fingerprint changed")
        return "; ".join(reasons), changes, tuple(upstream)

    def _unready_upstream(self, rid: ResourceId) -> list[tuple[ResourceId, PlannedAction]]:
        return [(dep, self.planned[dep]) for dep in self.graph.depends_on.get(rid, ())
                if dep in self.planned and self.planned[dep].action in (Action.BLOCKED, Action.SUSPENDED)]

    def _pending_upstream(self, rid: ResourceId) -> list[ResourceId]:
        return [dep for dep in self.graph.depends_on.get(rid, ())
                if dep in self.planned and (self.planned[dep].action in PENDING or (
                    dep.kind == "Sweep" and self.planned[dep].action == Action.UPDATE))]

    def _base(self, rid: ResourceId, action: Action, **kwargs: Any) -> PlannedAction:
        if kwargs.get("blocked_by") is not None:
            kwargs.setdefault("reason", kwargs["blocked_by"].describe())
        loaded = self.specs.get(rid)
        return PlannedAction(rid, action, self.fingerprint(rid), file=loaded.file if loaded else None,
                             depends_on=self.graph.depends_on.get(rid, ()), **kwargs)

    @staticmethod
    def _upstream_block(unready: list[tuple[ResourceId, PlannedAction]],
                        current_keeps_serving: bool = False) -> UpstreamBlock:
        return UpstreamBlock(tuple(
            UpstreamNotReady(dep, "suspended" if planned.action == Action.SUSPENDED else "blocked",
                             planned.reason, planned.blocked_by)
            for dep, planned in unready), current_keeps_serving)

    # -- kinds -------------------------------------------------------------------------------

    def plan_base_model(self, rid: ResourceId) -> PlannedAction:
        return self._base(rid, Action.NOOP, reason="read from its source; nothing to build")

    def plan_job(self, rid: ResourceId) -> PlannedAction:
        """Datasets, FineTunes and Evaluations: built once per fingerprint by a job."""
        fp = self.fingerprint(rid)
        built = self.actual.built_run(rid.kind, rid.name, fp)
        if built is not None and not built.output_missing:
            return self._base(rid, Action.NOOP, previous=fp)
        resource = self.specs.get(rid).resource  # type: ignore[union-attr]
        if getattr(resource.spec, "suspend", False):
            return self._base(rid, Action.SUSPENDED, reason="suspend: true (nothing new is started)")
        unready = self._unready_upstream(rid)
        if unready:
            return self._base(rid, Action.BLOCKED, blocked_by=self._upstream_block(unready),
                              upstream=tuple(dep for dep, _ in unready))
        if rid.kind == "FineTune" and resource.spec.resources.nodes > 1 and not self.options.multi_node:
            return self._base(rid, Action.BLOCKED, blocked_by=BackendBlock(resource.spec.resources.nodes))
        in_use = self.in_use.get(rid)
        previous = in_use.run if in_use is not None else None
        compared = {"previous": previous.fingerprint, "compared_with": in_use.describe()} \
            if in_use is not None else {}
        job = self.actual.job(rid.kind, rid.name, fp)
        if job is not None and job.is_live:
            return self._base(rid, Action.WAIT, **compared,
                              reason=f"{job.phase} since {utc_iso(job.started_at)} ({job.handle}, attempt "
                                     f"{job.attempts})", reason_time=job.started_at)
        budget = dict(self.options.over_budget).get(rid)
        if budget is not None:  # a running job goes on; nothing new starts
            return self._base(rid, Action.BLOCKED, **compared, blocked_by=budget)
        if job is not None and job.phase == "failed" and job.message != STOPPED:
            attempts = 0 if self.options.retry_failed else job.attempts
            if attempts >= self.options.max_attempts:
                block = AttemptsBlock(job.attempts, self.options.max_attempts,
                                      job.message or f"see tuneops logs {rid}")
                return self._base(rid, Action.BLOCKED, **compared, blocked_by=block)
            return self._base(rid, Action.RETRY, **compared,
                              reason=f"attempt {attempts + 1} of {self.options.max_attempts}; last: "
                                     f"{job.message or 'failed'}", attempt=attempts + 1)
        if built is not None:  # recorded as built, but its files are gone
            return self._base(rid, Action.REBUILD, previous=fp, compared_with=compared.get("compared_with"),
                              reason=f"output missing: {built.output} (built {utc_iso(built.started_at)}); "
                                     "built again at the same fingerprint", reason_time=built.started_at)
        if previous is None:
            return self._base(rid, Action.CREATE)
        reason, changes, upstream = self._why_rebuild(rid, previous)
        return self._base(rid, Action.REBUILD, reason=reason, changes=changes, upstream=upstream,
                          **compared)

    def plan_deployment(self, rid: ResourceId) -> PlannedAction:
        planned = self._plan_deployment(rid)
        live = self.actual.server(rid.name)
        if live is not None and planned.previous == live.fingerprint and live.model_version:
            planned = replace(planned, compared_with=f"{live.model_version}, {live.phase}")
        return planned

    def _plan_deployment(self, rid: ResourceId) -> PlannedAction:
        resource = self.specs.get(rid).resource  # type: ignore[union-attr]
        assert isinstance(resource, DeploymentResource)
        live = self.actual.server(rid.name)
        live_fp = live.fingerprint if live is not None else None
        if resource.spec.model.sweep:
            return self._plan_sweep_deployment(rid, resource)
        fine_tune = ResourceId("FineTune", resource.spec.model.fine_tune or "")
        model_fp = self.inputs[fine_tune].fingerprint if fine_tune in self.inputs else ""
        held = self._held_back(rid, resource)
        if held is not None:
            return held
        pending = self._pending_upstream(rid)
        if pending:
            target = ServeTarget(fine_tune.name, model_fp, None)
            names = ", ".join(map(str, pending))
            if live is None:
                return self._base(rid, Action.CREATE, serve=target, upstream=tuple(pending),
                                  reason=f"serves {fine_tune} once {names} "
                                         f"{'is' if len(pending) == 1 else 'are'} built and its gates pass")
            return self._base(rid, Action.REBUILD, previous=live_fp, serve=target, upstream=tuple(pending),
                              reason=f"upstream changed: {names}; the current version serves until the new "
                                     "one passes its gates")
        built = self.actual.built_run("FineTune", fine_tune.name, model_fp)
        target = ServeTarget(fine_tune.name, model_fp, built.model_version if built else None)
        return self._serve(rid, resource, target, self._failing_gates(resource), self._compared(resource))

    def _serve(self, rid: ResourceId, resource: DeploymentResource, target: ServeTarget,
               failing: list[FailedEvaluation], compared: str) -> PlannedAction:
        """A Deployment whose model version is known: blocked by its gates, started, switched,
        updated in place, or left serving."""
        fp = self.fingerprint(rid)
        live = self.actual.server(rid.name)
        live_fp = live.fingerprint if live is not None else None
        fine_tune = ResourceId("FineTune", target.fine_tune)
        model_fp = target.model_fingerprint
        if failing:
            kept = (live.model_version or "the current version") if live is not None and live.is_live \
                else None
            block = GateBlock(target.model_version or str(fine_tune), target.model_version, tuple(failing),
                              kept)
            return self._base(rid, Action.BLOCKED, previous=live_fp, serve=target, blocked_by=block,
                              upstream=tuple(failed.resource for failed in failing))
        if live is None:
            return self._base(rid, Action.CREATE, serve=target,
                              reason=f"serve {target.model_version}{compared}")
        if not live.is_live:
            return self._base(rid, Action.CREATE, previous=live_fp, serve=target,
                              reason=f"the server is not running ({live.message or 'exited'}); "
                                     f"start {target.model_version}")
        live_job = live.job or {}
        if live_fp == fp:
            changes = tuple(diff(operational_view("Deployment", live_job.get("spec") or {}),
                                 operational_spec(resource))) if live.job is not None else ()
            if live.drift:
                return self._base(rid, Action.UPDATE, previous=live_fp, serve=target, changes=changes,
                                  reason=f"changed outside Git: {live.drift}; apply restores it")
            if changes:
                return self._base(rid, Action.UPDATE, previous=live_fp, serve=target, changes=changes,
                                  reason="operational settings changed")
            return self._base(rid, Action.NOOP, previous=live_fp, serve=target,
                              reason=f"serving {live.model_version} at {live.url}")
        reason, changes, upstream = self._why_rebuild(rid, live_job)
        if changes:  # the Deployment's own settings: the server restarts with them
            return self._base(rid, Action.REBUILD, previous=live_fp, serve=target, changes=changes,
                              upstream=upstream, reason=reason)
        if live.model_fingerprint == model_fp:
            return self._base(rid, Action.UPDATE, previous=live_fp, serve=target, upstream=upstream,
                              reason=f"{target.model_version} still passes the changed evaluations")
        return self._base(rid, Action.UPDATE, previous=live_fp, serve=target, upstream=upstream,
                          reason=f"switch from {live.model_version} to {target.model_version} "
                                 f"(already built and passed: nothing is trained){compared}")

    def _failing_gates(self, resource: DeploymentResource) -> list[FailedEvaluation]:
        failing = []
        for evaluation in resource.spec.requires:
            rid = ResourceId("Evaluation", evaluation)
            if rid not in self.inputs:
                continue
            run = self.actual.built_run("Evaluation", evaluation, self.inputs[rid].fingerprint)
            if run is not None and run.verdict != "passed":
                summary = (run.verdict_summary or "failed").removeprefix("failed: ")
                failing.append(FailedEvaluation(evaluation, summary, self._failed_checks(rid, run)))
        return failing

    def _compared(self, resource: DeploymentResource) -> str:
        """How the version to serve compared with the champion in the Evaluations it passed, for
        the reviewer: "; exact_match 0.81 vs serving 0.78: +0.03 [-0.02, +0.08] (n=200, 95%) ..."."""
        lines = []
        for evaluation in resource.spec.requires:
            rid = ResourceId("Evaluation", evaluation)
            run = self.actual.built_run("Evaluation", evaluation, self.inputs[rid].fingerprint) \
                if rid in self.inputs else None
            if run is None or run.verdict != "passed":
                continue
            spec = self.specs.get(rid).resource.spec  # type: ignore[union-attr]
            baseline = spec.baseline.max_regression if spec.baseline is not None else None
            lines += [check.describe() for check in verdict_of_run(run.metrics, spec.gates, baseline).results
                      if check.kind == "compare"]
        return "".join(f"; {line}" for line in lines)

    def _failed_checks(self, rid: ResourceId, run: BuiltRun) -> tuple[GateResult, ...]:
        """The checks behind a recorded failed verdict, from the metrics the run logged and the spec's
        gates (the same gates: they are part of the fingerprint the run was built at)."""
        spec = self.specs.get(rid).resource.spec  # type: ignore[union-attr]
        baseline = spec.baseline.max_regression if spec.baseline is not None else None
        contamination = spec.dataset.split if spec.fail_on_contamination else None
        return verdict_of_run(run.metrics, spec.gates, baseline, contamination).failures

    # -- sweeps ------------------------------------------------------------------------------

    def sweep_view(self, name: str) -> SweepView:
        if name not in self._sweep_views:
            sweep = self.specs.resource(ResourceId("Sweep", name), SweepResource)
            assert sweep is not None, name
            self._sweep_views[name] = sweep_view(self.specs, self.inputs, sweep, self.actual.trials_of(name),
                                                 self.actual.built_run)
        return self._sweep_views[name]

    def plan_sweep(self, rid: ResourceId) -> PlannedAction:
        """More trials to run (create, update), trials made stale by a changed template or search
        space (rebuild), trials still running (wait), or nothing left (noop)."""
        sweep = self.specs.resource(rid, SweepResource)
        assert sweep is not None
        spec = sweep.spec
        view = self.sweep_view(rid.name)
        limit = trial_limit(spec)
        if spec.suspend:
            return self._base(rid, Action.SUSPENDED, reason="suspend: true (no trial is started)"
                              + (f"; {view.summary()}" if view.trials else ""), sweep=view)
        unready = self._unready_upstream(rid)
        if unready:
            return self._base(rid, Action.BLOCKED, blocked_by=self._upstream_block(unready),
                              upstream=tuple(dep for dep, _ in unready), sweep=view)
        budget = dict(self.options.over_budget).get(rid)
        if budget is not None:
            return self._base(rid, Action.BLOCKED, blocked_by=budget, sweep=view)
        how = f"{spec.parallel_trials} at a time, {spec.algorithm}, seed {spec.seed}"
        if not self.actual.read:
            return self._base(rid, Action.CREATE, sweep=view,
                              reason=f"{limit} trials to run ({how}); state not read")
        evaluations = sweep_evaluations(self.specs, sweep)
        unscored = view.unscored(evaluations)
        running = view.count("running")
        work = []
        if view.left:
            work.append(f"{view.left} more trial{'s' if view.left != 1 else ''} to run ({how})")
        if running:
            work.append(f"{running} running trial{'s' if running != 1 else ''} to resume")
        if unscored:
            missing = sorted({name for trial in unscored for name in trial.unscored(evaluations)})
            work.append(f"{len(unscored)} finished trial(s) to score with {', '.join(missing)}")
        if view.stale:
            kept = [str(t.number) for t in view.valid]
            gone = "; ".join(f"trial {t.number}: {t.stale}" for t in view.stale)
            reason = (f"trials {', '.join(kept)} remain valid (same fingerprint)" if kept
                      else "no recorded trial remains valid") + f"; no longer counted: {gone}"
            if work:
                return self._base(rid, Action.REBUILD, sweep=view, reason=f"{reason}; " + "; ".join(work))
        stop = self.actual.sweep_stops.get(rid.name)
        if (stop is not None and spec.budget is not None and stop[1] == spec.budget.gpu_hours
                and work and not running and not unscored):
            return self._base(rid, Action.NOOP, sweep=view,
                              reason=f"{view.summary()}; stopped by the {stop[0]} (raise budget.gpuHours "
                                     f"to run the {view.left} left)")
        if not work:
            return self._base(rid, Action.NOOP, sweep=view, reason=view.summary())
        if not view.valid:
            return self._base(rid, Action.CREATE, sweep=view, reason="; ".join(work))
        if not view.left and not unscored:
            return self._base(rid, Action.WAIT, sweep=view, reason=f"{view.summary()}; resumed by apply")
        return self._base(rid, Action.UPDATE, sweep=view, reason=f"{view.summary()}; " + "; ".join(work))

    def _held_back(self, rid: ResourceId, resource: DeploymentResource) -> PlannedAction | None:
        """A Deployment that is suspended, or waits for a blocked upstream: what serves, stays."""
        live = self.actual.server(rid.name)
        live_fp = live.fingerprint if live is not None else None
        if resource.spec.suspend:
            return self._base(rid, Action.SUSPENDED, previous=live_fp,
                              reason="suspend: true" + (" (the running server is kept)" if live else ""))
        unready = self._unready_upstream(rid)
        if unready:
            return self._base(rid, Action.BLOCKED, previous=live_fp,
                              blocked_by=self._upstream_block(unready, live is not None),
                              upstream=tuple(dep for dep, _ in unready))
        return None

    def _plan_sweep_deployment(self, rid: ResourceId, resource: DeploymentResource) -> PlannedAction:
        """Serve the best trial of the sweep that passes the Deployment's gates; switch only when
        a better one passes (ties go to the earlier trial)."""
        name = resource.spec.model.sweep or ""
        live = self.actual.server(rid.name)
        live_fp = live.fingerprint if live is not None else None
        held = self._held_back(rid, resource)
        if held is not None:
            return held
        # The sweep's trials are what it serves; its template's own builds do not hold it back.
        pending = [dep for dep in self._pending_upstream(rid) if dep.kind == "Sweep"]
        view = self.sweep_view(name)
        best = view.best(tuple(resource.spec.requires))
        if pending and (best is None or live is None):
            target = ServeTarget(f"Sweep/{name}", "", None)
            action = Action.CREATE if live is None else Action.REBUILD
            return self._base(rid, action, previous=live_fp, serve=target, upstream=tuple(pending),
                              reason=f"serves the best trial of Sweep/{name} that passes "
                                     f"{', '.join(resource.spec.requires) or 'its gates'} once its "
                                     "trials finish")
        if best is None or best.resources is None:
            block = NoTrialPassed(name, tuple(resource.spec.requires), len(view.valid),
                                  view.best().record.number if view.best() else None,
                                  _failed_summary(view, tuple(resource.spec.requires)),
                                  live.model_version if live is not None and live.is_live else None)
            return self._base(rid, Action.BLOCKED, previous=live_fp, blocked_by=block,
                              upstream=(ResourceId("Sweep", name),))
        target = ServeTarget(best.resources.fine_tune_id.name, best.resources.fingerprint, best.model_version)
        note = (f" (trial {best.number} of Sweep/{name}, {view.resource.spec.objective.metric} "
                f"{best.value:.4g}: {best.params_text()})")
        planned = self._serve(rid, resource, target, [], note)
        if pending:
            return replace(planned, reason=planned.reason + f"; Sweep/{name} has more trials to run: "
                                                             "a better one is served once it passes")
        return planned

    # -- whole plan --------------------------------------------------------------------------

    def build(self) -> Plan:
        wanted = _closure(self.graph, self.options.target) if self.options.target else None
        for rid in self.graph.order:
            if rid not in self.inputs or (wanted is not None and rid not in wanted):
                continue
            if rid.kind == "BaseModel":
                self.planned[rid] = self.plan_base_model(rid)
            elif rid.kind == "Deployment":
                self.planned[rid] = self.plan_deployment(rid)
            elif rid.kind == "Sweep":
                self.planned[rid] = self.plan_sweep(rid)
            else:
                self.planned[rid] = self.plan_job(rid)
        deletes, unmanaged = self._orphans() if wanted is None else ([], [])
        actions = tuple(self.planned.values()) + tuple(deletes)
        # Where a change starts: built anew while its upstreams stay, or with its own spec changed
        # (a rebuild at the same fingerprint, of an output that went missing, changes nothing).
        moving = {a.resource for a in actions if a.action in PENDING}
        changed = {a.resource for a in actions if a.previous != a.fingerprint
                   and ((a.action in (Action.CREATE, Action.REBUILD) and not moving & set(a.depends_on))
                        or (a.action == Action.REBUILD and a.changes))}
        impact = {rid: tuple(d for d in self.graph.downstream({rid}) if d in self.planned)
                  for rid in self.graph.order if rid in changed}
        return Plan(actions, impact, tuple(unmanaged), self.actual.read, self.options)

    def _orphans(self) -> tuple[list[PlannedAction], list[str]]:
        """Live jobs and servers whose spec left Git: deleted only when pruning is on."""
        deletes: list[PlannedAction] = []
        unmanaged: list[str] = []
        seen: set[ResourceId] = set()
        live: list[tuple[ResourceId, str, str]] = [
            (ResourceId("Deployment", s.name), s.fingerprint, f"serving {s.model_version} at {s.url}")
            for s in self.actual.backend.servers if s.is_live]
        live += [(ResourceId(j.kind, j.name), j.fingerprint, f"{j.phase} ({j.handle})")
                 for j in self.actual.backend.jobs if j.is_live]
        sweeps = self.specs.names("Sweep")
        for rid, fp, what in live:
            if rid in self.specs or rid in seen or is_trial_of(rid.name, sweeps):
                continue
            seen.add(rid)
            if self.options.prune:
                deletes.append(PlannedAction(rid, Action.DELETE, None, previous=fp,
                                             reason=f"its spec was removed; {what} is stopped "
                                                    "(MLflow runs and model versions are kept)"))
            else:
                unmanaged.append(f"{rid}: {what}")
        return deletes, unmanaged


def is_trial_of(name: str, sweeps: list[str]) -> bool:
    """Whether a FineTune or Evaluation name is a trial's of one of these sweeps: its jobs belong
    to the Sweep, not to a removed spec."""
    return any(is_trial_name(name, sweep) for sweep in sweeps)


def _failed_summary(view: SweepView, requires: tuple[str, ...]) -> str:
    """Why the best-scoring trial is not served, for a blocked Deployment's reason."""
    best = view.best()
    if best is None:
        return "no trial has completed"
    failed = [name for name in requires if (best.verdicts or {}).get(name) != "passed"]
    return f"the best, trial {best.number}, did not pass {', '.join(failed) or 'its gates'}"


def _closure(graph: DependencyGraph, targets: frozenset[ResourceId]) -> set[ResourceId]:
    """The targets and everything they depend on, as Terraform's -target does."""
    wanted: set[ResourceId] = set()
    frontier = list(targets)
    while frontier:
        rid = frontier.pop()
        if rid in wanted:
            continue
        wanted.add(rid)
        frontier.extend(graph.depends_on.get(rid, ()))
    return wanted


def utc_iso(timestamp: float) -> str:
    """Unix seconds as a plan writes them, the same on every machine: "2026-12-06T02:05:34Z"."""
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_plan(specs: SpecSet, graph: DependencyGraph, inputs: Mapping[ResourceId, FingerprintInput],
               actual: ActualState, options: PlanOptions | None = None) -> Plan:
    """The plan for these specs against this state. Pure: no I/O."""
    return _Planner(specs, graph, inputs, actual, options or PlanOptions()).build()
