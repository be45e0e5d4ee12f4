"""The `tuneops` command line. Thin: parse, call, print, exit code.

Every import beyond click happens inside the command that needs it, so `tuneops --help` and
`tuneops validate` stay fast and never load the training or cluster libraries.

Exit codes: 0 success, 1 invalid specs or a failed command, 2 a usage error.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import click

from reconciler import __version__
from reconciler.errors import EXIT_ERROR, TuneopsError

EXIT_INVALID = EXIT_ERROR


class UserError(TuneopsError, click.ClickException):
    """A mistake the user can fix: printed as one line, no traceback, exit 1."""

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        _say_error(self)


def _say_error(error: TuneopsError) -> None:
    from reconciler.redaction import redact

    click.echo(f"error: {redact(error.one_line())}", err=True)


class _Reported(click.ClickException):
    """A TuneopsError on its way out through click: one line (and its hint), its exit code."""

    def __init__(self, error: TuneopsError):
        super().__init__(str(error))
        self.error, self.exit_code = error, error.exit_code

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        _say_error(self.error)


class _Commands(click.Group):
    """The one place that turns any TuneopsError a command raises into what the user sees."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except TuneopsError as error:
            raise _Reported(error) from None


_short_lived = False


def short_lived() -> None:
    """For read-only commands that finish in about a second: no cyclic garbage collection (they
    allocate much and free nothing), and `main` skips tearing the heap down at exit, as mypy
    does. Never for commands that log to MLflow, run jobs or serve: they need atexit hooks.
    pydantic's plugin discovery (a scan of every installed package's entry points, for
    observability hooks) is skipped unless the user set PYDANTIC_DISABLE_PLUGINS themselves."""
    global _short_lived
    _short_lived = True
    gc.disable()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _use_color(ctx: click.Context) -> bool:
    if ctx.color is not None:
        return ctx.color
    if os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


SPEC_PATH = click.Path(exists=True, path_type=Path)
FORMAT_HELP = "Output format."


@click.group(cls=_Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tuneops")
@click.option("--color/--no-color", default=None,
              help="Force colored output on or off (default: on for a terminal; NO_COLOR is honoured).")
@click.pass_context
def cli(ctx: click.Context, color: bool | None) -> None:
    """GitOps for LLM fine-tuning: specs in Git, a plan you can review, lineage in MLflow.

    Specs for datasets, base models, fine-tunes, evaluations and deployments live in YAML
    files. Start with `tuneops init`, check with `tuneops validate`.
    """
    ctx.color = color


@cli.command()
@click.argument("paths", nargs=-1, type=SPEC_PATH)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=FORMAT_HELP)
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...], strict: bool, output_format: str) -> None:
    """Check the specs in PATHS without touching any service.

    PATHS is one folder (default: the current one), and its whole project is checked (the
    nearest folder up with a tuneops.yaml, as git finds its repository; docs/cli.md), or spec
    files: files are checked within their project, so their references resolve, and only their
    own problems are reported. Reports YAML, schema and
    whole-repository problems with file, line, column and field path. Exits 0 when valid, 1
    when not.
    """
    short_lived()
    from reconciler.project import Project
    from reconciler.specs.loader import ScopeError
    from reconciler.specs.report import validation_json, validation_text

    try:
        result = Project.check(list(paths) or [Path(".")], strict=strict)
    except ScopeError as error:
        raise click.UsageError(str(error)) from None
    if output_format == "json":
        click.echo(validation_json(result))
    else:
        click.echo(validation_text(result, color=_use_color(ctx)), color=_use_color(ctx))
    ctx.exit(0 if result.valid else EXIT_INVALID)


@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--format", "output_format", type=click.Choice(["text", "mermaid", "dot", "json"]),
              default="text", show_default=True, help=FORMAT_HELP)
