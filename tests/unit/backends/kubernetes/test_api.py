"""The Kubernetes API client against the FAKE API server (tests/support/fake_kube.py) over real HTTP:
credentials from a kubeconfig, paged LISTs, server-side apply, and the errors users meet."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.backends.base import BackendError
from reconciler.backends.kubernetes.api import KubeApi, KubeApiError, load_connection
from reconciler.backends.kubernetes.backend import KubernetesBackend
from reconciler.backends.kubernetes.labels import FINGERPRINT_ANNOTATION
from tests.support.fake_kube import FakeKubeApi

pytest.importorskip("kubernetes", reason="needs the kubernetes client (the [kubernetes] or [dev] extra)")

LABELS = {"app.kubernetes.io/managed-by": "tuneops", "tuneops.dev/kind": "Deployment",
          "tuneops.dev/name": "bot"}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    api = FakeKubeApi()
    api.require_token = "fake-token"
    with api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig", namespace="ml")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield api


def client(**options) -> KubeApi:
    return KubeApi(load_connection(), sleep=lambda seconds: SLEPT.append(seconds), **options)


SLEPT: list[float] = []


def config_map(name: str, *, annotated: bool = True, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ml", "labels": {**LABELS, **labels},
                         "annotations": {FINGERPRINT_ANNOTATION: "f" * 64} if annotated else {}},
            "data": {"job.json": "{}"}}


def test_the_kubeconfig_gives_the_address_namespace_and_token(fake: FakeKubeApi):
    connection = load_connection()
    assert (connection.host, connection.namespace) == (fake.url, "ml")
    api = KubeApi(connection)
    assert api.list("ConfigMap", "ml") == []
    assert fake.requests[-1].authorization == "Bearer fake-token"


def test_an_unknown_context_says_which_and_what_to_set(fake: FakeKubeApi):
    with pytest.raises(BackendError, match=r"context 'gpu-cluster'.*set KUBECONFIG or kubernetes.context"):
        load_connection("gpu-cluster")


def test_apply_is_server_side_as_tuneops_and_lists_follow_pages(fake: FakeKubeApi):
    api = client()
    for index in range(5):
        api.apply(config_map(f"cm-{index}"))
    assert api.apply(config_map("cm-0", team="search"))["metadata"]["labels"]["team"] == "search"
    writes = [r for r in fake.requests if r.method == "PATCH"]
    assert {(r.content_type, r.field_manager, r.query.get("force")) for r in writes} == {
        ("application/apply-patch+yaml", "tuneops", "true")}
    start = len(fake.requests)
    found = api.list("ConfigMap", "ml", "tuneops.dev/name=bot", page_size=2)
    assert [item["metadata"]["name"] for item in found] == [f"cm-{i}" for i in range(5)]
    assert {item["kind"] for item in found} == {"ConfigMap"}
    assert len(fake.requests) - start == 3  # 2 + 2 + 1


def test_throttling_and_server_errors_back_off_then_succeed(fake: FakeKubeApi):
    SLEPT.clear()
    fake.inject("GET", "/configmaps", 429, times=1, retry_after=3)
    fake.inject("GET", "/configmaps", 503, times=2)
    assert client(backoff=0.25).list("ConfigMap", "ml") == []
    assert SLEPT == [3.0, 0.5, 1.0]  # Retry-After honoured, then exponential


def test_throttling_that_persists_carries_the_servers_retry_after(fake: FakeKubeApi):
    fake.inject("GET", "/configmaps", 429, times=10, retry_after=42)
    with pytest.raises(KubeApiError) as error:
        client(attempts=2).list("ConfigMap", "ml")
    assert (error.value.retryable, error.value.delay) == (True, 42.0)


def test_errors_that_persist_are_reported_with_the_status(fake: FakeKubeApi):
    fake.inject("GET", "/configmaps", 500, times=10, message="etcdserver: request timed out")
    with pytest.raises(KubeApiError, match="500.*etcdserver: request timed out") as error:
        client(attempts=3).list("ConfigMap", "ml")
    assert error.value.status == 500


def test_a_missing_rbac_verb_is_named(fake: FakeKubeApi):
    fake.inject("PATCH", "/jobs/", 403)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "sft", "namespace": "ml"},
           "spec": {}}
    with pytest.raises(KubeApiError, match=r"needs RBAC verb 'patch' on jobs.batch in namespace 'ml'"):
        client().apply(job)


def test_a_conflict_is_re_read_and_applied_again(fake: FakeKubeApi):
    fake.inject("PATCH", "/configmaps/cm", 409, times=1)
    applied = client().apply(config_map("cm"))
    assert applied["metadata"]["name"] == "cm"
    methods = [r.method for r in fake.requests[-3:]]
    assert methods == ["PATCH", "GET", "PATCH"]


def test_a_refused_token_and_an_unreachable_server_say_what_to_do(fake: FakeKubeApi, tmp_path: Path):
    fake.require_token = "another-token"
    with pytest.raises(KubeApiError, match="refused the credentials.*401"):
        client().list("ConfigMap", "ml")
    connection = load_connection()
    connection.host = "http://127.0.0.1:9"
    with pytest.raises(KubeApiError, match=r"cannot reach the Kubernetes API at http://127.0.0.1:9"):
        KubeApi(connection, attempts=2, sleep=lambda _: None).list("ConfigMap", "ml")


def test_stop_deletes_only_objects_with_our_labels_and_fingerprint(fake: FakeKubeApi):
    api = client()
    api.apply(config_map("bot"))
    api.apply(config_map("copied-labels", annotated=False))  # someone copied our labels, not our annotation
    backend = KubernetesBackend(api, "ml")
    assert backend.stop("Deployment", "bot") == ["configmap/bot"]
    assert [c["metadata"]["name"] for c in fake.objects("ConfigMap", "ml")] == ["copied-labels"]
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert [r.propagation_policy for r in deletes] == ["Background"]


def jobset(name: str, fingerprint: str = "f" * 64) -> dict:
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name, "namespace": "ml",
                         "labels": {**LABELS, "tuneops.dev/kind": "FineTune", "tuneops.dev/name": "sft"},
                         "annotations": {FINGERPRINT_ANNOTATION: fingerprint}},
            "spec": {"replicatedJobs": [{"name": "node", "template": {"spec": {}}}]}}


def test_launcher_kinds_are_listed_where_the_project_starts_them_or_a_pod_runs_one(fake: FakeKubeApi):
    fake.put(jobset("sft-finetune-ffffffffff"))
    plain = KubernetesBackend(client(), "ml")
    start = len(fake.requests)
    assert plain.observe().jobs == ()  # a project without JobSets does not ask for them
    assert not any("jobsets" in r.path for r in fake.requests[start:])

    using = KubernetesBackend(client(), "ml", launchers=["jobset"])
    [observed] = using.observe().jobs
    assert (observed.kind, observed.name) == ("FineTune", "sft")
    assert observed.handle == "jobset/sft-finetune-ffffffffff"
    # A launcher switched since: the JobSet's pods still say one runs, and it is read.
    fake.put({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "sft-finetune-ffffffffff-node-0-0-abcde", "namespace": "ml",
        "labels": {**LABELS, "jobset.sigs.k8s.io/jobset-name": "sft-finetune-ffffffffff"}},
        "status": {"phase": "Running"}})
    assert [job.handle for job in plain.observe().jobs] == ["jobset/sft-finetune-ffffffffff"]


def test_a_cluster_without_a_launchers_crd_has_none_of_it_and_says_what_to_install(fake: FakeKubeApi):
    fake.unserved = {"JobSet"}
    assert KubernetesBackend(client(), "ml", launchers=["jobset"]).observe().jobs == ()
    with pytest.raises(KubeApiError) as refused:
        client().apply(jobset("sft-finetune-ffffffffff"))
    assert refused.value.status == 404
    assert str(refused.value) == (
        "Kubernetes API: patch jobsets.jobset.x-k8s.io 'sft-finetune-ffffffffff' failed (404 NotFound): the "
        "server could not find the requested resource; is JobSet (jobset.sigs.k8s.io) installed in the "
        "cluster? Its CRD serves this kind")


def team_job(name: str, namespace: str, resource: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {**LABELS, "tuneops.dev/kind": "FineTune", "tuneops.dev/name": resource},
                         "annotations": {FINGERPRINT_ANNOTATION: "f" * 64}},
            "spec": {"template": {"spec": {}}}, "status": {"active": 1}}


def test_each_teams_jobs_are_read_and_stopped_in_the_teams_namespace(fake: FakeKubeApi):
    fake.put(team_job("a-sft-finetune-ffffffffff", "team-a", "a.sft"))
    fake.put(team_job("b-sft-finetune-ffffffffff", "team-b", "b.sft"))
    fake.put(team_job("c-sft-finetune-ffffffffff", "elsewhere", "c.sft"))  # no team of ours: not read
    backend = KubernetesBackend(client(), "ml", team_namespaces={"a": "team-a", "b": "team-b"})
    assert sorted(job.name for job in backend.observe().jobs) == ["a.sft", "b.sft"]
    assert backend.namespace_of("a.sft") == "team-a" and backend.namespace_of("sft") == "ml"
    assert backend.namespace_of("zz.sft") == "ml"  # a team tuneops.yaml no longer defines

    assert backend.stop("FineTune", "b.sft") == ["job/b-sft-finetune-ffffffffff"]
    assert fake.objects("Job", "team-b") == [] and len(fake.objects("Job", "team-a")) == 1
    deletes = [r.path for r in fake.requests if r.method == "DELETE"]
    assert deletes and all("/namespaces/team-b/" in path for path in deletes)
