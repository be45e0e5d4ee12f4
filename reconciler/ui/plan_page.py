"""The plan page: what `tuneops plan` would do now, with the same reasons, and (in the daemon)
the commit applied last and the one it works towards."""

from __future__ import annotations

from reconciler.plan.plan import Action
from reconciler.plan.report import plan_text, reason_for_people, summary_line
from reconciler.ui.page import esc, frame, resource_link, status_line, table
from reconciler.ui.snapshot import Snapshot


def plan_main(snapshot: Snapshot) -> str:
    if snapshot.planned is None:
        return f"<h1>Plan</h1>{status_line(snapshot)}"
    plan = snapshot.planned.plan
    rows = []
    for planned in plan.actions:
        if planned.action == Action.NOOP:
            continue
        changes = "; ".join(f"{change.path}: {change.before} → {change.after}"
                            for change in planned.changes[:8])
        action = esc(planned.action.value)
        rows.append((resource_link(planned.resource), f'<code class="action action-{action}">{action}</code>',
                     esc(reason_for_people(planned)), esc(changes)))
    warnings = "".join(f"<li>{esc(warning)}</li>" for warning in plan.warnings)
    return (f"<h1>Plan</h1>{status_line(snapshot)}<p class=\"summary\">{esc(summary_line(plan))}</p>"
            + table(("resource", "action", "reason", "changes"), rows, "plan")
            + (f'<h2>Warnings</h2><ul class="warnings">{warnings}</ul>' if warnings else "")
            + f'<details><summary>as <code>tuneops plan</code> prints it</summary>'
              f'<pre class="plan-text">{esc(plan_text(plan))}</pre></details>')


def plan_page(snapshot: Snapshot) -> str:
    return frame("plan", plan_main(snapshot), active="Plan")
