"""A `dataset_info.json` entry's formatting -> Dataset.spec.schema: alpaca instructions (or text
for stage pt), sharegpt conversations with their tags, ranking (preference) pairs for stages dpo
and rm, and binary feedback (a response and its kto_tag) for stage kto."""

from __future__ import annotations

from typing import Any

from reconciler.importers.common import Context
from reconciler.importers.result import SpecDraft

# The methods that train on preference pairs (LLaMA-Factory's ranking datasets).
PREFERENCE_METHODS = ("dpo", "orpo", "reward")


def schema(ctx: Context, draft: SpecDraft, entry: dict[str, Any], prefix: str, method: str) -> None:
    result = ctx.result
    formatting = entry.get("formatting", "alpaca")
    if "formatting" in entry:
        result.map(f"{prefix}.formatting", "Dataset.spec.schema")
    columns = entry.get("columns") or {}
    ranking = bool(entry.get("ranking"))
    if "ranking" in entry and not (ranking and method == "kto"):
        result.map(f"{prefix}.ranking", "Dataset.spec.schema.type")
    if formatting not in ("alpaca", "sharegpt"):
        result.report(f"{prefix}.formatting", "unsupported", f"{formatting} (alpaca, sharegpt)")
        return
    for column in ("images", "videos", "audios"):
        if column in columns:
            result.report(f"{prefix}.columns.{column}", "unsupported", "multimodal training is not offered")
    for column in ("system", "tools", "history"):
        if column in columns:
            result.report(
                f"{prefix}.columns.{column}",
                "unsupported",
                "a separate column for it is not read: tuneops reads system turns inside the messages"
                if column == "system"
                else "not read by tuneops",
            )
    if method == "kto":
        _binary_feedback(ctx, draft, entry, columns, prefix)
        return
    if "kto_tag" in columns:
        result.report(f"{prefix}.columns.kto_tag", "ignored", f"read by stage kto only (method is {method})")
    if ranking or method in PREFERENCE_METHODS:
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


def _binary_feedback(
    ctx: Context, draft: SpecDraft, entry: dict[str, Any], columns: dict[str, Any], prefix: str
) -> None:
    """Stage kto's rows: a prompt, a response and its kto_tag (true: desirable) -> binary-feedback."""
    result = ctx.result
    draft.set("schema.type", "binary-feedback", ctx.says("stage", "kto: a response and its kto_tag per row"))
    if entry.get("formatting", "alpaca") == "sharegpt":
        result.report(
            f"{prefix}.formatting",
            "unsupported",
            "KTO rows as conversations are not read: a binary-feedback row is a prompt, a completion and "
            "a label column (true or false)",
        )
        return
    _columns(
        ctx,
        draft,
        columns,
        prefix,
        {"prompt": "prompt", "response": "completion", "kto_tag": "label"},
        {"prompt": "instruction", "completion": "output"},
    )
    if "kto_tag" not in columns:
        result.note(
            f"{prefix}: stage kto reads each row's kto_tag (true: a desirable response), and this entry "
            "names no columns.kto_tag: the Dataset reads a label column; set schema.columns.label"
        )
    if "query" in columns:
        result.report(f"{prefix}.columns.query", "unsupported", "a binary-feedback row has one prompt column")
    if entry.get("ranking"):
        result.report(f"{prefix}.ranking", "unsupported", "stage kto reads single responses, not pairs")


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
