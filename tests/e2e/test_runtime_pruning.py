"""A sweep trial's fine-tune job with a `pruning` section, run as the sweep runs it
(`tuneops run finetune --job FILE` against a real MLflow server): a diverging trial and one
behind the finished trials stop early, are recorded as pruned and leave no model behind; one
ahead of them finishes as usual and carries its curve."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from reconciler.jobs.jobfile import JobFile, PruningJob
from reconciler.runtime.finetune import checkpoints_dir
from reconciler.tracking import vocabulary as tracking
from tests.support.runtime_support import (
    FRUIT_DATA,
    MlflowServer,
    Prepared,
    base_model,
    dataset_job,
    finetune_job,
    needs_training,
    prepared,
    run_job,
    write_job,
)

pytestmark = [pytest.mark.slow, needs_training]

STEPS = 12
LORA = {
    "adapter": {"r": 4},
    "checkpoint": {"everySteps": 1, "keep": 2},
    "training": {"maxSteps": STEPS, "learningRate": 1e-2, "microBatchSize": 4, "maxSeqLength": 64,
                 "precision": "fp32"},
}
# A full fine-tune no model survives: AdamW's decoupled weight decay multiplies each weight by
# (1 - lr x decay) = -999999 per step, so activations overflow fp32 within a few steps (the
# spec caps learningRate at 1, and RMSNorm keeps a mere large learning rate finite).
DIVERGING = {
    "adapter": {"type": "none"},
    "checkpoint": {"everySteps": 1, "keep": 2},
    "training": {"maxSteps": STEPS, "learningRate": 1.0, "weightDecay": 1e6, "warmupRatio": 0,
                 "scheduler": "constant", "microBatchSize": 4, "maxSeqLength": 64, "precision": "fp32"},
}


@pytest.fixture(scope="module")
def prepared_fruit(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> Prepared:
    root = tmp_path_factory.mktemp("pruning")
    job = dataset_job(root / "store", mlflow_server.uri, "fruit-colors", FRUIT_DATA,
                      {"schema": {"type": "instruction"}})
    result = run_job("dataset", write_job(job, root / "jobs"))
    assert result.exit_code == 0, result.output[-3000:]
    return root, mlflow_server.uri, prepared(job)


def _trial(prepared_fruit: Prepared, tiny_model: Path, name: str, spec: dict[str, Any],
           pruning: PruningJob) -> JobFile:
    root, uri, data = prepared_fruit
    job = finetune_job(root / "store", uri, name, base_model(tiny_model), [data], spec)
    return job.model_copy(update={"pruning": pruning})


def _runs(job: JobFile) -> list:
    import mlflow

    client = mlflow.MlflowClient(job.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(job.mlflow.experiment)
    return client.search_runs([experiment.experiment_id], f"tags.`tuneops.fingerprint` = '{job.fingerprint}'")


def _run(job: JobFile) -> Any:
    runs = _runs(job)
    assert len(runs) == 1
    return runs[0]


def _versions(job: JobFile) -> list:
    import mlflow

    return mlflow.MlflowClient(job.mlflow.tracking_uri).search_model_versions(f"name = '{job.name}'")


def _assert_pruned_and_nothing_kept(job: JobFile, output: str) -> Any:
    run = _run(job)
    tags = run.data.tags
    assert run.info.status == "KILLED"
    assert tags[tracking.TAG_STATUS] == tracking.STATUS_PRUNED
    assert f"pruned: {tags[tracking.TAG_PRUNED_REASON]}" in output
    assert tracking.TAG_REGISTERED_VERSION not in tags
    assert _versions(job) == []
    assert not job.output_dir.exists()
    assert not checkpoints_dir(job).exists(), "a pruned trial's checkpoints are kept"
    curve = json.loads(tags[tracking.TAG_TRIAL_CURVE])
    assert curve[-1][0] == int(tags[tracking.TAG_PRUNED_STEP])
    return run


def test_a_diverging_trial_is_pruned_at_its_first_non_finite_loss(prepared_fruit: Prepared,
                                                                    tiny_model: Path) -> None:
    job = _trial(prepared_fruit, tiny_model, "diverging", DIVERGING,
                 PruningJob(metric="loss", min_steps=STEPS, trial="fruit-lr #1"))
    result = run_job("finetune", write_job(job, prepared_fruit[0] / "jobs"))
    assert result.exit_code == 0, result.output[-3000:]
    assert "fine-tune diverging (trial fruit-lr #1): pruned: loss is" in result.output, result.output[-6000:]
    run = _assert_pruned_and_nothing_kept(job, result.output)
    tags = run.data.tags
    step = int(tags[tracking.TAG_PRUNED_STEP])
    assert step < STEPS, "pruned only at the end"
    assert tags[tracking.TAG_PRUNED_REASON].endswith(f"at step {step}: diverged")
    assert not math.isfinite(float(tags[tracking.TAG_PRUNED_VALUE]))
    curve = json.loads(tags[tracking.TAG_TRIAL_CURVE])
    assert [point[0] for point in curve] == list(range(1, step + 1))
    assert all(math.isfinite(value) for _, value in curve[:-1])  # the first nan stopped it


def test_a_trial_behind_the_finished_ones_is_pruned_once_min_steps_is_reached(prepared_fruit: Prepared,
                                                                                tiny_model: Path) -> None:
    perfect = tuple((step, 0.0) for step in range(1, STEPS + 1))
    job = _trial(prepared_fruit, tiny_model, "behind", LORA,
                 PruningJob(metric="loss", min_steps=4, min_trials=3, history=(perfect,) * 3))
    result = run_job("finetune", write_job(job, prepared_fruit[0] / "jobs"))
    assert result.exit_code == 0, result.output[-3000:]
    run = _assert_pruned_and_nothing_kept(job, result.output)
    tags = run.data.tags
    assert tags[tracking.TAG_PRUNED_STEP] == "4"
    assert tags[tracking.TAG_PRUNED_REASON].endswith(
        "at step 4 is worse than the median 0 of 3 finished trials")
    assert [point[0] for point in json.loads(tags[tracking.TAG_TRIAL_CURVE])] == [1, 2, 3, 4]

    again = run_job("finetune", write_job(job, prepared_fruit[0] / "jobs"))  # the verdict is final
    assert again.exit_code == 0, again.output[-3000:]
    runs = _runs(job)
    assert len(runs) == 2, "the pruned run was reopened instead of a new one started"
    assert {r.data.tags[tracking.TAG_STATUS] for r in runs} == {tracking.STATUS_PRUNED}


def test_a_trial_ahead_of_the_finished_ones_finishes_and_records_its_curve(prepared_fruit: Prepared,
                                                                            tiny_model: Path) -> None:
    import mlflow

    hopeless = tuple((step, 100.0) for step in range(1, STEPS + 1))
    job = _trial(prepared_fruit, tiny_model, "ahead", LORA,
                 PruningJob(metric="loss", min_trials=2, history=(hopeless,) * 2))
    result = run_job("finetune", write_job(job, prepared_fruit[0] / "jobs"))
    assert result.exit_code == 0, result.output[-3000:]
    assert "pruned" not in result.output
    run = _run(job)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_STATUS] == tracking.STATUS_COMPLETE
    assert [v.version for v in _versions(job)] == ["1"]
    assert (job.output_dir / "adapter_model.safetensors").is_file()
    logged = sorted((m.step, m.value) for m in
                    mlflow.MlflowClient(job.mlflow.tracking_uri).get_metric_history(run.info.run_id, "loss"))
    curve = [tuple(point) for point in json.loads(run.data.tags[tracking.TAG_TRIAL_CURVE])]
    assert [step for step, _ in curve] == list(range(1, STEPS + 1)) == [step for step, _ in logged]
    assert [value for _, value in curve] == pytest.approx([value for _, value in logged], rel=1e-5)


def test_every_rank_of_a_torchrun_trial_stops_at_the_same_step(prepared_fruit: Prepared,
                                                                tiny_model: Path) -> None:
    spec = dict(DIVERGING, distributed={"strategy": "ddp"})
    job = _trial(prepared_fruit, tiny_model, "diverging-ddp", spec, PruningJob(metric="loss"))
    result = run_job("finetune", write_job(job, prepared_fruit[0] / "jobs"), processes=2, timeout=300)
    assert result.exit_code == 0, result.output[-5000:]  # a rank left training alone would hang
    assert "fine-tune diverging-ddp: rank 1 done" in result.output
    _assert_pruned_and_nothing_kept(job, result.output)
