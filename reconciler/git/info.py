"""Which commit the specs were read at: recorded on every job, run and model version.

Plain `git` subprocesses (three quick reads); outside a repository, or without git installed,
the origin is simply unknown and jobs record that.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from reconciler import redaction
from reconciler.jobs.jobfile import GitOrigin


def credential_free_remote(remote: str,
                           environment: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(URL, environment) to run git against an https remote whose URL holds a user and token:
    the URL without them, and the environment with an Authorization header for that host only
    (git's GIT_CONFIG_COUNT variables). The token then appears in no command line that `ps` shows,
    and in no `.git/config` that a clone writes."""
    base = dict(os.environ if environment is None else environment)
    user, password = redaction.uri_credentials(remote)  # None for a malformed URL: git says why
    parts = urlsplit(remote) if user is not None else None
    if user is None or parts is None or parts.scheme not in ("http", "https"):
        return remote, base
    basic = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    index = int(base.get("GIT_CONFIG_COUNT", "0") or 0)
    host = parts.netloc.rpartition("@")[2]
    base.update({"GIT_CONFIG_COUNT": str(index + 1),
                 f"GIT_CONFIG_KEY_{index}": f"http.{parts.scheme}://{host}/.extraHeader",
                 f"GIT_CONFIG_VALUE_{index}": f"Authorization: Basic {basic}"})
    return redaction.without_credentials(remote), base


def _git(root: Path, *args: str, strip: bool = True) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() if strip else done.stdout


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
    redaction.remember_credentials_of(remote)
    return GitOrigin(repo=without_credentials(remote) if remote else None, commit=commit, dirty=bool(status))


def without_credentials(remote: str) -> str:
    """A remote URL with any user info dropped: Git tokens often sit in the user name
    (`https://ghp_...@github.com/org/repo.git`), which a password mask would miss."""
    return redaction.without_credentials(remote)


def unpublished(root: Path, paths: tuple[str, ...] | list[str]) -> list[str]:
    """Why a pod that checks out HEAD from the remote would not read these files (relative to
    the repository `root`) as they are here: no remote, changes not committed, files untracked
    or ignored, or a commit that no remote branch holds yet. Empty when they are published."""
    if not _git(root, "config", "--get", "remote.origin.url"):
        return ["the spec repository has no remote 'origin', which pods check these files out from "
                "(git remote add origin URL, then push)"]
    problems = []
    status = _git(root, "status", "--porcelain", "-z", "--ignored=matching", "--untracked-files=all",
                  "--", *paths, strip=False) or ""
    changed: dict[str, list[str]] = {"??": [], "!!": [], "": []}
    entries = iter(status.split("\0"))
    for entry in entries:
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if "R" in code or "C" in code:
            next(entries, None)  # a rename's second field is where it came from
        changed.get(code, changed[""]).append(path)
    for code, what in (("", "uncommitted changes"), ("??", "not committed"), ("!!", "ignored by .gitignore")):
        if changed[code]:
            shown = ", ".join(changed[code][:3]) + (f" and {len(changed[code]) - 3} more"
                                                    if len(changed[code]) > 3 else "")
            problems.append(f"{shown}: {what}")
    head = _git(root, "rev-parse", "HEAD")
    if head and not _git(root, "for-each-ref", "--contains", head, "--count=1", "refs/remotes/origin"):
        problems.append(f"commit {head[:12]} is on no branch of origin yet (git push)")
    return problems
