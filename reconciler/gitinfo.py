"""Which commit the specs were read at: recorded on every job, run and model version.

Plain `git` subprocesses (three quick reads); outside a repository, or without git installed,
the origin is simply unknown and jobs record that.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from reconciler.jobfile import GitOrigin


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def repo_root(path: Path) -> Path | None:
    top = _git(path, "rev-parse", "--show-toplevel")
    return Path(top) if top else None


def git_origin(path: Path) -> GitOrigin:
    """Remote URL (credentials masked), HEAD commit, and whether the spec folder has uncommitted
    changes (then the commit alone does not say what was built)."""
    commit = _git(path, "rev-parse", "HEAD")
    if commit is None:
        return GitOrigin()
    remote = _git(path, "config", "--get", "remote.origin.url") or _git(path, "rev-parse", "--show-toplevel")
    status = _git(path, "status", "--porcelain", "--untracked-files=normal", "--", ".", ":(exclude).tuneops")
    return GitOrigin(repo=without_credentials(remote) if remote else None, commit=commit, dirty=bool(status))


def without_credentials(remote: str) -> str:
    """A remote URL with any user info dropped: Git tokens often sit in the user name
    (`https://ghp_...@github.com/org/repo.git`), which a password mask would miss."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in remote:
        return remote  # scp-like `git@host:org/repo.git` carries no secret
    parts = urlsplit(remote)
    if not parts.username and not parts.password:
        return remote
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))
