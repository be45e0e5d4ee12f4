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

Activations are counted as the runtime's own training step keeps them (`step_activation_bytes`):
transformers' SDPA attention, which stores no attention scores; Llama's fp32 RMSNorm; PEFT's
LoRA path; autocast's 16-bit copies; and trl's fused LM head, which never materializes the
logits. Each term names the tensor autograd saves, and tests/unit/sizing/test_memory_activations.py
checks the sum against the tensors saved in a real training step. Korthikanti et al. (2022),
sbh(34 + 5as/h) bytes per layer, 2sbh with full recomputation, plus the logits, is kept as
`activation_bytes`: it counts attention scores that memory-efficient attention never stores.

Compute follows Kaplan et al. (2020): 6 FLOPs per parameter per token to train (2 forward,
4 backward), 8 with full recomputation; GPU-hours divide that by the GPU's dense bf16 peak
times an assumed model FLOPs utilisation (MFU), both per GPU product and overridable.
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
LOGIT_BYTES = 4  # logits are upcast to fp32 for the loss
FP32 = 4
# trl's fused LM head projects hidden states onto the vocabulary in tiles of this many tokens
# by this many vocabulary entries (trl/kernels/chunked_logprob.py, trl/trainer/utils.py).
HEAD_TOKEN_TILE = 4096
HEAD_VOCAB_TILE = 32768
# Per token, beside the hidden state: the fused head's log-probability and log-normalizer (fp32),
# the label (int64) and two masks (bool).
HEAD_PER_TOKEN = 4 + 4 + 8 + 2
# A dropout mask per element: CUDA's fused dropout keeps a bool; the CPU keeps a mask in the
# input's dtype (fp32 for PEFT's fp32 adapters, 16 bits for a module run in 16 bits).
CUDA_DROPOUT_MASK_BYTES = 1

STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "zero3-offload")
AUTO_ORDER = ("ddp", "zero2", "zero3", "zero3-offload")  # cheapest communication first
SAFETY_MARGIN = 0.10  # of device memory kept free: allocator fragmentation, CUDA context, buffers

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


# Compute. Dense (no sparsity) bf16 tensor-core peak of each GPU, in TFLOPS, from NVIDIA's
# data sheets (fp16 for V100 and T4, which have no bf16), matched against the words of the
# product label (nvidia.com/gpu.product), most specific first; and the model FLOPs
# utilisation assumed when turning FLOPs into GPU-hours. Both are assumptions:
# tuneops.yaml's `planner.peakTflops` and `planner.mfu` override them.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("B200", 2250), ("GH200", 989), ("H200", 989), ("H100-PCIE", 756), ("H100-NVL", 835),
    ("H100", 989), ("H800", 989), ("A100", 312), ("A800", 312), ("L40S", 362), ("L40", 181),
    ("L4", 121), ("A10", 125), ("V100", 125), ("T4", 65),
)
ASSUMED_MFU: tuple[tuple[str, float], ...] = (("A100", 0.40), ("A800", 0.40))
DEFAULT_MFU = 0.35  # fine-tuning at modest scale; large pre-training runs reach about 0.4
TRAIN_FLOPS = 6  # per parameter per token: 2 forward + 4 backward (Kaplan et al., 2020)
RECOMPUTE_FLOPS = 2  # gradient checkpointing runs each forward twice
REFERENCE_FLOPS = 2  # DPO: a forward pass of the frozen reference model


def _product_match(gpu_product: str, table: tuple[tuple[str, float], ...]) -> float | None:
    words = "-" + gpu_product.upper().replace("_", "-") + "-"
    for pattern, value in table:
        if f"-{pattern}-" in words:
            return value
    return None


def peak_flops(gpu_product: str | None, overrides: dict[str, float] | None = None) -> float | None:
    """FLOP/s of one GPU at its dense bf16 peak; None for a product the table does not know."""
    if not gpu_product:
        return None
    tflops = (overrides or {}).get(gpu_product) or _product_match(gpu_product, PEAK_TFLOPS)
    return tflops * 1e12 if tflops else None


def assumed_mfu(gpu_product: str | None, overrides: dict[str, float] | None = None) -> float:
    if gpu_product and gpu_product in (overrides or {}):
        return (overrides or {})[gpu_product]
    return (_product_match(gpu_product, ASSUMED_MFU) if gpu_product else None) or DEFAULT_MFU


def flops_per_parameter_token(method: str, recompute: bool) -> int:
    """Training FLOPs per parameter per token processed; a DPO token also goes through the
    frozen reference model's forward pass. LoRA still runs the whole network forward and
    backward (the frozen weights' own gradients are skipped, the activations' are not), so
    it is counted as 6N: an upper bound by at most a third."""
    flops = TRAIN_FLOPS + (RECOMPUTE_FLOPS if recompute else 0)
    return flops + (REFERENCE_FLOPS if method == "dpo" else 0)


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
    if strategy == "zero3":
        return ModelStates(HALF * psi / n, HALF * psi / n, k * psi / n, frozen_bytes / n)
    # zero3-offload: optimizer states and parameters live in CPU memory, sharded over devices;
    # each device holds its gradient shard and gathers one layer's parameters at a time.
    return ModelStates(0.0, HALF * psi / n, 0.0, 0.0,
                       cpu=(k + HALF) * psi / n + frozen_bytes / n)


