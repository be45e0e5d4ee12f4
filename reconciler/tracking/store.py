"""Reading MLflow for the reconciler (and the few writes apply needs), as plain records.

`tuneops plan` must stay fast: importing mlflow costs about 2.5 s, so against an http(s) server
we speak MLflow's REST API with the standard library. Other URIs (the embedded `sqlite:///`
default) have no server to talk to, so MLflow's own client reads them, imported only then.
Every call goes through `tracking.with_retries`: an unreachable server ends in
`TrackingUnavailable` naming the URI, any other refusal in `TrackingError`; never a password.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from reconciler.errors import TuneopsError
from reconciler.state_files import is_state_database_error, looks_damaged, sqlite_cause, sqlite_file_problem
from reconciler.tracking import vocabulary as tracking

T = TypeVar("T")

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


class TrackingStore(Protocol):
    uri: str
    requests_made: int

    def experiment_id(self, name: str) -> str | None: ...
    def ensure_experiment(self, name: str) -> str: ...
    def search_runs(self, experiment_id: str, filter_string: str, *,
                    page_size: int = 1000) -> list[RunRecord]: ...
    def get_alias(self, model: str, alias: str) -> str | None: ...
    def set_alias(self, model: str, alias: str, version: str) -> None: ...
    def model_versions(self, model: str) -> list[tuple[str, Mapping[str, str]]]: ...


def open_store(tracking_uri: str) -> TrackingStore:
    """A server is read over REST without mlflow; anything else (sqlite, a file store) through mlflow."""
    if urlsplit(tracking_uri).scheme.lower() in ("http", "https"):
        return RestTrackingStore(tracking_uri)
    return ClientTrackingStore(tracking_uri)


def quote_value(value: str) -> str:
    """A string literal for an MLflow filter. MLflow does not unescape quotes (`'it''s'` and
    `'it\\'s'` match nothing), so the value is wrapped in the quote character it does not contain."""
    if value.endswith("\\"):
        raise ValueError(f"an MLflow filter cannot match a value ending in a backslash: {value!r}")
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"an MLflow filter cannot match a value holding both quote characters: {value!r}")


def tag_equals(key: str, value: str) -> str:
    """The filter clause `tags.`key` = 'value'`: backticks because our keys hold dots."""
    if "`" in key:
        raise ValueError(f"an MLflow filter cannot name a tag key holding a backtick: {key!r}")
    return f"tags.`{key}` = {quote_value(value)}"


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


def _frozen(mapping: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(mapping)


def _sorted_versions(versions: list[tuple[str, Mapping[str, str]]]) -> list[tuple[str, Mapping[str, str]]]:
    return sorted(versions, key=lambda item: (int(item[0]) if item[0].isdigit() else 0, item[0]))


class RestTrackingStore:
    """MLflow's REST API over urllib: a plan that reads a server never imports mlflow."""

    def __init__(self, uri: str, *, timeout: float = TIMEOUT_S):
        self.uri = uri
        self.requests_made = 0
        self.timeout = timeout
        parts = urlsplit(uri)
        host = parts.netloc.rpartition("@")[2]
        self._base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "tuneops"}
        authorization = _authorization(uri)
        if authorization:
            self._headers["Authorization"] = authorization
        self._ssl = _ssl_context() if parts.scheme.lower() == "https" else None

    # -- reads and writes -------------------------------------------------------------------

    def experiment_id(self, name: str) -> str | None:
        found = self._call("GET", "experiments/get-by-name", "look up the experiment",
                           query={"experiment_name": name}, missing={NOT_FOUND})
        return None if found is None else str(found["experiment"]["experiment_id"])

    def ensure_experiment(self, name: str) -> str:
        existing = self.experiment_id(name)
        if existing is not None:
            return existing
        created = self._call("POST", "experiments/create", "create the experiment", body={"name": name},
                             missing={ALREADY_EXISTS})
        if created is not None:
            return str(created["experiment_id"])
        again = self.experiment_id(name)  # created meanwhile by someone else
        if again is None:
            raise TrackingError(f"MLflow at {tracking.redact_uri(self.uri)} says experiment {name!r} "
                                "exists but cannot find it", error_code=ALREADY_EXISTS)
        return again

    def search_runs(self, experiment_id: str, filter_string: str, *,
                    page_size: int = 1000) -> list[RunRecord]:
        records: list[RunRecord] = []
        token: str | None = None
        while True:
            body: dict[str, Any] = {"experiment_ids": [experiment_id], "filter": filter_string,
                                    "max_results": page_size, "order_by": [ORDER_NEWEST_FIRST]}
            if token:
                body["page_token"] = token
            page = self._call("POST", "runs/search", "search runs", body=body)
            records += [_run_from_json(run) for run in page.get("runs", ())]
            token = page.get("next_page_token")
            if not token:
                return records

    def get_alias(self, model: str, alias: str) -> str | None:
        # A missing model is 404 RESOURCE_DOES_NOT_EXIST, but a missing alias of an existing
        # model is 400 INVALID_PARAMETER_VALUE "Registered model alias X not found."
        try:
            found = self._call("GET", "registered-models/alias", "read a model alias",
                               query={"name": model, "alias": alias}, missing={NOT_FOUND})
        except TrackingError as error:
            if _is_missing_alias(error):
                return None
            raise
        return None if found is None else str(found["model_version"]["version"])

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._call("POST", "registered-models/alias", "set a model alias",
                   body={"name": model, "alias": alias, "version": str(version)})

    def model_versions(self, model: str) -> list[tuple[str, Mapping[str, str]]]:
        # A GET with query parameters: this endpoint answers POST with 405.
        versions: list[tuple[str, Mapping[str, str]]] = []
        token: str | None = None
        while True:
            query = {"filter": f"name={quote_value(model)}", "max_results": "1000"}
            if token:
                query["page_token"] = token
            page = self._call("GET", "model-versions/search", "list model versions", query=query)
            for version in page.get("model_versions", ()):
                tags = {tag["key"]: tag.get("value", "") for tag in version.get("tags", ())}
                versions.append((str(version["version"]), _frozen(tags)))
            token = page.get("next_page_token")
            if not token:
                return _sorted_versions(versions)

    # -- HTTP -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, *, query: Mapping[str, str] | None = None,
              body: Mapping[str, Any] | None = None, missing: Collection[str] = ()) -> Any:
        """One API call, retried on connection failures, 429 and 5xx; None for an error in `missing`."""
        url = f"{self._base}/api/2.0/mlflow/{path}"
        if query:
            url += "?" + urlencode(query)
        data = json.dumps(body).encode() if body is not None else None

        def attempt() -> Any:
            self.requests_made += 1
            request = urllib.request.Request(url, data=data, method=method, headers=self._headers)
            failure: urllib.error.HTTPError | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as response:
                    payload = response.read()
            except urllib.error.HTTPError as error:
                failure = error
            if failure is not None:  # raised outside the handler: no connection error in its context
                raise self._refusal(failure, what)
            try:
                return json.loads(payload or b"{}")
            except ValueError:
                raise TrackingError(f"MLflow at {tracking.redact_uri(self.uri)} answered {what} with "
                                    f"something that is not JSON: is it an MLflow server?") from None

        try:
            return tracking.with_retries(attempt, self.uri, what)
        except TrackingError as error:
            if error.error_code in missing:
                return None
            raise

    def _refusal(self, error: urllib.error.HTTPError, what: str) -> TrackingError:
        raw = error.read() or b""
        error.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and "error_code" in answer:
            code = str(answer["error_code"])
            reason = str(answer.get("message", "")).splitlines()[0] if answer.get("message") else ""
        else:
            code, reason = f"HTTP {error.code}", str(error.reason or "")
        return _refused(self.uri, what, code, reason, status=error.code,
                        retryable=error.code == 429 or error.code >= 500)


