"""The Evaluation job's contamination check: the scored rows against the train splits of the
datasets the FineTune scored learned from (`job.training_datasets`), counted with
`reconciler.contamination`, logged on the run, and a check of the verdict when the spec sets
`failOnContamination`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.contamination import Contamination, find_contamination, not_checked
from reconciler.jobs.jobfile import BaseModelRef, JobFile, PreparedDataset
from reconciler.plan.gates import (
    CONTAMINATED_FRACTION,
    CONTAMINATED_ROWS,
    CONTAMINATION_CHECKED_ROWS,
    Verdict,
    contamination_result,
)
from reconciler.specs.evaluation import EvaluationSpec

ARTIFACT = "contamination.json"


def _train_rows(dataset: PreparedDataset) -> Iterator[Mapping[str, Any]]:
    from reconciler.runtime.dataset import load_split

    rows = load_split(dataset.location, "train")
    yield from rows[: dataset.max_samples] if dataset.max_samples is not None else rows


def count_contamination(job: JobFile, spec: EvaluationSpec,
                        rows: Sequence[Mapping[str, Any]]) -> Contamination:
    """The scored rows found in the training data, or why they could not be compared."""
    split = spec.dataset.split
    if isinstance(job.model, BaseModelRef):
        return not_checked(split, len(rows), "the model scored is a base model; tuneops does not "
                                             "know its training data")
    if not job.training_datasets:
        return not_checked(split, len(rows), "the job file lists no training datasets")
    training = ((dataset.name, dataset.schema_type, _train_rows(dataset))
                for dataset in job.training_datasets or ())
    return find_contamination(rows, job.datasets[0].schema_type, split, training)


def check_contamination(job: JobFile, spec: EvaluationSpec, rows: Sequence[Mapping[str, Any]], run: Any,
                        verdict: Verdict) -> tuple[Verdict, dict[str, Any]]:
    """Count, log on the run (metrics and `contamination.json`), and add the check to the verdict
    when `failOnContamination` is set; returns the verdict and the `contamination` section of
    results.json."""
    found = count_contamination(job, spec, rows)
    section = found.to_json()
    if found.skipped is None:
        run.log_metrics({CONTAMINATED_ROWS: float(found.contaminated),
                         CONTAMINATED_FRACTION: found.fraction,
                         CONTAMINATION_CHECKED_ROWS: float(found.checked)})
        with tempfile.TemporaryDirectory(prefix="tuneops-contamination-") as folder:
            path = Path(folder) / ARTIFACT
            path.write_text(json.dumps(section, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            run.log_artifact(path)
    if spec.fail_on_contamination:
        counted = None if found.skipped else float(found.contaminated)
        verdict = Verdict((*verdict.results, contamination_result(counted, found.checked, found.split)))
    return verdict, section
