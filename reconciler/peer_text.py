"""Text a network peer sent, made safe for one line of a log: the daemon's and the dashboard's
refusals name what was asked for without letting it forge lines or flood the log."""

from __future__ import annotations


def shown(text: str | bytes, limit: int = 120) -> str:
    """A peer's text made safe for one log line: control characters escaped, length capped."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."
