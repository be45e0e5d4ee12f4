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
        click.echo(f"error: {self.format_message()}", err=True)


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

    PATHS is one project folder (default: the current one), or spec files: files are checked
    within their project (the nearest folder up with a tuneops.yaml), so their references
    resolve, and only their own problems are reported. Reports YAML, schema and
    whole-repository problems with file, line, column and field path. Exits 0 when valid, 1
    when not.
    """
    short_lived()
    from reconciler.report import validation_json, validation_text
    from reconciler.specs.loader import ScopeError
    from reconciler.specs.validate import validate_paths

    try:
        result = validate_paths(list(paths) or [Path(".")], strict=strict)
    except ScopeError as error:
        raise click.UsageError(str(error)) from None
    result = with_capacity_check(result)
    if output_format == "json":
        click.echo(validation_json(result))
    else:
        click.echo(validation_text(result, color=_use_color(ctx)), color=_use_color(ctx))
    ctx.exit(0 if result.valid else EXIT_INVALID)


def with_capacity_check(result):  # noqa: ANN001, ANN201 - ValidationResult, imported lazily
    """Add the planner's verdict: FineTunes that cannot fit their declared GPUs."""
    from reconciler import architectures, capacity

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
    from reconciler.report import validation_text
    from reconciler.specs.validate import validate_path

    result = validate_path(path)
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
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"\nnext: tuneops validate {directory}")


@cli.command(name="run")
@click.argument("command", type=click.Choice(["dataset", "finetune", "evaluate", "serve"]))
@click.option("--job", "job_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The job file the reconciler wrote (docs/runtime.md).")
def run_job(command: str, job_file: Path) -> None:
    """Run one job: prepare a dataset, fine-tune, evaluate or serve.

    This is what the reconciler starts, as a local process or inside a Kubernetes Job; you
    rarely call it yourself. Under `torchrun` a fine-tune runs on every process, and only
    rank 0 records to MLflow. Exits 0 when the job is done (an evaluation whose gates failed is
    done: the verdict is recorded), 1 when it could not run.
    """
    from reconciler.runtime import entry

    try:
        summary = entry.run(command, job_file)
    except entry.user_error_types() as error:
        raise UserError(str(error)) from None
    click.echo(summary)


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
    except Exception as error:  # a bug, not a user mistake: say so, briefly
        if os.environ.get("TUNEOPS_DEBUG"):
            raise
        click.echo(f"tuneops: internal error: {type(error).__name__}: {error}\n"
                   "This is a bug in tuneops. Rerun with TUNEOPS_DEBUG=1 to see the traceback.",
                   err=True)
        sys.exit(EXIT_INVALID)


if __name__ == "__main__":
    main()
