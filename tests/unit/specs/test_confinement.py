"""Where file:// paths may lead, with real folders and symlinks: what a walk of a model folder
finds, where the repository is, and what a job accepts as its roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.specs.confinement import (
    FILE_ROOTS_ENV,
    OutsideRoots,
    job_roots,
    repository_root,
    resolve_inside,
)


def test_a_linked_folder_inside_is_walked_for_links_out(tmp_path: Path) -> None:
    """The model folder links to a folder elsewhere in the repository, which links out."""
    repo = tmp_path / "repo"
    (repo / "models" / "tiny").mkdir(parents=True)
    (repo / "shared").mkdir()
    (repo / "shared" / "tokenizer.json").symlink_to("/etc/passwd")
    (repo / "models" / "tiny" / "shared").symlink_to(repo / "shared")
    with pytest.raises(OutsideRoots, match="tokenizer.json resolves to /etc/passwd, outside the repository"):
        resolve_inside(repo / "models" / "tiny", [repo], "outside the repository")


def test_a_link_back_to_its_own_folder_ends_the_walk(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "tiny"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "again").symlink_to(folder)
    assert resolve_inside(folder, [tmp_path], "outside") == folder


def test_the_repository_is_where_git_finds_it_even_in_a_worktree(tmp_path: Path) -> None:
    (tmp_path / "repo" / "ml").mkdir(parents=True)
    (tmp_path / "repo" / ".git").write_text("gitdir: /elsewhere/.git/worktrees/repo\n")
    assert repository_root(tmp_path / "repo" / "ml") == tmp_path / "repo"
    assert repository_root(tmp_path) == tmp_path  # not in Git: the folder itself


def test_a_job_takes_only_absolute_roots_and_refuses_to_guess_without_any() -> None:
    assert job_roots({FILE_ROOTS_ENV: "relative:/srv/data:"}) == (Path("/srv/data"),)
    with pytest.raises(OutsideRoots, match=f"started without {FILE_ROOTS_ENV}"):
        job_roots({FILE_ROOTS_ENV: "relative"})


def test_a_home_folder_kept_in_git_is_not_the_repository_of_specs_below_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".git").mkdir(parents=True)  # dotfiles in Git
    specs = home / "work" / "specs"
    specs.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert repository_root(specs) == specs  # not home: its ~/.ssh is not the specs' to read
    (home / "work" / ".git").mkdir()
    assert repository_root(specs) == home / "work"  # a repository of its own is found as before
