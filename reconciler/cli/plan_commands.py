"""Commands that show what would happen, without doing it: plan, render, estimate."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.base import (
    EXIT_INVALID,
    FORMAT_HELP,
    SPEC_PATH,
    TARGET_HELP,
    approval_of,
    approval_options,
    cli,
    exit_invalid,
    load_project,
    short_lived,
    targets_of,
    use_color,
)


@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--format", "output_format", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help=FORMAT_HELP)
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there are no changes, 2 when there are, 1 on error.")
@click.option("--offline", is_flag=True,
              help="Read no state (no MLflow, no backend): validate, fingerprint and show the plan "
                   "as if nothing were built. Imports no training or cluster library.")
@click.option("--target", "targets", multiple=True, metavar="KIND/NAME", help=TARGET_HELP)
@click.option("--prune", is_flag=True, help="Plan to stop live objects whose spec was removed.")
@click.option("--base", "base_ref", metavar="REF",
              help="Show what the change since this Git ref (e.g. origin/main) does: the specs at REF are "
                   "taken as built and serving, so only what the change touches is listed. With --offline "
                   "(the CI dry-run) nothing else is read, and with backend kubernetes the rendered "
                   "manifests are validated too.")
@approval_options
@click.pass_context
def plan(ctx: click.Context, path: Path, output_format: str, detailed_exitcode: bool, offline: bool,
         targets: tuple[str, ...], prune: bool, base_ref: str | None, approved: tuple[str, ...],
         approval_reason: str | None) -> None:
    """Show what apply would do to make the actual state match the specs under PATH.

    Compares each resource's fingerprint with what MLflow says is built and what the backend
    says is running: create, rebuild (and why), update, delete, wait, retry, blocked (and by
    what), suspended. Unchanged resources are counted, not listed.
    """
    short_lived()  # read-only: it writes nothing but the digest cache, before it returns
    import json

    from reconciler.plan.report import plan_json, plan_markdown, plan_text

    project = load_project(ctx, path, approval_of(approved, approval_reason))
    planned = project.plan(base_ref, offline=offline, targets=targets_of(targets), prune=prune,
                           warn=lambda line: click.echo(line, err=True))
    if output_format == "json":
        click.echo(json.dumps(plan_json(planned.plan, planned.source(), planned.estimates()), indent=2))
    elif output_format == "markdown":
        click.echo(plan_markdown(planned.plan, planned.header, planned.estimates()))
    else:
        click.echo(plan_text(planned.plan, planned.header, color=use_color(ctx),
                             estimates=planned.estimates()), color=use_color(ctx))
    if planned.plan.policy_errors:  # shown in the plan; the exit status is what CI reads
        count = len(planned.plan.policy_errors)
        click.echo(f"error: the plan breaks {count} polic{'y' if count == 1 else 'ies'} (shown above): "
                   "apply will refuse it", err=True)
        ctx.exit(EXIT_INVALID)
    ctx.exit(2 if detailed_exitcode and planned.plan.has_changes else 0)



@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--target", "targets", multiple=True, metavar="KIND/NAME",
              help="Only this resource (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one file per object into DIR instead of printing.")
@click.option("--no-validate", is_flag=True, help="Skip the check against the Kubernetes schemas.")
@click.pass_context
def render(ctx: click.Context, path: Path, targets: tuple[str, ...], out_dir: Path | None,
           no_validate: bool) -> None:
    """Print the Kubernetes manifests of the specs under PATH as multi-document YAML.

    Datasets, FineTunes and Evaluations become Jobs (with their job file in a ConfigMap; a
    multi-node FineTune an Indexed Job and a headless Service); Deployments become a vLLM
    Deployment and Service. Each object is checked against the OpenAPI schemas of
    kubernetes.version (tuneops.yaml). Reads no state: upstreams not built yet appear at the
    output location they will have. For review, a pull-request diff, Argo CD or kubectl.
    """
    short_lived()
    from reconciler.backends.kubernetes.yaml_out import to_yaml
    from reconciler.fileio import write_text_atomic

    objects = load_project(ctx, path).render(targets_of(targets), validate=not no_validate)
    if out_dir is None:
        click.echo(to_yaml(objects), nl=False)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for obj in objects:
        name = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        write_text_atomic(out_dir / name, to_yaml([obj]))
    click.echo(f"wrote {len(objects)} object(s) to {out_dir}", err=True)



@cli.command()
@click.argument("fine_tune", metavar="FINETUNE")
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=FORMAT_HELP)
@click.option("--mfu", type=click.FloatRange(0, 1, min_open=True),
              help="Model FLOPs utilisation to assume (default: planner.mfu in tuneops.yaml, else "
                   "0.4 on A100 and 0.35 on other GPUs).")
@click.pass_context
def estimate(ctx: click.Context, fine_tune: str, path: Path, output_format: str, mfu: float | None) -> None:
    """Print what FINETUNE needs before it is scheduled: memory per GPU, strategy, GPU-hours.

    FINETUNE is a FineTune's name (or FineTune/NAME) in the specs under PATH. Model states
    (weights, gradients, optimizer), activations and the largest micro-batch that fits come
    from the base model's architecture and the declared GPUs; FLOPs and GPU-hours from the
    tokens it trains on, as upper bounds. Reads nothing but the spec folder.
    """
    short_lived()
    import json

    from reconciler.project import Project, ProjectInvalid
    from reconciler.sizing.report import estimate_json, estimate_text

    try:
        found = Project.estimate(path, fine_tune, mfu=mfu)
    except ProjectInvalid as invalid:
        exit_invalid(ctx, invalid, "estimated")
    click.echo(json.dumps(estimate_json(found), indent=2) if output_format == "json"
               else estimate_text(found))

