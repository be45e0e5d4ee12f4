"""The audit trail of what each Deployment served when.

Apply writes one MLflow run per switch of a Deployment's served version: created before the
server switches (no record, no switch), ended FINISHED once the new version serves, FAILED when
it did not, and never edited afterwards. The commit, its author and subject, and the gate
results that allowed the switch are copied into the run when it happens, so the history is not
reconstructed from today's specs or registry and survives a force-push of the spec repository.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from reconciler.tracking import vocabulary as tracking
from reconciler.tracking.filters import tag_equals

_EMPTY: Mapping[str, Any] = MappingProxyType({})
GATE_SUMMARY_LENGTH = 300  # per Evaluation: a verdict's summary is one line; a tag has 8000 characters


@dataclass(frozen=True)
class Switch:
    """One switch of a Deployment's served version, as recorded when it happened."""

    deployment: str
    version: str | None  # "name/N" served from then on; None when the Deployment stopped serving
    previous: str | None  # what served before; None when nothing did
    at: float = 0.0  # epoch seconds the switch was asked for
    commit: str | None = None
    dirty: bool = False
    author: str = ""
    subject: str = ""
    gates: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # Evaluation -> verdict summary
    applied_by: str = ""
    reason: str = ""
    rollback: bool = False
    run_id: str = ""
    status: str = "FINISHED"  # RUNNING while switching; FAILED when the new version did not serve

    @property
    def what(self) -> str:
        if self.version is None:
            return "stopped"
        return "rollback" if self.rollback else ("deploy" if self.previous is None else "switch")


def is_rollback(version: str | None, previous: str | None, earlier: list[Switch]) -> bool:
    """Going back: to a version this Deployment served before, or to an older version of the
    registered model it serves now."""
    if version is None or previous is None or version == previous:
        return False
    if any(switch.version == version for switch in earlier if switch.status == "FINISHED"):
        return True
    name, _, number = version.rpartition("/")
    old_name, _, old_number = previous.rpartition("/")
    return name == old_name and number.isdigit() and old_number.isdigit() and int(number) < int(old_number)


def begin_switch(store: Any, experiment_id: str, switch: Switch) -> str:
    """Record a switch about to happen; the run id to end with `end_switch`."""
    gates = json.dumps({name: summary[:GATE_SUMMARY_LENGTH] for name, summary in switch.gates.items()},
                       sort_keys=True)
    tags = {
        tracking.TAG_KIND: tracking.KIND_SWITCH,
        tracking.TAG_NAME: switch.deployment,
        tracking.TAG_SWITCH_VERSION: switch.version or "",
        tracking.TAG_SWITCH_PREVIOUS: switch.previous or "",
        tracking.TAG_SWITCH_ROLLBACK: "true" if switch.rollback else "false",
        tracking.TAG_SWITCH_COMMIT: switch.commit or "",
        tracking.TAG_SWITCH_DIRTY: "true" if switch.dirty else "false",
        tracking.TAG_SWITCH_AUTHOR: switch.author,
        tracking.TAG_SWITCH_SUBJECT: switch.subject,
        tracking.TAG_SWITCH_GATES: gates[:tracking.MAX_TAG_LENGTH],
        tracking.TAG_SWITCH_BY: switch.applied_by,
        tracking.TAG_SWITCH_REASON: switch.reason,
    }
    tags = {key: value[:tracking.MAX_TAG_LENGTH] for key, value in tags.items()}
    served = switch.version or "nothing"
    return store.create_run(experiment_id, f"{switch.deployment}: {switch.previous or 'nothing'} -> {served}",
                            tags)


def end_switch(store: Any, run_id: str, served: bool) -> None:
    store.end_run(run_id, "FINISHED" if served else "FAILED")


def read_switches(store: Any, experiment_id: str, deployment: str | None = None,
                  since: float | None = None) -> list[Switch]:
    """The recorded switches, oldest first; those that did not happen (FAILED) included."""
    query = tag_equals(tracking.TAG_KIND, tracking.KIND_SWITCH)
    if deployment is not None:
        query += " and " + tag_equals(tracking.TAG_NAME, deployment)
    found = []
    for record in store.search_runs(experiment_id, query):
        at = record.start_time / 1000.0
        if since is not None and at < since:
            continue
        tags = record.tags
        try:
            gates = json.loads(tags.get(tracking.TAG_SWITCH_GATES) or "{}")
        except ValueError:  # cut at MLflow's limit
            gates = {}
        if not isinstance(gates, dict):
            gates = {}
        found.append(Switch(
            deployment=tags.get(tracking.TAG_NAME, ""),
            version=tags.get(tracking.TAG_SWITCH_VERSION) or None,
            previous=tags.get(tracking.TAG_SWITCH_PREVIOUS) or None,
            at=at, commit=tags.get(tracking.TAG_SWITCH_COMMIT) or None,
            dirty=tags.get(tracking.TAG_SWITCH_DIRTY) == "true",
            author=tags.get(tracking.TAG_SWITCH_AUTHOR, ""),
            subject=tags.get(tracking.TAG_SWITCH_SUBJECT, ""),
            gates=MappingProxyType({str(k): str(v) for k, v in gates.items()}),
            applied_by=tags.get(tracking.TAG_SWITCH_BY, ""), reason=tags.get(tracking.TAG_SWITCH_REASON, ""),
            rollback=tags.get(tracking.TAG_SWITCH_ROLLBACK) == "true", run_id=record.run_id,
            status=record.status))
    return sorted(found, key=lambda switch: (switch.at, switch.run_id))
