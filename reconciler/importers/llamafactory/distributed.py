"""LLaMA-Factory's DeepSpeed and FSDP keys -> FineTune.distributed: the strategy, and whether
FSDP offloads (`fsdp: ... offload`)."""

from __future__ import annotations

from typing import Any

from reconciler.importers import deepspeed
from reconciler.importers.common import Context, as_list
from reconciler.importers.result import SpecDraft


def distributed(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    deepspeed.translate(ctx, fine_tune, config)
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
