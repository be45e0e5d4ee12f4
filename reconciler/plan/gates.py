"""Gate verdicts: do an Evaluation's metrics meet its gates and stay close enough to its baseline?

Pure (standard library and the specs layer only), because both the planner, explaining why a model
version may not be deployed, and the runtime, recording a verdict after scoring, use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from reconciler.specs.evaluation import lower_is_better

if TYPE_CHECKING:
    from reconciler.specs.evaluation import Gate

# Bounds are written as decimals in YAML and baselines are sums such as 11.9 + 0.5, which binary
# floating point cannot always represent exactly: a value equal to its bound up to rounding passes.
_REL_TOL = 1e-9
_ABS_TOL = 1e-12


def _fmt(value: float, digits: int = 4) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _digits_to_tell_apart(a: float, b: float) -> int:
    """Four significant digits, or more where four would print two different numbers the same."""
    digits = 4
    while digits < 17 and a != b and _fmt(a, digits) == _fmt(b, digits):
        digits += 1
    return digits


def _at_least(value: float, bound: float) -> bool:
    return value >= bound or math.isclose(value, bound, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def _at_most(value: float, bound: float) -> bool:
    return value <= bound or math.isclose(value, bound, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


@dataclass(frozen=True)
class GateResult:
    """One check of one metric: a gate's min or max bound, or the comparison with the baseline.

    `bound` is the number the value was compared with; for a baseline check that is the baseline's
    value moved by `max_regression` in the metric's worse direction, and `baseline` keeps the
    baseline's own value for the message.
    """

    metric: str
    value: float | None
    bound: float
    kind: Literal["min", "max", "baseline", "compare", "contamination"]
    passed: bool
    baseline: float | None = None
    max_regression: float = 0.0
    comparison: PairedResult | None = None  # kind "compare": the paired interval it was decided on
    champion: str = ""  # kind "compare": "serving" or "baseline"
    skipped: str = ""  # why nothing was compared or judged (no version serves yet): passes
    checked_rows: int | None = None  # kind "contamination": the rows compared with the training data
    split: str | None = None  # kind "contamination": the split they come from

    @property
    def operator(self) -> str:
        """How the value must compare with `bound` to pass: ">=" or "<="."""
        if self.kind in ("baseline", "compare"):
            return "<=" if lower_is_better(self.metric) else ">="
        return ">=" if self.kind == "min" else "<="

    def _describe_contamination(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "contamination: not counted"
        rows = f" of {self.checked_rows}" if self.checked_rows is not None else ""
        split = f" {self.split}" if self.split else ""
        return f"contamination: {int(self.value)}{rows}{split} rows appear in training data"

    def describe(self) -> str:
        """One line for a plan or a log, e.g. "gate rougeL 0.21 < 0.35"."""
        if self.kind == "contamination":
            return self._describe_contamination()
        if self.kind == "compare":
            return self._describe_comparison()
        label = "baseline" if self.kind == "baseline" else "gate"
        if self.skipped:
            return f"gate {self.metric}: not judged, {self.skipped}"
        if self.value is None:
            return f"{label} {self.metric}: not computed"
        if math.isnan(self.value):
            return f"{label} {self.metric}: not a number (NaN)"
        if self.kind == "baseline" and self.baseline is not None and math.isnan(self.baseline):
            return f"baseline {self.metric}: the baseline's value is not a number (NaN)"
        digits = _digits_to_tell_apart(self.value, self.bound)
        value = _fmt(self.value, digits)
        if self.kind == "min":
            return f"gate {self.metric} {value} {'>=' if self.passed else '<'} {_fmt(self.bound, digits)}"
        if self.kind == "max":
            return f"gate {self.metric} {value} {'<=' if self.passed else '>'} {_fmt(self.bound, digits)}"
        lower = lower_is_better(self.metric)
        relation = ("<=" if self.passed else ">") if lower else (">=" if self.passed else "<")
        reference = _fmt(self.baseline if self.baseline is not None else self.bound, digits)
        if self.max_regression:
            sign = "+" if lower else "-"
            reference += f" {sign} {_fmt(self.max_regression, digits)}"
        return f"baseline {self.metric} {value} {relation} {reference}"

    def _describe_comparison(self) -> str:
        """E.g. "exact_match 0.81 vs serving 0.78: +0.03 [-0.02, +0.08] (n=200, 95%) passes
        notWorseThan -0.02"; the bound is -margin (+margin where lower is better)."""
        if self.skipped:
            return f"{self.metric} vs {self.champion}: not compared, {self.skipped}"
        c = self.comparison
        if c is None or any(math.isnan(x) for x in (c.candidate, c.champion, c.low, c.high)):
            return f"{self.metric} vs {self.champion}: not computed"
        verb = "passes" if self.passed else "fails"
        p_value = f", McNemar p={c.p_value:.2g}" if c.p_value is not None else ""
        return (f"{self.metric} {_fmt(c.candidate)} vs {self.champion} {_fmt(c.champion)}: "
                f"{_signed(c.difference)} [{_signed(c.low)}, {_signed(c.high)}] "
                f"(n={c.rows}, {c.confidence:.0%}{p_value}) {verb} notWorseThan {_signed(self.bound)}")


