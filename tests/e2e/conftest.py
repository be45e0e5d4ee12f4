"""Fixtures of the end-to-end tests that run on the FAKE Kubernetes API (tests/support/fake_kube.py) with
the fake kubelet (tests/support/kube_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_kube import FakeKubeApi
from tests.support.kube_support import FakeKubelet
from tests.support.reconcile_support import CLI_ENV, SpecRepo


@pytest.fixture
def fake_api():
    api = FakeKubeApi()
    api.require_token = "fake-token"  # what the kubeconfig holds: a request without it gets 401
    api.start()
    yield api
    api.stop()


@pytest.fixture
def cluster_repo(tmp_path: Path, mlflow_server, fake_api: FakeKubeApi):
    """The quickstart configured for the kubernetes backend, pointed at the fake by KUBECONFIG."""
    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    experiment = repo.root.joinpath("tuneops.yaml").read_text().split("experiment: ")[1].strip()
    repo.root.joinpath("tuneops.yaml").write_text(
        "backend: kubernetes\n"
        f"mlflow:\n  trackingUri: {mlflow_server.uri}\n  experiment: {experiment}\n"
        "kubernetes:\n  namespace: default\n  image: registry.example.internal/tuneops-trainer:test\n"
        "  storageClaim: tuneops-store\n"
    )
    repo.commit("run on Kubernetes")
    repo.publish(tmp_path / "remote.git")  # pods check the data and the base model out from it
    repo.kubeconfig = fake_api.kubeconfig(tmp_path / "kubeconfig")
    return repo


@pytest.fixture
def kubelet(tmp_path: Path, fake_api: FakeKubeApi):
    node = FakeKubelet(fake_api, tmp_path / "node", env=CLI_ENV).start()
    yield node
    node.stop()
