"""The Kubernetes backend: jobs as batch/v1 Jobs, model servers as Deployments, applied server-side.

What runs is read back from the cluster with one labelled LIST per kind (Jobs, Pods,
Deployments, ConfigMaps), never a GET per resource, so a plan over a hundred resources costs four
requests. Kubernetes retries a Job's pods itself (`backoffLimit` = maxAttempts - 1), so apply
submits once and waits for the Job's verdict. Only objects carrying our labels and fingerprint
annotation are ever deleted, in the background (their pods go by garbage collection).

Drift: a server whose Deployment someone else changed (its managed fields name another manager)
is reported in the observation, the plan says so, and the next apply takes the fields back
(server-side apply with force). A Job or server deleted behind our back is simply not observed:
the plan creates it again unless MLflow says its result is built.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from reconciler.backends.base import (
    STOPPED,
    BackendError,
    BackendState,
    JobObservation,
    JobPhase,
    ServerObservation,
)
from reconciler.backends.kubeapi import FIELD_MANAGER, KubeApi
from reconciler.render import (
    AUTOSCALED_ANNOTATION,
    FINGERPRINT_ANNOTATION,
    KIND_LABEL,
    MANAGED_BY,
    MODEL_FINGERPRINT_ANNOTATION,
    MODEL_VERSION_ANNOTATION,
    NAME_LABEL,
    object_name,
)
from reconciler.specs.base import ResourceId

if TYPE_CHECKING:
    from reconciler.jobfile import JobFile
    from reconciler.specs.specset import SpecSet

MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
APPLY_ORDER = ("ConfigMap", "Service", "PodGroup", "HorizontalPodAutoscaler", "Job", "Deployment")
SERVER_KINDS = ("Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler")
JOB_KINDS = ("Job", "ConfigMap", "Service", "PodGroup")
CRASHING = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
)


class KubernetesBackend:
    """Jobs and servers in one namespace of one cluster."""

    name = "kubernetes"
    retries_jobs = True  # a Job's pods are retried by Kubernetes up to backoffLimit

    def __init__(
        self, api: KubeApi, namespace: str, specs: SpecSet | None = None, *, delete_timeout: float = 120.0
    ):
        self.api, self.namespace, self.specs = api, namespace, specs
        self.delete_timeout = delete_timeout

    # -- reading -----------------------------------------------------------------------------

    def observe(self) -> BackendState:
        jobs = self.api.list("Job", self.namespace, MANAGED_SELECTOR)
        pods = self.api.list("Pod", self.namespace, MANAGED_SELECTOR)
        deployments = self.api.list("Deployment", self.namespace, MANAGED_SELECTOR)
        config_maps = self.api.list(
            "ConfigMap", self.namespace, f"{MANAGED_SELECTOR},{KIND_LABEL}=Deployment"
        )
        pods_by_job: dict[str, list[dict]] = {}
        for pod in pods:
            pods_by_job.setdefault(_labels(pod).get(JOB_NAME_LABEL, ""), []).append(pod)
        observed_jobs = [job_observation(job, pods_by_job.get(_name(job), [])) for job in jobs]
        job_files = {_name(cm): cm for cm in config_maps}
        servers = [
            server_observation(d, _pods_of_server(pods, d), job_files.get(_name(d)), self.namespace)
            for d in deployments
        ]
        return BackendState(
            jobs=tuple(_newest(j for j in observed_jobs if j is not None)),
            servers=tuple(s for s in servers if s is not None),
        )

    def _job(self, kind: str, name: str, fingerprint: str) -> JobObservation | None:
        job_name = object_name(ResourceId(kind, name), fingerprint)
        job = self.api.get("Job", self.namespace, job_name)
        if job is None:
            return None
        pods = self.api.list("Pod", self.namespace, f"{JOB_NAME_LABEL}={job_name}")
        return job_observation(job, pods)

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, job: JobFile, *, processes: int = 1) -> JobObservation:
        """Apply the job's ConfigMap, Service and Job. A finished Job of the same fingerprint (a
        retry) is deleted first: a Job that ended cannot be started again."""
        objects = self._render(job)
        job_object = next(obj for obj in objects if obj["kind"] == "Job")
        job_name = job_object["metadata"]["name"]
        existing = self.api.get("Job", self.namespace, job_name)
        if existing is not None and _finished(existing):
            self.api.delete("Job", self.namespace, job_name)
            self._await_gone("Job", job_name)
        for obj in objects:
            self.api.apply(obj)
        observed = self._job(job.kind, job.name, job.fingerprint)
        if observed is None:
            raise BackendError(f"Job {job_name} was applied but cannot be read back")
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
                    f"job/{object_name(ResourceId(kind, name), fingerprint)}",
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
        for kind in SERVER_KINDS:
            for obj in self.api.list(kind, self.namespace, selector):
                if _ours(obj) and (kind, _name(obj)) not in rendered:
                    self.api.delete(kind, self.namespace, _name(obj))

    def observe_server(self, name: str) -> ServerObservation | None:
        deployment = self.api.get("Deployment", self.namespace, name)
        if deployment is None or not _ours(deployment):
            return None
        pods = self.api.list("Pod", self.namespace, f"{KIND_LABEL}=Deployment,{NAME_LABEL}={name}")
        return server_observation(
            deployment, pods, self.api.get("ConfigMap", self.namespace, name), self.namespace
        )

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, kind: str, name: str) -> list[str]:
        """Delete a server's objects, or a job's unfinished Jobs and what came with them. Only
        objects with our labels and a fingerprint annotation are touched; finished Jobs stay
        (their verdict is state) until their TTL removes them."""
        selector = f"{MANAGED_SELECTOR},{KIND_LABEL}={kind},{NAME_LABEL}={name}"
        stopped = []
        if kind == "Deployment":
            for object_kind in SERVER_KINDS:
                for obj in self.api.list(object_kind, self.namespace, selector):
                    if _ours(obj) and self.api.delete(object_kind, self.namespace, _name(obj)):
                        stopped.append(f"{object_kind.lower()}/{_name(obj)}")
            return stopped
        for job in self.api.list("Job", self.namespace, selector):
            if not _ours(job) or _finished(job):
                continue
            for object_kind in JOB_KINDS:
                ours = object_kind == "Job" or self._ours_by_name(object_kind, _name(job))
                if ours and self.api.delete(object_kind, self.namespace, _name(job)):
                    stopped.append(f"{object_kind.lower()}/{_name(job)}")
        return stopped

    def _ours_by_name(self, kind: str, name: str) -> bool:
        try:
            obj = self.api.get(kind, self.namespace, name)
        except BackendError:  # e.g. the PodGroup kind is not installed: nothing of ours there
            return False
        return obj is not None and _ours(obj)

    # -- logs --------------------------------------------------------------------------------

    def log_file(self, kind: str, name: str):  # noqa: ANN201 - logs live in the cluster, not in a file
        return None

    def logs(
        self, kind: str, name: str, *, tail: int | None = None, follow: bool = False
    ) -> Iterator[str] | None:
        """The newest pod's log of that resource (node 0 of a multi-node job)."""
        pods = self.api.list(
            "Pod", self.namespace, f"{MANAGED_SELECTOR},{KIND_LABEL}={kind},{NAME_LABEL}={name}"
        )
        if not pods:
            return None
        newest = max(
            pods,
            key=lambda pod: (
                _timestamp(pod["metadata"].get("creationTimestamp")) or 0,
                -_completion_index(pod),
            ),
        )
        return self.api.pod_log(self.namespace, _name(newest), tail=tail, follow=follow)

    # -- helpers -----------------------------------------------------------------------------

    def _render(self, job: JobFile) -> list[dict]:
        from reconciler.manifests import render_job_file

        if self.specs is None:
            raise BackendError("this backend was opened without specs: it can read, log and stop, not start")
        rendered = render_job_file(self.specs, job)
        order = {kind: index for index, kind in enumerate(APPLY_ORDER)}
        return sorted(rendered.objects, key=lambda obj: order.get(obj["kind"], len(order)))

    def _await_gone(self, kind: str, name: str) -> None:
        deadline = time.monotonic() + self.delete_timeout
        while self.api.get(kind, self.namespace, name) is not None:
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"{kind} {name} is still being deleted after {self.delete_timeout:.0f}s; "
                    "apply again once it is gone"
                )
            time.sleep(0.5)


