"""An evaluation split that repeats training rows: `tuneops plan` says so before anything is
trained or evaluated, from the row hashes the Dataset jobs wrote, at the Evaluation's
`spec.dataset` line. (What the Evaluation job records in MLflow:
tests/e2e/test_runtime_pipeline.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.reconcile_support import SpecRepo
from tests.support.runtime_support import needs_training

EXAM = """\
apiVersion: tuneops.dev/v1alpha1
kind: Dataset
metadata:
  name: fruit-exam
spec:
  source: file://data/fruit-exam.jsonl
  schema:
    type: instruction
  split:  # every row in one split (train must have some): the exam's own, which trains nothing
    train: 1
    validation: 0
    test: 0
---
apiVersion: tuneops.dev/v1alpha1
kind: Evaluation
metadata:
  name: fruit-exam-quality
spec:
  model:
    fineTune: fruit-sft
  dataset:
    name: fruit-exam
    split: train
  metrics: [perplexity]
"""


@needs_training
@pytest.mark.slow
def test_plan_warns_of_evaluation_rows_found_in_the_training_data(tmp_path: Path, mlflow_server) -> None:
    import pyarrow.parquet as pq

    repo = SpecRepo(tmp_path / "quickstart", mlflow_server.uri)
    applied = repo.tuneops("apply", ".", "--yes", "--target", "Dataset/fruit-colors")
    assert applied.exit_code == 0, applied.output
    (train,) = (repo.root / ".tuneops" / "store" / "datasets" / "fruit-colors").glob("*/train.parquet")
    trained = pq.read_table(train).to_pylist()
    exam = [dict(trained[0], instruction=trained[0]["instruction"].upper()), trained[1],
            {"instruction": "What color is a dragonfruit?", "input": "", "output": "pink"}]
    (repo.root / "data" / "fruit-exam.jsonl").write_text("".join(json.dumps(row) + "\n" for row in exam))
    (repo.root / "exam.yaml").write_text(EXAM)
    repo.commit("an exam that repeats two training questions")
    applied = repo.tuneops("apply", ".", "--yes", "--target", "Dataset/fruit-exam")
    assert applied.exit_code == 0, applied.output

    planned = repo.tuneops("plan", ".")
    assert planned.exit_code == 0, planned.output
    line = next(line for line in planned.stdout.splitlines() if "contamination" in line)
    assert line.startswith("exam.yaml:21:3 warning spec.dataset: contamination: at least 2 of 3 train "
                           "rows of Dataset 'fruit-exam' appear in the training data of FineTune "
                           "'fruit-sft' (exact prompt matches in the prepared datasets) (deduplicate"), \
        planned.stdout
    assert "failOnContamination: true" in line
    assert [w for w in repo.plan()["warnings"] if "contamination" in w] == [line]
    markdown = repo.tuneops("plan", ".", "--format", "markdown")
    assert "**Warnings**" in markdown.stdout and "at least 2 of 3 train rows" in markdown.stdout
