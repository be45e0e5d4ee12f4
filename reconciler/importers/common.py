"""What both importers share: where a path in a config points (resolved from the working
directory, as axolotl and LLaMA-Factory resolve it, and written relative to the output folder),
spec names, the BaseModel and Dataset drafts, and the Evaluations for held-out data. Chat
template names are chat_templates.py's, DeepSpeed configs deepspeed.py's, FineTune settings
fine_tune.py's."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.importers.result import Category, ImportResult, SpecDraft
from reconciler.specs.base import suggest_dns_label
from reconciler.specs.confinement import repository_root
from reconciler.specs.dataset import FORMAT_BY_EXTENSION

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_MAX_CONFIG_BYTES = 4 * 1024 * 1024


class ImportError_(PermanentError):  # noqa: N801 (the builtin ImportError means something else)
    """A config that cannot be imported at all (unreadable, not YAML, not a mapping)."""


@dataclass
class Context:
    """One import: the tool's name as users write it, the folders paths are resolved from and
    written relative to, and the account being kept."""

    tool: str  # "axolotl" | "LLaMA-Factory"
    config_path: Path
    cwd: Path
    out_dir: Path
    result: ImportResult
    gpus: bool = True  # both tools train on GPUs; the FineTune asks for one unless told otherwise
    warned_outside: set[str] = field(default_factory=set)

    def says(self, key: str, how: str = "") -> str:
        """The provenance comment: `axolotl: lora_r`, or with how the value was converted."""
        return f"{self.tool}: {key}" + (f" ({how})" if how else "")

    def local(self, value: str) -> Path | None:
        """The path a config value names, resolved from the working directory, if it exists."""
        path = Path(os.path.expanduser(value))
        path = path if path.is_absolute() else self.cwd / path
        return path if path.exists() else None

    def file_uri(self, path: Path, key: str) -> str:
        """A file:// source relative to the output folder (where the spec will be), with a note
        when the file is outside the spec repository that validation confines paths to."""
        target = path.absolute()
        relative = os.path.relpath(target, self.out_dir.absolute()).replace(os.sep, "/")
        root = repository_root(self.out_dir)
        inside = _is_within(target.resolve(), root.resolve())
        if not inside and str(target) not in self.warned_outside:
            self.warned_outside.add(str(target))
            self.result.note(
                f"{key}: {target} is outside the spec repository {root}: validation refuses "
                "file:// paths there; move the data into the repository, or add its folder "
                "to policy.allowedFileRoots in tuneops.yaml"
            )
        return f"file://{relative}"


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def read_config(path: Path) -> dict[str, Any]:
    """The config as the tools read it (PyYAML, YAML 1.1), or a clear error."""
    import yaml

    try:
        if path.is_dir():
            raise ImportError_(f"{path} is a folder: give the config file")
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ImportError_(f"{path} is over 4 MiB: not a training config")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ImportError_(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ImportError_(f"{path} is not UTF-8 text") from None
    except OSError as error:
        raise ImportError_(f"cannot read {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ImportError_(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        shape = "empty" if data is None else f"a {type(data).__name__}"
        raise ImportError_(f"{path} is {shape}, not a mapping of settings: is it a training config?")
    return {str(key): value for key, value in data.items()}


def report_present(ctx: Context, config: dict[str, Any], reasons: dict[str, str], category: Category) -> None:
    """Report each key of a tool's list (ignored by design, or unsupported) that the config sets."""
    for key, reason in reasons.items():
        if key in config:
            ctx.result.report(key, category, reason)