# -- reading objects ---------------------------------------------------------------------------


def job_observation(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobObservation | None:
    """A Job's phase from its conditions: Complete -> succeeded; Failed -> failed with the pod's
    reason; suspended (Kueue holds it) or pods not yet scheduled -> pending; else running."""
    if not _ours(job):
        return None
    labels, meta = _labels(job), job["metadata"]
    status, spec = job.get("status") or {}, job.get("spec") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed_pods = int(status.get("failed") or 0)
    pods = sorted(pods, key=lambda pod: _timestamp(pod["metadata"].get("creationTimestamp")) or 0)
    last_failure = next((why for why in map(_pod_failure, reversed(pods)) if why), "")
    phase: JobPhase
    finished_at = None
    exit_code = None
    if "Complete" in conditions:
        phase, message, exit_code = "succeeded", "", 0
        finished_at = _timestamp(
            status.get("completionTime") or conditions["Complete"].get("lastTransitionTime")
        )
    elif "Failed" in conditions:
        phase = "failed"
        condition = conditions["Failed"]
        why = last_failure or condition.get("message") or "failed"
        message = f"{condition.get('reason')}: {why}" if condition.get("reason") else why
        finished_at = _timestamp(condition.get("lastTransitionTime"))
        exit_code = next((code for code in map(_exit_code, reversed(pods)) if code is not None), None)
    elif spec.get("suspend"):
        phase, message = "pending", "suspended: waiting for its queue to admit it (Kueue)"
    else:
        waiting = next((why for why in map(_pod_waiting, pods) if why), "")
        running = any((pod.get("status") or {}).get("phase") == "Running" for pod in pods)
        phase = "running" if running or (status.get("active") and not waiting) else "pending"
        message = waiting if phase == "pending" else ""
        if last_failure:
            message = f"{message + '; ' if message else ''}attempt {failed_pods} failed: {last_failure}"
    attempts = max(1, failed_pods if phase == "failed" else failed_pods + 1)
    return JobObservation(
        kind=labels[KIND_LABEL],
        name=labels[NAME_LABEL],
        fingerprint=_annotations(job)[FINGERPRINT_ANNOTATION],
        phase=phase,
        attempts=attempts,
        started_at=_timestamp(status.get("startTime") or meta.get("creationTimestamp")) or time.time(),
        finished_at=finished_at,
        exit_code=exit_code,
        message=_one_line(message),
        handle=f"job/{meta['name']}",
        log=f"tuneops logs {labels[KIND_LABEL]}/{labels[NAME_LABEL]}",
    )


def server_observation(
    deployment: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    job_file: Mapping[str, Any] | None,
    namespace: str,
) -> ServerObservation | None:
    """Serving once the rollout is complete (as `kubectl rollout status` judges it); failed when
    the rollout's deadline passed or a pod cannot start; else starting."""
    if not _ours(deployment):
        return None
    labels, annotations, meta = _labels(deployment), _annotations(deployment), deployment["metadata"]
    status, spec = deployment.get("status") or {}, deployment.get("spec") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    wanted = int(spec.get("replicas", 1))
    progressing = conditions.get("Progressing") or {}
    crashing = next((why for why in map(_pod_crashing, pods) if why), "")
    rolled_out = (
        int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("availableReplicas") or 0) >= wanted
        and int(status.get("replicas") or 0) <= int(status.get("updatedReplicas") or 0)
    )
    if rolled_out and wanted > 0:
        phase, message = "serving", ""
    elif progressing.get("status") == "False":
        phase, message = "failed", f"{progressing.get('reason')}: {progressing.get('message', '')}"
    elif crashing:
        phase, message = "failed", crashing
    else:
        phase, message = "starting", next((why for why in map(_pod_waiting, pods) if why), "")
    job = None
    if job_file is not None and _ours(job_file):
        try:
            job = json.loads((job_file.get("data") or {}).get("job.json") or "null")
        except ValueError:
            job = None
    # Replicas of an autoscaled server are the HPA's (through the scale subresource).
    ignored = (".spec.replicas",) if annotations.get(AUTOSCALED_ANNOTATION) == "true" else ()
    drift = managed_fields_drift(deployment, ignored)
    if job is None:
        drift = "; ".join(filter(None, [drift, f"its job file (ConfigMap {meta['name']}) is missing"]))
    return ServerObservation(
        name=labels[NAME_LABEL],
        fingerprint=annotations[FINGERPRINT_ANNOTATION],
        model_fingerprint=annotations.get(MODEL_FINGERPRINT_ANNOTATION, ""),
        model_version=annotations.get(MODEL_VERSION_ANNOTATION),
        phase=phase,
        url=f"http://{meta['name']}.{namespace}.svc.cluster.local",
        started_at=_timestamp(meta.get("creationTimestamp")) or time.time(),
        message=_one_line(message),
        handle=f"deployment/{meta['name']}",
        log=f"tuneops logs Deployment/{labels[NAME_LABEL]}",
        job=job,
        drift=drift,
    )


