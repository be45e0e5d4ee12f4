"""Planning a loaded project: the options its settings give, the actual state read (the only
I/O), a plan against a Git base, and the planner's estimates for what would train.

The plan itself stays pure (plan.py); this module gathers its inputs and hands back one typed
result, `PlannedProject`, for the command line, the daemon and apply. `project` is the
`reconciler.project.Project` façade, passed in (a lower layer does not import it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import TuneopsError

if TYPE_CHECKING:
    from reconciler.git.ref import BaseCheckout
    from reconciler.plan.plan import FieldChange, Plan, PlanOptions
    from reconciler.specs.base import ResourceId
    from reconciler.state import ActualState


@dataclass(frozen=True)
class PlannedProject:
    """A plan and what it was computed from: `state` (None offline), the tracking store (None
    before anything was recorded) and the backend it read, and the Git base of `plan --base`."""

    project: Any  # reconciler.project.Project
    plan: Plan
    offline: bool
    state: ActualState | None = None
    store: Any = None  # TrackingStore
    backend: Any = None  # Backend
    base: BaseCheckout | None = None
    _estimates: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def has_work(self) -> bool:
        """Something to apply: a change, or a running job to wait for (adopt)."""
        return self.plan.has_changes or any(a.action == "wait" for a in self.plan.actions)

    @property
    def header(self) -> str:
        """The line above a plan: which specs, at which commit, compared with what."""
        header = plan_header(self.project, self.offline)
        if self.base is not None:
            header = f"{header}; compared with {self.base.ref} ({self.base.commit[:12]})"
        return header

    def estimates(self) -> dict[ResourceId, Any]:
        """The planner's figures for each FineTune the plan would train (computed once)."""
        if "found" not in self._estimates:
            self._estimates["found"] = estimates_of(self.project, self.plan, self.state)
        return self._estimates["found"]

    def source(self) -> dict[str, Any]:
        """Where the plan came from, for its JSON form."""
        from reconciler.git.info import git_origin

        source = {"path": str(self.project.root), "header": self.header,
                  "head_commit": git_origin(self.project.root).commit}
        if self.base is not None:
            source |= {"base_ref": self.base.ref, "base_commit": self.base.commit}
        return source


def plan_options(project: Any, *, prune: bool = False, retry_failed: bool = False,
                 target: frozenset[ResourceId] | None = None) -> PlanOptions:
    from reconciler.plan.plan import PlanOptions

    settings = project.settings
    unknown = [str(rid) for rid in target or () if rid not in project.specs]
    if unknown:
        first = next(rid for rid in target or () if rid not in project.specs)
        raise TuneopsError(f"--target {', '.join(unknown)}: no such spec under {project.root} "
                           f"({project.specs.unknown_target_hint(first)})")
    return PlanOptions(prune=prune or settings.prune.enabled, max_attempts=settings.max_attempts,
                       retry_failed=retry_failed, target=target,
                       multi_node=project.settings.backend == "kubernetes")


def plan_project(project: Any, options: PlanOptions, *, offline: bool,
                 creating: bool = False) -> PlannedProject:
    """The plan against what MLflow and the backend say; reading state is the only I/O. Only
    an apply (`creating`) opens an embedded MLflow database that is not there yet: opening
    creates it, and a plan or a status must leave a folder as it found it."""
    from reconciler.plan.plan import build_plan
    from reconciler.state import ActualState

    if offline:
        def offline_plan(options: PlanOptions) -> Plan:
            unknown = ActualState.unknown()
            return with_warnings(build_plan(project.specs, project.graph, project.inputs, unknown, options),
                                 project, None)

        planned = PlannedProject(project, offline_plan(options), offline=True)
        return with_plan_policies(with_team_costs(planned, options, offline_plan))
    import sqlite3

    try:
        store = project.store() if creating or project.tracking_state_exists else None
        backend = project.backend()
        state = project.read_state(store, backend)
    except (OSError, sqlite3.Error) as error:
        raise TuneopsError(f"cannot read the local state in {project.state_dir}: {error}") from None

    def planned_with(options: PlanOptions) -> Plan:
        the_plan = build_plan(project.specs, project.graph, project.inputs, state, options)
        return with_warnings(the_plan, project, state)

    planned = PlannedProject(project, planned_with(options), offline=False, state=state, store=store,
                             backend=backend)
    return with_plan_policies(with_team_costs(planned, options, planned_with))


