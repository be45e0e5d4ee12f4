"""Who is acting: the name the audit trail gives an apply, an approval or a switch."""

from __future__ import annotations

import getpass
import os
import socket


def who_applies() -> str:
    """TUNEOPS_APPLIED_BY, else the CI's actor (GITHUB_ACTOR), else the user and machine this
    runs as."""
    named = os.environ.get("TUNEOPS_APPLIED_BY") or os.environ.get("GITHUB_ACTOR")
    if named:
        return named
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in a container
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"
