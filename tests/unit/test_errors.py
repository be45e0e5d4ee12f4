"""The one error base: a message, an exit code, a hint, permanent or retryable; and the command
line's one handler, which prints any of them as one line and exits with its code."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from reconciler.errors import PermanentError, TemporaryError, TuneopsError


def test_the_base_carries_a_message_an_exit_code_and_a_hint():
    error = TuneopsError("no tuneops project in specs", hint="run `tuneops init`")
    assert str(error) == "no tuneops project in specs" and error.exit_code == 1
    assert error.one_line() == "no tuneops project in specs\nhint: run `tuneops init`"
    assert TuneopsError("plain").one_line() == "plain"


def test_permanent_errors_are_not_retried_and_temporary_ones_are_after_a_delay():
    assert not PermanentError("bad spec").retryable
    assert TemporaryError("MLflow is not reachable").retryable
    assert TemporaryError("429", delay=5).delay == 5
    assert TemporaryError("later").delay is None  # the caller's backoff decides


def test_existing_errors_keep_their_names_messages_and_builtin_bases():
    from reconciler.backends.base import BackendError
    from reconciler.backends.kubernetes.api import KubeApiError
    from reconciler.specs.base import SpecValueError
    from reconciler.tracking.vocabulary import TrackingUnavailable

    spec = SpecValueError("must be > 0", hint="did you mean 8?")
    assert isinstance(spec, ValueError) and isinstance(spec, PermanentError)
    assert str(spec) == "must be > 0" and spec.hint == "did you mean 8?"
    assert isinstance(TrackingUnavailable("x"), RuntimeError) and TrackingUnavailable("x").retryable
    assert isinstance(BackendError("x"), RuntimeError) and isinstance(BackendError("x"), TuneopsError)
    assert KubeApiError("throttled", status=429).retryable and not KubeApiError("no", status=403).retryable


def test_the_command_line_prints_one_line_with_the_hint_and_the_exit_code():
    from reconciler.cli import cli

    class Refused(PermanentError):
        exit_code = 3

    @cli.command(name="fails-for-a-test", hidden=True)
    def fails() -> None:
        raise Refused("the token https://user:s3cr3t-value@host.example is wrong", hint="set it again")

    try:
        result = CliRunner().invoke(cli, ["fails-for-a-test"])
    finally:
        cli.commands.pop("fails-for-a-test")
    assert result.exit_code == 3
    assert result.output == "error: the token https://user:***@host.example is wrong\nhint: set it again\n"
    assert "Traceback" not in result.output


def test_user_error_stays_a_click_exception_and_a_tuneops_error():
    from reconciler.cli import UserError

    error = UserError("out of date")
    assert isinstance(error, click.ClickException) and isinstance(error, TuneopsError)
    with pytest.raises(TuneopsError):
        raise error
