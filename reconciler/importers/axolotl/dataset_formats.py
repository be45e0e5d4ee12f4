"""axolotl's dataset `type` -> Dataset.spec.schema: chat_template and sharegpt conversations
(message fields, role names, which turns train), alpaca-style instructions, completion text and
custom `field_*` formats; the types of the other methods are rl_datasets.py's."""

from __future__ import annotations

from typing import Any

from reconciler.importers.axolotl.keys import ASSISTANT_ONLY, DEFAULT_ROLES
from reconciler.importers.axolotl.rl_datasets import SCHEMAS, custom_columns, rl_schema
from reconciler.importers.common import Context, as_list
from reconciler.importers.result import SpecDraft


def dataset_schema(entry: dict[str, Any], key: str, ctx: Context, draft: SpecDraft, method: str) -> None:
    result = ctx.result
    kind = entry.get("type")
    type_key = f"{key}.type"
    if method in SCHEMAS:
        rl_schema(entry, key, ctx, draft, method)
        return
    if isinstance(kind, dict):
        draft.set("schema.type", "instruction", ctx.says(type_key, "a custom instruction format"))
        custom_columns(
            kind,
            type_key,
            ctx,
            draft,
            {"field_instruction": "instruction", "field_input": "input", "field_output": "output"},
            "prompt formats are the chat template's in tuneops",
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
    raw = entry.get("message_property_mappings")
    mappings = dict(raw) if isinstance(raw, dict) else {}
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
    if "message_property_mappings" in entry and not isinstance(raw, dict):
        result.report(f"{key}.message_property_mappings", "unsupported", "not a mapping of message keys")
    elif "message_property_mappings" in entry:
        for mapped_key in ("role", "content"):
            if mapped_key in raw:
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
