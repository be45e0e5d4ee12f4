"""A resource's page: its phase and the plan's reason, the spec as written in Git, its runs with
lineage and MLflow links, and what its kind adds: a FineTune's curves, an Evaluation's gates, a
Deployment's served version and switches; the tail of its log, refreshed while the page is open."""

from __future__ import annotations

import math
from typing import Any

from reconciler.plan.blocked import GateBlock
from reconciler.plan.report import blocked_by_json
from reconciler.specs.base import ResourceId
from reconciler.tracking import vocabulary as tracking
from reconciler.ui import details
from reconciler.ui.charts import Series, line_chart
from reconciler.ui.page import (
    esc,
    frame,
    phase_badge,
    progress_bar,
    resource_link,
    status_line,
    table,
    when,
)
from reconciler.ui.snapshot import Node, Snapshot

CHART_TITLES = {"loss": "training loss", "eval_loss": "validation loss", "learning_rate": "learning rate",
                "reward": "mean reward"}


def _number(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def _header(node: Node) -> str:
    facts = [("phase", phase_badge(node.phase))]
    if node.model_version:
        facts.append(("model version", f'<span class="model-version">{esc(node.model_version)}</span>'))
    if node.url:  # linked only when it is a web address: a backend's text is not trusted as one
        linked = node.url.lower().startswith(("http://", "https://"))
        facts.append(("URL", f'<a class="url" href="{esc(node.url)}">{esc(node.url)}</a>' if linked
                      else f'<code class="url">{esc(node.url)}</code>'))
    if node.detail:
        facts.append(("detail", f'<span class="detail">{esc(node.detail)}</span>'))
    rows = "".join(f"<dt>{esc(label)}</dt><dd>{value}</dd>" for label, value in facts)
    return (f'<h1><span class="kind">{esc(node.resource.kind)}</span> {esc(node.resource.name)}</h1>'
            f'<dl class="facts">{rows}</dl>{progress_bar(node.progress, node.progress_text)}')


def _plan_section(snapshot: Snapshot, node: Node) -> str:
    dependents = [other.resource for other in snapshot.nodes if node.resource in other.depends_on]
    rows = [("action", f'<code class="action action-{esc(node.action)}">{esc(node.action)}</code>'),
            ("reason", esc(node.reason or ("in sync: nothing to do" if node.action == "noop" else ""))),
            ("fingerprint", f"<code>{esc(node.fingerprint)}</code>"),
            ("depends on", ", ".join(resource_link(rid) for rid in node.depends_on) or "nothing"),
            ("needed by", ", ".join(resource_link(rid) for rid in dependents) or "nothing")]
    body = "".join(f"<dt>{esc(label)}</dt><dd>{value}</dd>" for label, value in rows)
    planned = snapshot.planned.plan.get(node.resource) if snapshot.planned is not None else None
    blocked = blocked_by_json(planned.blocked_by) if planned is not None else None
    return f'<section id="plan"><h2>Plan</h2><dl class="facts">{body}</dl>{_blocked(blocked)}</section>'


def _blocked(blocked: dict[str, Any] | None) -> str:
    """The gates that hold a Deployment back, each with the value it measured (found through
    the upstreams that are blocked by them too)."""
    if not blocked:
        return ""
    if blocked.get("kind") != GateBlock.kind:
        return "".join(_blocked(upstream.get("blocked_by")) for upstream in blocked.get("upstreams", ()))
    rows = []
    for evaluation in blocked.get("evaluations", ()):
        for failure in evaluation.get("failures", ()):
            interval = failure.get("comparison")
            shown = (f"[{_number(interval['low'])}, {_number(interval['high'])}] at "
                     f"{_number(interval['confidence'])}" if interval else "")
            rows.append((resource_link(ResourceId("Evaluation", evaluation["evaluation"])),
                         esc(failure["metric"]),
                         f'<span class="value">{esc(_number(failure["value"]))}</span>',
                         esc(f'{failure.get("operator") or ""} {_number(failure.get("threshold"))}'.strip()),
                         esc(shown), esc(failure["description"])))
    version = blocked.get("model_version") or blocked.get("model") or ""
    return (f'<div class="gates-failed"><h3>Failing gates of {esc(version)}</h3>'
            + table(("evaluation", "metric", "value", "needs", "interval", "check"), rows, "gates failing")
            + "</div>")


def _spec_section(snapshot: Snapshot, rid: ResourceId) -> str:
    project = snapshot.project
    loaded = project.specs.get(rid) if project is not None else None
    if loaded is None:
        return ""
    from reconciler.git.info import repo_root

    source = details.spec_source(loaded, repo_root(project.root), snapshot.remote, snapshot.commit)
    where = f"{source.file}:{source.line}"
    heading = f'<a href="{esc(source.link)}">{esc(where)}</a>' if source.link else esc(where)
    at = f' at <code class="commit">{esc(snapshot.commit[:12])}</code>' if snapshot.commit else ""
    return (f'<section id="spec"><h2>Spec</h2><p class="muted">{heading}{at}</p>'
            f'<pre class="yaml">{esc(source.text)}</pre></section>')


def _curves(runs: list[details.RunDetails]) -> str:
    charts = []
    for key, title in CHART_TITLES.items():
        series = [Series(run.version or run.record.run_id[:8], run.curves[key], colour=index)
                  for index, run in enumerate(runs) if run.curves.get(key)]
        if series:
            charts.append(line_chart(title, series))
    if not charts:
        return '<section id="curves"><h2>Curves</h2><p class="muted">nothing logged yet</p></section>'
    return f'<section id="curves"><h2>Curves</h2><div class="charts">{"".join(charts)}</div></section>'


def _runs_section(kind: str, runs: list[details.RunDetails], problem: str) -> str:
    rows = []
    for run in runs:
        record = run.record
        link = f'<a href="{esc(run.mlflow_link)}">MLflow</a>' if run.mlflow_link else \
            f'<code title="run id">{esc(record.run_id[:12])}</code>'
        lineage = "".join(f"<dt>{esc(label)}</dt><dd><code>{esc(value)}</code></dd>"
                          for label, value in run.lineage.items())
        shown = {key: value for key, value in sorted(record.metrics.items())
                 if not key.startswith("baseline_") and key != "progress"}
        metrics = ", ".join(f"{esc(key)} {esc(_number(value))}" for key, value in list(shown.items())[:12])
        cells = [esc(run.version or "-"), esc(record.status.lower()), when(record.start_time / 1000),
                 f'<details><summary>lineage</summary><dl class="lineage">{lineage}</dl></details>', link]
        if kind == "Evaluation":
            verdict = record.tags.get(tracking.TAG_GATE_SUMMARY, "")
            cells.insert(2, f'<span class="verdict">{esc(verdict)}</span>')
            cells.insert(3, esc(metrics))
        rows.append(cells)
    headers = ["version", "status", "started", "lineage", "run"]
    if kind == "Evaluation":
        headers[2:2] = ["verdict", "metrics"]
    note = f'<p class="problem">{esc(problem)}</p>' if problem else ""
    return f'<section id="runs"><h2>Runs</h2>{note}{table(headers, rows, "runs")}</section>'


def _gates_section(runs: list[details.RunDetails]) -> str:
    blocks = []
    for run in runs[:5]:
        if not run.gates:
            continue
        rows = [(esc(gate.get("metric", "")), esc(gate.get("kind", "")), esc(_number(gate.get("value"))),
                 esc(_number(gate.get("bound"))),
                 f'<span class="{"passed" if gate.get("passed") else "failed"}">'
                 f'{"passed" if gate.get("passed") else "failed"}</span>', esc(gate.get("description", "")))
                for gate in run.gates]
        blocks.append(f"<h3>{esc(run.version or run.record.run_id[:12])}</h3>"
                      + table(("metric", "check", "value", "bound", "verdict", "as the log says it"), rows,
                              "gates"))
    return f'<section id="gates"><h2>Gates</h2>{"".join(blocks)}</section>' if blocks else ""


def _trials_section(snapshot: Snapshot, rid: ResourceId) -> str:
    """A Sweep's trials as the plan sees them: state, objective, parameters, and the FineTune
    each one trained (its log: `tuneops logs FineTune/<it>`)."""
    planned = snapshot.planned.plan.get(rid) if snapshot.planned is not None else None
    view = planned.sweep if planned is not None else None
    if view is None:
        return ""
    rows = [(esc(trial.number), esc(trial.stale or trial.state), esc(_number(trial.value)),
             esc(trial.params_text()), esc(trial.model_version or ""),
             f"<code>{esc(trial.record.fine_tune)}</code>")
            for trial in view.trials]
    headers = ("trial", "state", "objective", "parameters", "model version", "fine-tune")
    return (f'<section id="trials"><h2>Trials</h2><p class="muted">{esc(view.summary())}</p>'
            + table(headers, rows, "trials") + "</section>")


def _switches_section(snapshot: Snapshot, name: str) -> str:
    switches, problem = details.switches_of(snapshot.project, name)
    rows = [(when(switch.at), esc(switch.previous or "nothing"), esc(switch.version or "stopped"),
             f"<code>{esc((switch.commit or '')[:12])}</code>", esc(switch.applied_by),
             esc(("rollback: " if switch.rollback else "") + (switch.reason or switch.subject)),
             esc(switch.status.lower()))
            for switch in reversed(switches[-50:])]
    note = f'<p class="problem">{esc(problem)}</p>' if problem else ""
    return (f'<section id="switches"><h2>What it served</h2>{note}'
            + table(("when", "from", "to", "commit", "by", "why", "status"), rows, "switches") + "</section>")


def _log_section(snapshot: Snapshot, node: Node) -> str:
    lines, note = details.log_tail(snapshot.planned, node.resource, node.fingerprint or None)
    if not lines and not note:
        return ""
    text = "\n".join(lines) if lines else "(empty)"
    return (f'<section id="log-section"><h2>Log</h2><p class="muted">{esc(note)}</p>'
            f'<pre class="log" id="log">{esc(text)}</pre></section>')


def resource_main(snapshot: Snapshot, rid: ResourceId) -> str | None:
    """The live region of a resource's page; None when the project has no such resource."""
    node = snapshot.by_id.get(rid)
    if node is None:
        return None
    parts = [_header(node), status_line(snapshot)]
    runs: list[details.RunDetails] = []
    problem = ""
    reads_mlflow = snapshot.planned is not None and not snapshot.problem  # a failed read: do not wait again
    if reads_mlflow and rid.kind in ("FineTune", "Evaluation", "Dataset"):
        runs, problem = details.runs_of(snapshot.planned, rid)
    elif snapshot.problem and rid.kind in ("FineTune", "Evaluation", "Dataset"):
        problem = "runs not read: the last read of the project failed (above)"
    if rid.kind == "FineTune":  # what people open a FineTune's page for comes first
        parts.append(_curves(runs))
    if rid.kind == "Evaluation":
        parts.append(_gates_section(runs))
    if rid.kind == "Sweep":
        parts.append(_trials_section(snapshot, rid))
    parts.append(_plan_section(snapshot, node))
    if rid.kind == "Deployment" and reads_mlflow:
        parts.append(_switches_section(snapshot, rid.name))
    elif rid.kind in ("FineTune", "Evaluation", "Dataset") and (reads_mlflow or problem):
        parts.append(_runs_section(rid.kind, runs, problem))
    if snapshot.planned is not None:
        parts.append(_log_section(snapshot, node))
    parts.append(_spec_section(snapshot, rid))
    return "".join(parts)


def resource_page(snapshot: Snapshot, rid: ResourceId, main: str) -> str:
    return frame(str(rid), main, active="")
