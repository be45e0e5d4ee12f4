"""Which reconcile daemon acts: an exclusive lock on the cache folder (daemons sharing one
volume), or a coordination.k8s.io Lease (replicas in a cluster). The others wait as standbys."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from reconciler.lock import ApplyLock, Locked

DAEMON_LOCK = "daemon.lock"


class FileLeadership:
    """An exclusive lock on the cache folder: daemons sharing one volume lead one at a time."""

    lost = False

    def __init__(self, daemon: Any):  # the Daemon (daemon/loop.py), which imports this module
        self.daemon = daemon
        self.lock = ApplyLock(daemon.config.cache_dir, DAEMON_LOCK,
                              busy="another `tuneops reconcile` acts on this cache folder; this one waits")

    def acquire(self) -> None:
        told = False
        while not self.daemon.stopping.is_set():
            try:
                self.lock.acquire()
                self.daemon.leading()
                return
            except Locked as error:
                if not told:
                    self.daemon.say(f"standby: {error}")
                    told = True
                self.daemon.stopping.wait(min(self.daemon.config.interval, 5.0))
        raise SystemExit(0)

    def release(self) -> None:
        self.lock.release()


class LeaseLeadership:
    """A coordination.k8s.io/v1 Lease: replicas in a cluster lead one at a time. The holder
    renews it every third of its duration; one that cannot renew for a whole duration stops
    (exit 1, so Kubernetes restarts it as a standby): another may lead by then."""

    def __init__(self, daemon: Any):  # the Daemon (daemon/loop.py), which imports this module
        import socket

        from reconciler.backends.kubernetes.api import KubeApi, load_connection
        from reconciler.backends.kubernetes.lease import LeaseLock

        self.daemon = daemon
        connection = load_connection()
        self.identity = f"{socket.gethostname()}-{os.getpid()}"
        self.lease = LeaseLock(KubeApi(connection), connection.namespace, daemon.config.lease or "",
                               self.identity, duration=daemon.config.lease_duration)
        self.lost = False

    def acquire(self) -> None:
        told = False
        while not self.daemon.stopping.is_set():
            if self._try():
                self.daemon.leading(f" (Lease {self.lease.namespace}/{self.lease.name} as {self.identity})")
                threading.Thread(target=self._renew, daemon=True, name="tuneops-lease").start()
                return
            if not told and self.lease.holder:
                self.daemon.say(f"standby: Lease {self.lease.namespace}/{self.lease.name} is held by "
                                f"{self.lease.holder}")
                told = True
            self.daemon.stopping.wait(self.lease.duration / 3)
        raise SystemExit(0)

    def _try(self) -> bool:
        try:
            return self.lease.try_acquire_or_renew()
        except Exception as error:  # an API error is a failed attempt, not a crash
            self.daemon.say(f"lease: {error}")
            return False

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self.daemon.stopping.wait(self.lease.duration / 3):
            if self._try():
                renewed = time.monotonic()
            elif time.monotonic() - renewed > self.lease.duration:
                self.lost = True
                self.daemon.metrics.leader.set(0)
                self.daemon.say(f"lost the Lease (now held by {self.lease.holder}): stopping")
                self.daemon.stop()
                return

    def release(self) -> None:
        if not self.lost:
            with contextlib.suppress(Exception):
                self.lease.release()
