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

EXIT_INVALID = 1


class UserError(click.ClickException):
    """A mistake the user can fix: printed as one line, no traceback, exit 1."""

    exit_code = EXIT_INVALID

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        from reconciler.redaction import redact

        click.echo(f"error: {redact(self.format_message())}", err=True)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    from reconciler.specs.loader import ScopeError
    from reconciler.specs.report import validation_json, validation_text
    from reconciler.specs.validate import validate_paths

    try:
        result = validate_paths(list(paths) or [Path(".")], strict=strict)
    except ScopeError as error:
        raise click.UsageError(str(error)) from None
    _require_project(result)
    result = with_capacity_check(result)
    if output_format == "json":
        click.echo(validation_json(result))
    else:
        click.echo(validation_text(result, color=_use_color(ctx)), color=_use_color(ctx))
    ctx.exit(0 if result.valid else EXIT_INVALID)


def _require_project(result) -> None:  # noqa: ANN001 - ValidationResult, imported lazily
    """One error for a folder that is no spec project, instead of one per unrelated YAML file."""
    if not result.is_project:
        from reconciler.project import NoProject

        raise UserError(str(NoProject(result.specs.root, len(result.files))))


def with_capacity_check(result):  # noqa: ANN001, ANN201 - ValidationResult, imported lazily
    """Add the planner's verdict: FineTunes that cannot fit their declared GPUs."""
    from reconciler.sizing import architectures, capacity
    return result.adding(list(capacity.check(result.specs, architectures.architectures(result.specs))))


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
    from reconciler.specs.report import validation_text
    from reconciler.specs.validate import validate_path

    result = validate_path(path)
    _require_project(result)
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
    from reconciler.project import NoProject, ProjectInvalid, load_project
    from reconciler.specs.report import validation_text

    try:
        return load_project(path)
    except NoProject as error:
        raise UserError(str(error)) from None
    except ProjectInvalid as invalid:
        click.echo(validation_text(invalid.result, color=_use_color(ctx)), err=True)
        click.echo("error: the specs are invalid: nothing was planned", err=True)
        ctx.exit(EXIT_INVALID)


def _plan(project, *, offline: bool, options, creating: bool = False):  # noqa: ANN001, ANN202
    """(plan, state, store, backend) for a project; reading state is the only I/O. Only `apply`
    (`creating`) opens an embedded MLflow database that is not there yet: opening creates it, and
    a plan or a status must leave a folder as it found it."""
    from reconciler.plan.plan import build_plan
    from reconciler.state import ActualState

    if offline:
        return build_plan(project.specs, project.graph, project.inputs, ActualState.unknown(), options), \
            None, None, None
    import sqlite3

    from reconciler.backends.base import BackendError
    from reconciler.project import ProjectError
    from reconciler.tracking.store import TrackingError
    from reconciler.tracking.vocabulary import TrackingUnavailable

    try:
        store = project.store() if creating or project.tracking_state_exists else None
        backend = project.backend()
        state = project.read_state(store, backend)
    except (TrackingUnavailable, TrackingError, ProjectError, BackendError) as error:
        raise UserError(str(error)) from None
    except (OSError, sqlite3.Error) as error:
        raise UserError(f"cannot read the local state in {project.state_dir}: {error}") from None
    return build_plan(project.specs, project.graph, project.inputs, state, options), state, store, backend


