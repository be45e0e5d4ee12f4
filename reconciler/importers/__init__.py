"""`tuneops import`: an axolotl or LLaMA-Factory training config -> Dataset, BaseModel, FineTune
(and Evaluation) specs, each value commented with the key it came from, and the keys that were
not translated with why. Pure Python: reading a config never loads the training libraries.

Paths are resolved as the tools resolve them (from the working directory) and written relative
to the output folder, where the specs are."""

from __future__ import annotations

from pathlib import Path

from reconciler.fileio import write_text_atomic
from reconciler.importers.common import Context, ImportError_, read_config
from reconciler.importers.result import ImportResult

TOOLS = ("axolotl", "llamafactory")
TOOL_NAMES = {"axolotl": "axolotl", "llamafactory": "LLaMA-Factory"}


def import_config(
    tool: str, config_path: Path, out_dir: Path, *, name: str | None = None, cwd: Path | None = None
) -> ImportResult:
    """Translate a config; nothing is written. `cwd` is where the tool would have run (data and
    DeepSpeed paths are resolved from it); default: the current folder."""
    if tool not in TOOLS:
        raise ImportError_(f"unknown tool {tool!r}: one of {', '.join(TOOLS)}")
    config = read_config(config_path)
    ctx = Context(
        TOOL_NAMES[tool],
        config_path,
        (cwd or Path.cwd()).absolute(),
        out_dir.absolute(),
        ImportResult(TOOL_NAMES[tool], str(config_path)),
    )
    if tool == "axolotl":
        from reconciler.importers.axolotl import import_axolotl

        return import_axolotl(config, ctx, name)
    from reconciler.importers.llamafactory import import_llamafactory

    return import_llamafactory(config, ctx, name)


def existing_files(result: ImportResult, out_dir: Path) -> list[Path]:
    return [out_dir / name for name in result.texts() if (out_dir / name).exists()]


def write_result(result: ImportResult, out_dir: Path, *, force: bool = False) -> list[Path]:
    """Write every file atomically; refuse to replace any (naming them all) unless `force`."""
    existing = existing_files(result, out_dir)
    if existing and not force:
        raise FileExistsError("these files already exist: " + ", ".join(str(p) for p in existing))
    written = []
    for name, text in result.texts().items():
        write_text_atomic(out_dir / name, text)
        written.append(out_dir / name)
    return written
