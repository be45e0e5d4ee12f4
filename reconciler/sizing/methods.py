"""What a training method adds to the memory of each GPU, as trl 1.x runs it. Pure arithmetic.

Held through the whole step, beside the policy's model states:

- **Reference model** (dpo, kto; grpo with grpo.beta > 0). Under an adapter it is free: trl
  disables the adapter and scores with the frozen base. With full fine-tuning trl builds a second
  model in the policy's dtype (`dtype=self.model.dtype`), frozen: no gradients, no optimizer
  states. That is 16 bits where DeepSpeed trains in bf16 or fp16 (its engine casts it), and fp32
  under `ddp`, where the runtime keeps a full fine-tune's weights in fp32 (`train_in_fp32`).
  trl's `prepare_deepspeed` shards it like the policy's frozen weights: ZeRO-3 keeps stage 3
  and its parameter offload, every other stage runs it whole on each GPU (stage 0).
- **Reward models** (grpo, `rewardModel` rewards): each distinct one once, a
  ForSequenceClassification model (`sequence_classifier_parameters`) for inference only, in 16
  bits (fp32 under fp32 precision). The runtime hands them to trl as scoring functions
  (runtime/rewards.py), each moved whole onto the GPU: no strategy shards or offloads them.
- **vLLM** (grpo.useVllm): colocated vLLM reserves its own share of the GPU for its copy of the
  weights and its KV cache: trl's `vllm_gpu_memory_utilization`, 0.3 of the device.

Held only while GRPO generates (transformers' `generate`, without vLLM), when no activations are:

- **KV cache**: 2 (K and V) x layers x sequences x length x kv_heads x head_dim, in the dtype of
  the policy's weights (no autocast around `generate`). trl generates a whole generation batch
  at once: per GPU, micro-batch x `steps_per_generation` (by default gradientAccumulation)
  completions, each at most prompt + completion long (`shape.sequence_length`).
- **Sampling logits**: `generate` keeps only the last position's logits per step, for each
  sequence: the model's output, its fp32 copy, the temperature-scaled scores and the
  probabilities, vocab x (w + 3 x 4) bytes. trl scores completions through its fused LM head
  (chunked log-softmax), so the completions' logits over the vocabulary are never held whole.
- **Gathered weights** (ZeRO-3): trl gathers the whole policy for `generate`
  (`ds3_gather_for_generation`, on by default): every 16-bit weight, less the shard held anyway.

ORPO (trl's experimental ORPOTrainer) computes its losses from the whole logits, which stay
alive to the backward pass: those of both halves, 2 x micro-batch x length x vocab, and the
log-softmax that the chosen half's NLL loss keeps, micro-batch x length x vocab, each 4 bytes.
That is what a CPU step keeps (its logits come out in fp32); a GPU under autocast computes
16-bit logits, so there it is an upper bound.

Not counted: the forwards that run under `torch.no_grad` (reference log-probabilities, KTO's KL
term, the reward models' scoring) hold one layer's temporaries at a time, and they free them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from reconciler.sizing.memory import FP32, HALF, model_states, sequence_classifier_parameters

if TYPE_CHECKING:
    from reconciler.sizing.memory import Architecture, TrainingShape

VLLM_GPU_MEMORY_UTILIZATION = 0.3  # trl's GRPOConfig.vllm_gpu_memory_utilization (trl 1.16)
SAMPLING_FP32_COPIES = 3  # generate's fp32 logits, processed scores and probabilities, per step


@dataclass(frozen=True)
class MethodMemory:
    """Bytes per GPU that the method adds: `held` through the step, `generation` while GRPO
    generates, `logits` beside the activations (ORPO); `cpu` is offloaded frozen weights."""

    reference: float = 0.0
    reward_models: float = 0.0
    vllm: float = 0.0
    logits: float = 0.0
    kv_cache: float = 0.0
    sampling_logits: float = 0.0
    gathered_for_generation: float = 0.0
    cpu: float = 0.0

    @property
    def held(self) -> float:
        return self.reference + self.reward_models + self.vllm

    @property
    def generation(self) -> float:
        return self.kv_cache + self.sampling_logits + self.gathered_for_generation


def weight_value_bytes(shape: TrainingShape, strategy: str) -> int:
    """Bytes of one of the policy's weights as the model holds them: what trl's reference copy
    and the KV cache of `generate` are in. fp32 under fp32 precision, and for a full fine-tune
    outside DeepSpeed (trained in fp32 under autocast); otherwise 16 bits (a LoRA base in the
    compute dtype, DeepSpeed's 16-bit module)."""
    if shape.precision == "fp32" or (shape.adapter == "none" and not strategy.startswith("zero")):
        return FP32
    return HALF


def frozen_model_bytes(total: float, strategy: str, devices: int) -> tuple[float, float]:
    """(GPU, CPU) bytes per device of a frozen model of `total` bytes, as DeepSpeed holds trl's
    reference model: sharded and offloaded like ZeRO-3's frozen weights, whole on every GPU
    otherwise."""
    states = model_states(0, strategy, devices, frozen_bytes=total)
    return states.frozen, states.cpu


def reference_model_bytes(shape: TrainingShape, strategy: str) -> tuple[float, float]:
    """(GPU, CPU) bytes per device of trl's reference model: none under an adapter."""
    if not shape.method.reference_model or shape.adapter != "none":
        return 0.0, 0.0
    return frozen_model_bytes(shape.parameters * weight_value_bytes(shape, strategy), strategy,
                              shape.devices)


def reward_models_bytes(shape: TrainingShape) -> float:
    """Bytes per device of the reward models, each once and whole."""
    value = FP32 if shape.precision == "fp32" else HALF
    return sum(sequence_classifier_parameters(arch) for arch in shape.method.reward_models) * value


def kv_cache_bytes(architecture: Architecture, sequences: int, length: int, value_bytes: int) -> float:
    """transformers' cache of keys and values for `sequences` rows of `length` positions."""
    return 2 * architecture.num_layers * sequences * length * architecture.kv_size * value_bytes


def sampling_logits_bytes(architecture: Architecture, sequences: int, value_bytes: int) -> float:
    """One decoding step's logits of the last position, and generate's fp32 copies of them."""
    return sequences * architecture.vocab_size * (value_bytes + SAMPLING_FP32_COPIES * FP32)


def generation_sequences(shape: TrainingShape, micro_batch: int) -> int:
    """Completions one GPU generates at once: trl's generation batch, per GPU."""
    return micro_batch * shape.method.generation_micro_batches


def gathered_for_generation_bytes(shape: TrainingShape, strategy: str) -> float:
    """ZeRO-3: the policy's 16-bit weights gathered whole for `generate`, less the shard each
    GPU holds anyway (none when the parameters are offloaded)."""
    if not strategy.startswith("zero3"):
        return 0.0
    if shape.adapter == "none":
        whole = HALF * shape.parameters
    else:
        whole = HALF * shape.trainable + shape.frozen_bytes
    offloaded = strategy in ("zero3-offload", "zero3-offload-parameters")
    return whole - (0.0 if offloaded else whole / max(shape.devices, 1))


def orpo_logits_bytes(shape: TrainingShape, micro_batch: int) -> float:
    """ORPO's logits at the end of its forward: both halves' fp32 logits and the chosen half's
    fp32 log-softmax, for `micro_batch` pairs."""
    tokens = micro_batch * shape.sequence_length
    return tokens * shape.architecture.vocab_size * (2 * FP32 + FP32)


def method_memory(shape: TrainingShape, strategy: str, micro_batch: int) -> MethodMemory:
    """What the shape's method adds per GPU at this strategy and micro-batch."""
    method = shape.method
    reference, reference_cpu = reference_model_bytes(shape, strategy)
    found = MethodMemory(reference=reference, reward_models=reward_models_bytes(shape), cpu=reference_cpu)
    if method.name == "orpo":
        return replace(found, logits=orpo_logits_bytes(shape, micro_batch))
    if method.name != "grpo":
        return found
    if method.use_vllm:
        share = VLLM_GPU_MEMORY_UTILIZATION * shape.device_bytes if shape.device_bytes else 0.0
        return replace(found, vllm=share)
    sequences = generation_sequences(shape, micro_batch)
    value = weight_value_bytes(shape, strategy)
    arch = shape.architecture
    return replace(found, kv_cache=kv_cache_bytes(arch, sequences, shape.sequence_length, value),
                   sampling_logits=sampling_logits_bytes(arch, sequences, value),
                   gathered_for_generation=gathered_for_generation_bytes(shape, strategy))
