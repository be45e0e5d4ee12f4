"""Reading Kubernetes objects as observations: Job, JobSet and PyTorchJob conditions to phases, why
a pod failed or waits, when a rollout counts as serving, and what counts as drift. Objects are
written as the API server returns them (shapes from the batch/v1, apps/v1 and core/v1 references,
and the JobSet and training-operator controllers' sources); the launchers' cases are fixture
files in tests/testdata/workloads/."""

from __future__ import annotations

import pytest
import yaml

from reconciler.backends.kubernetes.health import (
    job_observation,
    managed_fields_drift,
    node_rank,
    observe_workload,
    server_observation,
)
from reconciler.backends.kubernetes.labels import FINGERPRINT_ANNOTATION
from tests.conftest import REPO_ROOT

FP = "a" * 64
OURS = {"app.kubernetes.io/managed-by": "tuneops", "tuneops.dev/kind": "FineTune", "tuneops.dev/name": "sft"}


def job(status: dict | None = None, *, suspend: bool = False, annotations: dict | None = None) -> dict:
    return {
        "kind": "Job",
        "metadata": {
            "name": "sft-finetune-aaaaaaaaaa",
            "labels": dict(OURS),
            "annotations": {FINGERPRINT_ANNOTATION: FP} if annotations is None else annotations,
            "creationTimestamp": "2026-11-23T10:00:00Z",
        },
        "spec": {"backoffLimit": 1, "suspend": suspend},
        "status": status or {},
    }


def pod(
    phase: str,
    *,
    created: str = "2026-11-23T10:00:01Z",
    terminated: dict | None = None,
    waiting: dict | None = None,
    conditions: list | None = None,
) -> dict:
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {"running": {}}
    return {
        "kind": "Pod",
        "metadata": {"name": f"sft-{created[-3:-1]}", "creationTimestamp": created},
        "status": {
            "phase": phase,
            "conditions": conditions or [],
            "containerStatuses": [{"name": "job", "state": state}],
        },
    }


def condition(kind: str, **extra: str) -> dict:
    return {"type": kind, "status": "True", "lastTransitionTime": "2026-11-23T11:00:00Z", **extra}


def test_job_conditions_become_phases():
    assert (
        job_observation(job({"active": 1, "startTime": "2026-11-23T10:00:00Z"}), [pod("Running")]).phase
        == "running"
    )
    done = job_observation(
        job(
            {"succeeded": 1, "completionTime": "2026-11-23T11:00:00Z", "conditions": [condition("Complete")]}
        ),
        [],
    )
    assert (done.phase, done.exit_code, done.attempts) == ("succeeded", 0, 1)
    assert done.finished_at is not None and done.finished_at > done.started_at
    queued = job_observation(job(suspend=True), [])
    assert queued.phase == "pending" and "Kueue" in queued.message


def test_a_failed_job_says_why_its_last_pod_failed():
    pods = [
        pod(
            "Failed",
            created="2026-11-23T10:00:01Z",
            terminated={"exitCode": 1, "reason": "Error", "message": "first"},
        ),
        pod(
            "Failed",
            created="2026-11-23T10:05:01Z",
            terminated={"exitCode": 137, "reason": "OOMKilled", "message": "loading\nCUDA out of memory\n"},
        ),
    ]
    failed = job_observation(
        job(
            {
                "failed": 2,
                "conditions": [
                    condition(
                        "Failed",
                        reason="BackoffLimitExceeded",
                        message="Job has reached the specified backoff limit",
                    )
                ],
            }
        ),
        pods,
    )
    assert failed.phase == "failed" and failed.attempts == 2 and failed.exit_code == 137
    assert failed.message.startswith("BackoffLimitExceeded: OOMKilled (exit 137) in pod ")
    assert failed.message.endswith(": CUDA out of memory")


def test_a_retrying_job_runs_its_next_attempt_and_remembers_the_last_failure():
    pods = [
        pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"}),
        pod("Running", created="2026-11-23T10:05:01Z"),
    ]
    retrying = job_observation(job({"failed": 1, "active": 1}), pods)
    assert (retrying.phase, retrying.attempts) == ("running", 2)
    assert "attempt 1 failed: OOMKilled (exit 137)" in retrying.message


def test_a_pod_that_cannot_be_scheduled_keeps_the_job_pending_with_the_schedulers_words():
    unschedulable = pod(
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    pending = job_observation(job({"active": 1}), [unschedulable])
    assert pending.phase == "pending"
    assert pending.message == "Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."


def test_objects_without_our_fingerprint_annotation_are_not_state():
    assert job_observation(job({"active": 1}, annotations={}), []) is None


def deployment(status: dict, *, generation: int = 2, managed: list | None = None) -> dict:
    labels = {**OURS, "tuneops.dev/kind": "Deployment", "tuneops.dev/name": "bot"}
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "bot",
            "generation": generation,
            "labels": labels,
            "annotations": {FINGERPRINT_ANNOTATION: FP, "tuneops.dev/model-version": "m/3"},
            "managedFields": managed or [],
        },
        "spec": {"replicas": 2},
        "status": status,
    }


