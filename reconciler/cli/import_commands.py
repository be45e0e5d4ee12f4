"""`tuneops import`: specs from another tool's training config, validated as written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.cli.base import EXIT_INVALID, FORMAT_HELP, UserError, cli, short_lived, use_color

if TYPE_CHECKING:
    from reconciler.importers.result import ImportResult
    from reconciler.specs.validate import ValidationResult


@cli.command(name="import")
@click.argument("tool", type=click.Choice(["axolotl", "llamafactory"]))
@click.argument("config", type=click.Path(exists=True, dir_okay=False, readable=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to write the specs into.",
)
@click.option("--name", default=None, help="The FineTune's name (default: from the config file's name).")
@click.option(
    "--run-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The folder the tool ran in: data and DeepSpeed paths in the config are resolved from "
    "it, as the tool does (default: the current folder).",
)
@click.option("--force", is_flag=True, help="Overwrite spec files that already exist.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help=FORMAT_HELP,
)
@click.pass_context
def import_command(
    ctx: click.Context,
    tool: str,
    config: Path,
    out_dir: Path,
    name: str | None,
    run_dir: Path | None,
    force: bool,
    output_format: str,
) -> None:
    """Write Dataset, BaseModel and FineTune specs (and an Evaluation for held-out data) from an
    axolotl or LLaMA-Factory CONFIG.

    Each value carries a comment naming the config key it came from; keys that were not
    translated are listed with why. The written specs are validated: exit 0 when they are
    valid (untranslated keys are reported, not fatal), 1 when not. See docs/migrating.md.
    """
    short_lived()
    from reconciler.importers import existing_files, import_config, write_result
    from reconciler.project import Project
    from reconciler.specs.base import SpecValueError, check_dns_label
    from reconciler.specs.report import validation_text

    if name is not None:
        try:
            check_dns_label(name)
        except SpecValueError as error:
            raise click.BadParameter(error.one_line(), param_hint="--name") from None
    result = import_config(tool, config, out_dir, name=name, cwd=run_dir)
    existing = existing_files(result, out_dir)
    if existing and not force:
        raise UserError(
            "these files already exist: " + ", ".join(map(str, existing)),
            hint="pass --force to overwrite them, or --out another folder",
        )
    try:
        written = write_result(result, out_dir, force=force)
    except OSError as error:
        raise UserError(f"cannot write into {out_dir}: {error.strerror or error}") from None
    spec_files = [path for path in written if path.suffix in (".yaml", ".yml")]
    validation = Project.check(spec_files)
    if output_format == "json":
        click.echo(json.dumps(_as_json(result, written, validation), indent=2))
    else:
        for path in written:
            click.echo(f"wrote {path}")
        click.echo("")
        click.echo(validation_text(validation, color=use_color(ctx)), color=use_color(ctx))
        for line in _untranslated_lines(result):
            click.echo(line)
    ctx.exit(0 if validation.valid else EXIT_INVALID)


def _untranslated_lines(result: ImportResult) -> list[str]:
    from reconciler.importers.result import CATEGORY_TITLES

    lines: list[str] = []
    grouped = result.by_category()
    total = sum(len(items) for items in grouped.values())
    lines.append("")
    lines.append(f"{len(result.mapped)} key(s) translated; {total} not translated" + (":" if total else ""))
    for category, items in grouped.items():
        if items:
            lines.append(f"  {CATEGORY_TITLES[category]}:")
            lines += [f"    {item.key}: {item.reason}" for item in items]
    if result.notes:
        lines.append("")
        lines.append("notes:")
        lines += [f"  - {note}" for note in result.notes]
    return lines


def _as_json(result: ImportResult, written: list[Path], validation: ValidationResult) -> dict[str, object]:
    return {
        "version": 1,
        "tool": result.tool,
        "config": result.config,
        "files": [str(path) for path in written],
        "valid": validation.valid,
        "validation": validation.to_json(),
        "mapped": result.mapped,
        "untranslated": [item.to_json() for item in result.untranslated],
        "notes": result.notes,
    }
