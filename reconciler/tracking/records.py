"""What both MLflow stores share, so that callers need not know which one read: the RunRecord
they return, the TrackingError they raise, MLflow's search order and error codes, and the
helpers that build and refuse answers the same way in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from reconciler.errors import TuneopsError
from reconciler.tracking import vocabulary as tracking

TIMEOUT_S = 20.0
ORDER_NEWEST_FIRST = "attributes.start_time DESC"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as the reconciler sees it; the same whichever store read it."""

    run_id: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    start_time: int  # ms
    end_time: int | None
    tags: Mapping[str, str] = field(hash=False)
    metrics: Mapping[str, float] = field(hash=False)  # the latest value per key
    metric_steps: Mapping[str, int] = field(hash=False)  # the step of that latest value


class TrackingError(TuneopsError, RuntimeError):
    """MLflow answered, but refused: the message names the URI (password masked) and MLflow's reason.

    `retryable` marks answers worth another try (HTTP 429 and 5xx); `tracking.with_retries`
    retries those like a refused connection.
    """

    def __init__(self, message: str, *, error_code: str | None = None, reason: str = "",
                 status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.error_code = error_code
        self.reason = reason
        self.status = status
        self.retryable = retryable


def frozen_mapping(mapping: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(mapping)


def sorted_versions(versions: list[tuple[str, Mapping[str, str]]]) -> list[tuple[str, Mapping[str, str]]]:
    return sorted(versions, key=lambda item: (int(item[0]) if item[0].isdigit() else 0, item[0]))


def is_missing_alias(error: TrackingError) -> bool:
    return (error.error_code == "INVALID_PARAMETER_VALUE" and "alias" in error.reason
            and "not found" in error.reason)


def refused_error(uri: str, what: str, code: str, reason: str, **details: Any) -> TrackingError:
    reason = reason.replace(uri, tracking.redact_uri(uri))[:300]
    message = f"MLflow at {tracking.redact_uri(uri)} refused to {what}: {code}"
    if reason:
        message += f": {reason}"
    return TrackingError(message, error_code=code, reason=reason, **details)


class ExperimentsByName:
    """How both stores make sure an experiment exists, over their own calls: look it up, create
    it, and when creating says it already exists (another apply won the race), look again."""

    uri: str

    def experiment_id(self, name: str) -> str | None:
        raise NotImplementedError

    def _create_experiment(self, name: str) -> str | None:
        """The new experiment's id, or None when one of that name exists already."""
        raise NotImplementedError

    def ensure_experiment(self, name: str) -> str:
        existing = self.experiment_id(name)
        if existing is not None:
            return existing
        created = self._create_experiment(name)
        if created is not None:
            return created
        again = self.experiment_id(name)  # created meanwhile by someone else
        if again is None:
            raise TrackingError(f"MLflow at {tracking.redact_uri(self.uri)} says experiment {name!r} "
                                "exists but cannot find it", error_code=ALREADY_EXISTS)
        return again
