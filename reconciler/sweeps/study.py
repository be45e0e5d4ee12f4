"""Optuna's suggestion for one trial, rebuilt from the recorded trials: no second database.

A trial's parameters depend only on the sweep's seed, the trial's number, and the trials that
came before it in a fixed window: trial n is suggested from the trials numbered below
n - parallelTrials + 1, all finished (with their results), and the ones between, still running
(parameters only). Apply starts trial n only once those earlier ones are finished, so an
uninterrupted apply, an apply killed and resumed, and a daemon all suggest the same parameters.
The sampler is built afresh per trial with a seed derived from (seed, number): Optuna's samplers
keep random state across calls, which a rebuilt study would not have.

Optuna is imported here only (apply and `tuneops sweep show`), never by validate or plan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.errors import PermanentError
from reconciler.state import TrialRecord
from reconciler.sweeps.limits import finite_values

if TYPE_CHECKING:
    from reconciler.specs.sweep import SweepSpec

_OPTUNA_STATE = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "running": "RUNNING"}


class OptunaMissing(PermanentError, ImportError):
    """Sweeps need Optuna where apply runs."""


@dataclass(frozen=True)
class Suggestion:
    params: dict[str, Any]  # dotted path -> value
    distributions: dict[str, str]  # dotted path -> Optuna's distribution JSON
    system_attrs: dict[str, Any]  # the sampler's state for later trials (CMA-ES keeps its own)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise OptunaMissing("sweeps need Optuna where apply runs: pip install 'tuneops[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(spec: SweepSpec) -> dict[str, Any]:
    """The search space as Optuna distributions, by dotted path."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    _optuna()
    space: dict[str, Any] = {}
    for path, dist in sorted(spec.parameters.items()):
        if dist.log_uniform is not None:
            space[path] = FloatDistribution(float(dist.log_uniform[0]), float(dist.log_uniform[1]), log=True)
        elif dist.uniform is not None:
            space[path] = FloatDistribution(float(dist.uniform[0]), float(dist.uniform[1]))
        elif dist.int_range is not None:
            space[path] = IntDistribution(int(dist.int_range[0]), int(dist.int_range[1]))
        else:
            space[path] = CategoricalDistribution(list(dist.choice or ()))
    return space


def startup_trials(spec: SweepSpec) -> int:
    """Random trials before TPE models the results: a third of the sweep, between 1 and 10
    (Optuna's default of 10 would leave a 6-trial sweep random)."""
    return max(1, min(10, spec.max_trials // 3))


def _sampler(spec: SweepSpec, number: int) -> Any:
    optuna = _optuna()
    seed = (spec.seed * 1_000_003 + number) % 2**32
    if spec.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.algorithm == "grid":
        # The sweep's own seed: it shuffles the grid's order once, and each trial then takes the
        # point of its position (a per-trial seed would shuffle the grid differently every time).
        return optuna.samplers.GridSampler(
            {path: finite_values(dist) for path, dist in spec.parameters.items()}, seed=spec.seed)
    if spec.algorithm == "cmaes":
        try:
            import cmaes  # noqa: F401 - Optuna's CMA-ES sampler needs it
        except ImportError:
            raise OptunaMissing("algorithm: cmaes needs the cmaes package where apply runs: "
                                "pip install 'tuneops[sweep]'") from None
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup_trials(spec),
                                            warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(spec))


def conditioning(trials: Sequence[TrialRecord], number: int, parallel: int,
                 ) -> tuple[list[TrialRecord], list[TrialRecord]]:
    """(finished, running) trials that trial `number` is suggested from: the ones numbered at most
    number - parallel (all finished by then), and the ones between, as running."""
    earlier = [t for t in trials if t.number < number]
    cut = number - parallel
    return [t for t in earlier if t.number <= cut], [t for t in earlier if t.number > cut]


def ready(trials: Sequence[TrialRecord], number: int, parallel: int) -> bool:
    """Trial `number` may be suggested: every trial it is conditioned on as finished is."""
    finished, _ = conditioning(trials, number, parallel)
    return all(t.done for t in finished)


def suggest(spec: SweepSpec, number: int, trials: Sequence[TrialRecord]) -> Suggestion:
    """Trial `number`'s parameters, from the sweep's compatible recorded trials before it."""
    optuna = _optuna()
    from optuna.distributions import distribution_to_json
    from optuna.trial import TrialState, create_trial

    space = distributions(spec)
    finished, running = conditioning(trials, number, spec.parallel_trials)
    study = optuna.create_study(direction=spec.objective.direction, sampler=_sampler(spec, number))
    for trial in finished + running:
        state = TrialState[_OPTUNA_STATE[trial.state if trial in finished else "running"]]
        value = trial.value if state == TrialState.COMPLETE else None
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state, value = TrialState.FAIL, None  # a complete trial without a usable objective
        study.add_trial(create_trial(
            state=state, value=value, params=dict(trial.params), distributions=space,
            system_attrs=dict(trial.system_attrs) if state != TrialState.RUNNING else {}))
    if spec.algorithm == "grid":
        _enqueue_unvisited(study, spec, trials, number)
    asked = study.ask(fixed_distributions=space)
    params = {path: _plain(asked.params[path]) for path in space}
    system = study._storage.get_trial(asked._trial_id).system_attrs
    return Suggestion(params, {path: distribution_to_json(dist) for path, dist in space.items()},
                      json.loads(json.dumps(system, default=str)))


def _enqueue_unvisited(study: Any, spec: SweepSpec, trials: Sequence[TrialRecord], number: int) -> None:
    """A grid's next point: the first, in Optuna's seeded grid order, that no earlier trial took.
    Optuna's GridSampler tells visited points by the grid it recorded them under, so after the
    grid changed (a value added) it would offer points the recorded trials already cover."""
    sampler = study.sampler
    names = list(sampler._param_names)  # Optuna's shuffled grid and its parameter order
    taken = {tuple(t.params.get(name) for name in names) for t in trials if t.number < number}
    for point in sampler._all_grids:
        if tuple(point) not in taken:
            study.enqueue_trial(dict(zip(names, point, strict=True)))
            return


def _plain(value: Any) -> Any:
    """numpy scalars from a sampler as the Python values the spec and JSON take."""
    if hasattr(value, "item"):
        return value.item()
    return value


def importances(spec: SweepSpec, trials: Sequence[TrialRecord]) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the complete trials (valid ones: the caller
    checks them against the search space); {} with fewer than
    three, or when every objective value is the same (nothing to attribute)."""
    optuna = _optuna()
    from optuna.trial import TrialState, create_trial

    space = distributions(spec)
    complete = [t for t in trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
    if len(complete) < 3 or len({t.value for t in complete}) < 2:
        return {}
    study = optuna.create_study(direction=spec.objective.direction)
    for trial in complete:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=trial.value,
                                     params=dict(trial.params), distributions=space))
    try:
        found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # too little variation for the evaluator
        return {}
    return {path: float(value) for path, value in found.items()}
