"""Which commit the specs were read at: recorded on every job, run and model version.

Quick reads through reconciler/git/command.py's `read` (the control plane's way: no GitPython);
outside a repository, or without git installed, the origin is simply unknown and jobs record that.
"""

from __future__ import annotations

from pathlib import Path

from reconciler import redaction
from reconciler.git.command import GitTimedOut, GitUnavailable, read
from reconciler.jobs.jobfile import GitOrigin

READ_TIMEOUT_S = 20


def _git(root: Path, *args: str, strip: bool = True) -> str | None:
    try:
        done = read(root, *args, timeout=READ_TIMEOUT_S)
    except (GitUnavailable, GitTimedOut):
        return None
    if not done.ok:
        return None
    return done.text.strip() if strip else done.text


def repo_root(path: Path) -> Path | None:
    top = _git(path, "rev-parse", "--show-toplevel")
    return Path(top) if top else None


def current_branch(path: Path) -> str | None:
    """The branch checked out at `path`; None on a detached HEAD or outside a repository."""
    return _git(path, "symbolic-ref", "--quiet", "--short", "HEAD")


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


def commit_details(path: Path, commit: str | None) -> tuple[str, str]:
    """A commit's author ("Name <email>") and subject line; empty when git cannot say."""
    if not commit:
        return "", ""
    shown = _git(path, "show", "-s", "--format=%an <%ae>%x00%s", commit)
    author, _, subject = (shown or "").partition("\x00")
    return author, subject


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
