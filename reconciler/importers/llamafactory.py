"""LLaMA-Factory configs -> tuneops specs. Datasets are named in the config and described in
`dataset_info.json` under `dataset_dir` (default `data`, from the working directory), as
LLaMA-Factory finds them; their entries' keys are accounted for as `dataset_info.<name>.<key>`.
Values left to LLaMA-Factory's or transformers' defaults are written where tuneops' differ
(LoRA rank 8 without dropout, learning rate 5e-5, batch 8, a linear schedule, fp32, gradient
checkpointing on, a checkpoint every 500 steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.importers import common
from reconciler.importers.commented_yaml import Commented
from reconciler.importers.common import Context, as_int, as_list, as_number
from reconciler.importers.llamafactory_keys import (
    ATTENTION,
    FORMATS,
    IGNORED,
    OPTIMIZERS,
    SCHEDULERS,
    STAGES,
    UNSUPPORTED,
)
from reconciler.importers.result import ImportResult, SpecDraft

TOOL = "LLaMA-Factory"
ONLINE = "ONLINE"


def import_llamafactory(config: dict[str, Any], ctx: Context, name: str | None) -> ImportResult:
    result = ctx.result
    for key, reason in IGNORED.items():
        if key in config:
            result.report(key, "ignored", reason)
    for key, reason in UNSUPPORTED.items():
        if key in config and config[key] not in (None, False):
            result.report(key, "unsupported", reason)
        elif key in config:
            result.report(key, "ignored", "off, as tuneops has it")
    fine_tune_name = name or common.name_from(ctx.config_path.name, "fine-tune")
    base = _base_model(config, ctx)
    fine_tune = SpecDraft(
        "FineTune",
        fine_tune_name,
        header=common.header(ctx, "Unset fields take tuneops' defaults (docs/specs.md)."),
    )
    fine_tune.set("baseModel", base.name)
    method = _method(config, ctx, fine_tune)
    datasets, training_sets, held_out, info_used = _datasets(config, ctx, method)
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
    fine_tune.set("method", method, ctx.says("stage") if "stage" in config else None)
    _adapter(config, ctx, fine_tune)
    _training(config, ctx, fine_tune, method)
    _distributed(config, ctx, fine_tune)
    _cadence(config, ctx, fine_tune)
    _tokens(config, ctx, base)
    fine_tune.set(
        "resources.gpusPerNode",
        1,
        "not in the config: LLaMA-Factory trains on the GPUs it is launched with; set how many",
    )
    result.note("resources.gpusPerNode: 1 was written; set the GPUs (and nodes) the config ran on")
    evaluation_drafts = common.evaluations(ctx, fine_tune, held_out)
    result.report_unread(config)
    result.report_unread(info_used, "dataset_info")
    return common.package(ctx, base, datasets, fine_tune, evaluation_drafts)


def _base_model(config: dict[str, Any], ctx: Context) -> SpecDraft:
    model = config.get("model_name_or_path")
    base = SpecDraft(
        "BaseModel",
        common.name_from(str(model or "base-model"), "model"),
        header=common.header(
            ctx, "Pin `revision` (`tuneops pin`) so the spec always means the same weights."
        ),
    )
    common.model_source(ctx, base, "model_name_or_path", model)
    revision = config.get("model_revision")
    if revision is not None:
        if revision == "main":
            ctx.result.report(
                "model_revision", "ignored", "main is the default branch; `tuneops pin` writes its commit"
            )
        else:
            base.set("revision", str(revision), ctx.says("model_revision"))
            ctx.result.map("model_revision", "BaseModel.spec.revision")
    if "trust_remote_code" in config:
        base.set("trustRemoteCode", bool(config["trust_remote_code"]), ctx.says("trust_remote_code"))
        ctx.result.map("trust_remote_code", "BaseModel.spec.trustRemoteCode")
    if config.get("template") not in (None, ""):
        common.chat_template(ctx, base, "template", config["template"])
    elif "template" in config:
        ctx.result.map("template", "BaseModel.spec.chatTemplate")
    return base


def _method(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> str:
    stage = config.get("stage", "sft")
    if stage in STAGES:
        if "stage" in config:
            ctx.result.map("stage", "FineTune.spec.method")
        method = STAGES[stage]
    else:
        ctx.result.report(
            "stage",
            "unsupported",
            f"stage {stage} is not offered (sft, pt, dpo); this FineTune was written as sft and needs review",
        )
        method = "sft"
    if method == "dpo":
        beta = as_number(config.get("pref_beta"))
        if beta is not None:
            fine_tune.set("training.beta", float(beta), ctx.says("pref_beta"))
            ctx.result.map("pref_beta", "FineTune.spec.training.beta")
        loss = config.get("pref_loss", "sigmoid")
        if loss == "sigmoid":
            if "pref_loss" in config:
                ctx.result.map("pref_loss", "FineTune.spec.method")
        else:
            ctx.result.report(
                "pref_loss", "unsupported", f"{loss} loss is not offered (DPO's sigmoid loss is)"
            )
    else:
        for key in ("pref_beta", "pref_loss"):
            if key in config:
                ctx.result.report(key, "ignored", f"a preference setting; stage is {stage}")
    return method


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


def _datasets(
    config: dict[str, Any], ctx: Context, method: str
) -> tuple[list[SpecDraft], list[SpecDraft], list[tuple[SpecDraft, str, str]], dict[str, Any]]:
    result = ctx.result
    info, directory = _dataset_info(config, ctx)
    taken: set[str] = set()
    info_used: dict[str, Any] = {}
    drafts: list[SpecDraft] = []
    training: list[SpecDraft] = []
    held_out: list[tuple[SpecDraft, str, str]] = []
    validation = _validation_share(config, ctx)
    for group in ("dataset", "eval_dataset"):
        names = as_list(config.get(group))
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
                common.evaluation_only_split(ctx, draft, f"eval_dataset: {name}")
                held_out.append((draft, "train", f"eval_dataset: {name}"))
                result.note(
                    f"eval_dataset {name}: scored after training by an Evaluation; during training "
                    "tuneops evaluates on the training datasets' validation split only"
                )
            common.no_dedup(ctx, draft)
            drafts.append(draft)
    if not training:
        if "dataset" not in config:
            result.report("dataset", "unsupported", "no dataset named: the FineTune needs at least one")
        placeholder = SpecDraft(
            "Dataset", common.unique("training-data", taken), header=common.header(ctx, "")
        )
        placeholder.set("source", "file://data/train.jsonl", "no dataset could be translated: name the data")
        drafts.insert(0, placeholder)
        training.append(placeholder)
    return drafts, training, held_out, info_used


def _validation_share(config: dict[str, Any], ctx: Context) -> float:
    if "val_size" not in config:
        return 0.0
    value = as_number(config["val_size"])
    if value is None or value < 0:
        ctx.result.report("val_size", "unsupported", f"not a share of rows: {config['val_size']!r}")
        return 0.0
    if value >= 1:
        ctx.result.report(
            "val_size",
            "unsupported",
            f"{value} rows: tuneops holds out a share, not a count; "
            "set split.validation to rows held out / rows",
        )
        return 0.0
    ctx.result.map("val_size", "Dataset.spec.split.validation")
    return float(value)


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
    draft = SpecDraft(
        "Dataset",
        common.unique(common.name_from(name, "data"), taken),
        header=common.header(ctx, "Paths in file:// are relative to this file."),
    )
    if info is None:  # dataset_dir: ONLINE, the names are Hub ids
        if not common.is_hub_id(name):
            result.report(where, "unsupported", "not a Hub dataset id (dataset_dir: ONLINE)")
            return None
        draft.set("source", f"hf://{name}", ctx.says(group, "dataset_dir: ONLINE, a Hub dataset"))
        _schema(ctx, draft, {}, f"dataset_info.{name}", method)
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
    _schema(ctx, draft, entry, prefix, method)
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
        draft.set(
            "source", f"hf://{hub}", ctx.says(f"{prefix}.hf_hub_url", "`tuneops pin` pins its revision")
        )
        result.map(f"{prefix}.hf_hub_url", "Dataset.spec.source")
        result.note(f"{prefix}.hf_hub_url: hf://{hub} is not pinned to a commit: run `tuneops pin`")
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


def _schema(ctx: Context, draft: SpecDraft, entry: dict[str, Any], prefix: str, method: str) -> None:
    result = ctx.result
    formatting = entry.get("formatting", "alpaca")
    if "formatting" in entry:
        result.map(f"{prefix}.formatting", "Dataset.spec.schema")
    columns = entry.get("columns") or {}
    ranking = bool(entry.get("ranking"))
    if "ranking" in entry:
        result.map(f"{prefix}.ranking", "Dataset.spec.schema.type")
    if formatting not in ("alpaca", "sharegpt"):
        result.report(f"{prefix}.formatting", "unsupported", f"{formatting} (alpaca, sharegpt)")
        return
    for column in ("images", "videos", "audios"):
        if column in columns:
            result.report(f"{prefix}.columns.{column}", "unsupported", "multimodal training is not offered")
    for column in ("system", "tools", "history", "kto_tag"):
        if column in columns:
            result.report(
                f"{prefix}.columns.{column}",
                "unsupported",
                "a separate column for it is not read: tuneops reads system turns inside the messages"
                if column == "system"
                else "not read by tuneops",
            )
    if ranking or method == "dpo":
        draft.set("schema.type", "preference", ctx.says(f"{prefix}.ranking", "preference pairs"))
        if formatting == "sharegpt":
            result.report(
                f"{prefix}.formatting",
                "unsupported",
                "preference pairs as conversations are not read: a prompt, chosen and rejected column are",
            )
        _columns(
            ctx,
            draft,
            columns,
            prefix,
            {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
            {"prompt": "instruction"},
        )
        if "query" in columns:
            result.report(f"{prefix}.columns.query", "unsupported", "a preference row has one prompt column")
        return
    if formatting == "alpaca":
        if method == "pretrain":
            draft.set("schema.type", "text", ctx.says("stage", "pt reads the prompt column as text"))
            _columns(ctx, draft, columns, prefix, {"prompt": "text"}, {"text": "instruction"})
        else:
            draft.set(
                "schema.type",
                "instruction",
                ctx.says(f"{prefix}.formatting", "alpaca")
                if "formatting" in entry
                else "LLaMA-Factory's default formatting: alpaca",
            )
            _columns(
                ctx,
                draft,
                columns,
                prefix,
                {"prompt": "instruction", "query": "input", "response": "output"},
                {},
            )
        return
    _chat(ctx, draft, entry, columns, prefix)


def _columns(
    ctx: Context,
    draft: SpecDraft,
    columns: dict[str, Any],
    prefix: str,
    roles: dict[str, str],
    defaults: dict[str, str],
) -> None:
    """LLaMA-Factory's column keys -> our column roles; a role whose LLaMA-Factory default differs
    from ours is written even when the config leaves it out."""
    for theirs, ours in roles.items():
        key = f"{prefix}.columns.{theirs}"
        if theirs in columns:
            ctx.result.map(key, f"Dataset.spec.schema.columns.{ours}")
            value = str(columns[theirs])
            if value != ours:
                draft.set(f"schema.columns.{ours}", value, ctx.says(key))
        elif ours in defaults:
            draft.set(f"schema.columns.{ours}", defaults[ours], f"LLaMA-Factory's default ({key} not set)")


def _chat(
    ctx: Context, draft: SpecDraft, entry: dict[str, Any], columns: dict[str, Any], prefix: str
) -> None:
    result = ctx.result
    tags = entry.get("tags") or {}
    draft.set("schema.type", "chat", ctx.says(f"{prefix}.formatting", "sharegpt"))
    messages = str(columns.get("messages", "conversations"))
    role, content = str(tags.get("role_tag", "from")), str(tags.get("content_tag", "value"))
    if "messages" in columns:
        result.map(f"{prefix}.columns.messages", "Dataset.spec.schema.columns.messages")
    for key in ("role_tag", "content_tag"):
        if key in tags:
            result.map(f"{prefix}.tags.{key}", f"Dataset.spec.schema.columns.{key.removesuffix('_tag')}")
    if (messages, role, content) == ("conversations", "from", "value"):
        draft.set(
            "schema.layout", "sharegpt", ctx.says(f"{prefix}.formatting", "conversations of from/value")
        )
    elif (messages, role, content) != ("messages", "role", "content"):
        for column, value, source in (
            ("messages", messages, "columns.messages"),
            ("role", role, "tags.role_tag"),
            ("content", content, "tags.content_tag"),
        ):
            draft.set(f"schema.columns.{column}", value, ctx.says(f"{prefix}.{source}"))
    role_tags = {
        "user": "user_tag",
        "assistant": "assistant_tag",
        "system": "system_tag",
        "tool": "observation_tag",
    }
    defaults = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}
    if any(tag in tags for tag in role_tags.values()):
        roles = {ours: [str(tags.get(tag, defaults[ours]))] for ours, tag in role_tags.items()}
        draft.set("schema.roles", roles, ctx.says(f"{prefix}.tags", "role values"))
        for tag in role_tags.values():
            if tag in tags:
                result.map(f"{prefix}.tags.{tag}", "Dataset.spec.schema.roles")
    for tag in tags:
        if tag not in (*role_tags.values(), "role_tag", "content_tag"):
            result.report(f"{prefix}.tags.{tag}", "unsupported", "function-call turns are not read")


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


def _adapter(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    kind = config.get("finetuning_type", "lora")
    if "finetuning_type" in config:
        result.map("finetuning_type", "FineTune.spec.adapter.type")
    bits = as_int(config.get("quantization_bit"))
    method = config.get("quantization_method", "bnb")
    if "quantization_method" in config:
        if method == "bnb":
            result.map("quantization_method", "FineTune.spec.adapter.quantization")
        else:
            result.report(
                "quantization_method", "unsupported", f"{method} quantization is not offered (bitsandbytes)"
            )
            bits = None
    if kind == "full":
        fine_tune.set("adapter.type", "none", ctx.says("finetuning_type", "full fine-tuning"))
        for key in ("quantization_bit", "quantization_type", "double_quantization"):
            if key in config:
                result.report(
                    key,
                    "unsupported" if config[key] and key == "quantization_bit" else "ignored",
                    "full fine-tuning trains unquantized weights",
                )
        for key in (k for k in config if k.startswith("lora_") or k == "additional_target"):
            result.report(key, "ignored", "a LoRA setting; finetuning_type is full")
        return
    if kind != "lora":
        result.report(
            "finetuning_type",
            "unsupported",
            f"{kind} fine-tuning is not offered (lora, full); the "
            "FineTune was written as full fine-tuning and needs review",
        )
        fine_tune.set("adapter.type", "none", ctx.says("finetuning_type", f"{kind} is not offered: review"))
        return
    if bits == 4:
        fine_tune.set("adapter.type", "qlora", ctx.says("quantization_bit", "LoRA on a 4-bit base"))
        result.map("quantization_bit", "FineTune.spec.adapter.type")
        quant_type = config.get("quantization_type")
        if quant_type in ("nf4", "fp4"):
            fine_tune.set("adapter.quantization.quantType", quant_type, ctx.says("quantization_type"))
            result.map("quantization_type", "FineTune.spec.adapter.quantization.quantType")
        if isinstance(config.get("double_quantization"), bool):
            fine_tune.set(
                "adapter.quantization.doubleQuant",
                config["double_quantization"],
                ctx.says("double_quantization"),
            )
            result.map("double_quantization", "FineTune.spec.adapter.quantization.doubleQuant")
    else:
        fine_tune.set(
            "adapter.type",
            "lora",
            ctx.says("finetuning_type")
            if "finetuning_type" in config
            else "LLaMA-Factory's default (finetuning_type not set)",
        )
        if bits == 8:
            fine_tune.set("adapter.quantization.bits", 8, ctx.says("quantization_bit"))
            result.map("quantization_bit", "FineTune.spec.adapter.quantization.bits")
        elif bits is not None:
            result.report("quantization_bit", "unsupported", f"{bits}-bit bases are not offered (4, 8)")
        for key in ("quantization_type", "double_quantization"):
            if key in config:
                result.report(key, "ignored", "only read for a 4-bit base")
    _lora(config, ctx, fine_tune)


def _lora(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    rank = as_int(config.get("lora_rank"))
    if rank is not None:
        fine_tune.set("adapter.r", rank, ctx.says("lora_rank"))
        result.map("lora_rank", "FineTune.spec.adapter.r")
    else:
        common.set_default(ctx, fine_tune, "adapter.r", 8, "lora_rank")
    alpha = as_int(config.get("lora_alpha"))
    if alpha is not None:
        fine_tune.set("adapter.alpha", alpha, ctx.says("lora_alpha"))
        result.map("lora_alpha", "FineTune.spec.adapter.alpha")
    dropout = as_number(config.get("lora_dropout"))
    if dropout is not None:
        fine_tune.set("adapter.dropout", float(dropout), ctx.says("lora_dropout"))
        result.map("lora_dropout", "FineTune.spec.adapter.dropout")
    else:
        common.set_default(ctx, fine_tune, "adapter.dropout", 0.0, "lora_dropout")
    targets = as_list(config.get("lora_target", "all"))
    if targets in (["all"], []):
        fine_tune.set(
            "adapter.targetModules",
            "all-linear",
            ctx.says("lora_target", "all")
            if "lora_target" in config
            else "LLaMA-Factory's default (lora_target not set: all)",
        )
    else:
        fine_tune.set("adapter.targetModules", targets, ctx.says("lora_target"))
    if "lora_target" in config:
        result.map("lora_target", "FineTune.spec.adapter.targetModules")
    saved = as_list(config.get("additional_target"))
    if saved:
        fine_tune.set("adapter.modulesToSave", saved, ctx.says("additional_target"))
        result.map("additional_target", "FineTune.spec.adapter.modulesToSave")


def _training(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, method: str) -> None:
    result = ctx.result
    steps = as_int(config.get("max_steps"))
    if steps is not None and steps > 0:
        fine_tune.set("training.maxSteps", steps, ctx.says("max_steps"))
        result.map("max_steps", "FineTune.spec.training.maxSteps")
        if "num_train_epochs" in config:
            result.report("num_train_epochs", "ignored", "max_steps is set, which ends training first")
    else:
        if "max_steps" in config:
            result.map("max_steps", "FineTune.spec.training.maxSteps")
        epochs = as_number(config.get("num_train_epochs"))
        if epochs is not None:
            fine_tune.set("training.epochs", epochs, ctx.says("num_train_epochs"))
            result.map("num_train_epochs", "FineTune.spec.training.epochs")
    simple = (
        ("learning_rate", "learningRate", as_number, 5e-5),
        ("per_device_train_batch_size", "microBatchSize", as_int, 8),
        ("gradient_accumulation_steps", "gradientAccumulation", as_int, None),
        ("cutoff_len", "maxSeqLength", as_int, None),
        ("weight_decay", "weightDecay", as_number, None),
        ("max_grad_norm", "maxGradNorm", as_number, None),
        ("seed", "seed", as_int, None),
        ("dataloader_num_workers", "dataloaderWorkers", as_int, None),
    )
    for key, name, convert, default in simple:
        if key not in config:
            if default is not None:
                common.set_default(ctx, fine_tune, f"training.{name}", default, key)
            continue
        value = convert(config[key])
        if value is None:
            result.report(key, "unsupported", f"not a number: {config[key]!r}")
            continue
        fine_tune.set(
            f"training.{name}",
            float(value) if name in ("learningRate", "weightDecay", "maxGradNorm") else value,
            ctx.says(key),
        )
        result.map(key, f"FineTune.spec.training.{name}")
    if (
        config.get("packing")
        or config.get("neat_packing")
        or (method == "pretrain" and "packing" not in config)
    ):
        source = "neat_packing" if config.get("neat_packing") else "packing"
        how = (
            "attention stays within each example"
            if source == "neat_packing"
            else "tuneops keeps attention within each example, as neat_packing does"
        )
        if method == "pretrain" and "packing" not in config and not config.get("neat_packing"):
            fine_tune.set("training.packing", True, "LLaMA-Factory packs for stage pt (packing not set)")
        else:
            fine_tune.set("training.packing", True, ctx.says(source, how))
    for key in ("packing", "neat_packing"):
        if key in config:
            result.map(key, "FineTune.spec.training.packing")
    if "train_on_prompt" in config:
        fine_tune.set("training.trainOnInputs", bool(config["train_on_prompt"]), ctx.says("train_on_prompt"))
        result.map("train_on_prompt", "FineTune.spec.training.trainOnInputs")
    if "mask_history" in config:
        if config["mask_history"]:
            fine_tune.set("training.trainOn", "lastAssistantTurn", ctx.says("mask_history"))
        result.map("mask_history", "FineTune.spec.training.trainOn")
    _schedule(config, ctx, fine_tune, steps)
    _precision(config, ctx, fine_tune)
    attention = config.get("flash_attn")
    if attention is not None:
        if attention in ATTENTION:
            if attention != "auto":
                fine_tune.set("training.attention", ATTENTION[attention], ctx.says("flash_attn", attention))
            result.map("flash_attn", "FineTune.spec.training.attention")
        else:
            result.report(
                "flash_attn", "unsupported", f"{attention} is not offered (auto, sdpa, fa2, disabled)"
            )
    if "enable_liger_kernel" in config:
        if config["enable_liger_kernel"]:
            fine_tune.set("training.kernels", "liger", ctx.says("enable_liger_kernel"))
        result.map("enable_liger_kernel", "FineTune.spec.training.kernels")
    disabled = config.get("disable_gradient_checkpointing", False)
    if "disable_gradient_checkpointing" in config:
        result.map("disable_gradient_checkpointing", "FineTune.spec.training.gradientCheckpointing")
    if "gradient_checkpointing" in config:
        result.map("gradient_checkpointing", "FineTune.spec.training.gradientCheckpointing")
    fine_tune.set(
        "training.gradientCheckpointing",
        not disabled,
        ctx.says("disable_gradient_checkpointing")
        if "disable_gradient_checkpointing" in config
        else "LLaMA-Factory turns it on unless disable_gradient_checkpointing",
    )


def _schedule(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, steps: int | None) -> None:
    result = ctx.result
    scheduler = config.get("lr_scheduler_type")
    if scheduler is None:
        common.set_default(ctx, fine_tune, "training.scheduler", "linear", "lr_scheduler_type")
    elif scheduler in SCHEDULERS:
        fine_tune.set("training.scheduler", scheduler, ctx.says("lr_scheduler_type"))
        result.map("lr_scheduler_type", "FineTune.spec.training.scheduler")
    else:
        result.report(
            "lr_scheduler_type",
            "unsupported",
            f"{scheduler} is not offered ({', '.join(sorted(SCHEDULERS))})",
        )
    optimizer = config.get("optim")
    if optimizer is not None:
        if optimizer in OPTIMIZERS:
            fine_tune.set("training.optimizer", optimizer, ctx.says("optim"))
            result.map("optim", "FineTune.spec.training.optimizer")
        else:
            result.report(
                "optim", "unsupported", f"{optimizer} is not offered ({', '.join(sorted(OPTIMIZERS))})"
            )
    ratio = as_number(config.get("warmup_ratio"))
    warmup_steps = as_int(config.get("warmup_steps"))
    if warmup_steps:
        if steps:
            fine_tune.set(
                "training.warmupRatio",
                round(warmup_steps / steps, 6),
                ctx.says("warmup_steps", f"{warmup_steps} of max_steps {steps}"),
            )
            result.map("warmup_steps", "FineTune.spec.training.warmupRatio")
        else:
            result.report(
                "warmup_steps",
                "unsupported",
                f"{warmup_steps} steps: tuneops warms up for a share of "
                "the steps (warmupRatio), and the total is not known "
                "before the data is; set warmupRatio by hand",
            )
        if "warmup_ratio" in config:
            result.report("warmup_ratio", "ignored", "warmup_steps overrides it (as in transformers)")
    elif ratio is not None:
        fine_tune.set("training.warmupRatio", float(ratio), ctx.says("warmup_ratio"))
        result.map("warmup_ratio", "FineTune.spec.training.warmupRatio")
        if "warmup_steps" in config:
            result.map("warmup_steps", "FineTune.spec.training.warmupRatio")
    else:
        if "warmup_steps" in config:
            result.map("warmup_steps", "FineTune.spec.training.warmupRatio")
        common.set_default(ctx, fine_tune, "training.warmupRatio", 0.0, "warmup_ratio")


def _precision(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    for key in ("bf16", "fp16"):
        if key in config:
            ctx.result.map(key, "FineTune.spec.training.precision")
    if config.get("bf16"):
        fine_tune.set("training.precision", "bf16", ctx.says("bf16"))
    elif config.get("fp16"):
        fine_tune.set("training.precision", "fp16", ctx.says("fp16"))
    else:
        fine_tune.set("training.precision", "fp32", "transformers' default (neither bf16 nor fp16 set)")
    if "tf32" in config:
        if config["tf32"] is not None:
            fine_tune.set("training.tf32", bool(config["tf32"]), ctx.says("tf32"))
        ctx.result.map("tf32", "FineTune.spec.training.tf32")


def _distributed(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    if config.get("deepspeed"):
        strategy = common.deepspeed_strategy(ctx, "deepspeed", config["deepspeed"])
        if isinstance(strategy, str):
            result.report("deepspeed", "unsupported", strategy)
        else:
            common.set_strategy(ctx, fine_tune, "deepspeed", strategy)
    elif "deepspeed" in config:
        result.map("deepspeed", "FineTune.spec.distributed.strategy")
    fsdp = config.get("fsdp")
    if fsdp and not config.get("deepspeed"):
        options = as_list(fsdp.replace(" ", ",")) if isinstance(fsdp, str) else as_list(fsdp)
        fine_tune.set("distributed.strategy", "fsdp", ctx.says("fsdp"))
        result.map("fsdp", "FineTune.spec.distributed.strategy")
        if "offload" in options:
            fine_tune.set("distributed.offload.parameters", True, ctx.says("fsdp", "offload"))
            fine_tune.set("distributed.offload.optimizer", True, ctx.says("fsdp", "offload moves both"))
        if "fsdp_config" in config:
            result.report("fsdp_config", "ignored", "FSDP wrapping and state-dict settings are tuneops'")
    elif "fsdp" in config or "fsdp_config" in config:
        for key in ("fsdp", "fsdp_config"):
            if key in config:
                result.report(
                    key,
                    "ignored" if not fsdp else "unsupported",
                    "FSDP is not on" if not fsdp else "both deepspeed and fsdp: deepspeed was translated",
                )


def _cadence(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    for section, strategy_key, steps_key, default in (
        ("evaluation", "eval_strategy", "eval_steps", "no"),
        ("checkpoint", "save_strategy", "save_steps", "steps"),
    ):
        strategy = config.get(
            strategy_key, config.get("evaluation_strategy", default) if section == "evaluation" else default
        )
        for key in (strategy_key, "evaluation_strategy" if section == "evaluation" else strategy_key):
            if key in config:
                result.map(key, f"FineTune.spec.{section}")
        steps = as_number(config.get(steps_key, 500))
        if strategy == "steps":
            if steps is not None and steps >= 1 and float(steps).is_integer():
                if steps_key in config:
                    fine_tune.set(f"{section}.everySteps", int(steps), ctx.says(steps_key))
                    result.map(steps_key, f"FineTune.spec.{section}.everySteps")
                else:
                    fine_tune.set(
                        f"{section}.everySteps", 500, f"transformers' default ({steps_key} not set)"
                    )
            elif steps_key in config:
                result.report(
                    steps_key,
                    "unsupported",
                    f"{config[steps_key]} is a share of all steps: tuneops takes a step count",
                )
        elif strategy == "epoch":
            fine_tune.set(f"{section}.perEpoch", True, ctx.says(strategy_key))
            if steps_key in config:
                result.report(steps_key, "ignored", f"{strategy_key}: epoch")
        elif strategy == "no":
            if steps_key in config:
                result.report(steps_key, "ignored", f"{strategy_key}: no")
        else:
            result.report(strategy_key, "unsupported", f"{strategy} is not a cadence (steps, epoch, no)")
    keep = as_int(config.get("save_total_limit"))
    if keep is not None and keep > 0:
        fine_tune.set("checkpoint.keep", keep, ctx.says("save_total_limit"))
        result.map("save_total_limit", "FineTune.spec.checkpoint.keep")
    elif "save_total_limit" in config:
        result.report("save_total_limit", "unsupported", "keeping every checkpoint is not offered")


def _tokens(config: dict[str, Any], ctx: Context, base: SpecDraft) -> None:
    added: list[str] = []
    for key in ("new_special_tokens", "add_special_tokens", "add_tokens"):
        tokens = as_list(config.get(key))
        if tokens:
            added += [token for token in tokens if token not in added]
            ctx.result.map(key, "BaseModel.spec.tokens.add")
    if added:
        keys = ", ".join(
            k for k in ("new_special_tokens", "add_special_tokens", "add_tokens") if config.get(k)
        )
        base.set("tokens.add", added, ctx.says(keys))
