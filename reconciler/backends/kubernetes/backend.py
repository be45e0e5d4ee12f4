"""The Kubernetes backend: jobs as batch/v1 Jobs (or, for several nodes, Indexed Jobs, JobSets or
Kubeflow PyTorchJobs), model servers as Deployments, applied server-side.

What runs is read back from the cluster with one labelled LIST per kind (Jobs, Pods,
Deployments, ConfigMaps, and JobSets or PyTorchJobs where the project uses them or a pod says
one runs), never a GET per resource, so a plan over a hundred resources costs four requests.
Kubernetes retries a job itself (a Job's `backoffLimit`, a JobSet's `maxRestarts`, a
PyTorchJob's `runPolicy.backoffLimit`), so apply submits once and waits for the verdict. Only
objects carrying our labels and fingerprint annotation are ever deleted, in the background
(their pods go by garbage collection).

Drift: a server whose Deployment someone else changed (its managed fields name another manager)
is reported in the observation, the plan says so, and the next apply takes the fields back
(server-side apply with force). A Job or server deleted behind our back is simply not observed:
the plan creates it again unless MLflow says its result is built.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reconciler.backends.base import BackendError
from reconciler.backends.kubernetes.api import KubeApi
from reconciler.backends.kubernetes.health import (
    POD_OWNER_LABEL,
    annotations_of,
    is_finished,
    is_ours,
    labels_of,
    launched_by_jobset,
    name_of,
    newest,
    node_rank,
    observe_workload,
    pods_of_server,
    pods_of_workload,
    server_observation,
    timestamp,
)
from reconciler.backends.kubernetes.labels import (
    FINGERPRINT_ANNOTATION,
    KIND_LABEL,
    MANAGED_BY,
    NAME_LABEL,
    object_name,
)
from reconciler.redaction import redact_lines
from reconciler.specs.base import ResourceId, team_of
from reconciler.state import STOPPED, BackendState, JobObservation, ServerObservation

if TYPE_CHECKING:
    from reconciler.jobs.jobfile import JobFile
    from reconciler.specs.specset import SpecSet

MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
APPLY_ORDER = ("ConfigMap", "Service", "PodGroup", "HorizontalPodAutoscaler", "Job", "JobSet", "PyTorchJob",
               "Deployment")
SERVER_KINDS = ("Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler")
# What runs a job, by launcher.
WORKLOAD_OF_LAUNCHER = {None: "Job", "indexed-job": "Job", "jobset": "JobSet", "pytorchjob": "PyTorchJob"}
CUSTOM_WORKLOADS = ("JobSet", "PyTorchJob")
JOB_COMPANIONS = ("ConfigMap", "Service", "PodGroup")  # what comes with a job's workload
JOB_KINDS = ("Job", *CUSTOM_WORKLOADS, *JOB_COMPANIONS)


class KubernetesBackend:
    """Jobs and servers of one project in one cluster: in the project's namespace, and in each
    team's own (`team_namespaces`, from tuneops.yaml's teams)."""

    name = "kubernetes"
    retries_jobs = True  # a Job's pods are retried by Kubernetes up to backoffLimit

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        specs: SpecSet | None = None,
        *,
        delete_timeout: float = 120.0,
        launchers: Sequence[str] = (),
        team_namespaces: Mapping[str, str] | None = None,
    ):
        self.api, self.namespace, self.specs = api, namespace, specs
        self.team_namespaces = dict(team_namespaces or {})
        self.namespaces = sorted({namespace, *self.team_namespaces.values()})
        self.delete_timeout = delete_timeout
        # Custom workloads the project starts (from its settings and specs): their kinds are listed
        # even when no pod of theirs runs (a JobSet waiting in a queue, one that finished).
        self.custom_kinds = {WORKLOAD_OF_LAUNCHER[launcher] for launcher in launchers} & set(CUSTOM_WORKLOADS)

    # -- reading -----------------------------------------------------------------------------

    def namespace_of(self, name: str) -> str:
        """Where a resource's objects are: its team's namespace, else the project's."""
        team = team_of(name)
        return self.team_namespaces.get(team, self.namespace) if team else self.namespace

    def observe(self) -> BackendState:
        observed_jobs: list[JobObservation | None] = []
        servers: list[ServerObservation | None] = []
        for namespace in self.namespaces:
            pods = self.api.list("Pod", namespace, MANAGED_SELECTOR)
            jobs = self.api.list("Job", namespace, MANAGED_SELECTOR)
            deployments = self.api.list("Deployment", namespace, MANAGED_SELECTOR)
            config_maps = self.api.list("ConfigMap", namespace, f"{MANAGED_SELECTOR},{KIND_LABEL}=Deployment")
            observed_jobs += [
                observe_workload(workload, pods_of_workload(pods, workload))
                for workload in [*jobs, *self._custom_workloads(pods, MANAGED_SELECTOR, namespace)]
            ]
            job_files = {name_of(cm): cm for cm in config_maps}
            servers += [server_observation(d, pods_of_server(pods, d), job_files.get(name_of(d)), namespace)
                        for d in deployments]
        return BackendState(
            jobs=tuple(newest(j for j in observed_jobs if j is not None)),
            servers=tuple(s for s in servers if s is not None),
        )

    def _custom_workloads(self, pods: Sequence[Mapping[str, Any]], selector: str,
                          namespace: str) -> list[dict]:
        """JobSets and PyTorchJobs matching `selector`: of the kinds the project starts, or whose
        pods run (a launcher changed since). A kind the cluster does not serve has none."""
        kinds = set(self.custom_kinds)
        kinds |= {kind for kind in CUSTOM_WORKLOADS for pod in pods
                  if POD_OWNER_LABEL[kind] in labels_of(pod)}
        return [obj for kind in CUSTOM_WORKLOADS if kind in kinds
                for obj in self.api.list(kind, namespace, selector, missing_ok=True)]

    def _workload(self, kind: str, name: str, fingerprint: str) -> tuple[str, str]:
        """The kind and name of what runs a resource's job at this fingerprint."""
        from reconciler.backends.kubernetes.manifests import launcher_of

        launcher = launcher_of(self.specs, ResourceId(kind, name)) if self.specs is not None else None
        return WORKLOAD_OF_LAUNCHER[launcher], object_name(ResourceId(kind, name), fingerprint, launcher)

    def _job(self, kind: str, name: str, fingerprint: str) -> JobObservation | None:
        workload_kind, workload_name = self._workload(kind, name, fingerprint)
        namespace = self.namespace_of(name)
        workload = self.api.get(workload_kind, namespace, workload_name)
        if workload is None:
            return None
        pods = self.api.list("Pod", namespace, f"{POD_OWNER_LABEL[workload_kind]}={workload_name}")
        return observe_workload(workload, pods)

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, job: JobFile, *, processes: int = 1) -> JobObservation:
        """Apply the job's ConfigMap, Service and workload (Job, JobSet or PyTorchJob). A
        finished workload of the same fingerprint (a retry) is deleted first: one that ended
        cannot be started again."""
        objects = self._render(job)
        workload = next(obj for obj in objects if obj["kind"] in POD_OWNER_LABEL)
        kind, name = workload["kind"], workload["metadata"]["name"]
        namespace = workload["metadata"]["namespace"]
        existing = self.api.get(kind, namespace, name)
        if existing is not None and is_finished(existing):
            self.api.delete(kind, namespace, name)
            self._await_gone(kind, namespace, name)
        for obj in objects:
            self.api.apply(obj)
        observed = self._job(job.kind, job.name, job.fingerprint)
        if observed is None:
            raise BackendError(f"{kind} {name} was applied but cannot be read back")
        return observed

    def wait(
        self,
        kind: str,
        name: str,
        fingerprint: str,
        *,
        poll: float = 2.0,
        stop_event: threading.Event | None = None,
    ) -> JobObservation:
        stop_event = stop_event or threading.Event()
        while True:
            observed = self._job(kind, name, fingerprint)
            if observed is None:  # deleted: by `tuneops stop`, or by hand; the next apply starts it again
                return JobObservation(
                    kind,
                    name,
                    fingerprint,
                    "failed",
                    1,
                    time.time(),
                    time.time(),
                    None,
                    STOPPED,
                    "{}/{}".format(*self._workload(kind, name, fingerprint)).lower(),
                    None,
                )
            if observed.phase in ("succeeded", "failed") or stop_event.wait(poll):
                return observed

    # -- servers -----------------------------------------------------------------------------

    def serve(
        self,
        job: JobFile,
        *,
        model_fingerprint: str,
        model_version: str | None,
        health_timeout: float = 600,
        poll: float = 2.0,
    ) -> ServerObservation:
        """Apply the server's objects and wait until its rollout is complete (every replica
        updated and available), or it fails, or `health_timeout` passes."""
        objects = self._render(job)
        for obj in objects:
            self.api.apply(obj)
        self._remove_leftovers(job.name, {(obj["kind"], obj["metadata"]["name"]) for obj in objects})
        deadline = time.monotonic() + health_timeout
        while True:
            observed = self.observe_server(job.name)
            if observed is not None and observed.phase in ("serving", "failed"):
                return observed
            if time.monotonic() >= deadline:
                state = observed.message if observed is not None and observed.message else "no ready replica"
                return ServerObservation(
                    job.name,
                    job.fingerprint,
                    model_fingerprint,
                    model_version,
                    "failed",
                    observed.url if observed else None,
                    time.time(),
                    f"not available after {health_timeout:.0f}s: {state}",
                    f"deployment/{job.name}",
                    None,
                )
            time.sleep(poll)

    def _remove_leftovers(self, name: str, rendered: set[tuple[str, str]]) -> None:
        """Objects of this server that the specs no longer render (autoscaling turned off)."""
        selector = f"{MANAGED_SELECTOR},{KIND_LABEL}=Deployment,{NAME_LABEL}={name}"
        namespace = self.namespace_of(name)
        for kind in SERVER_KINDS:
            for obj in self.api.list(kind, namespace, selector):
                if is_ours(obj) and (kind, name_of(obj)) not in rendered:
                    self.api.delete(kind, namespace, name_of(obj))

    def observe_server(self, name: str) -> ServerObservation | None:
        server, namespace = object_name(ResourceId("Deployment", name), ""), self.namespace_of(name)
        deployment = self.api.get("Deployment", namespace, server)
        if deployment is None or not is_ours(deployment):
            return None
        pods = self.api.list("Pod", namespace, f"{KIND_LABEL}=Deployment,{NAME_LABEL}={name}")
        return server_observation(deployment, pods, self.api.get("ConfigMap", namespace, server), namespace)

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, kind: str, name: str) -> list[str]:
        """Delete a server's objects, or a job's unfinished workloads (Jobs, JobSets,
        PyTorchJobs) and what came with them. Only objects with our labels and a fingerprint
        annotation are touched; finished ones stay (their verdict is state) until their TTL
        removes them."""
        selector = f"{MANAGED_SELECTOR},{KIND_LABEL}={kind},{NAME_LABEL}={name}"
        namespace = self.namespace_of(name)
        stopped = []
        if kind == "Deployment":
            for object_kind in SERVER_KINDS:
                for obj in self.api.list(object_kind, namespace, selector):
                    if is_ours(obj) and self.api.delete(object_kind, namespace, name_of(obj)):
                        stopped.append(f"{object_kind.lower()}/{name_of(obj)}")
            return stopped
        pods = self.api.list("Pod", namespace, selector)
        workloads = [*self.api.list("Job", namespace, selector),
                     *self._custom_workloads(pods, selector, namespace)]
        for workload in workloads:
            if not is_ours(workload) or is_finished(workload) or launched_by_jobset(workload):
                continue
            workload_kind = workload["kind"]
            for object_kind in (workload_kind, *JOB_COMPANIONS):
                ours = object_kind == workload_kind or self._ours_by_name(object_kind, namespace,
                                                                          name_of(workload))
                if ours and self.api.delete(object_kind, namespace, name_of(workload)):
                    stopped.append(f"{object_kind.lower()}/{name_of(workload)}")
        return stopped

    def _ours_by_name(self, kind: str, namespace: str, name: str) -> bool:
        try:
            obj = self.api.get(kind, namespace, name)
        except BackendError:  # e.g. the PodGroup kind is not installed: nothing of ours there
            return False
        return obj is not None and is_ours(obj)

    # -- logs --------------------------------------------------------------------------------

    def log_file(self, kind: str, name: str) -> None:  # logs live in the cluster, not in a file
        return None

    def logs(
        self, kind: str, name: str, *, fingerprint: str | None = None, tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[str] | None:
        """The newest pod's log of that resource, or of its job at `fingerprint` (node 0 of a
        multi-node job)."""
        namespace = self.namespace_of(name)
        pods = self.api.list("Pod", namespace, f"{MANAGED_SELECTOR},{KIND_LABEL}={kind},{NAME_LABEL}={name}")
        if fingerprint is not None:
            pods = [pod for pod in pods if annotations_of(pod).get(FINGERPRINT_ANNOTATION) == fingerprint]
        if not pods:
            return None
        newest = max(
            pods,
            key=lambda pod: (
                timestamp(pod["metadata"].get("creationTimestamp")) or 0,
                -node_rank(pod),
            ),
        )
        lines = self.api.pod_log(namespace, name_of(newest), tail=tail, follow=follow)
        return redact_lines(lines) if lines is not None else None

    # -- helpers -----------------------------------------------------------------------------

    def _render(self, job: JobFile) -> list[dict]:
        from reconciler.backends.kubernetes.manifests import render_job_file

        if self.specs is None:
            raise BackendError("this backend was opened without specs: it can read, log and stop, not start")
        rendered = render_job_file(self.specs, job)
        order = {kind: index for index, kind in enumerate(APPLY_ORDER)}
        return sorted(rendered.objects, key=lambda obj: order.get(obj["kind"], len(order)))

    def _await_gone(self, kind: str, namespace: str, name: str) -> None:
        deadline = time.monotonic() + self.delete_timeout
        while self.api.get(kind, namespace, name) is not None:
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"{kind} {name} is still being deleted after {self.delete_timeout:.0f}s; "
                    "apply again once it is gone"
                )
            time.sleep(0.5)
