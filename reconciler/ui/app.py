"""The dashboard's HTTP application (ASGI): read-only pages, their live fragments, the state as
JSON, and two static files shipped in the package. Nothing is fetched from elsewhere.

Served where people other than its owner may reach it, it asks for a token: bound to anything but
loopback, every request needs `Authorization: Bearer <token>` or the cookie that opening
`/?token=<token>` once sets. On loopback it refuses Host headers other than the loopback names,
so a web page elsewhere cannot read it through DNS rebinding. It answers GET and HEAD only.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import ipaddress
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from reconciler.peer_text import shown
from reconciler.redaction import redact
from reconciler.specs.base import ResourceId
from reconciler.specs.kinds import KINDS
from reconciler.ui.page import rendered
from reconciler.ui.snapshot import SnapshotSource

TOKEN_ENV = "TUNEOPS_UI_TOKEN"
COOKIE = "tuneops_ui"
MAX_RENDERS = 4  # pages rendered at once; more wait (the HTTP server bounds connections)
GZIP_ABOVE = 2048  # bytes: smaller answers are sent as they are
COMPRESSED_KEPT = 16  # compressed versions kept, by ETag
RESOURCE_PAGES_KEPT = 64  # resource pages kept until the next read of the project
MAX_HEADER_BYTES = 16 * 1024  # request line and headers together, as the daemon's endpoints allow
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                                 b"form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
STATIC = {"/static/ui.css": ("ui.css", "text/css; charset=utf-8"),
          "/static/ui.js": ("ui.js", "text/javascript; charset=utf-8")}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """An address only this machine can reach: 127.0.0.0/8, ::1 or localhost."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


MIN_TOKEN_LENGTH = 16


