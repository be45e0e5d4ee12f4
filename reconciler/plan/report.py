"""Plan -> what people and machines read: terminal text, Markdown for pull requests, JSON.

Unchanged resources are counted, not listed; changed fields show before and after, nothing
else. The JSON form is versioned (`format_version`) and documented in docs/cli.md. Times are
data in UTC in the plan; text and Markdown, read by people, show them in local time.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping
from typing import Any

import click

from reconciler.config import PROJECT_FILE
from reconciler.plan.blocked import (
    AttemptsBlock,
    BackendBlock,
    BlockedBy,
    BudgetBlock,
    FailedEvaluation,
    GateBlock,
    NoTrialPassed,
    UpstreamBlock,
    UpstreamNotReady,
)
from reconciler.plan.gates import GateResult
from reconciler.plan.plan import ACTION_ORDER, FORMAT_VERSION, Action, Plan, PlannedAction, utc_iso
from reconciler.plan.sweeps import sweep_json
from reconciler.sizing.estimates import FineTuneEstimate
from reconciler.sizing.report import dollars_text, estimate_json, plan_line
from reconciler.specs.base import ResourceId, team_of

Estimates = Mapping[ResourceId, FineTuneEstimate]

SYMBOLS = {
    Action.CREATE: "+", Action.REBUILD: "-/+", Action.UPDATE: "~", Action.DELETE: "-",
    Action.WAIT: "...", Action.RETRY: "+", Action.BLOCKED: "!", Action.SUSPENDED: "||", Action.NOOP: "=",
}
COLORS = {
    Action.CREATE: "green", Action.REBUILD: "yellow", Action.UPDATE: "yellow", Action.DELETE: "red",
    Action.WAIT: "cyan", Action.RETRY: "yellow", Action.BLOCKED: "red", Action.SUSPENDED: "blue",
    Action.NOOP: None,
}
MAX_VALUE_CHARS = 120
COMPARED = frozenset({Action.REBUILD, Action.UPDATE})
"""Actions whose changes are a diff: the report names the version in use they are diffed against."""
# Why tuneops.yaml changes are shown apart: a pull request can change what the machines allow.
SETTINGS_NOTE = "review them: they set policy, storage, and where credentials come from"


def _value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 3] + "..."


def local_clock(timestamp: float) -> str:
    """Unix seconds in this machine's time zone, as people read them: "2026-12-06 03:05:34"."""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def reason_for_people(planned: PlannedAction) -> str:
    """The action's reason with the time it names (UTC in the plan) in local time."""
    if planned.reason_time is None:
        return planned.reason
    return planned.reason.replace(utc_iso(planned.reason_time), local_clock(planned.reason_time), 1)


def summary_line(plan: Plan) -> str:
    counts = plan.counts()
    if not plan.has_changes:
        parts = [f"{counts[a]} {a}" for a in (Action.WAIT, Action.BLOCKED, Action.SUSPENDED) if counts[a]]
        return "No changes." + (f" ({', '.join(parts)})" if parts else "")
    parts = [f"{counts[str(a)]} {a}" for a in ACTION_ORDER if counts[str(a)] and a != Action.NOOP]
    return f"Plan: {', '.join(parts)}; {counts['noop']} unchanged."


def _shown(plan: Plan) -> list[PlannedAction]:
    return [a for a in plan.actions if a.action != Action.NOOP]


def total_gpu_hours(estimates: Estimates | None) -> tuple[float, int]:
    """(GPU-hours summed over the fine-tunes whose figure is known, how many are unknown)."""
    hours = [found.gpu_hours for found in (estimates or {}).values() if found.gpus]
    return sum(h for h in hours if h is not None), sum(1 for h in hours if h is None)


def total_dollars(estimates: Estimates | None) -> tuple[float, float | None, int]:
    """(on demand, spot, how many fine-tunes with GPU-hours have no price) over the estimates;
    spot is None unless every priced fine-tune has a spot price."""
    estimated = [found for found in (estimates or {}).values() if found.gpus and found.gpu_hours is not None]
    priced = [found.dollars for found in estimated if found.dollars is not None]
    spots = [each[1] for each in priced if each[1] is not None]
    spot = sum(spots) if priced and len(spots) == len(priced) else None
    return sum(each[0] for each in priced), spot, len(estimated) - len(priced)


