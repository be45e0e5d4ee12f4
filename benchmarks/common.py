"""What every benchmark records about where it ran. Benchmarks run as scripts
(`python benchmarks/NAME.py`), so this module is imported from their own folder."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import NoReturn

HERE = Path(__file__).resolve().parent


def git_commit() -> str:
    """The project's commit, `-dirty` when the working tree has changes; `unknown` without git."""
    try:
        proc = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"],
                              cwd=HERE, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"



def stop_like_ctrl_c() -> None:
    """SIGTERM raises KeyboardInterrupt, so a benchmark stopped by `kill` cleans up (stops the
    servers it started) as it does on Ctrl-C."""

    def terminated(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)


def fresh_workdir(path: Path) -> Path:
    """`path`, resolved and emptied: each run starts from nothing it did not generate itself."""
    path = path.resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def print_table(rows: list[list[str]]) -> None:
    """Rows as aligned columns (the first left, the rest right), a rule under the header row."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                        for column, (cell, width) in enumerate(zip(row, widths, strict=True))))
        if index == 0:
            print("  ".join("-" * width for width in widths))