@click.pass_context
def graph(ctx: click.Context, path: Path, output_format: str) -> None:
    """Print the dependency graph of the specs under PATH.

    Datasets and base models feed fine-tunes, which feed evaluations and deployments.
    `--format mermaid` renders on GitHub; `--format dot` feeds Graphviz.
    """
    short_lived()
    import json

    from reconciler.graph import DependencyGraph
    from reconciler.project import Project
    from reconciler.specs.report import validation_text

    result = Project.check([path], capacity=False)
    if not result.valid:
        click.echo(validation_text(result, color=_use_color(ctx)), err=True)
        ctx.exit(EXIT_INVALID)
    dependency_graph = DependencyGraph.from_specs(result.specs)
    if output_format == "json":
        click.echo(json.dumps(dependency_graph.to_json(), indent=2))
    else:
        click.echo({"text": dependency_graph.to_text, "mermaid": dependency_graph.to_mermaid,
                    "dot": dependency_graph.to_dot}[output_format]())


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("schemas"), show_default=True, help="Folder to write the schemas to.")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if the files in --out differ from a fresh generation.")
@click.option("--docs", "docs_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the Markdown field reference to this file (docs/specs.md).")
def schema(out_dir: Path, check: bool, docs_file: Path | None) -> None:
    """Write one JSON Schema per kind, generated from the models.

    Point your editor's YAML language server at them for completion and checking; the
    examples carry a `# yaml-language-server: $schema=...` line that does so.
    """
    short_lived()
    from reconciler.specs.jsonschema import generate_schemas
    from reconciler.specs.reference import generate_reference

    outputs = {out_dir / name: text for name, text in generate_schemas().items()}
    if docs_file is not None:
        outputs[docs_file] = generate_reference()
    if check:
        stale = [str(p) for p, text in outputs.items()
                 if not p.is_file() or p.read_text(encoding="utf-8") != text]
        if stale:
            raise UserError("out of date (regenerate with `tuneops schema"
                            + (f" --docs {docs_file}" if docs_file else "") + "`): "
                            + ", ".join(stale))
        click.echo(f"up to date: {len(outputs)} files")
        return
    from reconciler.fileio import write_text_atomic

    for target, text in outputs.items():
        try:
            write_text_atomic(target, text)
        except OSError as error:
            raise UserError(f"cannot write {target}: {error.strerror or error}") from None
        click.echo(f"wrote {target}")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(directory: Path, force: bool) -> None:
    """Write a commented starter spec repository into DIRECTORY.

    The starter validates as written: one base model, one dataset with a few sample rows, a
    LoRA fine-tune, an evaluation with a quality gate and a deployment, plus the JSON Schemas
    in schemas/ that editors use to complete and check fields.
    """
    from reconciler.specs.jsonschema import generate_schemas
    from reconciler.starter import write_starter

    schemas = {f"schemas/{name}": text for name, text in generate_schemas().items()}
    try:
        written = write_starter(directory, force=force, extra_files=schemas)
    except FileExistsError as error:
        raise UserError(f"{error}; pass --force to overwrite") from None
    except OSError as error:
        raise UserError(f"cannot write the starter into {directory}: "
                        f"{error.strerror or error}") from None
    ignore = directory / ".gitignore"
    if not ignore.exists():  # the state folder (MLflow database, logs, outputs) is not for Git
        from reconciler.fileio import write_text_atomic

        write_text_atomic(ignore, ".tuneops/\n")
        written.append(ignore)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"\nnext: tuneops validate {directory}, then tuneops plan {directory}")


