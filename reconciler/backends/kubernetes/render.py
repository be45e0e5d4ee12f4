"""Specs -> Kubernetes manifests, through Jinja templates that values cannot subvert.

Every `{{ }}` in a template must pass its value through the `q` filter, which writes one quoted
JSON scalar (a string is escaped, so `"x\\nkind: Secret"` or `{{ }}` stay inside it); the
environment's `finalize` refuses any other value, so a template cannot forget. Undefined names
are errors (StrictUndefined). The rendered YAML is parsed back into objects, which validate.py
checks against the Kubernetes OpenAPI schemas for the configured version (kubernetes-validate).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reconciler.backends.kubernetes.labels import (
    AUTOSCALED_ANNOTATION,
    FINGERPRINT_ANNOTATION,
    KIND_LABEL,
    MODEL_FINGERPRINT_ANNOTATION,
    MODEL_VERSION_ANNOTATION,
    NAME_LABEL,
    object_name,
    resource_labels,
)
from reconciler.config import KubernetesSettings, ProjectSettings
from reconciler.errors import PermanentError
from reconciler.jobs.jobfile import BaseModelRef, JobFile, ServeOptions
from reconciler.specs.base import ResourceId, team_of
from reconciler.specs.confinement import FILE_ROOTS_ENV
from reconciler.specs.deployment import DeploymentResource, DeploymentSpec

if TYPE_CHECKING:
    import jinja2

JOB_FILE_PATH = "/etc/tuneops/job.json"
STORAGE_MOUNT = "/mnt/tuneops"
CHECKOUT_MOUNT = "/workspace/specs"  # the spec repository at the job's commit (its file:// sources)
GIT_CREDENTIALS_MOUNT = "/etc/tuneops-git"
RENDEZVOUS_PORT = 29500
PYTORCHJOB_PORT = 23456  # the training operator's default `pytorchjob-port`
LAUNCHERS = ("indexed-job", "jobset", "pytorchjob")
SERVER_PORT = 8000
# Characters YAML treats as line breaks or refuses in a stream, which JSON leaves raw.
_YAML_UNSAFE = {0x85, 0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF} | set(range(0x7F, 0xA0))


class RenderError(PermanentError, ValueError):
    """A template or value that cannot become a manifest (a bug in a template, or a setting)."""


class Quoted(str):
    """A value already written as a YAML scalar by `q`."""


def yaml_scalar(value: Any) -> Quoted:
    """One value as a quoted JSON scalar, which is also a YAML scalar of the same value."""
    if value is None or isinstance(value, bool | int):
        return Quoted(json.dumps(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RenderError(f"cannot render {value!r}")
        mantissa, e, exponent = json.dumps(value).partition("e")
        if e and "." not in mantissa:  # YAML 1.1 (PyYAML, Kubernetes) reads 1e-05 as a string
            mantissa += ".0"
        return Quoted(mantissa + e + exponent)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return Quoted("".join(f"\\u{ord(c):04x}" if ord(c) in _YAML_UNSAFE else c for c in text))
    if type(value).__name__ == "StrictUndefined":
        str(value)  # raises jinja2's UndefinedError, naming the missing variable
    raise RenderError(f"only scalars can be rendered, not {type(value).__name__}")


def _finalize(value: Any) -> Any:
    if isinstance(value, Quoted):
        return value
    raise RenderError(f"template value {value!r} was not passed through the `q` filter")


def template_dir() -> Path:
    """`templates/` beside the package in a wheel (reconciler/templates), else at the repo root."""
    package = Path(__file__).resolve().parents[2]  # reconciler/
    packaged = package / "templates"
    return packaged if packaged.is_dir() else package.parent / "templates"


@functools.cache
def environment() -> jinja2.Environment:
    """One environment per process: it compiles each template once and keeps it."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             finalize=_finalize, keep_trailing_newline=True)
    env.filters["q"] = yaml_scalar
    return env


@dataclass(frozen=True)
class Rendered:
    """The manifests of one resource, as parsed objects."""

    resource: ResourceId
    objects: tuple[dict[str, Any], ...]


