"""`tuneops run checkout --job FILE`: the init container that puts the spec repository's files a
job reads (its in-repository file:// sources) into the pod, at the commit the job was planned at.

What is runtime-specific lives here: reading the job file's checkout and Git origin, and finding
the mounted `kubernetes.secrets.git` Secret. The sparse checkout itself, and how credentials
reach git, is the Git layer's (reconciler/git/checkout.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.backends.kubernetes.render import GIT_CREDENTIALS_MOUNT
from reconciler.git.checkout import CheckoutError, sparse_checkout
from reconciler.jobs.jobfile import JobFile

__all__ = ["CheckoutError", "check_out"]


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
    return sparse_checkout(remote, commit, job.checkout.paths, Path(job.checkout.into), credentials)
