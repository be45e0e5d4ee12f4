"""Leader election through a Lease, against the FAKE API server (tests/support/fake_kube.py) over HTTP,
with a clock the test moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.backends.kubernetes.api import KubeApi, load_connection
from reconciler.backends.kubernetes.lease import LeaseLock
from tests.support.fake_kube import FakeKubeApi

pytest.importorskip("kubernetes", reason="needs the kubernetes client (the [kubernetes] or [dev] extra)")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeKubeApi() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", namespace="ml")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield fake, KubeApi(load_connection(), sleep=lambda _: None)


def test_one_holder_until_it_stops_renewing(api):
    fake, client = api
    clock = Clock()
    a = LeaseLock(client, "ml", "tuneops-reconcile", "daemon-a", duration=15, clock=clock)
    b = LeaseLock(client, "ml", "tuneops-reconcile", "daemon-b", duration=15, clock=clock)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    assert b.holder == "daemon-a"
    clock.now += 10
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()  # renewed in time
    clock.now += 16  # a stopped renewing
    assert b.try_acquire_or_renew() and not a.try_acquire_or_renew()
    spec = fake.get("Lease", "tuneops-reconcile", "ml")["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("daemon-b", 1)
    assert spec["leaseDurationSeconds"] == 15


def test_of_two_candidates_racing_for_an_expired_lease_exactly_one_wins(api):
    fake, client = api
    clock = Clock()
    LeaseLock(client, "ml", "lease", "old", duration=15, clock=clock).try_acquire_or_renew()
    clock.now += 60
    stale = client.get("Lease", "ml", "lease")  # both candidates read the same expired Lease
    a = LeaseLock(client, "ml", "lease", "a", duration=15, clock=clock)
    assert a.try_acquire_or_renew()
    stale["spec"] = {**stale["spec"], "holderIdentity": "b"}
    b = LeaseLock(client, "ml", "lease", "b", duration=15, clock=clock)
    assert b._write(client.replace, stale) is False  # the write with the old resourceVersion loses: 409
    assert fake.get("Lease", "lease", "ml")["spec"]["holderIdentity"] == "a"


def test_release_lets_a_standby_take_over_at_once(api):
    _, client = api
    clock = Clock()
    a = LeaseLock(client, "ml", "lease", "a", duration=15, clock=clock)
    b = LeaseLock(client, "ml", "lease", "b", duration=15, clock=clock)
    assert a.try_acquire_or_renew()
    a.release()
    assert b.try_acquire_or_renew()
