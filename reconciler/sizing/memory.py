"""GPU memory per device for a fine-tune, before anything is scheduled. Pure arithmetic.

Model states follow the ZeRO paper (Rajbhandari et al., 2020, section 3.1): mixed-precision
Adam keeps 2 bytes of 16-bit parameters and 2 of gradients per trainable parameter, plus
K = 12 bytes of fp32 optimizer state (parameter copy, momentum, variance). Data parallelism
over N devices divides what each ZeRO stage partitions:

    DDP        (2 + 2 + K) Ψ
    ZeRO-1     2Ψ + 2Ψ + KΨ/N          (optimizer states, "P_os")
    ZeRO-2     2Ψ + (2 + K)Ψ/N         (and gradients, "P_os+g")
    ZeRO-3     (2 + 2 + K)Ψ/N          (and parameters, "P_os+g+p")

What a run decides with (`estimate`: `validate`, `strategy: auto`, `tuneops estimate`) is
DeepSpeed's accounting, checked against its own estimators in tests/unit/sizing/test_memory_libraries.py:
its optimizer partition also holds an fp32 copy of the gradients (K = 16), and ZeRO-3 keeps no
16-bit gradient shard but gathers the largest layer, 4L bytes (2L weights + 2L gradients):

    ZeRO-2              2Ψ + 18Ψ/N
    ZeRO-3              18Ψ/N + 4L
    ZeRO-3 + offload    4L on the GPU; 18Ψ/N in CPU memory per GPU

With LoRA only the adapter is trainable: the frozen base costs its 16-bit weights (4-bit NF4
for QLoRA, plus the quantization constants), sharded only by ZeRO-3.

Activations are counted in `activations.py`, what a training method adds (trl's reference and
reward models, GRPO's generation, ORPO's logits) in `methods.py`, the strategy and micro-batch a
run uses are chosen in `strategy.py`, and training compute (FLOPs, peak FLOPS, MFU) is in
`throughput.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

ADAM_STATE_BYTES = 12  # K: fp32 parameter copy, momentum and variance (the ZeRO paper)
# DeepSpeed's ZeRO optimizer also keeps an fp32 copy of each gradient in its partition, so its
# own estimators (and its memory) use K = 16; see tests/unit/sizing/test_memory_libraries.py.
DEEPSPEED_STATE_BYTES = ADAM_STATE_BYTES + 4
HALF = 2  # bytes of a 16-bit value
NF4_BITS = 4
DOUBLE_QUANT_BITS = 8 / 64 + 32 / (64 * 256)  # 8-bit absmax per 64 weights, fp32 per 256 blocks
QLORA_BYTES = (NF4_BITS + DOUBLE_QUANT_BITS) / 8
FP32 = 4

STRATEGIES = ("ddp", "zero1", "zero2", "zero2-offload", "zero3", "zero3-offload-optimizer",
              "zero3-offload-parameters", "zero3-offload")
"""The planner's strategies: a spec's `distributed.strategy` with its `offload`
(Distributed.planned_strategy); `fsdp` is sized as ZeRO-3 with the same offloads."""

# Memory of GPUs whose Kubernetes product label (nvidia.com/gpu.product) does not say it.
DEVICE_MEMORY_GB = {"NVIDIA-L40S": 48, "NVIDIA-L40": 48, "NVIDIA-L4": 24, "NVIDIA-A10G": 24,
                    "NVIDIA-A10": 24, "Tesla-T4": 16, "NVIDIA-H200": 141, "NVIDIA-B200": 192}


def device_memory(gpu_product: str | None) -> float | None:
    """Bytes of memory of a GPU product, from its label ("NVIDIA-A100-SXM4-40GB") or a table;
    None when unknown."""
    if not gpu_product:
        return None
    match = re.search(r"(\d+)GB", gpu_product, re.IGNORECASE)
    if match:
        return int(match.group(1)) * 1e9
    known = DEVICE_MEMORY_GB.get(gpu_product)
    return known * 1e9 if known else None


@dataclass(frozen=True)
class Architecture:
    """The shape of a decoder-only transformer (Llama family: SwiGLU MLP, grouped-query
    attention, RMSNorm), as in a Hugging Face config.json."""

    hidden_size: int
    num_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    num_key_value_heads: int | None = None
    tie_word_embeddings: bool = False

    @classmethod
    def from_config(cls, config: dict) -> Architecture:
        """From a config.json's keys (`num_hidden_layers`, `hidden_size`, ...)."""
        return cls(
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_attention_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            num_key_value_heads=config.get("num_key_value_heads"),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    @property
    def kv_size(self) -> int:
        heads = self.num_key_value_heads or self.num_attention_heads
        return self.hidden_size // self.num_attention_heads * heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each linear layer in one decoder block."""
        h, kv, ff = self.hidden_size, self.kv_size, self.intermediate_size
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, ff), "up_proj": (h, ff), "down_proj": (ff, h)}

    @property
    def linear_parameters(self) -> int:
        """Weights of the block linears: what PEFT adapts and bitsandbytes quantizes."""
        return self.num_layers * sum(d_in * d_out for d_in, d_out in self.linear_shapes().values())

    @property
    def largest_layer(self) -> int:
        """Parameters of the largest single module (the embedding, the head or one block
        linear): what ZeRO-3 gathers at once, as DeepSpeed's estimator counts it."""
        return max(self.vocab_size * self.hidden_size,
                   *(d_in * d_out for d_in, d_out in self.linear_shapes().values()))

    @property
    def parameters(self) -> int:
        embeddings = self.vocab_size * self.hidden_size
        norms = (2 * self.num_layers + 1) * self.hidden_size
        head = 0 if self.tie_word_embeddings else embeddings
        return embeddings + self.linear_parameters + norms + head


