"""What the reconcile daemon tells people, and how: a webhook in generic JSON or Slack's format.

Events come from the plans before and after an apply (a Deployment now serving a new model
version; a Deployment held back because its model failed a gate, read from the action's
structured `blocked_by`, never from its wording) and from the daemon itself (a
commit that does not validate, a tick that failed). Payloads carry names, commits, model versions
and one-line reasons, which the plan already keeps free of secrets; the remote URL is shown
without user info. Delivery never stops the daemon.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from reconciler.redaction import redact

Event = Literal["deployed", "gate_failed", "invalid_commit", "reconcile_failed"]
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Notification:
    event: Event
    repo: str
    branch: str
    commit: str
    message: str
    resource: str | None = None
    model_version: str | None = None

    def generic(self) -> dict[str, Any]:
        return {"source": "tuneops", **{k: v for k, v in asdict(self).items() if v is not None}}

    def slack(self) -> dict[str, Any]:
        icon = {
            "deployed": ":rocket:",
            "gate_failed": ":no_entry:",
            "invalid_commit": ":warning:",
            "reconcile_failed": ":x:",
        }[self.event]
        what = f" `{self.resource}`" if self.resource else ""
        return {"text": f"{icon} tuneops{what}: {self.message} ({self.branch} at `{self.commit[:12]}`)"}


def events_after_apply(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[tuple[Event, str, str, str | None]]:
    """(event, resource, message, model version) from the plan JSON before and after an apply."""
    planned = {(a["kind"], a["name"]): a for a in before.get("actions", [])}
    found: list[tuple[Event, str, str, str | None]] = []
    for action in after.get("actions", []):
        if action["kind"] != "Deployment":
            continue
        resource = f"Deployment/{action['name']}"
        earlier = planned.get((action["kind"], action["name"]))
        version = (action.get("serve") or {}).get("model_version")
        if action["action"] == "noop" and earlier is not None and earlier["action"] != "noop":
            found.append(("deployed", resource, f"serving {version or 'a new model version'}", version))
        elif action["action"] == "blocked" and _gate_block(action) is not None and (
            earlier is None
            or earlier["action"] != "blocked"
            or _gate_block(earlier) != _gate_block(action)
        ):
            found.append(("gate_failed", resource, action.get("reason", ""), version))
    return found


def _gate_block(action: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The plan's record of a failed gate on this action (`blocked_by` of kind "gate"), or None."""
    blocked = action.get("blocked_by")
    return blocked if isinstance(blocked, Mapping) and blocked.get("kind") == "gate" else None


class Notifier:
    def __init__(
        self, url: str | None, style: Literal["json", "slack"] = "json", say: Callable[[str], None] = print
    ):
        self.url, self.style, self.say = url, style, say
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.sent.append(notification)
        if not self.url:
            return
        body = notification.slack() if self.style == "slack" else notification.generic()
        request = urllib.request.Request(
            self.url,
            data=redact(json.dumps(body)).encode(),  # an error's text may quote a URL with a token
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "tuneops"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S):
                pass
        except (OSError, urllib.error.URLError) as error:
            self.say(f"note: could not notify ({notification.event}): {error}")
