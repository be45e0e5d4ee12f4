"""axolotl configs -> tuneops specs. axolotl's keys are read as its docs define them (config
reference, dataset formats); values it leaves to its own defaults are written where tuneops'
defaults differ (sequence_len 512, one epoch, micro batch 1, no warmup, no LoRA dropout)."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers.axolotl_keys import (
    ASSISTANT_ONLY,
    DEFAULT_ROLES,
    DPO_COLUMNS,
    IGNORED,
    LIGER_FLAGS,
    LIGER_PLUGIN,
    OPTIMIZERS,
    SCHEDULERS,
    UNSUPPORTED,
)
from reconciler.importers.common import Context, as_int, as_list, as_number
from reconciler.importers.result import ImportResult, SpecDraft

TOOL = "axolotl"


def import_axolotl(config: dict[str, Any], ctx: Context, name: str | None) -> ImportResult:
    result = ctx.result
    for key, reason in IGNORED.items():
        if key in config:
            result.report(key, "ignored", reason)
    for key, reason in UNSUPPORTED.items():
        if key in config:
            result.report(key, "unsupported", reason)

    fine_tune_name = name or common.name_from(ctx.config_path.name, "fine-tune")
    base = _base_model(config, ctx)
    fine_tune = SpecDraft(
        "FineTune",
        fine_tune_name,
        header=common.header(ctx, "Unset fields take tuneops' defaults (docs/specs.md)."),
    )
    fine_tune.set("baseModel", base.name)
    method = _method(config, ctx, fine_tune)
    val_share = _validation_share(config, ctx)
    datasets, held_out = _datasets(config, ctx, method, val_share)
    fine_tune.set(
        "datasets",
        [{"name": d.name} for d in datasets if d not in held_out["eval_only"]],
        ctx.says("datasets"),
    )
    if len(fine_tune.get("datasets")) > 1:
        result.note(
            "datasets: axolotl concatenates its datasets; tuneops mixes them by weight (1 each here: "
            "equal shares). For axolotl's mix, set each weight to its dataset's row count"
        )
    fine_tune.set(
        "method",
        method,
        ctx.says("rl")
        if method == "dpo"
        else ("text datasets (completion): continued pretraining" if method == "pretrain" else None),
    )
    _adapter(config, ctx, fine_tune)
    _training(config, ctx, fine_tune)
    _distributed(config, ctx, fine_tune)
    _cadence(config, ctx, fine_tune)
    _tokens(config, ctx, base, fine_tune)
    fine_tune.set(
        "resources.gpusPerNode",
        1,
        "not in the config: axolotl trains on the GPUs it is launched with; set how many",
    )
    result.note("resources.gpusPerNode: 1 was written; set the GPUs (and nodes) the config ran on")
    evaluation_drafts = common.evaluations(ctx, fine_tune, held_out["sets"])
    result.report_unread(config)
    return common.package(ctx, base, datasets, fine_tune, evaluation_drafts)


def _base_model(config: dict[str, Any], ctx: Context) -> SpecDraft:
    model = config.get("base_model")
    base = SpecDraft(
        "BaseModel",
        common.name_from(str(model or "base-model"), "model"),
        header=common.header(
            ctx, "Pin `revision` (`tuneops pin`) so the spec always means the same weights."
        ),
    )
    common.model_source(ctx, base, "base_model", model)
    for key in ("base_model_config", "tokenizer_config"):
        if key in config:
            if config[key] == model:
                ctx.result.report(key, "ignored", "the same as base_model")
            else:
                ctx.result.report(
                    key, "unsupported", "a config or tokenizer from elsewhere than the model is not offered"
                )
    if "revision_of_model" in config:
        base.set("revision", str(config["revision_of_model"]), ctx.says("revision_of_model"))
        ctx.result.map("revision_of_model", "BaseModel.spec.revision")
    if "trust_remote_code" in config:
        base.set("trustRemoteCode", bool(config["trust_remote_code"]), ctx.says("trust_remote_code"))
        ctx.result.map("trust_remote_code", "BaseModel.spec.trustRemoteCode")
    if config.get("chat_template") == "jinja" or (
        "chat_template_jinja" in config and not config.get("chat_template")
    ):
        _jinja_template(config, ctx, base)
    elif "chat_template" in config and config["chat_template"] is not None:
        common.chat_template(ctx, base, "chat_template", config["chat_template"])
        if "chat_template_jinja" in config:
            ctx.result.report("chat_template_jinja", "ignored", "only read with chat_template: jinja")
    return base


def _jinja_template(config: dict[str, Any], ctx: Context, base: SpecDraft) -> None:
    template = config.get("chat_template_jinja")
    if "chat_template" in config:
        ctx.result.map("chat_template", "BaseModel.spec.chatTemplate")
    if not isinstance(template, str) or not template.strip():
        ctx.result.report("chat_template_jinja", "unsupported", "chat_template: jinja without a template")
        return
    local = ctx.local(template) if "\n" not in template and len(template) < 4096 else None
    if local is not None and local.is_file():
        uri = ctx.file_uri(local, "chat_template_jinja")
        if not uri.endswith((".jinja", ".j2", ".jinja2")):
            ctx.result.report("chat_template_jinja", "unsupported", "the template file must end in .jinja")
            return
        base.set("chatTemplate", uri, ctx.says("chat_template_jinja"))
    else:
        ctx.result.extra_files["chat-template.jinja"] = (
            template if template.endswith("\n") else template + "\n"
        )
        base.set(
            "chatTemplate",
            "file://chat-template.jinja",
            ctx.says("chat_template_jinja", "written inline to this file"),
        )
    ctx.result.map("chat_template_jinja", "BaseModel.spec.chatTemplate")


def _method(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> str:
    rl = config.get("rl")
    if rl in (None, False, ""):
        if "rl" in config:
            ctx.result.map("rl", "FineTune.spec.method")
        datasets = config.get("datasets")
        types = (
            {repr(d.get("type")) for d in datasets if isinstance(d, dict)}
            if isinstance(datasets, list)
            else set()
        )
        return "pretrain" if types == {repr("completion")} else "sft"
    if rl == "dpo":
        ctx.result.map("rl", "FineTune.spec.method")
        for key in ("rl_beta", "dpo_beta"):
            if key in config and as_number(config[key]) is not None:
                fine_tune.set("training.beta", as_number(config[key]), ctx.says(key))
                ctx.result.map(key, "FineTune.spec.training.beta")
        return "dpo"
    ctx.result.report(
        "rl",
        "unsupported",
        f"rl: {rl} is not offered (methods: sft, dpo, pretrain); this "
        "FineTune was written as sft and needs review",
    )
    for key in ("rl_beta", "dpo_beta"):
        if key in config:
            ctx.result.report(key, "unsupported", f"a setting of rl: {rl}")
    return "sft"


def _validation_share(config: dict[str, Any], ctx: Context) -> float:
    if "val_set_size" not in config:
        return 0.0
    value = as_number(config["val_set_size"])
    if value is None or value < 0:
        ctx.result.report("val_set_size", "unsupported", f"not a share of rows: {config['val_set_size']!r}")
        return 0.0
    if value >= 1:
        ctx.result.report(
            "val_set_size",
            "unsupported",
            f"{value} rows: tuneops holds out a share, not a "
            "count; set split.validation to rows held out / rows",
        )
        return 0.0
    if value > 0:
        ctx.result.map("val_set_size", "Dataset.spec.split.validation")
    else:
        ctx.result.map("val_set_size", "Dataset.spec.split")
    return float(value)


def _datasets(
    config: dict[str, Any], ctx: Context, method: str, val_share: float
) -> tuple[list[SpecDraft], dict[str, Any]]:
    drafts: list[SpecDraft] = []
    held_out: dict[str, Any] = {"sets": [], "eval_only": []}
    taken: set[str] = set()
    entries = config.get("datasets")
    if not isinstance(entries, list) or not entries:
        ctx.result.report("datasets", "unsupported", "no datasets listed: the FineTune needs at least one")
        placeholder = SpecDraft("Dataset", "training-data", header=common.header(ctx, ""))
        placeholder.set("source", "file://data/train.jsonl", "not in the config: name the training data")
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
    for index, entry in enumerate(config.get("test_datasets") or []):
        draft = _dataset(entry, f"test_datasets[{index}]", ctx, method, taken)
        if draft is None:
            continue
        common.evaluation_only_split(ctx, draft, f"test_datasets[{index}]")
        _dedup(ctx, draft, dedup)
        drafts.append(draft)
        held_out["eval_only"].append(draft)
        held_out["sets"].append((draft, "train", f"test_datasets[{index}]"))
        ctx.result.note(
            f"test_datasets[{index}]: scored after training by an Evaluation; during training "
            "tuneops evaluates on the training datasets' validation split only"
        )
    if "test_datasets" in config and not isinstance(config["test_datasets"], list):
        ctx.result.report("test_datasets", "unsupported", "not a list of datasets")
    if not [d for d in drafts if d not in held_out["eval_only"]]:
        placeholder = SpecDraft(
            "Dataset", common.unique("training-data", taken), header=common.header(ctx, "")
        )
        placeholder.set("source", "file://data/train.jsonl", "no dataset could be translated: name the data")
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
    draft = SpecDraft(
        "Dataset",
        common.unique(common.name_from(path, "data"), taken),
        header=common.header(ctx, "Paths in file:// are relative to this file."),
    )
    if not _dataset_source(entry, key, ctx, draft):
        taken.discard(draft.name)
        return None
    _dataset_schema(entry, key, ctx, draft, method)
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
        draft.set(
            "source", f"hf://{path}", ctx.says(path_key, "a Hub dataset; `tuneops pin` pins its revision")
        )
        result.map(path_key, "Dataset.spec.source")
        result.note(f"{path_key}: hf://{path} is not pinned to a commit: run `tuneops pin`")
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


def _dataset_schema(entry: dict[str, Any], key: str, ctx: Context, draft: SpecDraft, method: str) -> None:
    result = ctx.result
    kind = entry.get("type")
    type_key = f"{key}.type"
    if method == "dpo":
        _preference_schema(entry, key, ctx, draft)
        return
    if isinstance(kind, dict):
        draft.set("schema.type", "instruction", ctx.says(type_key, "a custom instruction format"))
        result.map(type_key, "Dataset.spec.schema")
        for column, role in (
            ("field_instruction", "instruction"),
            ("field_input", "input"),
            ("field_output", "output"),
        ):
            if column in kind:
                draft.set(f"schema.columns.{role}", str(kind[column]), ctx.says(f"{type_key}.{column}"))
                result.map(f"{type_key}.{column}", f"Dataset.spec.schema.columns.{role}")
        for other in kind:
            if other not in ("field_instruction", "field_input", "field_output"):
                result.report(
                    f"{type_key}.{other}", "unsupported", "prompt formats are the chat template's in tuneops"
                )
        return
    if kind in ("chat_template",) or (isinstance(kind, str) and kind.startswith("sharegpt")):
        _chat_schema(entry, key, ctx, draft, sharegpt=kind != "chat_template")
        return
    if isinstance(kind, str) and kind.split(":")[0] in ("alpaca", "alpaca_chat", "alpaca_w_system"):
        draft.set("schema.type", "instruction", ctx.says(type_key, "instruction, input, output"))
        result.map(type_key, "Dataset.spec.schema.type")
        if kind != "alpaca":
            result.note(
                f"{type_key}: {kind} formats prompts its own way; tuneops formats instruction rows "
                "with the base model's chat template"
            )
        return
    if kind == "completion":
        draft.set("schema.type", "text", ctx.says(type_key))
        result.map(type_key, "Dataset.spec.schema.type")
        if "field" in entry:
            draft.set("schema.columns.text", str(entry["field"]), ctx.says(f"{key}.field"))
            result.map(f"{key}.field", "Dataset.spec.schema.columns.text")
        return
    result.report(
        type_key,
        "unsupported",
        f"dataset type {kind!r} is not translated (chat_template, alpaca, "
        "completion and custom instruction formats are)",
    )
    draft.set("schema.type", "chat", "the dataset type was not translated: check the schema")


def _chat_schema(entry: dict[str, Any], key: str, ctx: Context, draft: SpecDraft, sharegpt: bool) -> None:
    result = ctx.result
    result.map(f"{key}.type", "Dataset.spec.schema.type")
    draft.set("schema.type", "chat", ctx.says(f"{key}.type"))
    messages = entry.get("field_messages", "conversations" if sharegpt else "messages")
    mappings = dict(entry.get("message_property_mappings") or {})
    if "message_field_role" in entry:
        mappings.setdefault("role", entry["message_field_role"])
        result.map(f"{key}.message_field_role", "Dataset.spec.schema.columns.role")
    if "message_field_content" in entry:
        mappings.setdefault("content", entry["message_field_content"])
        result.map(f"{key}.message_field_content", "Dataset.spec.schema.columns.content")
    if sharegpt:
        mappings.setdefault("role", "from")
        mappings.setdefault("content", "value")
    role, content = str(mappings.pop("role", "role")), str(mappings.pop("content", "content"))
    for extra in mappings:
        result.report(
            f"{key}.message_property_mappings.{extra}",
            "unsupported",
            "messages carry a role and a content only",
        )
    if "message_property_mappings" in entry:
        for mapped_key in ("role", "content"):
            if mapped_key in (entry.get("message_property_mappings") or {}):
                result.map(
                    f"{key}.message_property_mappings.{mapped_key}",
                    f"Dataset.spec.schema.columns.{mapped_key}",
                )
    if (messages, role, content) == ("conversations", "from", "value"):
        draft.set(
            "schema.layout",
            "sharegpt",
            ctx.says(
                f"{key}.field_messages" if "field_messages" in entry else f"{key}.type",
                "conversations of from/value",
            ),
        )
    else:
        for column, value, source in (
            ("messages", messages, "field_messages"),
            ("role", role, None),
            ("content", content, None),
        ):
            if value != column:
                draft.set(
                    f"schema.columns.{column}",
                    value,
                    ctx.says(f"{key}.{source}" if source else f"{key}.message_property_mappings.{column}"),
                )
    if "field_messages" in entry:
        result.map(f"{key}.field_messages", "Dataset.spec.schema.columns.messages")
    roles = entry.get("roles")
    if roles is not None:
        ours = (
            {r: as_list(v) for r, v in roles.items() if r in DEFAULT_ROLES} if isinstance(roles, dict) else {}
        )
        for other in roles if isinstance(roles, dict) else {}:
            if other not in DEFAULT_ROLES:
                result.report(
                    f"{key}.roles.{other}", "unsupported", "roles are system, user, assistant and tool"
                )
        if ours:
            draft.set("schema.roles", {r: v for r, v in ours.items()}, ctx.says(f"{key}.roles"))
            result.map(f"{key}.roles", "Dataset.spec.schema.roles")
    elif not sharegpt:
        draft.set("schema.roles", DEFAULT_ROLES, "axolotl's default role mapping (roles not set)")
    train = entry.get("roles_to_train")
    if train is not None:
        if set(as_list(train)) in ASSISTANT_ONLY:
            result.map(f"{key}.roles_to_train", "FineTune.spec.training.trainOn")
        else:
            result.report(
                f"{key}.roles_to_train",
                "unsupported",
                "tuneops trains on assistant turns only (or every token: trainOnInputs)",
            )
    eos = entry.get("train_on_eos")
    if eos is not None:
        if eos == "turn":
            result.map(f"{key}.train_on_eos", "FineTune.spec.training.trainOn")
        else:
            result.report(
                f"{key}.train_on_eos",
                "unsupported",
                "tuneops trains each trained turn's end token (train_on_eos: turn)",
            )
    template = entry.get("chat_template") or entry.get("conversation")
    if template is not None:
        source = "chat_template" if "chat_template" in entry else "conversation"
        result.report(
            f"{key}.{source}",
            "unsupported",
            "a chat template per dataset is not offered: the BaseModel's chatTemplate formats every dataset",
        )
    if "chat_template_jinja" in entry:
        result.report(
            f"{key}.chat_template_jinja", "unsupported", "a chat template per dataset is not offered"
        )
    for legacy in ("field_human", "field_model"):
        if legacy in entry:
            result.report(f"{key}.{legacy}", "unsupported", "use roles to map role values")


def _preference_schema(entry: dict[str, Any], key: str, ctx: Context, draft: SpecDraft) -> None:
    result = ctx.result
    kind = entry.get("type")
    type_key = f"{key}.type"
    draft.set("schema.type", "preference", ctx.says(type_key, "rl: dpo"))
    if isinstance(kind, dict):
        result.map(type_key, "Dataset.spec.schema")
        for column, role in (
            ("field_prompt", "prompt"),
            ("field_chosen", "chosen"),
            ("field_rejected", "rejected"),
        ):
            if column in kind:
                draft.set(f"schema.columns.{role}", str(kind[column]), ctx.says(f"{type_key}.{column}"))
                result.map(f"{type_key}.{column}", f"Dataset.spec.schema.columns.{role}")
        for other in kind:
            if other not in ("field_prompt", "field_chosen", "field_rejected"):
                result.report(f"{type_key}.{other}", "unsupported", "prompt formats are the chat template's")
        return
    suffix = str(kind).rsplit(".", 1)[-1] if kind else ""
    if suffix in DPO_COLUMNS:
        result.map(type_key, "Dataset.spec.schema")
        for role, column in DPO_COLUMNS[suffix].items():
            draft.set(f"schema.columns.{role}", column, ctx.says(type_key, f"{kind} reads {column}"))
        return
    result.report(
        type_key,
        "unsupported",
        f"DPO dataset type {kind!r} is not translated (*.intel, "
        "*.prompt_pairs, *.argilla and custom field_* types are)",
    )


def _adapter(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    adapter = config.get("adapter")
    four, eight = bool(config.get("load_in_4bit")), bool(config.get("load_in_8bit"))
    if adapter in (None, ""):
        fine_tune.set("adapter.type", "none", ctx.says("adapter", "not set: full fine-tuning"))
        if "adapter" in config:
            result.map("adapter", "FineTune.spec.adapter.type")
        for key in ("load_in_4bit", "load_in_8bit"):
            if config.get(key):
                result.report(key, "unsupported", "a quantized base needs an adapter (lora or qlora)")
            elif key in config:
                result.map(key, "FineTune.spec.adapter.quantization")
        for key in (k for k in config if k.startswith("lora_")):
            if key not in UNSUPPORTED:
                result.report(key, "ignored", "a LoRA setting without adapter: lora")
        return
    if adapter not in ("lora", "qlora"):
        result.report("adapter", "unsupported", f"adapter {adapter!r} is not offered (lora, qlora)")
        return
    result.map("adapter", "FineTune.spec.adapter.type")
    if adapter == "qlora" or four:
        fine_tune.set(
            "adapter.type",
            "qlora",
            ctx.says("adapter" if adapter == "qlora" else "load_in_4bit", "LoRA on a 4-bit base"),
        )
    else:
        fine_tune.set("adapter.type", "lora", ctx.says("adapter"))
    for key in ("load_in_4bit", "load_in_8bit"):
        if key in config:
            result.map(key, "FineTune.spec.adapter.quantization")
    if eight and not (adapter == "qlora" or four):
        fine_tune.set("adapter.quantization.bits", 8, ctx.says("load_in_8bit"))
    _quantization_kwargs(config, ctx, fine_tune)
    r = as_int(config.get("lora_r"))
    if r is not None:
        fine_tune.set("adapter.r", r, ctx.says("lora_r"))
        result.map("lora_r", "FineTune.spec.adapter.r")
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
    modules = as_list(config.get("lora_target_modules"))
    if config.get("lora_target_linear"):
        fine_tune.set("adapter.targetModules", "all-linear", ctx.says("lora_target_linear"))
        result.map("lora_target_linear", "FineTune.spec.adapter.targetModules")
        if modules:
            result.map("lora_target_modules", "FineTune.spec.adapter.targetModules")
            result.note("lora_target_modules: covered by lora_target_linear (every linear layer)")
    elif modules:
        fine_tune.set("adapter.targetModules", modules, ctx.says("lora_target_modules"))
        result.map("lora_target_modules", "FineTune.spec.adapter.targetModules")
        if "lora_target_linear" in config:
            result.map("lora_target_linear", "FineTune.spec.adapter.targetModules")
    else:
        result.report(
            "lora_target_modules",
            "unsupported",
            "neither lora_target_modules nor lora_target_linear: targetModules is left at all-linear",
        )
    saved = as_list(config.get("lora_modules_to_save"))
    if saved:
        fine_tune.set("adapter.modulesToSave", saved, ctx.says("lora_modules_to_save"))
        result.map("lora_modules_to_save", "FineTune.spec.adapter.modulesToSave")


def _quantization_kwargs(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    kwargs = config.get("bnb_config_kwargs")
    if not isinstance(kwargs, dict):
        return
    for name, value in kwargs.items():
        key = f"bnb_config_kwargs.{name}"
        if name == "bnb_4bit_quant_type" and value in ("nf4", "fp4"):
            fine_tune.set("adapter.quantization.quantType", value, ctx.says(key))
            ctx.result.map(key, "FineTune.spec.adapter.quantization.quantType")
        elif name == "bnb_4bit_use_double_quant" and isinstance(value, bool):
            fine_tune.set("adapter.quantization.doubleQuant", value, ctx.says(key))
            ctx.result.map(key, "FineTune.spec.adapter.quantization.doubleQuant")
        elif name in ("llm_int8_has_fp16_weight", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            ctx.result.report(key, "ignored", "tuneops sets it from training.precision")
        else:
            ctx.result.report(key, "unsupported", "not a quantization setting tuneops offers")


def _training(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    steps = as_int(config.get("max_steps"))
    if steps is not None and steps > 0:
        fine_tune.set("training.maxSteps", steps, ctx.says("max_steps"))
        result.map("max_steps", "FineTune.spec.training.maxSteps")
        if "num_epochs" in config:
            result.report(
                "num_epochs", "ignored", "max_steps is set, which ends training first (as in axolotl)"
            )
    elif as_number(config.get("num_epochs")) is not None:
        fine_tune.set("training.epochs", as_number(config["num_epochs"]), ctx.says("num_epochs"))
        result.map("num_epochs", "FineTune.spec.training.epochs")
        if "max_steps" in config:
            result.map("max_steps", "FineTune.spec.training.maxSteps")
    else:
        common.set_default(ctx, fine_tune, "training.epochs", 1, "num_epochs")
    simple = (
        ("learning_rate", "learningRate", as_number),
        ("micro_batch_size", "microBatchSize", as_int),
        ("gradient_accumulation_steps", "gradientAccumulation", as_int),
        ("sequence_len", "maxSeqLength", as_int),
        ("weight_decay", "weightDecay", as_number),
        ("max_grad_norm", "maxGradNorm", as_number),
        ("seed", "seed", as_int),
        ("dataloader_num_workers", "dataloaderWorkers", as_int),
    )
    for key, name, convert in simple:
        if key not in config:
            continue
        value = convert(config[key])
        if value is None:
            result.report(key, "unsupported", f"not a number: {config[key]!r}")
            continue
        how = "a string in YAML 1.1, read as a number as axolotl does" if isinstance(config[key], str) else ""
        fine_tune.set(
            f"training.{name}",
            float(value) if name in ("learningRate", "weightDecay", "maxGradNorm") else value,
            ctx.says(key, how),
        )
        result.map(key, f"FineTune.spec.training.{name}")
    if "micro_batch_size" not in config:
        common.set_default(ctx, fine_tune, "training.microBatchSize", 1, "micro_batch_size")
    if "sequence_len" not in config:
        common.set_default(ctx, fine_tune, "training.maxSeqLength", 512, "sequence_len")
    if "batch_size" in config:
        if "micro_batch_size" in config and "gradient_accumulation_steps" in config:
            result.report(
                "batch_size", "ignored", "micro_batch_size x gradient_accumulation_steps x GPUs is it"
            )
        else:
            result.report(
                "batch_size",
                "unsupported",
                "a global batch needs the GPU count to become gradientAccumulation: set it by hand",
            )
    if "sample_packing" in config:
        fine_tune.set(
            "training.packing",
            bool(config["sample_packing"]),
            ctx.says("sample_packing", "attention stays within each packed example"),
        )
        result.map("sample_packing", "FineTune.spec.training.packing")
    if "train_on_inputs" in config:
        fine_tune.set("training.trainOnInputs", bool(config["train_on_inputs"]), ctx.says("train_on_inputs"))
        result.map("train_on_inputs", "FineTune.spec.training.trainOnInputs")
    _schedule(config, ctx, fine_tune, steps)
    _precision(config, ctx, fine_tune)
    _attention(config, ctx, fine_tune)
    checkpointing = config.get("gradient_checkpointing")
    if checkpointing is not None:
        if isinstance(checkpointing, bool):
            fine_tune.set("training.gradientCheckpointing", checkpointing, ctx.says("gradient_checkpointing"))
            result.map("gradient_checkpointing", "FineTune.spec.training.gradientCheckpointing")
        else:
            fine_tune.set(
                "training.gradientCheckpointing",
                True,
                ctx.says("gradient_checkpointing", f"{checkpointing}: plain recomputation"),
            )
            result.report(
                "gradient_checkpointing",
                "unsupported",
                f"{checkpointing} checkpointing is not offered; plain gradient checkpointing was written",
            )
    if "gradient_checkpointing_kwargs" in config:
        result.report(
            "gradient_checkpointing_kwargs", "ignored", "tuneops checkpoints without re-entrant autograd"
        )


def _schedule(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, steps: int | None) -> None:
    result = ctx.result
    scheduler = config.get("lr_scheduler")
    if scheduler is not None:
        if scheduler in SCHEDULERS:
            fine_tune.set("training.scheduler", scheduler, ctx.says("lr_scheduler"))
            result.map("lr_scheduler", "FineTune.spec.training.scheduler")
        else:
            result.report(
                "lr_scheduler", "unsupported", f"{scheduler} is not offered ({', '.join(sorted(SCHEDULERS))})"
            )
    optimizer = config.get("optimizer")
    if optimizer is not None:
        if optimizer in OPTIMIZERS:
            fine_tune.set("training.optimizer", optimizer, ctx.says("optimizer"))
            result.map("optimizer", "FineTune.spec.training.optimizer")
        else:
            result.report(
                "optimizer", "unsupported", f"{optimizer} is not offered ({', '.join(sorted(OPTIMIZERS))})"
            )
    else:
        common.set_default(ctx, fine_tune, "training.optimizer", "adamw_torch_fused", "optimizer")
    ratio = as_number(config.get("warmup_ratio"))
    warmup_steps = as_int(config.get("warmup_steps"))
    if ratio is not None:
        fine_tune.set("training.warmupRatio", float(ratio), ctx.says("warmup_ratio"))
        result.map("warmup_ratio", "FineTune.spec.training.warmupRatio")
        if "warmup_steps" in config:
            result.report("warmup_steps", "ignored", "warmup_ratio is set beside it")
    elif warmup_steps is not None:
        if warmup_steps == 0:
            fine_tune.set("training.warmupRatio", 0.0, ctx.says("warmup_steps"))
            result.map("warmup_steps", "FineTune.spec.training.warmupRatio")
        elif steps:
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
            common.set_default(ctx, fine_tune, "training.warmupRatio", 0.0, "warmup_ratio")
    else:
        common.set_default(ctx, fine_tune, "training.warmupRatio", 0.0, "warmup_ratio")


def _precision(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    bf16, fp16 = config.get("bf16", "auto"), config.get("fp16")
    if "bf16" in config:
        ctx.result.map("bf16", "FineTune.spec.training.precision")
    if "fp16" in config:
        ctx.result.map("fp16", "FineTune.spec.training.precision")
    if bf16 is True:
        fine_tune.set("training.precision", "bf16", ctx.says("bf16"))
    elif fp16 is True:
        fine_tune.set("training.precision", "fp16", ctx.says("fp16"))
    elif bf16 == "auto":
        if "bf16" in config:
            fine_tune.set("training.precision", "auto", ctx.says("bf16"))
    else:
        fine_tune.set("training.precision", "fp32", ctx.says("bf16", "off, and fp16 off"))
    if "tf32" in config:
        fine_tune.set("training.tf32", bool(config["tf32"]), ctx.says("tf32"))
        ctx.result.map("tf32", "FineTune.spec.training.tf32")


def _attention(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    for key, ours in (
        ("flash_attention", "flash_attention_2"),
        ("sdp_attention", "sdpa"),
        ("eager_attention", "eager"),
    ):
        if key in config:
            ctx.result.map(key, "FineTune.spec.training.attention")
            if config[key]:
                fine_tune.set("training.attention", ours, ctx.says(key))
    plugins = as_list(config.get("plugins"))
    liger = LIGER_PLUGIN in plugins
    for plugin in plugins:
        if plugin != LIGER_PLUGIN:
            ctx.result.report(
                f"plugins: {plugin}",
                "unsupported",
                "only the Liger plugin is translated (training.kernels: liger)",
            )
    if "plugins" in config:
        ctx.result.map("plugins", "FineTune.spec.training.kernels")
    flags = [key for key in LIGER_FLAGS if key in config]
    for key in flags:
        ctx.result.map(key, "FineTune.spec.training.kernels")
    if liger and any(config[key] for key in flags):
        fine_tune.set(
            "training.kernels",
            "liger",
            ctx.says("plugins", "LigerPlugin with " + ", ".join(k for k in flags if config[k])),
        )
        if not all(config[key] for key in flags):
            ctx.result.note(
                "liger_*: tuneops applies every Liger kernel the model supports, not a chosen few"
            )
    elif flags and not liger:
        ctx.result.note(
            "liger_* settings without the LigerPlugin have no effect in axolotl; none were written"
        )


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
    fsdp_config = config.get("fsdp_config")
    if fsdp or isinstance(fsdp_config, dict) and fsdp_config:
        if config.get("deepspeed"):
            for key in ("fsdp", "fsdp_config", "fsdp_version"):
                if key in config:
                    result.report(key, "unsupported", "both deepspeed and fsdp: deepspeed was translated")
            return
        fine_tune.set("distributed.strategy", "fsdp", ctx.says("fsdp" if fsdp else "fsdp_config"))
        for key in ("fsdp", "fsdp_version"):
            if key in config:
                result.map(key, "FineTune.spec.distributed.strategy")
        settings = fsdp_config if isinstance(fsdp_config, dict) else {}
        for name, value in settings.items():
            key = f"fsdp_config.{name}"
            if name in ("fsdp_offload_params", "offload_params"):
                if value:
                    fine_tune.set("distributed.offload.parameters", True, ctx.says(key))
                    fine_tune.set(
                        "distributed.offload.optimizer",
                        True,
                        ctx.says(key, "FSDP's CPU offload moves the optimizer step too"),
                    )
                result.map(key, "FineTune.spec.distributed.offload")
            elif name in ("fsdp_activation_checkpointing", "activation_checkpointing"):
                fine_tune.set("training.gradientCheckpointing", bool(value), ctx.says(key))
                result.map(key, "FineTune.spec.training.gradientCheckpointing")
            else:
                result.report(key, "ignored", "FSDP wrapping and state-dict settings are tuneops'")
        if "fsdp_config" in config and not settings:
            result.map("fsdp_config", "FineTune.spec.distributed.strategy")
    else:
        for key in ("fsdp", "fsdp_config", "fsdp_version", "fsdp_final_state_dict_type"):
            if key in config:
                result.report(key, "ignored", "FSDP is not turned on (fsdp is empty)")
    if "fsdp_final_state_dict_type" in config and fsdp:
        result.report("fsdp_final_state_dict_type", "ignored", "tuneops saves full weights")


def _cadence(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    _one_cadence(config, ctx, fine_tune, "evaluation", "eval_steps", "evals_per_epoch", "eval_strategy")
    _one_cadence(config, ctx, fine_tune, "checkpoint", "save_steps", "saves_per_epoch", "save_strategy")
    keep = as_int(config.get("save_total_limit"))
    if keep is not None and keep > 0:
        fine_tune.set("checkpoint.keep", keep, ctx.says("save_total_limit"))
        ctx.result.map("save_total_limit", "FineTune.spec.checkpoint.keep")
    elif "save_total_limit" in config:
        ctx.result.report("save_total_limit", "unsupported", "keeping every checkpoint is not offered")
    if "auto_resume_from_checkpoints" in config:
        if config["auto_resume_from_checkpoints"]:
            fine_tune.set("checkpoint.resume", "auto", ctx.says("auto_resume_from_checkpoints"))
        else:
            fine_tune.set("checkpoint.resume", "never", ctx.says("auto_resume_from_checkpoints"))
        ctx.result.map("auto_resume_from_checkpoints", "FineTune.spec.checkpoint.resume")
    patience = as_int(config.get("early_stopping_patience"))
    if patience is not None and patience > 0:
        if fine_tune.get("evaluation.everySteps") or fine_tune.get("evaluation.perEpoch"):
            fine_tune.set("evaluation.earlyStopping.patience", patience, ctx.says("early_stopping_patience"))
            ctx.result.map("early_stopping_patience", "FineTune.spec.evaluation.earlyStopping.patience")
        else:
            ctx.result.report(
                "early_stopping_patience",
                "unsupported",
                "early stopping needs an evaluation cadence (eval_steps or evals_per_epoch: 1)",
            )
    elif "early_stopping_patience" in config:
        ctx.result.map("early_stopping_patience", "FineTune.spec.evaluation.earlyStopping")


def _one_cadence(
    config: dict[str, Any],
    ctx: Context,
    fine_tune: SpecDraft,
    section: str,
    steps_key: str,
    per_epoch_key: str,
    strategy_key: str,
) -> None:
    result = ctx.result
    strategy = config.get(strategy_key)
    steps = config.get(steps_key)
    per_epoch = as_int(config.get(per_epoch_key))
    if strategy_key in config:
        if strategy in ("no", None):
            result.map(strategy_key, f"FineTune.spec.{section}")
            for key in (steps_key, per_epoch_key):
                if key in config:
                    result.report(key, "ignored", f"{strategy_key}: no")
            return
        if strategy not in ("steps", "epoch"):
            result.report(strategy_key, "unsupported", f"{strategy} is not a cadence (steps, epoch)")
        else:
            result.map(strategy_key, f"FineTune.spec.{section}")
    whole = as_int(steps)
    if steps is not None and whole is not None and whole >= 1:
        fine_tune.set(f"{section}.everySteps", whole, ctx.says(steps_key))
        result.map(steps_key, f"FineTune.spec.{section}.everySteps")
        if per_epoch_key in config:
            result.report(per_epoch_key, "ignored", f"{steps_key} is set beside it")
    elif steps is not None:
        result.report(
            steps_key,
            "unsupported",
            f"{steps} is a share of all steps: tuneops takes a step count, "
            "and the total is not known before the data is",
        )
    elif per_epoch == 1 or (strategy == "epoch" and per_epoch is None):
        fine_tune.set(f"{section}.perEpoch", True, ctx.says(per_epoch_key if per_epoch else strategy_key))
        result.map(per_epoch_key if per_epoch else strategy_key, f"FineTune.spec.{section}.perEpoch")
    elif per_epoch is not None:
        result.report(
            per_epoch_key,
            "unsupported",
            f"{per_epoch} per epoch: tuneops takes a step count "
            "(everySteps), and steps per epoch are not known before "
            "the data is",
        )


def _tokens(config: dict[str, Any], ctx: Context, base: SpecDraft, fine_tune: SpecDraft) -> None:
    special = config.get("special_tokens")
    if isinstance(special, dict):
        for name, value in special.items():
            key = f"special_tokens.{name}"
            role = name.removesuffix("_token")
            if role in ("pad", "eos", "bos") and isinstance(value, str):
                base.set(f"tokens.{role}", value, ctx.says(key))
                ctx.result.map(key, f"BaseModel.spec.tokens.{role}")
            else:
                ctx.result.report(key, "unsupported", "tokens are pad, eos and bos, and added ones")
    elif "special_tokens" in config and special is not None:
        ctx.result.report("special_tokens", "unsupported", "not a mapping of tokens")
    added = as_list(config.get("tokens"))
    if added:
        base.set("tokens.add", added, ctx.says("tokens"))
        ctx.result.map("tokens", "BaseModel.spec.tokens.add")
