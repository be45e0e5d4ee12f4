"""Policy overrides, recorded: each violation an apply let through (by `--approve` or by a
spec's approval annotations) is written to MLflow as a run of its own, with the policy, the
spec and its line, who approved it and why, and the commit applied. Never edited afterwards."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.tracking import vocabulary as tracking
from reconciler.tracking.filters import tag_equals


@dataclass(frozen=True)
class Override:
    policy: str
    resource: str  # "Deployment/fruit-bot"
    where: str  # "deployment.yaml:9"
    approved_by: str
    reason: str
    commit: str | None = None
    fingerprint: str = ""  # the violating spec's, so an edit without a commit is a new override
    applied_by: str = ""
    at: float = 0.0  # epoch seconds, read back
    run_id: str = ""


def record_override(store: Any, experiment_id: str, override: Override) -> str:
    tags = {
        tracking.TAG_KIND: tracking.KIND_OVERRIDE,
        tracking.TAG_NAME: override.policy,
        tracking.TAG_OVERRIDE_RESOURCE: override.resource,
        tracking.TAG_OVERRIDE_WHERE: override.where,
        tracking.TAG_OVERRIDE_APPROVED_BY: override.approved_by,
        tracking.TAG_OVERRIDE_REASON: override.reason,
        tracking.TAG_OVERRIDE_COMMIT: override.commit or "",
        tracking.TAG_FINGERPRINT: override.fingerprint,
        tracking.TAG_OVERRIDE_APPLIED_BY: override.applied_by,
    }
    run_id = store.create_run(experiment_id, f"override {override.policy}: {override.resource}",
                              {key: value[:tracking.MAX_TAG_LENGTH] for key, value in tags.items()})
    store.end_run(run_id, "FINISHED")
    return run_id


def read_overrides(store: Any, experiment_id: str, policy: str | None = None) -> list[Override]:
    """The recorded overrides, oldest first."""
    query = tag_equals(tracking.TAG_KIND, tracking.KIND_OVERRIDE)
    if policy is not None:
        query += " and " + tag_equals(tracking.TAG_NAME, policy)
    found = [_override(record.tags, record.start_time / 1000.0, record.run_id)
             for record in store.search_runs(experiment_id, query)]
    return sorted(found, key=lambda o: (o.at, o.run_id))


def _override(tags: Mapping[str, str], at: float, run_id: str) -> Override:
    return Override(policy=tags.get(tracking.TAG_NAME, ""),
                    resource=tags.get(tracking.TAG_OVERRIDE_RESOURCE, ""),
                    where=tags.get(tracking.TAG_OVERRIDE_WHERE, ""),
                    approved_by=tags.get(tracking.TAG_OVERRIDE_APPROVED_BY, ""),
                    reason=tags.get(tracking.TAG_OVERRIDE_REASON, ""),
                    commit=tags.get(tracking.TAG_OVERRIDE_COMMIT) or None,
                    fingerprint=tags.get(tracking.TAG_FINGERPRINT, ""),
                    applied_by=tags.get(tracking.TAG_OVERRIDE_APPLIED_BY, ""), at=at, run_id=run_id)


def override_key(override: Override) -> tuple[str, ...]:
    """What makes an override new: the policy, the spec as it is, the commit, who and why."""
    return (override.policy, override.resource, override.fingerprint, override.commit or "",
            override.approved_by, override.reason)
