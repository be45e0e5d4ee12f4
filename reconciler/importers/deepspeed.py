"""DeepSpeed configs, as both importers meet them (a path from the working directory, or inline
JSON) -> FineTune.distributed: the ZeRO stage and offload, read from the JSON where it exists,
else from the well-known file names the tools ship."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.importers.common import Context, as_int
from reconciler.importers.result import SpecDraft


def translate(ctx: Context, fine_tune: SpecDraft, config: dict[str, Any]) -> None:
    """The `deepspeed` key, which both tools spell and read the same way."""
    if config.get("deepspeed"):
        strategy = deepspeed_strategy(ctx, "deepspeed", config["deepspeed"])
        if isinstance(strategy, str):
            ctx.result.report("deepspeed", "unsupported", strategy)
        else:
            _set_strategy(ctx, fine_tune, "deepspeed", strategy)
    elif "deepspeed" in config:
        ctx.result.map("deepspeed", "FineTune.spec.distributed.strategy")


@dataclass(frozen=True)
class Strategy:
    strategy: str  # ddp | zero2 | zero3 | zero3-offload
    offload_parameters: bool = False
    offload_optimizer: bool = False
    how: str = ""


_STAGE_IN_NAME = re.compile(r"(?:zero|ds_z|z)([0-3])")


def deepspeed_strategy(ctx: Context, key: str, value: Any) -> Strategy | str:
    """A DeepSpeed config (a path, or inline) -> the strategy, or why not. The JSON is read when
    it exists (from the working directory); else the well-known names of axolotl's
    deepspeed_configs/ and LLaMA-Factory's examples/deepspeed/ tell the stage and offload."""
    if isinstance(value, dict):
        return _zero_from_json(value, "inline")
    if not isinstance(value, str):
        return "not a path to a DeepSpeed JSON config"
    local = ctx.local(value)
    if local is not None and local.is_file():
        try:
            config = json.loads(local.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            ctx.result.note(f"{key}: {value} could not be read as JSON ({error}); its name was used")
        else:
            if isinstance(config, dict):
                return _zero_from_json(config, f"read from {value}")
    return _zero_from_name(Path(value).name)


def _device(section: Any) -> str:
    return str(section.get("device", "none")).lower() if isinstance(section, dict) else "none"


def _zero_from_json(config: dict[str, Any], source: str) -> Strategy | str:
    zero = config.get("zero_optimization") or {}
    if not isinstance(zero, dict):
        return f"zero_optimization is not a mapping ({source})"
    stage = as_int(zero.get("stage", 0))
    optimizer, parameters = _device(zero.get("offload_optimizer")), _device(zero.get("offload_param"))
    if "nvme" in (optimizer, parameters):
        return "offload to NVMe is not supported (tuneops offloads to CPU memory)"
    return _strategy(stage, parameters == "cpu", optimizer == "cpu", f"ZeRO stage {stage}, {source}")


def _zero_from_name(name: str) -> Strategy | str:
    match = _STAGE_IN_NAME.search(name.lower())
    if match is None:
        return f"{name} does not exist here and its name does not tell the ZeRO stage"
    stage = int(match.group(1))
    lowered = name.lower()
    everything = "offload_all" in lowered or (stage == 3 and "offload" in lowered and "param" not in lowered)
    parameters = everything or "offload_param" in lowered
    optimizer = everything or (stage == 2 and "offload" in lowered)
    return _strategy(
        stage, parameters, optimizer, f"ZeRO stage {stage}, from the file name {name}: not found here"
    )


def _strategy(stage: int | None, parameters: bool, optimizer: bool, how: str) -> Strategy | str:
    if stage == 0:
        return Strategy("ddp", how=how)
    if stage == 1:
        return "ZeRO stage 1 is not offered (zero2 shards optimizer states and gradients: the nearest)"
    if stage == 2:
        if parameters:
            return "ZeRO-2 cannot offload parameters"
        return Strategy("zero2", False, optimizer, how)
    if stage == 3:
        if parameters and optimizer:
            return Strategy("zero3-offload", False, False, how)
        return Strategy("zero3", parameters, optimizer, how)
    return f"ZeRO stage {stage} is not one DeepSpeed has"


def _set_strategy(ctx: Context, fine_tune: SpecDraft, key: str, strategy: Strategy) -> None:
    fine_tune.set("distributed.strategy", strategy.strategy, ctx.says(key, strategy.how))
    ctx.result.map(key, "FineTune.spec.distributed.strategy")
    if strategy.offload_parameters or strategy.offload_optimizer:
        if strategy.offload_parameters:
            fine_tune.set("distributed.offload.parameters", True, ctx.says(key, "offload_param: cpu"))
        if strategy.offload_optimizer:
            fine_tune.set("distributed.offload.optimizer", True, ctx.says(key, "offload_optimizer: cpu"))
        ctx.result.map(key, "FineTune.spec.distributed.offload")