@dataclass(frozen=True)
class PairedResult:
    """What a comparison gate was decided on: candidate - champion on the same rows, its
    confidence interval and, for 0/1 metrics, McNemar's exact p-value."""

    rows: int
    candidate: float
    champion: float
    low: float
    high: float
    confidence: float
    p_value: float | None = None
    difference_sd: float | None = None  # of the per-row differences: the plan's detectable effect

    @property
    def difference(self) -> float:
        return self.candidate - self.champion


def _signed(value: float) -> str:
    return f"{value:+.3g}" if value else "0"


def comparison_result(gate: Gate, paired: PairedResult | None, skipped: str = "") -> GateResult:
    """A comparison gate's verdict: the candidate may be worse than the champion by at most
    `margin`, at the gate's confidence. It passes when the interval's worse end is within that
    (for a higher-is-better metric, low >= -margin; for perplexity, high <= +margin); a
    comparison that could not be made because nothing serves yet passes, and says so."""
    champion = gate.not_worse_than or ""
    lower = lower_is_better(gate.metric)
    bound = gate.margin if lower else -gate.margin
    if paired is None:
        return GateResult(gate.metric, None, bound, "compare", bool(skipped), champion=champion,
                          skipped=skipped)
    worst = paired.high if lower else paired.low
    within = _at_most(worst, bound) if lower else _at_least(worst, bound)
    passed = not math.isnan(worst) and within
    return GateResult(gate.metric, paired.difference, bound, "compare", passed, comparison=paired,
                      champion=champion)


COMPARE_PREFIX = "compare/"
"""A comparison gate's figures on the Evaluation's run: `compare/<champion>/<metric>/<figure>`."""
_FIGURES = ("rows", "candidate", "champion", "low", "high", "confidence", "p_value", "difference_sd")
SKIPPED_FIGURE = "skipped"  # 1.0 when nothing served: the plan re-derives "not compared"


def comparison_metrics(champion: str, metric: str, paired: PairedResult | None) -> dict[str, float]:
    """The run metrics a comparison gate is re-derived from (`verdict_of_run`)."""
    prefix = f"{COMPARE_PREFIX}{champion}/{metric}/"
    if paired is None:
        return {prefix + SKIPPED_FIGURE: 1.0}
    figures = {name: getattr(paired, name) for name in _FIGURES}
    return {prefix + name: float(value) for name, value in figures.items() if value is not None}


def _paired_from_run(metrics: Mapping[str, float], champion: str, metric: str) -> PairedResult | None:
    prefix = f"{COMPARE_PREFIX}{champion}/{metric}/"
    if prefix + "rows" not in metrics:
        return None
    return PairedResult(int(metrics[prefix + "rows"]), metrics[prefix + "candidate"],
                        metrics[prefix + "champion"], metrics[prefix + "low"], metrics[prefix + "high"],
                        metrics[prefix + "confidence"], metrics.get(prefix + "p_value"),
                        metrics.get(prefix + "difference_sd"))


@dataclass(frozen=True)
class Verdict:
    """Every check of one Evaluation; it passes when all of them do (so when there are none)."""

    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[GateResult, ...]:
        return tuple(result for result in self.results if not result.passed)

    def summary(self) -> str:
        """One line, e.g. "passed (2 gates)" or "failed: gate rougeL 0.21 < 0.35; ..." (a bound is a gate)."""
        if not self.passed:
            # A missing metric gated by both min and max fails twice with the same message: say it once.
            messages = dict.fromkeys(result.describe() for result in self.failures)
            return "failed: " + "; ".join(messages)
        gates = sum(1 for result in self.results if result.kind in ("min", "max"))
        baseline = sum(1 for result in self.results if result.kind == "baseline")
        counts = [f"{gates} gate{'' if gates == 1 else 's'}"]
        if baseline:
            counts.append(f"{baseline} baseline metric{'' if baseline == 1 else 's'}")
        if any(result.kind == "contamination" for result in self.results):
            counts.append("no contamination")
        # a comparison is worth reading even when it passes: the interval says how sure it is
        compared = [result.describe() for result in self.results
                    if result.kind == "compare" or result.skipped]
        return f"passed ({'; '.join([', '.join(counts), *compared])})"


JUDGE_PREFIX = "judge/"
JUDGE_SKIPPED = "judge/skipped"
"""Logged 1.0 by a pairwise judge that had no champion to compare with: its gates pass, saying so."""
NO_CHAMPION_TO_JUDGE = "no champion to compare with (no version serves yet and no baseline)"


