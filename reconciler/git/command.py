"""How every module of reconciler/git runs Git, with one set of rules, in two ways.

`run` goes through GitPython, for the daemon's mirror and the pod's checkout. GitPython runs the
`git` binary too, so the rules we keep apply here: a timeout on every command (GitPython's
`kill_after_timeout`), the caller's environment on top of ours (never a token on a command line),
no terminal prompt, and errors turned into one line that carries no credential. We use its
command layer (`Git.execute`) rather than its `Repo` and `Remote` objects: those drop
`kill_after_timeout` for clones and fetches with progress, and wrap git's stderr in their own
text, while our messages quote git's last line. GitPython is imported lazily: it raises
ImportError at import when no git binary exists, which is `GitUnavailable` here.

`read` is the same command under the same rules as a plain subprocess, for the quick reads of the
control plane (`plan`, `plan --base`, `render`: the commit specs were read at, a ref's archive).
GitPython may not be imported there: it costs 40-90 ms and a `git version` at import, and
tests/e2e/test_cli.py fails any control-plane command that loads it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import redaction
from reconciler.errors import PermanentError, TemporaryError

if TYPE_CHECKING:
    from types import ModuleType

# Whatever the caller adds, git never stops to ask a person for a password.
QUIET_ENVIRONMENT = {"GIT_TERMINAL_PROMPT": "0"}


class GitUnavailable(PermanentError, OSError):
    """No git binary: GitPython could not be imported, or the binary vanished since."""


class GitTimedOut(TemporaryError, TimeoutError):
    """A git command ran past its timeout and was killed."""


@dataclass(frozen=True)
class Completed:
    """What a git command left: its exit status, its output, and its stderr."""

    status: int
    stdout: str | bytes
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def text(self) -> str:
        return self.stdout if isinstance(self.stdout, str) else self.stdout.decode(errors="replace")

    @property
    def data(self) -> bytes:
        return self.stdout if isinstance(self.stdout, bytes) else self.stdout.encode()

    def last_line(self, url: str = "", shown: str = "") -> str:
        """git's last line of stderr (where it says why), with `url` shown as `shown` and any
        credential left masked."""
        lines = [line.strip() for line in self.stderr.strip().splitlines() if line.strip()]
        line = lines[-1] if lines else "no output"
        return redaction.redact(line.replace(url, shown) if url else line)


def library() -> ModuleType:
    """GitPython, imported on first use; GitUnavailable when it finds no git binary."""
    try:
        import git
    except ImportError as error:  # GitPython's own message is a page long: its first line says why
        why = (str(error).strip().splitlines() or ["no git executable"])[0]
        raise GitUnavailable(f"git is not installed or not runnable ({why})") from None
    return git


def run(cwd: Path | None, *args: str, timeout: float, environment: Mapping[str, str] | None = None,
        options: Sequence[str] = (), binary: bool = False) -> Completed:
    """`git [options] args` in `cwd`; returns its status and output rather than raising on a
    non-zero status (callers decide what a failure means). `environment` is added on top of
    os.environ; `binary` keeps stdout as bytes (an archive)."""
    git = library()
    runner = git.Git()  # `-C cwd`, as git's own option: GitPython would run a missing cwd elsewhere
    where = ["-C", str(cwd)] if cwd is not None else []
    started = time.monotonic()
    try:
        status, stdout, stderr = runner.execute(
            [runner.GIT_PYTHON_GIT_EXECUTABLE, *options, *where, *args],
            env={**(environment or {}), **QUIET_ENVIRONMENT},
            kill_after_timeout=timeout,
            with_extended_output=True,
            with_exceptions=False,
            stdout_as_string=not binary,
            strip_newline_in_stdout=False,
        )
    except git.GitCommandNotFound:
        raise GitUnavailable(f"git is not installed or not runnable ({runner.GIT_PYTHON_GIT_EXECUTABLE} "
                             "not found)") from None
    if status != 0 and time.monotonic() - started >= timeout:
        raise GitTimedOut(f"git {args[0]} took over {timeout:g} s")
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return Completed(status, stdout, stderr)


def read(cwd: Path | None, *args: str, timeout: float, binary: bool = False) -> Completed:
    """`git args` in `cwd` like `run`, without loading GitPython (see the module's docstring)."""
    where = ["-C", str(cwd)] if cwd is not None else []
    try:  # a plain subprocess: GitPython stays off the control plane, whose import guard forbids it
        done = subprocess.run(["git", *where, *args], capture_output=True, timeout=timeout,
                              env={**os.environ, "LANGUAGE": "C", "LC_ALL": "C", **QUIET_ENVIRONMENT,
                                   # a read takes no lock: `git status` otherwise refreshes the
                                   # index under index.lock, and a reset beside it (the daemon's,
                                   # the user's own) fails on the lock
                                   "GIT_OPTIONAL_LOCKS": "0"})
    except OSError as error:
        raise GitUnavailable(f"git is not installed or not runnable ({error})") from None
    except subprocess.TimeoutExpired:
        raise GitTimedOut(f"git {args[0]} took over {timeout:g} s") from None
    stdout = done.stdout if binary else done.stdout.decode(errors="replace")
    return Completed(done.returncode, stdout, done.stderr.decode(errors="replace"))
