"""axolotl's `datasets` and `test_datasets` -> Dataset specs: where each reads its rows (a local
file or folder from the working directory, a Hub dataset, s3://), the validation share
`val_set_size` holds out, deduplication, and the held-out sets an Evaluation scores."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers.axolotl.dataset_formats import dataset_schema
from reconciler.importers.common import Context, as_list
from reconciler.importers.result import SpecDraft


def validation_share(config: dict[str, Any], ctx: Context) -> float:
    """`val_set_size` as a share; `val_set_size: 0` says every row trains (Dataset.spec.split)."""
    return common.validation_share(ctx, config, "val_set_size", zero_maps_to="Dataset.spec.split")


def dataset_specs(
    config: dict[str, Any], ctx: Context, method: str, val_share: float
) -> tuple[list[SpecDraft], dict[str, Any]]:
    drafts: list[SpecDraft] = []
    held_out: dict[str, Any] = {"sets": [], "eval_only": []}
    taken: set[str] = set()
    entries = config.get("datasets")
    if not isinstance(entries, list) or not entries:
        ctx.result.report("datasets", "unsupported", "no datasets listed: the FineTune needs at least one")
        placeholder = common.placeholder_dataset(
            ctx, "training-data", "not in the config: name the training data"
        )
        return [placeholder], held_out
    dedup = config.get("dataset_exact_deduplication")
    if "dataset_exact_deduplication" in config:
        ctx.result.map("dataset_exact_deduplication", "Dataset.spec.clean.dedup")
    for index, entry in enumerate(entries):
        draft = _dataset(entry, f"datasets[{index}]", ctx, method, taken)
        if draft is None:
            continue
        common.split_for(ctx, draft, val_share, "val_set_size" if val_share else None)
        _dedup(ctx, draft, dedup)
        drafts.append(draft)
        if val_share > 0:
            held_out["sets"].append((draft, "validation", "val_set_size"))
    if "shuffle_merged_datasets" in config:
        if config["shuffle_merged_datasets"] is False:
            ctx.result.report(
                "shuffle_merged_datasets", "unsupported", "tuneops always shuffles the mixed rows"
            )
        else:
            ctx.result.report("shuffle_merged_datasets", "ignored", "tuneops always shuffles the mixed rows")
    test_sets = config.get("test_datasets")
    if method in common.NOT_EVALUATED and isinstance(test_sets, list) and test_sets:
        ctx.result.report(
            "test_datasets",
            "unsupported",
            common.evaluation_data_unused(method, "val_set_size"),
        )
        test_sets = []
    for index, entry in enumerate(test_sets if isinstance(test_sets, list) else []):
        draft = _dataset(entry, f"test_datasets[{index}]", ctx, method, taken)
        if draft is None:
            continue
        common.evaluation_only_split(ctx, draft, f"test_datasets[{index}]", f"test_datasets[{index}]")
        _dedup(ctx, draft, dedup)
        drafts.append(draft)
        held_out["eval_only"].append(draft)
        held_out["sets"].append((draft, "train", f"test_datasets[{index}]"))
    if "test_datasets" in config and not isinstance(config["test_datasets"], list):
        ctx.result.report("test_datasets", "unsupported", "not a list of datasets")
    if not [d for d in drafts if d not in held_out["eval_only"]]:
        placeholder = common.placeholder_dataset(
            ctx, common.unique("training-data", taken), "no dataset could be translated: name the data"
        )
        drafts.insert(0, placeholder)
    return drafts, held_out


def _dedup(ctx: Context, draft: SpecDraft, dedup: Any) -> None:
    if dedup is True:
        draft.set("clean.dedup", "exact", ctx.says("dataset_exact_deduplication"))
    else:
        common.no_dedup(ctx, draft)


def _dataset(entry: Any, key: str, ctx: Context, method: str, taken: set[str]) -> SpecDraft | None:
    result = ctx.result
    if not isinstance(entry, dict):
        result.report(key, "unsupported", "not a mapping of dataset settings")
        return None
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        result.report(key, "unsupported", "a dataset without a path")
        return None
    draft = common.dataset_draft(ctx, path, taken)
    if not _dataset_source(entry, key, ctx, draft):
        taken.discard(draft.name)
        return None
    dataset_schema(entry, key, ctx, draft, method)
    for field_key in (
        "shards",
        "shards_idx",
        "preprocess_shards",
        "input_transform",
        "logprobs_field",
        "temperature",
        "field_thinking",
        "template_thinking_key",
        "split_thinking",
        "message_field_training",
        "message_field_training_detail",
        "field_tools",
        "drop_system_message",
    ):
        if field_key in entry:
            result.report(f"{key}.{field_key}", "unsupported", "not offered for a Dataset")
    if "trust_remote_code" in entry:
        result.report(f"{key}.trust_remote_code", "unsupported", "tuneops runs no dataset loading scripts")
    return draft


def _dataset_source(entry: dict[str, Any], key: str, ctx: Context, draft: SpecDraft) -> bool:
    result = ctx.result
    path = str(entry["path"])
    data_files = entry.get("data_files")
    ds_type = entry.get("ds_type")
    if ds_type is not None:
        if ds_type in ("json", "csv", "parquet"):
            result.map(f"{key}.ds_type", "Dataset.spec.format")
        else:
            result.report(
                f"{key}.ds_type", "unsupported", f"{ds_type} files are not read (jsonl, json, csv, parquet)"
            )
            return False
    local = ctx.local(path)
    if path in ("json", "csv", "parquet") and local is None and data_files:
        files = as_list(data_files)
        local = ctx.local(files[0]) if len(files) == 1 else None
        if local is None:
            result.report(f"{key}.data_files", "unsupported", "one local data file per Dataset")
            return False
        ds_type = ds_type or path
        result.map(f"{key}.data_files", "Dataset.spec.source")
        result.map(f"{key}.path", "Dataset.spec.format")
        path_key = f"{key}.data_files"
    elif data_files is not None:
        result.report(
            f"{key}.data_files",
            "unsupported",
            "picking files inside a dataset is not offered: a Dataset reads one file or one Hub dataset",
        )
        path_key = f"{key}.path"
    else:
        path_key = f"{key}.path"
    if local is not None:
        file = common.data_file(ctx, path_key, local)
        if file is None:
            return False
        uri = ctx.file_uri(file, path_key)
        draft.set("source", uri, ctx.says(path_key, "resolved from the working directory"))
        result.map(path_key, "Dataset.spec.source")
        if ds_type is not None:
            if ds_type == "json" and file.suffix.lower() in (".jsonl", ".ndjson"):
                draft.set("format", "jsonl", ctx.says(f"{key}.ds_type", "json lines, by the file name"))
            else:
                draft.set(
                    "format",
                    "jsonl" if ds_type == "json" and file.suffix.lower() != ".json" else ds_type,
                    ctx.says(f"{key}.ds_type"),
                )
        if "split" in entry:
            if entry["split"] == "train":
                result.report(f"{key}.split", "ignored", "a local file has one split, train")
            else:
                result.report(f"{key}.split", "unsupported", "a local file has one split")
        for hub_key in ("name", "revision"):
            if hub_key in entry:
                result.report(f"{key}.{hub_key}", "unsupported", "only read for Hub datasets")
        return True
    if path.startswith("s3://"):
        draft.set("source", path, ctx.says(path_key))
        result.map(path_key, "Dataset.spec.source")
    elif common.is_hub_id(path) and not any(
        path.endswith(ext) for ext in (".jsonl", ".json", ".csv", ".parquet")
    ):
        common.hub_dataset(ctx, draft, path_key, path, "a Hub dataset; `tuneops pin` pins its revision")
    else:
        result.report(
            path_key, "unsupported", f"{path!r} was not found from {ctx.cwd} and is not a Hub dataset id"
        )
        return False
    for hub_key, field_name in (("name", "subset"), ("split", "sourceSplit"), ("revision", "revision")):
        if hub_key in entry:
            draft.set(field_name, str(entry[hub_key]), ctx.says(f"{key}.{hub_key}"))
            result.map(f"{key}.{hub_key}", f"Dataset.spec.{field_name}")
    return True
