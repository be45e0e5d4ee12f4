"""FineTuneEstimate -> what people and machines read: the full breakdown of `tuneops estimate`
(a table, or JSON), and the one line a plan shows per fine-tune it would train."""

from __future__ import annotations

from typing import Any

from reconciler.sizing.estimates import FineTuneEstimate
from reconciler.sizing.methods import VLLM_GPU_MEMORY_UTILIZATION
from reconciler.sizing.strategy import SAFETY_MARGIN, Estimate

GB = 1e9
ESTIMATE_FORMAT_VERSION = 1


def _scaled(value: float, units: tuple[tuple[str, float], ...], smallest: str) -> str:
    """In the largest unit that keeps a digit before the point."""
    for unit, size in units:
        if value >= size:
            return f"{value / size:,.2f}{unit}"
    return f"{value:,.0f}{smallest}"


def _gb(value: float | None) -> str:
    return "-" if value is None else _scaled(value, ((" GB", GB), (" MB", 1e6), (" kB", 1e3)), " B")


def _count(value: float | None) -> str:
    units = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3))
    return "unknown" if value is None else _scaled(value, units, "")


def _hours(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:,.2f}" if value >= 0.01 else f"{value:.1e}"


def strategy_label(found: FineTuneEstimate) -> str:
    if found.memory is None:
        return found.declared_strategy
    chosen = found.memory.strategy
    return f"{chosen} (auto)" if found.declared_strategy == "auto" and found.gpus else chosen


def plan_line(found: FineTuneEstimate) -> str:
    """One line for a plan: peak memory per GPU, strategy, GPU-hours; or why they are unknown."""
    parts = []
    if found.memory is not None:
        where = "per GPU" if found.gpus else "per process"
        fit = {True: "", False: ", does not fit", None: ""}[found.fits]
        parts.append(f"peak {_gb(found.memory.peak)} {where} ({strategy_label(found)}, "
                     f"microBatchSize {found.memory.micro_batch}{fit})")
    if found.gpus:
        hours = found.gpu_hours
        parts.append(f"at most {_hours(hours)} GPU-hours on {found.gpus} x {found.gpu_product}"
                     f"{_dollars_suffix(found)}" if hours is not None else "GPU-hours unknown")
    if not parts:
        return found.notes[0] if found.notes else "no estimate"
    return "; ".join(parts)


def dollars_text(on_demand: float, spot: float | None) -> str:
    """"$12.40 on demand ($4.96 spot)"."""
    return f"${on_demand:,.2f} on demand" + (f" (${spot:,.2f} spot)" if spot is not None else "")


def _dollars_suffix(found: FineTuneEstimate) -> str:
    dollars = found.dollars
    if dollars is None:
        return ", not priced (no pricing for this GPU in tuneops.yaml)" if found.gpu_hours else ""
    return f", {dollars_text(*dollars)}"


def estimate_text(found: FineTuneEstimate) -> str:
    """The full breakdown, as aligned rows."""
    rows: list[tuple[str, str]] = []
    gpus = f"{found.gpus} x {found.gpu_product or 'unnamed GPU'}" if found.gpus else "none (CPU)"
    rows.append(("GPUs", gpus))
    if found.device_bytes is not None:
        usable = found.device_bytes * (1 - SAFETY_MARGIN)
        rows.append(("memory per GPU", f"{_gb(found.device_bytes)} ({_gb(usable)} usable with a "
                                       f"{SAFETY_MARGIN:.0%} margin)"))
    if found.parameters is not None:
        rows += [("parameters", _count(found.parameters)), ("trainable", _count(found.trainable))]
    if found.memory is not None:
        states = found.memory.states
        rows += [
            ("strategy", strategy_label(found)),
            ("micro-batch", str(found.memory.micro_batch)),
            ("  16-bit weights (trained)", _gb(states.parameters)),
            *([("  frozen weights", _gb(states.frozen))] if found.trainable != found.parameters else []),
            ("  gradients", _gb(states.gradients)),
            ("  optimizer states", _gb(states.optimizer)),
            *([("  gathered layer (ZeRO-3)", _gb(states.gathered))] if states.gathered else []),
            *_method_rows(found, found.memory),
            ("peak per " + ("GPU" if found.gpus else "process"), _gb(found.memory.peak)
             + (" (while generating)" if _generation_peaks(found.memory) else "")),
        ]
        cpu = states.cpu + found.memory.method.cpu
        if cpu:
            rows.append(("CPU memory per GPU (offload)", _gb(cpu)))
        if found.fits is not None:
            rows.append(("fits", "yes" if found.fits else "no"))
        if found.largest_micro_batch is not None:
            rows.append(("largest micro-batch that fits", str(found.largest_micro_batch)))
    work = found.workload
    rows += [("training", work.basis), ("global batch", str(work.global_batch))]
    if work.steps is not None:
        rows.append(("optimizer steps", f"{work.steps:,}"))
    rows.append(("tokens (at most)", _count(work.tokens)))
    rows.append(("training FLOPs (at most)", f"{found.flops:.3g}" if found.flops else "unknown"))
    if found.gpus:
        rows.append(("GPU peak compute", f"{found.peak_flops / 1e12:g} TFLOPS (dense bf16)"
                     if found.peak_flops else "unknown"))
        if found.mfu is not None:
            rows.append(("assumed MFU", f"{found.mfu:g}"))
        rows.append(("GPU-hours (at most)", _hours(found.gpu_hours)))
        if found.dollars is not None:
            rows.append(("cost (at most)", dollars_text(*found.dollars)))
        elif found.gpu_hours is not None:
            rows.append(("cost", "not priced (add this GPU, or a default, to pricing in tuneops.yaml)"))
        if found.wall_hours is not None:
            rows.append((f"hours on {found.gpus} GPUs", _hours(found.wall_hours)))
    width = max(len(label) for label, _ in rows)
    lines = [f"FineTune/{found.name}", ""]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    if found.notes:
        lines += [""] + [f"note: {note}" for note in found.notes]
    return "\n".join(lines)


