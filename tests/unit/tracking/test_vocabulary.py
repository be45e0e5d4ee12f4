"""The MLflow vocabulary's one piece of logic that users see: failures name the URI, never a password."""

from __future__ import annotations

import pytest

from reconciler.tracking.vocabulary import TrackingUnavailable, redact_uri, with_retries


@pytest.mark.parametrize("uri, shown", [
    ("http://mlflow:5000", "http://mlflow:5000"),
    ("https://ci:s3cret@mlflow.example.com/path", "https://ci:***@mlflow.example.com/path"),
    ("http://ci:s3cret@10.0.0.5:5000", "http://ci:***@10.0.0.5:5000"),
    ("sqlite:////work/.tuneops/mlflow.db", "sqlite:////work/.tuneops/mlflow.db"),
])
def test_passwords_in_tracking_uris_are_masked(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_connection_failures_are_retried_then_named_without_the_password() -> None:
    uri = "http://ci:s3cret@127.0.0.1:9"
    attempts = []

    def refuse() -> None:
        attempts.append(1)
        raise ConnectionError(f"Connection refused: {uri}")

    with pytest.raises(TrackingUnavailable) as raised:
        with_retries(refuse, uri, "start a run", delays=(0.0, 0.0))
    assert len(attempts) == 3
    message = str(raised.value)
    assert "cannot reach MLflow at http://ci:***@127.0.0.1:9 to start a run after 3 attempts" in message
    assert "s3cret" not in message


def test_other_errors_are_not_retried() -> None:
    attempts = []

    def broken() -> None:
        attempts.append(1)
        raise ValueError("a bug, not the network")

    with pytest.raises(ValueError, match="a bug"):
        with_retries(broken, "http://mlflow:5000", "log", delays=(0.0, 0.0))
    assert len(attempts) == 1
