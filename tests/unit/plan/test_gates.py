"""Gate verdicts: bounds, the baseline in each metric's direction, and the messages a plan shows."""

from __future__ import annotations

import math

import pytest

from reconciler.plan.gates import GateResult, Verdict, evaluate_gates, verdict_of_run
from reconciler.specs.evaluation import Gate

NAN = float("nan")


def gate(metric: str, min: float | None = None, max: float | None = None) -> Gate:
    return Gate(metric=metric, min=min, max=max)


def test_min_gate():
    assert evaluate_gates({"rougeL": 0.41}, [gate("rougeL", min=0.35)]).passed
    verdict = evaluate_gates({"rougeL": 0.21}, [gate("rougeL", min=0.35)])
    assert not verdict.passed
    assert verdict.failures == (GateResult("rougeL", 0.21, 0.35, "min", False),)


def test_max_gate():
    assert evaluate_gates({"perplexity": 9.0}, [gate("perplexity", max=10)]).passed
    assert not evaluate_gates({"perplexity": 12.4}, [gate("perplexity", max=10)]).passed


@pytest.mark.parametrize(("value", "passed"),
                         [(0.2, False), (0.3, True), (0.5, True), (0.7, True), (0.8, False)])
def test_both_bounds(value: float, passed: bool):
    verdict = evaluate_gates({"f1": value}, [gate("f1", min=0.3, max=0.7)])
    assert verdict.passed is passed
    assert [r.kind for r in verdict.results] == ["min", "max"]
    assert len(verdict.failures) == (0 if passed else 1)


def test_boundary_equality_passes():
    assert evaluate_gates({"rougeL": 0.35}, [gate("rougeL", min=0.35)]).passed
    assert evaluate_gates({"perplexity": 10.0}, [gate("perplexity", max=10)]).passed
    # 7/20 is how a fraction of 20 examples arrives; it is the bound 0.35 exactly.
    assert evaluate_gates({"exact_match": 7 / 20}, [gate("exact_match", min=0.35)]).passed


def test_every_gate_must_pass():
    verdict = evaluate_gates({"rougeL": 0.5, "perplexity": 12.0},
                             [gate("rougeL", min=0.35), gate("perplexity", max=10)])
    assert not verdict.passed
    assert [r.metric for r in verdict.failures] == ["perplexity"]


def test_missing_metric_fails():
    verdict = evaluate_gates({"perplexity": 5.0}, [gate("rougeL", min=0.35)])
    assert not verdict.passed
    assert verdict.failures == (GateResult("rougeL", None, 0.35, "min", False),)
    assert verdict.failures[0].describe() == "gate rougeL: not computed"


def test_nan_fails_every_bound():
    verdict = evaluate_gates({"f1": NAN}, [gate("f1", min=0.0, max=1.0)])
    assert [r.passed for r in verdict.results] == [False, False]
    assert verdict.failures[0].describe() == "gate f1: not a number (NaN)"


def test_infinite_perplexity_fails_a_max_gate():
    assert not evaluate_gates({"perplexity": math.inf}, [gate("perplexity", max=10)]).passed


def test_no_gates_and_no_baseline_passes():
    verdict = evaluate_gates({"rougeL": 0.1}, [])
    assert verdict.passed and verdict.results == () and verdict.failures == ()
    assert verdict.summary() == "passed (0 gates)"


def test_baseline_higher_is_better():
    # rougeL may fall at most 0.05 below the baseline's 0.40: 0.35 is the floor
    assert evaluate_gates({"rougeL": 0.36}, [], {"rougeL": 0.40}, 0.05).passed
    assert evaluate_gates({"rougeL": 0.35}, [], {"rougeL": 0.40}, 0.05).passed
    assert evaluate_gates({"rougeL": 0.50}, [], {"rougeL": 0.40}, 0.05).passed
    verdict = evaluate_gates({"rougeL": 0.34}, [], {"rougeL": 0.40}, 0.05)
    assert not verdict.passed
    assert verdict.failures[0].kind == "baseline"
    assert verdict.failures[0].bound == pytest.approx(0.35)


