"""The fake Kubernetes API server that backend tests run against: over real HTTP, it must answer
as the real server would for what it claims to model, or those tests prove nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.fake_kube import FakeKubeApi

NS = "default"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
PODS = f"/api/v1/namespaces/{NS}/pods"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi().start()
    yield fake
    fake.stop()


def call(api: FakeKubeApi, method: str, path: str, body: Any = None, *,
         content_type: str = "application/json",
         query: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request through urllib: status, headers, and the JSON (or text) body, errors included."""
    url = api.url + path + ("?" + urlencode(query) if query else "")
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, error.headers, error.read()
    payload = json.loads(raw) if headers.get("Content-Type") == "application/json" else raw.decode()
    return status, dict(headers), payload


def deployment(replicas: int = 2, labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS,
                         "labels": labels if labels is not None else {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "server", "image": "vllm:1"}]}}}}


def apply(api: FakeKubeApi, path: str, obj: dict, manager: str | None = "tuneops", force: bool = False):
    query = {"fieldManager": manager} if manager else {}
    if force:
        query["force"] = "true"
    return call(api, "PATCH", f"{path}/{obj['metadata']['name']}", obj, content_type=APPLY, query=query)


def job(name: str = "train", backoff_limit: int | None = None) -> dict:
    spec: dict[str, Any] = {"template": {"metadata": {"labels": {"tuneops.dev/run": "r1"},
                                                      "annotations": {"tuneops.dev/fingerprint": "abc"}},
                                         "spec": {"restartPolicy": "Never",
                                                  "containers": [{"name": "trainer", "image": "train:1"}]}}}
    if backoff_limit is not None:
        spec["backoffLimit"] = backoff_limit
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


