"""The specs as they were at a Git ref, for `tuneops plan --base REF`.

`git archive` writes the spec folder at REF (data files included: their digests are part of
the fingerprints) into a temporary folder, which is then loaded like any project. Git runs
through reconciler/git/command.py's `read` (`plan` is the control plane: no GitPython), the
archive read from its output into tarfile; nothing touches the working tree or the index.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import PermanentError
from reconciler.git.command import GitTimedOut, GitUnavailable, read
from reconciler.git.info import repo_root

ARCHIVE_TIMEOUT_S = 120


class BaseRefError(PermanentError, RuntimeError):
    """A --base that cannot be read, in one line, with what to do."""


@dataclass(frozen=True)
class BaseCheckout:
    ref: str
    commit: str
    root: Path | None  # the spec folder at that commit; None when it did not exist there


def checkout_base(spec_root: Path, ref: str, into: Path) -> BaseCheckout:
    top = repo_root(spec_root)
    if top is None:
        raise BaseRefError(f"--base needs a Git repository: {spec_root} is not in one")
    commit = _git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit is None:
        raise BaseRefError(f"--base {ref}: no such commit, branch or tag here (fetch it first, e.g. "
                           f"`git fetch origin {ref.removeprefix('origin/')}`)")
    commit = commit.decode().strip()
    relative = spec_root.resolve().relative_to(top.resolve()).as_posix()
    archive = _git(top, "archive", "--format=tar", commit, "--", relative or ".")
    if archive is None:  # the spec folder did not exist at the base: everything is new
        return BaseCheckout(ref, commit, None)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    root = into / relative if relative not in ("", ".") else into
    return BaseCheckout(ref, commit, root if root.is_dir() else None)


def _git(top: Path, *args: str) -> bytes | None:
    try:
        done = read(top, *args, timeout=ARCHIVE_TIMEOUT_S, binary=True)
    except (GitUnavailable, GitTimedOut) as error:
        raise BaseRefError(f"cannot run git: {error}") from None
    return done.data if done.ok else None
