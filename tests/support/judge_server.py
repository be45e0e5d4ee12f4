"""A scripted OpenAI-compatible chat server on 127.0.0.1, standing in for the hosted LLM an
Evaluation's judge calls (no network in tests). Only the replies are scripted, by the test; the
judge client, its retries and the parsing of the replies under test are tuneops' real code.

It serves GET /v1/models and POST /v1/chat/completions in OpenAI's format, keeps every request
(headers and body) for assertions, can fail the first requests with scripted statuses (and
Retry-After), and can demand an API key as a bearer token.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[str, str], str]  # (system message, user message) -> the judge's reply text
MODEL = "scripted-judge"


def answers_of(user: str) -> tuple[str, str] | None:
    """Answers A and B of a pairwise question, as judge_replies writes it."""
    found = re.search(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\n\nWhich answer", user, re.S)
    return (found.group(1), found.group(2)) if found else None


def answer_of(user: str) -> str:
    found = re.search(r"\[Answer\]\n(.*)\n\nGrade the answer", user, re.S)
    return found.group(1) if found else ""


def prefers_longer(system: str, user: str) -> str:
    """A judge that likes longer answers: pairwise, the longer wins; score, 1 + length // 4."""
    pair = answers_of(user)
    if pair is None:
        return f"The answer is adequate.\nScore: {min(10, 1 + len(answer_of(user)) // 4)}"
    a, b = pair
    verdict = "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"
    return f"Comparing lengths.\n[[{verdict}]]"


def always(text: str) -> Reply:
    """A judge that gives the same reply to everything (e.g. "[[A]]": pure position bias)."""
    return lambda system, user: text


class ScriptedJudge:
    def __init__(self, reply: Reply = prefers_longer, *, failures: list[tuple[Any, ...]] | None = None,
                 api_key: str | None = None) -> None:
        """`failures`: (status, headers[, message]) answered to the first chat requests, in order."""
        self.reply, self.api_key = reply, api_key
        self.failures = list(failures or [])
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def _authorised(self) -> bool:
                if judge.api_key and self.headers.get("Authorization") != f"Bearer {judge.api_key}":
                    self._send(401, {"error": {"message": "Incorrect API key provided"}})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with judge._lock:
                    judge.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    failure = judge.failures.pop(0) if judge.failures else None
                if not self._authorised():
                    return
                if failure is not None:
                    message = failure[2] if len(failure) > 2 else f"scripted failure {failure[0]}"
                    self._send(failure[0], {"error": {"message": message}}, failure[1])
                    return
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                messages = body.get("messages") or []
                system = next((m["content"] for m in messages if m.get("role") == "system"), "")
                user = next((m["content"] for m in messages if m.get("role") == "user"), "")
                text = judge.reply(system, user)
                self._send(200, {"id": "chatcmpl-scripted", "object": "chat.completion", "model": MODEL,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/v1/chat/completions"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ScriptedJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