def _resource_id(value: str):  # noqa: ANN202 - ResourceId, imported lazily
    from reconciler.specs.base import ResourceId
    from reconciler.specs.kinds import KINDS

    kind, sep, name = value.partition("/")
    if not sep or not name:
        raise click.BadParameter(f"'{value}' is not KIND/NAME, e.g. FineTune/support-sft")
    matches = [k for k in KINDS if k.lower() == kind.lower()]
    if not matches:
        raise click.BadParameter(f"unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    return ResourceId(matches[0], name)


def _targets(values: tuple[str, ...]):  # noqa: ANN202
    return frozenset(_resource_id(v) for v in values) or None


def _load(ctx: click.Context, path: Path):  # noqa: ANN202 - Project
    """The validated project, or the validation report and exit 1: invalid specs are never
    planned or applied."""
    from reconciler.project import Project, ProjectInvalid

    try:
        return Project.load(path)
    except ProjectInvalid as invalid:
        _invalid(ctx, invalid, "planned")


def _invalid(ctx: click.Context, invalid, what: str) -> None:  # noqa: ANN001 - ProjectInvalid
    from reconciler.specs.report import validation_text

    click.echo(validation_text(invalid.result, color=_use_color(ctx)), err=True)
    click.echo(f"error: the specs are invalid: nothing was {what}", err=True)
    ctx.exit(EXIT_INVALID)


TARGET_HELP = "Only this resource and what it depends on (KIND/NAME; repeatable)."


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
@click.pass_context
def plan(ctx: click.Context, path: Path, output_format: str, detailed_exitcode: bool, offline: bool,
         targets: tuple[str, ...], prune: bool, base_ref: str | None) -> None:
    """Show what apply would do to make the actual state match the specs under PATH.

    Compares each resource's fingerprint with what MLflow says is built and what the backend
    says is running: create, rebuild (and why), update, delete, wait, retry, blocked (and by
    what), suspended. Unchanged resources are counted, not listed.
    """
    short_lived()  # read-only: it writes nothing but the digest cache, before it returns
    import json

    from reconciler.plan.report import plan_json, plan_markdown, plan_text

    project = _load(ctx, path)
    planned = project.plan(base_ref, offline=offline, targets=_targets(targets), prune=prune,
                           warn=lambda line: click.echo(line, err=True))
    if output_format == "json":
        click.echo(json.dumps(plan_json(planned.plan, planned.source(), planned.estimates()), indent=2))
    elif output_format == "markdown":
        click.echo(plan_markdown(planned.plan, planned.header, planned.estimates()))
    else:
        click.echo(plan_text(planned.plan, planned.header, color=_use_color(ctx),
                             estimates=planned.estimates()), color=_use_color(ctx))
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

    objects = _load(ctx, path).render(_targets(targets), validate=not no_validate)
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
        _invalid(ctx, invalid, "estimated")
    click.echo(json.dumps(estimate_json(found), indent=2) if output_format == "json"
               else estimate_text(found))


@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--target", "targets", multiple=True, metavar="KIND/NAME", help=TARGET_HELP)
@click.option("--prune", is_flag=True,
              help="Stop live jobs and servers whose spec was removed (also: prune.enabled in tuneops.yaml).")
@click.option("--force", is_flag=True, help="Prune even beyond prune.maxDeletes, or everything.")
@click.option("--retry-failed", is_flag=True,
              help="Give jobs that used up their attempts a fresh set (after fixing the cause).")
@click.pass_context
def apply(ctx: click.Context, path: Path, yes: bool, targets: tuple[str, ...], prune: bool, force: bool,
          retry_failed: bool) -> None:
    """Make the actual state match the specs under PATH: build what is missing, in order.

    Shows the plan, asks (unless --yes; without a terminal, pass --yes), then runs jobs in
    dependency order, independent branches in parallel up to local.maxParallel. A failure
    stops only what depends on it. One apply runs at a time per project; jobs survive an
    interrupted apply and the next one adopts them. Exits 0 when every step finished (a
    failed gate is a result, not an error), 1 when a step failed.
    """
    import signal
    import threading

    from reconciler.apply import LiveReporter, Reporter
    from reconciler.plan.report import plan_text
    from reconciler.redaction import redact
    from reconciler.tracking.sample_request import endpoint_lines

    project = _load(ctx, path)
    stop = threading.Event()

    def interrupted(signum, frame) -> None:  # noqa: ANN001, ARG001
        stop.set()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends it at once
        click.echo("stopping after the current steps (Ctrl-C again to quit now): running jobs keep "
                   "running and the next apply adopts them", err=True)

    def go_ahead(planned) -> bool:  # noqa: ANN001 - PlannedProject
        if not yes and not _confirm("\nApply this plan?"):
            click.echo("Nothing applied.")
            return False
        signal.signal(signal.SIGTERM, interrupted)
        signal.signal(signal.SIGINT, interrupted)
        click.echo("")
        return True

    color = _use_color(ctx)
    reporter = LiveReporter() if sys.stdout.isatty() and not os.environ.get("TUNEOPS_PLAIN") \
        else Reporter(click.echo)
    outcome = project.apply(
        targets=_targets(targets), prune=prune, force=force, retry_failed=retry_failed, reporter=reporter,
        stop=stop, go_ahead=go_ahead, shown=lambda planned: click.echo(
            plan_text(planned.plan, planned.header, color=color, estimates=planned.estimates()), color=color))
    if outcome.nothing_to_apply:
        blocked = [a for a in outcome.planned.plan.actions if a.action in ("blocked", "suspended")]
        click.echo(f"Nothing can be applied: {len(blocked)} blocked or suspended (see above)." if blocked
                   else "Nothing to do: everything is up to date.")
        _echo_lines(endpoint_lines(project.specs, outcome.planned.state))
    if outcome.result is None:
        return
    result = outcome.result
    click.echo("\n" + result.summary())
    _echo_lines(endpoint_lines(project.specs, outcome.state_after))
    for step in result.failed:
        click.echo(f"error: {step.resource}: {redact(step.message)}", err=True)
    ctx.exit(EXIT_INVALID if result.failed else 0)


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def _confirm(question: str) -> bool:
    """Ask on the terminal. Without one (CI, a pipe that ends), say what to pass instead of
    click's bare "Aborted!"."""
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        if sys.stdin.isatty():
            raise  # Ctrl-C or Ctrl-D at the prompt: the person's own answer
        click.echo("", err=True)
        raise UserError(f"no answer to '{question.strip()}': there is no terminal to ask on "
                        "(pass --yes to apply without asking)") from None


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

    rows = _load(ctx, path).status()
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
    rid = _resource_id(resource)
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

    stopping = Project.stop(path, _targets(targets))
    stopped = 0
    for kind, name in stopping.chosen():
        handles = stopping.stop(kind, name)
        stopped += len(handles)
        click.echo(f"{kind}/{name}: stopped {', '.join(handles)}")
    for target in stopping.not_running():  # a typo, or already stopped: say so, by name
        click.echo(f"{target}: not running (`tuneops status` lists what runs)")
    if not stopped and not stopping.wanted:
        click.echo("nothing is running")


@cli.command()
@click.option("--repo", required=True, metavar="URL_OR_PATH", envvar="TUNEOPS_SPEC_REPO",
              help="The spec repository (or TUNEOPS_SPEC_REPO, which keeps a token in the URL off the "
                   "command line). Credentials come from the environment (git's credential helpers, "
                   "GIT_SSH_COMMAND, a token in the URL) and are never printed.")
@click.option("--branch", default="main", show_default=True, help="The branch kept converged.")
@click.option("--path", "spec_path", default=".", show_default=True,
              help="The spec folder in the repository.")
@click.option("--interval", type=click.FloatRange(min=1), default=60, show_default=True,
              help="Seconds between ticks (failures back off up to 10 minutes).")
@click.option("--once", is_flag=True,
              help="One tick, then exit (0 synced or invalid commit skipped, 1 failed).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the checkout lives; one daemon acts per folder. "
                   "Default: ~/.cache/tuneops/reconcile/<id>.")
@click.option("--listen", metavar="HOST:PORT",
              help="Serve /healthz, /readyz, /metrics and POST /hooks/git (HMAC secret in "
                   "TUNEOPS_WEBHOOK_SECRET).")
@click.option("--lease", metavar="NAME",
              help="Lead through this coordination.k8s.io Lease (in the namespace of the kubeconfig context "
                   "or service account) instead of a lock on the cache folder: for replicas in a cluster.")
@click.option("--notify", "notify_url", metavar="URL",
              help="POST a JSON message here on a failure, a gate failure, an invalid commit and a new "
                   "deployment (no secrets in it).")
@click.option("--notify-format", type=click.Choice(["json", "slack"]), default="json", show_default=True,
              help="Generic JSON, or Slack's incoming-webhook format.")
@click.pass_context
def reconcile(ctx: click.Context, repo: str, branch: str, spec_path: str, interval: float, once: bool,
              cache_dir: Path | None, listen: str | None, lease: str | None, notify_url: str | None,
              notify_format: str) -> None:
    """Keep MLflow and the backend converged on a branch: fetch, validate, apply, every interval.

    A commit that does not validate is never applied (the last good one stays); SIGTERM stops
    after the current steps, and a restart adopts running jobs. Only one daemon acts per cache
    folder; others wait as standbys.
    """
    import hashlib
    import signal
    from importlib.util import find_spec

    missing = [name for name in ("prometheus_client", "uvicorn") if find_spec(name) is None]
    if missing:
        raise UserError(f"tuneops reconcile needs {' and '.join(missing)}: pip install 'tuneops[daemon]'")
    from reconciler.daemon.loop import WEBHOOK_SECRET_ENV, Daemon, DaemonConfig

    if hasattr(sys.stdout, "reconfigure"):  # a log read live (kubectl logs, a file): line by line
        sys.stdout.reconfigure(line_buffering=True)
    address = None
    if listen:
        host, _, port = listen.rpartition(":")
        if not port.isdigit():
            raise UserError(f"--listen {listen}: expected HOST:PORT, e.g. 0.0.0.0:8080")
        address = (host or "0.0.0.0", int(port))
    if cache_dir is None:
        key = hashlib.sha256(f"{repo}\0{branch}\0{spec_path}".encode()).hexdigest()[:16]
        cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache_dir = cache_root / "tuneops" / "reconcile" / key
    secret = os.environ.get(WEBHOOK_SECRET_ENV)
    if address and not secret:
        click.echo(f"note: {WEBHOOK_SECRET_ENV} is not set: POST /hooks/git refuses every request", err=True)
    daemon = Daemon(DaemonConfig(repo=repo, cache_dir=cache_dir, branch=branch, path=spec_path,
                                 interval=interval, once=once, listen=address, lease=lease,
                                 notify_url=notify_url, notify_style=notify_format,
                                 webhook_secret=secret.encode() if secret else None),
                    say=lambda line: click.echo(line))
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    ctx.exit(daemon.run())  # a Lease's cluster that refuses, a --listen port taken: one error line


@cli.command(name="run")
@click.argument("command", type=click.Choice(["dataset", "finetune", "evaluate", "serve", "checkout"]))
@click.option("--job", "job_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The job file the reconciler wrote (docs/runtime.md).")
def run_job(command: str, job_file: Path) -> None:
    """Run one job: prepare a dataset, fine-tune, evaluate or serve.

    This is what the reconciler starts, as a local process or inside a Kubernetes Job; you
    rarely call it yourself. Under `torchrun` a fine-tune runs on every process, and only
    rank 0 records to MLflow. `checkout` is a pod's init container: it checks the spec
    repository's files the job reads out at the job's commit. Exits 0 when the job is done (an
    evaluation whose gates failed is done: the verdict is recorded), 1 when it could not run.
    """
    from reconciler.redaction import redact
    from reconciler.runtime import entry

    click.echo(redact(entry.run(command, job_file)))  # its errors say what to fix, in one line


@cli.command(name="pin")
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--check", "check_only", is_flag=True,
              help="Write nothing: list every source without its pin, file:line, and exit 1 if any.")
