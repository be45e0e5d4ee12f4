"""axolotl's DeepSpeed and FSDP keys -> FineTune.distributed: the strategy, and what FSDP
offloads or recomputes (fsdp_config)."""

from __future__ import annotations

from typing import Any

from reconciler.importers import deepspeed
from reconciler.importers.common import Context
from reconciler.importers.result import SpecDraft


def distributed(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    deepspeed.translate(ctx, fine_tune, config)
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
