"""The strategy and micro-batch a run uses: what it would hold per GPU under each strategy
(`estimate`, in DeepSpeed's accounting) and the cheapest that fits. Pure arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.sizing.activations import step_activation_bytes
from reconciler.sizing.memory import FP32, ModelStates, deepspeed_model_states
from reconciler.sizing.methods import MethodMemory, method_memory

if TYPE_CHECKING:
    from reconciler.sizing.memory import TrainingShape

AUTO_ORDER = ("ddp", "zero2", "zero3", "zero3-offload")  # cheapest communication first
SAFETY_MARGIN = 0.10  # of device memory kept free: allocator fragmentation, CUDA context, buffers


@dataclass(frozen=True)
class Estimate:
    strategy: str
    micro_batch: int
    states: ModelStates
    activations: float
    optimizer_step: float = 0.0  # the optimizer's own temporaries, after the activations are freed
    method: MethodMemory = MethodMemory()  # what the training method adds (methods.py)

    @property
    def peak(self) -> float:
        """Model states and what the method holds throughout, plus the largest of three phases
        that never overlap: the forward and backward (activations, and ORPO's logits), GRPO's
        generation, and the optimizer step."""
        training = self.activations + self.method.logits
        return (self.states.total + self.method.held
                + max(training, self.method.generation, self.optimizer_step))

    def fits(self, device_bytes: float, margin: float = SAFETY_MARGIN) -> bool:
        return self.peak <= device_bytes * (1 - margin)


def estimate(shape: TrainingShape, strategy: str, micro_batch: int | None = None) -> Estimate:
    """What a run would hold per GPU, in DeepSpeed's accounting (`deepspeed_model_states`)."""
    batch = micro_batch or shape.micro_batch
    states = deepspeed_model_states(shape.trainable, strategy, shape.devices,
                                    frozen_bytes=shape.frozen_bytes,
                                    largest_layer=shape.architecture.largest_layer)
    return Estimate(strategy, batch, states, step_activation_bytes(shape, batch, strategy),
                    optimizer_step_bytes(shape, strategy), method_memory(shape, strategy, batch))


def optimizer_step_bytes(shape: TrainingShape, strategy: str) -> float:
    """PyTorch's multi-tensor AdamW (`adamw_torch`, which the Trainer runs under `ddp` on GPUs)
    takes the square root of every second moment at once, into a new fp32 tensor the size of
    that state: 4 bytes per trainable parameter, while the gradients are still held. The fused
    kernel (`adamw_torch_fused`) and DeepSpeed's optimizers update in place."""
    return FP32 * shape.trainable if strategy == "ddp" and shape.optimizer == "adamw_torch" else 0.0


def choose_strategy(shape: TrainingShape, device_bytes: float,
                    margin: float = SAFETY_MARGIN) -> Estimate | None:
    """The cheapest strategy that fits (DDP, then ZeRO-2, ZeRO-3, ZeRO-3 with offload), at the
    largest power-of-two micro-batch up to the requested one; None when nothing fits."""
    for strategy in AUTO_ORDER:
        if estimate(shape, strategy, 1).fits(device_bytes, margin):
            return largest_micro_batch(shape, strategy, device_bytes, margin)
    return None


def largest_micro_batch(shape: TrainingShape, strategy: str, device_bytes: float,
                        margin: float = SAFETY_MARGIN, limit: int | None = None) -> Estimate | None:
    """The largest power-of-two micro-batch (up to `limit`, default the shape's own) that fits."""
    best = None
    batch = 1
    while batch <= (limit or shape.micro_batch):
        candidate = estimate(shape, strategy, batch)
        if not candidate.fits(device_bytes, margin):
            break
        best = candidate
        batch *= 2
    return best