def name_from(value: str, fallback: str) -> str:
    """A spec name from a model id, a file name or a config name: `meta-llama/Llama-3.1-8B` ->
    `llama-3-1-8b`."""
    stem = value.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (*FORMAT_BY_EXTENSION, ".yaml", ".yml", ".gz"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    slug = suggest_dns_label(stem)
    if not slug or not slug[0].isalpha():
        slug = f"{fallback}-{slug}".strip("-")[:63].strip("-")
    return slug or fallback


def unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate = f"{name[:60]}-{number}"
        number += 1
    taken.add(candidate)
    return candidate


def is_hub_id(value: str) -> bool:
    return bool(_HUB_ID.fullmatch(value)) and len(value) <= 96 and not value.startswith(".")


def as_number(value: Any) -> float | int | None:
    """A number as the tools read it: PyYAML reads `2e-4` as a string, and both tools convert it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() and re.fullmatch(r"[+-]?\d+", value.strip()) else number
    return None


def as_int(value: Any) -> int | None:
    number = as_number(value)
    return number if isinstance(number, int) else None


def as_list(value: Any) -> list[str]:
    """A list as both tools accept it: a YAML list or a comma-separated string."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        return [str(item) for item in value]
    return []


def model_source(ctx: Context, draft: SpecDraft, key: str, value: Any) -> None:
    """A model id or folder -> BaseModel source: a local folder (from the working directory) as
    file://, else a Hub id as hf:// (to be pinned)."""
    if not isinstance(value, str) or not value.strip():
        ctx.result.report(key, "unsupported", "no model named: give a Hub id or a local folder")
        draft.set("source", "hf://set-me/model", "not in the config: name the model")
        return
    local = ctx.local(value)
    if local is not None:
        draft.set("source", ctx.file_uri(local, key), ctx.says(key, "a local folder"))
    elif value.startswith("s3://"):
        draft.set("source", value, ctx.says(key))
    elif is_hub_id(value):
        draft.set("source", f"hf://{value}", ctx.says(key, "a Hub id; `tuneops pin` pins its revision"))
        ctx.result.note(
            f"{key}: hf://{value} is not pinned to a commit: run `tuneops pin` to write its "
            "revision (validation warns until then)"
        )
    else:
        ctx.result.report(
            key,
            "unsupported",
            f"{value!r} is neither a local folder (from {ctx.cwd}) nor a Hugging Face model id",
        )
        draft.set("source", "hf://set-me/model", ctx.says(key, "not found: name the model"))
        return
    ctx.result.map(key, "BaseModel.spec.source")


def base_model_draft(ctx: Context, key: str, model: Any) -> SpecDraft:
    """The BaseModel, named after the model the config's `key` names, with its source."""
    base = SpecDraft(
        "BaseModel",
        name_from(str(model or "base-model"), "model"),
        header=header(ctx, "Pin `revision` (`tuneops pin`) so the spec always means the same weights."),
    )
    model_source(ctx, base, key, model)
    return base


def trust_remote_code(ctx: Context, base: SpecDraft, config: dict[str, Any]) -> None:
    if "trust_remote_code" in config:
        base.set("trustRemoteCode", bool(config["trust_remote_code"]), ctx.says("trust_remote_code"))
        ctx.result.map("trust_remote_code", "BaseModel.spec.trustRemoteCode")


# --- evaluations -------------------------------------------------------------------------------


# Methods whose fine-tune an Evaluation of perplexity cannot score, and why: held-out data then
# serves the validation during training only.
NOT_EVALUATED = {
    "reward": "a reward model scores text and does not generate, so no Evaluation can score it; "
    "its validation split gives the eval loss during training",
    "grpo": "GRPO's prompt rows need not hold an answer to score perplexity on; the rewards score "
    "the validation prompts when the FineTune evaluates during training (evaluation.everySteps). "
    "To score the result, add an Evaluation on instruction or chat data",
}


def evaluation_data_unused(method: str, held_out_key: str) -> str:
    """Why data held out for evaluation only (test_datasets, eval_dataset) is not translated."""
    return (
        f"evaluation data, which method {method} cannot use: {NOT_EVALUATED[method]}. To watch it "
        f"during training, hold rows of the training data out with {held_out_key}"
    )


def evaluations(
    ctx: Context, fine_tune: SpecDraft, held_out: list[tuple[SpecDraft, str, str]], method: str
) -> list[SpecDraft]:
    """An Evaluation per held-out set, scoring perplexity (what eval loss measures) on it:
    (dataset, split, the config keys that held it out); none for a method it cannot score."""
    if method in NOT_EVALUATED:
        for _, _, keys in held_out:
            ctx.result.note(f"{keys}: no Evaluation was written for method {method}: {NOT_EVALUATED[method]}")
        return []
    drafts: list[SpecDraft] = []
    taken: set[str] = set()
    gpus = fine_tune.get("resources.gpusPerNode") or 0
    for dataset, split, keys in held_out:
        name = unique(
            f"{fine_tune.name}-eval"[:63]
            if len(held_out) == 1
            else f"{fine_tune.name}-{dataset.name}"[:58].rstrip("-") + "-eval",
            taken,
        )
        draft = SpecDraft(
            "Evaluation",
            name,
            header=header(
                ctx,
                "Scores the fine-tune on the data the "
                "config held out, with perplexity "
                "(exp of eval loss). Add gates to block "
                "worse models from deployment.",
            ),
        )
        draft.set("model.fineTune", fine_tune.name)
        draft.set("dataset.name", dataset.name)
        draft.set("dataset.split", split, ctx.says(keys))
        draft.set("metrics", ["perplexity"], "eval loss, as perplexity")
        if gpus:
            draft.set("resources.gpus", 1, "the fine-tune trains on GPUs; so is it scored")
        drafts.append(draft)
    return drafts


def header(ctx: Context, purpose: str) -> list[str]:
    """The comment lines a file opens with: where it came from, and what it is for."""
    import textwrap

    text = (
        f"Imported from {ctx.config_path.name} ({ctx.tool}) by `tuneops import`: the comment beside "
        f"each value names the config key it came from. {purpose}"
    )
    return textwrap.wrap(text, 96)


def package(
    ctx: Context,
    base: SpecDraft,
    datasets: list[SpecDraft],
    fine_tune: SpecDraft,
    evaluation_drafts: list[SpecDraft],
) -> ImportResult:
    result = ctx.result
    result.files["base-model.yaml"] = [base]
    result.files["datasets.yaml"] = datasets
    result.files["fine-tune.yaml"] = [fine_tune]
    if evaluation_drafts:
        result.files["evaluations.yaml"] = evaluation_drafts
    return result


# --- datasets ----------------------------------------------------------------------------------


def dataset_draft(ctx: Context, name: str, taken: set[str]) -> SpecDraft:
    """A Dataset named after its path or name, unique among the `taken` names."""
    return SpecDraft(
        "Dataset",
        unique(name_from(name, "data"), taken),
        header=header(ctx, "Paths in file:// are relative to this file."),
    )


def placeholder_dataset(ctx: Context, name: str, why: str) -> SpecDraft:
    """A Dataset to fill in by hand, where the config names no data that could be translated."""
    placeholder = SpecDraft("Dataset", name, header=header(ctx, ""))
    placeholder.set("source", "file://data/train.jsonl", why)
    return placeholder


def hub_dataset(ctx: Context, draft: SpecDraft, key: str, dataset_id: str, how: str) -> None:
    draft.set("source", f"hf://{dataset_id}", ctx.says(key, how))
    ctx.result.map(key, "Dataset.spec.source")
    ctx.result.note(f"{key}: hf://{dataset_id} is not pinned to a commit: run `tuneops pin`")


def validation_share(
    ctx: Context, config: dict[str, Any], key: str, zero_maps_to: str = "Dataset.spec.split.validation"
) -> float:
    """The share of rows the config holds out for validation (`val_set_size`, `val_size`); the
    tools also take a row count, which tuneops does not."""
    if key not in config:
        return 0.0
    value = as_number(config[key])
    if value is None or value < 0:
        ctx.result.report(key, "unsupported", f"not a share of rows: {config[key]!r}")
        return 0.0
    if value >= 1:
        ctx.result.report(
            key,
            "unsupported",
            f"{value} rows: tuneops holds out a share, not a count; "
            "set split.validation to rows held out / rows",
        )
        return 0.0
    ctx.result.map(key, "Dataset.spec.split.validation" if value > 0 else zero_maps_to)
    return float(value)


def data_file(ctx: Context, key: str, path: Path) -> Path | None:
    """A local data path -> the one file a Dataset reads: the file itself, or the only data file
    in a folder; None (reported) when there is no single file."""
    if path.is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMAT_BY_EXTENSION)
    if len(files) == 1:
        ctx.result.note(
            f"{key}: the folder {path.name} holds one data file, {files[0].name}: the Dataset reads it"
        )
        return files[0]
    ctx.result.report(
        key,
        "unsupported",
        f"the folder {path} holds {len(files)} data files: a Dataset reads "
        "one file; make one Dataset per file (weights mix them)",
    )
    return None


