"""The daemon's HTTP endpoints (`--listen`), served as if the network were hostile.

The daemon listens where anyone may connect (a Service, often an Ingress for GitHub), and its
webhook accepts bodies from the Internet, so a client that lies or stalls must cost it little and
never stop its probes. uvicorn's h11 parser refuses malformed requests (a negative or non-numeric
Content-Length, headers over MAX_HEADER_BYTES) before the application sees them; on top of it a
connection must send its request within REQUEST_TIMEOUT or be closed, at most MAX_CONNECTIONS
are held (MAX_PER_ADDRESS from one address, so one client cannot starve the kubelet's probes),
and a webhook body is hashed as it arrives, never kept, and refused unread (413) above the cap
GitHub itself keeps to. Every refusal is one line in the daemon's log, never a traceback.
uvicorn is imported when the server starts: the control plane's commands never load it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from reconciler.errors import TuneopsError
from reconciler.peer_text import shown

if TYPE_CHECKING:
    import asyncio

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
MAX_HEADER_BYTES = 16 * 1024  # request line and headers together
REQUEST_TIMEOUT = 10.0  # seconds a connection has to send a whole request (headers and body)
KEEP_ALIVE_TIMEOUT = 5.0  # seconds an idle connection is kept between requests
MAX_CONNECTIONS = 128
MAX_PER_ADDRESS = 32
RECENT_DELIVERIES = 1024  # accepted webhook deliveries remembered to recognise a replay
SIGNATURE = re.compile(rb"sha256=[0-9a-f]{64}")

Say = Callable[[str], None]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ListenError(TuneopsError, RuntimeError):
    """The address cannot be listened on (taken, not ours): one line for the user."""


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening before the loop starts: a port that is taken fails the start with
    the reason, rather than a server thread that dies quietly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(MAX_CONNECTIONS)
    except OSError as error:
        sock.close()
        why = (error.strerror or str(error)).lower()
        raise ListenError(f"cannot listen on {host}:{port}: {why}") from None
    return sock


class RefusalLog:
    """One line per refusal; past `burst` lines in `window` seconds the rest are counted and
    summed up in the next line, so a flood of bad requests cannot flood the log."""

    def __init__(self, say: Say, burst: int = 20, window: float = 10.0):
        self.say, self.burst, self.window = say, burst, window
        self._started, self._lines, self._held = 0.0, 0, 0
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._started > self.window:
                if self._held:
                    self.say(f"http: {self._held} more refusal(s) not shown")
                self._started, self._lines, self._held = now, 0, 0
            if self._lines >= self.burst:
                self._held += 1
                return
            self._lines += 1
        self.say(f"http: {line}")


class RecentDeliveries:
    """Webhook deliveries accepted lately, by GitHub's delivery id and by the body's signature,
    so that a replay of either is answered without waking the loop again. Bounded: the oldest
    are forgotten first (a replay older than that wakes the loop once, which is harmless)."""

    def __init__(self, size: int = RECENT_DELIVERIES):
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, *keys: str) -> bool:
        keys = tuple(key for key in keys if key)
        if any(key in self._seen for key in keys):
            return False
        for key in keys:
            self._seen[key] = None
        while len(self._seen) > 2 * self.size:  # two keys a delivery
            self._seen.popitem(last=False)
        return True


class Endpoints:
    """The ASGI application: /healthz, /readyz, /metrics and POST /hooks/git; every other GET
    goes to the dashboard (reconciler/ui), when one is given, which asks for its own token."""

    def __init__(self, *, ready: Callable[[], bool], metrics: Callable[[], tuple[bytes, str]],
                 wake: Callable[[], None], secret: bytes | None, say: Say, refused: RefusalLog,
                 dashboard: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None):
        self.ready, self.metrics, self.wake, self.secret = ready, metrics, wake, secret
        self.say, self.refused, self.dashboard = say, refused, dashboard
        self.deliveries = RecentDeliveries()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        # h11 bounds only a header block that arrives in pieces; one that comes in a single read
        # (up to asyncio's 256 KiB) is parsed whole, so its size is checked here too.
        if len(scope["raw_path"]) + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) \
                > MAX_HEADER_BYTES:
            return await self._refuse(scope, send, 431, f"request line and headers over "
                                      f"{MAX_HEADER_BYTES // 1024} KiB")
        routes = {"/healthz": "GET", "/readyz": "GET", "/metrics": "GET", "/hooks/git": "POST"}
        if path not in routes and self.dashboard is not None:  # it answers other methods 405 itself
            return await self.dashboard(scope, receive, send)
        if path not in routes:
            return await self._refuse(scope, send, 404, "not found")
        if method != routes[path]:
            return await self._refuse(scope, send, 405, f"{routes[path]} only", allow=routes[path])
        if path == "/healthz":
            return await _answer(send, 200, b"ok\n")
        if path == "/readyz":
            ready = self.ready()
            return await _answer(send, 200 if ready else 503, b"ready\n" if ready else b"not synced yet\n")
        if path == "/metrics":
            body, content_type = self.metrics()
            return await _answer(send, 200, body, content_type)
        return await self._hook(scope, receive, send)

    async def _hook(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GitHub's X-Hub-Signature-256 (HMAC-SHA256 of the body with the shared secret), checked
        on the body as it streams in; everything that can be refused unread is refused first."""
        headers = _headers(scope)
        if b"transfer-encoding" in headers:
            return await self._refuse(scope, send, 411, "a chunked body is not accepted: send Content-Length")
        length = headers.get(b"content-length")
        if length is None:
            return await self._refuse(scope, send, 411, "Content-Length is required")
        if not length.isdigit():
            return await self._refuse(scope, send, 400, f"bad Content-Length {shown(length)!r}")
        if int(length) > MAX_BODY_BYTES:
            return await self._refuse(scope, send, 413, f"a body of {int(length)} bytes is over the "
                                      f"{MAX_BODY_BYTES // 2**20} MiB limit")
        if not self.secret:
            return await self._refuse(scope, send, 401, "no webhook secret is configured "
                                      "(TUNEOPS_WEBHOOK_SECRET)")
        signature = headers.get(b"x-hub-signature-256")
        if signature is None or not SIGNATURE.fullmatch(signature):
            return await self._refuse(scope, send, 401, "bad or missing X-Hub-Signature-256")
        digest = hmac.new(self.secret, digestmod=hashlib.sha256)
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone, or closed by the request deadline (which said so)
            digest.update(message.get("body", b""))
            more = message.get("more_body", False)
        computed = digest.hexdigest()
        if not hmac.compare_digest(computed.encode(), signature.removeprefix(b"sha256=")):
            return await self._refuse(scope, send, 401, "bad or missing X-Hub-Signature-256", unread=False)
        delivery = shown(headers.get(b"x-github-delivery", b""), limit=64)
        name = f"delivery {delivery}" if delivery else "a delivery"
        if not self.deliveries.first_time(f"id:{delivery}" if delivery else "", f"body:{computed}"):
            self.say(f"webhook: {name} was accepted before (a replay): not reconciling again")
            return await _answer(send, 200, b"duplicate delivery: already accepted\n")
        self.say(f"webhook: {name} accepted: reconciling now")
        self.wake()
        return await _answer(send, 202, b"reconciling\n")

    async def _refuse(self, scope: Scope, send: Send, status: int, why: str, *, unread: bool = True,
                      allow: str | None = None) -> None:
        """Answer and log one line. A request whose body was not read is answered with
        `Connection: close`: the body is never read, the connection goes with it."""
        self.refused(f"{status} to {scope['method']} {shown(scope['path'])} from {_client(scope)}: {why}")
        extra = [(b"connection", b"close")] if unread and scope["method"] != "GET" else []
        if allow:
            extra.append((b"allow", allow.encode()))
        await _answer(send, status, f"{why}\n".encode(), headers=extra)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """Header name -> value; a header sent twice with different values counts as absent-and-bad:
    the value kept is the empty string, which no check accepts."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found[name] = value if found.get(name, value) == value else b""
    return found


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


async def _answer(send: Send, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _guarded_protocol(refused: RefusalLog) -> type:
    """uvicorn's h11 protocol with what it leaves to a proxy: a deadline for each request (it
    times out only idle keep-alive connections), a bound on connections, and refusals of
    malformed requests that say why, in one line."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ReasonKeepingConnection(h11.Connection):
        """h11's connection, keeping why it refused the peer's bytes (uvicorn drops the reason)."""

        refusal: h11.RemoteProtocolError | None = None

        def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:  # h11's own signature
            try:
                return super().next_event()
            except h11.RemoteProtocolError as error:
                self.refusal = error
                raise

    class GuardedProtocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = ReasonKeepingConnection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
            self._deadline: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            address = self.client[0] if self.client else None
            same = sum(1 for other in self.connections if other.client and other.client[0] == address)
            if len(self.connections) > MAX_CONNECTIONS or same > MAX_PER_ADDRESS:
                refused(f"503 to {self._peer()}: too many connections ({len(self.connections) - 1} open, "
                        f"{same - 1} from this address; at most {MAX_CONNECTIONS}, "
                        f"{MAX_PER_ADDRESS} from one)")
                self._close_with(503, "too many connections")
                return
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            error = self.conn.refusal
            status = error.error_status_hint if error is not None else 400
            why = shown(str(error), limit=160) if error is not None and str(error) else msg
            refused(f"{status} to {self._peer()}: {why}")
            self._close_with(status, why)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                return  # the request has arrived; the answer is on its way
            started = self.conn.their_state is h11.SEND_BODY or bool(self.conn.trailing_data[0])
            what = "no whole request" if started else "nothing"
            refused(f"closed the connection from {self._peer()}: {what} within {REQUEST_TIMEOUT:g}s")
            self.transport.close()

        def _close_with(self, status: int, why: str) -> None:
            body = f"{why}\n".encode()
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            self.transport.write(f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
            self.transport.close()

        def _peer(self) -> str:
            return f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"

    return GuardedProtocol


class _OneLine(logging.Handler):
    """uvicorn's own messages (its errors included) as one line each, without a traceback."""

    def __init__(self, say: Say):
        super().__init__(logging.WARNING)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message == "Invalid HTTP request received.":
            return  # the protocol has said why, with the client
        if message.startswith("No supported WebSocket library"):
            return  # advice to install what the daemon does not need: it serves no WebSocket
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message}: {type(error).__name__}: {error}"
        self.say(f"http: {shown(message, limit=300)}")


class HttpServer:
    """uvicorn on a thread of its own, on a socket bound by the caller's thread."""

    def __init__(self, address: tuple[str, int], app: Endpoints, say: Say, refused: RefusalLog):
        self.sock = listening_socket(*address)
        self.app, self.say, self.refused = app, say, refused
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn

        errors = logging.getLogger("uvicorn.error")
        errors.handlers, errors.propagate = [_OneLine(self.say)], False
        config = uvicorn.Config(
            self.app, http=_guarded_protocol(self.refused), loop="asyncio", lifespan="off", ws="none",
            interface="asgi3", log_config=None, log_level="warning", access_log=False, server_header=False,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=int(KEEP_ALIVE_TIMEOUT),
            timeout_graceful_shutdown=3, backlog=MAX_CONNECTIONS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        daemon=True, name="tuneops-http")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()