def test_apply_creates_then_updates_and_records_managed_fields(api: FakeKubeApi) -> None:
    status, _, created = apply(api, DEPLOYMENTS, deployment(replicas=2))
    assert status == 201
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    [entry] = meta["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == ("tuneops", "Apply", "FieldsV1")
    assert entry["apiVersion"] == "apps/v1"
    assert entry["fieldsV1"]["f:metadata"] == {"f:labels": {"f:app": {}}}
    assert entry["fieldsV1"]["f:spec"]["f:replicas"] == {}
    assert entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"] == {"f:containers": {}}

    status, _, updated = apply(api, DEPLOYMENTS, deployment(replicas=3))
    assert status == 200
    assert updated["spec"]["replicas"] == 3
    assert updated["metadata"]["uid"] == meta["uid"]
    assert updated["metadata"]["generation"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    # The same apply again is a no-op: no new resourceVersion, no new generation.
    status, _, again = apply(api, DEPLOYMENTS, deployment(replicas=3))
    assert status == 200
    assert again["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]

    # A field the manager stops applying is removed; labels only change metadata, not the generation.
    unlabelled = deployment(replicas=3)
    del unlabelled["metadata"]["labels"]
    status, _, trimmed = apply(api, DEPLOYMENTS, unlabelled)
    assert status == 200
    assert "labels" not in trimmed["metadata"]
    assert trimmed["metadata"]["generation"] == 2
    assert "f:metadata" not in trimmed["metadata"]["managedFields"][0]["fieldsV1"]
    assert "labels" not in api.get("Deployment", "web")["metadata"]


def test_apply_requires_a_field_manager(api: FakeKubeApi) -> None:
    status, _, error = apply(api, DEPLOYMENTS, deployment(), manager=None)
    assert status == 400
    assert (error["kind"], error["reason"], error["code"]) == ("Status", "BadRequest", 400)
    assert "fieldManager" in error["message"]
    assert api.get("Deployment", "web") is None


def test_an_edit_conflicts_with_apply_until_forced(api: FakeKubeApi) -> None:
    apply(api, DEPLOYMENTS, deployment(replicas=2))
    status, _, edited = call(api, "PATCH", f"{DEPLOYMENTS}/web", {"spec": {"replicas": 5}},
                             content_type=MERGE, query={"fieldManager": "kubectl-edit"})
    assert status == 200 and edited["spec"]["replicas"] == 5
    owners = {entry["manager"]: entry for entry in edited["metadata"]["managedFields"]}
    assert owners["kubectl-edit"]["operation"] == "Update"
    assert owners["kubectl-edit"]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in owners["tuneops"]["fieldsV1"]["f:spec"]

    status, _, error = apply(api, DEPLOYMENTS, deployment(replicas=2))
    assert status == 409
    assert error["reason"] == "Conflict"
    assert error["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-edit": .spec.replicas'
    assert api.get("Deployment", "web")["spec"]["replicas"] == 5

    status, _, forced = apply(api, DEPLOYMENTS, deployment(replicas=2), force=True)
    assert status == 200
    assert forced["spec"]["replicas"] == 2
    assert [entry["manager"] for entry in forced["metadata"]["managedFields"]] == ["tuneops"]
    assert [request.status for request in api.requests] == [201, 200, 409, 200]
    assert [request.field_manager for request in api.requests][1] == "kubectl-edit"


def test_post_creates_then_refuses_a_duplicate(api: FakeKubeApi) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "jobfile"}, "data": {"a": "1"}}
    status, _, created = call(api, "POST", CONFIGMAPS, body)
    assert status == 201 and created["metadata"]["namespace"] == NS
    status, _, error = call(api, "POST", CONFIGMAPS, body)
    assert (status, error["reason"]) == (409, "AlreadyExists")
    assert error["message"] == 'configmaps "jobfile" already exists'
    status, _, error = call(api, "PUT", f"{CONFIGMAPS}/other", body)
    assert status == 400 and "does not match the name on the URL" in error["message"]


def test_label_selectors(api: FakeKubeApi) -> None:
    for name, labels in {"a": {"app": "x", "tier": "web"}, "b": {"app": "x"}, "c": {"app": "y", "tier": "db"},
                         "d": {}}.items():
        api.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        status, _, page = call(api, "GET", PODS, query={"labelSelector": selector})
        assert status == 200, page
        return [item["metadata"]["name"] for item in page["items"]]

    assert names("app=x") == ["a", "b"]
    assert names("app==x") == ["a", "b"]
    assert names("app!=x") == ["c", "d"]
    assert names("tier") == ["a", "c"]
    assert names("!tier") == ["b", "d"]
    assert names("app=x,tier=web") == ["a"]
    assert names("app in (x,y),!tier") == ["b"]
    assert names("") == ["a", "b", "c", "d"]
    for bad in ("app=x=y", "=x", "app=x,,", "bad key=1"):
        status, _, error = call(api, "GET", PODS, query={"labelSelector": bad})
        assert (status, error["reason"]) == (400, "BadRequest"), bad


def test_pagination_returns_every_item_once(api: FakeKubeApi) -> None:
    for index in range(5):
        api.put({"kind": "ConfigMap", "metadata": {"name": f"cm-{index}"}, "data": {"i": str(index)}})
    seen, token, pages = [], "", 0
    for _ in range(10):  # bounded: a fake that never ends the list fails instead of hanging
        query = {"limit": "1", **({"continue": token} if token else {})}
        status, _, page = call(api, "GET", CONFIGMAPS, query=query)
        assert status == 200
        assert (page["kind"], page["apiVersion"]) == ("ConfigMapList", "v1")
        assert page["metadata"]["resourceVersion"] == "5"
        seen += [item["metadata"]["name"] for item in page["items"]]
        pages += 1
        token = page["metadata"]["continue"]
        if not token:
            break
    assert seen == [f"cm-{index}" for index in range(5)]
    assert pages == 5
    status, _, error = call(api, "GET", CONFIGMAPS, query={"limit": "1", "continue": "not-a-token"})
    assert status == 400


def test_resource_version_bumps_and_a_stale_one_conflicts(api: FakeKubeApi) -> None:
    first = api.put({"kind": "ConfigMap", "metadata": {"name": "lease-ish"}, "data": {"v": "1"}})
    old_version = first["metadata"]["resourceVersion"]
    body = {**first, "data": {"v": "2"}}
    status, _, replaced = call(api, "PUT", f"{CONFIGMAPS}/lease-ish", body)
    assert status == 200
    assert int(replaced["metadata"]["resourceVersion"]) == int(old_version) + 1
    assert replaced["metadata"]["uid"] == first["metadata"]["uid"]

    status, _, error = call(api, "PUT", f"{CONFIGMAPS}/lease-ish", {**first, "data": {"v": "3"}})
    assert (status, error["reason"]) == (409, "Conflict")
    assert "the object has been modified" in error["message"]
    stale_apply = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "lease-ish", "resourceVersion": old_version}, "data": {"v": "4"}}
    assert apply(api, CONFIGMAPS, stale_apply)[0] == 409
    assert api.get("ConfigMap", "lease-ish")["data"] == {"v": "2"}
    status, _, _ = call(api, "PUT", f"{CONFIGMAPS}/missing", {"metadata": {"name": "missing"}})
    assert status == 404