@click.option("--dry-run", is_flag=True, help="Print the diff pinning would write, and write nothing.")
@click.option("--offline", is_flag=True,
              help="Never ask the Hub: pin only the hf:// revisions the local Hugging Face cache knows.")
def pin_specs(path: Path, check_only: bool, dry_run: bool, offline: bool) -> None:
    """Write pins into the spec files, changing nothing else in them.

    A local Dataset file gets the `sha256` of its bytes; an hf:// BaseModel or Dataset gets the
    commit `revision` its branch (default `main`) points at, from the Hugging Face cache or,
    when HF_ENDPOINT is set, from the Hub. Comments, quoting and layout are kept. In CI,
    `tuneops pin --check` fails while anything is unpinned.
    """
    from reconciler import pin as pinning
    from reconciler.redaction import redact

    if check_only and (dry_run or offline):
        raise click.UsageError("--check writes nothing and asks no one: it takes no --dry-run or --offline")
    result = pinning.check(path) if check_only else pinning.pin(path, offline=offline, dry_run=dry_run)
    for error in result.errors:
        click.echo(f"error: {redact(error)}", err=True)
    if check_only:
        for finding in result.unpinned:
            click.echo(finding.text())
        if result.unpinned:
            click.echo(f"{len(result.unpinned)} source(s) not pinned: `tuneops pin` writes their pins")
        elif not result.errors:
            click.echo("every source is pinned")
        sys.exit(EXIT_INVALID if result.unpinned or result.errors else 0)
    if dry_run:
        click.echo("".join(result.diffs), nl=False)
    else:
        for finding in result.pinned:
            click.echo(f"pinned {finding.text()}")
    for finding in result.left:
        click.echo(f"left unpinned {finding.text()}")
    if not result.pinned and not result.errors:
        click.echo("nothing to pin" + (" that the Hugging Face cache knows" if result.left else ""))
    elif not dry_run and result.written:
        click.echo(f"wrote {len(result.pinned)} pin(s) to {len(result.written)} file(s)")
    sys.exit(EXIT_INVALID if result.errors else 0)


