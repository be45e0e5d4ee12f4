"""`tuneops run evaluate` with an LLM judge, for real: the tiny model answers, a scripted
OpenAI-compatible server (standing in for the hosted LLM) judges, a real MLflow server records,
and the key never lands in a file, a log line or an MLflow param."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.judge_server import ScriptedJudge, always, prefers_longer
from tests.support.runtime_support import (
    FRUIT_DATA,
    MlflowServer,
    base_model,
    dataset_job,
    evaluation_job,
    needs_training,
    prepared,
    run_job,
    write_job,
)

pytestmark = [pytest.mark.slow, needs_training]
KEY = "sk-judge-planted-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def fruit(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer):
    root = tmp_path_factory.mktemp("judged")
    job = dataset_job(root / "store", mlflow_server.uri, "fruit-colors", FRUIT_DATA,
                      {"schema": {"type": "instruction"},
                       "split": {"train": 0.8, "validation": 0.1, "test": 0.1}})
    assert run_job("dataset", write_job(job, root / "jobs")).exit_code == 0
    return root, prepared(job)


def _spec(judge_url: str, mode: str, gate: dict, **more: object) -> dict:
    return {"metrics": ["perplexity"], "generation": {"maxNewTokens": 6},
            "dataset": {"name": "fruit-colors", "split": "test", "maxSamples": 5},
            "judge": {"endpoint": {"url": judge_url, "apiKeySecret": "JUDGE_API_KEY"},
                      "rubric": "Prefer the answer that names the right color.", "mode": mode},
            "gates": [gate], **more}


def _everything_written(output: Path, result) -> str:
    files = "".join(path.read_text(errors="replace") for path in output.rglob("*") if path.is_file())
    return files + result.stdout + result.stderr


def test_a_scored_judge_gates_the_model_and_its_key_stays_in_the_environment(
        fruit, tiny_model: Path, mlflow_server: MlflowServer) -> None:
    root, data = fruit
    with ScriptedJudge(prefers_longer, api_key=KEY, failures=[(503, {"Retry-After": "0"})]) as judge:
        job = evaluation_job(root / "store", mlflow_server.uri, "fruit-judged", base_model(tiny_model), data,
                             _spec(judge.url, "score", {"metric": "judge/score", "min": 1}))
        job_file = write_job(job, root / "jobs")
        result = run_job("evaluate", job_file, env={"JUDGE_API_KEY": KEY})
        assert result.exit_code == 0, result.output[-3000:]
        assert len(judge.chat_requests) == 6  # five rows, one retried after the scripted 503
        assert {r["headers"]["Authorization"] for r in judge.requests} == {f"Bearer {KEY}"}
    results = json.loads((job.output_dir / "results.json").read_text())
    assert results["verdict"] == "passed"
    section = results["judge"]
    assert (section["mode"], section["rows"], section["unparsed"], section["retries"]) == ("score", 5, 0, 1)
    assert section["endpoint"] == judge.url and section["model"] == "scripted-judge"
    assert 1 <= results["metrics"]["judge/score"] <= 10
    lines = (job.output_dir / "predictions.jsonl").read_text().splitlines()
    predictions = [json.loads(line) for line in lines]
    assert len(predictions) == 5 and all(1 <= row["judge"]["score"] <= 10 for row in predictions)
    # The key: in the job's environment only.
    assert KEY not in job_file.read_text() and KEY not in _everything_written(job.output_dir, result)
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.uri)
    [run] = client.search_runs([client.get_experiment_by_name("tuneops-tests").experiment_id],
                               "tags.`tuneops.name` = 'fruit-judged'")
    assert run.data.metrics["judge/score"] == results["metrics"]["judge/score"]
    recorded = json.dumps([run.data.params, run.data.tags])
    assert KEY not in recorded


def test_a_pairwise_judge_against_the_baseline_with_a_failed_gate_is_a_result(
        fruit, tiny_model: Path, mlflow_server: MlflowServer) -> None:
    root, data = fruit
    model = base_model(tiny_model)
    with ScriptedJudge(always("I like both. [[A]]"), api_key=KEY) as judge:
        spec = _spec(judge.url, "pairwise", {"metric": "judge/win_rate", "min": 0.6},
                     baseline={"baseModel": model.name})
        job = evaluation_job(root / "store", mlflow_server.uri, "fruit-pairwise", model, data, spec)
        job = job.model_copy(update={"baseline": model})
        result = run_job("evaluate", write_job(job, root / "jobs"), env={"JUDGE_API_KEY": KEY})
        assert result.exit_code == 0, result.output[-3000:]
        assert len(judge.chat_requests) == 10  # each row in both orders
    results = json.loads((job.output_dir / "results.json").read_text())
    # A judge that always picks the first answer: the position swap makes every row a tie.
    assert results["judge"]["champion"] == "baseline" and results["metrics"]["judge/win_rate"] == 0.5
    assert results["verdict"] == "failed"
    assert "gate judge/win_rate 0.5 < 0.6" in [gate["description"] for gate in results["gates"]]


def test_a_judge_that_refuses_connections_fails_the_job_with_one_line(
        fruit, tiny_model: Path, mlflow_server: MlflowServer) -> None:
    root, data = fruit
    judge = ScriptedJudge()
    url = judge.url
    judge.close()  # nothing listens there now
    job = evaluation_job(root / "store", mlflow_server.uri, "fruit-unjudged", base_model(tiny_model), data,
                         _spec(url, "score", {"metric": "judge/score", "min": 5}))
    result = run_job("evaluate", write_job(job, root / "jobs"), env={"JUDGE_API_KEY": KEY}, timeout=300)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert f"the judge at {url} cannot be reached" in result.output and "after 5 attempts" in result.output
