"""The alignment methods trained for real on the tiny model, against a real MLflow server: GRPO
with a built-in reward (the mean reward rises), resumed after a SIGKILL; GRPO with a Python
reward from the repository (and one that breaks); a reward model trained on preference pairs and
used as a reward; KTO and ORPO registering model versions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.jobs.jobfile import JobFile, ModelVersionRef
from tests.conftest import CliResult
from tests.support.runtime_support import (
    FRUIT_DATA,
    MlflowServer,
    base_model,
    dataset_job,
    finetune_job,
    needs_training,
    prepared,
    run_job,
    write_job,
)

pytestmark = [pytest.mark.slow, needs_training]

COLORS = ["red", "blue", "green", "yellow", "orange", "purple"]
FRUITS = ["banana", "cherry", "lime", "plum", "orange", "blueberry", "apple", "lemon"]
# GRPO after SFT, as usual: the SFT model answers a fruit's color; GRPO rewards one word whatever
# the fruit (the `contains` rule, against each row's reference), which the SFT model says for a
# few fruits only, so the group's rewards differ from the start and there is something to learn.
WORD = "yellow"
SFT = {"adapter": {"type": "none"},
       "training": {"epochs": 2.0, "learningRate": 3e-3, "microBatchSize": 8, "maxSeqLength": 64,
                    "precision": "fp32"}}
GRPO_TRAINING = {
    "maxSteps": 24,
    "learningRate": 5e-3,
    "microBatchSize": 8,
    "maxSeqLength": 64,
    "precision": "fp32",
    "warmupRatio": 0.0,
    "scheduler": "constant",
    "seed": 7,
}
GRPO = {"numGenerations": 8, "maxCompletionLength": 4, "temperature": 1.0, "beta": 0.0}


def _ok(result: CliResult) -> None:
    assert result.exit_code == 0, result.output[-4000:]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, mlflow_server: MlflowServer) -> dict:
    """The prepared datasets the methods train on, in one store."""
    root = tmp_path_factory.mktemp("alignment")
    store, jobs, uri = root / "store", root / "jobs", mlflow_server.uri
    prompts = [{"prompt": question.format(fruit), "reference": WORD}
               for question in ("What color is a {}?", "Name the color of a {}.",
                                "What is the color of a {}?")
               for fruit in FRUITS]
    pairs = [{"prompt": f"What color is a {fruit}?", "chosen": COLORS[i % 6], "rejected": "the the the"}
             for i, fruit in enumerate(FRUITS * 3)]
    feedback = [{"prompt": f"What color is a {fruit}?", "completion": answer, "label": good}
                for i, fruit in enumerate(FRUITS * 2)
                for answer, good in ((COLORS[i % 6], True), ("the the", False))]
    made = {}
    for name, rows, schema, split in (
        ("prompts", prompts, "prompt", {"train": 1.0, "validation": 0.0, "test": 0.0}),
        ("pairs", pairs, "preference", {"train": 0.75, "validation": 0.25, "test": 0.0}),
        ("feedback", feedback, "binary-feedback", {"train": 1.0, "validation": 0.0, "test": 0.0}),
    ):
        job = dataset_job(store, uri, name, _write_jsonl(root / f"{name}.jsonl", rows),
                          {"schema": {"type": schema}, "split": split})
        _ok(run_job("dataset", write_job(job, jobs)))
        made[name] = prepared(job)
    fruit = dataset_job(store, uri, "fruit-colors", FRUIT_DATA,
                        {"schema": {"type": "instruction"}, "split": {"train": 1.0, "validation": 0.0,
                                                                     "test": 0.0}})
    _ok(run_job("dataset", write_job(fruit, jobs)))
    sft = finetune_job(store, uri, "fruit-sft", base_model(tiny_model), [prepared(fruit)], SFT)
    _ok(run_job("finetune", write_job(sft, jobs)))
    import mlflow

    client = mlflow.MlflowClient(uri)
    version = client.search_model_versions("name='fruit-sft'")[0].version
    sft_model = ModelVersionRef(fine_tune="fruit-sft", location=str(sft.output_dir), adapter=False,
                                base_model=base_model(tiny_model), registered_model="fruit-sft",
                                version=version, fingerprint=sft.fingerprint)
    return {"root": root, "store": store, "jobs": jobs, "uri": uri, "data": made,
            "base": base_model(tiny_model), "client": client, "sft": sft_model}


def _job(lab: dict, name: str, data: str, spec: dict[str, Any], **update: Any) -> JobFile:
    job = finetune_job(lab["store"], lab["uri"], name, lab["base"], [lab["data"][data]], spec)
    return job.model_copy(update=update) if update else job


def _after_sft(lab: dict, name: str, spec: dict[str, Any], **update: Any) -> JobFile:
    """A GRPO job that starts from the fixture's SFT model (fromFineTune)."""
    job = _job(lab, name, "prompts", spec)
    written = {key: value for key, value in job.spec.items() if key != "baseModel"}
    return job.model_copy(update={"spec": {**written, "fromFineTune": "fruit-sft"}, "base_model": None,
                                  "start_from": lab["sft"], **update})


