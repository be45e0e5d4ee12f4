"""LLaMA-Factory's model keys -> the BaseModel: the model and its revision, remote code, the
chat `template`, and the tokens it adds."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers.chat_templates import chat_template
from reconciler.importers.common import Context, as_list
from reconciler.importers.result import SpecDraft


def base_model(config: dict[str, Any], ctx: Context) -> SpecDraft:
    base = common.base_model_draft(ctx, "model_name_or_path", config.get("model_name_or_path"))
    revision = config.get("model_revision")
    if revision is not None:
        if revision == "main":
            ctx.result.report(
                "model_revision", "ignored", "main is the default branch; `tuneops pin` writes its commit"
            )
        else:
            base.set("revision", str(revision), ctx.says("model_revision"))
            ctx.result.map("model_revision", "BaseModel.spec.revision")
    common.trust_remote_code(ctx, base, config)
    if config.get("template") not in (None, ""):
        chat_template(ctx, base, "template", config["template"])
    elif "template" in config:
        ctx.result.map("template", "BaseModel.spec.chatTemplate")
    return base


def tokens(config: dict[str, Any], ctx: Context, base: SpecDraft) -> None:
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