def _authorization(uri: str) -> str | None:
    """Like MLflow's client, given the job's variables (redaction.credentials_environment): basic
    auth from the URI's user and password or MLFLOW_TRACKING_USERNAME/PASSWORD, else a bearer token
    from the URI's user-name position or MLFLOW_TRACKING_TOKEN."""
    from reconciler.redaction import credentials_environment

    environment = credentials_environment(uri) or os.environ  # the URI's own come first
    username = environment.get("MLFLOW_TRACKING_USERNAME")
    password = environment.get("MLFLOW_TRACKING_PASSWORD")
    if username and password:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    token = environment.get("MLFLOW_TRACKING_TOKEN")
    return f"Bearer {token}" if token else None


def _ssl_context() -> ssl.SSLContext:
    """MLflow's TLS settings: MLFLOW_TRACKING_INSECURE_TLS, _SERVER_CERT_PATH, _CLIENT_CERT_PATH."""
    context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    client_cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
    if client_cert:
        context.load_cert_chain(client_cert)
    return context


def _run_from_json(run: Mapping[str, Any]) -> RunRecord:
    """Protobuf JSON leaves out default values: a 0.0 metric, step 0, an empty tag, an open run's end."""
    info = run["info"]
    data = run.get("data", {})
    metrics = data.get("metrics", ())
    end_time = info.get("end_time")
    return RunRecord(
        run_id=info.get("run_id") or info["run_uuid"],
        status=info.get("status", "RUNNING"),
        start_time=int(info.get("start_time", 0)),
        end_time=None if end_time is None else int(end_time),
        tags=_frozen({tag["key"]: tag.get("value", "") for tag in data.get("tags", ())}),
        metrics=_frozen({metric["key"]: float(metric.get("value", 0.0)) for metric in metrics}),
        metric_steps=_frozen({metric["key"]: int(metric.get("step", 0)) for metric in metrics}),
    )