def split_for(ctx: Context, draft: SpecDraft, validation: float, key: str | None) -> None:
    """Every row in training, or a validation share as the config held out; never a test share,
    since the tools hold none out."""
    if validation > 0:
        draft.set("split.train", round(1 - validation, 10), ctx.says(key or "", "the rest"))
        draft.set("split.validation", validation, ctx.says(key or ""))
    else:
        draft.set("split.train", 1.0, f"{ctx.tool} trains on every row (no validation set held out)")
        draft.set("split.validation", 0.0)
    draft.set("split.test", 0.0)


def evaluation_only_split(ctx: Context, draft: SpecDraft, key: str, label: str) -> None:
    """Data the config holds out for evaluation only (`label` names it in the note)."""
    draft.set(
        "split.train",
        1.0,
        ctx.says(
            key,
            "evaluation data: every row in one split, which the "
            "Evaluation scores; the fine-tune does not train on it",
        ),
    )
    draft.set("split.validation", 0.0)
    draft.set("split.test", 0.0)
    ctx.result.note(
        f"{label}: scored after training by an Evaluation; during training "
        "tuneops evaluates on the training datasets' validation split only"
    )


def no_dedup(ctx: Context, draft: SpecDraft) -> None:
    draft.set("clean.dedup", "none", f"{ctx.tool} keeps repeated rows (tuneops' default drops them)")


def set_default(ctx: Context, draft: SpecDraft, path: str, value: Any, key: str) -> None:
    """A value the config leaves to the tool's default, where tuneops' default differs."""
    draft.set(path, value, f"{ctx.tool}'s default ({key} not set)")