def _plan_against_base(project, ref: str, *, offline: bool, options):  # noqa: ANN001, ANN202
    """(plan, state, base checkout): the head planned against the specs at `ref` taken as built
    and serving; with state, a change back to a built fingerprint is free; with backend
    kubernetes and --offline, the head's manifests must validate too."""
    import dataclasses
    import tempfile

    from reconciler.git.ref import BaseRefError, checkout_base
    from reconciler.plan.base import against_base, state_from_base
    from reconciler.plan.plan import build_plan
    from reconciler.project import NoProject, ProjectInvalid, load_project

    with tempfile.TemporaryDirectory(prefix="tuneops-base-") as folder:
        try:
            base = checkout_base(project.root, ref, Path(folder))
        except BaseRefError as error:
            raise UserError(str(error)) from None
        base_project = None
        if base.root is not None:
            try:
                base_project = load_project(base.root)
            except NoProject:  # no specs yet at the base: everything is new
                pass
            except ProjectInvalid as invalid:
                click.echo(f"warning: the specs at {ref} do not validate ({len(invalid.result.errors)} "
                           "error(s)): the change is compared with nothing built", err=True)
        base_inputs = base_project.inputs if base_project is not None else {}
        base_specs = base_project.specs if base_project is not None else project.specs
        state = state_from_base(base_specs, base_inputs)
    the_plan = build_plan(project.specs, project.graph, project.inputs, state,
                          dataclasses.replace(options, prune=True))
    real_state = None
    if not offline:
        _, real_state, *_ = _plan(project, offline=False, options=options)
    elif project.settings.backend == "kubernetes":  # the CI dry-run's other half
        _manifests(project, error_prefix="the Kubernetes manifests do not render: ")
    the_plan = against_base(the_plan, base_inputs, project.specs, real_state)
    if base_project is not None:
        the_plan = dataclasses.replace(the_plan, settings_changes=_shown_settings_changes(
            base_project.settings, project.settings))
    return the_plan, real_state, base


def _shown_settings_changes(before, after):  # noqa: ANN001, ANN202 - ProjectSettings
    """tuneops.yaml's changed fields with any credential in their values masked."""
    import dataclasses

    from reconciler.plan.plan import settings_diff
    from reconciler.redaction import redact

    def masked(value):  # noqa: ANN001, ANN202
        return redact(value) if isinstance(value, str) else value

    return tuple(dataclasses.replace(change, before=masked(change.before), after=masked(change.after))
                 for change in settings_diff(before, after))


def _manifests(project, wanted=None, *, validate: bool = True,  # noqa: ANN001
               error_prefix: str = "") -> list[dict]:
    """The project's rendered objects (or those of `wanted`), checked against the Kubernetes
    schemas unless told not to; every problem printed, then one UserError."""
    from reconciler.backends.kubernetes.manifests import cluster_context, render_project
    from reconciler.backends.kubernetes.render import RenderError
    from reconciler.backends.kubernetes.validate import validate_manifests
    from reconciler.git.info import git_origin, repo_root

    try:
        where = cluster_context(project.specs, git_origin(project.root), repo_root(project.root))
        rendered = render_project(project.specs, project.inputs, where, wanted)
    except RenderError as error:
        raise UserError(f"{error_prefix}{error}") from None
    objects = [obj for item in rendered for obj in item.objects]
    if not validate:
        return objects
    try:
        problems = validate_manifests(objects, project.settings.kubernetes.version)
    except ImportError:
        raise UserError("checking manifests needs kubernetes-validate: pip install 'tuneops[kubernetes]'"
                        + ("" if error_prefix else " (or pass --no-validate)")) from None
    if problems:
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        raise UserError(f"{len(problems)} rendered object(s) do not validate against Kubernetes "
                        f"{project.settings.kubernetes.version}")
    return objects


def _head_commit(project) -> str | None:  # noqa: ANN001
    from reconciler.git.info import git_origin

    return git_origin(project.root).commit


def _plan_options(project, *, prune: bool, retry_failed: bool = False, target=None):  # noqa: ANN001, ANN202
    from reconciler.plan.plan import PlanOptions

    settings = project.settings
    unknown = [str(rid) for rid in target or () if rid not in project.specs]
    if unknown:
        raise UserError(f"--target {', '.join(unknown)}: no such spec under {project.root} "
                        "(`tuneops graph` lists them)")
    return PlanOptions(prune=prune or settings.prune.enabled, max_attempts=settings.max_attempts,
                       retry_failed=retry_failed, target=target,
                       multi_node=project.settings.backend == "kubernetes")


