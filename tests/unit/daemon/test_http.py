"""The daemon endpoints' bookkeeping, on its own: replays recognised within a bounded memory, and
refusals logged one line each up to a burst. The endpoints themselves are tested over real
sockets in tests/e2e/test_daemon_bad_input.py."""

from __future__ import annotations

from reconciler.daemon.http import RecentDeliveries, RefusalLog, shown


def test_a_delivery_is_a_replay_by_its_id_or_its_body_and_the_oldest_are_forgotten():
    recent = RecentDeliveries(size=2)
    assert recent.first_time("id:a", "body:1")
    assert not recent.first_time("id:a", "body:2")  # the same delivery id
    assert not recent.first_time("id:b", "body:1")  # the same body under another id
    assert recent.first_time("", "body:3")  # no delivery id: the body alone
    assert recent.first_time("id:c", "body:4")
    assert recent.first_time("id:d", "body:5")
    assert recent.first_time("id:a", "body:1")  # forgotten: the oldest of 2 deliveries' keys


def test_refusals_past_a_burst_are_counted_not_logged():
    lines: list[str] = []
    log = RefusalLog(lines.append, burst=3, window=3600)
    for number in range(10):
        log(f"401 to client {number}")
    assert lines == ["http: 401 to client 0", "http: 401 to client 1", "http: 401 to client 2"]


def test_what_a_client_sends_is_one_escaped_line_in_the_log():
    assert shown("/admin\nFAKE: line\r") == "/admin\\nFAKE: line\\r"
    assert shown(b"sha256=\xe9") == "sha256=\\xe9"
    assert shown("a" * 500, limit=10) == "a" * 10 + "..."


def test_the_dashboard_answers_every_path_but_the_daemons_own():
    """GET / and other pages go to the dashboard, which refuses other methods itself (405);
    the probes, metrics and webhook keep their own answers."""
    import asyncio

    from reconciler.daemon.http import Endpoints, RefusalLog

    seen: list[tuple[str, str]] = []

    async def dashboard(scope, receive, send) -> None:
        seen.append((scope["method"], scope["path"]))
        await send({"type": "http.response.start", "status": 405 if scope["method"] != "GET" else 200,
                    "headers": []})
        await send({"type": "http.response.body", "body": b""})

    endpoints = Endpoints(ready=lambda: True, metrics=lambda: (b"", "text/plain"), wake=lambda: None,
                          secret=None, say=lambda line: None, refused=RefusalLog(lambda line: None),
                          dashboard=dashboard)

    def status(method: str, path: str) -> int:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "headers": [],
                 "client": ("127.0.0.1", 1)}
        asyncio.run(endpoints(scope, receive, send))
        return sent[0]["status"]

    assert status("GET", "/") == 200 and status("POST", "/") == 405 and status("GET", "/plan") == 200
    assert status("GET", "/healthz") == 200 and status("POST", "/healthz") == 405
    assert status("POST", "/hooks/git") == 411  # the webhook's own refusal, not the dashboard's
    assert seen == [("GET", "/"), ("POST", "/"), ("GET", "/plan")]