def lora_parameters(architecture: Architecture, rank: int,
                    target_modules: str | Iterable[str] = "all-linear") -> int:
    """Trainable LoRA parameters: r x (d_in + d_out) per adapted matrix (A is r x d_in, B is
    d_out x r). `all-linear` adapts every block linear, not the output head, as PEFT does."""
    shapes = architecture.linear_shapes()
    names = list(shapes) if target_modules == "all-linear" else list(target_modules)
    unknown = [name for name in names if name not in shapes]
    if unknown:
        raise ValueError(f"unknown modules for this architecture: {', '.join(unknown)}")
    return architecture.num_layers * sum(rank * (shapes[n][0] + shapes[n][1]) for n in names)


EMBEDDING_NAMES = ("embed_tokens", "wte", "embed_in", "word_embeddings", "tok_embeddings")
HEAD_NAMES = ("lm_head", "embed_out", "output")


def saved_module_parameters(architecture: Architecture, modules: Iterable[str]) -> int:
    """Parameters of `adapter.modulesToSave`, trained in full beside the adapter: the embedding
    and the output head are vocab x hidden each (once when tied: PEFT keeps a tied pair tied),
    a block linear counts in every layer."""
    shapes = architecture.linear_shapes()
    embedding = architecture.vocab_size * architecture.hidden_size
    names = {name.rpartition(".")[2] for name in modules}
    unknown = sorted(names - {*EMBEDDING_NAMES, *HEAD_NAMES, *shapes})
    if unknown:
        raise ValueError(f"unknown modules to save for this architecture: {', '.join(unknown)}")
    saves_embedding, saves_head = bool(names & set(EMBEDDING_NAMES)), bool(names & set(HEAD_NAMES))
    tied_pair = architecture.tie_word_embeddings and saves_embedding and saves_head
    vocabulary = embedding * (saves_embedding + saves_head - tied_pair)
    return vocabulary + architecture.num_layers * sum(
        shapes[name][0] * shapes[name][1] for name in names if name in shapes)


