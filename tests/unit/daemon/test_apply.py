"""The daemon applies in-process through the project façade: what an apply that fails or
crashes does to a tick (it fails; the daemon lives on), and what reaches the log (redacted)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from reconciler.daemon.loop import Daemon, DaemonConfig
from reconciler.errors import TemporaryError


class FakeProject:
    """Only what the daemon's apply step touches: `apply` raises what it is given."""

    specs = None

    def __init__(self, raises: BaseException):
        self.raises = raises

    def apply(self, **_: object) -> None:
        raise self.raises


@pytest.fixture
def daemon(tmp_path: Path) -> tuple[Daemon, list[str]]:
    said: list[str] = []
    return Daemon(DaemonConfig(repo=str(tmp_path / "remote"), cache_dir=tmp_path / "cache"),
                  say=said.append), said


def test_an_apply_that_crashes_is_a_failed_step_not_the_daemons_end(daemon):
    the_daemon, said = daemon
    assert the_daemon._apply(FakeProject(KeyError("bug"))) is True  # type: ignore[arg-type]
    assert said == ["  | tuneops: internal error: KeyError: 'bug'"]


def test_an_apply_refused_says_why_in_one_redacted_line(daemon):
    the_daemon, said = daemon
    refused = TemporaryError("MLflow at https://user:hunter2-secret@mlflow.example is not reachable")
    assert the_daemon._apply(FakeProject(refused)) is True  # type: ignore[arg-type]
    assert said == ["  | error: MLflow at https://user:***@mlflow.example is not reachable"]


def test_the_next_try_waits_as_long_as_a_temporary_error_says_else_backs_off(daemon):
    from reconciler.errors import PermanentError

    the_daemon, _ = daemon
    the_daemon.state.failures = 1
    the_daemon._remember_retry(TemporaryError("throttled", delay=5))
    assert 5.0 <= the_daemon._delay("failed") <= 6.0
    the_daemon._remember_retry(TemporaryError("MLflow not reachable"))  # no delay known: back off
    interval = the_daemon.config.interval
    assert 0.8 * 2 * interval <= the_daemon._delay("failed") <= 1.2 * 2 * interval
    the_daemon._remember_retry(PermanentError("bad spec"))
    assert the_daemon._delay("failed") >= 0.8 * 2 * interval
    assert the_daemon._delay("applied") == interval


def test_a_plan_that_crashes_fails_the_tick_with_a_daemon_error(daemon):
    from reconciler.daemon.loop import DaemonError

    the_daemon, _ = daemon
    broken = SimpleNamespace(plan=lambda: 1 / 0)
    with pytest.raises(DaemonError, match="tuneops plan failed: internal error: ZeroDivisionError"):
        the_daemon._plan_json(broken)  # type: ignore[arg-type]