def _gate_results(metrics: Mapping[str, float], gate: Gate) -> list[GateResult]:
    raw = metrics.get(gate.metric)
    value = None if raw is None else float(raw)
    skipped = gate.metric.startswith(JUDGE_PREFIX) and bool(metrics.get(JUDGE_SKIPPED))
    results = []
    for kind, bound, within in (("min", gate.min, _at_least), ("max", gate.max, _at_most)):
        if bound is None:
            continue
        if skipped:  # like a comparison gate while nothing serves: nothing to judge against yet
            results.append(GateResult(gate.metric, None, float(bound), kind, True,
                                      skipped=NO_CHAMPION_TO_JUDGE))
            continue
        passed = value is not None and not math.isnan(value) and within(value, float(bound))
        results.append(GateResult(gate.metric, value, float(bound), kind, passed))
    return results


def _baseline_result(metric: str, value: float, baseline: float, max_regression: float) -> GateResult:
    if lower_is_better(metric):
        bound = baseline + max_regression
        passed = _at_most(value, bound)
    else:
        bound = baseline - max_regression
        passed = _at_least(value, bound)
    passed = passed and not math.isnan(value) and not math.isnan(baseline)
    return GateResult(metric, value, bound, "baseline", passed, baseline=baseline,
                      max_regression=max_regression)


BASELINE_PREFIX = "baseline_"
"""An Evaluation's run logs the baseline's metrics beside its own, as `baseline_<metric>`."""
CONTAMINATED_ROWS = "contaminated_rows"
CONTAMINATED_FRACTION = "contaminated_fraction"
CONTAMINATION_CHECKED_ROWS = "contamination_checked_rows"
"""What an Evaluation's run logs of its contamination check (reconciler/contamination.py)."""


def contamination_result(contaminated: float | None, checked_rows: int | None, split: str) -> GateResult:
    """failOnContamination as a check: no scored row may appear in the training data. A count
    that is missing (never computed) fails, as a missing gated metric does."""
    passed = contaminated is not None and not math.isnan(contaminated) and contaminated == 0
    return GateResult(CONTAMINATED_ROWS, contaminated, 0.0, "contamination", passed,
                      checked_rows=checked_rows, split=split)


def verdict_of_run(metrics: Mapping[str, float], gates: Iterable[Gate],
                   max_regression: float | None, contamination_split: str | None = None) -> Verdict:
    """The verdict again from what an Evaluation's run logged, for the checks behind a recorded one.

    `max_regression` is None when the Evaluation has no baseline; `contamination_split` is the
    split scored when the Evaluation fails on contamination, else None.
    """
    gates = tuple(gates)
    own = {name: value for name, value in metrics.items()
           if not name.startswith((BASELINE_PREFIX, COMPARE_PREFIX))}
    baseline = None if max_regression is None else {
        name.removeprefix(BASELINE_PREFIX): value for name, value in metrics.items()
        if name.startswith(BASELINE_PREFIX)}
    compared = {}
    for gate in gates:
        if gate.compares:
            champion = gate.not_worse_than or ""
            skipped = metrics.get(f"{COMPARE_PREFIX}{champion}/{gate.metric}/{SKIPPED_FIGURE}")
            compared[(champion, gate.metric)] = (
                _paired_from_run(metrics, champion, gate.metric),
                NOTHING_SERVES if skipped else "")
    verdict = evaluate_gates(own, gates, baseline, max_regression or 0.0, compared)
    if contamination_split is None:
        return verdict
    checked = metrics.get(CONTAMINATION_CHECKED_ROWS)
    result = contamination_result(metrics.get(CONTAMINATED_ROWS),
                                  None if checked is None else int(checked), contamination_split)
    return Verdict((*verdict.results, result))


NOTHING_SERVES = "no version serves yet"


def evaluate_gates(metrics: Mapping[str, float], gates: Iterable[Gate],
                   baseline_metrics: Mapping[str, float] | None = None,
                   max_regression: float = 0.0,
                   compared: Mapping[tuple[str, str], tuple[PairedResult | None, str]] | None = None,
                   ) -> Verdict:
    """Check `metrics` against each gate bound and, when given, against the baseline's metrics.

    A gated metric that is missing or NaN fails: a gate must never pass for want of a number. The
    baseline is compared on every metric both sides computed; the model may be worse by at most
    `max_regression` in the metric's own direction (for perplexity, higher is worse). A NaN on either
    side of that comparison fails too. A comparison gate (`notWorseThan`) is decided on its paired
    interval in `compared`, by (champion, metric): (interval, why it is missing); missing without a
    reason, it fails as not computed.
    """
    max_regression = float(max_regression)
    if math.isnan(max_regression) or max_regression < 0:
        raise ValueError(f"max_regression must be 0 or more, not {max_regression}")
    results: list[GateResult] = []
    for gate in gates:
        if gate.compares:
            paired, skipped = (compared or {}).get((gate.not_worse_than or "", gate.metric), (None, ""))
            results.append(comparison_result(gate, paired, skipped))
        results += _gate_results(metrics, gate)
    if baseline_metrics is not None:
        for metric, raw in metrics.items():
            reference = baseline_metrics.get(metric)
            if raw is not None and reference is not None:
                results.append(_baseline_result(metric, float(raw), float(reference), max_regression))
    return Verdict(tuple(results))
