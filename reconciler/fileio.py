"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, text: str, *, private: bool = False, mode: int | None = None) -> None:
    """Write to a temporary file beside `path`, then rename it into place. `private`: readable by
    its owner only (0600), for what may say more than others should read (job files); `mode`:
    these permission bits (a user's file edited in place keeps its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        if mode is not None:
            os.chmod(temporary, mode)
        elif not private:
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; be an ordinary file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def replace_directory(finished: Path, target: Path) -> None:
    """Rename a finished folder to `target`. A previous `target` is moved aside first and
    deleted after, so a reader sees the old folder or the new one, never a half of either."""
    if not target.exists():
        os.rename(finished, target)
        return
    attic = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    try:
        os.rename(target, attic / "previous")
        try:
            os.rename(finished, target)
        except OSError:
            os.rename(attic / "previous", target)
            raise
    finally:
        shutil.rmtree(attic, ignore_errors=True)
