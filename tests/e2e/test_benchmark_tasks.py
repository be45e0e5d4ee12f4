"""Named benchmarks in a real Evaluation job: a multiple-choice task YAML of the spec repository,
with local data, run through lm-evaluation-harness's own TaskManager on the tiny model (base, and
fine-tuned with a LoRA adapter applied), recorded in a real MLflow server as `task/<task>/<metric>`
and gated. A task lm-eval does not know, and a Hub dataset missing offline, are one-line job
errors."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from reconciler.jobs.jobfile import JobFile, ModelVersionRef, TaskFileRef
from tests.conftest import CliResult
from tests.support.reconcile_support import SpecRepo
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

needs_lm_eval = pytest.mark.skipif(find_spec("lm_eval") is None,
                                   reason="needs the [eval] extra (lm-evaluation-harness)")
pytestmark = [pytest.mark.slow, needs_training, needs_lm_eval]

COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "brown"]
# The prompt as the fine-tune saw it (the tiny model's ChatML), so the adapter's effect shows.
FRUIT_TASK = """\
task: fruit_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/fruit-mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "<|im_start|>user\\nWhat color is a {{fruit}}?<|im_end|>\\n<|im_start|>assistant\\n"
target_delimiter: ""
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
LORA = {"adapter": {"type": "lora", "r": 8},
        "training": {"epochs": 3.0, "learningRate": 1e-2, "microBatchSize": 8, "maxSeqLength": 64,
                     "precision": "fp32"}}


def write_fruit_task(folder: Path) -> tuple[Path, Path]:
    """A multiple-choice task from the fruit data: each fruit's color among seven."""
    colors: OrderedDict[str, str] = OrderedDict()
    for line in FRUIT_DATA.read_text().splitlines():
        row = json.loads(line)
        found = re.search(r"(?:color of an?|color is an?) (\w+)", row["instruction"])
        if found and row["output"] in COLORS and found.group(1) != "ripe":
            colors.setdefault(found.group(1), row["output"])
    data = folder / "data" / "fruit-mc.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"fruit": fruit, "choices": COLORS, "answer": COLORS.index(color)}
            for fruit, color in colors.items()]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = folder / "fruit-mc.yaml"
    task.write_text(FRUIT_TASK)
    return task, data


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
          mlflow_server: MlflowServer) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("benchmarks")
    store, jobs, uri = root / "store", root / "jobs", mlflow_server.uri
    split = {"train": 0.9, "validation": 0.0, "test": 0.1}
    data_job = dataset_job(store, uri, "fruit-colors", FRUIT_DATA,
                           {"schema": {"type": "instruction"}, "split": split})
    _ok(run_job("dataset", write_job(data_job, jobs)))
    tune = finetune_job(store, uri, "fruit-sft", base_model(tiny_model), [prepared(data_job)], LORA)
    _ok(run_job("finetune", write_job(tune, jobs)))
    import mlflow

    client = mlflow.MlflowClient(uri)
    version = client.search_model_versions("name='fruit-sft'")[0].version
    task, data = write_fruit_task(root / "evals")
    return {"store": store, "jobs": jobs, "uri": uri, "data": prepared(data_job), "client": client,
            "base": base_model(tiny_model), "tuned": trained_model(tune, version), "task": task,
            "task_data": data}


def _ok(result: CliResult) -> None:
    assert result.exit_code == 0, result.output[-4000:]


def benchmark_job(setup: dict[str, Any], name: str, model: Any, tasks: list[dict],
                  gates: list[dict] | None = None) -> JobFile:
    spec = {"metrics": [], "tasks": tasks, "gates": gates or []}
    job = evaluation_job(setup["store"], setup["uri"], name, model, setup["data"], spec)
    ref = TaskFileRef(path="evals/fruit-mc.yaml", location=f"file://{setup['task']}",
                      files=(f"file://{setup['task_data']}",))
    return job.model_copy(update={"task_files": (ref,)})


def run_benchmark(setup: dict[str, Any], job: JobFile) -> tuple[CliResult, dict[str, Any]]:
    result = run_job("evaluate", write_job(job, setup["jobs"]))
    _ok(result)
    return result, json.loads((job.output_dir / "results.json").read_text())


def _mlflow_metrics(setup: dict[str, Any], name: str) -> dict[str, float]:
    runs = setup["client"].search_runs(
        [setup["client"].get_experiment_by_name("tuneops-tests").experiment_id],
        filter_string=f"tags.`tuneops.name` = '{name}'")
    assert len(runs) == 1
    return runs[0].data.metrics


def test_a_task_yaml_runs_through_lm_eval_on_the_fine_tuned_model_and_its_metric_gates(setup):
    fruit = [{"path": "evals/fruit-mc.yaml"}]
    _, base = run_benchmark(setup, benchmark_job(setup, "fruit-mc-base", setup["base"], fruit))
    tuned_job = benchmark_job(setup, "fruit-mc-tuned", setup["tuned"], fruit)
    result, tuned = run_benchmark(setup, tuned_job)
    assert isinstance(setup["tuned"], ModelVersionRef) and setup["tuned"].adapter

    base_acc, tuned_acc = base["metrics"]["task/fruit_mc/acc"], tuned["metrics"]["task/fruit_mc/acc"]
    # The adapter is applied: the fine-tune learned the fruits' colors, the random base did not.
    assert tuned_acc > base_acc + 0.2, (base_acc, tuned_acc)
    assert set(tuned["metrics"]) == {"task/fruit_mc/acc"}  # no standard errors: they would be gated as scores
    assert _mlflow_metrics(setup, "fruit-mc-tuned")["task/fruit_mc/acc"] == pytest.approx(tuned_acc)
    # One line per task in the job log, not lm-eval's progress bars.
    assert re.search(r"^task fruit_mc: acc [0-9.]+$", result.stdout, re.MULTILINE), result.stdout
    assert "loglikelihood requests" not in result.output

    # The same model gives the same numbers; and a gate between the two models' scores decides.
    bound = (base_acc + tuned_acc) / 2
    gated = [{"metric": "task/fruit_mc/acc", "min": bound}]
    again_job = benchmark_job(setup, "fruit-mc-tuned-gated", setup["tuned"], fruit, gated)
    _, again = run_benchmark(setup, again_job)
    assert again["metrics"] == tuned["metrics"]
    assert again["verdict"] == "passed", again["gates"]
    _, failed = run_benchmark(setup, benchmark_job(setup, "fruit-mc-base-gated", setup["base"], fruit, gated))
    assert failed["verdict"] == "failed"
    assert failed["gates"][0]["description"].startswith("gate task/fruit_mc/acc ")


