"""FAKE controllers for the custom workloads tuneops launches, run against the fake API server
(tests/support/fake_kube.py): what the JobSet controller and the Kubeflow training operator would do,
reduced to what the backend reads back.

- JobSet: creates each replicated Job (`<jobset>-<replicatedJob>-<index>`, the template's labels
  and annotations plus JobSet's own, pods in the JobSet's subdomain); when a child Job fails,
  deletes every child Job with its pods and creates them again (`status.restarts` + 1) until
  `failurePolicy.maxRestarts`, then fails with `ReachedMaxRestarts` (`FailedJobs` without a
  policy); completes (`AllJobsCompleted`) when every child Job has.
- PyTorchJob: creates the pods `<job>-master-0` and `<job>-worker-<i>` (the operator's labels, the
  PET_* and MASTER_* environment, the replica's restartPolicy); a container that fails restarts in
  place (`restart_container`, restartCount + 1), and when the restarts over all pods reach
  `runPolicy.backoffLimit` the job fails and its running pods are deleted (cleanPodPolicy
  Running); it succeeds when the Master's pod does.

They do NOT model: admission webhooks and defaulting, startup or success policies other than
the defaults, several replicated Jobs' DependsOn, in-place restarts, the headless Services both
controllers make (nothing here resolves names: the fake kubelet runs every pod on 127.0.0.1),
the training operator's per-pod Services and init container, elastic PyTorchJobs, gang
scheduling, suspension by Kueue (a suspended workload is just left alone), and event objects.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.support.fake_kube import FakeKubeApi, now

JOBSET_LABELS = (
    "jobset.sigs.k8s.io/jobset-name",
    "jobset.sigs.k8s.io/replicatedjob-name",
    "jobset.sigs.k8s.io/job-index",
    "jobset.sigs.k8s.io/restart-attempt",
)
OPERATOR_LABELS = "training.kubeflow.org"


def _true(obj: dict, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _condition(kind: str, reason: str, message: str) -> dict:
    at = now()
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at}


def _owner(obj: dict) -> dict:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owned_by(obj: dict, owner: dict) -> bool:
    return any(
        ref.get("uid") == owner["metadata"]["uid"] for ref in obj["metadata"].get("ownerReferences") or []
    )


class JobSetController:
    """The JobSet controller, one sync at a time (the fake kubelet calls `sync` every tick)."""

    def __init__(self, api: FakeKubeApi, namespace: str = "default"):
        self.api, self.namespace = api, namespace

    def sync(self) -> None:
        for jobset in self.api.objects("JobSet", self.namespace):
            if not (_true(jobset, "Completed") or _true(jobset, "Failed")) and not jobset["spec"].get(
                "suspend"
            ):
                self._sync_one(jobset)

    def _sync_one(self, jobset: dict) -> None:
        status = jobset.setdefault("status", {})
        restarts = int(status.get("restarts") or 0)
        children = [job for job in self.api.objects("Job", self.namespace) if _owned_by(job, jobset)]
        failed = [job for job in children if _true(job, "Failed")]
        if failed:
            policy = jobset["spec"].get("failurePolicy")
            if policy is not None and restarts < int(policy.get("maxRestarts") or 0):
                for job in children:  # every node starts again together
                    self.api.delete_with_dependents("Job", job["metadata"]["name"], self.namespace)
                status.update(restarts=restarts + 1, restartsCountTowardsMax=restarts + 1)
                self.api.put(jobset)
                return
            first = failed[0]["metadata"]["name"]
            reason, why = (
                ("ReachedMaxRestarts", "reaching max number of restarts")
                if policy is not None
                else ("FailedJobs", "one or more job failures")
            )
            status["conditions"] = [
                *(status.get("conditions") or []),
                _condition("Failed", reason, f"jobset failed due to {why} (first failed job: {first})"),
            ]
            status["terminalState"] = "Failed"
            self.api.put(jobset)
            return
        if children and all(_true(job, "Complete") for job in children):
            status["conditions"] = [
                *(status.get("conditions") or []),
                _condition("Completed", "AllJobsCompleted", "jobset completed successfully"),
            ]
            status["terminalState"] = "Completed"
            self.api.put(jobset)
            return
        if not children:
            for replicated in jobset["spec"]["replicatedJobs"]:
                for index in range(int(replicated.get("replicas", 1))):
                    self.api.put(self._child(jobset, replicated, index, restarts))
        status["replicatedJobsStatus"] = [
            {
                "name": replicated["name"],
                "ready": 0,
                "succeeded": 0,
                "failed": 0,
                "suspended": 0,
                "active": sum(1 for job in children if not _true(job, "Complete")),
            }
            for replicated in jobset["spec"]["replicatedJobs"]
        ]
        self.api.put(jobset)

    def _child(self, jobset: dict, replicated: dict, index: int, restarts: int) -> dict:
        name = jobset["metadata"]["name"]
        template = copy.deepcopy(replicated["template"])
        ours = dict(zip(JOBSET_LABELS, (name, replicated["name"], str(index), str(restarts)), strict=True))
        metadata = template.get("metadata") or {}
        labels = {**(metadata.get("labels") or {}), **ours}
        annotations = {**(metadata.get("annotations") or {}), **ours}
        spec = template["spec"]
        pod_meta = spec["template"].setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **ours}
        pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **ours}
        network = jobset["spec"].get("network") or {}
        if network.get("enableDNSHostnames", True):
            spec["template"]["spec"]["subdomain"] = network.get("subdomain") or name
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{name}-{replicated['name']}-{index}",
                "namespace": self.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [_owner(jobset)],
            },
            "spec": spec,
        }


class PyTorchJobController:
    """The Kubeflow training operator's PyTorchJob controller, reduced (see the module docstring)."""

    def __init__(self, api: FakeKubeApi, namespace: str = "default"):
        self.api, self.namespace = api, namespace

    def sync(self) -> None:
        for job in self.api.objects("PyTorchJob", self.namespace):
            if not (_true(job, "Succeeded") or _true(job, "Failed")) and not (
                job["spec"].get("runPolicy") or {}
            ).get("suspend"):
                self._sync_one(job)

    def pods(self, job: dict) -> list[dict]:
        return [pod for pod in self.api.objects("Pod", self.namespace) if _owned_by(pod, job)]

    def _sync_one(self, job: dict) -> None:
        name = job["metadata"]["name"]
        pods = self.pods(job)
        status = job.setdefault("status", {})
        run_policy = job["spec"].get("runPolicy") or {}
        restarts = sum(
            int(c.get("restartCount") or 0)
            for pod in pods
            for c in pod["status"].get("containerStatuses") or []
        )
        master = next((pod for pod in pods if pod["metadata"]["name"] == f"{name}-master-0"), None)
        if master is not None and master["status"].get("phase") == "Succeeded":
            self._finish(
                job,
                pods,
                _condition(
                    "Succeeded", "PyTorchJobSucceeded", f"PyTorchJob {name} is successfully completed."
                ),
            )
            return
        limit = run_policy.get("backoffLimit")
        if limit is not None and restarts and restarts >= int(limit):
            self._finish(
                job,
                pods,
                _condition(
                    "Failed",
                    "PyTorchJobFailed",
                    f"Job {name} has failed because it has reached the specified backoff limit",
                ),
            )
            return
        if not pods:
            status.setdefault("startTime", now())
            status["conditions"] = [
                _condition("Created", "PyTorchJobCreated", f"PyTorchJob {name} is created.")
            ]
            for replica, spec in job["spec"]["pytorchReplicaSpecs"].items():
                for index in range(int(spec.get("replicas", 1))):
                    self.api.put(self._pod(job, replica, spec, index))
            status["conditions"].append(
                _condition("Running", "PyTorchJobRunning", f"PyTorchJob {name} is running.")
            )
        status["replicaStatuses"] = {
            replica: {
                "active": sum(
                    1
                    for pod in self.pods(job)
                    if pod["status"].get("phase") == "Running"
                    and pod["metadata"]["labels"].get(f"{OPERATOR_LABELS}/replica-type") == replica.lower()
                )
            }
            for replica in job["spec"]["pytorchReplicaSpecs"]
        }
        self.api.put(job)

    def _finish(self, job: dict, pods: list[dict], condition: dict) -> None:
        for pod in pods:  # cleanPodPolicy: Running
            if pod["status"].get("phase") == "Running":
                self.api.remove("Pod", pod["metadata"]["name"], self.namespace)
        status = job["status"]
        status["conditions"] = [
            *(c for c in status.get("conditions") or [] if c["type"] != "Running"),
            condition,
        ]
        status["completionTime"] = now()
        self.api.put(job)

    def _pod(self, job: dict, replica: str, spec: dict, index: int) -> dict:
        name = job["metadata"]["name"]
        template = copy.deepcopy(spec["template"])
        total = sum(int(s.get("replicas", 1)) for s in job["spec"]["pytorchReplicaSpecs"].values())
        rank = index if replica == "Master" else index + 1
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            f"{OPERATOR_LABELS}/operator-name": "pytorchjob-controller",
            f"{OPERATOR_LABELS}/job-name": name,
            f"{OPERATOR_LABELS}/replica-type": replica.lower(),
            f"{OPERATOR_LABELS}/replica-index": str(index),
        }
        if replica == "Master":
            labels[f"{OPERATOR_LABELS}/job-role"] = "master"
        pod_spec = template["spec"]
        pod_spec["restartPolicy"] = spec.get("restartPolicy", "OnFailure")
        master_port = next(
            (
                port["containerPort"]
                for container in pod_spec["containers"]
                for port in container.get("ports") or []
                if port.get("name") == "pytorchjob-port"
            ),
            23456,
        )
        environment: list[dict[str, Any]] = [
            {"name": "MASTER_PORT", "value": str(master_port)},
            {"name": "PET_MASTER_PORT", "value": str(master_port)},
            {"name": "MASTER_ADDR", "value": f"{name}-master-0"},
            {"name": "PET_MASTER_ADDR", "value": f"{name}-master-0"},
            {"name": "WORLD_SIZE", "value": str(total)},
            {"name": "RANK", "value": str(rank)},
            {"name": "PET_NODE_RANK", "value": str(rank)},
            {"name": "PET_NNODES", "value": str(total)},
        ]
        if job["spec"].get("nprocPerNode"):
            environment.append({"name": "PET_NPROC_PER_NODE", "value": str(job["spec"]["nprocPerNode"])})
        for container in pod_spec["containers"]:
            container["env"] = [*(container.get("env") or []), *environment]
        started = now()
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{replica.lower()}-{index}",
                "namespace": self.namespace,
                "labels": labels,
                "annotations": (template.get("metadata") or {}).get("annotations") or {},
                "ownerReferences": [_owner(job)],
            },
            "spec": pod_spec,
            "status": {
                "phase": "Running",
                "startTime": started,
                "containerStatuses": [
                    {
                        "name": c.get("name", ""),
                        "image": c.get("image", ""),
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "state": {"running": {"startedAt": started}},
                    }
                    for c in pod_spec["containers"]
                ],
            },
        }

    def restart_container(self, pod_name: str, reason: str, exit_code: int, message: str = "") -> bool:
        """The kubelet restarts a failed container in place (restartPolicy OnFailure). False when
        the pod is gone (its job ended and the operator deleted it)."""
        pod = self.api.get("Pod", pod_name, self.namespace)
        if pod is None or pod["status"].get("phase") != "Running":
            return False
        for container in pod["status"]["containerStatuses"]:
            terminated = {
                "exitCode": exit_code,
                "reason": reason,
                "finishedAt": now(),
                **({"message": message} if message else {}),
            }
            container.update(
                lastState={"terminated": terminated},
                restartCount=container["restartCount"] + 1,
                state={"running": {"startedAt": now()}},
            )
        self.api.put(pod)
        return True

    def pod_succeeded(self, pod_name: str) -> None:
        pod = self.api.get("Pod", pod_name, self.namespace)
        if pod is None:
            return
        pod["status"]["phase"] = "Succeeded"
        for container in pod["status"]["containerStatuses"]:
            container["state"] = {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now()}}
        self.api.put(pod)