def token_problem(token: str | None) -> str | None:
    """Why a token cannot guard the dashboard, or None when it can."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        return (f"{TOKEN_ENV} is too short to guard the dashboard: use {MIN_TOKEN_LENGTH} characters or more "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    return None


class Dashboard:
    """The ASGI application. `token` None on a non-loopback address refuses every page and says
    how to set one; `loopback` turns on the Host check."""

    def __init__(self, source: SnapshotSource, *, loopback: bool, token: str | None, poll_ms: int = 2000,
                 refused: Callable[[str], None] = lambda line: None):
        self.source, self.loopback, self.token, self.poll_ms = source, loopback, token, max(poll_ms, 500)
        self.refused = refused  # one line per refusal (the daemon's RefusalLog)
        self._cookie = hmac.new(token.encode(), b"tuneops-ui-session", hashlib.sha256).hexdigest() \
            if token else None
        self._renders = asyncio.Semaphore(MAX_RENDERS)
        self._compressed: OrderedDict[bytes, bytes] = OrderedDict()
        self._resource_pages: OrderedDict[tuple[ResourceId, float], str | None] = OrderedDict()
        self._resource_lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        # h11 bounds a header block that arrives in pieces; one that comes in a single read is
        # parsed whole, so its size is checked here.
        header_bytes = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if len(scope.get("raw_path", b"")) + header_bytes > MAX_HEADER_BYTES:
            return await self._refuse(scope, send, 431, f"request line and headers over "
                                      f"{MAX_HEADER_BYTES // 1024} KiB")
        if scope["method"] not in ("GET", "HEAD"):
            return await self._refuse(scope, send, 405, "the dashboard is read-only: GET only",
                                      [(b"allow", b"GET, HEAD")])
        headers = {name.lower(): value for name, value in scope["headers"]}
        if self.loopback and not is_loopback(_host_name(headers.get(b"host", b""))):
            return await self._refuse(scope, send, 403, "this dashboard answers only to localhost (a Host "
                                      "header of another name is refused, against DNS rebinding)")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if not self.loopback:
            refused = self._authorise(headers, query)
            if refused is not None:
                return await self._refuse_or_login(scope, send, refused, query)
        path = scope["path"]
        if path in STATIC:
            name, content_type = STATIC[path]
            body = resources.files("reconciler.ui").joinpath("static", name).read_bytes()
            return await _answer(send, 200, body, content_type, head=scope["method"] == "HEAD",
                                 extra=[(b"cache-control", b"max-age=300")])
        page = await self._page(path, query, headers.get(b"if-none-match"))
        if page is None:
            return await self._refuse(scope, send, 404, "no such page: the graph is at /")
        status, body, content_type, etag = page
        if etag is None:
            etag = b'"' + hashlib.sha256(body).hexdigest()[:24].encode() + b'"'
        if status == 200 and headers.get(b"if-none-match") == etag:
            return await _answer(send, 304, b"", content_type, extra=[(b"etag", etag)])
        extra = [(b"etag", etag), (b"vary", b"accept-encoding")]
        if len(body) >= GZIP_ABOVE and b"gzip" in headers.get(b"accept-encoding", b""):
            body = self._gzipped(etag, body)
            extra.append((b"content-encoding", b"gzip"))
        return await _answer(send, status, body, content_type, head=scope["method"] == "HEAD", extra=extra)

    def _gzipped(self, etag: bytes, body: bytes) -> bytes:
        """The body compressed, once per version: every open page polls the same one."""
        if etag not in self._compressed:
            self._compressed[etag] = gzip.compress(body, compresslevel=5)
            while len(self._compressed) > COMPRESSED_KEPT:
                self._compressed.popitem(last=False)
        return self._compressed[etag]

    # -- pages -------------------------------------------------------------------------------

    async def _page(self, path: str, query: dict[str, list[str]], known: bytes | None
                    ) -> tuple[int, bytes, str, bytes | None] | None:
        """(status, body, content type, ETag or None to hash the body). The graph and the plan
        are versions of the snapshot: a poll that has the current one is answered before any
        rendering (with an empty body, which the caller turns into 304)."""
        fragment = query.get("fragment") == ["main"]
        html = "text/html; charset=utf-8"
        async with self._renders:
            if path in ("/", "/plan"):
                from reconciler.ui.graph_page import graph_main, graph_page
                from reconciler.ui.plan_page import plan_main, plan_page

                snapshot = await asyncio.to_thread(self.source.current)
                page = "plan" if path == "/plan" else "graph"
                etag = f'"{snapshot.digest}-{page}-{int(fragment)}"'.encode()
                if known == etag:
                    return 200, b"", html, etag
                pages = {"/": (graph_page, graph_main), "/plan": (plan_page, plan_main)}
                render = pages[path][1 if fragment else 0]
                page_html = await asyncio.to_thread(rendered, render, snapshot, poll_ms=self.poll_ms)
                return 200, page_html.encode(), html, etag
            if path == "/api/state":
                snapshot = await asyncio.to_thread(self.source.current)
                state = {"takenAt": snapshot.taken_at, "changedAt": snapshot.changed_at,
                         "problem": snapshot.problem, "commit": snapshot.commit,
                         "counts": snapshot.counts(), "nodes": [node.to_json() for node in snapshot.nodes]}
                return 200, redact(json.dumps(state)).encode(), "application/json", None
            rid = _resource_of(path)
            if rid is None:
                return None
            return await asyncio.to_thread(rendered, self._resource, rid, fragment, poll_ms=self.poll_ms)

    def _resource(self, rid: ResourceId, fragment: bool) -> tuple[int, bytes, str, None]:
        from reconciler.ui.page import esc, frame
        from reconciler.ui.resource_page import resource_main

        snapshot = self.source.current()
        key = (rid, snapshot.taken_at)  # its runs, curves and log are read once per snapshot read
        with self._resource_lock:
            main = self._resource_pages.get(key, "")
        if main == "":
            main = resource_main(snapshot, rid)
            with self._resource_lock:
                self._resource_pages[key] = main
                while len(self._resource_pages) > RESOURCE_PAGES_KEPT:
                    self._resource_pages.popitem(last=False)
        status = 200
        if main is None:
            known = "" if snapshot.nodes else " (nothing could be read: see the graph page)"
            main = f'<h1>{esc(rid)}</h1><p class="problem">{esc(rid)} is not in this project{esc(known)}.</p>'
            status = 404
        return status, (main if fragment else frame(str(rid), main, active="")).encode(), \
            "text/html; charset=utf-8", None

    # -- the token ---------------------------------------------------------------------------

    def _authorise(self, headers: dict[bytes, bytes], query: dict[str, list[str]]) -> str | None:
        """None when the request may read; else why not, in one line."""
        if self.token is None:
            return (f"this dashboard listens beyond loopback and no token is set: set {TOKEN_ENV} "
                    "and open /?token=<it>")
        if "token" in query:  # even when authorised otherwise: the answer drops it from the URL
            return "login"
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization.lower().startswith("bearer ") and \
                hmac.compare_digest(authorization[7:].strip().encode(), self.token.encode()):
            return None
        cookie = _cookies(headers.get(b"cookie", b"")).get(COOKIE)
        if cookie is not None and self._cookie is not None and \
                hmac.compare_digest(cookie.encode(), self._cookie.encode()):
            return None
        return (f"a token is required: send Authorization: Bearer <token>, or open /?token=<token> once "
                f"(the token is {TOKEN_ENV} where the dashboard runs)")

    async def _refuse_or_login(self, scope: Scope, send: Send, refused: str,
                               query: dict[str, list[str]]) -> None:
        given = query.get("token", [""])[0]
        if refused == "login" and self.token and hmac.compare_digest(given.encode(), self.token.encode()):
            rest = {key: values for key, values in query.items() if key != "token"}
            path = scope["path"]
            if not path.startswith("/") or path.startswith("//") or "\\" in path:
                path = "/"  # `//host` would send the browser to another site
            target = quote(path) + ("?" + urlencode(rest, doseq=True) if rest else "")
            cookie = f"{COOKIE}={self._cookie}; Path=/; HttpOnly; SameSite=Strict"
            return await _answer(send, 303, b"", "text/plain; charset=utf-8",
                                 extra=[(b"location", target.encode()), (b"set-cookie", cookie.encode())])
        why = refused if refused != "login" else "that token is not the dashboard's"
        return await self._refuse(scope, send, 401, why, [(b"www-authenticate", b'Bearer realm="tuneops"')])

    async def _refuse(self, scope: Scope, send: Send, status: int, why: str,
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer why, and say so in one line of the log (the peer's path escaped)."""
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else "an unknown client"
        self.refused(f"{status} to {scope['method']} {shown(scope['path'])} from {where}: {why}")
        await _text(send, status, why + "\n", extra)


def _resource_of(path: str) -> ResourceId | None:
    """`/resources/<Kind>/<name>` -> the resource; the server has percent-decoded the path once,
    and a second decoding would let `%252F` name something the link never did."""
    parts = path.split("/")
    if len(parts) != 4 or parts[1] != "resources":
        return None
    kind, name = parts[2], parts[3]
    return ResourceId(kind, name) if kind in KINDS and name and len(name) <= 300 else None


def _host_name(host: bytes) -> str:
    """The name of a Host header ("localhost:8765" -> "localhost"); "" for one that is not a
    name with an optional numeric port, which no loopback check accepts."""
    text = host.decode("latin-1").strip().lower()
    found = re.fullmatch(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::\d{1,5})?", text)
    return found.group(1).strip("[]") if found else ""


def _cookies(header: bytes) -> dict[str, str]:
    found = {}
    for part in header.decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found[name] = value
    return found


async def _text(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _answer(send, status, text.encode(), "text/plain; charset=utf-8", extra=extra)


async def _answer(send: Send, status: int, body: bytes, content_type: str, *, head: bool = False,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               *SECURITY_HEADERS]
    for name, value in extra or ():
        headers = [(n, v) for n, v in headers if n != name] + [(name, value)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
