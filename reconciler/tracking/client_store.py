"""MLflow's own client, for tracking URIs with no server to talk to (the embedded `sqlite:///`
default); mlflow is imported only when such a store is opened. Also the rule for where a SQLite
store's artifacts go.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from reconciler.state_files import is_state_database_error, looks_damaged, sqlite_cause, sqlite_file_problem
from reconciler.tracking import vocabulary as tracking
from reconciler.tracking.filters import quote_value
from reconciler.tracking.records import (
    ALREADY_EXISTS,
    NOT_FOUND,
    ORDER_NEWEST_FIRST,
    TIMEOUT_S,
    ExperimentsByName,
    RunRecord,
    TrackingError,
    frozen_mapping,
    is_missing_alias,
    refused_error,
    sorted_versions,
)

T = TypeVar("T")


def artifact_location(tracking_uri: str) -> str | None:
    """Beside a SQLite database, artifacts go in `artifacts/` next to it (MLflow's default is
    `./mlruns` wherever the process started); a server decides for itself. The runtime's jobs
    and the reconciler both create the experiment through this rule."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    if not database.is_absolute():
        database = Path.cwd() / database
    return (database.parent / "artifacts").as_uri()


class ClientTrackingStore(ExperimentsByName):
    """MLflow's own client, for URIs with no server (the embedded `sqlite:///` database)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.requests_made = 0
        # Whole operations are retried by `tracking.with_retries`, not each request for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(TIMEOUT_S)))
        try:
            import mlflow
        except ImportError:
            raise TrackingError(f"reading MLflow at {tracking.redact_uri(uri)} needs the mlflow package "
                                "(pip install 'tuneops[train]'), or an http(s) tracking server") from None
        # Creating the database logs its migrations at INFO: noise in a plan's output.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        database = _sqlite_database(uri)
        problem = sqlite_file_problem(database) if database is not None else None
        if problem:  # before MLflow, which retries a database it cannot open for a minute
            raise TrackingError(f"cannot use MLflow's database: {problem}" + _damaged_hint(problem))
        try:
            self._client = mlflow.MlflowClient(uri)
        except Exception as error:  # noqa: BLE001 - only a database that cannot be used is the user's
            raise self._database_error(error) from None
        self._mlflow_exception = mlflow.exceptions.MlflowException

    def _database_error(self, error: Exception) -> Exception:
        """A TrackingError naming the database for one that cannot be opened or read; anything
        else as it was."""
        cause = sqlite_cause(error)
        if cause is None or not is_state_database_error(cause):
            return error
        where = _sqlite_database(self.uri) or tracking.redact_uri(self.uri)
        return TrackingError(f"cannot use MLflow's database {where}: {cause}" + _damaged_hint(str(cause)))

    def experiment_id(self, name: str) -> str | None:
        found = self._call("look up the experiment", lambda: self._client.get_experiment_by_name(name))
        return None if found is None else str(found.experiment_id)

    def _create_experiment(self, name: str) -> str | None:
        created = self._call(
            "create the experiment",
            lambda: self._client.create_experiment(name, artifact_location=artifact_location(self.uri)),
            missing={ALREADY_EXISTS})
        return None if created is None else str(created)

    def search_runs(self, experiment_id: str, filter_string: str, *,
                    page_size: int = 1000, limit: int | None = None) -> list[RunRecord]:
        records: list[RunRecord] = []
        token: str | None = None
        while True:
            page = self._call("search runs", lambda token=token: self._client.search_runs(
                [experiment_id], filter_string, max_results=page_size, order_by=[ORDER_NEWEST_FIRST],
                page_token=token))
            records += [_run_from_entity(run) for run in page]
            token = page.token
            if not token or (limit is not None and len(records) >= limit):
                return records[:limit]

    def get_alias(self, model: str, alias: str) -> str | None:
        try:
            found = self._call("read a model alias", lambda: self._client.get_model_version_by_alias(
                model, alias), missing={NOT_FOUND})
        except TrackingError as error:
            if is_missing_alias(error):
                return None
            raise
        return None if found is None else str(found.version)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._call("set a model alias",
                   lambda: self._client.set_registered_model_alias(model, alias, str(version)))

    def model_versions(self, model: str) -> list[tuple[str, Mapping[str, str]]]:
        versions: list[tuple[str, Mapping[str, str]]] = []
        token: str | None = None
        while True:
            page = self._call("list model versions", lambda token=token: self._client.search_model_versions(
                f"name={quote_value(model)}", max_results=1000, page_token=token))
            versions += [(str(version.version), frozen_mapping(dict(version.tags))) for version in page]
            token = page.token
            if not token:
                return sorted_versions(versions)

    def create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        run = self._call("create a run", lambda: self._client.create_run(experiment_id, tags=dict(tags),
                                                                         run_name=run_name))
        return str(run.info.run_id)  # type: ignore[union-attr]

    def log_batch(self, run_id: str, *, tags: Mapping[str, str] | None = None,
                  metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None,
                  step: int = 0) -> None:
        import time

        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self._call("record a run's values", lambda: self._client.log_batch(
            run_id, metrics=[Metric(key, value, now, step) for key, value in (metrics or {}).items()],
            params=[Param(key, value) for key, value in (params or {}).items()],
            tags=[RunTag(key, value) for key, value in (tags or {}).items()]))

    def end_run(self, run_id: str, status: str) -> None:
        self._call("end a run", lambda: self._client.set_terminated(run_id, status))

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        history = self._call("read a metric's history", lambda: self._client.get_metric_history(run_id, key))
        return sorted((int(metric.step), float(metric.value)) for metric in history or ())

    def _call(self, what: str, call: Callable[[], T], *, missing: Collection[str] = ()) -> T | None:
        """One client call, retried like the REST store's; MLflow's exceptions become TrackingError."""

        def attempt() -> T:
            self.requests_made += 1
            return call()

        try:
            return tracking.with_retries(attempt, self.uri, what)
        except self._mlflow_exception as error:
            if sqlite_cause(error) is not None:
                raise self._database_error(error) from None
            code = str(getattr(error, "error_code", "") or "")
            if code in missing:
                return None
            reason = (str(getattr(error, "message", error)).splitlines() or [""])[0]
            raise refused_error(self.uri, what, code, reason) from None
        except Exception as error:  # noqa: BLE001 - SQLAlchemy's, for a database that broke since
            if sqlite_cause(error) is None:
                raise
            raise self._database_error(error) from None


def _damaged_hint(problem: str) -> str:
    return (" (move it aside and tuneops starts an empty one; what it recorded as built is then built again)"
            if looks_damaged(problem) else "")


def _sqlite_database(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI (the embedded default), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(unquote(uri.removeprefix("sqlite:///")).split("?", 1)[0])
    return path if path.is_absolute() else Path.cwd() / path


def _run_from_entity(run: Any) -> RunRecord:
    latest = run.data.to_proto().metrics  # the Metric protos carry the step of each latest value
    return RunRecord(
        run_id=run.info.run_id,
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        end_time=None if run.info.end_time is None else int(run.info.end_time),
        tags=frozen_mapping(dict(run.data.tags)),
        metrics=frozen_mapping({metric.key: float(metric.value) for metric in latest}),
        metric_steps=frozen_mapping({metric.key: int(metric.step) for metric in latest}),
    )
