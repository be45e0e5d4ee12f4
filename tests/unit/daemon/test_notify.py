"""What the daemon tells people after an apply, read from the plans before and after it."""

from __future__ import annotations

import json

from reconciler.daemon.notify import Notification, Notifier, events_after_apply
from tests.support.http_support import Receiver


def deployment(action: str, reason: str = "", version: str | None = None,
               blocked_by: dict | None = None) -> dict:
    return {
        "kind": "Deployment",
        "name": "bot",
        "action": action,
        "reason": reason,
        "serve": {"fine_tune": "sft", "model_fingerprint": "f" * 64, "model_version": version},
        "blocked_by": blocked_by,
    }


def gate(value: float = 0.21) -> dict:
    """A `blocked_by` as the JSON plan writes it for a failed gate."""
    return {
        "kind": "gate", "model": "m/5", "model_version": "m/5", "keeps_serving": "m/4",
        "evaluations": [{"evaluation": "sft-quality", "summary": f"gate exact_match {value} < 0.5",
                         "failures": [{"metric": "exact_match", "check": "min", "value": value,
                                       "operator": ">=", "threshold": 0.5, "baseline": None}]}],
    }


def test_a_deployment_that_converged_is_a_new_deployment():
    before = {"actions": [deployment("update", "switch to m/4", "m/4")]}
    after = {"actions": [deployment("noop", "serving m/4", "m/4")]}
    assert events_after_apply(before, after) == [("deployed", "Deployment/bot", "serving m/4", "m/4")]
    assert events_after_apply(after, after) == []  # nothing changed: nothing to say


def test_a_gate_failure_is_said_once():
    reason = "m/5 did not pass sft-quality: gate exact_match 0.21 < 0.5; m/4 keeps serving"
    before = {"actions": [deployment("rebuild", "upstream changed")]}
    after = {"actions": [deployment("blocked", reason, "m/5", gate())]}
    assert events_after_apply(before, after) == [("gate_failed", "Deployment/bot", reason, "m/5")]
    assert events_after_apply(after, after) == []
    rescored = {"actions": [deployment("blocked", reason, "m/5", gate(0.3))]}
    assert [event for event, *_ in events_after_apply(after, rescored)] == ["gate_failed"]  # a new verdict


def test_a_gate_failure_is_read_from_the_record_not_the_wording():
    reworded = "m/5 was held back by sft-quality (exact_match 0.21, needs 0.5)"
    before = {"actions": [deployment("rebuild", "upstream changed")]}
    after = {"actions": [deployment("blocked", reworded, "m/5", gate())]}
    assert events_after_apply(before, after) == [("gate_failed", "Deployment/bot", reworded, "m/5")]
    # The same gate block under other words is not news; words alone are not a gate failure.
    again = {"actions": [deployment("blocked", "m/5 did not pass sft-quality", "m/5", gate())]}
    assert events_after_apply(after, again) == []
    upstream = {"kind": "upstream", "upstreams": [], "current_keeps_serving": True}
    waiting = {"actions": [deployment("blocked", "waiting for a run that did not pass", "m/5", upstream)]}
    assert events_after_apply(before, waiting) == []


def test_payloads_generic_and_slack_reach_the_webhook():
    hook = Receiver()
    try:
        event = Notification(
            "deployed",
            "https://git.example/ml/specs.git",
            "main",
            "a" * 40,
            "serving m/4",
            "Deployment/bot",
            "m/4",
        )
        Notifier(hook.url).send(event)
        Notifier(hook.url, "slack").send(event)
    finally:
        hook.close()
    assert hook.received[0] == {
        "source": "tuneops",
        "event": "deployed",
        "repo": "https://git.example/ml/specs.git",
        "branch": "main",
        "commit": "a" * 40,
        "message": "serving m/4",
        "resource": "Deployment/bot",
        "model_version": "m/4",
    }
    assert hook.received[1] == {
        "text": ":rocket: tuneops `Deployment/bot`: serving m/4 (main at `aaaaaaaaaaaa`)"
    }


def test_an_unreachable_webhook_is_a_note_not_a_failure():
    said: list[str] = []
    Notifier("http://127.0.0.1:9/hook", say=said.append).send(
        Notification("reconcile_failed", "repo", "main", "b" * 40, "apply exited 1")
    )
    assert said and said[0].startswith("note: could not notify (reconcile_failed):")


def test_a_failure_that_quotes_a_url_with_a_token_is_sent_masked():
    hook = Receiver()
    try:
        Notifier(hook.url).send(Notification(
            "reconcile_failed", "https://git.example/ml/specs.git", "main", "a" * 40,
            "git fetch of https://oauth2:glpat-notify123@git.example/ml/specs.git failed", None, None))
    finally:
        hook.close()
    assert "glpat-notify123" not in json.dumps(hook.received) and "oauth2:***@" in hook.received[0]["message"]
