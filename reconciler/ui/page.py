"""The frame every dashboard page shares: head, navigation, the live region the script refreshes,
and the escaping every value goes through. Pages are strings built here on the server; the only
script is /static/ui.js, which swaps the live region in place."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from html import escape
from typing import TypeVar
from urllib.parse import quote

from reconciler.redaction import redact, redactor
from reconciler.specs.base import ResourceId

PHASE_CLASS = {"Ready": "ready", "Running": "running", "Pending": "pending", "Failed": "failed",
               "Blocked": "blocked", "Suspended": "suspended", "Unknown": "unknown"}


T = TypeVar("T")
# The masking of the page being rendered: its secret values looked up once, not per value.
_masking: ContextVar[Callable[[str], str] | None] = ContextVar("tuneops_ui_masking", default=None)
_poll_ms: ContextVar[int] = ContextVar("tuneops_ui_poll_ms", default=2000)


def esc(value: object) -> str:
    """Text for HTML, credentials masked: every value a page shows goes through here."""
    return escape((_masking.get() or redact)(str(value)), quote=True)


def rendered(render: Callable[..., T], *args: object, poll_ms: int = 2000) -> T:
    """A page rendered with one lookup of the secret values for all of its thousands of values,
    polling every `poll_ms` (the dashboard's --refresh)."""
    masking, polling = _masking.set(redactor()), _poll_ms.set(poll_ms)
    try:
        return render(*args)
    finally:
        _masking.reset(masking)
        _poll_ms.reset(polling)


def resource_href(rid: ResourceId) -> str:
    return f"/resources/{quote(rid.kind, safe='')}/{quote(rid.name, safe='')}"


def resource_link(rid: ResourceId) -> str:
    return f'<a href="{resource_href(rid)}">{esc(rid)}</a>'


def phase_badge(phase: str) -> str:
    return f'<span class="badge phase-{PHASE_CLASS.get(phase, "pending")}" data-phase="{esc(phase)}">' \
           f'{esc(phase)}</span>'


def progress_bar(progress: float | None, text: str) -> str:
    if not text:
        return ""
    share = min(max(progress or 0.0, 0.0), 1.0)
    return (f'<div class="progress" data-progress="{share:.4f}"><div class="progress-track">'
            f'<progress max="1" value="{share:.4f}">{share:.0%}</progress></div>'
            f'<span class="progress-text">{esc(text)}</span></div>')


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], css: str = "") -> str:
    """Cells are HTML already (escape them with esc); an empty table says so."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return '<p class="muted">none</p>'
    head = "".join(f"<th>{esc(header)}</th>" for header in headers)
    return f'<table class="{esc(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def when(timestamp: float | None) -> str:
    """A time as people at the server read it, UTC kept in the tooltip."""
    if not timestamp:
        return ""
    utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    return f'<time datetime="{utc}" title="{utc}">{local}</time>'


def frame(title: str, main: str, *, active: str) -> str:
    """A whole page: `main` is the live region (what `?fragment=main` answers alone)."""
    current = ' class="active"'
    nav = "".join(f'<a href="{href}"{current if name == active else ""}>{name}</a>'
                  for name, href in (("Graph", "/"), ("Plan", "/plan")))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)} · tuneops</title><link rel="stylesheet" href="/static/ui.css">'
        '<link rel="icon" href="data:,"></head>'
        f'<body data-refresh-ms="{_poll_ms.get()}"><header class="top"><a class="brand" href="/">tuneops</a>'
        f'<nav>{nav}</nav><span class="live-state" id="live-state">live</span></header>'
        f'<main id="main">{main}</main><script src="/static/ui.js"></script></body></html>'
    )


def status_line(snapshot: object) -> str:
    """Where the numbers come from and when they were read, and the newest read's problem."""
    from reconciler.ui.snapshot import Snapshot

    assert isinstance(snapshot, Snapshot)
    parts = []
    if snapshot.project is not None:
        parts.append(f'<span class="root">{esc(snapshot.project.root)}</span>')
    if snapshot.commit:
        dirty = " (with uncommitted changes)" if snapshot.dirty else ""
        parts.append(f'commit <code class="commit">{esc(snapshot.commit[:12])}</code>{esc(dirty)}')
    for label, value in snapshot.context.items():
        parts.append(f'{esc(label)} <code>{esc(value)}</code>')
    parts.append(f"unchanged since {when(snapshot.changed_at)}")
    line = f'<p class="source">{" · ".join(parts)}</p>'
    if snapshot.problem:
        line += f'<div class="problem" role="alert"><pre>{esc(snapshot.problem)}</pre></div>'
    return line
