"""Rendering specs into Kubernetes manifests (issue 5): values cannot subvert the templates,
every object validates against the Kubernetes schemas, and the output is pinned by golden files.

Regenerate the golden files after an intended change, and review the diff:

    TUNEOPS_UPDATE_GOLDEN=1 python -m pytest tests/unit/backends/kubernetes/test_render.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.backends.kubernetes.labels import FINGERPRINT_ANNOTATION
from reconciler.backends.kubernetes.manifests import cluster_context, render_project
from reconciler.backends.kubernetes.render import RenderError, environment, yaml_scalar
from reconciler.backends.kubernetes.validate import validate_manifests
from reconciler.backends.kubernetes.yaml_out import to_yaml
from reconciler.fingerprint import fingerprint_inputs
from reconciler.graph import DependencyGraph
from reconciler.jobs.jobfile import GitOrigin
from reconciler.specs.validate import validate_path
from tests.conftest import REPO_ROOT

GOLDEN = REPO_ROOT / "tests" / "testdata" / "golden"
EXAMPLES = REPO_ROOT / "specs-example"
FIXED_GIT = GitOrigin(repo="https://git.example.internal/ml/specs.git", commit="0" * 40)


def rendered_objects(root: Path) -> list[dict]:
    result = validate_path(root)
    assert result.valid, [p.text() for p in result.problems]
    specs = result.specs
    inputs = fingerprint_inputs(specs, DependencyGraph.from_specs(specs), {})
    rendered = render_project(specs, inputs, cluster_context(specs, FIXED_GIT, root))
    return [obj for item in rendered for obj in item.objects]


@given(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                 st.none()))
def test_a_quoted_value_reads_back_as_itself_whatever_it_holds(value):
    assert yaml.safe_load(f"key: {yaml_scalar(value)}\nother: 1\n") == {"key": value, "other": 1}


@given(st.dictionaries(st.text(min_size=1), st.one_of(st.text(), st.integers(), st.booleans())))
def test_printed_manifests_read_back_as_the_objects_rendered(data):
    """`tuneops render` prints multi-line values as literal blocks for review; whatever the text
    (trailing spaces, tabs, line-break characters), kubectl must read back what was rendered."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "data": data}
    assert list(yaml.safe_load_all(to_yaml([obj, obj]))) == [obj, obj]


def test_templates_cannot_print_an_unquoted_or_undefined_value():
    import jinja2

    env = environment()
    with pytest.raises(RenderError, match="not passed through the `q` filter"):
        env.from_string("name: {{ value }}").render(value="x\nkind: Secret")
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("name: {{ missing | q }}").render()
    with pytest.raises(RenderError, match="only scalars"):
        env.from_string("name: {{ value | q }}").render(value={"a": 1})


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_every_example_renders_to_objects_valid_for_kubernetes(version):
    objects = rendered_objects(EXAMPLES)
    assert validate_manifests(objects, version) == []
    kinds = {obj["kind"] for obj in objects}
    assert kinds == {"ConfigMap", "Job", "Service", "Deployment", "HorizontalPodAutoscaler"}
    for obj in objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "tuneops"
        assert meta["labels"]["tuneops.dev/kind"] and meta["labels"]["tuneops.dev/name"]
        assert len(meta["annotations"]["tuneops.dev/fingerprint"]) == 64
        assert len(meta["name"]) <= 63