POLICY_STOP = "The plan violates a policy: apply will refuse it until it is fixed or approved."


def _gpu_hours_line(estimates: Estimates | None) -> str:
    known, unknown = total_gpu_hours(estimates)
    if not estimates or (not known and not unknown):
        return ""
    missing = f"{unknown} fine-tune{'s' if unknown > 1 else ''}"
    if not known:
        return f"Training: GPU-hours not estimated for {missing} (`tuneops estimate` says why)."
    more = f", and {missing} not estimated" if unknown else ""
    on_demand, spot, unpriced = total_dollars(estimates)
    cost = ""
    if unpriced < sum(1 for found in estimates.values() if found.gpus and found.gpu_hours is not None):
        cost = f", {dollars_text(on_demand, spot)}"
        if unpriced:
            cost += f" ({unpriced} not priced)"
    return f"Training: at most {known:,.2f} GPU-hours{cost}{more}."


def plan_text(plan: Plan, header: str = "", color: bool = False, estimates: Estimates | None = None) -> str:
    def style(text: str, action: Action, bold: bool = False) -> str:
        return click.style(text, fg=COLORS[action], bold=bold) if color and COLORS[action] else text

    lines = [header, ""] if header else []
    if not plan.state_read:
        lines += ["State was not read (--offline): every resource is shown as if nothing were built.", ""]
    if plan.settings_changes:
        lines += [f"{PROJECT_FILE} changes ({SETTINGS_NOTE}):",
                  *(f"        {change.path}: {_value(change.before)} -> {_value(change.after)}"
                    for change in plan.settings_changes), ""]
    shown = _shown(plan)
    width = max((len(str(a.resource)) for a in shown), default=0)
    for planned in shown:
        label = f"{SYMBOLS[planned.action]:>3} {planned.action:<9}"
        line = f"  {style(label, planned.action, bold=True)} {str(planned.resource):<{width}}"
        if planned.reason:
            line += f"  {reason_for_people(planned)}"
        lines.append(line.rstrip())
        if planned.compared_with and planned.action in COMPARED:
            lines.append(f"        compared with {planned.compared_with}")
        for change in planned.changes:
            lines.append(f"        {change.path}: {_value(change.before)} -> {_value(change.after)}")
        if estimates and planned.resource in estimates:
            lines.append(f"        estimate: {plan_line(estimates[planned.resource])}")
        lines += _sweep_lines(planned)
    if shown:
        lines.append("")
    for root, reached in plan.impact.items():
        if reached:
            lines.append(f"{root} reaches: {', '.join(map(str, reached))}")
    if plan.impact and any(plan.impact.values()):
        lines.append("")
    for item in plan.unmanaged:
        lines.append(f"not in Git (kept; prune is off): {item}")
    if plan.unmanaged:
        lines.append("")
    lines += [*plan.warnings, ""] if plan.warnings else []
    lines += [*plan.policy_errors, ""] if plan.policy_errors else []
    lines.append(summary_line(plan))
    if _gpu_hours_line(estimates):
        lines.append(_gpu_hours_line(estimates))
    lines += [f"  {cost.line()}" for cost in _teams_shown(plan)]
    if plan.policy_errors:
        lines.append(POLICY_STOP)
    return "\n".join(lines)


def _teams_shown(plan: Plan) -> list[Any]:
    """The teams whose specs the plan changes (their owners review it), and any it takes over
    budget."""
    return [cost for cost in plan.teams if cost.changes or cost.over_budget]


COMMENT_LIMIT = 65_536  # GitHub refuses longer pull-request comments
MERMAID_MAX_NODES = 150  # past this a graph is unreadable, and GitHub stops rendering it


