"""Leader election through a `coordination.k8s.io/v1` Lease, the way client-go does it.

The holder renews `spec.renewTime` every third of `leaseDurationSeconds`; a candidate may take
the Lease only once `renewTime + leaseDurationSeconds` has passed. Every write carries the
resourceVersion that was read, so of two candidates racing for an expired Lease exactly one
wins (the other gets 409). A holder that cannot renew for a whole duration must stop acting:
another replica may already lead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from reconciler.backends.kubernetes.api import KubeApi, KubeApiError


def micro_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(value: str | None) -> float:
    if not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class LeaseLock:
    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str, *, duration: float = 15.0,
                 clock: Callable[[], float] = time.time):
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.duration, self.clock = duration, clock
        self.holder: str | None = None  # as of the last look

    def try_acquire_or_renew(self) -> bool:
        """True when this identity holds the Lease after the call."""
        now = self.clock()
        lease = self.api.get("Lease", self.namespace, self.name)
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "tuneops"}},
                    "spec": self._spec(now, acquired=now, transitions=0)}
            return self._write(self.api.create, body)
        spec = lease.get("spec") or {}
        self.holder = spec.get("holderIdentity") or None
        expires = _seconds(spec.get("renewTime")) + float(spec.get("leaseDurationSeconds") or 0)
        if self.holder not in (None, self.identity) and expires > now:
            return False
        ours = self.holder == self.identity
        lease["spec"] = self._spec(now, acquired=_seconds(spec.get("acquireTime")) if ours else now,
                                   transitions=int(spec.get("leaseTransitions") or 0) + (0 if ours else 1))
        return self._write(self.api.replace, lease)

    def release(self) -> None:
        """Give the Lease up at once (a clean shutdown), so a standby need not wait it out."""
        lease = self.api.get("Lease", self.namespace, self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
        with contextlib.suppress(KubeApiError):  # else it expires on its own
            self.api.replace(lease)

    def _spec(self, now: float, *, acquired: float, transitions: int) -> dict:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": max(1, round(self.duration)),
                "acquireTime": micro_time(acquired), "renewTime": micro_time(now),
                "leaseTransitions": transitions}

    def _write(self, write: Callable[[dict], dict], body: dict) -> bool:
        try:
            write(body)
        except KubeApiError as error:
            if error.status == 409:  # another candidate wrote first
                return False
            raise
        self.holder = self.identity
        return True
