"""Median pruning's rule, one rule per test, and the curve as it is written into a tag."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("transformers", reason="needs the [train] extra (the module holds the Trainer callback)")

from reconciler.runtime.pruning import curve_tag, should_prune, value_at  # noqa: E402

# Three finished trials' loss curves, logged at steps 1..4 (one at 2 and 4 only).
FINISHED = (
    ((1, 3.0), (2, 2.0), (3, 1.5), (4, 1.0)),
    ((1, 3.2), (2, 2.4), (3, 1.9), (4, 1.6)),
    ((2, 2.8), (4, 2.2)),
)


def test_a_value_worse_than_the_median_prunes_when_minimizing() -> None:
    # At step 3 the finished trials stand at 1.5, 1.9 and (from its step 2) 2.8: median 1.9.
    reason = should_prune(3, 2.0, FINISHED, "minimize", metric="loss")
    assert reason == "loss 2 at step 3 is worse than the median 1.9 of 3 finished trials"
    assert should_prune(3, 1.8, FINISHED, "minimize") is None


def test_equal_to_the_median_keeps_training() -> None:
    assert should_prune(3, 1.9, FINISHED, "minimize") is None
    assert should_prune(3, 1.9, FINISHED, "maximize") is None


def test_maximizing_prunes_values_below_the_median() -> None:
    accuracy = (((10, 0.6),), ((10, 0.7),), ((10, 0.8),))
    assert should_prune(10, 0.65, accuracy, "maximize", metric="accuracy") == (
        "accuracy 0.65 at step 10 is worse than the median 0.7 of 3 finished trials")
    assert should_prune(10, 0.75, accuracy, "maximize") is None
    assert should_prune(10, 0.75, accuracy, "minimize") is not None  # the direction decides


def test_an_even_number_of_trials_takes_the_mean_of_the_middle_two() -> None:
    curves = (((5, 1.0),), ((5, 2.0),), ((5, 3.0),), ((5, 4.0),))  # median 2.5
    assert should_prune(5, 2.4, curves) is None
    assert should_prune(5, 2.6, curves) is not None


def test_nothing_prunes_by_the_median_before_min_steps() -> None:
    assert should_prune(2, 9.0, FINISHED, min_steps=3) is None
    assert should_prune(3, 9.0, FINISHED, min_steps=3) is not None


def test_fewer_finished_trials_than_min_trials_keep_training() -> None:
    assert should_prune(3, 9.0, FINISHED, min_trials=4) is None
    assert should_prune(3, 9.0, FINISHED, min_trials=3) is not None
    assert should_prune(3, 9.0, FINISHED[:1], min_trials=1) is not None
    assert should_prune(3, 9.0, (), min_trials=0) is None  # no median of nothing


def test_a_curve_with_no_point_at_or_before_the_step_is_left_out() -> None:
    # At step 1 only the first two curves have a value (3.0, 3.2): two trials, median 3.1.
    assert should_prune(1, 3.15, FINISHED, min_trials=3) is None
    assert should_prune(1, 3.15, FINISHED, min_trials=2) == (
        "value 3.15 at step 1 is worse than the median 3.1 of 2 finished trials")


def test_a_finished_curve_is_read_at_its_last_step_at_or_before() -> None:
    curve = ((2, 5.0), (4, 3.0), (8, 1.0))
    assert [value_at(curve, step) for step in (1, 2, 3, 4, 7, 8, 100)] == [None, 5.0, 5.0, 3.0, 3.0, 1.0, 1.0]
    # Past their ends the curves keep their last values: 1.0, 1.6, 2.2 -> median 1.6.
    assert should_prune(50, 1.7, FINISHED) is not None
    assert should_prune(50, 1.5, FINISHED) is None


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_prunes_at_any_step_with_any_history(value: float) -> None:
    reason = should_prune(1, value, (), "maximize", min_steps=100, min_trials=5, metric="loss")
    assert reason == f"loss is {value} at step 1: diverged"


def test_non_finite_values_of_finished_curves_are_left_out_of_the_median() -> None:
    curves = (((3, 1.0),), ((3, 2.0),), ((3, math.nan),))
    assert should_prune(3, 1.6, curves, min_trials=3) is None  # only two finite values
    assert should_prune(3, 1.6, curves, min_trials=2) is not None  # median 1.5


def test_the_curve_tag_is_compact_json_of_the_points() -> None:
    text = curve_tag([(1, 2.3456789123), (2, math.nan)], limit=8000)
    assert text == "[[1,2.34568],[2,NaN]]"
    assert json.loads(text)[0] == [1, 2.34568]


def test_a_long_curve_is_thinned_evenly_and_keeps_its_ends() -> None:
    curve = [(step, 1.0 + 1 / step) for step in range(1, 5001)]
    text = curve_tag(curve, limit=8000)
    assert len(text) <= 8000
    points = json.loads(text)
    assert points[0][0] == 1 and points[-1][0] == 5000
    assert len(points) > 300, "thinned far more than the limit needs"
    gaps = {b[0] - a[0] for a, b in zip(points, points[1:], strict=False)}
    assert max(gaps) - min(gaps) <= 1, "not evenly spaced"


def _trainer_objects(step: int, log_history: list[dict] | None = None):  # noqa: ANN202
    from transformers import TrainerControl, TrainerState, TrainingArguments

    state = TrainerState(global_step=step, log_history=log_history or [])
    return TrainingArguments(output_dir="unused", use_cpu=True, report_to="none"), state, TrainerControl()


def test_the_callback_stops_training_and_remembers_why() -> None:
    from reconciler.jobs.jobfile import PruningJob
    from reconciler.runtime.pruning import MedianPruning

    pruning = MedianPruning(PruningJob(metric="loss", min_steps=2, history=FINISHED))
    args, state, control = _trainer_objects(0)
    pruning.on_train_begin(args, state, control)
    # Step 1 is before min_steps; at step 3 the loss 2.5 is behind the median 1.9, but the best so
    # far, 1.8, is not: Optuna's MedianPruner judges the best, so one noisy step prunes nothing.
    for step, loss in ((1, 9.0), (2, 1.8), (3, 2.5)):
        state.global_step = step
        pruning.on_log(args, state, control, logs={"loss": loss, "learning_rate": 1e-3})
        pruning.on_log(args, state, control, logs={"grad_norm": 1.0})  # other logs are not the metric
    assert not pruning.pruned and not control.should_training_stop
    state.global_step = 4
    pruning.on_log(args, state, control, logs={"loss": 1.9})  # best 1.8 > the median 1.6 at step 4
    assert control.should_training_stop and not control.should_save
    assert pruning.reason == "best loss 1.8 at step 4 is worse than the median 1.6 of 3 finished trials"
    assert (pruning.step, pruning.value) == (4, 1.8)
    assert pruning.curve == [(1, 9.0), (2, 1.8), (3, 2.5), (4, 1.9)]
    state.global_step = 5
    pruning.on_log(args, state, control, logs={"loss": 0.1})  # after the decision nothing changes
    assert pruning.step == 4 and len(pruning.curve) == 4


def test_a_resumed_trial_keeps_the_points_logged_before_its_checkpoint() -> None:
    from reconciler.jobs.jobfile import PruningJob
    from reconciler.runtime.pruning import MedianPruning

    restored = [{"loss": 3.0, "step": 1}, {"eval_loss": 2.0, "step": 2}, {"loss": 2.5, "step": 2},
                {"train_runtime": 1.0, "step": 2}]
    pruning = MedianPruning(PruningJob(metric="loss"))
    args, state, control = _trainer_objects(2, restored)
    pruning.on_train_begin(args, state, control)
    assert pruning.curve == [(1, 3.0), (2, 2.5)]
