"""The starter repository `tuneops init` writes. Its files also serve as the examples in
docs/specs.md, and a test validates them, so the first thing a user sees is known to work."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.fileio import write_text_atomic

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def starter_files() -> dict[str, str]:
    """Relative path -> content, in a stable order."""
    root = resources.files(__package__) / "files"
    out: dict[str, str] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif not child.name.startswith("."):
                out[prefix + child.name] = child.read_text(encoding="utf-8")

    walk(root, "")
    return out


def write_starter(directory: Path, *, force: bool = False,
                  extra_files: dict[str, str] | None = None) -> list[Path]:
    files = {**starter_files(), **(extra_files or {})}
    targets = {directory / name: text for name, text in files.items()}
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise FileExistsError("these files already exist: " + ", ".join(existing))
    for path, text in targets.items():
        write_text_atomic(path, text)
    return list(targets)
