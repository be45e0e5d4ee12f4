"""Job files built from the quickstart's specs: what a FineTune job is told about decoding and data."""

from __future__ import annotations

import shutil
from pathlib import Path

from reconciler.fingerprint import fingerprint_inputs
from reconciler.graph import DependencyGraph
from reconciler.jobs.builder import JobBuilder, JobContext, JudgeNotServing
from reconciler.jobs.jobfile import GitOrigin, MlflowTarget
from reconciler.specs.base import ResourceId
from reconciler.specs.validate import validate_path
from reconciler.state import BuiltRun
from tests.conftest import REPO_ROOT

FINE_TUNE = ResourceId("FineTune", "fruit-sft")


def quickstart(tmp_path: Path) -> Path:
    root = tmp_path / "quickstart"
    shutil.copytree(REPO_ROOT / "specs-example" / "quickstart", root,
                    ignore=shutil.ignore_patterns(".tuneops", "models"))
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def builder(root: Path) -> JobBuilder:
    result = validate_path(root)
    assert result.valid, [problem.text() for problem in result.problems]
    specs = result.specs
    inputs = fingerprint_inputs(specs, DependencyGraph.from_specs(specs), {})

    def lookup(kind: str, name: str, fingerprint: str) -> BuiltRun:
        return BuiltRun(kind, name, fingerprint, "run", 0.0, output=f"/store/{name}",
                        dataset_digest="sha256:0")

    context = JobContext(storage_root=root / ".tuneops" / "store",
                         mlflow=MlflowTarget(tracking_uri="sqlite:///unused.db"), git=GitOrigin())
    return JobBuilder(specs, inputs, context, lookup)


def test_a_fine_tune_is_told_how_the_evaluation_that_gates_it_decodes(tmp_path: Path) -> None:
    root = quickstart(tmp_path)
    job = builder(root).job(FINE_TUNE)
    assert job.generation is not None
    assert (job.generation.evaluation, job.generation.max_new_tokens, job.generation.temperature) == (
        "fruit-sft-quality", 8, 0.0)
    assert '"generation": {\n    "evaluation": "fruit-sft-quality",\n    "maxNewTokens": 8,' in job.to_json()

    edit(root / "evaluation.yaml", "maxNewTokens: 8", "maxNewTokens: 12\n    temperature: 0.7")
    changed = builder(root).job(FINE_TUNE)
    assert (changed.generation.max_new_tokens, changed.generation.temperature) == (12, 0.7)
    assert changed.fingerprint == job.fingerprint  # nothing is retrained for it


def test_a_fine_tune_no_evaluation_generates_text_for_is_told_nothing(tmp_path: Path) -> None:
    root = quickstart(tmp_path)
    edit(root / "evaluation.yaml", "metrics: [perplexity, exact_match]", "metrics: [perplexity]")
    edit(root / "evaluation.yaml", "metric: exact_match\n      min: 0.5", "metric: perplexity\n      max: 50")
    edit(root / "evaluation.yaml", "metric: exact_match\n      notWorseThan",
         "metric: perplexity\n      notWorseThan")
    edit(root / "sweep.yaml", "metric: exact_match\n    direction: maximize",
         "metric: perplexity\n    direction: minimize")
    assert builder(root).job(FINE_TUNE).generation is None


def test_a_pod_checks_out_the_file_a_symlink_in_the_repository_points_at(tmp_path: Path) -> None:
    """A link is followed before the checkout paths are chosen: a sparse checkout of the link
    alone would leave the pod a link to a file it does not have."""
    root = quickstart(tmp_path)
    (root / "data" / "latest.jsonl").symlink_to("fruit-colors.jsonl")
    edit(root / "dataset.yaml", "file://data/fruit-colors.jsonl", "file://data/latest.jsonl")
    made = builder(root)
    made.context = JobContext(storage_root=Path("/mnt/tuneops"), mlflow=made.context.mlflow, git=GitOrigin(),
                              repo_root=root, checkout_into="/workspace/specs")
    job = made.job(ResourceId("Dataset", "fruit-colors"))
    assert job.source == "file:///workspace/specs/data/fruit-colors.jsonl"
    assert job.checkout is not None and job.checkout.paths == ("data/fruit-colors.jsonl",)


def test_a_fine_tune_job_carries_each_datasets_row_cap(tmp_path: Path) -> None:
    root = quickstart(tmp_path)
    assert builder(root).job(FINE_TUNE).datasets[0].max_samples is None
    assert "maxSamples" not in builder(root).job(FINE_TUNE).to_json()
    edit(root / "fine-tune.yaml", "- name: fruit-colors", "- name: fruit-colors\n      maxSamples: 3")
    job = builder(root).job(FINE_TUNE)
    assert job.datasets[0].max_samples == 3 and '"maxSamples": 3' in job.to_json()