def plan_markdown(plan: Plan, header: str = "", estimates: Estimates | None = None,
                  limit: int = COMMENT_LIMIT) -> str:
    """For a pull-request comment: one summary line, a table of what changes, a Mermaid graph of
    the changed subgraph, details folded. Beyond `limit` characters the table is cut and the
    rest left to the JSON plan (`--format json`), which has no limit."""
    shown = _shown(plan)
    full = _markdown(plan, header, estimates, shown, rows=len(shown), extras=True)
    if len(full) <= limit:
        return full
    rows = len(shown)
    text = _markdown(plan, header, estimates, shown, rows=rows, extras=False)
    while len(text) > limit and rows > 0:
        rows = max(0, rows - max(1, (len(text) - limit) // 80))
        text = _markdown(plan, header, estimates, shown, rows=rows, extras=False)
    return text


def _markdown(plan: Plan, header: str, estimates: Estimates | None, shown: list[PlannedAction], *,
              rows: int, extras: bool) -> str:
    lines = [f"### tuneops plan{': ' + header if header else ''}", "", f"**{summary_line(plan)}**", ""]
    if not plan.state_read:
        lines += ["_State was not read (offline): every resource is shown as if nothing were built._", ""]
    if plan.settings_changes:
        lines += [f"**`{PROJECT_FILE}` changes** ({SETTINGS_NOTE}):",
                  "", *(f"- `{_cell(c.path)}`: `{_cell(_value(c.before))}` → `{_cell(_value(c.after))}`"
                        for c in plan.settings_changes), ""]
    if shown:
        lines += ["| Action | Resource | Why |", "| --- | --- | --- |"]
        for planned in shown[:rows]:
            reason = _cell(reason_for_people(planned)) or " "
            lines.append(f"| `{planned.action}` | `{planned.resource}` | {reason} |")
        lines.append("")
    if rows < len(shown):
        lines += [f"_{len(shown) - rows} more action(s) not listed: this comment would pass GitHub's "
                  f"{COMMENT_LIMIT:,}-character limit. The whole plan: `tuneops plan --format json`._", ""]
    elif not extras:
        lines += [f"_The changed fields, the graph and the downstream impact are left out to stay under "
                  f"GitHub's {COMMENT_LIMIT:,}-character limit: `tuneops plan --format json` has them._", ""]
    if extras:
        lines += mermaid_graph(plan, shown)
        for planned in shown:
            if not planned.changes:
                continue
            since = f" since {planned.compared_with}" if planned.compared_with else ""
            lines += [f"<details><summary><code>{planned.resource}</code>: "
                      f"{len(planned.changes)} field(s) changed{_cell(since)}</summary>", "", "```diff"]
            for change in planned.changes:
                lines += [f"- {change.path}: {_value(change.before)}",
                          f"+ {change.path}: {_value(change.after)}"]
            lines += ["```", "", "</details>", ""]
    if plan.policy_errors:
        lines += ["**Policy violations** (apply is refused until they are fixed or approved)", "",
                  *(f"- {_cell(error)}" for error in plan.policy_errors), ""]
    if plan.warnings:
        lines += ["**Warnings**", "", *(f"- {_cell(warning)}" for warning in plan.warnings), ""]
    if estimates:
        lines += ["**Training estimates**", "", "| Fine-tune | Estimate |", "| --- | --- |"]
        lines += [f"| `{rid}` | {_cell(plan_line(found))} |" for rid, found in estimates.items()]
        lines += ["", _gpu_hours_line(estimates), ""] if _gpu_hours_line(estimates) else [""]
    teams = _teams_shown(plan)
    if teams:
        lines += ["**Teams**", "", "| Team | Owners | This plan | Spent this month | Budget a month |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [_team_row(cost) for cost in teams]
        lines.append("")
    reached = [(root, targets) for root, targets in plan.impact.items() if targets]
    if reached and extras:
        lines += ["**Downstream impact**", ""]
        lines += [f"- `{root}` reaches {', '.join(f'`{t}`' for t in targets)}" for root, targets in reached]
        lines.append("")
    return "\n".join(lines)


def _team_row(cost: Any) -> str:
    budget = cost.budget_text() or "none"
    if cost.verdict():
        budget += f" **{cost.verdict()}**"
    return (f"| `{cost.team}` | {_cell(', '.join(cost.owners)) or ' '} | {_cell(cost.plan_text())} | "
            f"{_cell(cost.spent_text())} | {_cell(budget)} |")


def mermaid_graph(plan: Plan, shown: list[PlannedAction]) -> list[str]:
    """The changed resources and the edges between them, as a Mermaid flowchart (GitHub draws
    fenced `mermaid` blocks); nothing when there is nothing to draw or too much to read."""
    if len(shown) < 2 or len(shown) > MERMAID_MAX_NODES:
        return []
    ids = {planned.resource: f"n{index}" for index, planned in enumerate(shown)}
    lines = ["```mermaid", "flowchart LR"]
    for planned in shown:
        label = f"{planned.resource}<br/>{planned.action}".replace('"', "#quot;")
        lines.append(f'  {ids[planned.resource]}["{label}"]:::{planned.action}')
    for planned in shown:
        lines += [f"  {ids[dep]} --> {ids[planned.resource]}" for dep in planned.depends_on if dep in ids]
    lines += [f"  classDef {action} {style}" for action, style in MERMAID_STYLES.items()]
    return [*lines, "```", ""]


MERMAID_STYLES = {
    Action.CREATE: "fill:#dcfce7,stroke:#16a34a", Action.REBUILD: "fill:#fef9c3,stroke:#ca8a04",
    Action.UPDATE: "fill:#fef9c3,stroke:#ca8a04", Action.DELETE: "fill:#fee2e2,stroke:#dc2626",
    Action.RETRY: "fill:#fef9c3,stroke:#ca8a04", Action.WAIT: "fill:#cffafe,stroke:#0891b2",
    Action.BLOCKED: "fill:#fee2e2,stroke:#dc2626", Action.SUSPENDED: "fill:#dbeafe,stroke:#2563eb",
    Action.NOOP: "fill:#f3f4f6,stroke:#9ca3af",
}


def _cell(text: str) -> str:
    """Text for one Markdown table cell or list item: pipes escaped, line breaks flattened, and
    HTML (`<!--` would hide the rest of the comment) shown as text."""
    return " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")


def plan_json(plan: Plan, source: dict[str, Any] | None = None,
              estimates: Estimates | None = None) -> dict[str, Any]:
    known, unknown = total_gpu_hours(estimates)
    return {
        "format_version": FORMAT_VERSION,
        "source": source or {},
        "state_read": plan.state_read,
        "has_changes": plan.has_changes,
        "counts": plan.counts(),
        "actions": [_action_json(a) for a in plan.actions],
        "impact": {str(root): [str(t) for t in targets] for root, targets in plan.impact.items()},
        "unmanaged": list(plan.unmanaged),
        "settings_changes": [{"path": c.path, "before": c.before, "after": c.after}
                             for c in plan.settings_changes],
        "warnings": list(plan.warnings),
        "policy_errors": list(plan.policy_errors),
        "estimates": {str(rid): estimate_json(found) for rid, found in (estimates or {}).items()},
        "gpu_hours_at_most": known,
        "fine_tunes_not_estimated": unknown,
        "dollars_at_most": _dollars_json(estimates),
        "teams": {cost.team: cost.to_json() for cost in plan.teams},
    }


def _dollars_json(estimates: Estimates | None) -> dict[str, Any] | None:
    """The plan's cost: null when nothing it trains is priced."""
    on_demand, spot, unpriced = total_dollars(estimates)
    if not any(found.dollars is not None for found in (estimates or {}).values()):
        return None
    return {"on_demand": on_demand, "spot": spot, "fine_tunes_not_priced": unpriced}


def _sweep_lines(planned: PlannedAction) -> list[str]:
    """Under a sweep's line: each trial a change touches (new, stale), and the estimate."""
    lines = []
    if planned.sweep is not None and planned.action != Action.NOOP:
        for trial in planned.sweep.trials:
            state = "no longer counted" if trial.stale else trial.state  # why: on the line above
            value = f" {trial.value:.4g}" if trial.value is not None and not trial.stale else ""
            lines.append(f"        trial {trial.number} {state}{value}: {trial.params_text()}")
    if planned.sweep_estimate is not None and planned.sweep_estimate.remaining:
        lines.append(f"        estimate: {planned.sweep_estimate.line()}")
    return lines


def _action_json(planned: PlannedAction) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": planned.resource.kind,
        "name": planned.resource.name,
        "team": team_of(planned.resource.name),
        "action": str(planned.action),
        "fingerprint": planned.fingerprint,
        "previous_fingerprint": planned.previous,
        "compared_with": planned.compared_with,
        "reason": planned.reason,
        "changes": [{"path": c.path, "before": c.before, "after": c.after} for c in planned.changes],
        "upstream": [str(r) for r in planned.upstream],
        "depends_on": [str(r) for r in planned.depends_on],
        "file": planned.file,
        "blocked_by": blocked_by_json(planned.blocked_by),
    }
    if planned.sweep is not None:
        out["sweep"] = sweep_json(planned.sweep)
        if planned.sweep_estimate is not None:
            out["sweep"]["estimate"] = planned.sweep_estimate.to_json()
    if planned.serve is not None:
        serve = planned.serve
        out["serve"] = {"fine_tune": serve.fine_tune, "model_fingerprint": serve.model_fingerprint,
                        "model_version": serve.model_version}
    return out


def blocked_by_json(blocked: BlockedBy | None) -> dict[str, Any] | None:
    """What holds an action back, as the JSON plan writes it: `kind` says which fields follow."""
    if blocked is None:
        return None
    out: dict[str, Any] = {"kind": blocked.kind}
    if isinstance(blocked, UpstreamBlock):
        out["upstreams"] = [_upstream_json(upstream) for upstream in blocked.upstreams]
        out["current_keeps_serving"] = blocked.current_keeps_serving
    elif isinstance(blocked, GateBlock):
        out.update(model=blocked.model, model_version=blocked.model_version,
                   evaluations=[_evaluation_json(failed) for failed in blocked.evaluations],
                   keeps_serving=blocked.keeps_serving)
    elif isinstance(blocked, AttemptsBlock):
        out.update(failed=blocked.failed, max_attempts=blocked.max_attempts, message=blocked.message,
                   retry_option=blocked.retry_option)
    elif isinstance(blocked, BudgetBlock):
        out.update(team=blocked.team, why=blocked.why, approve_with=blocked.approve_with)
    elif isinstance(blocked, BackendBlock):
        out.update(nodes=blocked.nodes, needs=blocked.needs)
    elif isinstance(blocked, NoTrialPassed):
        out.update(sweep=blocked.sweep, requires=list(blocked.requires), trials=blocked.trials,
                   best_trial=blocked.best_trial, why=blocked.why, keeps_serving=blocked.keeps_serving)
    return out


def _upstream_json(upstream: UpstreamNotReady) -> dict[str, Any]:
    return {"kind": upstream.resource.kind, "name": upstream.resource.name, "state": upstream.state,
            "reason": upstream.reason, "blocked_by": blocked_by_json(upstream.blocked_by)}


def _number(value: float | None) -> float | str | None:
    """A metric for JSON: NaN and infinities as text, which strict JSON readers accept."""
    return value if value is None or math.isfinite(value) else str(value)


def _evaluation_json(failed: FailedEvaluation) -> dict[str, Any]:
    return {"evaluation": failed.evaluation, "summary": failed.summary,
            "failures": [_check_json(check) for check in failed.failures]}


def _check_json(check: GateResult) -> dict[str, Any]:
    found = {"metric": check.metric, "check": check.kind, "value": _number(check.value),
             "operator": check.operator, "threshold": _number(check.bound),
             "baseline": _number(check.baseline), "description": check.describe()}
    paired = check.comparison
    if check.kind == "compare":
        found["champion"] = check.champion
        if paired is not None:  # the interval it was decided on: value is candidate - champion
            found["comparison"] = {"rows": paired.rows, "candidate": _number(paired.candidate),
                                   "champion": _number(paired.champion), "low": _number(paired.low),
                                   "high": _number(paired.high), "confidence": paired.confidence,
                                   "p_value": _number(paired.p_value)}
    return found