def _pairs(mapping: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return sorted(mapping.items())


def _secret_env(k8s: KubernetesSettings) -> list[tuple[str, str, str]]:
    """Credentials only as references to Secrets: a manifest, a plan or a log never holds them."""
    found = []
    if k8s.secrets.hugging_face:
        found.append(("HF_TOKEN", k8s.secrets.hugging_face, "token"))
    if k8s.secrets.mlflow:
        found += [("MLFLOW_TRACKING_USERNAME", k8s.secrets.mlflow, "username"),
                  ("MLFLOW_TRACKING_PASSWORD", k8s.secrets.mlflow, "password")]
    if k8s.secrets.storage:
        found += [("AWS_ACCESS_KEY_ID", k8s.secrets.storage, "accessKeyId"),
                  ("AWS_SECRET_ACCESS_KEY", k8s.secrets.storage, "secretAccessKey")]
    return found


def _judge_key_env(job: JobFile, k8s: KubernetesSettings) -> list[tuple[str, str, str]]:
    """An Evaluation's judge key: the variable its spec names, from `kubernetes.secrets.judge`."""
    endpoint = ((job.spec.get("judge") or {}).get("endpoint") or {}) if job.kind == "Evaluation" else {}
    variable = endpoint.get("apiKeySecret")
    if not variable:
        return []
    if not k8s.secrets.judge:
        raise RenderError(f"{job.kind}/{job.name}'s judge reads its API key from {variable}: put the key "
                          f"in a Secret under the key {variable} and name the Secret in "
                          "kubernetes.secrets.judge in tuneops.yaml")
    return [(variable, k8s.secrets.judge, variable)]


def _node_selector(gpu_product: str | None) -> list[tuple[str, str]]:
    return [("nvidia.com/gpu.product", gpu_product)] if gpu_product else []


def _scheduling(k8s: KubernetesSettings, queue: str | None) -> dict[str, Any]:
    if not queue:
        return {"queue": None, "scheduler_name": None}
    if k8s.queueing == "volcano":
        return {"queue": None, "scheduler_name": "volcano"}
    return {"queue": queue, "scheduler_name": None}


def rendezvous_host(launcher: str, job_name: str) -> str:
    """The DNS name of node 0, where every node's torchrun meets: pod 0 of the Indexed Job
    behind its headless Service, or pod 0 of the JobSet's one Job behind the JobSet's."""
    return f"{job_name}-0.{job_name}" if launcher == "indexed-job" else f"{job_name}-node-0-0.{job_name}"


def job_command(job: JobFile, nodes: int, processes_per_node: int, job_name: str,
                launcher: str = "indexed-job") -> list[str]:
    run = ["reconciler", "run", job.command, "--job", JOB_FILE_PATH]
    if nodes <= 1 and processes_per_node <= 1 and launcher != "pytorchjob":
        return ["python", "-m", *run]
    command = ["torchrun", "--nproc_per_node", str(processes_per_node)]
    if launcher == "pytorchjob":  # the node rank and node 0's address come as PET_* from the operator
        command += ["--nnodes", str(nodes)]
    elif nodes > 1:
        command += ["--nnodes", str(nodes), "--node_rank", "$(NODE_RANK)",
                    "--master_addr", rendezvous_host(launcher, job_name),
                    "--master_port", str(RENDEZVOUS_PORT)]
    return [*command, "-m", *run]


def checkout_context(job: JobFile, k8s: KubernetesSettings) -> dict[str, Any] | None:
    """The init container that checks the job's in-repository sources out, from the trainer
    image, with the Git credentials Secret mounted when one is set."""
    if job.checkout is None:
        return None
    if not job.git.repo or not job.git.commit:
        raise RenderError(f"{job.kind}/{job.name} reads {', '.join(job.checkout.paths)} from the spec "
                          "repository, which pods check out at the job's commit: the spec folder must be "
                          "a Git repository with a commit and a remote 'origin'")
    if not k8s.image:
        raise RenderError("kubernetes.image is not set in tuneops.yaml: the trainer image also checks out "
                          "the spec repository's files for jobs that read them (see docs/kubernetes.md)")
    return {"into": job.checkout.into, "image": k8s.image, "git_secret": k8s.secrets.git,
            "credentials": GIT_CREDENTIALS_MOUNT,
            "command": ["python", "-m", "reconciler", "run", "checkout", "--job", JOB_FILE_PATH]}


def reads_spec_files(job: JobFile) -> bool:
    """Whether the job reads a file:// path a spec named: a Dataset's data, a base model's folder
    or chat template (a trained model's folder is in storage, which jobs own)."""
    bases = [job.base_model, job.start_from.base_model if job.start_from else None]
    for model in (job.model, job.baseline):
        bases.append(model if isinstance(model, BaseModelRef) else model.base_model if model else None)
    named = [job.source] + [value for base in bases if base for value in (base.source, base.chat_template)]
    return any(value and (value.startswith("file://") or value.startswith("/")) for value in named)


def _file_roots_env(job: JobFile, settings: ProjectSettings) -> list[tuple[str, str]]:
    """Where a pod's job may read file:// paths from (specs/confinement.py): the checkout and the
    allowed roots, set here, in the manifest, rather than trusted from the job file."""
    if not reads_spec_files(job):
        return []
    return [(FILE_ROOTS_ENV, os.pathsep.join([CHECKOUT_MOUNT, *settings.policy.allowed_file_roots]))]


def render_job(job: JobFile, labels: Mapping[str, str], settings: ProjectSettings, *,
               spec_annotations: Mapping[str, str] | None = None,
               nodes: int = 1, gpus_per_node: int = 0, gpu_product: str | None = None,
               cpu: str | None = None, memory: str | None = None, queue: str | None = None,
               priority: str | None = None, launcher: str | None = None,
               processes_per_node: int | None = None) -> Rendered:
    """A job's ConfigMap and workload. `launcher` starts several nodes (indexed-job, jobset,
    pytorchjob); None is one plain Job. A node runs one process per GPU unless
    `processes_per_node` says otherwise (an Evaluation is one process on all its GPUs)."""
    rid = ResourceId(job.kind, job.name)
    k8s = settings.kubernetes
    if not k8s.image:
        raise RenderError("kubernetes.image is not set in tuneops.yaml: the trainer image that runs "
                          "`tuneops run` (see docs/kubernetes.md)")
    if launcher is not None and launcher not in LAUNCHERS:
        raise RenderError(f"unknown launcher {launcher!r}: use one of {', '.join(LAUNCHERS)}")
    job_name = object_name(rid, job.fingerprint, launcher)
    team = team_of(job.name)
    namespace, queue = settings.namespace_of(team), queue or settings.queue_of(team)
    all_labels = resource_labels(rid, labels)
    annotations = {**(spec_annotations or {}), FINGERPRINT_ANNOTATION: job.fingerprint}
    if job.git.commit:
        annotations["tuneops.dev/git-commit"] = job.git.commit
    scheduling = _scheduling(k8s, queue)
    job_labels = dict(all_labels)
    if scheduling["queue"]:
        job_labels["kueue.x-k8s.io/queue-name"] = scheduling["queue"]
    pod_annotations = dict(annotations)
    if scheduling["scheduler_name"] == "volcano" and launcher != "pytorchjob":
        pod_annotations["scheduling.k8s.io/group-name"] = job_name
    requests = {key: value for key, value in (("cpu", cpu), ("memory", memory)) if value}
    limits = {"memory": memory} if memory else {}
    if gpus_per_node:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus_per_node)
    processes = processes_per_node or max(gpus_per_node, 1)
    context = {
        "job_name": job_name, "namespace": namespace, "labels": _pairs(all_labels),
        "job_labels": _pairs(job_labels), "pod_labels": _pairs(all_labels),
        "annotations": _pairs(annotations), "pod_annotations": _pairs(pod_annotations),
        "job_json": job.to_json(), "nodes": nodes, "rendezvous_port": RENDEZVOUS_PORT,
        "launcher": launcher, "processes_per_node_text": str(processes),
        "backoff_limit": settings.max_attempts - 1,
        # Kubeflow counts container restarts over every node against runPolicy.backoffLimit and
        # fails the job when they reach it: an attempt that fails restarts each node once.
        "restart_limit": settings.max_attempts * max(nodes, 1),
        "restart_policy": "OnFailure" if launcher == "pytorchjob" else "Never",
        "container_name": "pytorch" if launcher == "pytorchjob" else "job",
        "subdomain": job_name if launcher == "indexed-job" else None,
        "rank_from_index": launcher in ("indexed-job", "jobset"),
        "ports": _job_ports(launcher),
        "checkout": checkout_context(job, k8s), "gang": None,
        "ttl_seconds_after_finished": k8s.ttl_seconds_after_finished,
        "active_deadline_seconds": k8s.active_deadline_seconds, "priority_class": priority,
        "service_account": k8s.service_account, "node_selector": _node_selector(gpu_product),
        "gpus": gpus_per_node, "image": k8s.image,
        "command": job_command(job, nodes, processes, job_name, launcher or "indexed-job"),
        "env": [("PYTHONUNBUFFERED", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                *_file_roots_env(job, settings)],
        "secret_env": [*_secret_env(k8s), *_judge_key_env(job, k8s)], "requests": _pairs(requests),
        "limits": _pairs(limits),
        "storage_claim": k8s.storage_claim, "storage_mount": STORAGE_MOUNT,
        **scheduling,
    }
    if launcher == "pytorchjob" and scheduling["scheduler_name"] == "volcano":
        # The training operator makes the PodGroup itself (when run with
        # --gang-scheduler-name=volcano), from runPolicy.schedulingPolicy, and sets the scheduler.
        context.update(scheduler_name=None, gang={"min_available": nodes, "queue": queue,
                                                  "priority_class": priority})
    objects = parse(environment().get_template("job.yaml.j2").render(context))
    if scheduling["scheduler_name"] == "volcano" and launcher != "pytorchjob":
        objects.append(pod_group(job_name, namespace, all_labels, annotations, nodes, queue, priority))
    return Rendered(rid, tuple(objects))


def _job_ports(launcher: str | None) -> list[tuple[str, int]]:
    if launcher == "pytorchjob":
        return [("pytorchjob-port", PYTORCHJOB_PORT)]
    return [("rendezvous", RENDEZVOUS_PORT)] if launcher else []


def pod_group(name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str],
              nodes: int, queue: str | None, priority: str | None) -> dict[str, Any]:
    """Volcano gang scheduling: every node's pod starts together or none does."""
    spec: dict[str, Any] = {"minMember": nodes}
    if queue:
        spec["queue"] = queue
    if priority:
        spec["priorityClassName"] = priority
    return {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                         "annotations": dict(annotations)}, "spec": spec}


