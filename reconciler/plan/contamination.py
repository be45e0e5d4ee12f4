"""The plan's contamination warning: an Evaluation whose rows appear in the training data of
the FineTune it scores, named at its `spec.dataset` line with the count and what to do.

Two sources, best first: the count the Evaluation's run logged at its current fingerprint
(exact and 13-gram, every scored row), else, before anything is evaluated, the exact prompt
matches found in the `row_hashes.json` the Dataset jobs wrote beside their splits (13-gram
overlap needs the rows themselves, which the planner does not read). Pure: the caller passes
the function that reads those hashes, so this module does no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from reconciler.contamination import exact_overlap
from reconciler.fingerprint import FingerprintInput
from reconciler.plan.gates import CONTAMINATED_ROWS, CONTAMINATION_CHECKED_ROWS
from reconciler.specs.base import ResourceId
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.problems import Problem, Severity
from reconciler.specs.rules.registry import problem
from reconciler.specs.specset import SpecSet
from reconciler.state import ActualState

ReadHashes = Callable[[str], Mapping[str, list[str]] | None]
"""A prepared dataset's folder -> its prompt hashes per split, or None (see contamination.py)."""


def _trained_on(specs: SpecSet, fine_tune: str) -> dict[str, int | None]:
    """Dataset name -> the training rows used (None: all), along the fromFineTune chain."""
    found: dict[str, int | None] = {}
    seen: set[str] = set()
    current: str | None = fine_tune
    while current and current not in seen:
        seen.add(current)
        resource = specs.resource(ResourceId("FineTune", current), FineTuneResource)
        if resource is None:
            break
        for dataset in resource.spec.datasets:
            rows = dataset.max_samples
            if dataset.name in found:  # trained on twice along the chain: the more rows of the two
                earlier = found[dataset.name]
                rows = None if rows is None or earlier is None else max(rows, earlier)
            found[dataset.name] = rows
        current = resource.spec.from_fine_tune
    return found


def _recorded(actual: ActualState, name: str, fingerprint: str) -> tuple[int, int, str] | None:
    run = actual.built_run("Evaluation", name, fingerprint)
    if run is None or CONTAMINATED_ROWS not in run.metrics:
        return None
    checked = int(run.metrics.get(CONTAMINATION_CHECKED_ROWS, 0))
    return int(run.metrics[CONTAMINATED_ROWS]), checked, f"counted by its run {run.run_id[:8]}"


def _prepared(inputs: Mapping[ResourceId, FingerprintInput], actual: ActualState,
              dataset: str, read_hashes: ReadHashes) -> Mapping[str, list[str]] | None:
    rid = ResourceId("Dataset", dataset)
    if rid not in inputs:
        return None
    run = actual.built_run("Dataset", dataset, inputs[rid].fingerprint)
    if run is None or not run.output or run.output_missing:
        return None
    return read_hashes(run.output)


def _from_hashes(specs: SpecSet, inputs: Mapping[ResourceId, FingerprintInput], actual: ActualState,
                 evaluation: EvaluationResource, read_hashes: ReadHashes) -> tuple[int, int, str] | None:
    data = evaluation.spec.dataset
    evaluated = _prepared(inputs, actual, data.name, read_hashes)
    if evaluated is None or not isinstance(evaluated.get(data.split), list):
        return None
    rows = evaluated[data.split][: data.max_samples] if data.max_samples else evaluated[data.split]
    trained: list[str] = []
    for name, max_samples in _trained_on(specs, evaluation.spec.model.fine_tune or "").items():
        hashes = _prepared(inputs, actual, name, read_hashes)
        if hashes is None or not isinstance(hashes.get("train"), list):
            return None  # a training dataset not built yet (or prepared before row hashes): unknown
        trained += hashes["train"][:max_samples] if max_samples is not None else hashes["train"]
    return exact_overlap(rows, trained), len(rows), "exact prompt matches in the prepared datasets"


def contamination_warnings(specs: SpecSet, inputs: Mapping[ResourceId, FingerprintInput],
                           actual: ActualState, read_hashes: ReadHashes) -> Iterator[Problem]:
    """A warning at `spec.dataset` of each Evaluation of a FineTune whose scored rows are known to
    be in its training data."""
    if not actual.read:
        return
    for loaded in specs.of_kind("Evaluation"):
        evaluation = loaded.resource
        assert isinstance(evaluation, EvaluationResource)
        spec = evaluation.spec
        if not spec.model.fine_tune or loaded.id not in inputs:
            continue
        known = (_recorded(actual, loaded.id.name, inputs[loaded.id].fingerprint)
                 or _from_hashes(specs, inputs, actual, evaluation, read_hashes))
        if known is None or known[0] == 0:
            continue
        count, checked, how = known
        at_least = "" if how.startswith("counted") else "at least "
        message = (f"contamination: {at_least}{count} of {checked} {spec.dataset.split} rows of Dataset "
                   f"'{spec.dataset.name}' appear in the training data of FineTune "
                   f"'{spec.model.fine_tune}' ({how})")
        hint = f"deduplicate: remove those rows from '{spec.dataset.name}' or from the training data"
        if not at_least:
            hint += "; the evaluation's results.json and its MLflow run list examples"
        hint += ("; failOnContamination is on: the evaluation fails while they remain"
                 if spec.fail_on_contamination else
                 "; or set failOnContamination: true to block deployment while they remain")
        yield problem(loaded, Severity.WARNING, "contamination", message, ("spec", "dataset"), key=True,
                      hint=hint)