def test_an_invalid_object_is_reported_with_where_it_is():
    [job] = [obj for obj in rendered_objects(EXAMPLES) if obj["kind"] == "Job"][:1]
    job["spec"]["backoffLimit"] = "two"
    job["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    problems = validate_manifests([job], "1.30")
    assert problems and all(p.startswith(f"Job/{job['metadata']['name']}: ") for p in problems)


def test_secrets_are_referenced_never_written():
    text = to_yaml(rendered_objects(EXAMPLES))
    assert "secretKeyRef" in text
    env = [e for obj in rendered_objects(EXAMPLES) if obj["kind"] == "Job"
           for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]]
    secret_names = {"HF_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert secret_names <= {e["name"] for e in env}
    assert all("value" not in e for e in env if e["name"] in secret_names)



def _tracking_uri(tmp_path: Path, uri: str, *, mlflow_secret: bool = True) -> Path:
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    settings = repo / "tuneops.yaml"
    text = settings.read_text().replace("http://mlflow.mlops.svc.cluster.local:5000", uri)
    if not mlflow_secret:
        text = text.replace("    mlflow: mlflow-auth", "")
    settings.write_text(text)
    return repo


@pytest.mark.parametrize("uri, in_job_files", [
    ("http://ci:planted-password@mlflow.mlops:5000", "http://mlflow.mlops:5000"),
    ("https://planted-token-in-user-name@mlflow.mlops", "https://mlflow.mlops"),
])
def test_credentials_in_the_tracking_uri_never_reach_a_manifest(tmp_path, uri, in_job_files):
    objects = rendered_objects(_tracking_uri(tmp_path, uri))
    text = to_yaml(objects)
    assert "planted" not in text
    job_files = [json.loads(obj["data"]["job.json"]) for obj in objects if obj["kind"] == "ConfigMap"]
    assert job_files and {job["mlflow"]["trackingUri"] for job in job_files} == {in_job_files}
    assert "MLFLOW_TRACKING_PASSWORD" in text  # from the Secret kubernetes.secrets.mlflow names


def test_credentials_in_the_tracking_uri_without_a_secret_for_pods_are_refused(tmp_path):
    repo = _tracking_uri(tmp_path, "http://ci:planted-password@mlflow.mlops:5000", mlflow_secret=False)
    with pytest.raises(RenderError, match="name it in kubernetes.secrets.mlflow") as refused:
        rendered_objects(repo)
    message = str(refused.value)
    assert "planted-password" not in message and "http://ci:***@mlflow.mlops:5000" in message


INJECTIONS = ['x"\nkind: Secret\n', "{{ 7 * 7 }}", "x\n---\napiVersion: v1\nkind: Secret", "a: b\n  c: d",
              "\u2028kind: Secret", "'; rm -rf /", "${HOME} $(id)"]


def _shape(value: object, path: str = "") -> set[str]:
    """Every key path in an object, and the length of every list: its shape, without the values."""
    if isinstance(value, dict):
        return {p for key, item in value.items() for p in _shape(item, f"{path}.{key}")} | {path}
    if isinstance(value, list):
        return {p for index, item in enumerate(value) for p in _shape(item, f"{path}[{index}]")} | {path}
    return {path}


def _with_values(repo: Path, value: str, launcher: str = "indexed-job") -> Path:
    """The example specs with `value` in free-text fields that reach the manifests: a
    description, an annotation, and the names of a data file and a chat template (the files
    exist), with the two-node fine-tune on `launcher`."""
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    quoted = yaml_scalar(value)
    file_name = value.replace("/", "_") or "_"
    base = repo / "base-models.yaml"
    text = base.read_text().replace("description: Meta Llama", f"description: {quoted}  # Meta", 1)
    (repo / "templates").mkdir()
    (repo / "templates" / f"{file_name}.jinja").write_text("{{ messages }}")
    template = yaml_scalar(f"file://templates/{file_name}.jinja")
    base.write_text(text.replace("chatTemplate: chatml", f"chatTemplate: {template}"))
    sft = repo / "fine-tunes" / "support-sft.yaml"
    sft.write_text(sft.read_text().replace("cost-center: ml-research", f"cost-center: {quoted}"))
    data = repo / "datasets" / "data"
    shutil.copyfile(data / "support-tickets.jsonl", data / file_name)
    tickets = repo / "datasets" / "support-tickets.yaml"
    tickets.write_text(tickets.read_text().replace("source: file://data/support-tickets.jsonl",
                                                   f"source: {yaml_scalar(f'file://data/{file_name}')}"))
    cpt = repo / "fine-tunes" / "docs-cpt.yaml"
    cpt.write_text(cpt.read_text().replace("launcher: indexed-job", f"launcher: {launcher}"))
    return repo


@pytest.mark.parametrize("launcher", ["indexed-job", "jobset", "pytorchjob"])
@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_through_string_fields_changes_no_object_and_no_key(tmp_path, payload, launcher):
    """Free-text fields (descriptions, annotation values, source and chat-template paths)
    carry the payload into the manifests; the set of objects and the shape of each stay those
    of a benign value, and the payload arrives intact as a value. (Names, labels, GPU products,
    priority classes and queue names cannot carry one: validation holds them to Kubernetes'
    syntax.)"""
    before = rendered_objects(_with_values(tmp_path / "benign", "benign", launcher))
    after = rendered_objects(_with_values(tmp_path / "payload", payload, launcher))
    assert [o["kind"] for o in after] == [o["kind"] for o in before]
    for old, new in zip(before, after, strict=True):
        assert _shape(new) == _shape(old), new["metadata"]["name"]
    job = next(o for o in after if o["kind"] == "Job"
               and o["metadata"]["labels"]["tuneops.dev/name"] == "support-sft")
    assert job["metadata"]["annotations"]["example.com/cost-center"] == payload
    assert job["spec"]["template"]["metadata"]["annotations"]["example.com/cost-center"] == payload
    assert "Secret" not in {o["kind"] for o in after}
    tickets = next(json.loads(o["data"]["job.json"]) for o in after if o["kind"] == "ConfigMap"
                   and o["metadata"]["labels"]["tuneops.dev/name"] == "support-tickets")
    assert tickets["source"] == f"file:///workspace/specs/datasets/data/{payload.replace('/', '_') or '_'}"


def test_a_two_node_fine_tune_is_an_indexed_job_with_a_headless_service():
    objects = rendered_objects(EXAMPLES)
    job = next(o for o in objects
               if o["kind"] == "Job" and o["metadata"]["labels"]["tuneops.dev/name"] == "docs-cpt")
    name = job["metadata"]["name"]
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == name)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name
    container = pod["containers"][0]
    command = container["command"]
    rank_env = next(e for e in container["env"] if e["name"] == "NODE_RANK")
    assert rank_env["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # What each pod runs: Kubernetes gives pod i the hostname <job>-i and completion index i.
    launched = []
    for index in range(spec["completions"]):
        argv = [arg.replace("$(NODE_RANK)", str(index)) for arg in command]
        launched.append((f"{name}-{index}.{pod['subdomain']}", argv[argv.index("--node_rank") + 1],
                         argv[argv.index("--master_addr") + 1], argv[argv.index("--nnodes") + 1]))
    assert [rank for _, rank, _, _ in launched] == ["0", "1"]
    assert {addr for _, _, addr, _ in launched} == {launched[0][0]}  # everyone meets at pod 0
    assert command[:3] == ["torchrun", "--nproc_per_node", "8"]


def test_an_indexed_jobs_pod_hostnames_fit_a_dns_label_whatever_the_name(tmp_path):
    """Kubernetes names pod i of an Indexed Job `<job>-<i>` (its hostname, a DNS-1123 label):
    a long FineTune name leaves room for the index."""
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    spec = repo / "fine-tunes" / "docs-cpt.yaml"
    long_name = "docs-continued-pretraining-on-the-product-documentation-v2"
    spec.write_text(spec.read_text().replace("name: docs-cpt", f"name: {long_name}"))
    job = next(o for o in rendered_objects(repo)
               if o["kind"] == "Job" and o["metadata"]["labels"]["tuneops.dev/name"] == long_name)
    last_pod = f"{job['metadata']['name']}-{job['spec']['completions'] - 1}"
    assert len(last_pod) <= 63, last_pod
    assert len(f"{job['metadata']['name']}-9999") <= 63


def test_rendered_manifests_match_the_golden_files():
    objects = rendered_objects(EXAMPLES)
    text = to_yaml(objects).replace(str(REPO_ROOT), "<repo>")
    golden = GOLDEN / "specs-example.yaml"
    if os.environ.get("TUNEOPS_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "rendered manifests changed: regenerate (see this module's docstring)"


def test_a_project_without_shared_storage_or_mlflow_server_is_told_what_to_set(tmp_path):
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    settings = repo / "tuneops.yaml"
    settings.write_text(settings.read_text().replace("  storageClaim: tuneops-store", ""))
    with pytest.raises(RenderError, match="set kubernetes.storageClaim"):
        rendered_objects(repo)


@pytest.mark.slow
def test_the_wheel_ships_the_templates(tmp_path):
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling (the dev extra)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO_ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("tuneops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {f"reconciler/templates/{path.name}" for path in (REPO_ROOT / "templates").glob("*.j2")}
    assert {"reconciler/templates/job.yaml.j2", "reconciler/templates/_job_pod.yaml.j2"} <= shipped
    assert shipped <= set(names)


def _on_launcher(tmp_path: Path, launcher: str, settings: str = "") -> list[dict]:
    """The examples with the two-node docs-cpt fine-tune started by `launcher` (and lines added
    to tuneops.yaml's kubernetes block)."""
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    spec = repo / "fine-tunes" / "docs-cpt.yaml"
    spec.write_text(spec.read_text().replace("launcher: indexed-job", f"launcher: {launcher}"))
    project = repo / "tuneops.yaml"
    text = project.read_text()
    project.write_text(text.replace("  multiNode: indexed-job\n", f"  multiNode: indexed-job\n{settings}"))
    return rendered_objects(repo)


def _docs_cpt(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["metadata"]["labels"]["tuneops.dev/name"] == "docs-cpt"]


@pytest.mark.parametrize("version", ["1.30", "1.33"])
@pytest.mark.parametrize("launcher", ["jobset", "pytorchjob"])
def test_every_launcher_renders_objects_valid_for_kubernetes(tmp_path, launcher, version):
    objects = _on_launcher(tmp_path, launcher)
    assert validate_manifests(objects, version) == []
    kind = {"jobset": "JobSet", "pytorchjob": "PyTorchJob"}[launcher]
    assert [o["kind"] for o in _docs_cpt(objects)] == ["ConfigMap", kind]  # no Service: the launcher makes it


def test_a_two_node_jobset_restarts_all_nodes_together_and_meets_at_node_0(tmp_path):
    _, jobset = _docs_cpt(_on_launcher(tmp_path, "jobset"))
    name = jobset["metadata"]["name"]
    assert len(name) <= 47  # its pods' hostnames <jobset>-node-0-<i> and names stay within 63
    spec = jobset["spec"]
    assert spec["failurePolicy"] == {"maxRestarts": 1}  # maxAttempts 2
    assert spec["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True}
    [node] = spec["replicatedJobs"]
    job = node["template"]["spec"]
    assert (node["name"], node["replicas"]) == ("node", 1)
    assert (job["completionMode"], job["completions"], job["parallelism"], job["backoffLimit"]) == \
        ("Indexed", 2, 2, 0)
    assert node["template"]["metadata"]["annotations"][FINGERPRINT_ANNOTATION] == \
        jobset["metadata"]["annotations"][FINGERPRINT_ANNOTATION]
    container = job["template"]["spec"]["containers"][0]
    rank = next(e for e in container["env"] if e["name"] == "NODE_RANK")
    assert rank["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # JobSet names pod i of its one Job <jobset>-node-0-i, in the subdomain <jobset>.
    launched = [[arg.replace("$(NODE_RANK)", str(index)) for arg in container["command"]]
                for index in range(2)]
    assert [argv[argv.index("--node_rank") + 1] for argv in launched] == ["0", "1"]
    assert {argv[argv.index("--master_addr") + 1] for argv in launched} == {f"{name}-node-0-0.{name}"}


def test_a_two_node_pytorchjob_has_one_master_and_leaves_ranks_to_the_operator(tmp_path):
    _, job = _docs_cpt(_on_launcher(tmp_path, "pytorchjob"))
    spec = job["spec"]
    assert spec["nprocPerNode"] == "8"
    assert spec["runPolicy"]["backoffLimit"] == 4  # restarts over both nodes: 2 attempts each
    assert spec["runPolicy"]["cleanPodPolicy"] == "Running"
    replicas = spec["pytorchReplicaSpecs"]
    assert {kind: r["replicas"] for kind, r in replicas.items()} == {"Master": 1, "Worker": 1}
    for replica in replicas.values():
        assert replica["restartPolicy"] == "OnFailure"
        pod = replica["template"]["spec"]
        [container] = pod["containers"]
        assert container["name"] == "pytorch"  # the operator injects its environment into this one
        assert container["ports"] == [{"containerPort": 23456, "name": "pytorchjob-port"}]
        assert container["command"][:5] == ["torchrun", "--nproc_per_node", "8", "--nnodes", "2"]
        assert "--node_rank" not in container["command"] and "--master_addr" not in container["command"]
        assert "NODE_RANK" not in {e["name"] for e in container["env"]}


def test_pytorchjobs_without_the_pytorch_container_are_refused(tmp_path):
    _, job = _docs_cpt(_on_launcher(tmp_path, "pytorchjob"))
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"] = "trainer"
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 1
    problems = validate_manifests([job], "1.30")
    name = job["metadata"]["name"]
    assert f"PyTorchJob/{name}: the training operator needs a container named 'pytorch' (at " \
           "spec.pytorchReplicaSpecs.Master.template.spec.containers)" in problems
    # The pod templates it embeds are checked against the Kubernetes schemas too.
    assert any(p.startswith(f"PyTorchJob/{name} spec.pytorchReplicaSpecs.Worker.template: 1 is not of type")
               for p in problems), problems


@pytest.mark.parametrize("queueing", ["kueue", "volcano"])
@pytest.mark.parametrize("launcher", ["jobset", "pytorchjob"])
def test_queues_hold_every_node_of_a_launcher_together(tmp_path, launcher, queueing):
    """Kueue admits the whole workload (created suspended, its queue label on it); Volcano
    gang-schedules it: a PodGroup of every node for a JobSet's pods, or the training operator's
    own PodGroup from the PyTorchJob's schedulingPolicy."""
    repo = tmp_path / "queued"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    spec = repo / "fine-tunes" / "docs-cpt.yaml"
    queued = "  scheduling:\n    queue: gpu-training\n    priority: ml-batch\n  suspend: true"
    spec.write_text(spec.read_text().replace("launcher: indexed-job", f"launcher: {launcher}")
                    .replace("  suspend: true", queued))
    project = repo / "tuneops.yaml"
    project.write_text(project.read_text().replace("  multiNode: indexed-job\n",
                                                   f"  multiNode: indexed-job\n  queueing: {queueing}\n"))
    objects = rendered_objects(repo)
    assert validate_manifests(objects, "1.30") == []
    found = {o["kind"]: o for o in _docs_cpt(objects)}
    workload = found["JobSet" if launcher == "jobset" else "PyTorchJob"]
    pods = ([workload["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]] if launcher == "jobset"
            else [r["template"] for r in workload["spec"]["pytorchReplicaSpecs"].values()])
    policy = workload["spec"] if launcher == "jobset" else workload["spec"]["runPolicy"]
    suspended = policy.get("suspend")
    if queueing == "kueue":
        assert workload["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-training"
        assert suspended is True
        assert set(found) == {"ConfigMap", workload["kind"]}
    elif launcher == "jobset":
        assert suspended is None and "kueue.x-k8s.io/queue-name" not in workload["metadata"]["labels"]
        assert found["PodGroup"]["spec"] == {"minMember": 2, "queue": "gpu-training",
                                             "priorityClassName": "ml-batch"}
        assert all(pod["spec"]["schedulerName"] == "volcano" for pod in pods)
        assert all(pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] ==
                   workload["metadata"]["name"] for pod in pods)
    else:
        assert "PodGroup" not in found  # the operator makes it, and sets the scheduler
        assert workload["spec"]["runPolicy"]["schedulingPolicy"] == {
            "minAvailable": 2, "queue": "gpu-training", "priorityClass": "ml-batch"}
        assert all("schedulerName" not in pod["spec"] for pod in pods)
    assert all(pod["spec"]["priorityClassName"] == "ml-batch" for pod in pods)


def test_launcher_manifests_match_the_golden_file(tmp_path):
    objects = [o for launcher in ("jobset", "pytorchjob")
               for o in _docs_cpt(_on_launcher(tmp_path / launcher, launcher))]
    text = to_yaml(objects)
    golden = GOLDEN / "launchers.yaml"
    if os.environ.get("TUNEOPS_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "rendered manifests changed: regenerate (see this module's docstring)"


def test_an_autoscaled_server_leaves_its_replicas_to_the_autoscaler(tmp_path):
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in rendered_objects(EXAMPLES)}
    deployment = objects[("Deployment", "support-bot")]
    hpa = objects[("HorizontalPodAutoscaler", "support-bot")]
    assert "replicas" not in deployment["spec"]  # applying it never fights the HPA
    assert deployment["metadata"]["annotations"]["tuneops.dev/autoscaled"] == "true"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "support-bot"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "vllm:num_requests_waiting"},
        "target": {"type": "AverageValue", "averageValue": "5"}}}]

    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    spec = repo / "deployments" / "support-bot.yaml"
    text = spec.read_text()
    spec.write_text(text[:text.index("  autoscaling:")] + text[text.index("  resources:"):])
    fixed = {(obj["kind"], obj["metadata"]["name"]): obj for obj in rendered_objects(repo)}
    assert ("HorizontalPodAutoscaler", "support-bot") not in fixed
    assert fixed[("Deployment", "support-bot")]["spec"]["replicas"] == 2


def test_the_built_in_server_runs_from_the_trainer_image_with_its_job_file(tmp_path):
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    spec = repo / "deployments" / "support-bot.yaml"
    spec.write_text(spec.read_text().replace("runtime: vllm", "runtime: transformers"))
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in rendered_objects(repo)}
    pod = objects[("Deployment", "support-bot")]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"] == "registry.example.internal/ml/tuneops-trainer:0.1.0"
    assert server["command"] == ["python", "-m", "reconciler", "run", "serve", "--job",
                                 "/etc/tuneops/job.json"]
    assert {"name": "job-file", "configMap": {"name": "support-bot"}} in pod["volumes"]
    job = json.loads(objects[("ConfigMap", "support-bot")]["data"]["job.json"])
    assert job["serve"] == {"host": "0.0.0.0", "port": 8000}  # reachable through the Service



def test_volcano_pod_groups_are_checked_against_their_crd_structure(tmp_path):
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    settings = repo / "tuneops.yaml"
    settings.write_text(settings.read_text().replace("  multiNode: indexed-job\n",
                                                     "  multiNode: indexed-job\n  queueing: volcano\n"))
    objects = rendered_objects(repo)
    groups = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "PodGroup"}
    # support-sft, support-dpo and the four alignment examples (rm, grpo, kto, orpo) name a queue
    assert len(groups) == 6
    sft = next(group for name, group in groups.items() if name.startswith("support-sft-"))
    assert sft["spec"] == {"minMember": 1, "queue": "gpu-training", "priorityClassName": "ml-batch"}
    assert validate_manifests(objects, "1.30") == []

    broken = {**sft, "spec": {"minMember": "one", "queue": "gpu-training", "minAvailable": 1}}
    problems = validate_manifests([broken], "1.30")
    assert len(problems) == 2 and all(p.startswith(f"PodGroup/{sft['metadata']['name']}: ") for p in problems)
    assert any("'one' is not of type 'integer' (at spec.minMember)" in p for p in problems)
    assert any("'minAvailable' was unexpected" in p for p in problems)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ml"}}
    assert validate_manifests([unknown], "1.30") == ["Widget/w: no schema for example.com/v1 Widget"]


def test_a_kubernetes_version_the_schemas_do_not_cover_is_one_clear_problem():
    objects = rendered_objects(EXAMPLES)
    [problem] = validate_manifests(objects, "1.99")
    assert problem.startswith("kubernetes.version 1.99: kubernetes-validate does not support version 1.99 "
                              "(newest: 1.")
    assert problem.endswith("set an older one in tuneops.yaml or upgrade it")


def test_the_fast_schema_check_finds_what_kubernetes_validate_finds(monkeypatch):
    """The per-kind compiled check leans on kubernetes-validate's module; where a release differs,
    its own `validate` is used, and reports the same."""
    from reconciler.backends.kubernetes import validate
    objects = rendered_objects(EXAMPLES)
    broken = {**objects[1], "spec": {**objects[1]["spec"], "backoffLimit": "two", "backofLimit": 1}}
    fast = validate_manifests([*objects, broken], "1.30")
    assert len(fast) == 1 and fast[0].startswith(f"Job/{broken['metadata']['name']}: ")

    def moved(*args: object) -> None:
        raise AttributeError("kubernetes_validate.utils has no latest_version")

    monkeypatch.setattr(validate, "_openapi_validator", moved)
    assert validate_manifests([*objects, broken], "1.30") == fast


def test_a_job_reading_spec_files_is_told_its_roots_in_the_manifest(tmp_path):
    """The folders a pod's job may read file:// paths from (the checkout and the allowed roots)
    are set in the Job's environment, not left to its job file; jobs that read none get none."""
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    settings = repo / "tuneops.yaml"
    allowed = "  trustRemoteCode: deny\n  allowedFileRoots: [/data/shared]"
    settings.write_text(settings.read_text().replace("  trustRemoteCode: deny", allowed))
    roots = {}
    for obj in rendered_objects(repo):
        if obj["kind"] == "Job":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            env = {item["name"]: item.get("value") for item in container.get("env", [])}
            labels = obj["metadata"]["labels"]
            resource = f"{labels['tuneops.dev/kind']}/{labels['tuneops.dev/name']}"
            roots[resource] = env.get("TUNEOPS_FILE_ROOTS")
    assert roots["Dataset/support-tickets"] == "/workspace/specs:/data/shared"
    assert roots["Dataset/product-docs"] is None  # an s3:// source


def test_names_and_labels_kubernetes_refuses_are_problems_of_the_rendered_objects_too():
    """The second line, behind validation: what reaches a manifest another way (a Deployment
    named 1bot on the local backend, where its Service name is only a warning) stops render."""
    objects = rendered_objects(EXAMPLES)
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "support-bot")
    bad = {**service, "metadata": {**service["metadata"], "name": "1bot",
                                   "labels": {"team\n": "x", "ok": "not ok"}}}
    problems = validate_manifests([bad], "1.30")
    assert problems[0] == "Service/1bot: metadata.name '1bot': a Service name must be a DNS-1035 label " \
                          "(start with a letter)"
    assert any("metadata.labels key 'team\\n'" in p for p in problems)
    assert any("metadata.labels['ok'] 'not ok'" in p for p in problems)
    job = next(o for o in objects if o["kind"] == "Job")
    long_job = {**job, "metadata": {**job["metadata"], "name": "j" * 64}}
    assert any("at most 63 characters" in p for p in validate_manifests([long_job], "1.30"))


def _judged_examples(tmp_path: Path, *, judge_secret: bool) -> Path:
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    evaluation = repo / "evaluations" / "support-quality.yaml"
    evaluation.write_text(evaluation.read_text().replace(
        "    maxRegression: 0.0\n", "    maxRegression: 0.0\n  judge:\n    endpoint:\n"
        "      url: https://judge.example.com/v1\n      apiKeySecret: JUDGE_API_KEY\n"
        "    rubric: Prefer correct answers.\n", 1))
    if judge_secret:
        settings = repo / "tuneops.yaml"
        text = settings.read_text()
        secrets = "    mlflow: mlflow-auth\n    judge: judge-keys"
        settings.write_text(text.replace("    mlflow: mlflow-auth", secrets))
    return repo


def test_a_judge_key_reaches_the_evaluation_pod_from_its_secret_only(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", "sk-planted-judge-key")
    objects = rendered_objects(_judged_examples(tmp_path, judge_secret=True))
    assert "sk-planted" not in to_yaml(objects)
    env = {obj["metadata"]["name"]: obj["spec"]["template"]["spec"]["containers"][0]["env"]
           for obj in objects if obj["kind"] == "Job"}
    judged = [name for name, entries in env.items() if any(e["name"] == "JUDGE_API_KEY" for e in entries)]
    assert len(judged) == 1 and "support-sft-quality" in judged[0], judged
    [entry] = [e for e in env[judged[0]] if e["name"] == "JUDGE_API_KEY"]
    assert entry == {"name": "JUDGE_API_KEY",
                     "valueFrom": {"secretKeyRef": {"name": "judge-keys", "key": "JUDGE_API_KEY"}}}


def test_a_judge_key_without_a_secret_for_pods_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(RenderError, match=r"^Evaluation/support-sft-quality's judge reads its API key from "
                                          r"JUDGE_API_KEY: .* kubernetes.secrets.judge in tuneops.yaml$"):
        rendered_objects(_judged_examples(tmp_path, judge_secret=False))