def render_server(job: JobFile, deployment: DeploymentResource, settings: ProjectSettings,
                  adapter_rank: int | None) -> Rendered:
    """The model server a Deployment runs: vLLM's OpenAI-compatible server (`runtime: vllm`), or
    the built-in transformers server from the trainer image (`runtime: transformers`), which
    reads its job file from the ConfigMap; both answer the same routes."""
    rid = ResourceId("Deployment", job.name)
    k8s = settings.kubernetes
    spec = deployment.spec
    model = job.model
    assert model is not None and hasattr(model, "base_model"), "a Deployment serves a FineTune's model"
    job = job.model_copy(update={"serve": ServeOptions(host="0.0.0.0", port=SERVER_PORT)})
    if spec.runtime == "transformers":
        if not k8s.image:
            raise RenderError("kubernetes.image is not set in tuneops.yaml: runtime: transformers serves "
                              "from the trainer image (see docs/kubernetes.md)")
        image, command = k8s.image, ["python", "-m", "reconciler", "run", "serve", "--job", JOB_FILE_PATH]
    else:
        image, command = k8s.serving_image, _vllm_command(job, spec.merge_adapter, spec.resources.gpus,
                                                          adapter_rank)
    all_labels = resource_labels(rid, deployment.metadata.labels)
    annotations = {**deployment.metadata.annotations, FINGERPRINT_ANNOTATION: job.fingerprint}
    if model.version:
        annotations[MODEL_VERSION_ANNOTATION] = f"{model.registered_model}/{model.version}"
    if model.fingerprint:
        annotations[MODEL_FINGERPRINT_ANNOTATION] = model.fingerprint
    if spec.autoscaling is not None:
        annotations[AUTOSCALED_ANNOTATION] = "true"  # replicas are the HPA's: not drift
    requests = {key: value for key, value in (("cpu", spec.resources.cpu), ("memory", spec.resources.memory))
                if value}
    limits = {"memory": spec.resources.memory} if spec.resources.memory else {}
    if spec.resources.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.resources.gpus)
    context = {
        "server_name": object_name(rid, job.fingerprint),
        "namespace": settings.namespace_of(team_of(job.name)),
        "labels": _pairs(all_labels), "annotations": _pairs(annotations),
        "selector": [(KIND_LABEL, "Deployment"), (NAME_LABEL, rid.name)],
        "replicas": spec.replicas, "priority_class": None, "autoscaling": _autoscaling(spec),
        "node_selector": _node_selector(spec.resources.gpu_product), "gpus": spec.resources.gpus,
        "image": image, "command": command, "port": SERVER_PORT,
        "mount_job_file": spec.runtime == "transformers", "checkout": checkout_context(job, k8s),
        "env": [("HF_HUB_OFFLINE", "0"), *_file_roots_env(job, settings)], "secret_env": _secret_env(k8s)[:1],
        "requests": _pairs(requests), "limits": _pairs(limits),
        "storage_claim": k8s.storage_claim, "storage_mount": STORAGE_MOUNT, "job_json": job.to_json(),
    }
    return Rendered(rid, tuple(parse(environment().get_template("deployment.yaml.j2").render(context))))


