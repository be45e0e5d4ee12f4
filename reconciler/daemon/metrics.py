"""The reconcile daemon's Prometheus series (docs/daemon.md), in a registry of their own."""

from __future__ import annotations


class Metrics:
    """The series docs/daemon.md documents, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "tuneops_reconcile_duration_seconds",
            "Duration of one reconcile tick.",
            registry=self.registry,
            buckets=(1, 5, 15, 60, 300, 900, 3600, 14400),
        )
        self.ticks = Counter(
            "tuneops_reconcile_total", "Reconcile ticks by outcome.", ["outcome"], registry=self.registry
        )
        self.actions = Counter(
            "tuneops_plan_actions_total",
            "Planned actions applied, by action.",
            ["action"],
            registry=self.registry,
        )
        self.failures = Counter(
            "tuneops_reconcile_failures_total", "Ticks that failed (git, apply).", registry=self.registry
        )
        self.last_sync = Gauge(
            "tuneops_last_sync_timestamp_seconds",
            "When the last successful sync ended.",
            registry=self.registry,
        )
        self.commit = Gauge(
            "tuneops_synced_commit_info",
            "The commit last applied (value 1).",
            ["commit"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "tuneops_leader", "1 when this daemon is the one that acts.", registry=self.registry
        )

    def synced(self, commit: str) -> None:
        self.commit.clear()
        self.commit.labels(commit=commit).set(1)
        self.last_sync.set_to_current_time()

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
