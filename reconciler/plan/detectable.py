"""The smallest effect an Evaluation's split can see: a comparison gate whose margin is below it
decides on noise, and the plan says so.

For a paired comparison of n rows whose per-row differences have standard deviation sd, the
smallest true difference a test at the gate's confidence detects with probability `power` is

    MDE = (z_(1 - alpha/2) + z_power) * sd / sqrt(n),   alpha = 1 - confidence

the normal-approximation power formula for a paired (one-sample) test (Cohen 1988, ch. 2;
Chow, Shao & Wang, "Sample Size Calculations in Clinical Research", 3.1), used for NLP test sets
by Card et al. 2020, "With Little Power Comes Great Responsibility". The interval the gate reads
is two-sided at `confidence`, so its lower end is a one-sided test at alpha/2.

sd is, best first: what the Evaluation's last comparison measured (`compare/.../difference_sd`);
else 0.5 for metrics reported in [0, 1]: the largest spread one model's per-row scores can have
(a coin flip's), and the spread of the difference when the two models' rows correlate at 0.5,
as paired evaluations of two versions of one model do at least. Perplexity has no such bound
and is checked only once a comparison recorded its spread. Pure: the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from statistics import NormalDist

from reconciler.plan.gates import COMPARE_PREFIX
from reconciler.specs.evaluation import METRIC_RANGES, TASK_METRIC_PREFIX, EvaluationResource
from reconciler.specs.problems import Problem, Severity
from reconciler.specs.rules.registry import problem
from reconciler.specs.specset import SpecSet
from reconciler.state import ActualState

POWER = 0.8
DEFAULT_SD = 0.5
SPREAD_FIGURE = "difference_sd"


def minimum_detectable_effect(rows: int, sd: float, confidence: float, power: float = POWER) -> float:
    """The smallest true difference detected with probability `power` (see the module docstring)."""
    if rows < 2:
        return math.inf
    normal = NormalDist()
    z = normal.inv_cdf(1 - (1 - confidence) / 2) + normal.inv_cdf(power)
    return z * sd / math.sqrt(rows)


def split_rows(specs: SpecSet, state: ActualState | None) -> dict[tuple[str, str], tuple[int, str]]:
    """Rows per (Dataset, split), with where the count comes from: the Dataset's newest run
    (`rows_<split>`, after cleaning), else a local file's rows times the split's share."""
    from reconciler.sizing.dataset_rows import local_rows
    from reconciler.specs.dataset import DatasetResource

    found: dict[tuple[str, str], tuple[int, str]] = {}
    for loaded in specs.of_kind("Dataset"):
        dataset = loaded.resource
        assert isinstance(dataset, DatasetResource)
        name = dataset.metadata.name
        newest = state.newest("Dataset", name) if state is not None and state.read else None
        counted = None
        for split in ("train", "validation", "test"):
            if newest is not None and f"rows_{split}" in newest.metrics:
                found[(name, split)] = (int(newest.metrics[f"rows_{split}"]), "as prepared")
                continue
            if counted is None:
                counted = local_rows(dataset, loaded.path.parent, specs) or -1
            if counted > 0:
                found[(name, split)] = (int(counted * dataset.spec.split.ratio(split)),
                                        "counted in the local file, before cleaning")
    return found


def recorded_spreads(state: ActualState | None, evaluation: str) -> Mapping[str, float]:
    """`compare/<champion>/<metric>/difference_sd` of the Evaluation's newest run that has them."""
    if state is None or not state.read:
        return {}
    for run in state.history.get(("Evaluation", evaluation), ()):
        spreads = {name: value for name, value in run.metrics.items()
                   if name.startswith(COMPARE_PREFIX) and name.endswith("/" + SPREAD_FIGURE)}
        if spreads:
            return spreads
    return {}


def margin_warnings(specs: SpecSet, state: ActualState | None) -> Iterator[Problem]:
    """A warning for each comparison gate whose margin is below what its split can detect."""
    rows = split_rows(specs, state)
    for loaded in specs.of_kind("Evaluation"):
        evaluation = loaded.resource
        assert isinstance(evaluation, EvaluationResource)
        s = evaluation.spec
        counted = rows.get((s.dataset.name, s.dataset.split))
        if counted is None:
            continue
        n = min(counted[0], s.dataset.max_samples or counted[0])
        spreads = recorded_spreads(state, evaluation.metadata.name)
        for index, gate in enumerate(s.gates):
            if not gate.compares or gate.metric.startswith(TASK_METRIC_PREFIX):
                continue  # a named benchmark scores its own documents, not this split's rows
            recorded = spreads.get(f"{COMPARE_PREFIX}{gate.not_worse_than}/{gate.metric}/{SPREAD_FIGURE}")
            low, high = METRIC_RANGES.get(gate.metric, (-math.inf, math.inf))
            if recorded is None and (low, high) != (0.0, 1.0):
                continue  # no bound on its spread until a comparison measured it
            sd = recorded if recorded is not None else DEFAULT_SD
            detectable = minimum_detectable_effect(n, sd, gate.confidence)
            if gate.margin >= detectable:
                continue
            field_name = "margin" if "margin" in gate.model_fields_set else "notWorseThan"
            where = ("spec", "gates", index, field_name)
            basis = "the spread the last comparison measured" if recorded is not None else "sd 0.5"
            yield problem(
                loaded, Severity.WARNING, "margin-below-detectable",
                f"gate {gate.metric} margin {gate.margin:g} is below what {n} {s.dataset.split} rows can "
                f"detect (about {detectable:.2g} at {POWER:.0%} power, {gate.confidence:.0%} confidence, "
                f"{basis}; {counted[1]}): the gate may pass or fail on noise",
                where, hint=f"raise maxSamples or split.{s.dataset.split}, or the margin")