def test_baseline_lower_is_better():
    # perplexity may rise at most 0.5 above the baseline's 11.9: 12.4 is the ceiling
    assert evaluate_gates({"perplexity": 12.4}, [], {"perplexity": 11.9}, 0.5).passed
    assert evaluate_gates({"perplexity": 3.0}, [], {"perplexity": 11.9}, 0.5).passed
    assert not evaluate_gates({"perplexity": 12.5}, [], {"perplexity": 11.9}, 0.5).passed


def test_baseline_without_regression_allowed():
    assert evaluate_gates({"f1": 0.5}, [], {"f1": 0.5}).passed
    assert not evaluate_gates({"f1": 0.49}, [], {"f1": 0.5}).passed
    assert not evaluate_gates({"perplexity": 10.01}, [], {"perplexity": 10.0}).passed


def test_baseline_boundary_survives_float_rounding():
    # 0.1 + 0.7 is 0.7999999999999999 in binary floating point, but 0.8 is on the boundary
    assert 0.1 + 0.7 < 0.8
    assert evaluate_gates({"perplexity": 0.8}, [], {"perplexity": 0.1}, 0.7).passed


def test_baseline_compares_only_shared_metrics():
    verdict = evaluate_gates({"rougeL": 0.4, "f1": 0.1}, [], {"rougeL": 0.3, "bleu": 0.9})
    assert [(r.metric, r.kind) for r in verdict.results] == [("rougeL", "baseline")]
    assert verdict.passed


def test_baseline_nan_fails_on_either_side():
    assert not evaluate_gates({"f1": NAN}, [], {"f1": 0.5}, 0.1).passed
    verdict = evaluate_gates({"f1": 0.5}, [], {"f1": NAN}, 0.1)
    assert not verdict.passed
    assert verdict.failures[0].describe() == "baseline f1: the baseline's value is not a number (NaN)"


@pytest.mark.parametrize("bad", [-0.1, NAN])
def test_negative_or_nan_regression_is_refused(bad: float):
    with pytest.raises(ValueError, match="max_regression"):
        evaluate_gates({"f1": 0.5}, [], {"f1": 0.5}, bad)


@pytest.mark.parametrize(("metrics", "gates", "baseline", "regression", "expected"), [
    ({"rougeL": 0.21}, [gate("rougeL", min=0.35)], None, 0.0, ["gate rougeL 0.21 < 0.35"]),
    ({"rougeL": 0.41}, [gate("rougeL", min=0.35)], None, 0.0, ["gate rougeL 0.41 >= 0.35"]),
    ({"perplexity": 12.4}, [gate("perplexity", max=10)], None, 0.0, ["gate perplexity 12.4 > 10"]),
    ({"perplexity": 9.0}, [gate("perplexity", max=10)], None, 0.0, ["gate perplexity 9 <= 10"]),
    ({"perplexity": 12.4}, [], {"perplexity": 11.9}, 0.5, ["baseline perplexity 12.4 <= 11.9 + 0.5"]),
    ({"perplexity": 12.9}, [], {"perplexity": 11.9}, 0.5, ["baseline perplexity 12.9 > 11.9 + 0.5"]),
    ({"rougeL": 0.3}, [], {"rougeL": 0.41}, 0.05, ["baseline rougeL 0.3 < 0.41 - 0.05"]),
    ({"rougeL": 0.4}, [], {"rougeL": 0.41}, 0.05, ["baseline rougeL 0.4 >= 0.41 - 0.05"]),
    ({"f1": 0.4}, [], {"f1": 0.41}, 0.0, ["baseline f1 0.4 < 0.41"]),
    # four significant digits, no trailing zeros
    ({"perplexity": 12.345678}, [gate("perplexity", max=20)], None, 0.0, ["gate perplexity 12.35 <= 20"]),
    ({"bleu": 0.123456}, [gate("bleu", min=0.1)], None, 0.0, ["gate bleu 0.1235 >= 0.1"]),
    ({"perplexity": math.inf}, [gate("perplexity", max=10)], None, 0.0, ["gate perplexity inf > 10"]),
    # more digits where four would print a failing value equal to its bound
    ({"rougeL": 0.34996}, [gate("rougeL", min=0.35)], None, 0.0, ["gate rougeL 0.34996 < 0.35"]),
])
def test_describe(metrics, gates, baseline, regression, expected):
    assert [r.describe() for r in evaluate_gates(metrics, gates, baseline, regression).results] == expected


