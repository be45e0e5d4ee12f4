"""axolotl's model keys -> the BaseModel: the model and its revision, remote code, the chat
template (a built-in name, or `chat_template: jinja` with a template file or inline text) and
special and added tokens."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers.chat_templates import chat_template
from reconciler.importers.common import Context, as_list
from reconciler.importers.result import SpecDraft


def base_model(config: dict[str, Any], ctx: Context) -> SpecDraft:
    model = config.get("base_model")
    base = common.base_model_draft(ctx, "base_model", model)
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
    common.trust_remote_code(ctx, base, config)
    if config.get("chat_template") == "jinja" or (
        "chat_template_jinja" in config and not config.get("chat_template")
    ):
        _jinja_template(config, ctx, base)
    elif "chat_template" in config and config["chat_template"] is not None:
        chat_template(ctx, base, "chat_template", config["chat_template"])
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


def tokens(config: dict[str, Any], ctx: Context, base: SpecDraft, fine_tune: SpecDraft) -> None:
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
