"""How a fine-tune is spread over processes: the torchrun environment, the strategy `auto`
resolves to, and the DeepSpeed config generated for ZeRO strategies.

The DeepSpeed configs follow what axolotl and LLaMA-Factory ship: batch sizes, accumulation,
clipping and precision are `"auto"`, so the Hugging Face Trainer fills them from the spec's
hyperparameters and they can never disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Processes:
    """This process's place in a `torchrun` launch (a plain `python` run is rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Processes:
        return cls(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   world_size=int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def deepspeed_config(strategy: str, *, pin_memory: bool, offload_parameters: bool = False,
                     offload_optimizer: bool = False) -> dict[str, Any] | None:
    """The DeepSpeed config for a ZeRO strategy (with the spec's `distributed.offload`); None for
    DDP and FSDP. `zero3-offload` is zero3 with both offloads."""
    if strategy not in ("zero2", "zero3", "zero3-offload"):
        return None
    if strategy == "zero3-offload":
        offload_parameters = offload_optimizer = True
    zero: dict[str, Any] = {"stage": 2 if strategy == "zero2" else 3, "overlap_comm": True,
                            "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if strategy == "zero2":
        zero["allgather_bucket_size"] = 200_000_000
    else:
        zero.update({"stage3_prefetch_bucket_size": "auto",
                     "stage3_param_persistence_threshold": "auto",
                     "stage3_gather_16bit_weights_on_model_save": True})
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin_memory}
    if offload_parameters and strategy != "zero2":  # validation refuses it for zero2
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin_memory}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }


def fsdp_arguments(adapter: str, *, offload: bool = False) -> dict[str, Any]:
    """Trainer arguments for FSDP: full sharding, one wrap unit per decoder layer; `offload` is
    PyTorch's CPU offload (parameters, gradients and the optimizer step on the CPU)."""
    return {"fsdp": "full_shard auto_wrap offload" if offload else "full_shard auto_wrap",
            "fsdp_config": {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                            "use_orig_params": adapter != "none", "sync_module_states": True}}


def resolve_strategy(requested: str, *, model_config: dict[str, Any], adapter: str, rank: int,
                     target_modules: str | tuple[str, ...], sequence_length: int, micro_batch: int,
                     gradient_checkpointing: bool, world_size: int, device_bytes: float | None,
                     lora_dropout: float = 0.05, packing: bool = False,
                     optimizer: str = "adamw_torch", attention: str = "sdpa",
                     kernels: str = "none", modules_to_save: tuple[str, ...] = (),
                     method: Any = None) -> str:
    """`auto` becomes the cheapest strategy the planner says fits the GPU; on CPU, DDP. `method`
    is the sizing's MethodShape: what the training method adds (reference and reward models,
    GRPO's generation); supervised training when absent."""
    if requested != "auto":
        return requested
    if device_bytes is None:
        return "ddp"
    from reconciler.sizing.memory import Architecture, TrainingShape
    from reconciler.sizing.strategy import choose_strategy

    shape = TrainingShape(
        architecture=Architecture.from_config(model_config), adapter=adapter, rank=rank,
        target_modules=target_modules, sequence_length=sequence_length, micro_batch=micro_batch,
        devices=world_size, gradient_checkpointing=gradient_checkpointing, lora_dropout=lora_dropout,
        packing=packing, optimizer=optimizer, attention=attention, kernels=kernels,
        modules_to_save=modules_to_save, **({"method": method} if method is not None else {}))
    found = choose_strategy(shape, device_bytes)
    return found.strategy if found else "zero3-offload"
