"""The alignment methods trained for real on the tiny model, against a real MLflow server: GRPO
with a built-in reward (the mean reward rises), resumed after a SIGKILL; GRPO with a Python
reward from the repository (and one that breaks); a reward model trained on preference pairs and
used as a reward; KTO and ORPO registering model versions."""

from __future__ import annotations

import json
import re
import uuid
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
    kill_at_checkpoint,
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
    kill_at_checkpoint(job, job_file, 8)
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



def test_grpo_trains_under_deepspeed_zero2_with_two_cpu_processes(lab: dict) -> None:
    """Every rank generates its share of the groups and scores it; rewards are gathered across
    ranks before the advantages are taken, and rank 0 registers the one model."""
    training = {**GRPO_TRAINING, "maxSteps": 2, "microBatchSize": 4}
    spec = {"method": "grpo", "adapter": {"type": "none"}, "training": training,
            "grpo": {**GRPO, "numGenerations": 4}, "rewards": [{"builtin": "contains"}],
            "distributed": {"strategy": "zero2"}}
    job = _after_sft(lab, "word-grpo-zero2", spec)
    _ok(run_job("finetune", write_job(job, lab["jobs"]), processes=2))
    results = json.loads((job.output_dir / "training_results.json").read_text())
    assert results["global_step"] == 2
    run = _run(lab, job)
    assert run.data.params["resolved.strategy"] == "zero2" and run.data.params["resolved.processes"] == "2"
    assert len(_history(lab, job, "reward")) == 2
    assert lab["client"].search_model_versions("name='word-grpo-zero2'")

# --- the same methods as a project: plan, apply, lineage, gates and serving ----------------------

WORD_REWARD = '''"""Scores 1 when the completion holds the row's reference word."""


def score(prompts, completions, reference, **columns):
    return [1.0 if word in completion else 0.0 for completion, word in zip(completions, reference)]
'''
BROKEN_REWARD = '''def score(prompts, completions, reference, **columns):
    return [1.0 / (0 if "color" in prompt else 1) for prompt in prompts]
'''


def short(adapter: str = "type: none") -> str:
    """A few CPU steps, fully fine-tuned or (`type: lora\\n    r: 4`) with an adapter."""
    return ("  training:\n    maxSteps: 3\n    learningRate: 1.0e-3\n    microBatchSize: 4\n"
            f"    maxSeqLength: 64\n    precision: fp32\n  adapter:\n    {adapter}\n"
            "  resources:\n    gpusPerNode: 0\n")


# A reward model with a LoRA adapter (its score head trained beside it), and KTO with an adapter
# on the SFT model's full weights: the reference model is then that model with the adapter off.
LORA = "type: lora\n    r: 4"


def _spec(kind: str, name: str, body: str) -> str:
    if kind == "FineTune":  # registered model names are global on the session's server: its own
        body += f"  register:\n    model: {registered(name)}\n"
    return f"apiVersion: tuneops.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{body}"


RUN = uuid.uuid4().hex[:6]


def registered(fine_tune: str) -> str:
    return f"{fine_tune}-{RUN}"


def _alignment_project(repo: Any) -> None:
    """The quickstart's data and SFT model, plus a reward model, GRPO on it and a Python reward,
    and KTO and ORPO fine-tunes, each evaluated and served. The quickstart's own Evaluation,
    Deployment and Sweep are left out: they would only add time."""
    root = repo.root
    for spec in ("evaluation.yaml", "deployment.yaml", "sweep.yaml"):
        (root / spec).unlink()
    prompts = [{"prompt": f"What color is a {fruit}?", "reference": WORD} for fruit in FRUITS]
    pairs = [{"prompt": f"What color is a {fruit}?", "chosen": COLORS[i % 6], "rejected": "the the"}
             for i, fruit in enumerate(FRUITS * 2)]
    feedback = [{"prompt": f"What color is a {fruit}?", "completion": answer, "label": good}
                for i, fruit in enumerate(FRUITS) for answer, good in ((COLORS[i % 6], True), ("the", False))]
    for name, rows in (("prompts", prompts), ("pairs", pairs), ("feedback", feedback)):
        _write_jsonl(root / "data" / f"fruit-{name}.jsonl", rows)
    (root / "rewards").mkdir()
    (root / "rewards" / "word.py").write_text(WORD_REWARD)
    whole = "  split:\n    train: 1.0\n    validation: 0.0\n    test: 0.0\n"
    documents = [
        # with a validation split: GRPO evaluates by generating whole groups for it
        _spec("Dataset", "fruit-prompts", "  source: file://data/fruit-prompts.jsonl\n  schema:\n"
                                          "    type: prompt\n  split:\n    train: 0.75\n"
                                          "    validation: 0.25\n    test: 0.0\n"),
        _spec("Dataset", "fruit-pairs", "  source: file://data/fruit-pairs.jsonl\n  schema:\n"
                                        "    type: preference\n  split:\n    train: 0.75\n"
                                        "    validation: 0.25\n    test: 0.0\n"),
        _spec("Dataset", "fruit-feedback", "  source: file://data/fruit-feedback.jsonl\n  schema:\n"
                                           "    type: binary-feedback\n" + whole),
        # a LoRA reward model on the SFT model's full weights: it is scored on those weights
        _spec("FineTune", "fruit-rm", "  fromFineTune: fruit-sft\n  method: reward\n  datasets:\n"
                                      "    - name: fruit-pairs\n" + short(LORA)),
        _spec("FineTune", "fruit-grpo", "  fromFineTune: fruit-sft\n  method: grpo\n  datasets:\n"
                                        "    - name: fruit-prompts\n  rewards:\n"
                                        "    - python: rewards/word.py:score\n"
                                        "    - rewardModel: {fineTune: fruit-rm}\n      weight: 0.1\n"
                                        "  grpo:\n    numGenerations: 4\n    maxCompletionLength: 4\n"
                                        "    beta: 0.0\n" + short()),
    ]
    for method in ("kto", "orpo"):
        data = "fruit-feedback" if method == "kto" else "fruit-pairs"
        documents += [
            _spec("FineTune", f"fruit-{method}", f"  fromFineTune: fruit-sft\n  method: {method}\n"
                                                 f"  datasets:\n    - name: {data}\n"
                                                 + short(LORA if method == "kto" else "type: none")),
            _spec("Evaluation", f"fruit-{method}-quality",
                  f"  model:\n    fineTune: fruit-{method}\n  dataset:\n    name: fruit-colors\n"
                  "    split: test\n  metrics: [perplexity]\n  gates:\n    - metric: perplexity\n"
                  "      max: 1.0e6\n"),
            _spec("Deployment", f"fruit-{method}-bot",
                  f"  model:\n    fineTune: fruit-{method}\n  requires: [fruit-{method}-quality]\n"
                  "  runtime: transformers\n"),
        ]
    (root / "alignment.yaml").write_text("---\n".join(documents))
    with (root / "tuneops.yaml").open("a") as settings:  # independent jobs in pairs, one core each
        settings.write("local:\n  maxParallel: 2\n")
    repo.commit("alignment methods")


