"""A small client of an OpenAI-compatible chat API for the LLM judge: the project's own server,
vLLM or a hosted API.

Standard library only (urllib). A connection that fails, a 429 and a 5xx are retried a bounded
number of times with exponential backoff, honouring Retry-After; anything else the endpoint
refuses (a prompt over its context, a wrong key, an unknown model) is one line naming the
endpoint and what it said. The API key travels in the Authorization header only: every message
passes through `redaction.redact`, with the key itself among the values it masks.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler import redaction
from reconciler.errors import PermanentError

RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0  # a Retry-After longer than this is waited this long, then tried again


class JudgeError(PermanentError, ValueError):
    """The judge's endpoint cannot be used: refused, unreachable after retries, or it rejected a
    request. One line, the URL without credentials and the key masked."""


@dataclass
class JudgeClient:
    """POSTs chat completions to `<base_url>/chat/completions`; `base_url` is what OpenAI clients
    take (e.g. https://api.openai.com/v1)."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = 120.0
    attempts: int = 5
    backoff_s: float = 1.0  # doubled after each failed attempt, up to 30 s
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    retries_made: int = 0  # over the client's life: reported in results.json

    def __post_init__(self) -> None:
        # The spec refuses user-info in a judge's URL (the key goes in apiKeySecret); never send it.
        self.base_url = redaction.without_credentials(self.base_url).rstrip("/")
        if self.api_key:
            redaction.remember_secret(self.api_key)

    @property
    def shown_url(self) -> str:
        """The URL as messages show it: no user-info, secret query parameters masked."""
        return redaction.redact(redaction.without_credentials(self.base_url))

    def first_model(self) -> str:
        """The first model `<base_url>/models` lists: the judge model when the spec names none."""
        listed = self._request("GET", "/models", None)
        models = listed.get("data") if isinstance(listed, dict) else None
        if not models or not isinstance(models[0], dict) or not models[0].get("id"):
            raise JudgeError(f"the judge at {self.shown_url} lists no model at /models: name one in "
                             "judge.model")
        return str(models[0]["id"])

    def complete(self, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The reply's text, decoded greedily (temperature 0) so the same question gets the same
        verdict where the endpoint is deterministic."""
        body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
        answer = self._request("POST", "/chat/completions", body)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"the judge at {self.shown_url} answered without choices[0].message."
                             "content: not an OpenAI-compatible chat completion") from None
        return content if isinstance(content, str) else ""

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.base_url + path, data=data, headers=headers,
                                             method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                    return _json_of(_bounded(response, ANSWER_LIMIT, self.shown_url), self.shown_url)
            except urllib.error.HTTPError as error:
                detail = _error_detail(error)
                if error.code not in RETRIED_STATUSES or attempt == self.attempts:
                    raise JudgeError(self._refused(error.code, detail, attempt)) from None
                wait = _retry_after(error.headers.get("Retry-After")) or delay
            except (urllib.error.URLError, OSError) as error:  # refused, reset, timed out, no DNS
                reason = getattr(error, "reason", error)
                if attempt == self.attempts:
                    raise JudgeError(redaction.redact(
                        f"the judge at {self.shown_url} cannot be reached ({reason}) after "
                        f"{attempt} attempts")) from None
                wait = delay
            self.retries_made += 1
            self.sleep(min(wait, MAX_RETRY_AFTER_S))
            delay = min(delay * 2, 30.0) * (1 + random.random() * 0.1)  # noqa: S311 - jitter, not secrecy
        raise AssertionError("unreachable")  # pragma: no cover

    def _refused(self, status: int, detail: str, attempts: int) -> str:
        after = f" after {attempts} attempts" if attempts > 1 else ""
        hint = ""
        if status == 401 or status == 403:
            hint = ": check the key judge.endpoint.apiKeySecret names"
        elif status == 400 and any(word in detail.lower() for word in ("context", "too long", "maximum")):
            hint = ": the prompt is over the judge's context (shorten the rubric or generation.maxNewTokens)"
        return redaction.redact(f"the judge at {self.shown_url} refused the request (HTTP {status}"
                                f"{': ' + detail if detail else ''}){after}{hint}")


ANSWER_LIMIT = 4 * 1024 * 1024  # a chat completion is kilobytes; an endpoint that answers without end
ERROR_DETAIL_LIMIT = 64 * 1024  # of an error body: only its first line is shown


def _bounded(response: Any, limit: int, url: str) -> bytes:
    """At most `limit` bytes of an answer: a peer that sends without end cannot fill memory."""
    body = response.read(limit + 1)
    if len(body) > limit:
        raise JudgeError(f"the judge at {url} answered more than {limit // (1024 * 1024)} MiB")
    return body


def _json_of(raw: bytes, url: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise JudgeError(f"the judge at {url} answered something other than JSON") from None


def _error_detail(error: urllib.error.HTTPError) -> str:
    """The endpoint's own message ({"error": {"message": ...}} in OpenAI's format), one line."""
    try:
        raw = error.read(ERROR_DETAIL_LIMIT).decode("utf-8", "replace")
    except OSError:
        return ""
    try:
        parsed = json.loads(raw)
        message = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        if isinstance(message, dict):
            message = message.get("message") or message.get("detail") or json.dumps(message)
        raw = str(message)
    except ValueError:
        pass
    return " ".join(raw.split())[:300]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (an HTTP date is treated as "a while": the backoff decides)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
