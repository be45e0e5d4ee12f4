"""LLaMA-Factory's `finetuning_type` and its settings -> FineTune.adapter: full fine-tuning,
LoRA, or QLoRA on a bitsandbytes-quantized base, and LoRA's rank, scale and targets."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers import fine_tune as shared
from reconciler.importers.common import Context, as_int, as_list
from reconciler.importers.result import SpecDraft


def adapter(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
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
    shared.lora_alpha_and_dropout(ctx, fine_tune, config)
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
    shared.modules_to_save(ctx, fine_tune, config, "additional_target")
