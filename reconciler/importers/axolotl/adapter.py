"""axolotl's `adapter` and its settings -> FineTune.adapter: full fine-tuning, LoRA or QLoRA, the
quantized base (load_in_4bit/8bit, bnb_config_kwargs) and LoRA's rank, scale and targets."""

from __future__ import annotations

from typing import Any

from reconciler.importers import fine_tune as shared
from reconciler.importers.axolotl.keys import UNSUPPORTED
from reconciler.importers.common import Context, as_int, as_list
from reconciler.importers.result import SpecDraft


def adapter(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
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
    shared.lora_alpha_and_dropout(ctx, fine_tune, config)
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
    shared.modules_to_save(ctx, fine_tune, config, "lora_modules_to_save")


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