def activation_bytes(architecture: Architecture, sequence_length: int, micro_batch: int, *,
                     recompute: bool = False) -> float:
    """Korthikanti et al.'s activations for one micro-batch, in bytes: the published formula,
    for GPT-style blocks that keep their attention scores. `estimate` counts the runtime's
    own step instead (`step_activation_bytes`)."""
    s, b = sequence_length, micro_batch
    h, a, layers = architecture.hidden_size, architecture.num_attention_heads, architecture.num_layers
    per_layer = 2 * s * b * h if recompute else s * b * h * (34 + 5 * a * s / h)
    logits = LOGIT_BYTES * s * b * architecture.vocab_size
    return layers * per_layer + logits


def _adapter_input_bytes(shape: TrainingShape, mask_bytes: int) -> float:
    """Per token and layer, what PEFT's LoRA path keeps for each adapted matrix: its input cast
    to the adapter's fp32, passed through dropout (whose mask is kept) and cast back to 16 bits
    by autocast for A (kept), and A's r-wide output for B. Each matrix keeps its own copies."""
    shapes = shape.architecture.linear_shapes()
    names = list(shapes) if shape.target_modules == "all-linear" else list(shape.target_modules)
    per_input = HALF + (mask_bytes if shape.lora_dropout > 0 else 0)
    return sum(per_input * shapes[name][0] + HALF * shape.rank for name in names)


def kept_activation_bytes(shape: TrainingShape, micro_batch: int, *, device: str = "cuda",
                          fp32_weights: bool = True) -> float:
    """Bytes that one micro-batch's forward pass keeps for the backward pass, tensor by tensor,
    in the runtime's training step (16-bit autocast; see the module docstring). Per token and
    layer (h hidden, f MLP width, a heads):

    - attention: query, key, value (keys and values repeated to every head) and output in 16
      bits, 8h, plus SDPA's fp32 log-sum-exp, 4a; per layer also the attention mask, which
      transformers hands SDPA as a 16-bit (rows x length x length) tensor. A batch without
      padding needs no mask, so there the count is high;
    - MLP: the gate, up and SiLU outputs, 6f;
    - full fine-tuning with fp32 weights under autocast (`ddp`): the residual stream
      is fp32. Each RMSNorm keeps its fp32 input and normalized output, 8h; each linear its own
      16-bit copy of its input, 10h + 2f;
    - full fine-tuning under DeepSpeed, which runs the module in 16 bits (`fp32_weights`
      False): each RMSNorm keeps its fp32 copy and its 16-bit output, 6h; the linears that
      read the same input share it, 4h + 2f;
    - LoRA: the residual stream is 16-bit. Each RMSNorm keeps its fp32 copy, 4h; the frozen
      linears keep nothing, the adapters what `_adapter_input_bytes` says. QLoRA's 4-bit
      linears also keep their 16-bit inputs, 4h + 2f (bitsandbytes; not measured here);
    - with gradient checkpointing, only each layer's input is kept, and one layer is
      recomputed at a time.

    After the last layer: the final norm, the fused head's input and `HEAD_PER_TOKEN` bytes.
    Packing joins a micro-batch's rows into one row of `micro_batch x length` tokens."""
    arch = shape.architecture
    h, f, a = arch.hidden_size, arch.intermediate_size, arch.num_attention_heads
    tokens = shape.sequence_length * micro_batch
    rows, length = (1, tokens) if shape.packing else (micro_batch, shape.sequence_length)
    mask = HALF * rows * length * length
    attention = 8 * h + 4 * a
    norm_scale = 2 * FP32  # each RMSNorm's fp32 reciprocal root, one per token
    first_layer_saving = 0.0
    if shape.adapter == "none" and fp32_weights:
        layer = 2 * 8 * h + 10 * h + 2 * f + attention + 6 * f + norm_scale
        residual, head_input, final_norm = FP32, FP32, 8 * h + FP32
    elif shape.adapter == "none":
        layer = 2 * 6 * h + 4 * h + 2 * f + attention + 6 * f + norm_scale
        residual, head_input, final_norm = HALF, HALF, 6 * h + FP32
    else:
        mask_bytes = CUDA_DROPOUT_MASK_BYTES if device == "cuda" else FP32 if fp32_weights else HALF
        layer = 2 * 4 * h + attention + 6 * f + norm_scale + _adapter_input_bytes(shape, mask_bytes)
        if shape.adapter == "qlora":
            layer += 4 * h + 2 * f
        residual, head_input, final_norm = HALF, HALF, 4 * h + FP32
        # The frozen embeddings need no gradient, so the first layer's input norm and the
        # dropouts on its query, key and value inputs keep nothing.
        targets = shape.architecture.linear_shapes() if shape.target_modules == "all-linear" \
            else shape.target_modules
        dropped = sum(1 for name in ("q_proj", "k_proj", "v_proj") if name in targets)
        first_layer_saving = 4 * h + FP32 + (dropped * mask_bytes * h if shape.lora_dropout > 0 else 0)
    one_layer = tokens * layer + mask
    if shape.gradient_checkpointing:
        layers = arch.num_layers * tokens * residual * h + one_layer
    else:
        layers = arch.num_layers * one_layer - tokens * first_layer_saving
    return layers + tokens * (final_norm + head_input * h + HEAD_PER_TOKEN)