@dataclass(frozen=True)
class ModelStates:
    """Bytes per device (and per node's CPU memory, for offload)."""

    parameters: float
    gradients: float
    optimizer: float
    frozen: float = 0.0
    cpu: float = 0.0
    gathered: float = 0.0  # ZeRO-3: the largest layer's weights and gradients, gathered whole

    @property
    def total(self) -> float:
        return self.parameters + self.gradients + self.optimizer + self.frozen + self.gathered


def model_states(trainable: float, strategy: str, devices: int, *, frozen_bytes: float = 0.0,
                 k: int = ADAM_STATE_BYTES) -> ModelStates:
    """Model-state bytes per device for `trainable` parameters trained with mixed-precision
    Adam, plus `frozen_bytes` of frozen weights (a LoRA base), under `strategy` over
    `devices` data-parallel devices, in the ZeRO paper's accounting."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    n = max(devices, 1)
    psi = trainable
    if strategy == "ddp":
        return ModelStates(HALF * psi, HALF * psi, k * psi, frozen_bytes)
    if strategy == "zero1":
        return ModelStates(HALF * psi, HALF * psi, k * psi / n, frozen_bytes)
    if strategy == "zero2":
        return ModelStates(HALF * psi, HALF * psi / n, k * psi / n, frozen_bytes)
    if strategy == "zero2-offload":
        # optimizer states, fp32 masters and the reduced gradients live in CPU memory; the
        # step runs there. The GPU keeps every 16-bit parameter, as ZeRO-2 does.
        return ModelStates(HALF * psi, 0.0, 0.0, frozen_bytes, cpu=k * psi / n)
    if strategy == "zero3":
        return ModelStates(HALF * psi / n, HALF * psi / n, k * psi / n, frozen_bytes / n)
    if strategy == "zero3-offload-optimizer":
        return ModelStates(HALF * psi / n, HALF * psi / n, 0.0, frozen_bytes / n, cpu=k * psi / n)
    if strategy == "zero3-offload-parameters":
        return ModelStates(0.0, HALF * psi / n, k * psi / n, 0.0,
                           cpu=HALF * psi / n + frozen_bytes / n)
    # zero3-offload: optimizer states and parameters live in CPU memory, sharded over devices;
    # each device holds its gradient shard and gathers one layer's parameters at a time.
    return ModelStates(0.0, HALF * psi / n, 0.0, 0.0,
                       cpu=(k + HALF) * psi / n + frozen_bytes / n)


def sequence_classifier_parameters(architecture: Architecture) -> int:
    """Parameters of the model as a reward model (transformers' ForSequenceClassification with
    one label): the LM head is replaced by a `score` head of hidden x 1, without bias."""
    head = 0 if architecture.tie_word_embeddings else architecture.vocab_size * architecture.hidden_size
    return architecture.parameters - head + architecture.hidden_size


PAIRED_METHODS = ("dpo", "orpo", "reward")
"""Methods trained on preference pairs: trl joins each micro-batch's chosen and rejected answers
into one batch of 2 x micro-batch rows (DPO's and the reward trainer's collators, ORPO's
concatenated_forward)."""
DROPOUT_FREE_METHODS = ("dpo", "kto", "orpo", "reward")
"""Methods whose trl trainer sets every dropout to p = 0 (`disable_dropout`, on by default), so
LoRA's dropout keeps no mask."""
UNFUSED_HEAD_METHODS = ("orpo", "reward")
"""Methods whose step does not go through trl's fused LM head: ORPO computes its losses from the
whole logits; a reward model has a one-output score head instead of the LM head."""


@dataclass(frozen=True)
class MethodShape:
    """What the training method adds to a fine-tune's shape; `methods.py` sizes it. The
    defaults are supervised training (sft, pretrain), which adds nothing."""

    name: str = "sft"  # the spec's method
    reference_model: bool = False  # FineTuneSpec.has_reference_model: trl keeps a frozen reference
    reward_models: tuple[Architecture, ...] = ()  # grpo: each distinct reward model's architecture
    completion_length: int = 0  # grpo: grpo.maxCompletionLength, tokens generated at most
    generation_micro_batches: int = 1  # grpo: micro-batches generated at once (trl's steps_per_generation)
    use_vllm: bool = False  # grpo: vLLM colocated on the GPU generates

    @property
    def rows_per_example(self) -> int:
        """Sequences the model runs with gradients per micro-batch example."""
        return 2 if self.name in PAIRED_METHODS else 1

    @property
    def keeps_dropout(self) -> bool:
        return self.name not in DROPOUT_FREE_METHODS

    @property
    def fused_head(self) -> bool:
        return self.name not in UNFUSED_HEAD_METHODS


