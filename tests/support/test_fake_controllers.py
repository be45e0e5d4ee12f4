"""The fakes the launcher tests lean on do what the real controllers do, as far as the backend
reads it: an Indexed Job's pods per index, JobSet's restarts of every node, the training
operator's pods, in-place restarts and backoff limit."""

from __future__ import annotations

import pytest

from tests.support.fake_controllers import JobSetController, PyTorchJobController
from tests.support.fake_kube import FakeKubeApi

POD_TEMPLATE = {
    "metadata": {"labels": {"app": "x"}},
    "spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "trainer"}]},
}


@pytest.fixture
def api() -> FakeKubeApi:
    return FakeKubeApi()  # not served: these tests drive the controllers directly


def conditions(obj: dict) -> dict[str, str]:
    return {
        c["type"]: c.get("reason", "") for c in obj["status"].get("conditions") or [] if c["status"] == "True"
    }


def indexed_job(name: str, subdomain: str | None = None) -> dict:
    """A two-pod Indexed Job that fails at its first failed pod."""
    template = {
        **POD_TEMPLATE,
        "spec": {**POD_TEMPLATE["spec"], **({"subdomain": subdomain} if subdomain else {})},
    }
    spec = {
        "completionMode": "Indexed",
        "completions": 2,
        "parallelism": 2,
        "backoffLimit": 0,
        "template": template,
    }
    return {"kind": "Job", "metadata": {"name": name}, "spec": spec}


def test_an_indexed_job_runs_a_pod_per_index_and_completes_with_the_last(api: FakeKubeApi):
    api.put(indexed_job("train", subdomain="train"))
    pods = [api.start_pod("train", index=index) for index in (0, 1)]
    assert [p["spec"]["hostname"] for p in pods] == ["train-0", "train-1"]
    assert api.get("Job", "train")["status"]["active"] == 2
    api.complete_pod("train", 1)
    assert "Complete" not in conditions(api.get("Job", "train"))
    api.complete_pod("train", 0)
    assert conditions(api.get("Job", "train"))["Complete"] == "CompletionsReached"


def test_an_indexed_job_that_fails_for_good_stops_its_other_pods(api: FakeKubeApi):
    api.put(indexed_job("train"))
    for index in (0, 1):
        api.start_pod("train", index=index)
    api.fail_pod("train", reason="OOMKilled", exit_code=137, index=1)
    assert conditions(api.get("Job", "train"))["Failed"] == "BackoffLimitExceeded"
    assert [p["status"]["phase"] for p in api.objects("Pod")] == ["Failed"]  # the running one is gone


def jobset(max_restarts: int | None) -> dict:
    spec = {
        "replicatedJobs": [
            {
                "name": "node",
                "replicas": 1,
                "template": {
                    "metadata": {"labels": {"tuneops.dev/name": "sft"}},
                    "spec": {
                        "completionMode": "Indexed",
                        "completions": 2,
                        "parallelism": 2,
                        "backoffLimit": 0,
                        "template": POD_TEMPLATE,
                    },
                },
            }
        ]
    }
    if max_restarts is not None:
        spec["failurePolicy"] = {"maxRestarts": max_restarts}
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": "sft"},
        "spec": spec,
    }


def test_jobset_restarts_every_node_until_its_limit_then_fails(api: FakeKubeApi):
    api.put(jobset(max_restarts=1))
    controller = JobSetController(api)
    controller.sync()
    [child] = api.objects("Job")
    assert child["metadata"]["name"] == "sft-node-0"
    assert child["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"] == "sft"
    assert child["metadata"]["labels"]["tuneops.dev/name"] == "sft"  # the template's labels, copied
    assert child["spec"]["template"]["spec"]["subdomain"] == "sft"
    for attempt in range(2):
        api.start_pod("sft-node-0", index=0)
        api.start_pod("sft-node-0", index=1)
        api.fail_pod("sft-node-0", index=0)
        controller.sync()
        if attempt == 0:  # every child Job (and its pods) deleted, and made again
            assert api.get("JobSet", "sft")["status"]["restarts"] == 1
            assert api.objects("Pod") == [] and api.objects("Job") == []
            controller.sync()
            assert (
                api.get("Job", "sft-node-0")["metadata"]["labels"]["jobset.sigs.k8s.io/restart-attempt"]
                == "1"
            )
    failed = api.get("JobSet", "sft")
    assert conditions(failed)["Failed"] == "ReachedMaxRestarts"
    assert failed["status"]["terminalState"] == "Failed"


