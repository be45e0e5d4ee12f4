"""The Kubernetes backend against a FAKE API server (tests/support/fake_kube.py, over real HTTP), with a
fake kubelet that runs each pod's command as a local process (tests/support/kube_support.py).

Everything else is real: the `tuneops` CLI, the kubeconfig loading, the MLflow server, the
jobs (the tiny model trains), Git. What the fake does not model is listed in its docstring; the
`cluster`-marked suite (tests/cluster/) runs the same quickstart against a real cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reconciler.backends.kubernetes.labels import FINGERPRINT_ANNOTATION
from tests.support.fake_kube import FakeKubeApi
from tests.support.kube_support import HOLD, Fail, FakeKubelet, kubectl, plan, tuneops
from tests.support.reconcile_support import CLI_ENV, SpecRepo
from tests.support.runtime_support import needs_training

pytestmark = needs_training

KINDS_READ = ("jobs", "pods", "deployments", "configmaps")

# Nothing left to do: the quickstart's Sweep stays suspended (suspend: true) and the rest is built.
CONVERGED = {"noop", "suspended"}


def reads_since(api: FakeKubeApi, start: int) -> list[str]:
    return [f"{r.method} {r.path.rsplit('/', 1)[-1]}" for r in api.requests[start:]]


@pytest.mark.slow
def test_the_quickstart_converges_on_the_fake_cluster(cluster_repo: SpecRepo, fake_api: FakeKubeApi,
                                                      kubelet: FakeKubelet):
    # Empty cluster, empty MLflow: everything is created; the state costs one LIST per kind.
    start = len(fake_api.requests)
    first = plan(cluster_repo)
    assert first["by_resource"] == {"BaseModel/tiny-llama": "noop", "Dataset/fruit-colors": "create",
                                    "FineTune/fruit-sft": "create", "Evaluation/fruit-sft-quality": "create",
                                    "Deployment/fruit-bot": "create", "Sweep/fruit-lr": "suspended"}
    assert sorted(reads_since(fake_api, start)) == sorted(f"GET {plural}" for plural in KINDS_READ)
    assert all(r.query.get("labelSelector", "").startswith("app.kubernetes.io/managed-by=tuneops")
               for r in fake_api.requests[start:])

    applied = tuneops(cluster_repo, "apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "fruit-bot: serving" in applied.stdout and "svc.cluster.local" in applied.stdout

    # What was applied: server-side apply, as field manager tuneops, for every object.
    writes = [r for r in fake_api.requests if r.method == "PATCH"]
    assert writes and {(r.content_type, r.field_manager) for r in writes} == {
        ("application/apply-patch+yaml", "tuneops")}
    jobs = fake_api.objects("Job")
    assert sorted(j["metadata"]["labels"]["tuneops.dev/kind"] for j in jobs) == ["Dataset", "Evaluation",
                                                                                 "FineTune"]
    assert all(len(j["metadata"]["annotations"][FINGERPRINT_ANNOTATION]) == 64 for j in jobs)
    assert len(kubelet.ran) == 3  # each job ran once, in a pod

    # The data and the base model are files of the spec repository: each pod read them from a
    # checkout of the remote at the planned commit, made by its init container, not from here.
    dataset_job = next(j for j in jobs if j["metadata"]["labels"]["tuneops.dev/kind"] == "Dataset")
    job_file = json.loads(fake_api.get("ConfigMap", dataset_job["metadata"]["name"])["data"]["job.json"])
    assert job_file["source"] == "file:///workspace/specs/data/fruit-colors.jsonl"
    assert job_file["checkout"] == {"into": "/workspace/specs", "paths": ["data/fruit-colors.jsonl"]}
    assert job_file["git"]["commit"] == cluster_repo.git("rev-parse", "HEAD")
    assert [c["name"] for c in dataset_job["spec"]["template"]["spec"]["initContainers"]] == ["checkout"]
    dataset_pod = next(p["metadata"]["name"] for p in fake_api.objects("Pod")
                       if p["metadata"]["labels"]["tuneops.dev/kind"] == "Dataset")
    checkout = kubelet.work / "pods" / dataset_pod / "volumes" / "specs"
    assert (checkout / "data" / "fruit-colors.jsonl").read_bytes() == \
        (cluster_repo.root / "data" / "fruit-colors.jsonl").read_bytes()
    assert not (checkout / "models").exists()  # only what the job reads is checked out

    # Jobs complete and MLflow holds their records: nothing to do.
    assert set(plan(cluster_repo)["by_resource"].values()) == CONVERGED

    # Logs come from the job's pod, through the API.
    logs = tuneops(cluster_repo, "logs", "Dataset/fruit-colors", "--tail", "3")
    dataset_pod = next(p["metadata"]["name"] for p in fake_api.objects("Pod")
                       if p["metadata"]["labels"]["tuneops.dev/kind"] == "Dataset")
    assert logs.exit_code == 0, logs.output
    assert logs.stdout == "".join(fake_api.pod_log(dataset_pod).splitlines(True)[-3:]) != ""
    assert "the run at the fingerprint the specs ask for" in logs.stderr  # found by its pod's annotation

    # Finished Jobs go when their TTL passes: MLflow still says they are built, so still nothing.
    for job in jobs:
        kubectl(fake_api, "DELETE", f"/apis/batch/v1/namespaces/default/jobs/{job['metadata']['name']}")
    assert set(plan(cluster_repo)["by_resource"].values()) == CONVERGED

    # The server's Deployment deleted behind our back: the plan creates it again, apply does.
    kubectl(fake_api, "DELETE", "/apis/apps/v1/namespaces/default/deployments/fruit-bot")
    assert plan(cluster_repo)["by_resource"]["Deployment/fruit-bot"] == "create"
    assert tuneops(cluster_repo, "apply", ".", "--yes").exit_code == 0
    assert fake_api.get("Deployment", "fruit-bot") is not None
    assert len(kubelet.ran) == 3  # nothing was trained again

    # Someone scales the server by hand: the plan names the change and who made it; apply restores.
    replicas = fake_api.get("Deployment", "fruit-bot")["spec"]["replicas"]
    kubectl(fake_api, "PATCH", "/apis/apps/v1/namespaces/default/deployments/fruit-bot",
            {"spec": {"replicas": replicas + 2}})
    drifted = plan(cluster_repo)
    assert drifted["by_resource"]["Deployment/fruit-bot"] == "update"
    assert ".spec.replicas changed by kubectl-edit" in drifted["reasons"]["Deployment/fruit-bot"]
    assert tuneops(cluster_repo, "apply", ".", "--yes").exit_code == 0
    assert fake_api.get("Deployment", "fruit-bot")["spec"]["replicas"] == replicas
    assert set(plan(cluster_repo)["by_resource"].values()) == CONVERGED

    # Autoscaling on: an HPA appears and the Deployment leaves its replicas to it. Off: it goes.
    cluster_repo.edit("deployment.yaml", "  runtime: transformers\n",
                      "  runtime: transformers\n  autoscaling: {maxReplicas: 3}\n")
    cluster_repo.commit("autoscale the bot")
    assert plan(cluster_repo)["by_resource"]["Deployment/fruit-bot"] == "update"
    assert tuneops(cluster_repo, "apply", ".", "--yes").exit_code == 0
    assert fake_api.get("HorizontalPodAutoscaler", "fruit-bot")["spec"]["maxReplicas"] == 3
    assert "replicas" not in fake_api.get("Deployment", "fruit-bot")["spec"]
    assert set(plan(cluster_repo)["by_resource"].values()) == CONVERGED
    cluster_repo.edit("deployment.yaml", "  autoscaling: {maxReplicas: 3}\n", "")
    cluster_repo.commit("a fixed number of replicas again")
    assert tuneops(cluster_repo, "apply", ".", "--yes").exit_code == 0
    assert fake_api.get("HorizontalPodAutoscaler", "fruit-bot") is None
    assert len(kubelet.ran) == 3  # nothing was trained again



@pytest.mark.slow
def test_a_failing_job_is_retried_by_kubernetes_then_failed_with_the_pods_reason(
        cluster_repo: SpecRepo, fake_api: FakeKubeApi, kubelet: FakeKubelet):
    kubelet.policies["FineTune/fruit-sft"] = Fail("OOMKilled", 137,
                                                  "torch.OutOfMemoryError: CUDA out of memory")
    applied = tuneops(cluster_repo, "apply", ".", "--yes")
    assert applied.exit_code == 1
    assert "OOMKilled (exit 137)" in applied.output and "BackoffLimitExceeded" in applied.output

    job = next(j for j in fake_api.objects("Job")
               if j["metadata"]["labels"]["tuneops.dev/kind"] == "FineTune")
    assert job["spec"]["backoffLimit"] == 1  # maxAttempts 2
    assert job["status"]["failed"] == 2  # Kubernetes made both attempts; apply submitted once
    assert sum(r.method == "PATCH" and r.path.endswith("/jobs/" + job["metadata"]["name"])
               for r in fake_api.requests) == 1

    after = plan(cluster_repo)
    assert after["by_resource"]["FineTune/fruit-sft"] == "blocked"
    reason = after["reasons"]["FineTune/fruit-sft"]
    assert "failed 2 of 2 attempts" in reason and "OOMKilled (exit 137)" in reason
    assert "CUDA out of memory" in reason  # the pod's termination message
    assert after["by_resource"]["Deployment/fruit-bot"] == "blocked"

    # Fixed (here: the node has memory again): --retry-failed replaces the failed Job.
    del kubelet.policies["FineTune/fruit-sft"]
    retried = tuneops(cluster_repo, "apply", ".", "--yes", "--retry-failed")
    assert retried.exit_code == 0, retried.output
    assert set(plan(cluster_repo)["by_resource"].values()) == CONVERGED


@pytest.mark.slow
def test_a_running_job_deleted_behind_our_back_is_created_again(cluster_repo: SpecRepo, fake_api: FakeKubeApi,
                                                                 kubelet: FakeKubelet):
    kubelet.policies["Dataset/fruit-colors"] = HOLD
    env = {**CLI_ENV, "KUBECONFIG": str(cluster_repo.kubeconfig)}

    apply = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", ".", "--yes",
                              "--target", "Dataset/fruit-colors"], cwd=cluster_repo.root,
                             env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p["status"].get("phase") == "Running" for p in fake_api.objects("Pod")):
            assert time.monotonic() < deadline, "the Dataset's pod never started"
            time.sleep(0.2)
        apply.send_signal(signal.SIGINT)  # the job keeps running; the next apply adopts it
        apply.communicate(timeout=60)
    finally:
        apply.kill()
    running = plan(cluster_repo)
    assert running["by_resource"]["Dataset/fruit-colors"] == "wait"

    job = fake_api.objects("Job")[0]
    kubectl(fake_api, "DELETE", f"/apis/batch/v1/namespaces/default/jobs/{job['metadata']['name']}")
    gone = plan(cluster_repo)
    assert gone["by_resource"]["Dataset/fruit-colors"] == "create"

    del kubelet.policies["Dataset/fruit-colors"]
    again = tuneops(cluster_repo, "apply", ".", "--yes", "--target", "Dataset/fruit-colors")
    assert again.exit_code == 0, again.output
    assert fake_api.get("Job", job["metadata"]["name"]) is not None  # the same deterministic name
    assert plan(cluster_repo)["by_resource"]["Dataset/fruit-colors"] == "noop"


@pytest.mark.slow  # a pod's checkout and a refused job through the fake cluster: ~20 s
def test_a_job_whose_spec_files_are_not_pushed_is_not_started(cluster_repo: SpecRepo, fake_api: FakeKubeApi):
    # A pod checks the data out from the remote at HEAD: with a row added here and not committed,
    # it would train on other bytes than the plan fingerprinted. Nothing is submitted.
    data = cluster_repo.root / "data" / "fruit-colors.jsonl"
    data.write_text(data.read_text() + data.read_text().splitlines(keepends=True)[0])
    applied = tuneops(cluster_repo, "apply", ".", "--yes", "--target", "Dataset/fruit-colors")
    assert applied.exit_code == 1, applied.output
    assert "error: Dataset/fruit-colors: its pods check out data/fruit-colors.jsonl at commit" in \
        applied.output
    assert "data/fruit-colors.jsonl: uncommitted changes: commit and push, then apply again" in applied.output
    assert fake_api.objects("Job") == [] and fake_api.objects("ConfigMap") == []

    # Committed, not pushed: the remote does not have that commit yet.
    cluster_repo.git("commit", "-q", "-am", "one more fruit")
    head = cluster_repo.git("rev-parse", "HEAD")
    applied = tuneops(cluster_repo, "apply", ".", "--yes", "--target", "Dataset/fruit-colors")
    assert applied.exit_code == 1, applied.output
    assert f"commit {head[:12]} is on no branch of origin yet (git push)" in applied.output
    assert fake_api.objects("Job") == []