def _plan_header(project, offline: bool) -> str:  # noqa: ANN001
    from reconciler.git.info import git_origin
    from reconciler.specs.loader import display_path
    from reconciler.tracking.vocabulary import redact_uri

    origin = git_origin(project.root)
    commit = (f"at commit {origin.commit[:12]}" + (" + uncommitted changes" if origin.dirty else "")) \
        if origin.commit else "(not in a Git repository)"
    where = "state not read (--offline)" if offline else \
        f"state from MLflow {redact_uri(project.tracking_uri)} and the {project.settings.backend} backend"
    folder = display_path(project.root).rstrip("/") + "/"  # `specs in specs/`: a folder, not a word
    return f"specs in {folder} {commit}; {where}"


def _estimates(project, the_plan, state=None):  # noqa: ANN001, ANN202
    """The planner's figures for each FineTune the plan would train, by ResourceId."""
    from reconciler.plan.plan import Action
    from reconciler.sizing import architectures
    from reconciler.sizing.dataset_rows import train_rows
    from reconciler.sizing.estimates import estimates_for
    from reconciler.specs.base import ResourceId

    training = {a.resource.name for a in the_plan.actions if a.resource.kind == "FineTune"
                and a.action in (Action.CREATE, Action.REBUILD, Action.RETRY)}
    if not training:
        return {}
    found = estimates_for(project.specs, architectures.architectures(project.specs, fetch=state is not None),
                          train_rows(project.specs, project.inputs, state), project.settings.planner,
                          names=training)
    return {ResourceId("FineTune", name): estimate for name, estimate in found.items()}


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
    options = _plan_options(project, prune=prune, target=_targets(targets))
    base = None
    if base_ref:
        the_plan, state, base = _plan_against_base(project, base_ref, offline=offline, options=options)
    else:
        the_plan, state, *_ = _plan(project, offline=offline, options=options)
    header = _plan_header(project, offline)
    if base is not None:
        header = f"{header}; compared with {base.ref} ({base.commit[:12]})"
    estimates = _estimates(project, the_plan, state)
    if output_format == "json":
        source = {"path": str(project.root), "header": header, "head_commit": _head_commit(project)}
        if base is not None:
            source |= {"base_ref": base.ref, "base_commit": base.commit}
        click.echo(json.dumps(plan_json(the_plan, source, estimates), indent=2))
    elif output_format == "markdown":
        click.echo(plan_markdown(the_plan, header, estimates))
    else:
        click.echo(plan_text(the_plan, header, color=_use_color(ctx), estimates=estimates),
                   color=_use_color(ctx))
    ctx.exit(2 if detailed_exitcode and the_plan.has_changes else 0)


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

    project = _load(ctx, path)
    wanted = _targets(targets)
    unknown = [str(rid) for rid in wanted or () if rid not in project.specs]
    if unknown:
        raise UserError(f"--target {', '.join(unknown)}: no such spec under {project.root}")
    objects = _manifests(project, wanted, validate=not no_validate)
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

    from reconciler.sizing import architectures
    from reconciler.sizing.dataset_rows import train_rows
    from reconciler.sizing.estimates import estimate_fine_tune
    from reconciler.sizing.report import estimate_json, estimate_text
    from reconciler.specs.base import ResourceId
    from reconciler.specs.finetune import FineTuneResource
    from reconciler.specs.report import validation_text
    from reconciler.specs.validate import validate_path

    name = fine_tune.removeprefix("FineTune/")
    result = validate_path(path)  # without the capacity check: a FineTune that does not fit is shown
    _require_project(result)
    if not result.valid:
        click.echo(validation_text(result, color=_use_color(ctx)), err=True)
        click.echo("error: the specs are invalid: nothing was estimated", err=True)
        ctx.exit(EXIT_INVALID)
    specs = result.specs
    resource = specs.resource(ResourceId("FineTune", name), FineTuneResource)
    if resource is None:
        known = ", ".join(loaded.id.name for loaded in specs.of_kind("FineTune")) or "none"
        raise UserError(f"no FineTune named '{name}' under {path} (FineTunes: {known})")
    settings = specs.settings.planner
    if mfu is not None and resource.spec.resources.gpu_product:
        product = resource.spec.resources.gpu_product
        settings = settings.model_copy(update={"mfu": {**settings.mfu, product: mfu}})
    elif mfu is not None:
        raise UserError("--mfu needs resources.gpuProduct on the FineTune: GPU-hours are per GPU product")
    found = estimate_fine_tune(specs, resource, architectures.architectures(specs, fetch=True),
                               train_rows(specs), settings)
    if output_format == "json":
        click.echo(json.dumps(estimate_json(found), indent=2))
    else:
        click.echo(estimate_text(found))


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

    from reconciler.apply import Executor, LiveReporter, Outcome, PruneRefused, Reporter, check_prune
    from reconciler.backends.kubernetes.render import RenderError
    from reconciler.git.info import git_origin
    from reconciler.lock import ApplyLock, Locked
    from reconciler.plan.report import plan_text
    from reconciler.redaction import redact

    project = _load(ctx, path)
    lock = ApplyLock(project.state_dir)
    try:
        lock.acquire()
    except Locked as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"cannot lock {lock.path}: {error.strerror or error}") from None
    try:
        options = _plan_options(project, prune=prune, retry_failed=retry_failed, target=_targets(targets))
        the_plan, _state, store, backend = _plan(project, offline=False, options=options, creating=True)
        click.echo(plan_text(the_plan, _plan_header(project, False), color=_use_color(ctx),
                             estimates=_estimates(project, the_plan, _state)), color=_use_color(ctx))
        if not the_plan.has_changes and not any(a.action == "wait" for a in the_plan.actions):
            blocked = [a for a in the_plan.actions if a.action in ("blocked", "suspended")]
            click.echo(f"Nothing can be applied: {len(blocked)} blocked or suspended (see above)." if blocked
                       else "Nothing to do: everything is up to date.")
            _print_endpoints(project, _state)
            return
        try:
            live = [s for s in _state.backend.servers if s.is_live]
            live += [j for j in _state.backend.jobs if j.is_live]
            check_prune(the_plan, project.settings.prune.max_deletes, force, len(live))
        except PruneRefused as error:
            raise UserError(str(error)) from None
        if not yes and not _confirm("\nApply this plan?"):
            click.echo("Nothing applied.")
            return
        stop = threading.Event()

        def interrupted(signum, frame):  # noqa: ANN001, ARG001
            stop.set()
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends it at once
            click.echo("stopping after the current steps (Ctrl-C again to quit now): running jobs keep "
                       "running and the next apply adopts them", err=True)

        signal.signal(signal.SIGTERM, interrupted)
        signal.signal(signal.SIGINT, interrupted)
        click.echo("")
        from reconciler.tracking.store import TrackingError
        from reconciler.tracking.vocabulary import TrackingUnavailable

        reporter = LiveReporter() if sys.stdout.isatty() and not os.environ.get("TUNEOPS_PLAIN") \
            else Reporter(click.echo)
        try:
            executor = Executor(project, the_plan, backend, store, git_origin(project.root), reporter,
                                max_parallel=_max_parallel(project.settings),
                                max_attempts=project.settings.max_attempts, stop=stop)
            with reporter:
                result = executor.run()
        except (TrackingUnavailable, TrackingError, RenderError) as error:  # RenderError: cluster settings
            raise UserError(str(error)) from None
        done = sum(1 for s in result.steps if s.outcome == Outcome.DONE)
        click.echo(f"\nApplied: {done} done, {len(result.failed)} failed, {len(result.blocked)} blocked or "
                   "skipped.")
        _print_endpoints(project, _state_after_apply(project, store, backend))
        if result.failed:
            for step in result.failed:
                click.echo(f"error: {step.resource}: {redact(step.message)}", err=True)
            ctx.exit(EXIT_INVALID)
    finally:
        lock.release()


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