def _is_missing_alias(error: TrackingError) -> bool:
    return (error.error_code == "INVALID_PARAMETER_VALUE" and "alias" in error.reason
            and "not found" in error.reason)


def _refused(uri: str, what: str, code: str, reason: str, **details: Any) -> TrackingError:
    reason = reason.replace(uri, tracking.redact_uri(uri))[:300]
    message = f"MLflow at {tracking.redact_uri(uri)} refused to {what}: {code}"
    if reason:
        message += f": {reason}"
    return TrackingError(message, error_code=code, reason=reason, **details)


class ClientTrackingStore:
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

    def ensure_experiment(self, name: str) -> str:
        existing = self.experiment_id(name)
        if existing is not None:
            return existing
        created = self._call(
            "create the experiment",
            lambda: self._client.create_experiment(name, artifact_location=artifact_location(self.uri)),
            missing={ALREADY_EXISTS})
        if created is not None:
            return str(created)
        again = self.experiment_id(name)
        if again is None:
            raise TrackingError(f"MLflow at {tracking.redact_uri(self.uri)} says experiment {name!r} "
                                "exists but cannot find it", error_code=ALREADY_EXISTS)
        return again

    def search_runs(self, experiment_id: str, filter_string: str, *,
                    page_size: int = 1000) -> list[RunRecord]:
        records: list[RunRecord] = []
        token: str | None = None
        while True:
            page = self._call("search runs", lambda token=token: self._client.search_runs(
                [experiment_id], filter_string, max_results=page_size, order_by=[ORDER_NEWEST_FIRST],
                page_token=token))
            records += [_run_from_entity(run) for run in page]
            token = page.token
            if not token:
                return records

    def get_alias(self, model: str, alias: str) -> str | None:
        try:
            found = self._call("read a model alias", lambda: self._client.get_model_version_by_alias(
                model, alias), missing={NOT_FOUND})
        except TrackingError as error:
            if _is_missing_alias(error):
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
            versions += [(str(version.version), _frozen(dict(version.tags))) for version in page]
            token = page.token
            if not token:
                return _sorted_versions(versions)

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
            raise _refused(self.uri, what, code, reason) from None
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
        tags=_frozen(dict(run.data.tags)),
        metrics=_frozen({metric.key: float(metric.value) for metric in latest}),
        metric_steps=_frozen({metric.key: int(metric.step) for metric in latest}),
    )
