"""A project's manifests (manifests.py): a tiny project declared inline renders the objects users
and the cluster depend on: Jobs named after their resource and fingerprint, our labels and
annotations, upstream outputs at the location they will have once built, storage and MLflow
reachable from a pod, and a server for the Deployment."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from reconciler.backends.kubernetes.labels import FINGERPRINT_ANNOTATION, KIND_LABEL, NAME_LABEL
from reconciler.backends.kubernetes.manifests import cluster_context, launcher_of, render_project
from reconciler.backends.kubernetes.render import STORAGE_MOUNT, RenderError
from reconciler.backends.kubernetes.validate import validate_manifests
from reconciler.fingerprint import fingerprint_inputs
from reconciler.graph import DependencyGraph
from reconciler.jobs.jobfile import GitOrigin
from reconciler.specs.base import ResourceId
from reconciler.specs.validate import validate_path

GIT = GitOrigin(repo="https://git.example.internal/ml/specs.git", commit="1" * 40)
SETTINGS = """\
    backend: kubernetes
    mlflow:
      trackingUri: http://mlflow.mlops.svc:5000
      experiment: tiny
    kubernetes:
      namespace: ml
      image: registry.example.internal/tuneops-trainer:1
      version: "1.30"
      storageClaim: tuneops-store
"""
SPECS = {
    "base-model.yaml": """\
        apiVersion: tuneops.dev/v1alpha1
        kind: BaseModel
        metadata:
          name: qwen-small
        spec:
          source: hf://Qwen/Qwen2.5-0.5B-Instruct
          revision: 7ae557604adf67be50417f59c2c2f167def9a775
          chatTemplate: chatml
          license: apache-2.0
    """,
    "dataset.yaml": """\
        apiVersion: tuneops.dev/v1alpha1
        kind: Dataset
        metadata:
          name: docs
        spec:
          source: s3://bucket/docs.parquet
          schema:
            type: instruction
          split:
            train: 0.9
            validation: 0.1
            test: 0.0
    """,
    "fine-tune.yaml": """\
        apiVersion: tuneops.dev/v1alpha1
        kind: FineTune
        metadata:
          name: docs-lora
          labels:
            team: docs
        spec:
          baseModel: qwen-small
          datasets:
            - name: docs
          method: sft
          adapter:
            type: lora
            r: 16
          training:
            epochs: 1
          resources:
            gpusPerNode: 1
            gpuProduct: NVIDIA-L4
    """,
    "deployment.yaml": """\
        apiVersion: tuneops.dev/v1alpha1
        kind: Deployment
        metadata:
          name: docs-bot
        spec:
          model:
            fineTune: docs-lora
          allowUngated: true
          runtime: vllm
          resources:
            gpus: 1
    """,
}


def tiny_project(root: Path, settings: str = SETTINGS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tuneops.yaml").write_text(textwrap.dedent(settings))
    for name, text in SPECS.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def rendered(root: Path) -> dict[ResourceId, list[dict]]:
    result = validate_path(root)
    assert result.valid, [problem.text() for problem in result.problems]
    specs = result.specs
    inputs = fingerprint_inputs(specs, DependencyGraph.from_specs(specs), {})
    return {item.resource: list(item.objects)
            for item in render_project(specs, inputs, cluster_context(specs, GIT, root))}


def only(objects: list[dict], kind: str) -> dict:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


def job_file(objects: list[dict]) -> dict:
    return json.loads(only(objects, "ConfigMap")["data"]["job.json"])


def test_every_runnable_resource_renders_valid_objects_in_dependency_order(tmp_path):
    manifests = rendered(tiny_project(tmp_path / "specs"))
    assert list(manifests) == [ResourceId("Dataset", "docs"), ResourceId("FineTune", "docs-lora"),
                               ResourceId("Deployment", "docs-bot")]  # a BaseModel runs nothing
    objects = [obj for objects in manifests.values() for obj in objects]
    assert validate_manifests(objects, "1.30") == []
    assert {obj["metadata"]["namespace"] for obj in objects} == {"ml"}


def test_a_job_carries_our_labels_its_fingerprint_and_the_specs_labels(tmp_path):
    objects = rendered(tiny_project(tmp_path / "specs"))[ResourceId("FineTune", "docs-lora")]
    job, spec = only(objects, "Job"), job_file(objects)
    fingerprint = spec["fingerprint"]
    assert job["metadata"]["name"] == f"docs-lora-finetune-{fingerprint[:10]}"
    labels = job["metadata"]["labels"]
    assert labels[KIND_LABEL] == "FineTune" and labels[NAME_LABEL] == "docs-lora"
    assert labels["app.kubernetes.io/managed-by"] == "tuneops" and labels["team"] == "docs"
    assert job["metadata"]["annotations"][FINGERPRINT_ANNOTATION] == fingerprint
    assert job["metadata"]["annotations"]["tuneops.dev/git-commit"] == GIT.commit
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_an_upstream_not_built_yet_is_read_where_its_job_will_write(tmp_path):
    manifests = rendered(tiny_project(tmp_path / "specs"))
    dataset = job_file(manifests[ResourceId("Dataset", "docs")])
    fine_tune = job_file(manifests[ResourceId("FineTune", "docs-lora")])
    (upstream,) = fine_tune["datasets"]
    assert upstream["location"] == f"{STORAGE_MOUNT}/datasets/docs/{dataset['fingerprint'][:16]}"
    assert upstream["fingerprint"] == dataset["fingerprint"] and upstream["digest"] == "pending"
    assert dataset["storageRoot"] == STORAGE_MOUNT
    assert fine_tune["mlflow"]["trackingUri"] == "http://mlflow.mlops.svc:5000"


def test_the_deployment_serves_the_adapter_under_its_own_name(tmp_path):
    objects = rendered(tiny_project(tmp_path / "specs"))[ResourceId("Deployment", "docs-bot")]
    deployment = only(objects, "Deployment")
    assert deployment["metadata"]["name"] == "docs-bot"
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["vllm", "serve", "Qwen/Qwen2.5-0.5B-Instruct"]
    assert "--enable-lora" in command and command[command.index("--max-lora-rank") + 1] == "16"
    assert only(objects, "Service")["metadata"]["name"] == "docs-bot"


def test_a_single_node_fine_tune_is_a_plain_job(tmp_path):
    result = validate_path(tiny_project(tmp_path / "specs"))
    assert launcher_of(result.specs, ResourceId("FineTune", "docs-lora")) is None


def test_jobs_in_the_cluster_need_storage_a_pod_reaches(tmp_path):
    root = tiny_project(tmp_path / "specs", SETTINGS.replace("      storageClaim: tuneops-store\n", ""))
    with pytest.raises(RenderError, match="shared storage"):
        rendered(root)


SWEEP = """\
    apiVersion: tuneops.dev/v1alpha1
    kind: Sweep
    metadata:
      name: docs-lr
    spec:
      fineTune: docs-lora
      objective: {evaluation: docs-quality, metric: rougeL}
      parameters:
        training.learningRate: {logUniform: [1.0e-5, 1.0e-3]}
        adapter.r: {choice: [8, 32]}
