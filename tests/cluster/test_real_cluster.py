"""Against a REAL Kubernetes cluster (kind, k3s, or any other), when KUBECONFIG is set; skipped
otherwise. It checks what the fake API server cannot vouch for: that a real API server accepts
our server-side applies, label selectors, paging and background deletes, and writes managed
fields the way the drift check reads them. docs/kubernetes.md says how to run it.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from reconciler.backends.kubernetes.api import KubeApi, load_connection
from reconciler.backends.kubernetes.health import managed_fields_drift
from reconciler.backends.kubernetes.labels import FINGERPRINT_ANNOTATION

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                       reason="needs a real cluster through KUBECONFIG (none here: these machines cannot run "
                              "one); see docs/kubernetes.md, 'Running the cluster suite'"),
]

NAMESPACE = os.environ.get("TUNEOPS_CLUSTER_NAMESPACE", "tuneops-test")


@pytest.fixture
def api() -> KubeApi:
    return KubeApi(load_connection(namespace=NAMESPACE))


def labelled(kind: str, api_version: str, name: str, run: str) -> dict:
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "tuneops", "tuneops-test-run": run,
                                    "tuneops.dev/kind": "Deployment", "tuneops.dev/name": name},
                         "annotations": {FINGERPRINT_ANNOTATION: "0" * 64}}}


def test_apply_list_and_delete_on_a_real_api_server(api: KubeApi):
    run = uuid.uuid4().hex[:8]
    names = [f"tuneops-test-{run}-{index}" for index in range(3)]
    for name in names:
        api.apply({**labelled("ConfigMap", "v1", name, run), "data": {"job.json": "{}"}})
    try:
        found = api.list("ConfigMap", NAMESPACE, f"tuneops-test-run={run}", page_size=2)
        assert sorted(item["metadata"]["name"] for item in found) == names
        assert all(entry["manager"] == "tuneops" and entry["operation"] == "Apply"
                   for item in found for entry in item["metadata"]["managedFields"])
    finally:
        for name in names:
            api.delete("ConfigMap", NAMESPACE, name)
    deadline = time.monotonic() + 60
    while api.list("ConfigMap", NAMESPACE, f"tuneops-test-run={run}"):
        assert time.monotonic() < deadline, "background deletes did not finish in a minute"
        time.sleep(1)


def test_an_edit_by_another_manager_is_drift_until_tuneops_applies_again(api: KubeApi):
    run = uuid.uuid4().hex[:8]
    name = f"tuneops-test-{run}"
    deployment = {**labelled("Deployment", "apps/v1", name, run), "spec": {
        "replicas": 0, "revisionHistoryLimit": 3, "selector": {"matchLabels": {"tuneops-test-run": run}},
        "template": {"metadata": {"labels": {"tuneops-test-run": run}},
                     "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}]}}}}
    api.apply(deployment)
    try:
        assert managed_fields_drift(api.get("Deployment", NAMESPACE, name)) == ""
        url = f"{api.connection.host}{api.path('Deployment', NAMESPACE, name)}?fieldManager=kubectl-edit"
        response = api.pool.request(
            "PATCH", url,
            body=json.dumps({"spec": {"revisionHistoryLimit": 5}}).encode(),
            headers={"Content-Type": "application/merge-patch+json", **api.connection.auth_headers()})
        assert response.status == 200, response.data
        assert managed_fields_drift(api.get("Deployment", NAMESPACE, name)) == \
            ".spec.revisionHistoryLimit changed by kubectl-edit"
        restored = api.apply(deployment)
        assert restored["spec"]["revisionHistoryLimit"] == 3
        assert managed_fields_drift(restored) == ""
    finally:
        api.delete("Deployment", NAMESPACE, name)
