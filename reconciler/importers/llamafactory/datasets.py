"""LLaMA-Factory's `dataset` and `eval_dataset` -> Dataset specs: each name looked up in
`dataset_info.json` under `dataset_dir` (or a Hub id with `dataset_dir: ONLINE`), where its rows
are (a file in dataset_dir, hf_hub_url, an s3:// cloud_file_name), the validation share `val_size`
holds out, and how the FineTune mixes them (mix_strategy, interleave_probs, max_samples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.importers import common
from reconciler.importers.commented_yaml import Commented
from reconciler.importers.common import Context, as_int, as_list, as_number
from reconciler.importers.llamafactory.dataset_formats import schema
from reconciler.importers.llamafactory.keys import FORMATS
from reconciler.importers.result import SpecDraft

ONLINE = "ONLINE"


def mix(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, training_sets: list[SpecDraft]) -> None:
    """FineTune.datasets: each training set with its weight (interleave_probs) and row cap."""
    result = ctx.result
    weights = _weights(config, ctx, len(training_sets))
    entries: list[dict[str, Any]] = []
    samples = as_int(config.get("max_samples"))
    for index, draft in enumerate(training_sets):
        entry: dict[str, Any] = {"name": draft.name}
        if weights:
            entry["weight"] = Commented(weights[index], ctx.says("interleave_probs"))
        if samples:
            entry["maxSamples"] = Commented(
                samples, ctx.says("max_samples", "LLaMA-Factory takes them before holding out val_size")
            )
        entries.append(entry)
    if samples:
        result.map("max_samples", "FineTune.spec.datasets[].maxSamples")
    fine_tune.set("datasets", entries, ctx.says("dataset"))
    if len(training_sets) > 1 and not weights:
        result.note(
            "dataset: LLaMA-Factory concatenates its datasets (mix_strategy: concat); tuneops mixes them "
            "by weight (1 each here: equal shares). For the same mix, set each weight to its row count"
        )


def _weights(config: dict[str, Any], ctx: Context, count: int) -> list[float] | None:
    strategy = config.get("mix_strategy", "concat")
    if "mix_strategy" in config:
        if strategy == "concat":
            ctx.result.map("mix_strategy", "FineTune.spec.datasets[].weight")
        elif strategy not in ("interleave_under", "interleave_over"):
            ctx.result.report("mix_strategy", "unsupported", f"{strategy} is not a mix LLaMA-Factory has")
    probabilities = [as_number(p) for p in as_list(config.get("interleave_probs"))]
    if not probabilities:
        if strategy != "concat" and "mix_strategy" in config:
            ctx.result.map("mix_strategy", "FineTune.spec.datasets[].weight")
        return None
    if len(probabilities) != count or any(p is None or p <= 0 for p in probabilities):
        ctx.result.report("interleave_probs", "unsupported", "not one positive probability per dataset")
        return None
    ctx.result.map("interleave_probs", "FineTune.spec.datasets[].weight")
    if "mix_strategy" in config:
        ctx.result.map("mix_strategy", "FineTune.spec.datasets[].weight")
        ctx.result.note(
            "mix_strategy: tuneops draws each dataset's share of the total rows, repeating rows "
            "where a share exceeds a dataset (as interleave_over does)"
        )
    return [float(p) for p in probabilities if p is not None]


def _dataset_info(config: dict[str, Any], ctx: Context) -> tuple[dict[str, Any] | None, Path | None]:
    folder = str(config.get("dataset_dir", "data"))
    if "dataset_dir" in config:
        ctx.result.map("dataset_dir", "Dataset.spec.source")
    if folder == ONLINE:
        return None, None
    directory = ctx.local(folder)
    info_file = directory / "dataset_info.json" if directory is not None else None
    if info_file is None or not info_file.is_file():
        return {}, directory
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        ctx.result.note(f"dataset_dir: {info_file} could not be read as JSON ({error})")
        return {}, directory
    return (info if isinstance(info, dict) else {}), directory


def dataset_specs(
    config: dict[str, Any], ctx: Context, method: str
) -> tuple[list[SpecDraft], list[SpecDraft], list[tuple[SpecDraft, str, str]], dict[str, Any]]:
    result = ctx.result
    info, directory = _dataset_info(config, ctx)
    taken: set[str] = set()
    info_used: dict[str, Any] = {}
    drafts: list[SpecDraft] = []
    training: list[SpecDraft] = []
    held_out: list[tuple[SpecDraft, str, str]] = []
    validation = common.validation_share(ctx, config, "val_size")
    for group in ("dataset", "eval_dataset"):
        names = as_list(config.get(group))
        if group == "eval_dataset" and names and method in common.NOT_EVALUATED:
            result.report(
                group,
                "unsupported",
                common.evaluation_data_unused(method, "val_size"),
            )
            for name in names:
                if isinstance(info, dict) and name in info and name not in as_list(config.get("dataset")):
                    result.report(
                        f"dataset_info.{name}", "ignored", "named by eval_dataset only, not translated"
                    )
            continue
        if group in config and names:
            result.map(group, "Dataset.spec.source")
        for name in names:
            draft = _dataset(name, group, ctx, info, directory, info_used, method, taken)
            if draft is None:
                continue
            if group == "dataset":
                common.split_for(ctx, draft, validation, "val_size" if validation else None)
                training.append(draft)
                if validation:
                    held_out.append((draft, "validation", "val_size"))
            else:
                common.evaluation_only_split(ctx, draft, f"eval_dataset: {name}", f"eval_dataset {name}")
                held_out.append((draft, "train", f"eval_dataset: {name}"))
            common.no_dedup(ctx, draft)
            drafts.append(draft)
    if not training:
        if "dataset" not in config:
            result.report("dataset", "unsupported", "no dataset named: the FineTune needs at least one")
        placeholder = common.placeholder_dataset(
            ctx, common.unique("training-data", taken), "no dataset could be translated: name the data"
        )
        drafts.insert(0, placeholder)
        training.append(placeholder)
    return drafts, training, held_out, info_used


def _dataset(
    name: str,
    group: str,
    ctx: Context,
    info: dict[str, Any] | None,
    directory: Path | None,
    info_used: dict[str, Any],
    method: str,
    taken: set[str],
) -> SpecDraft | None:
    result = ctx.result
    where = f"{group}: {name}"
    draft = common.dataset_draft(ctx, name, taken)
    if info is None:  # dataset_dir: ONLINE, the names are Hub ids
        if not common.is_hub_id(name):
            result.report(where, "unsupported", "not a Hub dataset id (dataset_dir: ONLINE)")
            return None
        draft.set("source", f"hf://{name}", ctx.says(group, "dataset_dir: ONLINE, a Hub dataset"))
        schema(ctx, draft, {}, f"dataset_info.{name}", method)
        return draft
    entry = info.get(name)
    if not isinstance(entry, dict):
        result.report(
            where, "unsupported", f"not described in {directory or 'data'}/dataset_info.json (from {ctx.cwd})"
        )
        taken.discard(draft.name)
        return None
    info_used[name] = entry
    prefix = f"dataset_info.{name}"
    if not _source(ctx, draft, entry, prefix, directory):
        taken.discard(draft.name)
        return None
    schema(ctx, draft, entry, prefix, method)
    for key in ("folder", "script_url", "ms_hub_url", "om_hub_url"):
        if key in entry and f"{prefix}.{key}" not in result.accounted():
            result.report(f"{prefix}.{key}", "unsupported", "sources are local files, hf:// or s3://")
    if "num_samples" in entry:
        result.report(
            f"{prefix}.num_samples",
            "unsupported",
            "LLaMA-Factory samples N rows at random; datasets[].maxSamples takes the first N",
        )
    return draft


def _source(
    ctx: Context, draft: SpecDraft, entry: dict[str, Any], prefix: str, directory: Path | None
) -> bool:
    result = ctx.result
    if entry.get("hf_hub_url"):
        hub = str(entry["hf_hub_url"])
        common.hub_dataset(ctx, draft, f"{prefix}.hf_hub_url", hub, "`tuneops pin` pins its revision")
        for key, field_name in (("subset", "subset"), ("split", "sourceSplit")):
            if key in entry:
                draft.set(field_name, str(entry[key]), ctx.says(f"{prefix}.{key}"))
                result.map(f"{prefix}.{key}", f"Dataset.spec.{field_name}")
        return True
    if str(entry.get("cloud_file_name", "")).startswith("s3://"):
        draft.set("source", entry["cloud_file_name"], ctx.says(f"{prefix}.cloud_file_name"))
        result.map(f"{prefix}.cloud_file_name", "Dataset.spec.source")
        return True
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or directory is None:
        result.report(
            prefix, "unsupported", "neither a local file_name, an hf_hub_url nor an s3:// cloud_file_name"
        )
        return False
    path = directory / file_name
    if not path.exists():
        result.report(f"{prefix}.file_name", "unsupported", f"{path} does not exist")
        return False
    file = common.data_file(ctx, f"{prefix}.file_name", path)
    if file is None:
        return False
    if file.suffix.lower() not in FORMATS:
        result.report(
            f"{prefix}.file_name",
            "unsupported",
            f"{file.suffix} files are not read (json, jsonl, csv, parquet)",
        )
        return False
    draft.set(
        "source",
        ctx.file_uri(file, f"{prefix}.file_name"),
        ctx.says(f"{prefix}.file_name", "in dataset_dir, from the working directory"),
    )
    result.map(f"{prefix}.file_name", "Dataset.spec.source")
    for key in ("subset", "split"):
        if key in entry:
            result.report(
                f"{prefix}.{key}",
                "ignored" if entry[key] == "train" else "unsupported",
                "a local file has one split",
            )
    return True