def _run(lab: dict, job: JobFile) -> Any:
    client = lab["client"]
    runs = client.search_runs([client.get_experiment_by_name("tuneops-tests").experiment_id],
                              f"tags.`tuneops.fingerprint` = '{job.fingerprint}'")
    assert len(runs) == 1, f"{len(runs)} runs of {job.name}"
    return runs[0]


def _history(lab: dict, job: JobFile, metric: str) -> dict[int, float]:
    """A metric by step: the last value logged at each (a resumed job logs some steps again)."""
    history = lab["client"].get_metric_history(_run(lab, job).info.run_id, metric)
    return {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}


def test_grpo_with_a_builtin_reward_raises_the_mean_reward_and_resumes_after_a_kill(lab: dict) -> None:
    spec = {"method": "grpo", "adapter": {"type": "none"}, "training": GRPO_TRAINING, "grpo": GRPO,
            "rewards": [{"builtin": "contains"}], "checkpoint": {"everySteps": 8, "keep": 2}}
    job = _after_sft(lab, "word-grpo", spec)
    job_file = write_job(job, lab["jobs"])
    checkpoints = job.output_dir.with_name(job.output_dir.name + ".checkpoints")
    first = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "finetune", "--job", str(job_file)],
                             env={**os.environ, "NO_COLOR": "1", "TUNEOPS_MLFLOW_RETRY_DELAYS": "0.2"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-8" / "trainer_state.json").is_file():  # written last
        assert first.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not job.output_dir.exists()

    _ok(run_job("finetune", job_file))
    results = json.loads((job.output_dir / "training_results.json").read_text())
    assert results["global_step"] == GRPO_TRAINING["maxSteps"]  # as if never killed
    run = _run(lab, job)
    assert run.data.tags["tuneops.resumed_from"].startswith("checkpoint-")
    rewards = _history(lab, job, "reward")
    assert sorted(rewards) == list(range(1, GRPO_TRAINING["maxSteps"] + 1)), rewards
    print("REWARDS", rewards)
    # The mean reward of the group, per step, from a fixed seed: the SFT model says the word
    # for a few fruits; after training it says it for (nearly) all.
    first_steps = [rewards[step] for step in (1, 2, 3)]
    last_steps = [rewards[step] for step in range(17, 25)]
    assert sum(last_steps) / 8 >= 0.85, rewards
    assert sum(last_steps) / 8 >= sum(first_steps) / 3 + 0.3, rewards
    version = lab["client"].search_model_versions("name='word-grpo'")[0]
    assert version.tags["tuneops.adapter"] == "false"
    assert run.data.params["method"] == "grpo" and run.data.params["grpo.numGenerations"] == "8"
