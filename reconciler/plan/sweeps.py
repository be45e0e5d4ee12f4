"""A Sweep's trials as the plan sees them: each recorded trial materialized again from the
current template and search space (so a changed template or a narrowed range shows which
finished trials remain valid), scored from the Evaluation runs at the trial's fingerprints,
and summed up for the plan line, `tuneops status` and `tuneops sweep show`. Pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.fingerprint import FingerprintInput
from reconciler.specs.base import ResourceId
from reconciler.specs.specset import SpecSet
from reconciler.specs.sweep import SweepResource
from reconciler.state import BuiltRun, TrialRecord
from reconciler.sweeps.trials import TrialResources, materialize
from reconciler.tracking import vocabulary as tracking


@dataclass(frozen=True)
class TrialView:
    record: TrialRecord
    resources: TrialResources | None  # None when it no longer fits the search space
    stale: str = ""  # why it no longer counts: "" for a valid trial
    value: float | None = None  # the objective
    verdicts: Mapping[str, str] | None = None  # Evaluation (the sweep's name for it) -> passed | failed
    model_version: str | None = None

    @property
    def number(self) -> int:
        return self.record.number

    @property
    def state(self) -> str:
        return self.record.state

    def passes(self, requires: tuple[str, ...]) -> bool:
        """Complete, and every one of these Evaluations scored it and passed."""
        verdicts = self.verdicts or {}
        return (self.state == "complete" and self.model_version is not None
                and all(verdicts.get(name) == tracking.GATE_PASSED for name in requires))

    def unscored(self, evaluations: tuple[str, ...]) -> tuple[str, ...]:
        """Evaluations a complete trial still has to be scored with (one added since it ran)."""
        if self.state != "complete" or self.stale:
            return ()
        verdicts = self.verdicts or {}
        return tuple(name for name in evaluations if name not in verdicts)

    def params_text(self) -> str:
        return ", ".join(f"{path}={_value(value)}" for path, value in sorted(self.record.params.items()))


@dataclass(frozen=True)
class SweepView:
    name: str
    resource: SweepResource
    trials: tuple[TrialView, ...]  # every recorded trial, by number

    @property
    def valid(self) -> tuple[TrialView, ...]:
        return tuple(t for t in self.trials if not t.stale)

    @property
    def stale(self) -> tuple[TrialView, ...]:
        return tuple(t for t in self.trials if t.stale)

    def count(self, state: str) -> int:
        return sum(1 for t in self.valid if t.state == state)

    @property
    def left(self) -> int:
        """Trials still to suggest: maxTrials (or the grid's size) less the valid ones."""
        from reconciler.sweeps.limits import trial_limit

        return max(0, trial_limit(self.resource.spec) - len(self.valid))

    def best(self, requires: tuple[str, ...] | None = None) -> TrialView | None:
        """The best complete trial (with `requires`: among those that pass them); ties go to the
        earlier trial."""
        candidates = [t for t in self.valid if t.state == "complete" and t.value is not None
                      and math.isfinite(t.value) and (requires is None or t.passes(requires))]
        if not candidates:
            return None
        sign = -1.0 if self.resource.spec.objective.direction == "maximize" else 1.0
        return min(candidates, key=lambda t: (sign * (t.value or 0.0), t.number))

    def unscored(self, evaluations: tuple[str, ...]) -> list[TrialView]:
        return [t for t in self.valid if t.unscored(evaluations)]

    def summary(self) -> str:
        """"3 of 6 trials: 2 complete, 1 pruned; 1 running; best exact_match 0.83 (#2: ...)"."""
        spec = self.resource.spec
        from reconciler.sweeps.limits import trial_limit

        parts = [f"{self.count(state)} {state}" for state in ("complete", "pruned", "failed")
                 if self.count(state)]
        done = sum(1 for t in self.valid if t.record.done)
        text = f"{done} of {trial_limit(spec)} trials done" + (f" ({', '.join(parts)})" if parts else "")
        if self.count("running"):
            text += f"; {self.count('running')} running"
        best = self.best()
        if best is not None:
            text += (f"; best {spec.objective.metric} {_value(best.value)} (trial {best.number}: "
                     f"{best.params_text()})")
        return text


def _trials(count: int) -> str:
    return f"{count} trial{'' if count == 1 else 's'}"


def _hours(value: float | None) -> str:
    if not value:
        return "0"
    return f"{value:,.2f}" if value >= 0.01 else f"{value:.2g}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, str) else str(value)


BuiltLookup = Callable[[str, str, str], "BuiltRun | None"]
"""(kind, name, fingerprint) -> the complete run: ActualState.built_run in a plan, a fresh
MLflow read in apply."""


def sweep_view(specs: SpecSet, inputs: Mapping[ResourceId, FingerprintInput], sweep: SweepResource,
               trials: Iterable[TrialRecord], built_run: BuiltLookup) -> SweepView:
    """The sweep's recorded trials checked against the current specs and scored from their runs."""
    from reconciler.sweeps.limits import in_space, refused_by_template

    views = []
    template = ResourceId("FineTune", sweep.spec.fine_tune)
    for record in trials:
        why = in_space(sweep.spec, record)
        if not why and refused_by_template(record):
            views.append(TrialView(record, None))
            continue
        if why or template not in inputs:
            views.append(TrialView(record, None, why or "its template is gone"))
            continue
        try:
            resources = materialize(specs, inputs, sweep, record.params, record.number)
        except ValueError as error:  # the template no longer takes these values
            views.append(TrialView(record, None, f"the template no longer takes its parameters: {error}"))
            continue
        if resources.fine_tune.resource.name != record.fine_tune:
            views.append(TrialView(record, resources, "the template FineTune changed since it ran"))
            continue
        views.append(_scored(built_run, sweep, record, resources))
    return SweepView(sweep.name, sweep, tuple(views))


def _scored(built_run: BuiltLookup, sweep: SweepResource, record: TrialRecord,
            resources: TrialResources) -> TrialView:
    built = built_run("FineTune", resources.fine_tune_id.name, resources.fingerprint)
    verdicts: dict[str, str] = {}
    value = record.value
    for evaluation, copy in resources.evaluations.items():
        run = built_run("Evaluation", copy.id.name, resources.evaluation_fingerprint(evaluation))
        if run is None:
            continue
        verdicts[evaluation] = run.verdict or tracking.GATE_FAILED
        if evaluation == sweep.spec.objective.evaluation:
            value = run.metrics.get(sweep.spec.objective.metric, value)
    return TrialView(record, resources, value=value, verdicts=verdicts,
                     model_version=built.model_version if built is not None else None)


@dataclass(frozen=True)
class SweepEstimate:
    """The planner's GPU-hours for a sweep's remaining trials, at the template's values (apply
    checks each suggested trial's own figure against the budget)."""

    remaining: int
    per_trial: float | None  # None on CPU, or when the template cannot be estimated
    budget: float | None = None
    spent: float = 0.0  # what the recorded trials were estimated at

    @property
    def total(self) -> float | None:
        return self.per_trial * self.remaining if self.per_trial is not None else None

    @property
    def fit(self) -> int | None:
        """How many remaining trials the budget still covers (None without a budget or figure)."""
        if self.budget is None or not self.per_trial:
            return None
        return max(0, min(self.remaining, math.floor((self.budget - self.spent) / self.per_trial + 1e-9)))

    def line(self) -> str:
        if self.per_trial is None:
            text = f"{_trials(self.remaining)} left; GPU-hours not estimated (CPU, or see `tuneops estimate`)"
        else:
            text = (f"{_trials(self.remaining)} left x {_hours(self.per_trial)} GPU-hours = "
                    f"{_hours(self.total)} GPU-hours (at the template's values)")
        if self.budget is not None:
            fit = self.fit
            text += f"; budget {self.budget:g} GPU-hours, {_hours(self.spent)} spent"
            if fit is not None and fit < self.remaining:
                text += f": {fit} of {self.remaining} trials fit, apply stops there"
            elif fit is not None:
                text += ": all fit"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "gpu_hours_per_trial": self.per_trial,
                "gpu_hours": self.total, "budget_gpu_hours": self.budget, "spent_gpu_hours": self.spent,
                "trials_within_budget": self.fit}


def sweep_json(view: SweepView) -> dict[str, Any]:
    """The trials as the JSON plan and `tuneops sweep show --format json` write them."""
    best = view.best()
    return {
        "trials": [{"number": t.number, "fine_tune": t.record.fine_tune, "state": t.state,
                    "params": dict(t.record.params), "value": t.value, "valid": not t.stale,
                    "stale": t.stale or None, "verdicts": dict(t.verdicts or {}),
                    "model_version": t.model_version, "message": t.record.message or None,
                    "run_id": t.record.run_id} for t in view.trials],
        "counts": {state: view.count(state) for state in ("complete", "pruned", "failed", "running")},
        "left": view.left,
        "best": None if best is None else {"number": best.number, "value": best.value,
                                           "params": dict(best.record.params)},
    }