def managed_fields_drift(obj: Mapping[str, Any], ignored: Sequence[str] = ()) -> str:
    """Fields of the spec (or of our labels and annotations) that a manager other than tuneops
    set: someone ran `kubectl edit`, `kubectl scale` or another apply. Status writers are not
    drift."""
    changed: list[str] = []
    managers: list[str] = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER or entry.get("subresource") == "status":
            continue
        fields = entry.get("fieldsV1") or {}
        paths = [p for p in _leaf_paths(fields.get("f:spec") or {}, ".spec")]
        metadata = fields.get("f:metadata") or {}
        for group in ("f:labels", "f:annotations"):
            paths += [
                p
                for p in _leaf_paths(metadata.get(group) or {}, f".metadata.{group[2:]}")
                if p.split(".", 3)[-1].startswith(("tuneops.dev/", "app.kubernetes.io/"))
            ]
        paths = [p for p in paths if p not in ignored]
        if paths:
            changed += paths
            managers.append(str(entry.get("manager") or "unknown"))
    if not changed:
        return ""
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return f"{shown} changed by {', '.join(dict.fromkeys(managers))}"


def _leaf_paths(fields: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for key, value in fields.items():
        if key == ".":
            continue
        path = f"{prefix}.{key[2:]}" if key.startswith("f:") else f"{prefix}[{key}]"
        if isinstance(value, Mapping) and any(k != "." for k in value):
            yield from _leaf_paths(value, path)
        else:
            yield path


def _pod_failure(pod: Mapping[str, Any]) -> str:
    """Why a failed pod failed: the container's termination (OOMKilled, exit code, the last line
    of its termination message), or the pod's own reason (Evicted, DeadlineExceeded)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return ""
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            last = _last_line(terminated.get("message") or "")
            text = f"{terminated.get('reason') or 'Error'} (exit {terminated.get('exitCode')})"
            return f"{text} in pod {pod['metadata']['name']}" + (f": {last}" if last else "")
    if status.get("reason") or status.get("message"):
        name = pod["metadata"]["name"]
        return f"{status.get('reason') or 'Failed'}: {status.get('message') or ''} (pod {name})"
    return f"pod {pod['metadata']['name']} failed"


def _exit_code(pod: Mapping[str, Any]) -> int | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if "exitCode" in terminated and terminated["exitCode"] != 0:
            return int(terminated["exitCode"])
    return None


def _pod_waiting(pod: Mapping[str, Any]) -> str:
    """Why a pod has not started: unschedulable (no GPU free), an image that will not pull..."""
    status = pod.get("status") or {}
    if status.get("phase") not in ("Pending", None):
        return ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}".strip()
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
            return f"{waiting['reason']}: {waiting.get('message') or ''}".strip()
    return ""


def _pod_crashing(pod: Mapping[str, Any]) -> str:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in CRASHING:
            last = (container.get("lastState") or {}).get("terminated") or {}
            why = f" (last exit {last.get('exitCode')}: {last.get('reason')})" if last else ""
            return f"{waiting['reason']} in pod {pod['metadata']['name']}{why}"
    return ""


def _pods_of_server(
    pods: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    labels = _labels(deployment)
    return [
        pod
        for pod in pods
        if _labels(pod).get(KIND_LABEL) == "Deployment"
        and _labels(pod).get(NAME_LABEL) == labels.get(NAME_LABEL)
    ]


def _newest(jobs: Iterator[JobObservation]) -> list[JobObservation]:
    newest: dict[tuple[str, str, str], JobObservation] = {}
    for job in jobs:
        key = (job.kind, job.name, job.fingerprint)
        if key not in newest or job.started_at > newest[key].started_at:
            newest[key] = job
    return list(newest.values())


def _finished(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _ours(obj: Mapping[str, Any]) -> bool:
    """Ours: managed-by tuneops, kind and name labels, and a fingerprint annotation. Objects that
    merely copied our labels lack the annotation and are never read as state or deleted."""
    labels = _labels(obj)
    return (
        labels.get("app.kubernetes.io/managed-by") == MANAGED_BY
        and KIND_LABEL in labels
        and NAME_LABEL in labels
        and FINGERPRINT_ANNOTATION in _annotations(obj)
    )


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _completion_index(pod: Mapping[str, Any]) -> int:
    index = _annotations(pod).get("batch.kubernetes.io/job-completion-index", "0")
    return int(index) if index.isdigit() else 0


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
