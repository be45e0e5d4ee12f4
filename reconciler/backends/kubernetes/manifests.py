"""A project's Kubernetes manifests, for `tuneops render` and the Kubernetes backend.

Job files are built as `apply` builds them (`jobs.JobBuilder`). Upstreams that are not built
yet are given the output location they will have (outputs are keyed by fingerprint), so a
render needs no state and the same specs always render the same manifests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from reconciler.backends.kubernetes.render import (
    CHECKOUT_MOUNT,
    STORAGE_MOUNT,
    Rendered,
    RenderError,
    render_job,
    render_server,
)
from reconciler.fingerprint import FingerprintInput
from reconciler.jobs.builder import JobBuilder, JobContext
from reconciler.jobs.jobfile import GitOrigin, JobFile, MlflowTarget, output_dir_of
from reconciler.redaction import credentials_environment, redact, without_credentials
from reconciler.specs.base import ResourceId
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.specset import SpecSet
from reconciler.specs.sweep import SweepResource
from reconciler.state import BuiltRun
from reconciler.sweeps.trials import largest_rank, trial_origin

RENDERED_KINDS = ("Dataset", "FineTune", "Evaluation", "Deployment")
PENDING_DIGEST = "pending"  # a Dataset's digest is known once it is built


def planned_run(storage_root: str) -> Callable[[str, str, str], BuiltRun]:
    """A lookup that answers every upstream with the run it will have once built."""

    def lookup(kind: str, name: str, fingerprint: str) -> BuiltRun:
        return BuiltRun(kind, name, fingerprint, run_id="", started_at=0.0,
                        output=str(output_dir_of(storage_root, kind, name, fingerprint)),
                        dataset_digest=PENDING_DIGEST if kind == "Dataset" else None)

    return lookup


def cluster_context(specs: SpecSet, git: GitOrigin, repo_root: Path | None = None) -> JobContext:
    """Where jobs in the cluster find storage and MLflow: both must be reachable from a pod."""
    settings = specs.settings
    if settings.kubernetes.storage_claim:
        storage = STORAGE_MOUNT
    elif (settings.storage.root or "").startswith("s3://"):
        storage = settings.storage.root or ""
    else:
        raise RenderError("jobs in the cluster need shared storage: set kubernetes.storageClaim (a "
                          "PersistentVolumeClaim) or storage.root: s3://bucket/prefix in tuneops.yaml")
    uri = settings.mlflow.tracking_uri
    if not uri or not uri.startswith(("http://", "https://")):
        raise RenderError("jobs in the cluster need an MLflow server: set mlflow.trackingUri to its "
                          "http(s):// URL in tuneops.yaml")
    if credentials_environment(uri) and not settings.kubernetes.secrets.mlflow:
        raise RenderError(f"mlflow.trackingUri ({redact(uri)}) holds credentials, which a manifest never "
                          "does: put them in a Secret with keys `username` and `password`, name it in "
                          "kubernetes.secrets.mlflow in tuneops.yaml, and pods get them from it")
    # The credentials reach pods from the Secret (render._secret_env), never in the job file.
    mlflow = MlflowTarget(tracking_uri=without_credentials(uri), experiment=settings.mlflow.experiment)
    return JobContext(storage_root=Path(storage), mlflow=mlflow, git=git, repo_root=repo_root,
                      checkout_into=CHECKOUT_MOUNT)


def launcher_of(specs: SpecSet, rid: ResourceId) -> str | None:
    """How a resource's job starts its nodes: None for one node (a plain Job), else the
    FineTune's `distributed.launcher` or the project's `kubernetes.multiNode`."""
    resource = specs.resource(rid, FineTuneResource) if rid.kind == "FineTune" else None
    if resource is None or resource.spec.resources.nodes <= 1:
        return None
    return resource.spec.distributed.launcher or specs.settings.kubernetes.multi_node


def render_resource(specs: SpecSet, builder: JobBuilder, rid: ResourceId) -> Rendered:
    return render_job_file(specs, builder.job(rid))


def render_job_file(specs: SpecSet, job: JobFile) -> Rendered:
    """The objects that run one job file (or serve one model), with the spec's labels, resources
    and scheduling: what the Kubernetes backend applies."""
    settings = specs.settings
    rid = ResourceId(job.kind, job.name)
    loaded = specs.get(rid) or specs.get(trial_origin(specs, rid) or rid)  # a sweep trial: its template's
    assert loaded is not None, rid
    resource = loaded.resource
    if isinstance(resource, DeploymentResource):
        if resource.spec.model.sweep is not None:
            sweep = specs.resource(ResourceId("Sweep", resource.spec.model.sweep), SweepResource)
            return render_server(job, resource, settings, largest_rank(specs, sweep) if sweep else None)
        served = specs.resource(ResourceId("FineTune", resource.spec.model.fine_tune or ""), FineTuneResource)
        return render_server(job, resource, settings, served.spec.adapter.r if served else None)
    labels, annotations = dict(resource.metadata.labels), dict(resource.metadata.annotations)
    if isinstance(resource, FineTuneResource):
        r = resource.spec.resources
        return render_job(job, labels, settings, spec_annotations=annotations, nodes=r.nodes,
                          gpus_per_node=r.gpus_per_node, gpu_product=r.gpu_product, cpu=r.cpu,
                          memory=r.memory,
                          queue=resource.spec.scheduling.queue, priority=resource.spec.scheduling.priority,
                          launcher=launcher_of(specs, loaded.id))
    if isinstance(resource, EvaluationResource):
        e = resource.spec.resources  # one process: the model is scored on all the GPUs at once
        return render_job(job, labels, settings, spec_annotations=annotations, gpus_per_node=e.gpus,
                          gpu_product=e.gpu_product, cpu=e.cpu, memory=e.memory, processes_per_node=1)
    return render_job(job, labels, settings, spec_annotations=annotations)


def render_project(specs: SpecSet, inputs: dict[ResourceId, FingerprintInput], context: JobContext,
                   only: Iterable[ResourceId] | None = None) -> list[Rendered]:
    """Every Dataset, FineTune, Evaluation and Deployment (or those in `only`), in dependency order."""
    builder = JobBuilder(specs, inputs, context, planned_run(str(context.storage_root)))
    wanted = set(only) if only is not None else None
    return [render_resource(specs, builder, rid) for rid in inputs
            if rid.kind in RENDERED_KINDS and (wanted is None or rid in wanted)
            and not _serves_a_sweep(specs, rid)]


def _serves_a_sweep(specs: SpecSet, rid: ResourceId) -> bool:
    """A Deployment of a Sweep serves the trial apply chooses: rendered when apply serves it."""
    deployment = specs.resource(rid, DeploymentResource)
    return deployment is not None and deployment.spec.model.sweep is not None
