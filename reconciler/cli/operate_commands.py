"""Commands that act on a project or read what runs: apply, status, logs, stop."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.cli.base import (
    EXIT_INVALID,
    FORMAT_HELP,
    SPEC_PATH,
    TARGET_HELP,
    approval_of,
    approval_options,
    cli,
    confirm,
    echo_lines,
    load_project,
    resource_id,
    targets_of,
    use_color,
)

if TYPE_CHECKING:
    from types import FrameType

    from reconciler.plan.project_plan import PlannedProject


@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--target", "targets", multiple=True, metavar="KIND/NAME", help=TARGET_HELP)
@click.option("--prune", is_flag=True,
              help="Stop live jobs and servers whose spec was removed (also: prune.enabled in tuneops.yaml).")
@click.option("--force", is_flag=True, help="Prune even beyond prune.maxDeletes, or everything.")
@click.option("--retry-failed", is_flag=True,
              help="Give jobs that used up their attempts a fresh set (after fixing the cause).")
@approval_options
@click.pass_context
def apply(ctx: click.Context, path: Path, yes: bool, targets: tuple[str, ...], prune: bool, force: bool,
          retry_failed: bool, approved: tuple[str, ...], approval_reason: str | None) -> None:
    """Make the actual state match the specs under PATH: build what is missing, in order.

    Shows the plan, asks (unless --yes; without a terminal, pass --yes), then runs jobs in
    dependency order, independent branches in parallel up to local.maxParallel. A failure
    stops only what depends on it. One apply runs at a time per project; jobs survive an
    interrupted apply and the next one adopts them. Exits 0 when every step finished (a
    failed gate is a result, not an error), 1 when a step failed.
    """
    import signal
    import threading

    from reconciler.apply.executor import LiveReporter, Reporter
    from reconciler.plan.report import plan_text
    from reconciler.redaction import redact
    from reconciler.tracking.sample_request import endpoint_lines

    project = load_project(ctx, path, approval_of(approved, approval_reason))
    stop = threading.Event()

    def interrupted(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends it at once
        click.echo("stopping after the current steps (Ctrl-C again to quit now): running jobs keep "
                   "running and the next apply adopts them", err=True)

    def go_ahead(planned: PlannedProject) -> bool:
        if not yes and not confirm("\nApply this plan?"):
            click.echo("Nothing applied.")
            return False
        signal.signal(signal.SIGTERM, interrupted)
        signal.signal(signal.SIGINT, interrupted)
        click.echo("")
        return True

    color = use_color(ctx)
    reporter = LiveReporter() if sys.stdout.isatty() and not os.environ.get("TUNEOPS_PLAIN") \
        else Reporter(click.echo)
    outcome = project.apply(
        targets=targets_of(targets), prune=prune, force=force, retry_failed=retry_failed, reporter=reporter,
        stop=stop, go_ahead=go_ahead, shown=lambda planned: click.echo(
            plan_text(planned.plan, planned.header, color=color, estimates=planned.estimates()), color=color))
    if outcome.nothing_to_apply:
        actions = outcome.planned.plan.actions
        blocked = [a for a in actions if a.action in ("blocked", "suspended")]
        suspended = [a for a in blocked if a.action == "suspended"]
        if len(suspended) < len(blocked):
            click.echo(f"Nothing can be applied: {len(blocked)} blocked or suspended (see above).")
        elif suspended:  # suspended on purpose (the quickstart's Sweep): nothing is wrong
            click.echo(f"Nothing to do: {len(suspended)} suspended (see above), the rest is up to date.")
        else:
            click.echo("Nothing to do: everything is up to date.")
        echo_lines(endpoint_lines(project.specs, outcome.planned.state))
    if outcome.result is None:
        return
    result = outcome.result
    click.echo("\n" + result.summary())
    echo_lines(endpoint_lines(project.specs, outcome.state_after))
    for step in result.failed:
        click.echo(f"error: {step.resource}: {redact(step.message)}", err=True)
    ctx.exit(EXIT_INVALID if result.failed else 0)



@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=FORMAT_HELP)
@click.pass_context
def status(ctx: click.Context, path: Path, output_format: str) -> None:
    """Show each resource's phase: Ready, Running (with progress and ETA), Pending, Failed,
    Blocked or Suspended, with its model version, last run and the URL of each Deployment."""
    import json

    from reconciler.status import status_text

    rows = load_project(ctx, path).status()
    if output_format == "json":
        click.echo(json.dumps({"version": 1, "resources": [row.to_json() for row in rows]}, indent=2))
    else:
        click.echo(status_text(rows))



@cli.command()
@click.argument("resource", metavar="KIND/NAME")
@click.argument("path", type=SPEC_PATH, required=False)
@click.option("--path", "path_option", type=SPEC_PATH, hidden=True,
              help="Deprecated: give the path as the second argument, as to every command.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new lines until the job ends (Ctrl-C stops).")
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
@click.option("--version", "version", type=click.IntRange(min=1), default=None, metavar="N",
              help="The job that built version N of a FineTune, or the Evaluation that scored it. "
                   "Default: the job at the fingerprint the specs ask for, else the newest.")
def logs(resource: str, path: Path | None, path_option: Path | None, follow: bool, tail: int | None,
         version: int | None) -> None:
    """Print the log of a resource's job or server (KIND/NAME, e.g. FineTune/support-sft) in the
    project at PATH (default: the current folder).

    Which run: the one at the fingerprint the specs ask for now (after a rollback, the version
    serving), or with --version N the one of that model version; failing both, the newest. A
    note on standard error says which it is."""
    from reconciler.project import Project

    if path is not None and path_option is not None:
        raise click.UsageError("give the path once: as an argument (--path is its old spelling)")
    if path_option is not None:
        click.echo("note: --path is deprecated: give the path as an argument, "
                   f"`tuneops logs {resource} {path_option}`", err=True)
    rid = resource_id(resource)
    if version is not None and rid.kind not in ("FineTune", "Evaluation"):
        raise click.UsageError(f"--version picks a model version: it applies to a FineTune (the version it "
                               f"built) or an Evaluation (the version it scored), not a {rid.kind}")
    lines, note = Project.logs(path or path_option or Path("."), rid, version=version, tail=tail,
                               follow=follow)
    if note:
        click.echo(f"note: {note}", err=True)
    for line in lines:  # the backends redact what the job printed (redaction.redact_lines)
        click.echo(line, nl=False)



@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--target", "targets", multiple=True, metavar="KIND/NAME",
              help="Only this resource's jobs and server (repeatable). Default: everything.")
def stop(path: Path, targets: tuple[str, ...]) -> None:
    """Stop the model servers and running jobs of the project at PATH.

    Nothing is deleted: built results stay in MLflow and the storage root, and the next
    `tuneops apply` starts the servers again (a stopped job resumes from its checkpoint).
    Use `suspend: true` in a spec to keep apply from starting it.
    """
    from reconciler.project import Project

    stopping = Project.stop(path, targets_of(targets))
    stopped = 0
    for kind, name in stopping.chosen():
        handles = stopping.stop(kind, name)
        stopped += len(handles)
        click.echo(f"{kind}/{name}: stopped {', '.join(handles)}")
    for target in stopping.not_running():  # a typo, or already stopped: say so, by name
        click.echo(f"{target}: not running (`tuneops status` lists what runs)")
    if not stopped and not stopping.wanted:
        click.echo("nothing is running")