@dataclass(frozen=True)
class TrainingShape:
    """What the planner needs to know about a fine-tune, in plain numbers."""

    architecture: Architecture
    adapter: str  # "lora", "qlora" or "none"
    rank: int = 16
    target_modules: str | tuple[str, ...] = "all-linear"
    sequence_length: int = 2048  # tokens per row; for grpo the prompt's and the completion's
    micro_batch: int = 1
    devices: int = 1
    gradient_checkpointing: bool = False
    lora_dropout: float = 0.05
    packing: bool = False
    optimizer: str = "adamw_torch"
    attention: str = "sdpa"  # transformers' attn_implementation: sdpa, flash_attention_2 or eager
    kernels: str = "none"  # "liger": Liger's RMSNorm and SwiGLU keep less
    modules_to_save: tuple[str, ...] = ()
    method: MethodShape = MethodShape()
    precision: str = "bf16"  # the compute precision: bf16, fp16 or fp32 (`auto` resolved)
    device_bytes: float | None = None  # memory of one GPU, where known (vLLM takes a share of it)

    @property
    def parameters(self) -> int:
        """Parameters of the model trained: a reward model's score head replaces the LM head."""
        if self.method.name == "reward":
            return sequence_classifier_parameters(self.architecture)
        return self.architecture.parameters

    @property
    def trainable(self) -> int:
        if self.adapter == "none":
            return self.parameters
        score = self.architecture.hidden_size if self.method.name == "reward" else 0  # new, trained
        return (lora_parameters(self.architecture, self.rank, self.target_modules)
                + saved_module_parameters(self.architecture, self.modules_to_save) + score)

    @property
    def frozen_bytes(self) -> float:
        if self.adapter == "none":
            return 0.0
        arch = self.architecture
        other = self.parameters - arch.linear_parameters  # embeddings, norms, head: 16-bit
        linear_bytes = QLORA_BYTES if self.adapter == "qlora" else HALF
        return arch.linear_parameters * linear_bytes + other * HALF


def deepspeed_model_states(trainable: float, strategy: str, devices: int, *,
                           frozen_bytes: float = 0.0, largest_layer: float = 0.0) -> ModelStates:
    """Model-state bytes per device as DeepSpeed allocates them (and its estimators count):
    K = 16, and for ZeRO-3 no 16-bit gradient shard but the gathered largest layer (4L).
    The paper's K = 12 is up to 20% below what DeepSpeed allocates."""
    if strategy == "ddp":
        return model_states(trainable, strategy, devices, frozen_bytes=frozen_bytes)
    states = model_states(trainable, strategy, devices, frozen_bytes=frozen_bytes,
                          k=DEEPSPEED_STATE_BYTES)
    if strategy.startswith("zero3"):
        return replace(states, gradients=0.0, gathered=2 * HALF * largest_layer)
    if strategy == "zero2-offload":  # DeepSpeed's estimator: 2 bytes per parameter on the GPU
        return replace(states, gradients=0.0)
    return states


def zero_paper_rounding(gigabytes: float) -> str:
    """How the ZeRO paper prints memory in Table 1: whole numbers from 100 up (truncated),
    one decimal from 10, two below."""
    value = Decimal(repr(gigabytes))
    if value >= 100:
        return str(value.quantize(Decimal(1), rounding=ROUND_FLOOR))
    places = Decimal("0.1") if value >= 10 else Decimal("0.01")
    text = f"{value.quantize(places, rounding=ROUND_HALF_UP):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
