"""`tuneops run checkout --job FILE`: the init container that puts the spec repository's files a
job reads (its in-repository file:// sources) into the pod, at the commit the job was planned at.

Only the job's paths are checked out (a sparse checkout of one fetched commit, blobs fetched on
demand where the server allows it), so a repository with many datasets costs a pod what it reads.
Credentials come from the mounted `kubernetes.secrets.git` Secret and never reach a command
line, an environment variable or a log: `username`/`password` for an https remote through a
credential helper that reads the files, `ssh-privatekey`/`known_hosts` for ssh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from reconciler.backends.kubernetes.render import GIT_CREDENTIALS_MOUNT
from reconciler.errors import TuneopsError
from reconciler.jobs.jobfile import JobFile

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


def check_out(job: JobFile, credentials: Path | None = None) -> Path:
    """Check the job's paths out at its commit into `job.checkout.into`; returns that folder.
    Credentials are read from `credentials`, else from the folder TUNEOPS_GIT_CREDENTIALS names
    (where the pod mounts the Secret)."""
    credentials = credentials or Path(os.environ.get("TUNEOPS_GIT_CREDENTIALS") or GIT_CREDENTIALS_MOUNT)
    if job.checkout is None:
        raise CheckoutError(
            f"the {job.kind} job {job.name} reads no file of the spec repository: nothing to check out"
        )
    remote, commit = job.git.repo, job.git.commit
    if not remote or not commit:
        raise CheckoutError("the job file names no spec repository or commit (git.repo, git.commit)")
    into = Path(job.checkout.into)
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tuneops-checkout-") as scratch:
        env, options = git_environment(remote, credentials, Path(scratch))

        def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
            try:
                done = subprocess.run(
                    ["git", *options, "-C", str(into), *args],
                    env=env,
                    text=True,
                    capture_output=True,
                    timeout=GIT_TIMEOUT_S,
                )
            except FileNotFoundError:
                raise CheckoutError(
                    "git is not installed in this image: the checkout needs it "
                    "(deploy/trainer.Dockerfile installs it)"
                ) from None
            except subprocess.TimeoutExpired:
                raise CheckoutError(f"git {args[0]} from {remote} took over {GIT_TIMEOUT_S} s") from None
            if check and done.returncode != 0:
                raise CheckoutError(
                    f"git {args[0]} failed for {remote} at {commit[:12]}: {_last_line(done.stderr)}"
                )
            return done

        git("init", "-q")
        git("remote", "remove", "origin", check=False)  # a restarted init container finds its own work
        git("remote", "add", "origin", remote)
        git("sparse-checkout", "set", "--no-cone", *(f"/{path}" for path in job.checkout.paths))
        # One commit, its blobs on demand; servers that refuse either get a plain fetch.
        fetches = (
            ("--depth", "1", "--filter=blob:none", "origin", commit),
            ("--depth", "1", "origin", commit),
        )
        if all(git("fetch", "-q", *args, check=False).returncode for args in fetches):
            git("fetch", "-q", "origin")
        git("checkout", "-q", "--detach", commit)
        head = git("rev-parse", "HEAD").stdout.strip()
        if head != commit:
            raise CheckoutError(f"checked out {head[:12]}, not the job's commit {commit[:12]}")
    missing = [path for path in job.checkout.paths if not (into / path).exists()]
    if missing:
        raise CheckoutError(
            f"commit {commit[:12]} of {remote} has no {', '.join(missing)}: was it committed and pushed?"
        )
    return into


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
