"""`tuneops sweep show`: a sweep's trials, best first, with Optuna's parameter importances."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from reconciler.cli.base import FORMAT_HELP, SPEC_PATH, cli, load_project


@cli.group()
def sweep() -> None:
    """Look into a Sweep's trials."""


@sweep.command()
@click.argument("name")
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=FORMAT_HELP)
@click.pass_context
def show(ctx: click.Context, name: str, path: Path, output_format: str) -> None:
    """A table of NAME's trials sorted by the objective (best first): parameters, value, state,
    duration and MLflow run; then Optuna's parameter importances once three trials completed."""
    from reconciler.plan.sweeps import sweep_json

    project = load_project(ctx, path)
    view, importances = project.sweep(name.removeprefix("Sweep/"))
    if output_format == "json":
        click.echo(json.dumps({"version": 1, "sweep": name, **sweep_json(view), "importances": importances},
                              indent=2))
        return
    click.echo(sweep_table(view, importances, _run_link(project)))


def _run_link(project: Any) -> Any:
    """run id -> a link into the MLflow UI when MLflow is a server, else the run id."""
    from reconciler.tracking.vocabulary import redact_uri

    uri = redact_uri(project.tracking_uri or "")
    if not uri.startswith(("http://", "https://")):
        return lambda run_id: run_id
    return lambda run_id: f"{uri.rstrip('/')}/#/runs/{run_id}"


def sweep_table(view: Any, importances: dict[str, float], link: Any) -> str:
    spec = view.resource.spec
    metric, maximize = spec.objective.metric, spec.objective.direction == "maximize"

    def order(trial: Any) -> tuple:
        scored = trial.value is not None and math.isfinite(trial.value) and trial.state == "complete"
        value = (-trial.value if maximize else trial.value) if scored else 0.0
        return (bool(trial.stale), not scored, value, trial.number)

    rows = [("TRIAL", "STATE", metric.upper(), "PARAMETERS", "DURATION", "RUN")]
    for trial in sorted(view.trials, key=order):
        record = trial.record
        duration = ""
        if record.finished_at and record.started_at:
            seconds = int(record.finished_at - record.started_at)
            duration = f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
        state = f"{trial.state} (not counted: {trial.stale})" if trial.stale else trial.state
        if trial.state in ("pruned", "failed") and record.message:
            state += f": {record.message[:60]}"
        value = f"{trial.value:.4g}" if trial.value is not None else "-"
        rows.append((str(trial.number), state, value, trial.params_text(), duration, link(record.run_id)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in rows]
    lines = [line.rstrip() for line in lines]
    lines += ["", f"Sweep/{view.name}: {view.summary()}; {view.left} left"]
    if importances:
        lines.append("Parameter importances (Optuna, fANOVA): " + ", ".join(
            f"{path} {share:.2f}" for path, share in sorted(importances.items(), key=lambda item: -item[1])))
    elif view.count("complete") < 3:
        lines.append("Parameter importances: after three complete trials.")
    return "\n".join(lines)
