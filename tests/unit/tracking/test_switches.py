"""The audit trail's record of each switch: written to a real MLflow server (over REST) and to
a SQLite file (through MLflow's client), read back the same, oldest first, append-only."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from reconciler.tracking.store import open_store
from reconciler.tracking.switches import Switch, begin_switch, end_switch, is_rollback, read_switches


def test_a_rollback_is_a_return_to_a_version_served_before_or_an_older_one():
    served = [Switch("bot", "m/1", None), Switch("bot", "m/2", "m/1")]
    assert is_rollback("m/1", "m/2", served)
    assert is_rollback("m/1", "m/3", [])  # older than what serves, never served here
    assert not is_rollback("m/3", "m/2", served)
    assert not is_rollback("m/1", None, served)  # nothing served: a first deploy
    assert not is_rollback("other/1", "m/2", [])  # another registered model: not older
    tried = [Switch("bot", "m/8", "m/6", status="FAILED")]  # never served: going there is no return
    assert not is_rollback("m/8", "m/7", tried)


@pytest.fixture(params=["server", "sqlite"])
def store(request, tmp_path: Path):
    if request.param == "server":
        return open_store(request.getfixturevalue("mlflow_server").uri)
    return open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_switches_are_read_back_oldest_first_with_what_was_recorded(store):
    experiment = store.ensure_experiment(f"switches-{uuid.uuid4().hex[:8]}")
    gates = {"bot-quality": "passed: exact_match 0.9 >= 0.5", "long": "x" * 5000}
    first = begin_switch(store, experiment, Switch(
        "bot", "m/1", None, commit="a" * 40, author="Ada <ada@example.com>", subject="first model",
        gates=gates, applied_by="ada@laptop", reason="not deployed"))
    end_switch(store, first, served=True)
    time.sleep(0.01)
    second = begin_switch(store, experiment, Switch("bot", "m/2", "m/1", commit="b" * 40, dirty=True))
    end_switch(store, second, served=False)  # the new server never became healthy
    time.sleep(0.01)
    begin_switch(store, experiment, Switch("other", "n/1", None))  # still switching
    switches = read_switches(store, experiment)
    assert [(s.deployment, s.version, s.status) for s in switches] == [
        ("bot", "m/1", "FINISHED"), ("bot", "m/2", "FAILED"), ("other", "n/1", "RUNNING")]
    recorded = switches[0]
    assert (recorded.commit, recorded.author, recorded.subject, recorded.applied_by, recorded.reason) == \
        ("a" * 40, "Ada <ada@example.com>", "first model", "ada@laptop", "not deployed")
    assert recorded.gates["bot-quality"] == gates["bot-quality"]
    assert len(recorded.gates["long"]) == 300  # one summary cannot crowd the others out of the tag
    assert recorded.previous is None and recorded.what == "deploy" and not recorded.dirty
    assert switches[1].dirty and switches[1].previous == "m/1"
    assert [s.version for s in read_switches(store, experiment, "bot")] == ["m/1", "m/2"]
    assert read_switches(store, experiment, "bot", since=switches[1].at) == [switches[1]]
    assert read_switches(store, experiment, "nobody") == []


def test_a_stop_is_a_switch_to_nothing(store):
    experiment = store.ensure_experiment(f"switches-{uuid.uuid4().hex[:8]}")
    end_switch(store, begin_switch(store, experiment, Switch("bot", None, "m/3")), served=True)
    (stopped,) = read_switches(store, experiment, "bot")
    assert stopped.version is None and stopped.previous == "m/3" and stopped.what == "stopped"
