"""Reading MLflow for the reconciler (and the few writes apply needs), as plain records.

`tuneops plan` must stay fast: importing mlflow costs about 2.5 s, so against an http(s) server
we speak MLflow's REST API with the standard library. Other URIs (the embedded `sqlite:///`
default) have no server to talk to, so MLflow's own client reads them, imported only then.
Every call goes through `tracking.with_retries`: an unreachable server ends in
`TrackingUnavailable` naming the URI, any other refusal in `TrackingError`; never a password.

The two stores live in `rest_store.py` and `client_store.py`, what they share in `records.py`,
and MLflow's filter syntax in `filters.py`; this module is the protocol and which one a URI gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

from reconciler.tracking.client_store import ClientTrackingStore
from reconciler.tracking.records import RunRecord
from reconciler.tracking.rest_store import RestTrackingStore


class TrackingStore(Protocol):
    uri: str
    requests_made: int

    def experiment_id(self, name: str) -> str | None: ...
    def ensure_experiment(self, name: str) -> str: ...
    def search_runs(self, experiment_id: str, filter_string: str, *,
                    page_size: int = 1000, limit: int | None = None) -> list[RunRecord]: ...  # newest first
    def get_alias(self, model: str, alias: str) -> str | None: ...
    def set_alias(self, model: str, alias: str, version: str) -> None: ...
    def model_versions(self, model: str) -> list[tuple[str, Mapping[str, str]]]: ...
    # The few runs the reconciler writes itself: a sweep and its trials.
    def create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str: ...
    def log_batch(self, run_id: str, *, tags: Mapping[str, str] | None = None,
                  metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None,
                  step: int = 0) -> None: ...
    def end_run(self, run_id: str, status: str) -> None: ...  # FINISHED | FAILED | KILLED
    # The dashboard's curves: every logged value of one metric, as (step, value), by step.
    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]: ...


def open_store(tracking_uri: str) -> TrackingStore:
    """A server is read over REST without mlflow; anything else (sqlite, a file store) through mlflow."""
    if urlsplit(tracking_uri).scheme.lower() in ("http", "https"):
        return RestTrackingStore(tracking_uri)
    return ClientTrackingStore(tracking_uri)