"""
EVALUATION = """\
    apiVersion: tuneops.dev/v1alpha1
    kind: Evaluation
    metadata:
      name: docs-quality
    spec:
      model: {fineTune: docs-lora}
      dataset: {name: docs, split: validation}
      metrics: [rougeL]
"""


def test_a_sweep_trial_renders_with_its_templates_labels_and_resources(tmp_path):
    from reconciler.backends.kubernetes.manifests import planned_run, render_job_file
    from reconciler.jobs.builder import JobBuilder
    from reconciler.specs.sweep import SweepResource
    from reconciler.sweeps.trials import materialize, with_trials

    root = tiny_project(tmp_path / "specs")
    (root / "sweep.yaml").write_text(textwrap.dedent(SWEEP))
    (root / "evaluation.yaml").write_text(textwrap.dedent(EVALUATION))
    result = validate_path(root)
    assert result.valid, [problem.text() for problem in result.problems]
    specs = result.specs
    inputs = fingerprint_inputs(specs, DependencyGraph.from_specs(specs), {})
    sweep = specs.resource(ResourceId("Sweep", "docs-lr"), SweepResource)
    trial = materialize(specs, inputs, sweep, {"training.learningRate": 1e-4, "adapter.r": 32})
    trial_specs, trial_inputs = with_trials(specs, inputs, [trial])
    context = cluster_context(specs, GIT, root)
    builder = JobBuilder(trial_specs, trial_inputs, context, planned_run(str(context.storage_root)))
    for rid in (trial.fine_tune_id, trial.evaluation_id("docs-quality")):
        objects = list(render_job_file(specs, builder.job(rid)).objects)  # the backend knows no trials
        assert validate_manifests(objects, "1.30") == []
        job, spec = only(objects, "Job"), job_file(objects)
        assert spec["name"] == rid.name and job["metadata"]["labels"][NAME_LABEL] == rid.name
    assert spec["model"]["fineTune"] == trial.fine_tune_id.name
    fine_tune = only(list(render_job_file(specs, builder.job(trial.fine_tune_id)).objects), "Job")
    assert fine_tune["metadata"]["labels"]["team"] == "docs"  # the template's labels
    assert job_file([only(list(render_job_file(specs, builder.job(trial.fine_tune_id)).objects),
                          "ConfigMap")])["spec"]["adapter"]["r"] == 32
