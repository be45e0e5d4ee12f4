"""The job file's `pruning` section as the sweep driver writes it: camelCase, read back whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.jobs.jobfile import JobFile, JobFileError, MlflowTarget, PruningJob, read_job_file


def _job(**update: object) -> JobFile:
    job = JobFile(kind="FineTune", name="fruit-lr-3", fingerprint="b" * 64, spec={"baseModel": "tiny"},
                  storage_root="/store", mlflow=MlflowTarget(tracking_uri="sqlite:///x.db"))
    return job.model_copy(update=update)


def test_the_pruning_section_round_trips_through_the_job_file(tmp_path: Path) -> None:
    pruning = PruningJob(metric="eval_loss", direction="minimize", min_steps=20, min_trials=3,
                         history=(((10, 2.5), (20, 1.9)), ((10, 2.2),)), trial="fruit-lr #3")
    path = tmp_path / "job.json"
    path.write_text(_job(pruning=pruning).to_json())
    assert '"minSteps": 20' in path.read_text()
    assert read_job_file(path).pruning == pruning
    assert _job().pruning is None and "pruning" not in _job().to_json()


def test_a_wrong_direction_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(_job().to_json().replace('"kind"', '"pruning": {"metric": "loss", "direction": "lower"},'
                                                       ' "kind"', 1))
    with pytest.raises(JobFileError, match=r"pruning\.direction"):
        read_job_file(path)