def test_summary_passed():
    verdict = evaluate_gates({"rougeL": 0.5, "perplexity": 8.0},
                             [gate("rougeL", min=0.35), gate("perplexity", max=10)])
    assert verdict.summary() == "passed (2 gates)"
    verdict = evaluate_gates({"rougeL": 0.5}, [gate("rougeL", min=0.35, max=0.9)], {"rougeL": 0.45}, 0.1)
    assert verdict.summary() == "passed (2 gates, 1 baseline metric)"


def test_summary_failed_lists_each_failure_once():
    verdict = evaluate_gates({"rougeL": 0.21, "perplexity": 12.4},
                             [gate("rougeL", min=0.35), gate("f1", min=0.2, max=0.9),
                              gate("perplexity", max=10)])
    assert verdict.summary() == ("failed: gate rougeL 0.21 < 0.35; gate f1: not computed; "
                                 "gate perplexity 12.4 > 10")


def test_verdict_is_plain_data():
    result = GateResult("f1", 0.5, 0.4, "min", True)
    assert Verdict((result,)) == Verdict((GateResult("f1", 0.5, 0.4, "min", True),))
    with pytest.raises(AttributeError):
        result.passed = False  # type: ignore[misc]


def test_each_check_says_how_its_value_must_compare_with_its_bound():
    checks = evaluate_gates({"rougeL": 0.2, "perplexity": 20.0}, [gate("rougeL", min=0.35),
                                                                  gate("perplexity", max=10)],
                            {"rougeL": 0.4, "perplexity": 11.9}, 0.05).failures
    assert [(c.metric, c.kind, c.operator) for c in checks] == [
        ("rougeL", "min", ">="), ("perplexity", "max", "<="),
        ("rougeL", "baseline", ">="), ("perplexity", "baseline", "<=")]


def test_a_recorded_verdict_is_checked_again_from_the_run_metrics():
    logged = {"rougeL": 0.21, "perplexity": 13.0, "baseline_rougeL": 0.2, "baseline_perplexity": 11.9}
    again = verdict_of_run(logged, [gate("rougeL", min=0.35)], max_regression=0.5)
    assert [(c.metric, c.kind, c.value, c.bound) for c in again.failures] == [
        ("rougeL", "min", 0.21, 0.35), ("perplexity", "baseline", 13.0, pytest.approx(12.4))]
    assert again.summary() == "failed: gate rougeL 0.21 < 0.35; baseline perplexity 13 > 11.9 + 0.5"
    # Without a baseline in the spec the logged baseline metrics are not compared.
    assert len(verdict_of_run(logged, [gate("rougeL", min=0.35)], max_regression=None).failures) == 1


def test_fail_on_contamination_fails_a_verdict_and_says_how_many_rows():
    from reconciler.plan.gates import contamination_result

    clean = Verdict((contamination_result(0.0, 36, "test"),))
    assert clean.passed and clean.summary() == "passed (0 gates, no contamination)"
    dirty = Verdict((*evaluate_gates({"rougeL": 0.5}, [gate("rougeL", min=0.35)]).results,
                     contamination_result(3.0, 36, "test")))
    assert not dirty.passed
    assert dirty.summary() == "failed: contamination: 3 of 36 test rows appear in training data"
    assert dirty.failures[0].operator == "<="
    # Never counted (a run that logged no count) fails: a gate never passes for want of a number.
    assert not contamination_result(None, None, "test").passed
    assert contamination_result(None, None, "test").describe() == "contamination: not counted"


def test_the_contamination_check_is_replayed_from_the_logged_metrics():
    logged = {"rougeL": 0.5, "contaminated_rows": 3.0, "contaminated_fraction": 3 / 36,
              "contamination_checked_rows": 36.0}
    assert verdict_of_run(logged, [gate("rougeL", min=0.35)], None).passed  # failOnContamination off
    replayed = verdict_of_run(logged, [gate("rougeL", min=0.35)], None, contamination_split="test")
    assert [r.describe() for r in replayed.failures] == [
        "contamination: 3 of 36 test rows appear in training data"]
    assert verdict_of_run({**logged, "contaminated_rows": 0.0}, [], None, "test").passed