def test_every_job_on_a_base_model_carries_its_tokens(tmp_path: Path) -> None:
    """The fine-tune adds them, and the evaluation and deployment that load its adapter on the base
    grow the base alike first; a BaseModel without tokens keeps its job files (and fingerprints)."""
    root = quickstart(tmp_path)
    before = builder(root)
    assert "tokens" not in before.job(FINE_TUNE).to_json()
    edit(root / "base-model.yaml", "chatTemplate: chatml",
         "chatTemplate: chatml\n  tokens: {pad: '<|pad|>', add: ['<tool_call>']}")
    after = builder(root)
    fine_tune = after.job(FINE_TUNE)
    assert fine_tune.base_model is not None and fine_tune.base_model.tokens is not None
    assert (fine_tune.base_model.tokens.pad, fine_tune.base_model.tokens.add) == ("<|pad|>", ("<tool_call>",))
    assert '"tokens": {\n      "add": [\n        "<tool_call>"\n      ],\n      "pad": "<|pad|>"' in (
        fine_tune.to_json())
    for kind, name in (("Evaluation", "fruit-sft-quality"), ("Deployment", "fruit-bot")):
        model = after.job(ResourceId(kind, name)).model
        assert model is not None and model.base_model.tokens == fine_tune.base_model.tokens, kind
    assert fine_tune.fingerprint != before.job(FINE_TUNE).fingerprint  # a new vocabulary retrains


def test_an_evaluation_job_lists_what_the_fine_tune_and_its_start_trained_on(tmp_path: Path) -> None:
    root = quickstart(tmp_path)
    (root / "second.yaml").write_text(
        "apiVersion: tuneops.dev/v1alpha1\nkind: Dataset\nmetadata:\n  name: more-fruit\nspec:\n"
        "  source: file://data/fruit-colors.jsonl\n  schema:\n    type: instruction\n---\n"
        "apiVersion: tuneops.dev/v1alpha1\nkind: FineTune\nmetadata:\n  name: fruit-more\nspec:\n"
        "  fromFineTune: fruit-sft\n  datasets:\n    - name: more-fruit\n      maxSamples: 40\n"
        "  adapter:\n    type: none\n  resources:\n    gpusPerNode: 0\n")
    scored = (("fruit-more-quality", "fineTune: fruit-more"), ("base-quality", "baseModel: tiny-llama"))
    for name, model in scored:
        (root / f"{name}.yaml").write_text(
            f"apiVersion: tuneops.dev/v1alpha1\nkind: Evaluation\nmetadata:\n  name: {name}\nspec:\n"
            f"  model:\n    {model}\n  dataset:\n    name: fruit-colors\n")
    jobs = builder(root)
    job = jobs.job(ResourceId("Evaluation", "fruit-more-quality"))
    assert [(d.name, d.location, d.max_samples) for d in job.training_datasets] == [
        ("more-fruit", "/store/more-fruit", 40), ("fruit-colors", "/store/fruit-colors", None)]
    assert '"trainingDatasets": [' in job.to_json()
    assert jobs.job(ResourceId("Evaluation", "base-quality")).training_datasets is None


def test_an_evaluation_job_says_where_its_task_yamls_and_their_data_are(tmp_path: Path) -> None:
    """Locally the absolute paths; in a pod, inside the checkout, which then holds the task YAML
    and the data it reads. An Evaluation without task YAMLs keeps its job file."""
    root = quickstart(tmp_path)
    evaluation = ResourceId("Evaluation", "fruit-sft-quality")
    assert "taskFiles" not in builder(root).job(evaluation).to_json()
    (root / "evals").mkdir()
    (root / "evals" / "mc.yaml").write_text("task: mc\ndataset_path: json\ndataset_kwargs:\n"
                                            "  data_files: {test: mc.jsonl}\n")
    (root / "evals" / "mc.jsonl").write_text('{"q": 1}\n')
    with (root / "evaluation.yaml").open("a") as spec:
        spec.write("  tasks:\n    - path: evals/mc.yaml\n    - name: hellaswag\n")
    (local,) = builder(root).job(evaluation).task_files
    assert (local.path, local.location) == ("evals/mc.yaml", f"file://{(root / 'evals/mc.yaml').resolve()}")
    assert local.files == (f"file://{(root / 'evals/mc.jsonl').resolve()}",)
    made = builder(root)
    made.context = JobContext(storage_root=Path("/mnt/tuneops"), mlflow=made.context.mlflow, git=GitOrigin(),
                              repo_root=root, checkout_into="/workspace/specs")
    job = made.job(evaluation)
    assert job.task_files[0].location == "file:///workspace/specs/evals/mc.yaml"
    assert job.checkout is not None and set(job.checkout.paths) >= {"evals/mc.yaml", "evals/mc.jsonl"}


