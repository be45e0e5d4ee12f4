"""The daemon's mirror of the spec repository: the branch, cloned once, then fetched and reset.

A token in the remote URL (`https://TOKEN@host/...`) never reaches a command line that `ps`
shows nor the `.git/config` a clone writes: git gets the URL without it, and the token as an
Authorization header for that host only, in its environment (GIT_CONFIG_COUNT variables).
Git runs through GitPython (reconciler/git/command.py); every error names the repository
without credentials.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from reconciler import redaction
from reconciler.config import STATE_DIR
from reconciler.errors import TemporaryError
from reconciler.git.command import GitTimedOut, GitUnavailable, run

MIRROR_TIMEOUT_S = 300


class MirrorError(TemporaryError, RuntimeError):
    """The spec repository could not be cloned, fetched or reset (one line, no credentials)."""


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


class GitMirror:
    """The branch, fetched and reset into a checkout of its own. Untracked files survive a reset
    except the state folder's siblings: `.tuneops/` (local backend state) is kept."""

    def __init__(self, repo: str, branch: str, checkout: Path):
        self.repo, self.branch, self.checkout = repo, branch, checkout
        # A token in the remote travels in git's environment, not its command line or .git/config.
        self.url, self.environment = credential_free_remote(repo, {**os.environ, "GIT_TERMINAL_PROMPT": "0"})

    def sync(self) -> str:
        if not (self.checkout / ".git").is_dir():
            self.checkout.parent.mkdir(parents=True, exist_ok=True)
            self._git(None, "clone", "--quiet", "--no-checkout", self.url, str(self.checkout))
        else:  # a checkout an earlier tuneops cloned kept the token in its config
            self._git(self.checkout, "remote", "set-url", "origin", self.url)
        self._git(
            self.checkout,
            "fetch",
            "--quiet",
            "--prune",
            "origin",
            f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}",
        )
        return self.reset(f"origin/{self.branch}")

    def reset(self, commit: str) -> str:
        self._git(self.checkout, "reset", "--quiet", "--hard", commit)
        self._git(self.checkout, "clean", "--quiet", "-fd", "-e", STATE_DIR)
        return self._git(self.checkout, "rev-parse", "HEAD").strip()

    def _git(self, cwd: Path | None, *args: str) -> str:
        try:
            done = run(cwd, *args, timeout=MIRROR_TIMEOUT_S, environment=self.environment)
        except (GitUnavailable, GitTimedOut) as error:
            raise MirrorError(f"git {args[0]} failed: {error}") from None
        if not done.ok:
            why = done.last_line(self.repo, self.shown)
            raise MirrorError(f"git {args[0]} of {self.shown} ({self.branch}) failed: {why}")
        return done.text

    @property
    def shown(self) -> str:
        return redaction.without_credentials(self.repo)