def _max_parallel(settings) -> int:  # noqa: ANN001 - ProjectSettings
    """Jobs apply runs at once: this machine's share, or what the cluster (and its queues) takes."""
    if settings.backend == "kubernetes":
        return settings.kubernetes.max_parallel
    return settings.local.max_parallel


def _state_after_apply(project, store, backend):  # noqa: ANN001, ANN202 - ActualState
    """What serves now and what scored it; the servers alone when MLflow cannot be read."""
    if backend is None:
        return None
    from reconciler.state import ActualState

    try:
        return project.read_state(store, backend)
    except Exception:  # noqa: BLE001 - the endpoints are a courtesy: the apply itself is done
        return ActualState({}, {}, {}, backend.observe())


def _print_endpoints(project, state) -> None:  # noqa: ANN001 - Project, ActualState
    """Where each Deployment answers, with a request the reader can paste that shows what was
    trained: a question its Evaluation asked, decoded as it decoded (tracking/sample_request.py)."""
    if state is None:
        return
    from reconciler.specs.base import ResourceId
    from reconciler.specs.deployment import DeploymentResource
    from reconciler.tracking.sample_request import curl, sample_request

    for server in state.backend.servers:
        deployment = project.specs.resource(ResourceId("Deployment", server.name), DeploymentResource)
        if server.phase != "serving" or deployment is None or server.url is None:
            continue
        request = sample_request(deployment, server, state)
        click.echo(f"{server.name}: serving {server.model_version} at {server.url}")
        for line in request.note.splitlines():
            click.echo(f"  # {line}")
        click.echo(f"  {curl(server.url, server.name, request)}")


