"""Kubernetes objects as tuneops observations: what a Job, JobSet, PyTorchJob or Deployment of
ours says about its resource, one function per kind (as Argo CD's gitops-engine keeps health).

Pure: objects in, `JobObservation` / `ServerObservation` out. A phase comes from the workload's
own verdict (its conditions), and the message from its pods: why the last one failed (the
container's termination, an init container's, or the last restart in place), why one waits
(unschedulable, an image that will not pull), or that one runs. Drift is read from managed
fields. Objects count as ours only with our labels and a fingerprint annotation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from reconciler.backends.kubernetes.api import FIELD_MANAGER
from reconciler.backends.kubernetes.labels import (
    AUTOSCALED_ANNOTATION,
    FINGERPRINT_ANNOTATION,
    KIND_LABEL,
    MANAGED_BY,
    MODEL_FINGERPRINT_ANNOTATION,
    MODEL_VERSION_ANNOTATION,
    NAME_LABEL,
)
from reconciler.redaction import redact
from reconciler.state import JobObservation, JobPhase, ServerObservation

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
PYTORCHJOB_NAME_LABEL = "training.kubeflow.org/job-name"
POD_OWNER_LABEL = {"Job": JOB_NAME_LABEL, "JobSet": JOBSET_NAME_LABEL, "PyTorchJob": PYTORCHJOB_NAME_LABEL}
CRASHING = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
)


def observe_workload(workload: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobObservation | None:
    """What a Job, JobSet or PyTorchJob of ours says about its job (None: not ours, or a
    JobSet's own child Job, which its JobSet speaks for)."""
    observe = {"Job": job_observation, "JobSet": jobset_observation, "PyTorchJob": pytorchjob_observation}
    return observe[str(workload.get("kind") or "Job")](workload, pods)


def job_observation(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobObservation | None:
    """A Job's phase from its conditions: Complete -> succeeded; Failed -> failed with the pod's
    reason; suspended (Kueue holds it) or pods not yet scheduled -> pending; else running.
    Each failed pod was an attempt (Kubernetes retries up to backoffLimit)."""
    if not is_ours(job) or launched_by_jobset(job):
        return None
    status, conditions = job.get("status") or {}, _true_conditions(job)
    return _observation(job, pods, completed=conditions.get("Complete"), failed=conditions.get("Failed"),
                        failures=int(status.get("failed") or 0), active=bool(status.get("active")),
                        suspended=bool((job.get("spec") or {}).get("suspend")))


def jobset_observation(jobset: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobObservation | None:
    """A JobSet's phase from its conditions (Completed, Failed, suspended by Kueue). Each
    restart of every node (failurePolicy.maxRestarts) followed a failed attempt."""
    if not is_ours(jobset):
        return None
    status, conditions = jobset.get("status") or {}, _true_conditions(jobset)
    failures = int(status.get("restarts") or 0) + (1 if "Failed" in conditions else 0)
    active = any(int(job.get("active") or 0) for job in status.get("replicatedJobsStatus") or [])
    return _observation(jobset, pods, completed=conditions.get("Completed"), failed=conditions.get("Failed"),
                        failures=failures, active=active,
                        suspended=bool((jobset.get("spec") or {}).get("suspend")))


def pytorchjob_observation(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> JobObservation | None:
    """A PyTorchJob's phase from its conditions (Succeeded, Failed, Suspended). Its pods restart
    in place (restartPolicy OnFailure): a failed attempt restarted each node's container once."""
    if not is_ours(job):
        return None
    status, conditions = job.get("status") or {}, _true_conditions(job)
    failures = max((int(container.get("restartCount") or 0) for pod in pods
                    for container in (pod.get("status") or {}).get("containerStatuses") or []), default=0)
    replica_statuses = (status.get("replicaStatuses") or {}).values()
    active = any(int(replicas.get("active") or 0) for replicas in replica_statuses)
    spec = job.get("spec") or {}
    run_policy = spec.get("runPolicy") or {}
    failed = conditions.get("Failed")
    if failed is not None and run_policy.get("backoffLimit") is not None and \
            "backoff limit" in str(failed.get("message")):
        # Its pods are gone with it (cleanPodPolicy Running): the limit says how many attempts were made.
        replicas = (spec.get("pytorchReplicaSpecs") or {}).values()
        nodes = sum(int(replica.get("replicas", 1)) for replica in replicas)
        failures = max(failures, int(run_policy["backoffLimit"]) // max(nodes, 1))
    suspended = bool(run_policy.get("suspend")) or "Suspended" in conditions
    return _observation(job, pods, completed=conditions.get("Succeeded"), failed=failed,
                        failures=failures, active=active, suspended=suspended)


def _observation(
    workload: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    completed: Mapping[str, Any] | None,
    failed: Mapping[str, Any] | None,
    failures: int,
    active: bool,
    suspended: bool,
) -> JobObservation:
    """The phase of any workload from its verdict and its pods: why the last pod failed, why one
    waits (unschedulable, an image that does not pull), or that one runs."""
    labels, meta = labels_of(workload), workload["metadata"]
    status = workload.get("status") or {}
    pods = sorted(pods, key=lambda pod: timestamp(pod["metadata"].get("creationTimestamp")) or 0)
    last_failure = next((why for why in map(_pod_failure, reversed(pods)) if why), "")
    phase: JobPhase
    finished_at = None
    exit_code = None
    if completed is not None:
        phase, message, exit_code = "succeeded", "", 0
        finished_at = timestamp(status.get("completionTime") or completed.get("lastTransitionTime"))
    elif failed is not None:
        phase = "failed"
        why = last_failure or failed.get("message") or "failed"
        message = f"{failed.get('reason')}: {why}" if failed.get("reason") else why
        finished_at = timestamp(failed.get("lastTransitionTime"))
        exit_code = next((code for code in map(_exit_code, reversed(pods)) if code is not None), None)
    elif suspended:
        phase, message = "pending", "suspended: waiting for its queue to admit it (Kueue)"
    else:
        waiting = next((why for why in map(_pod_waiting, pods) if why), "")
        running = any((pod.get("status") or {}).get("phase") == "Running" for pod in pods)
        phase = "running" if running or (active and not waiting) else "pending"
        message = waiting if phase == "pending" else ""
        if last_failure:
            message = f"{message + '; ' if message else ''}attempt {failures} failed: {last_failure}"
    attempts = max(1, failures if phase == "failed" else failures + 1)
    return JobObservation(
        kind=labels[KIND_LABEL],
        name=labels[NAME_LABEL],
        fingerprint=annotations_of(workload)[FINGERPRINT_ANNOTATION],
        phase=phase,
        attempts=attempts,
        started_at=timestamp(status.get("startTime") or meta.get("creationTimestamp")) or time.time(),
        finished_at=finished_at,
        exit_code=exit_code,
        message=_one_line(message),
        handle=f"{str(workload.get('kind') or 'Job').lower()}/{meta['name']}",
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
    if not is_ours(deployment):
        return None
    labels, annotations, meta = labels_of(deployment), annotations_of(deployment), deployment["metadata"]
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
    if job_file is not None and is_ours(job_file):
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
        started_at=timestamp(meta.get("creationTimestamp")) or time.time(),
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
        return _restarted_container_failure(pod)
    for key in ("initContainerStatuses", "containerStatuses"):  # a failed init container comes first
        for container in status.get(key) or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated and terminated.get("exitCode", 0) != 0:
                last = _last_line(terminated.get("message") or "")
                text = f"{terminated.get('reason') or 'Error'} (exit {terminated.get('exitCode')})"
                init = key == "initContainerStatuses"
                where = f"init container {container.get('name')} of pod" if init else "pod"
                return f"{text} in {where} {pod['metadata']['name']}" + (f": {last}" if last else "")
    if status.get("reason") or status.get("message"):
        name = pod["metadata"]["name"]
        return f"{status.get('reason') or 'Failed'}: {status.get('message') or ''} (pod {name})"
    return f"pod {pod['metadata']['name']} failed"


def _restarted_container_failure(pod: Mapping[str, Any]) -> str:
    """Why a container that restarts in place (restartPolicy OnFailure, as a PyTorchJob's do)
    last failed, from its lastState."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        last = (container.get("lastState") or {}).get("terminated") or {}
        if last and last.get("exitCode", 0) != 0:
            line = _last_line(last.get("message") or "")
            text = f"{last.get('reason') or 'Error'} (exit {last.get('exitCode')})"
            return f"{text} in pod {pod['metadata']['name']}" + (f": {line}" if line else "")
    return ""


def _exit_code(pod: Mapping[str, Any]) -> int | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        state = container.get("state") or {}
        terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
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


def pods_of_server(
    pods: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    labels = labels_of(deployment)
    return [
        pod
        for pod in pods
        if labels_of(pod).get(KIND_LABEL) == "Deployment"
        and labels_of(pod).get(NAME_LABEL) == labels.get(NAME_LABEL)
    ]


def newest(jobs: Iterator[JobObservation]) -> list[JobObservation]:
    newest: dict[tuple[str, str, str], JobObservation] = {}
    for job in jobs:
        key = (job.kind, job.name, job.fingerprint)
        if key not in newest or job.started_at > newest[key].started_at:
            newest[key] = job
    return list(newest.values())


def _true_conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"}


def is_finished(workload: Mapping[str, Any]) -> bool:
    """Ended, for good: a Job Complete or Failed, a JobSet Completed or Failed, a PyTorchJob
    Succeeded or Failed."""
    return bool({"Complete", "Completed", "Succeeded", "Failed"} & set(_true_conditions(workload)))


def launched_by_jobset(job: Mapping[str, Any]) -> bool:
    """A child Job of a JobSet (it copies our labels from the template): its JobSet is the state."""
    return JOBSET_NAME_LABEL in labels_of(job)


def pods_of_workload(
    pods: Sequence[Mapping[str, Any]], workload: Mapping[str, Any]
) -> list[Mapping[str, Any]]:
    label = POD_OWNER_LABEL.get(str(workload.get("kind") or "Job"), JOB_NAME_LABEL)
    return [pod for pod in pods if labels_of(pod).get(label) == name_of(workload)]


def is_ours(obj: Mapping[str, Any]) -> bool:
    """Ours: managed-by tuneops, kind and name labels, and a fingerprint annotation. Objects that
    merely copied our labels lack the annotation and are never read as state or deleted."""
    labels = labels_of(obj)
    return (
        labels.get("app.kubernetes.io/managed-by") == MANAGED_BY
        and KIND_LABEL in labels
        and NAME_LABEL in labels
        and FINGERPRINT_ANNOTATION in annotations_of(obj)
    )


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def node_rank(pod: Mapping[str, Any]) -> int:
    """Which node of its job a pod is: the completion index of an Indexed Job's pod (also a
    JobSet's), 0 for a PyTorchJob's Master and 1 + index for its Workers."""
    labels = labels_of(pod)
    replica_type = labels.get("training.kubeflow.org/replica-type")
    if replica_type is not None:
        index = labels.get("training.kubeflow.org/replica-index", "0")
        return (int(index) if index.isdigit() else 0) + (0 if replica_type == "master" else 1)
    index = annotations_of(pod).get("batch.kubernetes.io/job-completion-index", "0")
    return int(index) if index.isdigit() else 0


def timestamp(value: str | None) -> float | None:
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
    """A pod's message as status shows it: one line, credentials masked (it quotes the job's output)."""
    text = redact(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"