EVALUATION = ResourceId("Evaluation", "fruit-sft-quality")


def _with_judge(root: Path, endpoint: str, mode: str = "score") -> None:
    edit(root / "evaluation.yaml", "  gates:\n", f"  judge:\n    endpoint:\n{endpoint}    rubric: Be right.\n"
                                               f"    mode: {mode}\n  gates:\n")


def test_a_judge_on_a_deployment_is_given_its_server_url_when_the_job_is_built(tmp_path: Path) -> None:
    root = quickstart(tmp_path)
    _with_judge(root, "      deployment: fruit-bot\n")
    made = builder(root)
    made.server_url = {"fruit-bot": "http://127.0.0.1:8123/"}.get
    assert made.job(EVALUATION).judge_url == "http://127.0.0.1:8123/v1"
    made.server_url = lambda name: None
    try:
        made.job(EVALUATION)
    except JudgeNotServing as error:
        assert str(error) == ("Evaluation/fruit-sft-quality's judge is Deployment/fruit-bot, which serves "
                              "nothing now: apply it first, or give the judge's endpoint a url")
    else:
        raise AssertionError("built a judge job without a URL to judge with")


def test_a_pairwise_judge_is_given_the_serving_champion_and_the_key_stays_out(tmp_path: Path) -> None:
    root = quickstart(tmp_path)
    edit(root / "evaluation.yaml", "      notWorseThan: serving\n      margin: 0.1\n", "      min: 0.5\n")
    _with_judge(root, "      url: https://judge.example.com/v1\n      apiKeySecret: JUDGE_API_KEY\n",
                "pairwise")
    made = builder(root)
    served = BuiltRun("FineTune", "fruit-sft", "f" * 64, "run", 0.0, output="/store/old",
                      model_version="fruit-sft/3")
    champion = made.model_version(ResourceId("FineTune", "fruit-sft"), served)
    made.serving = lambda evaluation: ("fruit-bot", champion)
    job = made.job(EVALUATION)
    assert job.champion is not None and job.champion.version == "3"
    assert job.champion_source == "Deployment/fruit-bot" and job.judge_url is None
    assert '"apiKeySecret": "JUDGE_API_KEY"' in job.to_json()  # the variable's name, never its value


def test_an_adapter_trained_on_a_full_fine_tune_is_loaded_on_its_weights(tmp_path: Path) -> None:
    """fruit-sft is a full fine-tune: a LoRA fine-tune from it (and one that continues that
    adapter) sits on fruit-sft's weights, not on the base model, wherever it is loaded; the
    lineage's base model stays the BaseModel."""
    root = quickstart(tmp_path)
    lora = "  adapter:\n    type: lora\n    r: 4\n  resources:\n    gpusPerNode: 0\n"
    (root / "chain.yaml").write_text(
        "apiVersion: tuneops.dev/v1alpha1\nkind: FineTune\nmetadata:\n  name: fruit-lora\nspec:\n"
        "  fromFineTune: fruit-sft\n  datasets:\n    - name: fruit-colors\n" + lora + "---\n"
        "apiVersion: tuneops.dev/v1alpha1\nkind: FineTune\nmetadata:\n  name: fruit-lora-more\nspec:\n"
        "  fromFineTune: fruit-lora\n  datasets:\n    - name: fruit-colors\n" + lora + "---\n"
        "apiVersion: tuneops.dev/v1alpha1\nkind: FineTune\nmetadata:\n  name: base-lora\nspec:\n"
        "  baseModel: tiny-llama\n  datasets:\n    - name: fruit-colors\n" + lora)
    jobs = builder(root)
    for name in ("fruit-lora", "fruit-lora-more"):
        model = jobs.model_version(ResourceId("FineTune", name))
        assert model.adapter and model.weights == "/store/fruit-sft", name
        assert model.base_model.name == "tiny-llama"
    assert jobs.model_version(ResourceId("FineTune", "base-lora")).weights is None
    assert jobs.model_version(FINE_TUNE).weights is None  # full weights of its own
    more = jobs.job(ResourceId("FineTune", "fruit-lora-more"))
    assert more.start_from is not None and more.start_from.weights == "/store/fruit-sft"