def _vllm_command(job: JobFile, merge_adapter: bool, gpus: int, adapter_rank: int | None) -> list[str]:
    """`vllm serve`: the base model with the LoRA adapter as a module named after the Deployment
    (the base answers as `<name>-base`), or the merged weights."""
    model = job.model
    assert model is not None and hasattr(model, "base_model")
    served_name = job.name  # clients ask for the Deployment's name and get the fine-tuned model
    command = ["vllm", "serve"]
    if model.adapter and not merge_adapter:
        # the adapter sits on its base model, or on the full fine-tune it was trained from
        base = model.weights or model.base_model.source.removeprefix("hf://").removeprefix("file://")
        command += [base, "--served-model-name", f"{served_name}-base", "--enable-lora",
                    "--lora-modules", f"{served_name}={model.location}",
                    "--max-lora-rank", str(_lora_rank(adapter_rank))]
        if model.weights is None and model.base_model.revision and model.base_model.source.startswith("hf://"):
            command += ["--revision", model.base_model.revision]
    else:
        location = model.location + ("/merged" if model.adapter else "")
        command += [location, "--served-model-name", served_name]
    command += ["--host", "0.0.0.0", "--port", str(SERVER_PORT)]
    if gpus > 1:
        command += ["--tensor-parallel-size", str(gpus)]
    return command


def _autoscaling(spec: DeploymentSpec) -> dict[str, Any] | None:
    if spec.autoscaling is None:
        return None
    return {"max_replicas": spec.autoscaling.max_replicas, "metric": spec.autoscaling.metric,
            "target": f"{spec.autoscaling.target:g}"}  # a Quantity is a string


def _lora_rank(rank: int | None) -> int:
    """vLLM accepts --max-lora-rank from a fixed set; the smallest that holds the adapter."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank is None or allowed >= rank:
            return allowed
    raise RenderError(f"vLLM serves LoRA adapters up to rank 512, not {rank}")


def parse(text: str) -> list[dict[str, Any]]:
    """Rendered YAML back into objects: what is applied is what was parsed, not the text."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]
    except yaml.YAMLError as error:
        raise RenderError(f"a template rendered invalid YAML: {error}") from None
    for document in documents:
        if not isinstance(document, dict) or "kind" not in document:
            raise RenderError(f"a template rendered something that is not an object: {document!r:.80}")
    return documents