@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=FORMAT_HELP)
@click.pass_context
def status(ctx: click.Context, path: Path, output_format: str) -> None:
    """Show each resource's phase: Ready, Running (with progress and ETA), Pending, Failed,
    Blocked or Suspended, with its model version, last run and the URL of each Deployment."""
    import json
    import time

    from reconciler.status import status_rows, status_text

    project = _load(ctx, path)
    the_plan, state, _store, _backend = _plan(project, offline=False,
                                              options=_plan_options(project, prune=False))
    rows = status_rows(the_plan, state, time.time())
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
    from reconciler.backends.base import BackendError
    from reconciler.project import ProjectError, unvalidated_project
    from reconciler.specs.rules import DefinedNames
    from reconciler.tracking.store import TrackingError
    from reconciler.tracking.vocabulary import TrackingUnavailable

    if path is not None and path_option is not None:
        raise click.UsageError("give the path once: as an argument (--path is its old spelling)")
    if path_option is not None:
        click.echo("note: --path is deprecated: give the path as an argument, "
                   f"`tuneops logs {resource} {path_option}`", err=True)
    path = path or path_option or Path(".")
    rid = _resource_id(resource)
    if version is not None and rid.kind not in ("FineTune", "Evaluation"):
        raise click.UsageError(f"--version picks a model version: it applies to a FineTune (the version it "
                               f"built) or an Evaluation (the version it scored), not a {rid.kind}")
    try:
        backend, loaded = unvalidated_project(path)
        defined = loaded.declared | {spec.id for spec in loaded.specs}
        if rid not in defined:
            hint = DefinedNames(defined).hint(rid)
            raise UserError(f"{rid} is not defined in {path}" + (f" ({hint})" if hint else ""))
        if rid.kind == "BaseModel":
            raise UserError(f"{rid} has no log: a BaseModel is read where it is, by the jobs that use it "
                            "(see `tuneops logs FineTune/NAME`)")
        if version is not None:
            lines, note = _logs_of_version(backend, loaded, rid, version, tail=tail, follow=follow)
        else:
            lines, note = _logs_of_wanted_run(backend, path, rid, tail=tail, follow=follow)
        if lines is None:
            raise UserError(f"no logs for {rid} in {path}: it has not run here (see `tuneops status`)")
        if note:
            click.echo(f"note: {note}", err=True)
        for line in lines:  # the backends redact what the job printed (redaction.redact_lines)
            click.echo(line, nl=False)
    except (ProjectError, BackendError, TrackingUnavailable, TrackingError) as error:
        raise UserError(str(error)) from None