def with_team_costs(planned: PlannedProject, options: PlanOptions,
                    replan: Callable[[PlanOptions], Plan]) -> PlannedProject:
    """Each team's share of the plan, what it spent this month (read from MLflow unless
    offline), and its budget: a team the plan would take over budget, unapproved, has its
    trainings planned again as `blocked: budget` (by `replan`, with those blocks). An approved
    one is shown among the warnings; apply records it (apply/session.py)."""
    project = planned.project
    if not project.settings.teams:
        return planned
    import time

    from reconciler.plan.costs import budget_blocks, team_costs
    from reconciler.tracking.spend import month_to_date

    spent = None
    if not planned.offline:
        experiment = planned.store.experiment_id(project.settings.mlflow.experiment) \
            if planned.store is not None else None
        spent = month_to_date(planned.store, experiment, project.settings.pricing, time.time())
    estimates = planned.estimates()  # of what the plan asks for, blocked or not: shown either way
    costs = team_costs(project.specs, planned.plan, estimates, spent, project.approval)
    blocks = budget_blocks(costs)
    the_plan = replan(replace(options, over_budget=tuple(blocks.items()))) if blocks else planned.plan
    approved = tuple(cost.line() for cost in costs if cost.over_budget and cost.approval is not None)
    the_plan = replace(the_plan, teams=costs, warnings=the_plan.warnings + approved)
    return replace(planned, plan=the_plan, _estimates={"found": estimates})


def with_plan_policies(planned: PlannedProject) -> PlannedProject:
    """The plan with the plan-level policies it breaks (plan/policies.py): approved ones and
    warnings among its warnings, all of them in `policy_results`."""
    project = planned.project
    if not project.specs.of_kind("Policy"):
        return planned
    from reconciler.plan.policies import check_plan_policies

    results = check_plan_policies(project.specs, project.approval, planned.plan, planned.estimates())
    if not results:
        return planned
    shown = tuple(result.text() for result in results if not result.stops_apply)
    the_plan = replace(planned.plan, policy_results=results, warnings=planned.plan.warnings + shown)
    return replace(planned, plan=the_plan)


def with_warnings(the_plan: Plan, project: Any, state: ActualState | None) -> Plan:
    """The plan with what a reviewer should know that is no error: comparison gates whose margin
    is below what their split can detect, and Evaluations whose rows are in the training data
    (known from their runs, or from the prepared datasets' row hashes, read here: the plan does
    no I/O)."""
    from reconciler.plan.detectable import margin_warnings

    the_plan = with_sweep_estimates(the_plan, project, state)
    found = policy_texts(project)
    found += tuple(problem.text() for problem in margin_warnings(project.specs, state))
    found += contamination_texts(project, state)
    return replace(the_plan, warnings=the_plan.warnings + found) if found else the_plan


def policy_texts(project: Any) -> tuple[str, ...]:
    """The policy violations a reviewer must see though they do not stop the plan: approved
    ones (with who approved them and why) and those of warning-severity policies."""
    from reconciler.specs.rules.policies import POLICY_CODES

    return tuple(problem.text() for problem in project.validation.problems if problem.code in POLICY_CODES)


def with_recorded_trials(state: ActualState, real: ActualState | None, specs: Any) -> ActualState:
    """The base's state with the sweeps' trials as MLflow recorded them, and their runs: a pull
    request that changes a search space shows which finished trials remain valid."""
    if real is None or not real.trials:
        return state
    from reconciler.specs.sweep import is_trial_name

    sweeps = specs.names("Sweep")
    trial_runs = {key: run for key, run in real.built.items()
                  if any(is_trial_name(key[1], sweep) for sweep in sweeps)}
    return replace(state, built={**state.built, **trial_runs}, trials=real.trials)


def with_sweep_estimates(the_plan: Plan, project: Any, state: ActualState | None) -> Plan:
    """Each sweep with trials left gets the planner's GPU-hours for them, at the template's
    values, and what its budget still covers."""
    from reconciler.plan.sweeps import SweepEstimate
    from reconciler.sizing import architectures
    from reconciler.sizing.dataset_rows import train_rows
    from reconciler.sizing.estimates import estimate_fine_tune
    from reconciler.specs.base import ResourceId as Rid
    from reconciler.specs.finetune import FineTuneResource

    actions = list(the_plan.actions)
    found_architectures = rows = None
    for index, planned in enumerate(actions):
        view = planned.sweep
        if view is None or not view.left or planned.action in ("noop", "suspended"):
            continue
        spec = view.resource.spec
        template = project.specs.resource(Rid("FineTune", spec.fine_tune), FineTuneResource)
        if template is None:
            continue
        if found_architectures is None:
            found_architectures = architectures.architectures(project.specs, fetch=state is not None)
            rows = train_rows(project.specs, project.inputs, state)
        hours = estimate_fine_tune(project.specs, template, found_architectures, rows or {},
                                   project.settings.planner).gpu_hours
        spent = sum(t.record.gpu_hours or 0.0 for t in view.valid)
        budget = spec.budget.gpu_hours if spec.budget is not None else None
        actions[index] = replace(planned, sweep_estimate=SweepEstimate(view.left, hours, budget, spent))
    return replace(the_plan, actions=tuple(actions))


