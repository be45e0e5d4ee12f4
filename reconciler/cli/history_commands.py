"""`tuneops history`: what each Deployment served when, from the audit trail apply records."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from reconciler.cli.base import FORMAT_HELP, cli, resource_id

TARGET = re.compile(r"^[A-Za-z]+/[^/]+$")
AGO = re.compile(r"^(\d+)([mhdw])$")
AGO_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@cli.command()
@click.argument("resource", metavar="[KIND/NAME]", required=False)
@click.argument("path", required=False)
@click.option("--since", metavar="DATE", help="Only what happened from DATE on: 2026-12-01, 2026-12-01T09:30 "
              "(UTC unless it names a zone), or a span back from now: 30m, 12h, 7d, 2w.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=FORMAT_HELP)
def history(resource: str | None, path: str | None, since: str | None,
            output_format: str) -> None:
    """Every switch of what a Deployment served, oldest first: when, from which version to which,
    the commit (sha, author, subject) that asked for it, the gate results that let it through,
    who applied it, and each rollback and stop. KIND/NAME picks one Deployment (default: all) of
    the project at PATH (default: the current folder); Policy/NAME lists the violations of that
    policy an apply let through, with who approved them and why.

    Apply records each switch in MLflow as it happens and never edits it, so this is the record
    of what served, not a reconstruction from today's specs."""
    if resource is not None and path is None and not TARGET.match(resource):
        resource, path = None, resource  # `tuneops history specs/`: a path, not a target
    rid = resource_id(resource) if resource is not None else None
    if rid is not None and rid.kind not in ("Deployment", "Policy"):
        raise click.BadParameter(f"history is kept for Deployments (what they served when) and "
                                 f"Policies (their overrides), not for a {rid.kind}", param_hint="KIND/NAME")
    folder = Path(path or ".")
    if not folder.is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="PATH")
    from reconciler.project import Project
    from reconciler.tracking.vocabulary import redact_uri

    trail = Project.audit_trail(folder)
    where = f"(MLflow {redact_uri(trail.tracking_uri)}, experiment {trail.experiment})"
    when = f" since {since}" if since else ""
    if rid is not None and rid.kind == "Policy":
        overrides = trail.overrides(rid.name, _since(since))
        if output_format == "json":
            click.echo(json.dumps({"version": 1, "overrides": [override_json(o) for o in overrides]},
                                  indent=2))
        else:
            click.echo(overrides_text(overrides) or f"no override of {rid} recorded{when} {where}")
        return
    switches = trail.switches(rid.name if rid is not None else None, _since(since))
    if output_format == "json":
        click.echo(json.dumps({"version": 1, "switches": [switch_json(s) for s in switches]}, indent=2))
    else:
        click.echo(history_text(switches) or f"no switch of {rid or 'any Deployment'} recorded{when} {where}")


def parse_since(value: str) -> float:
    """DATE as epoch seconds: an ISO date or date-time (UTC unless zoned), or a span back from now."""
    ago = AGO.match(value.strip())
    if ago:
        span = timedelta(**{AGO_UNITS[ago.group(2)]: int(ago.group(1))})
        return (datetime.now(UTC) - span).timestamp()
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}' is neither a date (2026-12-01, 2026-12-01T09:30) nor a "
                                 "span back from now (30m, 12h, 7d, 2w)", param_hint="--since") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except (OverflowError, ValueError):  # a span further back than dates go
        raise click.BadParameter(f"'{value}' reaches back further than dates go",
                                 param_hint="--since") from None


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def change(switch: Any) -> str:
    return "failed" if switch.status == "FAILED" else (
        "switching" if switch.status == "RUNNING" else switch.what)


def switch_json(switch: Any) -> dict:
    return {"deployment": switch.deployment, "at": datetime.fromtimestamp(switch.at, UTC).isoformat(),
            "change": change(switch), "version": switch.version, "previous": switch.previous,
            "rollback": switch.rollback, "commit": switch.commit, "dirty": switch.dirty,
            "author": switch.author, "subject": switch.subject, "gates": dict(switch.gates),
            "applied_by": switch.applied_by, "reason": switch.reason, "status": switch.status,
            "run_id": switch.run_id}


def history_text(switches: list) -> str:
    lines: list[str] = []
    for switch in switches:
        moved = (f"{switch.previous} -> {switch.version}" if switch.previous and switch.version
                 else switch.version or f"{switch.previous or 'nothing'} -> nothing")
        kind = change(switch)
        note = {"failed": "  (the new version did not serve; the old one kept serving)",
                "switching": "  (in progress, or the apply stopped mid-switch)"}.get(kind, "")
        lines.append(f"{_when(switch.at)}  Deployment/{switch.deployment}  {kind:<9} {moved}{note}")
        commit = (switch.commit or "")[:12] or "no commit"
        if switch.dirty:
            commit += " (with uncommitted changes)"
        subject = f' "{switch.subject}"' if switch.subject else ""
        author = f" by {switch.author}" if switch.author else ""
        lines.append(f"    commit {commit}{subject}{author}")
        lines.append(f"    applied by {switch.applied_by or 'unknown'}" +
                     (f": {switch.reason}" if switch.reason else ""))
        for evaluation, summary in sorted(switch.gates.items()):
            lines.append(f"    gate {evaluation}: {summary}")
        if switch.version and not switch.gates:
            lines.append("    gates: none (it required no Evaluation)")
        lines.append("")
    return "\n".join(lines).rstrip()


def override_json(override: Any) -> dict:
    return {"policy": override.policy, "at": datetime.fromtimestamp(override.at, UTC).isoformat(),
            "resource": override.resource, "where": override.where, "approved_by": override.approved_by,
            "reason": override.reason, "commit": override.commit, "applied_by": override.applied_by,
            "run_id": override.run_id}


def overrides_text(overrides: list) -> str:
    lines = []
    for override in overrides:
        lines.append(f"{_when(override.at)}  Policy/{override.policy}  overridden for {override.resource} "
                     f"({override.where})")
        lines.append(f"    approved by {override.approved_by}: {override.reason}")
        lines.append(f"    commit {(override.commit or '')[:12] or 'no commit'}, applied by "
                     f"{override.applied_by or 'unknown'}")
        lines.append("")
    return "\n".join(lines).rstrip()