def test_status_subresource_leaves_spec_and_generation_alone(api: FakeKubeApi) -> None:
    status, _, created = apply(api, JOBS, job())
    assert status == 201 and created["status"] == {}
    patch = {"spec": {"parallelism": 9}, "status": {"active": 1}}
    status, _, patched = call(api, "PATCH", f"{JOBS}/train/status", patch, content_type=MERGE)
    assert status == 200
    assert patched["status"] == {"active": 1}
    assert "parallelism" not in patched["spec"]
    assert patched["metadata"]["generation"] == 1
    status, _, replaced = call(api, "PUT", f"{JOBS}/train/status", {**patched, "status": {"failed": 2}})
    assert status == 200 and replaced["status"] == {"failed": 2}
    assert replaced["metadata"]["generation"] == 1
    # The main resource ignores status, as with a real status subresource.
    status, _, applied = apply(api, JOBS, {**job(), "status": {"succeeded": 1}})
    assert status == 200 and applied["status"] == {"failed": 2}
    status, _, merged = call(api, "PATCH", f"{JOBS}/train", {"status": {"succeeded": 1}}, content_type=MERGE)
    assert status == 200 and merged["status"] == {"failed": 2}


def test_delete_background_removes_owned_pods_and_orphan_keeps_them(api: FakeKubeApi) -> None:
    for name in ("one", "two"):
        apply(api, JOBS, job(name))
        api.start_pod(name)
    status, _, result = call(api, "DELETE", f"{JOBS}/one", {"kind": "DeleteOptions", "apiVersion": "v1",
                                                             "propagationPolicy": "Background"})
    assert status == 200 and result["status"] == "Success"
    assert api.get("Job", "one") is None
    assert [pod["metadata"]["labels"]["job-name"] for pod in api.objects("Pod")] == ["two"]

    status, _, _ = call(api, "DELETE", f"{JOBS}/two", query={"propagationPolicy": "Orphan"})
    assert status == 200
    [orphan] = api.objects("pods")
    assert orphan["metadata"]["labels"]["job-name"] == "two"
    assert "ownerReferences" not in orphan["metadata"]
    assert [request.propagation_policy for request in api.requests if request.method == "DELETE"] == [
        "Background", "Orphan"]
    assert call(api, "DELETE", f"{JOBS}/two")[0] == 404


def test_injected_429_carries_retry_after_then_the_request_succeeds(api: FakeKubeApi) -> None:
    api.put({"kind": "ConfigMap", "metadata": {"name": "cm"}})
    api.inject("GET", "/configmaps/cm", 429, retry_after=2)
    status, headers, error = call(api, "GET", f"{CONFIGMAPS}/cm")
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert (error["reason"], error["details"]["retryAfterSeconds"]) == ("TooManyRequests", 2)
    status, _, obj = call(api, "GET", f"{CONFIGMAPS}/cm")
    assert status == 200 and obj["metadata"]["name"] == "cm"
    assert [(request.method, request.status) for request in api.requests] == [("GET", 429), ("GET", 200)]


def test_injected_403_reads_like_the_real_one(api: FakeKubeApi) -> None:
    api.inject("PATCH", "/jobs/", 403)
    api.inject("*", "/jobs", 403)
    status, _, error = apply(api, JOBS, job("x"))
    assert (status, error["reason"]) == (403, "Forbidden")
    assert error["message"] == (
        'jobs.batch "x" is forbidden: User "system:serviceaccount:default:tuneops" '
        'cannot patch resource "jobs" in API group "batch" in the namespace "default"')
    status, _, error = call(api, "GET", JOBS)
    assert status == 403
    assert error["message"] == (
        'jobs.batch is forbidden: User "system:serviceaccount:default:tuneops" '
        'cannot list resource "jobs" in API group "batch" in the namespace "default"')
    assert call(api, "GET", JOBS)[0] == 200


def test_failures_past_the_backoff_limit_fail_the_job(api: FakeKubeApi) -> None:
    apply(api, JOBS, job(backoff_limit=1))
    pod = api.start_pod("train")
    assert pod["metadata"]["name"].startswith("train-0-")
    assert pod["metadata"]["labels"] == {
        "tuneops.dev/run": "r1", "batch.kubernetes.io/job-name": "train", "job-name": "train",
        "batch.kubernetes.io/controller-uid": api.get("Job", "train")["metadata"]["uid"],
        "controller-uid": api.get("Job", "train")["metadata"]["uid"]}
    assert pod["metadata"]["annotations"] == {"tuneops.dev/fingerprint": "abc"}
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert pod["status"]["containerStatuses"][0]["name"] == "trainer"
    assert api.get("Job", "train")["status"]["active"] == 1

    api.fail_pod("train", reason="OOMKilled", exit_code=137)
    status = api.get("Job", "train")["status"]
    assert (status["failed"], status["active"], status.get("conditions")) == (1, 1, None)
    assert [p["status"]["phase"] for p in api.objects("Pod")].count("Running") == 1

    api.fail_pod("train", exit_code=2, message="boom")
    status = api.get("Job", "train")["status"]
    assert (status["failed"], status["active"]) == (2, 0)
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("FailureTarget", "True", "BackoffLimitExceeded"), ("Failed", "True", "BackoffLimitExceeded")]
    assert status["conditions"][1]["message"] == "Job has reached the specified backoff limit"
    pods = api.objects("Pod")
    assert [p["status"]["phase"] for p in pods] == ["Failed", "Failed"]
    exits = sorted(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods)
    assert exits == [2, 137]
    with pytest.raises(LookupError):
        api.fail_pod("train")
    with pytest.raises(RuntimeError, match="Failed"):
        api.start_pod("train")


