"""The reconciler's reads of MLflow: a real `mlflow server` through REST, a SQLite file through
MLflow's client, the same runs written to each, the same records read back."""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.tracking import vocabulary as tracking
from reconciler.tracking.client_store import ClientTrackingStore, artifact_location
from reconciler.tracking.filters import tag_equals
from reconciler.tracking.records import RunRecord, TrackingError
from reconciler.tracking.rest_store import RestTrackingStore
from reconciler.tracking.store import open_store
from reconciler.tracking.vocabulary import TrackingUnavailable, with_retries
from tests.conftest import REPO_ROOT
from tests.support.runtime_support import MlflowServer, free_port

START = 1_700_000_000_000  # ms; explicit start times make "newest first" the same in both stores
FINE_TUNES = 25
AWKWARD_NAMES = ("O'Brien", 'say "hi"', "back\\slash")


@dataclasses.dataclass
class World:
    """One tracking URI with the test's runs and registered model written into it."""

    uri: str
    experiment: str
    experiment_id: str
    model: str
    run_ids: dict[str, str]  # run name -> run id

    def store(self) -> RestTrackingStore | ClientTrackingStore:
        return open_store(self.uri)  # type: ignore[return-value]


def populate(uri: str, suffix: str) -> World:
    """The same runs, tags, metrics and model versions, whatever the URI."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = f"store-test-{suffix}"
    experiment_id = client.create_experiment(experiment)
    run_ids: dict[str, str] = {}

    def run(name: str, kind: str, offset: int, *, status: str | None = "FINISHED", **tags: str) -> str:
        created = client.create_run(experiment_id, start_time=START + offset, run_name=name,
                                    tags={tracking.TAG_KIND: kind, tracking.TAG_NAME: name, **tags})
        run_id = created.info.run_id
        if status:
            client.set_terminated(run_id, status, end_time=START + offset + 500)
        run_ids[name] = run_id
        return run_id

    for i in range(FINE_TUNES):
        run_id = run(f"sft-{i}", "FineTune", i * 1000, **{tracking.TAG_FINGERPRINT: f"fp{i}",
                                                            tracking.TAG_STATUS: tracking.STATUS_COMPLETE})
        if i % 5 == 0:
            client.log_metric(run_id, "loss", 2.0, timestamp=START, step=3)
            client.log_metric(run_id, "loss", 0.5 + i, timestamp=START + 1, step=7)
            client.log_metric(run_id, "zero", 0.0, timestamp=START, step=0)  # protobuf JSON omits both
    for offset, name in enumerate(AWKWARD_NAMES):
        run(name, "Dataset", 100_000 + offset)
    progress = run("eval-running", "Evaluation", 200_000, status=None)
    client.log_metric(progress, "progress", 0.25, timestamp=START, step=12)

    model = f"tiny-sft-{suffix}"
    client.create_registered_model(model)
    for version, name in ((1, "sft-0"), (2, "sft-5")):
        source = f"runs:/{run_ids[name]}/model"
        client.create_model_version(model, source, run_id=run_ids[name],
                                    tags={"tuneops.fingerprint": f"v{version}"})
    return World(uri, experiment, experiment_id, model, run_ids)


@pytest.fixture(scope="module")
def rest_world(mlflow_server: MlflowServer) -> World:
    return populate(mlflow_server.uri, uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def client_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pytest.importorskip("mlflow", reason="needs the [train] extra")
    database = tmp_path_factory.mktemp("tracking-store") / "mlflow.db"
    return populate(f"sqlite:///{database}", uuid.uuid4().hex[:8])


@pytest.fixture(params=["rest", "client"])
def world(request: pytest.FixtureRequest) -> World:
    return request.getfixturevalue(f"{request.param}_world")


def anonymous(records: list[RunRecord]) -> list[RunRecord]:
    """Run ids differ between two databases; everything else must not."""
    return [dataclasses.replace(record, run_id="") for record in records]


@pytest.mark.slow  # imports the MLflow client
def test_open_store_picks_rest_for_servers_and_the_client_otherwise(rest_world: World,
                                                                     client_world: World) -> None:
    assert isinstance(open_store(rest_world.uri), RestTrackingStore)
    assert isinstance(open_store(rest_world.uri.replace("http://", "HTTP://")), RestTrackingStore)
    assert isinstance(open_store(client_world.uri), ClientTrackingStore)


def test_both_stores_read_identical_records(rest_world: World, client_world: World) -> None:
    kind = tag_equals(tracking.TAG_KIND, "FineTune")
    over_rest = rest_world.store().search_runs(rest_world.experiment_id, kind)
    through_client = client_world.store().search_runs(client_world.experiment_id, kind)
    assert anonymous(over_rest) == anonymous(through_client)
    assert len(over_rest) == FINE_TUNES

    running = tag_equals(tracking.TAG_KIND, "Evaluation")
    assert (anonymous(rest_world.store().search_runs(rest_world.experiment_id, running))
            == anonymous(client_world.store().search_runs(client_world.experiment_id, running)))


def test_a_run_record_carries_status_times_tags_and_latest_metrics(world: World) -> None:
    store = world.store()
    [tuned] = store.search_runs(world.experiment_id, tag_equals(tracking.TAG_NAME, "sft-10"))
    assert tuned == RunRecord(
        run_id=world.run_ids["sft-10"], status="FINISHED", start_time=START + 10_000, end_time=START + 10_500,
        tags={tracking.TAG_KIND: "FineTune", tracking.TAG_NAME: "sft-10", tracking.TAG_FINGERPRINT: "fp10",
              tracking.TAG_STATUS: tracking.STATUS_COMPLETE, "mlflow.runName": "sft-10"},
        metrics={"loss": 10.5, "zero": 0.0}, metric_steps={"loss": 7, "zero": 0})

    [running] = store.search_runs(world.experiment_id, tag_equals(tracking.TAG_KIND, "Evaluation"))
    assert (running.status, running.end_time) == ("RUNNING", None)
    assert (running.metrics["progress"], running.metric_steps["progress"]) == (0.25, 12)
    with pytest.raises(TypeError):
        running.tags["tuneops.name"] = "changed"  # type: ignore[index]


def test_every_page_is_read_newest_first(world: World) -> None:
    store = world.store()
    before = store.requests_made
    records = store.search_runs(world.experiment_id, tag_equals(tracking.TAG_KIND, "FineTune"), page_size=10)
    assert store.requests_made - before == 3  # 10 + 10 + 5
    assert [record.tags[tracking.TAG_NAME] for record in records] == [
        f"sft-{i}" for i in reversed(range(FINE_TUNES))]
    assert len({record.run_id for record in records}) == FINE_TUNES


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_a_tag_filter_matches_values_with_quotes_exactly(world: World, name: str) -> None:
    found = world.store().search_runs(world.experiment_id, tag_equals(tracking.TAG_NAME, name))
    assert [record.run_id for record in found] == [world.run_ids[name]]


def test_tag_filters_quote_what_mlflow_can_match_and_refuse_the_rest() -> None:
    assert tag_equals("tuneops.kind", "FineTune") == "tags.`tuneops.kind` = 'FineTune'"
    assert tag_equals("tuneops.name", "O'Brien") == "tags.`tuneops.name` = \"O'Brien\""
    for value in ("both ' and \"", "ends in \\"):
        with pytest.raises(ValueError, match="cannot match"):
            tag_equals("tuneops.name", value)
    with pytest.raises(ValueError, match="backtick"):
        tag_equals("odd`key", "x")


def test_a_missing_experiment_is_none_until_ensured(world: World) -> None:
    store = world.store()
    name = f"{world.experiment}-new-{uuid.uuid4().hex[:6]}"
    assert store.experiment_id(name) is None
    created = store.ensure_experiment(name)
    assert store.experiment_id(name) == created
    assert store.ensure_experiment(name) == created
    assert store.experiment_id(world.experiment) == world.experiment_id


def test_an_embedded_experiment_keeps_its_artifacts_beside_the_database(client_world: World) -> None:
    import mlflow

    store = client_world.store()
    experiment_id = store.ensure_experiment(f"beside-{uuid.uuid4().hex[:6]}")
    location = mlflow.MlflowClient(client_world.uri).get_experiment(experiment_id).artifact_location
    database = Path(client_world.uri.removeprefix("sqlite:///"))
    assert location == (database.parent / "artifacts").as_uri() == artifact_location(client_world.uri)


@pytest.mark.parametrize("uri", ["sqlite:////srv/t/.tuneops/mlflow.db", "sqlite:///rel/mlflow.db",
                                 "http://mlflow:5000", "databricks"])
def test_the_artifact_rule_puts_artifacts_beside_a_sqlite_database_only(uri: str) -> None:
    expected = {"sqlite:////srv/t/.tuneops/mlflow.db": "file:///srv/t/.tuneops/artifacts",
                "sqlite:///rel/mlflow.db": (Path.cwd() / "rel" / "artifacts").as_uri()}.get(uri)
    assert artifact_location(uri) == expected


def test_aliases_round_trip_and_missing_ones_are_none(world: World) -> None:
    store = world.store()
    assert store.get_alias(world.model, "champion") is None  # the model exists, the alias does not
    assert store.get_alias(f"{world.model}-nope", "champion") is None
    store.set_alias(world.model, "champion", "2")
    assert store.get_alias(world.model, "champion") == "2"
    store.set_alias(world.model, "champion", "1")
    assert store.get_alias(world.model, "champion") == "1"


def test_model_versions_list_tags_in_version_order(world: World) -> None:
    store = world.store()
    assert store.model_versions(world.model) == [("1", {"tuneops.fingerprint": "v1"}),
                                                 ("2", {"tuneops.fingerprint": "v2"})]
    assert store.model_versions(f"{world.model}-nope") == []


def test_a_refusal_names_the_uri_and_mlflows_reason(world: World) -> None:
    with pytest.raises(TrackingError) as raised:
        world.store().set_alias(world.model, "champion", "99")
    assert raised.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert str(raised.value).startswith(f"MLflow at {world.uri} refused to set a model alias: "
                                        "RESOURCE_DOES_NOT_EXIST: ")


def test_an_unreachable_server_is_named_quickly_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEOPS_MLFLOW_RETRY_DELAYS", "0.05")
    port = free_port()
    store = open_store(f"http://ci:s3cret@127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable) as raised:
        store.experiment_id("anything")
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert message.startswith(
        f"cannot reach MLflow at http://ci:***@127.0.0.1:{port} to look up the experiment after 2 attempts")
    assert "s3cret" not in message
    assert store.requests_made == 2


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A real HTTP server with scripted answers: what a proxy or an overloaded MLflow says."""

    answers: list[tuple[int, str]] = []
    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.seen.append({"method": self.command, "path": self.path, "body": body,
                          "authorization": self.headers.get("Authorization")})
        status, text = self.answers.pop(0)
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Recorder]]]:
    class Handler(_Recorder):
        answers = []
        seen = []

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", Handler
    finally:
        server.shutdown()
        server.server_close()