def step_buffer_bytes(shape: TrainingShape, micro_batch: int, *, fp32_weights: bool = True) -> float:
    """Memory a step holds beside the kept activations: the fused head's tile of logits and,
    for weights trained in fp32, autocast's 16-bit copies of them (kept from the forward pass
    to the backward; with gradient checkpointing, one layer's at a time, while it is
    recomputed) and the head's 16-bit copy of a tile's weights."""
    arch = shape.architecture
    tokens = shape.sequence_length * micro_batch
    vocab_tile = min(arch.vocab_size, HEAD_VOCAB_TILE)
    head = HALF * min(tokens, HEAD_TOKEN_TILE) * vocab_tile
    if not fp32_weights:
        return head
    share = 1 / arch.num_layers if shape.gradient_checkpointing else 1
    if shape.adapter == "none":
        return HALF * arch.linear_parameters * share + head + HALF * vocab_tile * arch.hidden_size
    return HALF * shape.trainable * share + head


def step_activation_bytes(shape: TrainingShape, micro_batch: int, strategy: str = "ddp", *,
                          device: str = "cuda") -> float:
    """What `estimate` counts as activations: the kept tensors and the step's buffers. Under
    DeepSpeed (every ZeRO strategy) the engine runs the whole module, adapters included, in 16
    bits and keeps the fp32 masters in its optimizer; the Trainer's own mixed precision (`ddp`)
    keeps fp32 trained weights and computes under autocast. `fsdp` is estimated as ZeRO-3, and
    its mixed precision also computes with 16-bit copies of the shards."""
    fp32_weights = not strategy.startswith("zero")
    return (kept_activation_bytes(shape, micro_batch, device=device, fp32_weights=fp32_weights)
            + step_buffer_bytes(shape, micro_batch, fp32_weights=fp32_weights))


@dataclass(frozen=True)
class Estimate:
    strategy: str
    micro_batch: int
    states: ModelStates
    activations: float
    optimizer_step: float = 0.0  # the optimizer's own temporaries, after the activations are freed

    @property
    def peak(self) -> float:
        return self.states.total + max(self.activations, self.optimizer_step)

    def fits(self, device_bytes: float, margin: float = SAFETY_MARGIN) -> bool:
        return self.peak <= device_bytes * (1 - margin)


@dataclass(frozen=True)
class TrainingShape:
    """What the planner needs to know about a fine-tune, in plain numbers."""

    architecture: Architecture
    adapter: str  # "lora", "qlora" or "none"
    rank: int = 16
    target_modules: str | tuple[str, ...] = "all-linear"
    sequence_length: int = 2048
    micro_batch: int = 1
    devices: int = 1
    gradient_checkpointing: bool = False
    lora_dropout: float = 0.05
    packing: bool = False
    optimizer: str = "adamw_torch"

    @property
    def trainable(self) -> int:
        if self.adapter == "none":
            return self.architecture.parameters
        return lora_parameters(self.architecture, self.rank, self.target_modules)

    @property
    def frozen_bytes(self) -> float:
        if self.adapter == "none":
            return 0.0
        arch = self.architecture
        other = arch.parameters - arch.linear_parameters  # embeddings, norms, head: 16-bit
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
    if strategy in ("zero3", "zero3-offload"):
        return replace(states, gradients=0.0, gathered=2 * HALF * largest_layer)
    return states


def estimate(shape: TrainingShape, strategy: str, micro_batch: int | None = None) -> Estimate:
    """What a run would hold per GPU, in DeepSpeed's accounting (`deepspeed_model_states`)."""
    batch = micro_batch or shape.micro_batch
    states = deepspeed_model_states(shape.trainable, strategy, shape.devices,
                                    frozen_bytes=shape.frozen_bytes,
                                    largest_layer=shape.architecture.largest_layer)
    return Estimate(strategy, batch, states, step_activation_bytes(shape, batch, strategy),
                    optimizer_step_bytes(shape, strategy))


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


def zero_paper_rounding(gigabytes: float) -> str:
    """How the ZeRO paper prints memory in Table 1: whole numbers from 100 up (truncated),
    one decimal from 10, two below."""
    value = Decimal(repr(gigabytes))
    if value >= 100:
        return str(value.quantize(Decimal(1), rounding=ROUND_FLOOR))
    places = Decimal("0.1") if value >= 10 else Decimal("0.01")
    text = f"{value.quantize(places, rounding=ROUND_HALF_UP):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
