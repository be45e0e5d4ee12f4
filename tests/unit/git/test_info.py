"""The Git origin recorded on every run: the commit, and a remote without credentials."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.git.info import current_branch, git_origin, repo_root, unpublished, without_credentials
from reconciler.jobs.jobfile import GitOrigin
from tests.conftest import REPO_ROOT
from tests.support.reconcile_support import GIT_ENV


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


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**GIT_ENV, "PATH": "/usr/bin:/bin"}, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


def test_spec_files_are_published_once_committed_and_pushed(tmp_path: Path):
    """What a pod checks out from the remote at HEAD is what is here, or the reason it is not."""
    repo = tmp_path / "specs"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train.jsonl").write_text("{}\n")
    (repo / "models" / "tiny").mkdir(parents=True)
    (repo / "models" / "tiny" / "config.json").write_text("{}")
    (repo / ".gitignore").write_text("*.bin\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "specs")
    paths = ("data/train.jsonl", "models/tiny")
    assert unpublished(repo, paths) == ["the spec repository has no remote 'origin', which pods check these "
                                        "files out from (git remote add origin URL, then push)"]

    _git(tmp_path, "init", "-q", "--bare", "-b", "main", "remote.git")
    _git(repo, "remote", "add", "origin", str(tmp_path / "remote.git"))
    head = _git(repo, "rev-parse", "HEAD")
    assert unpublished(repo, paths) == [f"commit {head[:12]} is on no branch of origin yet (git push)"]
    _git(repo, "push", "-q", "origin", "main")
    assert unpublished(repo, paths) == []

    (repo / "data" / "train.jsonl").write_text("{}\n{}\n")
    (repo / "models" / "tiny" / "tokenizer.json").write_text("{}")
    (repo / "models" / "tiny" / "model.bin").write_bytes(b"weights")
    (repo / "data" / "other.jsonl").write_text("{}\n")  # not a path the job reads
    assert unpublished(repo, paths) == ["data/train.jsonl: uncommitted changes",
                                        "models/tiny/tokenizer.json: not committed",
                                        "models/tiny/model.bin: ignored by .gitignore"]


def test_outside_a_repository_the_origin_is_unknown(tmp_path: Path):
    assert git_origin(tmp_path) == GitOrigin()
    assert repo_root(tmp_path) is None and current_branch(tmp_path) is None
    assert git_origin(tmp_path / "missing") == GitOrigin()


def test_the_branch_is_named_and_a_detached_head_has_none(tmp_path: Path):
    (tmp_path / "spec.yaml").write_text("a: 1\n")
    _git(tmp_path, "init", "-q", "-b", "trunk")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "specs")
    assert current_branch(tmp_path) == "trunk" and repo_root(tmp_path / ".") == tmp_path.resolve()
    _git(tmp_path, "checkout", "-q", "--detach", "HEAD")
    assert current_branch(tmp_path) is None


def test_without_git_installed_the_origin_is_unknown_not_a_traceback(tmp_path: Path):
    """GitPython raises ImportError when it finds no git binary: that is "git not installed"."""
    (tmp_path / "bin").mkdir()
    probe = ("from pathlib import Path; from reconciler.git.info import git_origin, repo_root; "
             "print(git_origin(Path('.')), repo_root(Path('.')))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PATH": str(tmp_path / "bin"), "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "repo=None commit=None dirty=False None\n"
