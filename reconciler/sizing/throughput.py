"""Training compute, before anything is scheduled: FLOPs per parameter per token, and what a
GPU product delivers (dense bf16 peak, assumed MFU). Pure arithmetic.

Compute follows Kaplan et al. (2020): 6 FLOPs per parameter per token to train (2 forward,
4 backward), 8 with full recomputation, and 2 more for each further forward pass a method runs
over the token (a frozen reference model, KTO's KL term, GRPO's generation); GPU-hours divide
that by the GPU's dense bf16 peak times an assumed model FLOPs utilisation (MFU), both per GPU
product and overridable.
"""

from __future__ import annotations

from reconciler.specs.finetune import REFERENCE_METHODS

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
FORWARD_FLOPS = 2  # per parameter per token: one more forward pass (reference, KL term, generation)
REFERENCE_FLOPS = FORWARD_FLOPS  # dpo, kto, grpo (beta > 0): the frozen reference model's forward


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


def flops_per_parameter_token(method: str, recompute: bool, *, reference: bool | None = None,
                              use_vllm: bool = False) -> int:
    """Training FLOPs per parameter per token processed. LoRA still runs the whole network
    forward and backward (the frozen weights' own gradients are skipped, the activations' are
    not), so it is counted as 6N: an upper bound by at most a third. Each forward pass a method
    adds over the token costs 2N, as trl runs them:

    - the frozen reference model (`reference`, by default for dpo, kto and grpo), one forward;
    - kto: the KL term scores mismatched prompt-completion pairs with the policy and with the
      reference (both without gradients): two forwards more;
    - grpo: generating the completion runs the policy forward once over every token, the prompt
      in one prefill and each generated token in a decoding step (prompts are counted
      num_generations times, as trl generates each completion on its own row); with vLLM, trl
      also recomputes the old policy's log-probabilities for importance sampling, one forward.
    """
    if reference is None:
        reference = method in REFERENCE_METHODS
    flops = TRAIN_FLOPS + (RECOMPUTE_FLOPS if recompute else 0)
    flops += REFERENCE_FLOPS if reference else 0
    if method == "kto":  # the KL term's policy forward, and the reference's where there is one
        flops += FORWARD_FLOPS + (FORWARD_FLOPS if reference else 0)
    if method == "grpo":
        flops += FORWARD_FLOPS + (FORWARD_FLOPS if use_vllm else 0)
    return flops