def contamination_texts(project: Any, state: ActualState | None) -> tuple[str, ...]:
    """The contamination warnings, once state was read (`plan/contamination.py`)."""
    if state is None:
        return ()
    from reconciler.contamination import read_row_hashes
    from reconciler.plan.contamination import contamination_warnings

    return tuple(problem.text() for problem in
                 contamination_warnings(project.specs, project.inputs, state, read_row_hashes))


def plan_against_base(project: Any, ref: str, *, offline: bool, options: PlanOptions,
                      load_base: Callable[[Path], Any]) -> PlannedProject:
    """The head planned against the specs at `ref` taken as built and serving; with state, a
    change back to a built fingerprint is free; with backend kubernetes and --offline, the
    head's manifests must validate too. `load_base` gives the project at the base's folder, or
    None when there is none (or it does not validate)."""
    import tempfile

    from reconciler.git.ref import checkout_base
    from reconciler.plan.base import against_base, state_from_base
    from reconciler.plan.plan import build_plan

    with tempfile.TemporaryDirectory(prefix="tuneops-base-") as folder:
        base = checkout_base(project.root, ref, Path(folder))
        base_project = load_base(base.root) if base.root is not None else None
        base_inputs = base_project.inputs if base_project is not None else {}
        base_specs = base_project.specs if base_project is not None else project.specs
        state = state_from_base(base_specs, base_inputs)
    real_state = real_store = None
    if not offline:
        real = plan_project(project, options, offline=False)
        real_state, real_store = real.state, real.store
        state = with_recorded_trials(state, real_state, project.specs)
    elif project.settings.backend == "kubernetes":  # the CI dry-run's other half
        from reconciler.backends.kubernetes.project_manifests import project_manifests

        project_manifests(project, error_prefix="the Kubernetes manifests do not render: ")

    def planned_with(options: PlanOptions) -> Plan:
        specs = project.specs
        the_plan = build_plan(specs, project.graph, project.inputs, state, replace(options, prune=True))
        the_plan = with_sweep_estimates(the_plan, project, real_state)
        the_plan = against_base(the_plan, base_inputs, specs, real_state)
        found = contamination_texts(project, real_state)
        if found:
            the_plan = replace(the_plan, warnings=the_plan.warnings + found)
        if base_project is not None:
            the_plan = replace(the_plan, settings_changes=shown_settings_changes(
                base_project.settings, project.settings))
        return the_plan

    planned = PlannedProject(project, planned_with(options), offline=offline, state=real_state, base=base,
                             store=real_store)
    return with_plan_policies(with_team_costs(planned, options, planned_with))


def shown_settings_changes(before: Any, after: Any) -> tuple[FieldChange, ...]:
    """tuneops.yaml's changed fields with any credential in their values masked."""
    from reconciler.plan.plan import settings_diff
    from reconciler.redaction import redact

    def masked(value: Any) -> Any:
        return redact(value) if isinstance(value, str) else value

    return tuple(replace(change, before=masked(change.before), after=masked(change.after))
                 for change in settings_diff(before, after))


def plan_header(project: Any, offline: bool) -> str:
    from reconciler.git.info import git_origin
    from reconciler.specs.loader import display_path
    from reconciler.tracking.vocabulary import redact_uri

    origin = git_origin(project.root)
    commit = (f"at commit {origin.commit[:12]}" + (" + uncommitted changes" if origin.dirty else "")) \
        if origin.commit else "(not in a Git repository)"
    where = "state not read (--offline)" if offline else \
        f"state from MLflow {redact_uri(project.tracking_uri)} and the {project.settings.backend} backend"
    folder = display_path(project.root).rstrip("/") + "/"  # `specs in specs/`: a folder, not a word
    return f"specs in {folder} {commit}; {where}"


def estimates_of(project: Any, the_plan: Plan, state: ActualState | None = None) -> dict[ResourceId, Any]:
    """The planner's figures for each FineTune the plan would train, by ResourceId."""
    from reconciler.plan.plan import Action
    from reconciler.sizing import architectures
    from reconciler.sizing.dataset_rows import train_rows
    from reconciler.sizing.estimates import estimates_for, priced
    from reconciler.specs.base import ResourceId

    training = {a.resource.name for a in the_plan.actions if a.resource.kind == "FineTune"
                and a.action in (Action.CREATE, Action.REBUILD, Action.RETRY)}
    if not training:
        return {}
    found = estimates_for(project.specs, architectures.architectures(project.specs, fetch=state is not None),
                          train_rows(project.specs, project.inputs, state), project.settings.planner,
                          names=training)
    pricing = project.settings.pricing
    return {ResourceId("FineTune", name): priced(estimate, pricing) for name, estimate in found.items()}

