"""MLflow's REST API over the standard library, for http(s) tracking servers: `tuneops plan`
must stay fast, and importing mlflow costs about 2.5 s. Nothing here imports mlflow.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

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


class RestTrackingStore(ExperimentsByName):
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

    def _create_experiment(self, name: str) -> str | None:
        created = self._call("POST", "experiments/create", "create the experiment", body={"name": name},
                             missing={ALREADY_EXISTS})
        return None if created is None else str(created["experiment_id"])

    def search_runs(self, experiment_id: str, filter_string: str, *,
                    page_size: int = 1000, limit: int | None = None) -> list[RunRecord]:
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
            if not token or (limit is not None and len(records) >= limit):
                return records[:limit]

    def get_alias(self, model: str, alias: str) -> str | None:
        # A missing model is 404 RESOURCE_DOES_NOT_EXIST, but a missing alias of an existing
        # model is 400 INVALID_PARAMETER_VALUE "Registered model alias X not found."
        try:
            found = self._call("GET", "registered-models/alias", "read a model alias",
                               query={"name": model, "alias": alias}, missing={NOT_FOUND})
        except TrackingError as error:
            if is_missing_alias(error):
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
                versions.append((str(version["version"]), frozen_mapping(tags)))
            token = page.get("next_page_token")
            if not token:
                return sorted_versions(versions)

    def create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        created = self._call("POST", "runs/create", "create a run", body={
            "experiment_id": experiment_id, "run_name": run_name, "start_time": _now_ms(),
            "tags": [{"key": key, "value": value} for key, value in tags.items()]})
        return str(created["run"]["info"]["run_id"])

    def log_batch(self, run_id: str, *, tags: Mapping[str, str] | None = None,
                  metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None,
                  step: int = 0) -> None:
        now = _now_ms()
        self._call("POST", "runs/log-batch", "record a run's values", body={
            "run_id": run_id,
            "tags": [{"key": key, "value": value} for key, value in (tags or {}).items()],
            "params": [{"key": key, "value": value} for key, value in (params or {}).items()],
            "metrics": [{"key": key, "value": value, "timestamp": now, "step": step}
                        for key, value in (metrics or {}).items()]})

    def end_run(self, run_id: str, status: str) -> None:
        self._call("POST", "runs/update", "end a run", body={"run_id": run_id, "status": status,
                                                             "end_time": _now_ms()})

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        points: list[tuple[int, float]] = []
        token: str | None = None
        while True:
            query = {"run_id": run_id, "metric_key": key, "max_results": "25000"}
            if token:
                query["page_token"] = token
            page = self._call("GET", "metrics/get-history", "read a metric's history", query=query)
            points += [(int(m.get("step", 0)), float(m["value"])) for m in page.get("metrics", ())]
            token = page.get("next_page_token")
            if not token:
                return sorted(points)

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
        return refused_error(self.uri, what, code, reason, status=error.code,
                        retryable=error.code == 429 or error.code >= 500)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


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
        tags=frozen_mapping({tag["key"]: tag.get("value", "") for tag in data.get("tags", ())}),
        metrics=frozen_mapping({metric["key"]: float(metric.get("value", 0.0)) for metric in metrics}),
        metric_steps=frozen_mapping({metric["key"]: int(metric.get("step", 0)) for metric in metrics}),
    )
