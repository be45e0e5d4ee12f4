"""Activation memory of one micro-batch, before anything is scheduled. Pure arithmetic.

Activations are counted as the runtime's own training step keeps them (`step_activation_bytes`):
transformers' SDPA attention, which stores no attention scores; Llama's fp32 RMSNorm; PEFT's
LoRA path; autocast's 16-bit copies; and trl's fused LM head, which never materializes the
logits. Each term names the tensor autograd saves, and tests/unit/sizing/test_memory_activations.py
checks the sum against the tensors saved in a real training step. Korthikanti et al. (2022),
sbh(34 + 5as/h) bytes per layer, 2sbh with full recomputation, plus the logits, is kept as
`activation_bytes`: it counts attention scores that memory-efficient attention never stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.sizing.memory import FP32, HALF

if TYPE_CHECKING:
    from reconciler.sizing.memory import Architecture, TrainingShape

LOGIT_BYTES = 4  # logits are upcast to fp32 for the loss
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


def _dropout_masks(shape: TrainingShape) -> bool:
    """Whether LoRA's dropout keeps masks: not where trl disables dropout (dpo, kto, orpo, reward)."""
    return shape.lora_dropout > 0 and shape.method.keeps_dropout


def _adapter_input_bytes(shape: TrainingShape, mask_bytes: int) -> float:
    """Per token and layer, what PEFT's LoRA path keeps for each adapted matrix: its input cast
    to the adapter's fp32, passed through dropout (whose mask is kept) and cast back to 16 bits
    by autocast for A (kept), and A's r-wide output for B. Each matrix keeps its own copies."""
    shapes = shape.architecture.linear_shapes()
    names = list(shapes) if shape.target_modules == "all-linear" else list(shape.target_modules)
    per_input = HALF + (mask_bytes if _dropout_masks(shape) else 0)
    return sum(per_input * shapes[name][0] + HALF * shape.rank for name in names)


def kept_activation_bytes(shape: TrainingShape, micro_batch: int, *, device: str = "cuda",
                          fp32_weights: bool = True) -> float:
    """Bytes that one micro-batch's forward pass keeps for the backward pass, tensor by tensor,
    in the runtime's training step (16-bit autocast; see the module docstring). Per token and
    layer (h hidden, f MLP width, a heads):

    - attention (`attention_bytes`): query, key, value (keys and values repeated to every head)
      and output in 16 bits, 8h, plus SDPA's fp32 log-sum-exp, 4a; per layer also the attention
      mask, which transformers hands SDPA as a 16-bit (rows x length x length) tensor. A batch
      without padding needs no mask, so there the count is high. flash-attention keeps keys and
      values at their own (grouped) width and needs no mask: a packed batch goes in as one
      sequence with position ids (padding-free). `eager` keeps the scores, softmaxed in fp32 and
      cast back to 16 bits, 6 x heads x length^2 per row, but no log-sum-exp and no mask (it is
      added to the scores); its output is kept only where the output projection is trained in
      full (8h, else 6h);
    - MLP: the gate, up and SiLU outputs, 6f (Liger's SwiGLU recomputes the SiLU: 4f);
    - full fine-tuning with fp32 weights under autocast (`ddp`): the residual stream
      is fp32. Each RMSNorm keeps its fp32 input and normalized output, 8h; each linear its own
      16-bit copy of its input, 10h + 2f;
    - full fine-tuning under DeepSpeed, which runs the module in 16 bits (`fp32_weights`
      False): each RMSNorm keeps its fp32 copy and its 16-bit output, 6h; the linears that
      read the same input share it, 4h + 2f;
    - LoRA: the residual stream is 16-bit. Each RMSNorm keeps its fp32 copy, 4h; the frozen
      linears keep nothing, the adapters what `_adapter_input_bytes` says. QLoRA's 4-bit
      linears also keep their 16-bit inputs, 4h + 2f (bitsandbytes; not measured here);
    - Liger's RMSNorm keeps only its input, in the residual stream's own dtype (and its fp32
      reciprocal root);
    - with gradient checkpointing, only each layer's input is kept, and one layer is
      recomputed at a time.

    After the last layer: the final norm, the fused head's input and `HEAD_PER_TOKEN` bytes;
    where the head is an ordinary linear (ORPO's LM head, a reward model's score), its 16-bit
    input under autocast, 2h. Packing joins a micro-batch's rows into one row of `micro_batch x
    length` tokens. `micro_batch` counts rows: a preference method's step runs two per example
    (`step_activation_bytes`)."""
    arch = shape.architecture
    h, f = arch.hidden_size, arch.intermediate_size
    tokens = shape.sequence_length * micro_batch
    attention, per_layer = attention_bytes(shape, micro_batch)
    norm_scale = 2 * FP32  # each RMSNorm's fp32 reciprocal root, one per token
    liger = shape.kernels == "liger"
    mlp = (4 if liger else 6) * f
    first_layer_saving = 0.0
    if shape.adapter == "none" and fp32_weights:
        residual, head_input, norm = FP32, FP32, 8 * h
        layer_linears = 10 * h + 2 * f
    elif shape.adapter == "none":
        residual, head_input, norm = HALF, HALF, 6 * h
        layer_linears = 4 * h + 2 * f
    else:
        residual, head_input, norm = HALF, HALF, 4 * h
        layer_linears = 0
    if liger:
        norm = residual * h
    final_norm = norm + FP32
    layer = 2 * norm + layer_linears + attention + mlp + norm_scale
    if shape.adapter != "none":
        mask_bytes = CUDA_DROPOUT_MASK_BYTES if device == "cuda" else FP32 if fp32_weights else HALF
        layer += _adapter_input_bytes(shape, mask_bytes)
        if shape.adapter == "qlora":
            layer += 4 * h + 2 * f
        # The frozen embeddings need no gradient, so the first layer's input norm and the
        # dropouts on its query, key and value inputs keep nothing.
        targets = shape.architecture.linear_shapes() if shape.target_modules == "all-linear" \
            else shape.target_modules
        dropped = sum(1 for name in ("q_proj", "k_proj", "v_proj") if name in targets)
        first_layer_saving = norm + FP32 + (dropped * mask_bytes * h if _dropout_masks(shape) else 0)
    one_layer = tokens * layer + per_layer
    if shape.gradient_checkpointing:
        layers = arch.num_layers * tokens * residual * h + one_layer
    else:
        layers = arch.num_layers * one_layer - tokens * first_layer_saving
    head = head_input * h + HEAD_PER_TOKEN if shape.method.fused_head else HALF * h
    return layers + tokens * (final_norm + head)