def _logs_of_version(backend, loaded, rid, version: int, **how):  # noqa: ANN001, ANN202
    """(lines, note) of the run of model version `version`, or a UserError that lists the built ones."""
    from reconciler.project import built_versions

    runs = built_versions(loaded.settings, loaded.root, rid.kind, rid.name)
    chosen = next((run for run in runs if run.model_version and run.version_number == version), None)
    what = "built" if rid.kind == "FineTune" else "scored"
    if chosen is None:
        numbers = sorted({run.version_number for run in runs if run.model_version})
        listed = (f"versions {what}: {', '.join(map(str, numbers))}" if numbers
                  else f"no version {what} yet")
        raise UserError(f"{rid} has no version {version} ({listed}; see `tuneops status`)")
    lines = backend.logs(rid.kind, rid.name, fingerprint=chosen.fingerprint, **how)
    if lines is None:
        raise UserError(f"no log of {rid} for {chosen.model_version} here: the run that {what} it "
                        f"(fingerprint {chosen.fingerprint[:12]}) left no log on this backend")
    return lines, f"{rid}: the run that {what} {chosen.model_version} (fingerprint {chosen.fingerprint[:12]})"


def _logs_of_wanted_run(backend, path: Path, rid, **how):  # noqa: ANN001, ANN202
    """(lines, note): the run at the fingerprint the specs ask for, else the newest run. Specs
    being edited (not valid now) still get a log: the newest."""
    from reconciler.project import ProjectError, ProjectInvalid, load_project

    fingerprint = None
    try:
        project = load_project(path)
        if rid in project.inputs:
            fingerprint = project.fingerprint(rid)
    except (ProjectInvalid, ProjectError):
        pass
    if fingerprint is not None:
        lines = backend.logs(rid.kind, rid.name, fingerprint=fingerprint, **how)
        if lines is not None:
            return lines, f"{rid}: the run at the fingerprint the specs ask for ({fingerprint[:12]})"
    lines = backend.logs(rid.kind, rid.name, **how)
    why = ("the specs do not validate now" if fingerprint is None
           else f"none at the fingerprint the specs ask for ({fingerprint[:12]}) yet")
    return lines, f"{rid}: the newest run ({why})" if lines is not None else None


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
    from reconciler.project import ProjectError, project_backend

    wanted = _targets(targets)
    from reconciler.backends.base import BackendError

    try:
        backend = project_backend(path)
        state = backend.observe()
    except (ProjectError, BackendError) as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"cannot read the local state: {error}") from None
    live = {(("Deployment", s.name)) for s in state.servers if s.is_live}
    live |= {(j.kind, j.name) for j in state.jobs if j.is_live}
    stopped = 0
    for kind, name in sorted(live):
        if wanted is not None and (kind, name) not in {(t.kind, t.name) for t in wanted}:
            continue
        try:
            handles = backend.stop(kind, name)
        except BackendError as error:
            raise UserError(f"{kind}/{name}: {error}") from None
        stopped += len(handles)
        click.echo(f"{kind}/{name}: stopped {', '.join(handles)}")
    for target in sorted(wanted or ()):
        if (target.kind, target.name) not in live:  # a typo, or already stopped: say so, by name
            click.echo(f"{target}: not running (`tuneops status` lists what runs)")
    if not stopped and not wanted:
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
    from reconciler.daemon.loop import WEBHOOK_SECRET_ENV, Daemon, DaemonConfig, DaemonError

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
    from reconciler.backends.base import BackendError

    try:
        code = daemon.run()
    except (BackendError, DaemonError) as error:  # the Lease's cluster refuses; --listen's port is taken
        raise UserError(str(error)) from None
    ctx.exit(code)


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
    from reconciler.runtime import entry

    try:
        summary = entry.run(command, job_file)
    except entry.user_error_types() as error:
        raise UserError(str(error)) from None
    from reconciler.redaction import redact

    click.echo(redact(summary))


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
    state database that is damaged or cannot be opened, and the errors of the project, MLflow
    and the backend that the commands report as one line. Commands catch these where they can
    say more; this is the net for the places that cannot."""
    from reconciler.backends.base import BackendError
    from reconciler.project import ProjectError
    from reconciler.state_files import is_state_database_error, sqlite_cause
    from reconciler.tracking.store import TrackingError
    from reconciler.tracking.vocabulary import TrackingUnavailable

    if isinstance(error, ProjectError | BackendError | TrackingError | TrackingUnavailable):
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
