"""The observation records and ActualState: one test of whether a job or server is live, and lookups."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from reconciler.state import (
    STOPPED,
    ActualState,
    BackendState,
    BuiltRun,
    JobObservation,
    ServerObservation,
    is_live,
)


def job(phase: str, name: str = "sft", fingerprint: str = "f1", message: str = "") -> JobObservation:
    return JobObservation(kind="FineTune", name=name, fingerprint=fingerprint, phase=phase,  # type: ignore[arg-type]
                          attempts=1, started_at=1_700_000_000.0, finished_at=None, exit_code=None,
                          message=message, handle="pid 1", log=None)


def server(phase: str, name: str = "bot") -> ServerObservation:
    return ServerObservation(name=name, fingerprint="d1", model_fingerprint="f1", model_version="sft/1",
                             phase=phase, url="http://127.0.0.1:8000", started_at=1_700_000_000.0,  # type: ignore[arg-type]
                             message="", handle="pid 2", log=None)


@pytest.mark.parametrize(("phase", "live"), [("pending", True), ("running", True), ("succeeded", False),
                                             ("failed", False)])
def test_a_job_is_live_while_pending_or_running(phase, live):
    assert job(phase).is_live is live
    assert is_live(job(phase)) is live


def test_a_stopped_job_is_not_live():
    assert not is_live(job("failed", message=STOPPED))


@pytest.mark.parametrize(("phase", "live"), [("starting", True), ("serving", True), ("failed", False)])
def test_a_server_is_live_while_starting_or_serving(phase, live):
    assert server(phase).is_live is live
    assert is_live(server(phase)) is live


def test_lookups_find_the_job_by_fingerprint_and_the_server_by_name():
    running, other = job("running"), job("failed", fingerprint="f0")
    backend = BackendState((other, running), (server("serving"),))
    run = BuiltRun(kind="Evaluation", name="quality", fingerprint="e1", run_id="r1", started_at=1.0,
                   model_version="sft/1", verdict="passed")
    state = ActualState(MappingProxyType({("Evaluation", "quality", "e1"): run}),
                        MappingProxyType({("Evaluation", "quality"): (run,)}), MappingProxyType({}), backend)
    assert state.job("FineTune", "sft", "f1") is running
    assert state.job("FineTune", "sft", "f0") is other
    assert state.job("FineTune", "sft", "f2") is None
    assert state.server("bot") is not None and state.server("other") is None
    assert state.built_run("Evaluation", "quality", "e1") is run
    assert state.newest("Evaluation", "quality") is run and state.newest("FineTune", "sft") is None
    assert state.evaluation_of("quality", "sft/1") is run and state.evaluation_of("quality", "sft/2") is None


def test_unknown_state_reads_as_nothing_built():
    state = ActualState.unknown()
    assert not state.read and state.built_run("FineTune", "sft", "f1") is None and state.server("bot") is None