def test_limit_scores_the_first_documents_only(setup):
    limited = [{"path": "evals/fruit-mc.yaml", "limit": 4}]
    _, results = run_benchmark(setup, benchmark_job(setup, "fruit-mc-limited", setup["tuned"], limited))
    assert results["metrics"]["task/fruit_mc/acc"] in {0.0, 0.25, 0.5, 0.75, 1.0}


@pytest.mark.parametrize(("task", "env", "expected"), [
    ({"name": "hellaswagg"}, {}, "task 'hellaswagg': lm-evaluation-harness has no task, group or tag of "
                                 "that name (did you mean 'hellaswag'?)"),
    ({"name": "hellaswag"}, {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
     "task 'hellaswag': cannot load its data"),
], ids=["unknown-task", "offline-without-the-dataset"])
def test_what_lm_eval_cannot_run_is_a_one_line_job_error(setup, tmp_path, task, env, expected):
    job = benchmark_job(setup, "fruit-mc-broken", setup["base"], [task])
    # An empty Hugging Face cache: nothing of the host's cache can stand in for the dataset.
    result = run_job("evaluate", write_job(job, setup["jobs"]), env={"HF_HOME": str(tmp_path / "hf"), **env})
    assert result.exit_code != 0
    assert expected in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr[-3000:]


@pytest.fixture
def repo(tmp_path: Path, mlflow_server: MlflowServer):
    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    yield repo
    repo.stop_servers()


def test_a_benchmark_gate_decides_what_is_deployed(repo: SpecRepo, mlflow_server: MlflowServer):
    """The quickstart, its Evaluation scoring only a task YAML of the repository: a fine-tune
    that learned passes the benchmark's gate and is served; one that learned nothing is not."""
    write_fruit_task(repo.root / "evals")
    repo.edit("evaluation.yaml", "  metrics: [perplexity, exact_match]\n",
              "  metrics: []\n  tasks:\n    - path: evals/fruit-mc.yaml\n")
    text = (repo.root / "evaluation.yaml").read_text()
    (repo.root / "evaluation.yaml").write_text(text[:text.index("  gates:\n")] + (
        "  gates:\n    - metric: task/fruit_mc/acc\n      min: 0.5\n"
        "    - metric: task/fruit_mc/acc\n      notWorseThan: serving\n      margin: 0.1\n"))
    (repo.root / "sweep.yaml").unlink()  # its objective, exact_match, is no longer computed
    repo.commit("gate on a named benchmark")
    validated = repo.tuneops("validate", ".")
    assert validated.exit_code == 0 and "5 valid specs" in validated.stdout, validated.output

    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "Deployment/fruit-bot: done" in applied.stdout
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.uri)
    assert str(client.get_model_version_by_alias(repo.model, "production").version) == "1"
    experiment = re.search(r"experiment: (\S+)", (repo.root / "tuneops.yaml").read_text()).group(1)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                filter_string="tags.`tuneops.name` = 'fruit-sft-quality'")
    assert run.data.metrics["task/fruit_mc/acc"] >= 0.5

    # The task's data is part of the Evaluation's fingerprint: editing it re-evaluates, nothing else.
    with (repo.root / "evals/data/fruit-mc.jsonl").open("a") as data:
        data.write(json.dumps({"fruit": "plum", "choices": COLORS, "answer": COLORS.index("purple")}) + "\n")
    edited = repo.plan()["by_resource"]
    assert edited["Evaluation/fruit-sft-quality"] == "rebuild" and edited["FineTune/fruit-sft"] == "noop"
    repo.git("checkout", "--", ".")

    # A fine-tune that learns nothing fails the benchmark's gate: version 1 keeps serving.
    repo.edit("fine-tune.yaml", "learningRate: 3.0e-3", "learningRate: 1.0e-6")
    repo.commit("a learning rate too small to learn anything")
    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "Deployment/fruit-bot: blocked" in applied.stdout
    assert f"{repo.model}/2 did not pass fruit-sft-quality: gate task/fruit_mc/acc" in applied.stdout
    # Compared with the version serving on the same documents: lm-eval's per-document scores.
    (_, comparison), = (item for item in _evaluations(applied, repo) if item[0] == "2")
    assert comparison["metric"] == "task/fruit_mc/acc" and comparison["rows"] == 15, comparison
    assert comparison["high"] < -0.1, comparison
    assert str(client.get_model_version_by_alias(repo.model, "production").version) == "1"


def _evaluations(applied: CliResult, repo: SpecRepo) -> list[tuple[str, dict]]:
    """(model version scored, its comparison with the serving version) of each evaluation run."""
    found = []
    for results in (repo.root / ".tuneops/store/evaluations/fruit-sft-quality").glob("*/results.json"):
        document = json.loads(results.read_text())
        for comparison in document.get("comparisons") or ():
            found.append((str(document["model"]["version"]), comparison))
    return found
