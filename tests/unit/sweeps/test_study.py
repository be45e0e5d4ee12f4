"""Optuna's suggestions rebuilt from records: a function of the seed, the trial's number and the
trials before it in the window, never of when trials finished; a grid visits each point once;
trial resources are named by what they train, whatever order the parameters are written in."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import MappingProxyType

import pytest

from reconciler.project import Project
from reconciler.specs.base import ResourceId
from reconciler.specs.sweep import Distribution, SweepResource
from reconciler.state import TrialRecord
from reconciler.sweeps.limits import in_space, trial_limit
from reconciler.sweeps.study import conditioning, ready, suggest
from reconciler.sweeps.trials import materialize
from tests.support.reconcile_support import QUICKSTART

pytest.importorskip("optuna")


def sweep_spec(**changes):
    from reconciler.specs.sweep import SweepSpec

    objective = {"evaluation": "fruit-sft-quality", "metric": "exact_match"}
    spec = {"fineTune": "fruit-sft", "objective": objective,
            "parameters": {"training.learningRate": {"logUniform": [1.0e-4, 1.0e-2]},
                           "training.epochs": {"intRange": [1, 4]}},
            "seed": 3, "maxTrials": 8, "parallelTrials": 2}
    spec.update(changes)
    return SweepSpec.model_validate(spec)


def record(number: int, params: dict, state: str = "complete", value: float | None = 0.5,
           system: dict | None = None) -> TrialRecord:
    return TrialRecord("s", number, f"r{number}", f"s-{number}", "f", MappingProxyType(dict(params)), {},
                       state, value=value, system_attrs=MappingProxyType(system or {}))


def run_sequence(spec, finish_order_reversed: bool) -> list[dict]:
    """Suggest a whole sweep, finishing each window's trials in one order or the other."""
    trials: list[TrialRecord] = []
    for number in range(spec.max_trials):
        assert ready(trials, number, spec.parallel_trials)
        suggestion = suggest(spec, number, trials)
        trials.append(record(number, suggestion.params, "running", None, suggestion.system_attrs))
        # finish what the next trial's window needs finished, in the chosen order
        due = [t for t in trials if t.number <= number + 1 - spec.parallel_trials and t.state == "running"]
        for trial in (reversed(due) if finish_order_reversed else due):
            value = trial.params["training.learningRate"] * 100 + trial.params["training.epochs"]
            trials[trial.number] = record(trial.number, trial.params, "complete", value,
                                          dict(trial.system_attrs))
    return [dict(t.params) for t in trials]


def test_suggestions_do_not_depend_on_the_order_trials_finish_in():
    spec = sweep_spec()
    first = run_sequence(spec, finish_order_reversed=False)
    assert run_sequence(spec, finish_order_reversed=True) == first
    assert len({str(p) for p in first}) == len(first)
    assert run_sequence(sweep_spec(seed=4), False) != first


def test_the_window_holds_back_a_trial_until_the_earlier_ones_finished():
    trials = [record(0, {"a": 1}), record(1, {"a": 2}, "running", None), record(2, {"a": 3}, "running", None)]
    finished, running = conditioning(trials, 3, 2)
    assert [t.number for t in finished] == [0, 1] and [t.number for t in running] == [2]
    assert not ready(trials, 3, 2)  # trial 1 still runs
    assert ready(trials, 2, 2)


def test_a_grid_visits_each_point_once_in_a_seeded_order():
    spec = sweep_spec(algorithm="grid", parameters={"training.epochs": {"intRange": [1, 2]},
                                                   "adapter.r": {"choice": [8, 16]}}, maxTrials=10)
    assert trial_limit(spec) == 4
    trials: list[TrialRecord] = []
    for number in range(4):
        suggestion = suggest(spec, number, trials)
        trials.append(record(number, suggestion.params, "pruned" if number == 1 else "complete",
                             None if number == 1 else 0.5, suggestion.system_attrs))
    assert sorted((p["training.epochs"], p["adapter.r"]) for p in (t.params for t in trials)) == \
        [(1, 8), (1, 16), (2, 8), (2, 16)]


def test_a_narrowed_space_leaves_the_trials_outside_it_out():
    spec = sweep_spec()
    assert in_space(spec, record(0, {"training.learningRate": 1e-3, "training.epochs": 2})) == ""
    assert "outside the search space: training.epochs=7" in in_space(
        spec, record(0, {"training.learningRate": 1e-3, "training.epochs": 7}))
    assert "parameter adapter.r removed" in in_space(
        spec, record(0, {"training.learningRate": 1e-3, "training.epochs": 2, "adapter.r": 8}))
    assert in_space(spec, record(0, {"training.learningRate": 1e-3, "training.epochs": True}))  # not an int
    assert Distribution.model_validate({"choice": [8, 16]}).values_to_check() == (8, 16)


def test_a_trial_is_named_by_what_it_trains_whatever_order_its_parameters_come_in(tmp_path: Path):
    root = tmp_path / "specs"
    shutil.copytree(QUICKSTART, root, ignore=shutil.ignore_patterns(".tuneops"))
    project = Project.load(root)
    sweep = project.specs.resource(ResourceId("Sweep", "fruit-lr"), SweepResource)
    def trial(params: dict):
        return materialize(project.specs, project.inputs, sweep, params)

    one = trial({"training.learningRate": 0.004, "training.epochs": 2})
    other = trial({"training.epochs": 2, "training.learningRate": 0.004})
    assert one.fine_tune_id == other.fine_tune_id and one.fingerprint == other.fingerprint
    assert one.fine_tune.resource.spec.training.learning_rate == 0.004
    assert one.fine_tune.resource.spec.registration.model == one.fine_tune_id.name
    evaluation = one.evaluations["fruit-sft-quality"].resource
    assert evaluation.spec.model.fine_tune == one.fine_tune_id.name
    changed = trial({"training.learningRate": 0.005, "training.epochs": 2})
    assert changed.fine_tune_id != one.fine_tune_id


def test_cma_es_keeps_its_state_in_the_trial_records():
    """CMA-ES's optimizer lives in the trials' sampler state, which the records carry: rebuilt
    from them, it continues the same way whichever trial finished first."""
    pytest.importorskip("cmaes")
    spec = sweep_spec(algorithm="cmaes", maxTrials=12, parameters={
        "training.learningRate": {"logUniform": [1.0e-4, 1.0e-2]}, "training.epochs": {"intRange": [1, 9]}})
    first = run_sequence(spec, finish_order_reversed=False)
    assert run_sequence(spec, finish_order_reversed=True) == first
    assert len({str(p) for p in first}) == 12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_widened_grid_takes_the_new_point_not_one_already_trained(seed: int):
    small = sweep_spec(algorithm="grid", seed=seed, parameters={"adapter.r": {"choice": [8, 16]}},
                       maxTrials=3)
    first = record(0, suggest(small, 0, []).params)
    second = record(1, suggest(small, 1, [first]).params)
    wider = sweep_spec(algorithm="grid", seed=seed, parameters={"adapter.r": {"choice": [8, 16, 32]}},
                       maxTrials=3)
    assert suggest(wider, 2, [first, second]).params == {"adapter.r": 32}
