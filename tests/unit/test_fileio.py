"""Folders go into place whole: a reader sees the old result or the new one, never a mix."""

from __future__ import annotations

from pathlib import Path

from reconciler.fileio import replace_directory


def _folder(path: Path, **files: str) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_a_finished_folder_takes_the_place_of_nothing(tmp_path: Path) -> None:
    finished = _folder(tmp_path / ".out.staging", result="new")
    replace_directory(finished, tmp_path / "out")
    assert (tmp_path / "out" / "result").read_text() == "new"
    assert not finished.exists()


def test_a_previous_result_is_replaced_and_nothing_is_left_beside_it(tmp_path: Path) -> None:
    _folder(tmp_path / "out", result="old", stale="only in the old one")
    finished = _folder(tmp_path / ".out.staging", result="new")
    replace_directory(finished, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result"]
    assert (tmp_path / "out" / "result").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
