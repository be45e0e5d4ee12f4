"""`tuneops history`: its arguments and the answers it gives before anything switched. What it
lists after real switches is shown end to end in tests/e2e/test_reconcile.py."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reconciler.cli.history_commands import parse_since
from reconciler.cli.main import cli
from tests.conftest import REPO_ROOT


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "quickstart"
    shutil.copytree(REPO_ROOT / "specs-example" / "quickstart", root,
                    ignore=shutil.ignore_patterns(".tuneops", "models"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def history(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, ["history", *args])


def test_since_takes_a_date_a_zoned_time_or_a_span_back_from_now():
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01T09:30+01:00") == datetime(2026, 12, 1, 8, 30, tzinfo=UTC).timestamp()
    assert abs(parse_since("2d") - (datetime.now(UTC).timestamp() - 2 * 86400)) < 60
    with pytest.raises(click.BadParameter, match="neither a date"):
        parse_since("last tuesday")


def test_before_any_switch_it_says_so_and_names_where_it_looked(project: Path):
    shown = history("Deployment/fruit-bot", str(project))
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("no switch of Deployment/fruit-bot recorded (MLflow sqlite:///")
    listed = history(str(project), "--format", "json")  # a path alone: every Deployment
    assert listed.exit_code == 0 and json.loads(listed.output) == {"version": 1, "switches": []}
    assert not (project / ".tuneops").exists()  # reading wrote nothing


def test_bad_arguments_are_usage_errors_that_say_what_is_wanted(project: Path):
    other = history("FineTune/fruit-sft", str(project))
    assert other.exit_code == 2 and "history is kept for Deployments" in other.output
    since = history("Deployment/fruit-bot", str(project), "--since", "yesterday-ish")
    assert since.exit_code == 2 and "30m, 12h, 7d, 2w" in since.output
    missing = history("Deployment/fruit-bot", str(project / "nowhere"))
    assert missing.exit_code == 2 and "is not a folder" in missing.output
    far = history("Deployment/fruit-bot", str(project), "--since", "99999999d")
    assert far.exit_code == 2 and "reaches back further than dates go" in far.output


def test_a_broken_tuneops_yaml_is_an_error_not_an_empty_history(project: Path):
    """Else it would read the default MLflow, find nothing, and say nothing happened."""
    settings = project / "tuneops.yaml"
    settings.write_text(settings.read_text() + "bogus: 1\n")
    shown = history("Deployment/fruit-bot", str(project))
    assert shown.exit_code == 1 and "tuneops.yaml" in shown.output and "bogus" in shown.output, shown.output
    assert "no switch" not in shown.output