def test_jobset_without_a_failure_policy_fails_with_its_first_job_and_completes_with_all(api: FakeKubeApi):
    api.put(jobset(max_restarts=None))
    controller = JobSetController(api)
    controller.sync()
    api.start_pod("sft-node-0")
    api.fail_pod("sft-node-0")
    controller.sync()
    assert conditions(api.get("JobSet", "sft"))["Failed"] == "FailedJobs"

    api.put({**jobset(max_restarts=0), "metadata": {"name": "ok"}})
    controller.sync()
    for index in (0, 1):
        api.start_pod("ok-node-0", index=index)
        api.complete_pod("ok-node-0", index)
    controller.sync()
    assert conditions(api.get("JobSet", "ok"))["Completed"] == "AllJobsCompleted"


def pytorchjob(backoff_limit: int) -> dict:
    container = {
        "name": "pytorch",
        "image": "trainer",
        "ports": [{"name": "pytorchjob-port", "containerPort": 23456}],
    }
    template = {"metadata": {"labels": {"tuneops.dev/name": "sft"}}, "spec": {"containers": [container]}}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "sft"},
        "spec": {
            "nprocPerNode": "1",
            "runPolicy": {"backoffLimit": backoff_limit, "cleanPodPolicy": "Running"},
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
                "Worker": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
            },
        },
    }


def test_the_training_operator_gives_each_node_its_rank_and_node_0s_address(api: FakeKubeApi):
    api.put(pytorchjob(backoff_limit=2))
    controller = PyTorchJobController(api)
    controller.sync()
    pods = {p["metadata"]["name"]: p for p in api.objects("Pod")}
    assert sorted(pods) == ["sft-master-0", "sft-worker-0"]
    env = {
        name: {e["name"]: e["value"] for e in p["spec"]["containers"][0]["env"]} for name, p in pods.items()
    }
    assert [env[name]["PET_NODE_RANK"] for name in sorted(pods)] == ["0", "1"]
    assert {e["PET_MASTER_ADDR"] for e in env.values()} == {"sft-master-0"}
    assert {e["PET_MASTER_PORT"] for e in env.values()} == {"23456"}
    assert pods["sft-master-0"]["metadata"]["labels"]["tuneops.dev/name"] == "sft"
    controller.pod_succeeded("sft-master-0")
    controller.sync()
    assert conditions(api.get("PyTorchJob", "sft"))["Succeeded"] == "PyTorchJobSucceeded"
    assert [p["metadata"]["name"] for p in api.objects("Pod")] == ["sft-master-0"]  # cleanPodPolicy Running


def test_restarts_in_place_count_against_the_backoff_limit(api: FakeKubeApi):
    api.put(pytorchjob(backoff_limit=2))
    controller = PyTorchJobController(api)
    controller.sync()
    assert controller.restart_container("sft-master-0", "OOMKilled", 137, "out of memory")
    master = api.get("Pod", "sft-master-0")["status"]["containerStatuses"][0]
    assert master["restartCount"] == 1 and master["lastState"]["terminated"]["reason"] == "OOMKilled"
    controller.sync()
    assert "Failed" not in conditions(api.get("PyTorchJob", "sft"))
    assert controller.restart_container("sft-worker-0", "Error", 1)
    controller.sync()
    assert conditions(api.get("PyTorchJob", "sft"))["Failed"] == "PyTorchJobFailed"
    assert api.objects("Pod") == []
    assert not controller.restart_container("sft-master-0", "Error", 1)  # gone with its job
