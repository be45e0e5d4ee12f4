"""Commands about the specs themselves, which need no service: validate, graph, schema, init, pin."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from reconciler.cli.base import (
    EXIT_INVALID,
    FORMAT_HELP,
    SPEC_PATH,
    UserError,
    approval_of,
    approval_options,
    cli,
    refuse_unknown_approvals,
    short_lived,
    use_color,
)


@cli.command()
@click.argument("paths", nargs=-1, type=SPEC_PATH)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=FORMAT_HELP)
@approval_options
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...], strict: bool, output_format: str,
             approved: tuple[str, ...], approval_reason: str | None) -> None:
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

    approval = approval_of(approved, approval_reason)
    try:
        result = Project.check(list(paths) or [Path(".")], strict=strict, approval=approval)
    except ScopeError as error:
        raise click.UsageError(str(error)) from None
    refuse_unknown_approvals(approval, result.specs)
    if output_format == "json":
        click.echo(validation_json(result))
    else:
        click.echo(validation_text(result, color=use_color(ctx)), color=use_color(ctx))
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
        click.echo(validation_text(result, color=use_color(ctx)), err=True)
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



@cli.command()
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--write", is_flag=True, help="Write the block into the repository's CODEOWNERS (.github/, the "
              "root or docs/, wherever it is; else .github/CODEOWNERS), keeping its other lines.")
@click.option("--check", is_flag=True, help="Exit 1 when the CODEOWNERS file's block is not what the teams "
              "say (for CI).")
def codeowners(path: Path | None, write: bool, check: bool) -> None:
    """CODEOWNERS lines that give each team's folders to its owners (teams in tuneops.yaml), so a
    pull request changing a team's specs asks that team to review it. Prints the block unless
    --write or --check."""
    from reconciler.codeowners import LOCATIONS, MarkersBroken, block, merged
    from reconciler.fileio import write_text_atomic
    from reconciler.git.info import repo_root
    from reconciler.specs.loader import load_settings, project_root

    if write and check:
        raise click.UsageError("--write and --check: give one")
    root = project_root((path or Path(".")).resolve())
    settings, problems, _ = load_settings(root)
    if any(problem.severity == "error" for problem in problems):
        raise UserError("\n".join(problem.text() for problem in problems if problem.severity == "error"))
    if not settings.teams:
        raise UserError(f"{root / 'tuneops.yaml'} defines no teams: add `teams:` (docs/teams.md)")
    top = repo_root(root) or root
    prefix = root.relative_to(top).as_posix() if root != top else ""
    lines = block(settings, "" if prefix == "." else prefix)
    if not write and not check:
        click.echo("\n".join(lines))
        return
    target = next((top / where for where in LOCATIONS if (top / where).is_file()), top / LOCATIONS[0])
    try:
        existing = target.read_text(encoding="utf-8") if target.is_file() else ""
        wanted = merged(existing, lines)
    except (OSError, UnicodeDecodeError, MarkersBroken) as error:
        raise UserError(f"{target}: {getattr(error, 'strerror', None) or error}") from None
    if check:
        if existing != wanted:
            raise UserError(f"{target} is out of date with the teams in tuneops.yaml: run "
                            "`tuneops codeowners --write`")
        click.echo(f"{target}: up to date")
        return
    if existing == wanted:
        click.echo(f"{target}: up to date")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, wanted)
    click.echo(f"wrote {target}")