def test_overload_is_retried_and_credentials_ride_along(scripted: tuple[str, type[_Recorder]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEOPS_MLFLOW_RETRY_DELAYS", "0.01,0.01,0.01")
    address, handler = scripted
    limited = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"})
    found = json.dumps({"experiment": {"experiment_id": "7"}})
    handler.answers += [(503, "busy"), (429, limited), (200, found)]
    store = open_store(f"http://ci:p%40ss@{address}")
    assert store.experiment_id("exp one") == "7"
    assert store.requests_made == 3
    assert handler.seen[-1]["path"] == "/api/2.0/mlflow/experiments/get-by-name?experiment_name=exp+one"
    assert handler.seen[-1]["authorization"] == "Basic Y2k6cEBzcw=="  # ci:p@ss

    handler.answers += [(503, "busy")] * 4
    with pytest.raises(TrackingUnavailable, match=r"at http://ci:\*\*\*@.* after 4 attempts") as raised:
        store.experiment_id("exp one")
    assert "p@ss" not in str(raised.value) and "p%40ss" not in str(raised.value)


def test_a_token_is_sent_as_bearer_and_a_non_json_answer_is_an_error(
        scripted: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    address, handler = scripted
    handler.answers += [(200, "<html>a login page</html>"), (401, "<html>who are you</html>")]
    store = open_store(f"http://{address}/prefix/")
    with pytest.raises(TrackingError, match="not JSON: is it an MLflow server"):
        store.search_runs("1", "")
    assert handler.seen[0]["path"] == "/prefix/api/2.0/mlflow/runs/search"
    assert handler.seen[0]["authorization"] == "Bearer tok"
    assert json.loads(handler.seen[0]["body"])["order_by"] == ["attributes.start_time DESC"]
    refused = r"refused to read a model alias: HTTP 401: Unauthorized"
    with pytest.raises(TrackingError, match=refused) as raised:
        store.get_alias("m", "champion")
    assert raised.value.status == 401
    assert store.requests_made == 2  # a 401 is not retried


def test_a_token_in_the_user_name_position_is_sent_as_bearer_and_never_shown(
        scripted: tuple[str, type[_Recorder]], monkeypatch: pytest.MonkeyPatch) -> None:
    """`https://TOKEN@host`: the job gets it as MLFLOW_TRACKING_TOKEN; the reconciler sends it alike."""
    monkeypatch.setenv("TUNEOPS_MLFLOW_RETRY_DELAYS", "0.01")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    address, handler = scripted
    found = json.dumps({"experiment": {"experiment_id": "7"}})
    handler.answers += [(200, found), (503, "busy"), (503, "busy")]
    store = open_store(f"http://t0ken-planted@{address}")
    assert store.experiment_id("exp") == "7"
    assert handler.seen[0]["authorization"] == "Bearer t0ken-planted"
    with pytest.raises(TrackingUnavailable, match=r"at http://\*\*\*@127\.0\.0\.1") as raised:
        store.experiment_id("exp")
    assert "t0ken-planted" not in str(raised.value)


@pytest.mark.parametrize("failure", [
    urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
    urllib.error.URLError(TimeoutError("timed out")),  # socket.timeout is TimeoutError
    http.client.RemoteDisconnected("Remote end closed connection without response"),
    TimeoutError("timed out"),
    TrackingError("busy", retryable=True),
], ids=["refused", "connect-timeout", "remote-disconnected", "read-timeout", "retryable"])
def test_urllib_connection_failures_are_retried(failure: Exception) -> None:
    attempts = []

    def fail() -> None:
        attempts.append(1)
        raise failure

    with pytest.raises(TrackingUnavailable):
        with_retries(fail, "http://mlflow:5000", "search runs", delays=(0.0, 0.0))
    assert len(attempts) == 3


@pytest.mark.parametrize("failure", [
    urllib.error.HTTPError("http://mlflow:5000/x", 404, "Not Found", {}, None),  # type: ignore[arg-type]
    TrackingError("no such alias"),
], ids=["http-error", "refusal"])
def test_answers_from_the_server_are_not_retried(failure: Exception) -> None:
    attempts = []

    def fail() -> None:
        attempts.append(1)
        raise failure

    with pytest.raises(type(failure)):
        with_retries(fail, "http://mlflow:5000", "search runs", delays=(0.0, 0.0))
    assert len(attempts) == 1


def test_reading_a_server_does_not_import_mlflow(rest_world: World) -> None:
    script = (
        "import sys\n"
        "from reconciler.tracking.filters import tag_equals\n"
        "from reconciler.tracking.store import open_store\n"
        f"store = open_store({rest_world.uri!r})\n"
        f"experiment = store.experiment_id({rest_world.experiment!r})\n"
        "runs = store.search_runs(experiment, tag_equals('tuneops.kind', 'FineTune'))\n"
        f"assert store.model_versions({rest_world.model!r})\n"
        "assert len(runs) == 25, len(runs)\n"
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_metrics_history_is_read_the_same_by_both_stores_in_step_order(world: World):
    store = world.store()
    assert store.metric_history(world.run_ids["sft-5"], "loss") == [(3, 2.0), (7, 5.5)]
    assert store.metric_history(world.run_ids["sft-5"], "zero") == [(0, 0.0)]
    assert store.metric_history(world.run_ids["sft-1"], "loss") == []  # never logged


def test_a_search_can_stop_after_the_newest_few_runs(world: World):
    store = world.store()
    newest = store.search_runs(world.experiment_id, tag_equals(tracking.TAG_KIND, "FineTune"), page_size=10,
                               limit=12)
    assert [record.tags[tracking.TAG_NAME] for record in newest] == [f"sft-{i}" for i in range(24, 12, -1)]
