"""The Git origin recorded on every run: the commit, and a remote without credentials."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.gitinfo import git_origin, without_credentials
from tests.reconcile_support import GIT_ENV


@pytest.mark.parametrize(("remote", "recorded"), [
    ("https://ghp_SECRET@github.com/org/specs.git", "https://github.com/org/specs.git"),
    ("https://user:pass@git.example.internal:8443/ml/specs.git", "https://git.example.internal:8443/ml/specs.git"),
    ("git@github.com:org/specs.git", "git@github.com:org/specs.git"),
    ("https://github.com/org/specs.git", "https://github.com/org/specs.git"),
])
def test_remote_urls_are_recorded_without_credentials(remote: str, recorded: str):
    assert without_credentials(remote) == recorded


def test_the_origin_names_the_commit_and_ignores_the_state_folder(tmp_path: Path):
    env = {**GIT_ENV, "PATH": "/usr/bin:/bin"}
    (tmp_path / "spec.yaml").write_text("a: 1\n")
    for args in (["init", "-q"], ["remote", "add", "origin", "https://tok@example.invalid/specs.git"],
                 ["add", "-A"], ["commit", "-q", "-m", "specs"]):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True)
    (tmp_path / ".tuneops").mkdir()
    (tmp_path / ".tuneops" / "mlflow.db").write_text("state")
    origin = git_origin(tmp_path)
    assert origin.repo == "https://example.invalid/specs.git"
    assert origin.commit and len(origin.commit) == 40 and origin.dirty is False
    (tmp_path / "spec.yaml").write_text("a: 2\n")
    assert git_origin(tmp_path).dirty is True
    assert git_origin(tmp_path / ".tuneops").commit == origin.commit
