"""The sparse checkout a pod makes of the spec repository: only the paths a job reads, at the
commit the job was planned at (`tuneops run checkout`, reconciler/runtime/checkout.py, reads the
job file and calls `sparse_checkout`).

One commit is fetched, its blobs on demand where the server allows it, so a repository with many
datasets costs a pod what it reads. Credentials come from the mounted Secret's files and never
reach a command line, an environment variable or a log: `username`/`password` for an https
remote through a credential helper that reads the files, `ssh-privatekey`/`known_hosts` for ssh.
Git runs through GitPython (reconciler/git/command.py), without the system's git config.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from reconciler.errors import TuneopsError
from reconciler.git.command import Completed, GitTimedOut, GitUnavailable, run

GIT_TIMEOUT_S = 600


class CheckoutError(TuneopsError, RuntimeError):
    """The spec repository could not be checked out: the message says what to fix."""


def is_ssh_remote(url: str) -> bool:
    """`ssh://...` and scp-like `user@host:path`; https, git:// and local paths are not."""
    if url.startswith("ssh://"):
        return True
    return "://" not in url and ":" in url.split("/", 1)[0] and not Path(url).exists()


def credential_helper(folder: Path) -> str:
    """A git credential helper that answers `get` with the Secret's files, read when git asks."""
    user, password = folder / "username", folder / "password"
    return (
        f'!f() {{ test "$1" = get || exit 0; echo "username=$(cat \'{user}\')"; '
        f"echo \"password=$(cat '{password}')\"; }}; f"
    )


def git_environment(remote: str, credentials: Path, scratch: Path) -> tuple[dict[str, str], list[str]]:
    """Environment and `-c` options for git, from the Secret mounted at `credentials` (if any)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    options: list[str] = ["-c", "advice.detachedHead=false", "-c", "core.askPass="]
    if is_ssh_remote(remote):
        key = credentials / "ssh-privatekey"
        if key.is_file():
            known_hosts = credentials / "known_hosts"
            if not known_hosts.is_file():
                raise CheckoutError(
                    f"the Git credentials Secret has ssh-privatekey but no known_hosts: add "
                    f"the host key of {remote} (ssh-keyscan HOST) as the key known_hosts"
                )
            private = scratch / "id"  # ssh refuses a key readable by others; the Secret's mode is 0440
            shutil.copyfile(key, private)
            private.chmod(0o600)
            env["GIT_SSH_COMMAND"] = (
                f"ssh -i '{private}' -o IdentitiesOnly=yes -o BatchMode=yes "
                f"-o UserKnownHostsFile='{known_hosts}' -o StrictHostKeyChecking=yes"
            )
    elif (credentials / "username").is_file() and (credentials / "password").is_file():
        options += ["-c", "credential.helper=", "-c", f"credential.helper={credential_helper(credentials)}"]
    return env, options


def sparse_checkout(remote: str, commit: str, paths: Sequence[str], into: Path, credentials: Path) -> Path:
    """Check `paths` of `remote` out at `commit` into `into` (made if missing); returns `into`.
    Running it again in the same folder (a restarted init container) redoes the work."""
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tuneops-checkout-") as scratch:
        env, options = git_environment(remote, credentials, Path(scratch))

        def git(*args: str, check: bool = True) -> Completed:
            try:
                done = run(into, *args, timeout=GIT_TIMEOUT_S, environment=env, options=options)
            except GitUnavailable:
                raise CheckoutError(
                    "git is not installed in this image: the checkout needs it "
                    "(deploy/trainer.Dockerfile installs it)"
                ) from None
            except GitTimedOut:
                raise CheckoutError(f"git {args[0]} from {remote} took over {GIT_TIMEOUT_S} s") from None
            if check and not done.ok:
                raise CheckoutError(f"git {args[0]} failed for {remote} at {commit[:12]}: {done.last_line()}")
            return done

        git("init", "-q")
        git("remote", "remove", "origin", check=False)  # a restarted init container finds its own work
        git("remote", "add", "origin", remote)
        git("sparse-checkout", "set", "--no-cone", *(f"/{path}" for path in paths))
        # One commit, its blobs on demand; servers that refuse either get a plain fetch.
        fetches = (
            ("--depth", "1", "--filter=blob:none", "origin", commit),
            ("--depth", "1", "origin", commit),
        )
        if all(not git("fetch", "-q", *args, check=False).ok for args in fetches):
            git("fetch", "-q", "origin")
        git("checkout", "-q", "--detach", commit)
        head = git("rev-parse", "HEAD").text.strip()
        if head != commit:
            raise CheckoutError(f"checked out {head[:12]}, not the job's commit {commit[:12]}")
    missing = [path for path in paths if not (into / path).exists()]
    if missing:
        raise CheckoutError(
            f"commit {commit[:12]} of {remote} has no {', '.join(missing)}: was it committed and pushed?"
        )
    return into