def main() -> None:
    """Console entry point: turns unexpected exceptions into one line unless TUNEOPS_DEBUG is set."""
    try:
        cli.main(prog_name="tuneops")
    except SystemExit as done:
        if _short_lived:
            sys.stdout.flush()
            sys.stderr.flush()
            code = done.code
            os._exit(code if isinstance(code, int) else (0 if code is None else EXIT_INVALID))
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as error:  # a bug, unless it is about the user's files: say which, briefly
        if os.environ.get("TUNEOPS_DEBUG"):
            raise
        from reconciler.redaction import redact

        problem = _users_problem(error)
        if problem is not None:
            click.echo(f"error: {redact(problem)}", err=True)
        else:
            click.echo(f"tuneops: internal error: {type(error).__name__}: {redact(str(error))}\n"
                       "This is a bug in tuneops. Rerun with TUNEOPS_DEBUG=1 to see the traceback.",
                       err=True)
        sys.exit(EXIT_INVALID)


def _users_problem(error: Exception) -> str | None:
    """The message for an error that reached `main` but is the user's to fix, or None for a bug:
    a file that cannot be read or written (permissions, a folder where a file belongs), a
    state database that is damaged or cannot be opened, and any TuneopsError raised outside a
    command. Commands catch these where they can say more; this is the net for the places that
    cannot."""
    from reconciler.state_files import is_state_database_error, sqlite_cause

    if isinstance(error, TuneopsError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        target = f"{error.filename} -> {error.filename2}" if error.filename2 else str(error.filename)
        return f"cannot use {target}: {error.strerror or error}"
    cause = sqlite_cause(error)
    if cause is not None and is_state_database_error(cause):
        return (f"a state database cannot be used: {cause} (the project's state is in .tuneops/ beside its "
                "tuneops.yaml; TUNEOPS_DEBUG=1 shows which file)")
    return None


if __name__ == "__main__":
    main()
