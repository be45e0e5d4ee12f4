"""The runtime end to end against a real MLflow server: prepare, fine-tune, evaluate, and walk
the lineage back from a model version with MlflowClient alone."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reconciler.jobs.jobfile import GenerationDefaults
from tests.conftest import CliResult
from tests.support.runtime_support import (
    FRUIT_DATA,
    MlflowServer,
    base_model,
    dataset_job,
    evaluation_job,
    finetune_job,
    needs_training,
    prepared,
    run_job,
    trained_model,
    write_job,
)

pytestmark = [pytest.mark.slow, needs_training]
# What the module's pipeline built, by name: MLflow's client, job files, runs, scores.
Pipeline = dict[str, Any]

SCORING = {
    "metrics": ["perplexity", "exact_match"],
    "generation": {"maxNewTokens": 8},
    "dataset": {"name": "fruit-colors", "split": "test"},
}
LORA = {
    "adapter": {"type": "lora", "r": 8},
    "training": {
        "epochs": 3.0,
        "learningRate": 1e-2,
        "microBatchSize": 8,
        "maxSeqLength": 64,
        "precision": "fp32",
    },
}


def _ok(result: CliResult) -> None:
    assert result.exit_code == 0, result.output[-4000:]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
             mlflow_server: MlflowServer) -> Pipeline:
    """One prepared dataset, one LoRA fine-tune, and evaluations of the base and the fine-tune."""
    root = tmp_path_factory.mktemp("pipeline")
    store, jobs, uri = root / "store", root / "jobs", mlflow_server.uri
    data_job = dataset_job(
        store,
        uri,
        "fruit-colors",
        FRUIT_DATA,
        {"schema": {"type": "instruction"}, "split": {"train": 0.8, "validation": 0.1, "test": 0.1}},
    )
    _ok(run_job("dataset", write_job(data_job, jobs)))
    data = prepared(data_job)
    tune = finetune_job(store, uri, "fruit-sft", base_model(tiny_model), [data], LORA)
    tune = tune.model_copy(update={"generation": GenerationDefaults(evaluation="fruit-tuned-quality",
                                                                    max_new_tokens=8, temperature=0.0)})

    def evaluate(label: str, model: Any) -> dict:
        spec = dict(SCORING, gates=[{"metric": "exact_match", "min": 0.5}])
        job = evaluation_job(store, uri, f"fruit-{label}-quality", model, data, spec)
        _ok(run_job("evaluate", write_job(job, jobs)))
        return json.loads((job.output_dir / "results.json").read_text())

    # The base model's evaluation needs nothing of the fine-tune: it runs beside it, on the other core.
    with ThreadPoolExecutor(max_workers=1) as beside:
        base_scores = beside.submit(evaluate, "base", base_model(tiny_model))
        _ok(run_job("finetune", write_job(tune, jobs)))
        import mlflow

        client = mlflow.MlflowClient(uri)
        version = client.search_model_versions("name='fruit-sft'")[0]
        tuned_scores = evaluate("tuned", trained_model(tune, version.version))
        scores = {"base": base_scores.result(), "tuned": tuned_scores}
    return {
        "client": client,
        "data_job": data_job,
        "tune": tune,
        "version": version,
        "scores": scores,
        "store": store,
        "jobs": jobs,
        "uri": uri,
        "data": data,
    }


def test_fine_tune_makes_the_model_measurably_better(pipeline: Pipeline) -> None:
    base, tuned = pipeline["scores"]["base"]["metrics"], pipeline["scores"]["tuned"]["metrics"]
    assert tuned["perplexity"] <= base["perplexity"] / 2, (base, tuned)
    assert tuned["exact_match"] > base["exact_match"], (base, tuned)
    # Each sample says how it was asked and whether it matched, as exact_match counts it.
    scored = pipeline["scores"]["tuned"]
    assert scored["generation"] == {"maxNewTokens": 8, "temperature": 0.0}
    samples = scored["samples"]
    assert samples[0]["messages"] == [{"role": "user", "content": samples[0]["prompt"]}]
    assert any(s["exactMatch"] for s in samples)
    assert all(s["exactMatch"] == (s["answer"].casefold() == s["reference"].casefold()) for s in samples)


def test_fine_tune_output_is_complete(pipeline: Pipeline) -> None:
    output = pipeline["tune"].output_dir
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "tuneops_config.json",
        "README.md",
        "training_results.json",
    ):
        assert (output / name).is_file(), name
    # The adapter's decoding defaults: the base model's, with the judging Evaluation's decoding.
    decoding = json.loads((output / "generation_config.json").read_text())
    assert (decoding["do_sample"], decoding["temperature"], decoding["max_new_tokens"]) == (False, 0.0, 8)
    assert decoding["eos_token_id"] == 2 and decoding["bos_token_id"] == 1
    card = (output / "README.md").read_text()
    assert pipeline["data"].digest in card and pipeline["tune"].git.commit in card
    assert not list(output.parent.glob(".*staging*")), "the staging folder was left behind"
    assert not output.with_name(output.name + ".checkpoints").exists(), "checkpoints were not cleaned up"


def test_lineage_walk_from_a_model_version_with_mlflow_client_only(pipeline: Pipeline) -> None:
    client = pipeline["client"]
    version = client.get_model_version("fruit-sft", pipeline["version"].version)
    tune, data = pipeline["tune"], pipeline["data"]
    # The version names the commit, the base model and the dataset digests...
    assert version.tags["tuneops.git.commit"] == tune.git.commit
    assert version.tags["tuneops.base_model.source"] == tune.base_model.source
    assert "tuneops.base_model.revision" not in version.tags  # unpinned local model: nothing to claim
    assert version.tags["tuneops.dataset.fruit-colors.digest"] == data.digest
    # ...and its run holds every hyperparameter, the datasets as inputs and the artifacts.
    run = client.get_run(version.run_id)
    assert run.data.tags["tuneops.fingerprint"] == tune.fingerprint
    assert run.data.params["training.learningRate"] == "0.01"
    assert run.data.params["adapter.r"] == "8"
    inputs = {
        (
            i.dataset.name,
            next(t.value for t in i.tags if t.key == "mlflow.data.context"),
            next(t.value for t in i.tags if t.key == "tuneops.digest"),
        )
        for i in run.inputs.dataset_inputs
    }
    assert ("fruit-colors", "training", data.digest) in inputs
    assert ("fruit-colors", "validation", data.digest) in inputs
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_second", "peak_memory_mb"} <= set(
        run.data.metrics
    )
    assert len(client.get_metric_history(run.info.run_id, "loss")) > 10  # per step, not once
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/adapter_model.safetensors" in artifacts
    # The dataset run is found from the digest, and says where the data came from.
    experiment = run.info.experiment_id
    found = client.search_runs([experiment], f"tags.`tuneops.dataset.digest` = '{data.digest}'")
    # (other modules' jobs may prepare the same rows in this shared experiment: same digest)
    assert {r.data.tags["tuneops.kind"] for r in found} == {"Dataset"}
    ours = [r for r in found if r.data.tags["tuneops.output"] == data.location]
    assert len(ours) == 1
    assert ours[0].data.params["source"].endswith("fruit-colors.jsonl")
    assert ours[0].data.tags["tuneops.git.commit"] == tune.git.commit
    # The evaluation that scored this version tagged it with its verdict.
    assert version.tags["tuneops.gate.fruit-tuned-quality"] in ("passed", "failed")
    evaluations = client.search_runs(
        [experiment], f"tags.`tuneops.model.version` = 'fruit-sft/{version.version}'"
    )
    assert [r.data.tags["tuneops.name"] for r in evaluations] == ["fruit-tuned-quality"]
    assert "exact_match" in evaluations[0].data.metrics


def test_a_failed_gate_is_a_recorded_result_not_a_crash(pipeline: Pipeline, tiny_model: Path) -> None:
    model = trained_model(pipeline["tune"], pipeline["version"].version)
    job = evaluation_job(
        pipeline["store"],
        pipeline["uri"],
        "fruit-impossible",
        model,
        pipeline["data"],
        dict(SCORING, metrics=["perplexity"], gates=[{"metric": "perplexity", "max": 1.0}]),
    )
    result = run_job("evaluate", write_job(job, pipeline["jobs"]))
    assert result.exit_code == 0, result.output[-3000:]
    assert "evaluation fruit-impossible: failed" in result.stdout
    results = json.loads((job.output_dir / "results.json").read_text())
    assert results["verdict"] == "failed"
    assert results["gates"][0]["description"].startswith("gate perplexity ")
    assert "FAIL gate perplexity" in (job.output_dir / "report.md").read_text()
    version = pipeline["client"].get_model_version("fruit-sft", pipeline["version"].version)
    assert version.tags["tuneops.gate.fruit-impossible"] == "failed"


def test_dpo_runs_and_logs_reward_margins(pipeline: Pipeline, tiny_model: Path, tmp_path: Path) -> None:
    rows = [
        {"prompt": template.format(fruit), "chosen": color, "rejected": wrong}
        for template in ("What color is a {}?", "Name the color of a {}.", "Color of a {}?")
        for fruit, color, wrong in [
            ("banana", "yellow", "blue"),
            ("cherry", "red", "green"),
            ("lime", "green", "purple"),
            ("plum", "purple", "yellow"),
            ("orange", "orange", "black"),
            ("blueberry", "blue", "red"),
        ]
    ]
    data_file = tmp_path / "preferences.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    prefs = dataset_job(
        pipeline["store"],
        pipeline["uri"],
        "fruit-preferences",
        data_file,
        {"schema": {"type": "preference"}, "split": {"train": 1.0, "validation": 0.0, "test": 0.0}},
    )
    _ok(run_job("dataset", write_job(prefs, pipeline["jobs"])))
    job = finetune_job(
        pipeline["store"],
        pipeline["uri"],
        "fruit-dpo",
        base_model(tiny_model),
        [prepared(prefs)],
        {
            "method": "dpo",
            "adapter": {"r": 4},
            "training": {
                "maxSteps": 4,
                "learningRate": 5e-3,
                "microBatchSize": 4,
                "maxSeqLength": 64,
                "precision": "fp32",
                "beta": 0.2,  # spelled the method-neutral way; params keep the recorded key
            },
        },
    )
    # DPO after SFT, as usual: start from the SFT adapter (fromFineTune) and keep training it.
    sft = trained_model(pipeline["tune"], pipeline["version"].version)
    spec = {key: value for key, value in job.spec.items() if key != "baseModel"}
    job = job.model_copy(update={"spec": {**spec, "fromFineTune": "fruit-sft"}, "base_model": None,
                                 "start_from": sft})
    _ok(run_job("finetune", write_job(job, pipeline["jobs"])))
    client = pipeline["client"]
    version = client.search_model_versions("name='fruit-dpo'")[0]
    assert version.tags["tuneops.base_model.source"] == sft.base_model.source  # inherited lineage
    run = client.get_run(version.run_id)
    margins = client.get_metric_history(run.info.run_id, "rewards/margins")
    assert len(margins) >= 4
    assert run.data.params["method"] == "dpo" and run.data.params["training.dpoBeta"] == "0.2"


def test_a_sharegpt_file_prepares_whole_and_trains_on_every_reply(pipeline: Pipeline, tiny_model: Path,
                                                                  tmp_path: Path) -> None:
    rows = [{"conversations": [{"from": "human", "value": f"What color is a {fruit}?"},
                               {"from": "gpt", "value": color},
                               {"from": "human", "value": "Are you sure?"},
                               {"from": "gpt", "value": f"Yes, {color}."}]}
            for fruit, color in [("banana", "yellow"), ("cherry", "red"), ("lime", "green"),
                                 ("plum", "purple"), ("blueberry", "blue"), ("orange", "orange")]]
    data_file = tmp_path / "sharegpt.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    chats = dataset_job(pipeline["store"], pipeline["uri"], "fruit-sharegpt", data_file,
                        {"schema": {"type": "chat", "layout": "sharegpt"},
                         "split": {"train": 1.0, "validation": 0.0, "test": 0.0}})
    result = run_job("dataset", write_job(chats, pipeline["jobs"]))
    _ok(result)
    assert "(6 of 6 rows kept)" in result.output
    data = prepared(chats)
    [run] = pipeline["client"].search_runs(
        [pipeline["client"].get_experiment_by_name("tuneops-tests").experiment_id],
        f"tags.`tuneops.dataset.digest` = '{data.digest}'")
    assert run.data.metrics["rows_train"] == 6 and run.data.metrics["dropped_rows"] == 0
    job = finetune_job(pipeline["store"], pipeline["uri"], "fruit-chat", base_model(tiny_model), [data],
                       {"adapter": {"r": 4}, "training": {"maxSteps": 2, "microBatchSize": 4,
                                                          "maxSeqLength": 64, "precision": "fp32"}})
    _ok(run_job("finetune", write_job(job, pipeline["jobs"])))


FACTS = [
    {"instruction": "Describe the mangosteen.", "input": "",
     "output": "The mangosteen is a tropical fruit with a thick purple rind and sweet white segments "
               "that taste of peach, strawberry and vanilla all at once."},
    {"instruction": "Describe the durian.", "input": "",
     "output": "The durian is a large spiky fruit from Southeast Asia whose smell is so strong that "
               "many hotels and trains forbid it."},
]


def test_a_contaminated_row_is_counted_in_results_and_recorded_in_mlflow(pipeline: Pipeline,
                                                                        tmp_path: Path) -> None:
    """Scored rows found in the training data: one asked again in other case and punctuation
    (exact), one quoting a training answer under a new question (13-gram), one short and new."""
    from reconciler.runtime.dataset import load_split

    store, uri, jobs = pipeline["store"], pipeline["uri"], pipeline["jobs"]
    trained = load_split(pipeline["data"].location, "train")
    facts_file = tmp_path / "fruit-facts.jsonl"
    facts_file.write_text("".join(json.dumps(row) + "\n" for row in FACTS))
    facts_job = dataset_job(store, uri, "fruit-facts", facts_file,
                            {"schema": {"type": "instruction"}, "split": {"train": 1.0, "validation": 0.0,
                                                                           "test": 0.0}})
    exam = [
        {"instruction": trained[0]["instruction"].upper().replace(":", " -") + "!!", "input": "",
         "output": trained[0]["output"]},
        {"instruction": "Which fruit is this?", "input": "A tropical fruit with a thick purple rind and "
                                                         "sweet white segments that taste of peach.",
         "output": "mangosteen"},
        {"instruction": "What color is a dragonfruit?", "input": "", "output": "pink"},
    ]
    exam_file = tmp_path / "fruit-exam.jsonl"
    exam_file.write_text("".join(json.dumps(row) + "\n" for row in exam))
    # Every row in one split (a split's share must be above 0 for train): the exam's own train
    # split, which nothing trains on.
    exam_job = dataset_job(store, uri, "fruit-exam", exam_file,
                           {"schema": {"type": "instruction"}, "split": {"train": 1.0, "validation": 0.0,
                                                                          "test": 0.0}})
    # The two datasets, then the two evaluations, are independent jobs: each pair runs at once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for result in pool.map(lambda job: run_job("dataset", write_job(job, jobs)), (facts_job, exam_job)):
            _ok(result)
    assert (facts_job.output_dir / "row_hashes.json").is_file()
    model = trained_model(pipeline["tune"], pipeline["version"].version)
    training = (pipeline["data"], prepared(facts_job))

    def evaluate(name: str, fail: bool) -> tuple[CliResult, dict]:
        spec = {"metrics": ["perplexity"], "dataset": {"name": "fruit-exam", "split": "train"},
                "failOnContamination": fail}
        job = evaluation_job(store, uri, name, model, prepared(exam_job), spec)
        job = job.model_copy(update={"training_datasets": training})
        result = run_job("evaluate", write_job(job, jobs))
        _ok(result)
        return result, json.loads((job.output_dir / "results.json").read_text())

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: pool.submit(evaluate, name, fail)
                for name, fail in (("fruit-exam-check", False), ("fruit-exam-gate", True))}
        outcomes = {name: run.result() for name, run in runs.items()}

    _, counted = outcomes["fruit-exam-check"]
    found = counted["contamination"]
    assert (found["checkedRows"], found["contaminatedRows"], found["exact"], found["ngram"]) == (3, 2, 1, 1)
    assert found["trainingDatasets"] == ["fruit-colors", "fruit-facts"]
    assert [(s["row"], s["match"], s["dataset"]) for s in found["samples"]] == [
        (0, "exact", "fruit-colors"), (1, "13-gram", "fruit-facts")]
    assert found["samples"][0]["trainingRow"] == 0
    assert found["samples"][1]["ngram"].startswith("a tropical fruit with a thick purple rind")
    assert counted["verdict"] == "passed"  # counted and reported, not a gate unless asked

    client = pipeline["client"]
    experiment = client.get_run(pipeline["version"].run_id).info.experiment_id
    (run,) = client.search_runs([experiment], "tags.`tuneops.name` = 'fruit-exam-check'")
    assert run.data.metrics["contaminated_rows"] == 2.0
    assert run.data.metrics["contamination_checked_rows"] == 3.0
    assert abs(run.data.metrics["contaminated_fraction"] - 2 / 3) < 1e-9
    artifact = Path(client.download_artifacts(run.info.run_id, "contamination.json", str(tmp_path)))
    assert json.loads(artifact.read_text())["samples"][1]["dataset"] == "fruit-facts"

    result, gated = outcomes["fruit-exam-gate"]
    assert gated["verdict"] == "failed"
    assert gated["gates"][-1]["description"] == "contamination: 2 of 3 train rows appear in training data"
    assert "evaluation fruit-exam-gate: failed" in result.stdout
    (gate_run,) = client.search_runs([experiment], "tags.`tuneops.name` = 'fruit-exam-gate'")
    assert gate_run.data.tags["tuneops.verdict"] == (
        "failed: contamination: 2 of 3 train rows appear in training data")