def _generation_peaks(memory: Estimate) -> bool:
    method = memory.method
    return method.generation > max(memory.activations + method.logits, memory.optimizer_step)


def _method_rows(found: FineTuneEstimate, memory: Estimate) -> list[tuple[str, str]]:
    """The rows from the activations on: what the method holds throughout (reference and reward
    models, vLLM's share), the step's phases, and GRPO's generation, marked as such."""
    method = memory.method
    rows = []
    if found.reference_model:
        adapted = found.trainable != found.parameters
        rows.append(("  reference model", "none: the adapter disabled" if adapted else _gb(method.reference)))
    if found.method == "grpo" and (method.reward_models or found.unknown_reward_models):
        unknown = found.unknown_reward_models
        rows.append(("  reward models", _gb(method.reward_models)
                     + (f" (not counted: {', '.join(unknown)}, architecture unknown)" if unknown else "")))
    if method.vllm:
        share = f"{VLLM_GPU_MEMORY_UTILIZATION:.0%} of the GPU"
        rows.append(("  vLLM (colocated)", f"{_gb(method.vllm)} ({share})"))
    rows.append(("  activations", _gb(memory.activations)))
    if method.logits:
        rows.append(("  logits (ORPO)", _gb(method.logits)))
    if memory.optimizer_step:
        rows.append(("  optimizer step buffer", _gb(memory.optimizer_step)))
    generating = [("  generation KV cache", method.kv_cache), ("  sampling logits", method.sampling_logits),
                  ("  gathered for generation (ZeRO-3)", method.gathered_for_generation)]
    rows += [(label, f"{_gb(value)} while generating") for label, value in generating if value]
    return rows


def estimate_json(found: FineTuneEstimate) -> dict[str, Any]:
    """Bytes, FLOPs and hours as plain numbers (null when unknown)."""
    memory = None
    if found.memory is not None:
        states = found.memory.states
        memory = {
            "strategy": found.memory.strategy, "micro_batch": found.memory.micro_batch,
            "parameters_bytes": states.parameters, "frozen_bytes": states.frozen,
            "gradients_bytes": states.gradients, "optimizer_bytes": states.optimizer,
            "gathered_bytes": states.gathered, "activations_bytes": found.memory.activations,
            "optimizer_step_bytes": found.memory.optimizer_step,
            "peak_bytes": found.memory.peak, "cpu_bytes": states.cpu + found.memory.method.cpu,
            "reference_model_bytes": found.memory.method.reference,
            "reward_models_bytes": found.memory.method.reward_models,
            "vllm_bytes": found.memory.method.vllm, "logits_bytes": found.memory.method.logits,
            "generation_kv_cache_bytes": found.memory.method.kv_cache,
            "sampling_logits_bytes": found.memory.method.sampling_logits,
            "gathered_for_generation_bytes": found.memory.method.gathered_for_generation,
        }
    work = found.workload
    return {
        "format_version": ESTIMATE_FORMAT_VERSION,
        "name": found.name,
        "gpu_product": found.gpu_product,
        "gpus": found.gpus,
        "device_bytes": found.device_bytes,
        "declared_strategy": found.declared_strategy,
        "method": found.method,
        "unknown_reward_models": list(found.unknown_reward_models),
        "parameters": found.parameters,
        "trainable_parameters": found.trainable,
        "memory": memory,
        "fits": found.fits,
        "largest_micro_batch": found.largest_micro_batch,
        "workload": {"basis": work.basis, "global_batch": work.global_batch, "steps": work.steps,
                     "sequences": work.sequences, "tokens_at_most": work.tokens},
        "flops_at_most": found.flops,
        "peak_flops_per_gpu": found.peak_flops,
        "mfu": found.mfu,
        "gpu_hours_at_most": found.gpu_hours,
        "wall_hours_at_most": found.wall_hours,
        "dollars_at_most": ({"on_demand": found.dollars[0], "spot": found.dollars[1]}
                            if found.dollars is not None else None),
        "notes": list(found.notes),
    }
