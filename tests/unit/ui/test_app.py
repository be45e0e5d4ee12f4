"""The dashboard's HTTP application, called as an ASGI app: read-only, a token beyond loopback,
loopback names only on loopback, no secret rendered, hostile text escaped."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest

from reconciler import redaction
from reconciler.specs.base import ResourceId
from reconciler.ui.app import COOKIE, Dashboard, is_loopback
from reconciler.ui.snapshot import Node, Snapshot

TOKEN = "s3cret-dashboard-token-0123"
HOSTILE = '<script>alert("x")</script>'


def node(kind: str, name: str, phase: str = "Ready", *, deps: tuple[ResourceId, ...] = (), **fields) -> Node:
    values = {"progress": None, "progress_text": "", "model_version": "", "detail": "", "action": "noop",
              "reason": "", "fingerprint": "f" * 64, "file": None, "url": ""}
    values.update(fields)
    return Node(ResourceId(kind, name), phase, depends_on=deps, **values)


DATA = node("Dataset", "fruit", detail="sha256:abc")
TUNE = node("FineTune", "sft", "Running", deps=(DATA.resource,), progress=0.4,
            progress_text="40% (step 12), ETA 1m30s", action="wait", reason=HOSTILE)
BOT = node("Deployment", "bot", "Blocked", deps=(TUNE.resource,),
           reason="blocked: https://user:hunter2hunter2@mlflow.example.com/ is down")


class Fixed:
    """A snapshot source that always has the same moment: the app asks only for `current()`."""

    def __init__(self, *nodes: Node, problem: str = ""):
        self.snapshot = Snapshot(tuple(nodes), time.time(), problem=problem, changed_at=time.time())

    def current(self) -> Snapshot:
        return self.snapshot


def call(app: Dashboard, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
         host: str = "127.0.0.1:8765") -> tuple[int, dict[str, str], str]:
    path, _, query = path.partition("?")
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(),
             "headers": [(b"host", host.encode())] + [(k.lower().encode(), v.encode())
                                                      for k, v in (headers or {}).items()]}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, body = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    raw = body["body"]
    if headers.get("content-encoding") == "gzip":
        raw = gzip.decompress(raw)
    return start["status"], headers, raw.decode()


def local(*nodes: Node) -> Dashboard:
    return Dashboard(Fixed(*(nodes or (DATA, TUNE, BOT))), loopback=True, token=None)


def remote(token: str | None = TOKEN) -> Dashboard:
    return Dashboard(Fixed(DATA, TUNE, BOT), loopback=False, token=token)


def test_the_graph_page_shows_every_resource_with_its_phase_and_links_to_its_page():
    status, headers, body = call(local(), "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for shown, phase in ((DATA, "Ready"), (TUNE, "Running"), (BOT, "Blocked")):
        assert f'data-resource="{shown.resource}" data-phase="{phase}"' in body
    assert 'href="/resources/FineTune/sft"' in body
    assert 'data-progress="0.4000"' in body
    assert '<script src="/static/ui.js"></script>' in body and "<script>" not in body
    assert "default-src 'none'" in headers["content-security-policy"]


def test_hostile_text_is_escaped_and_a_credential_is_never_rendered():
    redaction.remember_secret("hunter2hunter2")
    for path in ("/", "/resources/FineTune/sft", "/resources/Deployment/bot", "/api/state"):
        status, _, body = call(local(), path)
        assert status == 200, path
        assert HOSTILE not in body, path
        assert "hunter2" not in body, path
    assert "&lt;script&gt;" in call(local(), "/resources/FineTune/sft")[2]


def test_only_get_and_head_are_answered():
    status, headers, _ = call(local(), "/", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = call(local(), "/", method="HEAD")
    assert status == 200 and body == "" and int(headers["content-length"]) > 0


def test_unknown_pages_and_resources_are_404():
    assert call(local(), "/nope")[0] == 404
    assert call(local(), "/resources/FineTune/missing")[0] == 404
    assert call(local(), "/resources/Nonsense/sft")[0] == 404
    assert call(local(), "/resources/FineTune/sft/extra")[0] == 404
    assert call(local(), "/resources/FineTune/%73ft")[0] == 404  # the server decodes once, not twice


def test_on_loopback_a_host_header_of_another_name_is_refused():
    for host in ("localhost:8765", "[::1]:8765", "127.0.0.2:8790", "LOCALHOST", "127.0.0.1"):
        assert call(local(), "/", host=host)[0] == 200, host
    for host in ("attacker.example:8765", "127.0.0.1:8771@evil.example", "127.0.0.1.evil.example",
                 "localhost:http", ""):
        status, _, body = call(local(), "/", host=host)
        assert status == 403 and "DNS rebinding" in body, host


def test_beyond_loopback_every_request_needs_the_token():
    app = remote()
    for path in ("/", "/plan", "/api/state", "/static/ui.js", "/resources/FineTune/sft"):
        status, headers, body = call(app, path, host="dash.example:8765")
        assert status == 401, path
        assert "Bearer" in headers["www-authenticate"] and TOKEN not in body
    assert call(app, "/", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert call(app, "/", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_opening_the_token_link_once_sets_a_cookie_that_holds_no_token():
    app = remote()
    status, headers, _ = call(app, f"/resources/FineTune/sft?token={TOKEN}&fragment=main")
    assert status == 303 and headers["location"] == "/resources/FineTune/sft?fragment=main"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    value = cookie.split(";")[0]
    assert value.startswith(f"{COOKIE}=")
    assert call(app, "/", headers={"Cookie": value})[0] == 200
    assert call(app, "/", headers={"Cookie": f"{COOKIE}=forged"})[0] == 401
    assert call(app, "/?token=wrong")[0] == 401


def test_without_a_token_set_the_dashboard_beyond_loopback_says_how_to_set_one():
    status, _, body = call(remote(token=None), "/")
    assert status == 401 and "TUNEOPS_UI_TOKEN" in body


def test_the_live_fragment_is_the_main_region_alone_and_unchanged_answers_are_304():
    app = local()
    status, headers, body = call(app, "/?fragment=main")
    assert status == 200 and not body.startswith("<!doctype") and 'id="graph"' in body
    assert call(app, "/?fragment=main", headers={"If-None-Match": headers["etag"]})[0] == 304


def test_the_state_is_one_json_document():
    status, headers, body = call(local(), "/api/state")
    state = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert {n["id"]: n["phase"] for n in state["nodes"]} == {
        "Dataset/fruit": "Ready", "FineTune/sft": "Running", "Deployment/bot": "Blocked"}
    assert state["counts"] == {"Ready": 1, "Running": 1, "Blocked": 1}


def test_a_problem_reading_the_project_is_shown_not_raised():
    app = Dashboard(Fixed(problem="the specs do not validate (1 error(s)):\nx.yaml:3:1 error spec"),
                    loopback=True, token=None)
    status, _, body = call(app, "/")
    assert status == 200 and "x.yaml:3:1 error spec" in body and "no resources to show yet" in body


@pytest.mark.parametrize("host,expected", [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                           ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False),
                                           ("::", False), ("dash.example", False)])
def test_what_counts_as_loopback(host: str, expected: bool):
    assert is_loopback(host) is expected


def test_a_page_is_compressed_for_a_browser_that_accepts_gzip():
    plain = call(local(), "/")
    status, headers, body = call(local(), "/", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert status == 200 and headers["content-encoding"] == "gzip" and headers["vary"] == "accept-encoding"
    assert body == plain[2] and "content-encoding" not in plain[1]


def test_the_token_link_never_redirects_to_another_site():
    for path in ("//evil.example/x", "/\\evil.example"):
        status, headers, _ = call(remote(), f"{path}?token={TOKEN}")
        assert status == 303 and headers["location"] == "/", path


def test_a_token_in_the_link_is_always_taken_out_of_the_url():
    app = remote()
    status, headers, _ = call(app, f"/plan?token={TOKEN}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 303 and headers["location"] == "/plan"


def test_a_poll_interval_reaches_the_page():
    app = Dashboard(Fixed(DATA), loopback=True, token=None, poll_ms=30_000)
    assert 'data-refresh-ms="30000"' in call(app, "/")[2]


def test_a_short_token_is_refused():
    from reconciler.ui.app import token_problem

    assert "too short" in token_problem("short")
    assert token_problem(TOKEN) is None and token_problem(None) is None


def test_a_servers_url_is_a_link_only_when_it_is_a_web_address():
    served = node("Deployment", "web", url="http://127.0.0.1:8000")
    odd = node("Deployment", "odd", url="javascript:alert(1)")
    app = local(served, odd)
    assert '<a class="url" href="http://127.0.0.1:8000">' in call(app, "/resources/Deployment/web")[2]
    page = call(app, "/resources/Deployment/odd")[2]
    assert 'href="javascript' not in page and '<code class="url">javascript:alert(1)</code>' in page
