"""The specs at a Git ref (`plan --base REF`), read from a real repository with `git archive`:
the spec folder only, data files included, the working tree and index untouched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.git.ref import BaseRefError, checkout_base
from tests.support.reconcile_support import GIT_ENV


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    """A repository whose spec folder `specs/` changed after its first commit (returned)."""
    root = tmp_path / "repo"
    (root / "specs" / "data").mkdir(parents=True)
    (root / "specs" / "tuneops.yaml").write_text("backend: local\n")
    (root / "specs" / "data" / "train.jsonl").write_text("{}\n")
    (root / "README.md").write_text("outside the spec folder\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    first = _git(root, "rev-parse", "HEAD")
    (root / "specs" / "data" / "train.jsonl").write_text("{}\n{}\n")
    _git(root, "commit", "-q", "-am", "second")
    return root, first


def test_the_spec_folder_at_a_ref_is_read_with_its_data_files(repo, tmp_path: Path):
    root, first = repo
    (root / "specs" / "tuneops.yaml").write_text("backend: kubernetes\n")  # uncommitted, not read
    base = checkout_base(root / "specs", "HEAD~1", tmp_path / "base")
    assert (base.ref, base.commit) == ("HEAD~1", first)
    assert base.root == tmp_path / "base" / "specs"
    assert (base.root / "data" / "train.jsonl").read_text() == "{}\n"
    assert (base.root / "tuneops.yaml").read_text() == "backend: local\n"
    assert not (tmp_path / "base" / "README.md").exists()  # only the spec folder
    assert _git(root, "status", "--porcelain") == "M specs/tuneops.yaml"  # nothing else touched


def test_a_spec_folder_that_did_not_exist_at_the_ref_has_no_root(repo, tmp_path: Path):
    root, first = repo
    (root / "later").mkdir()
    (root / "later" / "tuneops.yaml").write_text("backend: local\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "later")
    base = checkout_base(root / "later", first, tmp_path / "base")
    assert base.commit == first and base.root is None


def test_an_unknown_ref_or_no_repository_is_one_line_that_says_what_to_do(repo, tmp_path: Path):
    root, _ = repo
    with pytest.raises(BaseRefError, match=r"--base origin/main: no such commit, branch or tag here \(fetch "
                                           r"it first, e\.g\. `git fetch origin main`\)"):
        checkout_base(root / "specs", "origin/main", tmp_path / "base")
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(BaseRefError, match=f"--base needs a Git repository: {outside} is not in one"):
        checkout_base(outside, "HEAD", tmp_path / "base")
