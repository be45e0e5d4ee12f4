"""One apply of a project: it holds the project's apply lock from the first read to the last
step, so a second apply is refused before it plans anything; how many jobs run at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.apply.executor import Reporter
from reconciler.apply.session import apply_project, max_parallel
from reconciler.config import ProjectSettings
from reconciler.lock import ApplyLock, Locked
from reconciler.project import Project
from tests.conftest import VALID_SPECS, write_repo

DATASET_ONLY = {"tuneops.yaml": "", "dataset.yaml": VALID_SPECS["dataset.yaml"],
                "data/chats.jsonl": VALID_SPECS["data/chats.jsonl"]}


def test_a_second_apply_is_refused_before_it_plans_or_creates_anything(tmp_path: Path):
    project = Project.load(write_repo(tmp_path / "repo", DATASET_ONLY))
    shown: list[object] = []
    with ApplyLock(project.state_dir):
        before = sorted(p.name for p in project.state_dir.iterdir())
        held = r"apply.lock is locked by PID \d+ since .*another `tuneops apply`"
        with pytest.raises(Locked, match=held) as error:
            apply_project(project, reporter=Reporter(lambda line: None), shown=shown.append)
        assert sorted(p.name for p in project.state_dir.iterdir()) == before  # no MLflow database made
    assert shown == [] and error.value.retryable


def test_jobs_at_once_follow_the_backend_in_use():
    local = ProjectSettings.model_validate({"local": {"maxParallel": 3}})
    cluster = ProjectSettings.model_validate({"backend": "kubernetes",
                                              "kubernetes": {"maxParallel": 12, "namespace": "ml"}})
    assert (max_parallel(local), max_parallel(cluster)) == (3, 12)