JOB_FILE = {
    "kind": "ConfigMap",
    "metadata": {
        "name": "bot",
        "labels": {**OURS, "tuneops.dev/kind": "Deployment"},
        "annotations": {FINGERPRINT_ANNOTATION: FP},
    },
    "data": {"job.json": '{"spec": {"replicas": 2}}'},
}


def test_a_server_serves_once_every_replica_runs_the_new_template():
    rolling = {
        "observedGeneration": 2,
        "replicas": 3,
        "updatedReplicas": 1,
        "availableReplicas": 2,
        "conditions": [{"type": "Available", "status": "True"}],
    }
    assert server_observation(deployment(rolling), [], JOB_FILE, "ml").phase == "starting"
    stale = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert server_observation(deployment(stale), [], JOB_FILE, "ml").phase == "starting"
    done = server_observation(
        deployment({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        [],
        JOB_FILE,
        "ml",
    )
    assert (done.phase, done.url, done.model_version) == ("serving", "http://bot.ml.svc.cluster.local", "m/3")
    assert done.job == {"spec": {"replicas": 2}} and done.drift == ""


def test_a_server_that_cannot_roll_out_has_failed_with_the_reason():
    stuck = {
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "bot-5d" has timed out progressing.',
            }
        ],
    }
    failed = server_observation(deployment(stuck), [], JOB_FILE, "ml")
    assert failed.phase == "failed" and failed.message.startswith("ProgressDeadlineExceeded: ")
    crashing = pod("Running", waiting={"reason": "CrashLoopBackOff", "message": "back-off 5m0s"})
    crashing["metadata"]["labels"] = {"tuneops.dev/kind": "Deployment", "tuneops.dev/name": "bot"}
    assert server_observation(deployment({}), [crashing], JOB_FILE, "ml").message.startswith(
        "CrashLoopBackOff"
    )


def test_drift_is_a_spec_field_or_one_of_our_labels_set_by_another_manager():
    ours = {"manager": "tuneops", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    status_writer = {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "subresource": "status",
        "fieldsV1": {"f:status": {"f:replicas": {}}},
    }
    revision = {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}},
    }
    assert managed_fields_drift(deployment({}, managed=[ours, status_writer, revision])) == ""
    edit = {
        "manager": "kubectl-edit",
        "operation": "Update",
        "fieldsV1": {
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {'k:{"name":"server"}': {"f:image": {}}}}},
            }
        },
    }
    relabel = {
        "manager": "kubectl-label",
        "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:tuneops.dev/name": {}, "f:team": {}}}},
    }
    drift = managed_fields_drift(deployment({}, managed=[ours, edit, relabel]))
    assert drift == (
        '.spec.replicas, .spec.template.spec.containers[k:{"name":"server"}].image, '
        ".metadata.labels.tuneops.dev/name changed by kubectl-edit, kubectl-label"
    )


def test_a_missing_job_file_is_drift_too():
    served = server_observation(deployment({}), [], None, "ml")
    assert served.job is None and "ConfigMap bot" in served.drift


def test_replicas_the_autoscaler_sets_are_not_drift():
    scaled = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale",
              "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    autoscaled = deployment({}, managed=[scaled])
    assert "replicas" in server_observation(autoscaled, [], JOB_FILE, "ml").drift  # kubectl scale, no HPA
    autoscaled["metadata"]["annotations"]["tuneops.dev/autoscaled"] = "true"
    assert server_observation(autoscaled, [], JOB_FILE, "ml").drift == ""



WORKLOADS = sorted((REPO_ROOT / "tests" / "testdata" / "workloads").glob("*.yaml"))


@pytest.mark.parametrize("fixture", WORKLOADS, ids=[path.stem for path in WORKLOADS])
def test_launcher_workloads_become_phases(fixture):
    """JobSets and PyTorchJobs (and a JobSet's own child Job), from fixture files written as
    their controllers leave them: each file holds the workload, its pods and what is expected."""
    case = yaml.safe_load(fixture.read_text())
    observed = observe_workload(case["workload"], case["pods"])
    if case["expect"] is None:
        assert observed is None
        return
    assert {key: getattr(observed, key) for key in case["expect"]} == case["expect"]
    assert (observed.kind, observed.name, observed.fingerprint) == ("FineTune", "sft", FP)


def test_node_0_is_the_first_index_or_the_pytorchjob_master():
    def labelled(labels: dict, index: str | None = None) -> dict:
        annotations = {"batch.kubernetes.io/job-completion-index": index} if index is not None else {}
        return {"metadata": {"labels": labels, "annotations": annotations}}

    master = {"training.kubeflow.org/replica-type": "master", "training.kubeflow.org/replica-index": "0"}
    worker = {"training.kubeflow.org/replica-type": "worker", "training.kubeflow.org/replica-index": "1"}
    assert [node_rank(labelled(master)), node_rank(labelled(worker))] == [0, 2]
    assert [node_rank(labelled({}, "0")), node_rank(labelled({}, "3"))] == [0, 3]
