"""Multi-node fine-tunes on the FAKE cluster (tests/support/fake_kube.py) under each launcher: an Indexed
Job with a headless Service, a JobSet, a Kubeflow PyTorchJob. The JobSet and training-operator
controllers are fakes too (tests/support/fake_controllers.py); the training is real: the fake kubelet runs
both nodes' torchrun at once on this machine, rendezvous mapped to 127.0.0.1, and the tiny model
trains as one job of two processes.
"""

from __future__ import annotations

import pytest

from tests.support.fake_kube import FakeKubeApi
from tests.support.kube_support import Fail, FakeKubelet, plan, tuneops
from tests.support.reconcile_support import SpecRepo
from tests.support.runtime_support import needs_training

pytestmark = needs_training

TARGET = ("--target", "FineTune/fruit-sft")


def fine_tune_pods(kubelet: FakeKubelet, since: int) -> list:
    return [launch for launch in kubelet.launched[since:] if "finetune" in launch.command]


def training_runs(repo: SpecRepo, tracking_uri: str) -> list:
    """The fine-tune's complete runs in the repository's own experiment."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = repo.root.joinpath("tuneops.yaml").read_text().split("experiment: ")[1].split()[0]
    found = client.get_experiment_by_name(experiment)
    return client.search_runs(
        [found.experiment_id], "tags.`tuneops.kind` = 'FineTune' and tags.`tuneops.status` = 'complete'"
    )


@pytest.mark.slow
def test_a_two_node_fine_tune_trains_under_each_launcher(
    cluster_repo: SpecRepo, fake_api: FakeKubeApi, kubelet: FakeKubelet, mlflow_server
):
    cluster_repo.edit(
        "tuneops.yaml",
        "  storageClaim: tuneops-store\n",
        "  storageClaim: tuneops-store\n  multiNode: jobset\n",
    )
    cluster_repo.edit(
        "fine-tune.yaml",
        "  resources:\n    gpusPerNode: 0\n",
        "  distributed:\n    strategy: ddp\n  resources:\n    nodes: 2\n    gpusPerNode: 0\n",
    )
    cluster_repo.edit("fine-tune.yaml", "    epochs: 3\n", "    maxSteps: 4\n")  # how, not how well
    cluster_repo.commit("train on two nodes, as a JobSet")

    # Every pod runs out of memory: JobSet restarts both nodes once (maxRestarts = maxAttempts - 1),
    # then fails; apply submitted the JobSet once and reports the pods' reason.
    kubelet.policies["FineTune/fruit-sft"] = Fail(
        "OOMKilled", 137, "torch.OutOfMemoryError: CPU out of memory"
    )
    failed = tuneops(cluster_repo, "apply", ".", "--yes", *TARGET)
    assert failed.exit_code == 1, failed.output
    assert "ReachedMaxRestarts: OOMKilled (exit 137)" in failed.output, failed.output
    [jobset] = fake_api.objects("JobSet")
    assert jobset["status"]["restarts"] == 1
    assert jobset["spec"]["failurePolicy"] == {"maxRestarts": 1}
    assert sum(r.method == "PATCH" and "/jobsets/" in r.path for r in fake_api.requests) == 1
    blocked = plan(cluster_repo)
    assert blocked["by_resource"]["FineTune/fruit-sft"] == "blocked"
    assert "failed 2 of 2 attempts" in blocked["reasons"]["FineTune/fruit-sft"]
    assert "CPU out of memory" in blocked["reasons"]["FineTune/fruit-sft"]

    # Fixed: --retry-failed replaces the JobSet, and both nodes train together.
    del kubelet.policies["FineTune/fruit-sft"]
    since = len(kubelet.launched)
    retried = tuneops(cluster_repo, "apply", ".", "--yes", "--retry-failed", *TARGET)
    assert retried.exit_code == 0, retried.output
    name = fake_api.objects("JobSet")[0]["metadata"]["name"]
    nodes = fine_tune_pods(kubelet, since)
    assert sorted(node.node_rank for node in nodes) == ["0", "1"]  # distinct ranks...
    assert {node.rendezvous for node in nodes} == {f"{name}-node-0-0.{name}"}  # ...one rendezvous, node 0
    [run] = training_runs(cluster_repo, mlflow_server.uri)  # one job of two processes
    assert run.data.params["resolved.processes"] == "2"
    assert plan(cluster_repo)["by_resource"]["FineTune/fruit-sft"] == "noop"

    # The launcher is how nodes start, not what is trained: switching it retrains nothing.
    cluster_repo.edit(
        "fine-tune.yaml", "    strategy: ddp\n", "    strategy: ddp\n    launcher: pytorchjob\n"
    )
    cluster_repo.commit("start nodes through the training operator")
    assert plan(cluster_repo)["by_resource"]["FineTune/fruit-sft"] == "noop"

    # A new seed is a new model: trained as a PyTorchJob, Master and Worker meeting at the Master.
    cluster_repo.edit("fine-tune.yaml", "    precision: fp32\n", "    precision: fp32\n    seed: 7\n")
    cluster_repo.commit("another seed")
    since = len(kubelet.launched)
    trained = tuneops(cluster_repo, "apply", ".", "--yes", *TARGET)
    assert trained.exit_code == 0, trained.output
    [job] = fake_api.objects("PyTorchJob")
    name = job["metadata"]["name"]
    nodes = fine_tune_pods(kubelet, since)
    assert sorted(node.pod for node in nodes) == [f"{name}-master-0", f"{name}-worker-0"]
    assert sorted(node.node_rank for node in nodes) == ["0", "1"]
    assert {node.rendezvous for node in nodes} == {f"{name}-master-0"}
    assert len(training_runs(cluster_repo, mlflow_server.uri)) == 2
    assert plan(cluster_repo)["by_resource"]["FineTune/fruit-sft"] == "noop"

    # And as an Indexed Job with a headless Service: pod 0 is the rendezvous.
    cluster_repo.edit("fine-tune.yaml", "    launcher: pytorchjob\n", "    launcher: indexed-job\n")
    cluster_repo.edit("fine-tune.yaml", "    seed: 7\n", "    seed: 8\n")
    cluster_repo.commit("a third seed, on an Indexed Job")
    since = len(kubelet.launched)
    trained = tuneops(cluster_repo, "apply", ".", "--yes", *TARGET)
    assert trained.exit_code == 0, trained.output
    [indexed] = [
        j
        for j in fake_api.objects("Job")
        if j["spec"].get("completionMode") == "Indexed"
        and "jobset.sigs.k8s.io/jobset-name" not in j["metadata"]["labels"]
    ]
    name = indexed["metadata"]["name"]
    assert fake_api.get("Service", name)["spec"]["clusterIP"] == "None"
    nodes = fine_tune_pods(kubelet, since)
    assert sorted(node.node_rank for node in nodes) == ["0", "1"]
    assert {node.rendezvous for node in nodes} == {f"{name}-0.{name}"}
    assert len(training_runs(cluster_repo, mlflow_server.uri)) == 3
    assert plan(cluster_repo)["by_resource"]["FineTune/fruit-sft"] == "noop"
