"""`python -m reconciler.backends.local.supervise --exit-file PATH -- ARGV...`: run ARGV, record how it ended.

A job started in its own session outlives the `tuneops apply` that started it, so nobody is left to
collect its exit status. This small parent waits for it and writes that status to a file, which
any later observer can read. Standard library only: it must start fast and never fail to import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


def exit_status(returncode: int) -> int:
    """A shell's convention: killed by signal N reads as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def write_exit_file(path: Path, status: int) -> None:
    """Temporary file and rename: an observer never reads half a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(f"{status}\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _parse(argv: list[str]) -> tuple[Path, list[str]]:
    if len(argv) < 4 or argv[0] != "--exit-file" or argv[2] != "--":
        raise SystemExit("usage: python -m reconciler.backends.local.supervise --exit-file PATH -- ARGV...")
    return Path(argv[1]), argv[3:]


def main(argv: list[str] | None = None) -> int:
    exit_file, command = _parse(sys.argv[1:] if argv is None else argv)
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []  # a signal that came before the child existed

    def forward(signum: int, _frame: object) -> None:
        if child is None:
            pending.append(signum)
        elif child.returncode is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        child = subprocess.Popen(command)
    except OSError as error:
        print(f"error: cannot start {command[0]}: {error.strerror or error}", file=sys.stderr, flush=True)
        write_exit_file(exit_file, 127)
        return 127
    for signum in pending:
        child.send_signal(signum)
    status = exit_status(child.wait())
    write_exit_file(exit_file, status)
    return status


if __name__ == "__main__":
    sys.exit(main())
