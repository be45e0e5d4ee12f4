"""The project façade the command line and the daemon call: load, validate, plan (offline, and
against a Git base), on a tiny spec repository built in tmp_path with a real Git history."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.errors import PermanentError, TuneopsError
from reconciler.plan.project_plan import PlannedProject
from reconciler.project import NoProject, Project, ProjectInvalid
from reconciler.specs.base import ResourceId
from tests.conftest import VALID_SPECS, write_repo
from tests.support.reconcile_support import GIT_ENV

DATASET_ONLY = {"tuneops.yaml": "", "dataset.yaml": VALID_SPECS["dataset.yaml"],
                "data/chats.jsonl": VALID_SPECS["data/chats.jsonl"]}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    """A Git repository whose one commit holds a project with a single Dataset."""
    root = write_repo(tmp_path / "repo", DATASET_ONLY)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a dataset")
    return root


def test_load_gives_a_valid_project(committed: Path):
    project = Project.load(committed)
    assert project.root == committed
    assert project.validate().valid
    assert [str(spec.id) for spec in project.specs] == ["Dataset/chats"]


def test_invalid_specs_are_a_permanent_error_carrying_the_report(committed: Path):
    (committed / "dataset.yaml").write_text(VALID_SPECS["dataset.yaml"].replace("type: chat", "type: nope"))
    with pytest.raises(ProjectInvalid) as raised:
        Project.load(committed)
    assert isinstance(raised.value, PermanentError) and not raised.value.retryable
    assert raised.value.result.errors and str(raised.value) == "1 error(s) in the specs"


def test_a_folder_without_specs_is_no_project(tmp_path: Path):
    with pytest.raises(NoProject) as raised:
        Project.load(tmp_path)
    assert isinstance(raised.value, TuneopsError) and raised.value.exit_code == 1
    assert "`tuneops init DIR` writes a starter project" in str(raised.value)


def test_an_offline_plan_creates_everything_and_reads_no_state(committed: Path):
    planned = Project.load(committed).plan(offline=True)
    assert isinstance(planned, PlannedProject)
    assert planned.state is None and planned.store is None and planned.backend is None
    assert [(str(a.resource), a.action) for a in planned.plan.actions] == [("Dataset/chats", "create")]
    assert planned.has_work and planned.plan.has_changes
    commit = git(committed, "rev-parse", "HEAD")
    assert f"at commit {commit[:12]}; state not read (--offline)" in planned.header
    assert planned.estimates() == {}  # nothing trains
    assert not (committed / ".tuneops").exists()  # a plan leaves the folder as it found it


def test_a_target_that_is_not_defined_is_refused_by_name(committed: Path):
    with pytest.raises(TuneopsError, match=r"--target FineTune/nope: no such spec under"):
        Project.load(committed).plan(offline=True, targets=frozenset({ResourceId("FineTune", "nope")}))


def test_a_plan_against_its_own_base_changes_nothing_and_a_new_spec_is_a_create(committed: Path):
    unchanged = Project.load(committed).plan("HEAD", offline=True)
    assert unchanged.base is not None and unchanged.base.ref == "HEAD"
    assert not unchanged.plan.has_changes
    assert "; compared with HEAD (" in unchanged.header
    write_repo(committed, {"more.yaml": VALID_SPECS["dataset.yaml"].replace("name: chats", "name: more")})
    changed = Project.load(committed).plan("HEAD", offline=True)
    actions = {str(a.resource): a.action for a in changed.plan.actions}
    assert actions == {"Dataset/chats": "noop", "Dataset/more": "create"}
    assert changed.source()["base_commit"] == git(committed, "rev-parse", "HEAD")


def test_the_specs_at_an_invalid_base_are_a_warning_not_an_error(committed: Path):
    (committed / "dataset.yaml").write_text(VALID_SPECS["dataset.yaml"].replace("type: chat", "type: nope"))
    git(committed, "commit", "-q", "-am", "a typo")
    (committed / "dataset.yaml").write_text(VALID_SPECS["dataset.yaml"])
    warnings: list[str] = []
    planned = Project.load(committed).plan("HEAD", offline=True, warn=warnings.append)
    assert warnings == ["warning: the specs at HEAD do not validate (1 error(s)): the change is compared "
                        "with nothing built"]
    assert [a.action for a in planned.plan.actions] == ["create"]


def test_check_reports_the_specs_without_raising_for_errors(committed: Path):
    (committed / "dataset.yaml").write_text(VALID_SPECS["dataset.yaml"].replace("type: chat", "type: nope"))
    result = Project.check([committed])
    assert not result.valid and result.is_project


def test_a_judge_key_from_the_environment_is_masked_in_everything_shown(tmp_path: Path, monkeypatch):
    import textwrap

    from reconciler import redaction

    key = "sk-judge-in-the-environment-42"
    monkeypatch.setenv("MY_JUDGE_KEY", key)
    evaluation = textwrap.dedent(VALID_SPECS["evaluation.yaml"]).lstrip("\n") + (
        "  judge:\n    endpoint:\n      url: https://judge.example.com/v1\n      apiKeySecret: MY_JUDGE_KEY\n"
        "    rubric: Be right.\n")
    root = write_repo(tmp_path / "specs", {**VALID_SPECS, "evaluation.yaml": evaluation})
    assert redaction.redact(f"401: bad key {key}") == f"401: bad key {key}"  # not known yet
    Project.load(root)
    assert redaction.redact(f"401: bad key {key}") == "401: bad key ***"