@pytest.fixture
def alignment_repo(tmp_path: Path, mlflow_server: MlflowServer):
    from tests.support.reconcile_support import SpecRepo

    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    _alignment_project(repo)
    yield repo
    repo.stop_servers()


def test_alignment_methods_as_a_project_plan_apply_trace_and_serve(alignment_repo: Any,
                                                                   mlflow_server: MlflowServer) -> None:
    from tests.support.reconcile_support import chat

    repo = alignment_repo
    first = repo.plan()
    grpo_plan = next(a for a in first["actions"] if a["name"] == "fruit-grpo")
    assert "FineTune/fruit-rm" in grpo_plan["depends_on"]  # trained after the reward model it uses
    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output[-6000:]
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.uri)
    grpo = client.get_model_version(registered("fruit-grpo"), "1")
    rm = client.get_model_version(registered("fruit-rm"), "1")
    # lineage reaches the reward model's version and the SFT model's
    assert grpo.tags["tuneops.reward_model.fruit-rm"] == f"{registered('fruit-rm')}/1"
    assert grpo.tags["tuneops.started_from"] == f"{repo.model}/1"
    grpo_job = json.loads(next((repo.root / ".tuneops").rglob("*fruit-grpo*.json")).read_text())
    scorer = grpo_job["rewardModels"][0]
    assert scorer["adapter"] and scorer["weights"] == client.get_model_version(repo.model, "1").tags[
        "tuneops.output"]  # the adapter is loaded on the weights it was trained on, fruit-sft's
    accuracy = client.get_run(rm.run_id).data.metrics["final_reward_accuracy"]
    assert 0.0 <= accuracy <= 1.0
    rewards = client.get_metric_history(grpo.run_id, "rewards/word.score/mean")
    assert len(rewards) == 3
    # evaluated on the validation prompts at the end, generating whole groups for them
    assert "final_eval_reward" in client.get_run(grpo.run_id).data.metrics
    for method in ("kto", "orpo"):
        version = client.get_model_version(registered(f"fruit-{method}"), "1")
        assert client.get_run(version.run_id).data.params["method"] == method
        url = applied.stdout.split(f"serving {registered(f'fruit-{method}')}/1 at ")[1].split()[0]
        answer = chat(url, "What color is a banana?", model=f"fruit-{method}-bot")
        assert "content" in answer["choices"][0]["message"]
    assert repo.tuneops("plan", ".", "--detailed-exitcode").exit_code == 0

    # Editing the reward function retrains the GRPO fine-tune, and the plan says why.
    repo.edit("rewards/word.py", "1.0 if word in completion else 0.0", "1.0 if word in completion else -1")
    edited = repo.plan()
    assert {r for r, a in edited["by_resource"].items() if a == "rebuild"} == {"FineTune/fruit-grpo"}
    grpo_action = next(a for a in edited["actions"] if a["name"] == "fruit-grpo")
    assert "spec.rewards[0].python content changed" in grpo_action["reason"]

    # A reward that raises fails the job with the file, the function and the row, in one line.
    (repo.root / "rewards" / "word.py").write_text(BROKEN_REWARD)
    broken = repo.tuneops("apply", ".", "--yes")
    assert broken.exit_code != 0
    expected = (r"rewards/word\.py:score: row \d+ of fruit-prompts's train split: "
                r"raised ZeroDivisionError: float division by zero")
    assert re.search(expected, broken.output), broken.output[-4000:]
    assert "Traceback" not in broken.output