def test_complete_job_sets_the_success_conditions(api: FakeKubeApi) -> None:
    apply(api, JOBS, job())
    api.complete_job("train")
    status = api.get("Job", "train")["status"]
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("SuccessCriteriaMet", "True"), ("Complete", "True")]
    assert (status["active"], status["succeeded"]) == (0, 1)
    assert status["completionTime"].endswith("Z") and status["startTime"]
    [pod] = api.objects("Pod")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pod["status"]["phase"] == "Succeeded"
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")


def test_pod_log_and_tail_lines(api: FakeKubeApi) -> None:
    apply(api, JOBS, job())
    pod = api.start_pod("train")["metadata"]["name"]
    api.set_pod_log(pod, "step 1\nstep 2\nstep 3\n")
    status, headers, text = call(api, "GET", f"{PODS}/{pod}/log")
    assert (status, text) == (200, "step 1\nstep 2\nstep 3\n")
    assert headers["Content-Type"] == "text/plain"
    assert call(api, "GET", f"{PODS}/{pod}/log", query={"tailLines": "2"})[2] == "step 2\nstep 3\n"
    assert call(api, "GET", f"{PODS}/{pod}/log", query={"follow": "true", "tailLines": "1"})[2] == "step 3\n"
    assert call(api, "GET", f"{PODS}/gone/log")[0] == 404


def test_deployment_availability(api: FakeKubeApi) -> None:
    apply(api, DEPLOYMENTS, deployment(replicas=2))
    api.set_deployment_available("web", available=False)
    status = api.get("Deployment", "web")["status"]
    assert (status["readyReplicas"], status["conditions"][0]["status"]) == (0, "False")
    api.set_deployment_available("web")
    status = api.get("Deployment", "web")["status"]
    assert (status["observedGeneration"], status["replicas"], status["availableReplicas"]) == (1, 2, 2)
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("Available", "True"), ("Progressing", "True")]


def test_unknown_paths_and_media_types(api: FakeKubeApi) -> None:
    status, _, error = call(api, "GET", "/apis/kueue.x-k8s.io/v1beta1/namespaces/default/workloads")
    assert (status, error["kind"], error["reason"]) == (404, "Status", "NotFound")
    apply(api, DEPLOYMENTS, deployment())
    status, _, error = call(api, "PATCH", f"{DEPLOYMENTS}/web", b"[]",
                            content_type="application/json-patch+json")
    assert (status, error["reason"]) == (415, "UnsupportedMediaType")


def test_kubeconfig_loads_with_the_kubernetes_client(api: FakeKubeApi, tmp_path: Path) -> None:
    kube_config = pytest.importorskip("kubernetes.config")
    client = pytest.importorskip("kubernetes.client")
    path = api.kubeconfig(tmp_path / "kube" / "config", namespace="team-a")
    configuration = client.Configuration()
    kube_config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == api.url
    # kubernetes 36 files the token under "BearerToken", older releases under "authorization".
    assert "Bearer fake-token" in configuration.api_key.values()
    _, current = kube_config.list_kube_config_contexts(config_file=str(path))
    assert (current["name"], current["context"]["namespace"]) == ("fake", "team-a")


def test_require_token_refuses_requests_without_it(api: FakeKubeApi) -> None:
    api.require_token = "fake-token"
    status, _, error = call(api, "GET", CONFIGMAPS)
    assert (status, error["reason"]) == (401, "Unauthorized")
    request = urllib.request.Request(api.url + CONFIGMAPS, headers={"Authorization": "Bearer fake-token"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    assert [(r.status, r.authorization) for r in api.requests] == [(401, None), (200, "Bearer fake-token")]


def test_connections_are_kept_alive_for_urllib3(api: FakeKubeApi) -> None:
    urllib3 = pytest.importorskip("urllib3")
    api.put({"kind": "ConfigMap", "metadata": {"name": "cm"}})
    pool = urllib3.HTTPConnectionPool("127.0.0.1", int(api.url.rsplit(":", 1)[1]), maxsize=1)
    statuses = [pool.request("GET", f"{CONFIGMAPS}/cm").status for _ in range(3)]
    statuses.append(pool.request("GET", f"{CONFIGMAPS}/missing").status)
    assert statuses == [200, 200, 200, 404]
    assert pool.num_connections == 1
    pool.close()