def attention_bytes(shape: TrainingShape, micro_batch: int) -> tuple[float, float]:
    """(bytes per token, bytes per layer beside them) that one layer's attention keeps, for the
    shape's kernel; see `kept_activation_bytes`. Packing joins a micro-batch's rows into one."""
    arch = shape.architecture
    h, a = arch.hidden_size, arch.num_attention_heads
    rows, length = (1, shape.sequence_length * micro_batch) if shape.packing \
        else (micro_batch, shape.sequence_length)
    if shape.attention == "flash_attention_2":
        return HALF * (2 * h + 2 * arch.kv_size) + FP32 * a, 0.0
    if shape.attention == "eager":  # the mask is added to the scores, which keeps nothing
        # no log-sum-exp; the output is kept only by a trained output projection
        per_token = 8 * h if shape.adapter == "none" else 6 * h
        return per_token, (FP32 + HALF) * a * rows * length * length
    return 8 * h + 4 * a, HALF * rows * length * length


def step_buffer_bytes(shape: TrainingShape, micro_batch: int, *, fp32_weights: bool = True) -> float:
    """Memory a step holds beside the kept activations: the fused head's tile of logits and,
    for weights trained in fp32, autocast's 16-bit copies of them (kept from the forward pass
    to the backward; with gradient checkpointing, one layer's at a time, while it is
    recomputed) and the head's 16-bit copy of a tile's weights. An ordinary head (ORPO, a
    reward model's score) has no tile: autocast copies its whole weight, and ORPO's logits are
    counted with the method (`methods.py`)."""
    arch = shape.architecture
    tokens = shape.sequence_length * micro_batch
    vocab_tile = min(arch.vocab_size, HEAD_VOCAB_TILE)
    if shape.method.fused_head:
        head = HALF * min(tokens, HEAD_TOKEN_TILE) * vocab_tile
        head_weights = HALF * vocab_tile * arch.hidden_size
    else:
        head = 0
        head_weights = HALF * (1 if shape.method.name == "reward" else arch.vocab_size) * arch.hidden_size
    if not fp32_weights:
        return head
    share = 1 / arch.num_layers if shape.gradient_checkpointing else 1
    if shape.adapter == "none":
        return HALF * arch.linear_parameters * share + head + head_weights
    return HALF * shape.trainable * share + head


def step_activation_bytes(shape: TrainingShape, micro_batch: int, strategy: str = "ddp", *,
                          device: str = "cuda") -> float:
    """What `estimate` counts as activations: the kept tensors and the step's buffers. Under
    DeepSpeed (every ZeRO strategy) the engine runs the whole module, adapters included, in 16
    bits and keeps the fp32 masters in its optimizer; the Trainer's own mixed precision (`ddp`)
    keeps fp32 trained weights and computes under autocast. `fsdp` is estimated as ZeRO-3, and
    its mixed precision also computes with 16-bit copies of the shards.

    A preference method (dpo, orpo, reward) runs chosen and rejected as one batch of 2 x
    micro-batch rows. KTO's KL term and every reference forward run under `torch.no_grad` and
    keep nothing; GRPO's rows are prompt and completion (`shape.sequence_length`)."""
    fp32_weights = not strategy.startswith("zero")
    rows = micro_batch * shape.method.rows_per_example
    return (kept_activation_bytes(shape, rows, device=device, fp32_weights=fp32_weights)
            + step_buffer_bytes(shape, rows, fp32_weights=fp32_weights))
