"""Chat template names, as axolotl and LLaMA-Factory spell them -> BaseModel.chatTemplate: the
built-in template that renders the same, or the tokenizer's own."""

from __future__ import annotations

from typing import Any

from reconciler.importers.common import Context
from reconciler.importers.result import SpecDraft

# Other tools' template names -> the built-in template that renders the same (BaseModel.chatTemplate).
CHAT_TEMPLATES = {
    "axolotl": {
        "chatml": "chatml",
        "llama3": "llama3",
        "qwen_25": "qwen2.5",
        "qwen3": "qwen3",
        "mistral_v2v3": "mistral",
        "gemma": "gemma",
        "gemma3": "gemma",
        "phi_3": "phi3",
        "phi_35": "phi3",
        "phi_4": "phi4",
        "tokenizer_default": "tokenizer",
    },
    "LLaMA-Factory": {
        "chatml": "chatml",
        "llama3": "llama3",
        "qwen": "qwen2.5",
        "qwen3": "qwen3",
        "qwen3_nothink": "qwen3-no-thinking",
        "mistral": "mistral",
        "gemma": "gemma",
        "gemma2": "gemma",
        "gemma3": "gemma",
        "phi": "phi3",
        "phi4": "phi4",
    },
}


def chat_template(ctx: Context, base: SpecDraft, key: str, value: Any) -> None:
    name = str(value)
    ours = CHAT_TEMPLATES[ctx.tool].get(name)
    if ours is None and name.startswith("tokenizer_default_fallback_"):
        ours = "tokenizer"
        ctx.result.note(
            f"{key}: {name} falls back to another template when the tokenizer has none; "
            "tuneops uses the tokenizer's own (set chatTemplate if it has none)"
        )
    if ours is None:
        known = ", ".join(sorted(CHAT_TEMPLATES[ctx.tool]))
        ctx.result.report(
            key,
            "unsupported",
            f"template {name!r} has no built-in equivalent (mapped: {known}); "
            "give its Jinja file as chatTemplate: file://...",
        )
        return
    previous = base.get("chatTemplate")
    if previous is not None and previous != ours:
        ctx.result.report(
            key, "unsupported", f"a second chat template ({name}) beside {previous}: a base model has one"
        )
        return
    base.set("chatTemplate", ours, ctx.says(key) if ours == name else ctx.says(key, name))
    ctx.result.map(key, "BaseModel.spec.chatTemplate")
