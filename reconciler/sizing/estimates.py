"""What a FineTune will cost before it is scheduled: memory per GPU, strategy, GPU-hours.

The planner's arithmetic (`planner.py`) applied to one FineTune spec: its architecture, its
declared GPUs, and how much it trains. The amount of training is `maxSteps` x global batch, or
`epochs` x the training rows of its datasets when they are known (recorded by the Dataset's
run, or counted in a local source file); tokens are bounded by `maxSeqLength` per sequence
(and GRPO's completions by grpo.maxCompletionLength), so FLOPs and GPU-hours are upper bounds.
Pure: the rows and architectures are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from reconciler.config import GpuPrice, PlannerSettings, PricingSettings
from reconciler.sizing.capacity import base_model_of, reward_model_architectures, training_shape
from reconciler.sizing.memory import PAIRED_METHODS, Architecture, TrainingShape, device_memory
from reconciler.sizing.strategy import Estimate, choose_strategy, estimate, largest_micro_batch
from reconciler.sizing.throughput import assumed_mfu, flops_per_parameter_token, peak_flops
from reconciler.specs.base import ResourceId
from reconciler.specs.finetune import DatasetInput, FineTuneResource
from reconciler.specs.specset import SpecSet

LARGEST_RECOMMENDED_MICRO_BATCH = 64


@dataclass(frozen=True)
class RowCount:
    """Training rows of one Dataset, and where the figure comes from (shown to the user)."""

    rows: int
    origin: str  # "recorded by run 3f2a..." / "counted in data/x.jsonl x split.train 0.8"


@dataclass(frozen=True)
class Workload:
    """How much a FineTune trains. `sequences` and `tokens` are None when unknown, with `basis`
    saying why and what would make them known."""

    basis: str
    global_batch: int
    steps: int | None = None
    sequences: int | None = None  # a preference pair is two; a GRPO prompt, num_generations completions
    tokens: int | None = None  # at most: sequences x maxSeqLength (GRPO: + maxCompletionLength)


@dataclass(frozen=True)
class FineTuneEstimate:
    name: str
    gpu_product: str | None
    gpus: int  # in all; 0 trains on CPU
    declared_strategy: str
    architecture: Architecture | None
    workload: Workload
    device_bytes: float | None = None
    memory: Estimate | None = None  # at the strategy and micro-batch it would run with
    fits: bool | None = None  # None when the GPU's memory is unknown, or on CPU
    largest_micro_batch: int | None = None  # the largest power of two that fits that strategy
    parameters: int | None = None
    trainable: int | None = None
    flops: float | None = None
    peak_flops: float | None = None  # per GPU
    mfu: float | None = None
    notes: tuple[str, ...] = ()
    price: GpuPrice | None = None  # a GPU-hour of gpu_product, from tuneops.yaml's pricing
    method: str = "sft"
    reference_model: bool = False  # the method scores against a frozen reference (free with an adapter)
    unknown_reward_models: tuple[str, ...] = ()  # reward models whose architecture is unknown: not counted

    @property
    def dollars(self) -> tuple[float, float | None] | None:
        """(on demand, spot or None) for its GPU-hours; None when those or the price are unknown."""
        hours = self.gpu_hours
        if hours is None or self.price is None:
            return None
        spot = self.price.spot
        return hours * self.price.on_demand, (hours * spot if spot is not None else None)

    @property
    def gpu_hours(self) -> float | None:
        if self.flops is None or not self.peak_flops or not self.mfu or self.gpus == 0:
            return None
        return self.flops / (self.peak_flops * self.mfu) / 3600

    @property
    def wall_hours(self) -> float | None:
        """On all its GPUs at once, assuming they scale perfectly."""
        hours = self.gpu_hours
        return hours / self.gpus if hours is not None and self.gpus else None


def _capped(dataset: DatasetInput, count: RowCount | None) -> RowCount | None:
    """A dataset's training rows under its maxSamples (the cap alone bounds an unknown count)."""
    cap = dataset.max_samples
    if cap is None or (count is not None and count.rows <= cap):
        return count
    if count is None:
        return RowCount(cap, "maxSamples (rows not known yet)")
    return RowCount(cap, f"maxSamples of {count.rows:,} {count.origin}")


def workload(fine_tune: FineTuneResource, rows: Mapping[str, RowCount]) -> Workload:
    s = fine_tune.spec
    t = s.training
    global_batch = t.micro_batch_size * t.gradient_accumulation * s.resources.processes
    # trl's batch counts pairs for the preference methods, two sequences each (chosen and
    # rejected), and completions for grpo, num_generations of them for each prompt row
    per_example = 2 if s.method in PAIRED_METHODS else 1
    completions = s.grpo.num_generations if s.method == "grpo" else 1
    length = t.max_seq_length + (s.grpo.max_completion_length if s.method == "grpo" else 0)
    if t.max_steps is not None:
        basis = f"maxSteps {t.max_steps} x global batch {global_batch}"
        examples = t.max_steps * global_batch
        steps = t.max_steps
    else:
        counted = {d.name: _capped(d, rows.get(d.name)) for d in s.datasets}
        missing = [name for name, count in counted.items() if count is None]
        if missing:
            return Workload(
                f"training rows of Dataset {', '.join(missing)} unknown: build it (a plan then reads "
                "the recorded count) or set training.maxSteps", global_batch)
        known = {name: count for name, count in counted.items() if count is not None}
        per_epoch = sum(count.rows for count in known.values())  # mixing keeps the total
        origins = "; ".join(f"{name}: {count.rows:,} rows, {count.origin}" for name, count in known.items())
        each = f" x {completions} completions" if completions > 1 else ""
        basis = f"{t.epochs:g} epochs of {per_epoch:,} training rows{each} ({origins})"
        examples = math.ceil(t.epochs * per_epoch * completions)
        steps = math.ceil(t.epochs * math.ceil(per_epoch * completions / global_batch))
    sequences = examples * per_example
    return Workload(basis, global_batch, steps, sequences, sequences * length)


def estimate_fine_tune(specs: SpecSet, fine_tune: FineTuneResource,
                       architectures: Mapping[ResourceId, Architecture],
                       rows: Mapping[str, RowCount],
                       settings: PlannerSettings | None = None) -> FineTuneEstimate:
    settings = settings or PlannerSettings()
    s = fine_tune.spec
    product = s.resources.gpu_product
    gpus = s.resources.nodes * s.resources.gpus_per_node
    base = base_model_of(specs, fine_tune)
    architecture = architectures.get(base) if base else None
    work = workload(fine_tune, rows)
    rewards, unknown_rewards = reward_model_architectures(specs, fine_tune, architectures)
    common = {"name": fine_tune.metadata.name, "gpu_product": product, "gpus": gpus,
              "declared_strategy": s.distributed.strategy, "architecture": architecture,
              "workload": work, "method": s.method, "reference_model": s.has_reference_model,
              "unknown_reward_models": unknown_rewards}
    if architecture is None:
        return FineTuneEstimate(**common, notes=(
            f"architecture of {base} unknown: add an `architecture:` block to the BaseModel, or "
            "have its config.json on disk (a file:// source, or a pinned hf:// revision in the "
            "Hugging Face cache), or reachable on the Hub (HF_ENDPOINT; HF_TOKEN for gated models)",))
    shape = training_shape(fine_tune, architecture, rewards)
    try:
        trainable = shape.trainable
    except ValueError as error:
        field = "modulesToSave" if "to save" in str(error) else "targetModules"
        return FineTuneEstimate(**common, notes=(f"adapter.{field}: {error}",))
    notes: list[str] = []
    device_bytes = device_memory(product) if gpus else None
    memory, fits, largest = _memory(shape, s.distributed.planned_strategy, gpus, device_bytes)
    if gpus and device_bytes is None:
        notes.append("memory of this GPU unknown: set resources.gpuProduct to a label with the "
                     "size in it (NVIDIA-A100-SXM4-80GB) to check the fit"
                     + ("; vLLM's share of it is not counted" if shape.method.use_vllm else ""))
    for name in unknown_rewards:
        notes.append(f"architecture of reward model FineTune/{name} unknown: its weights are not counted "
                     "in the memory per GPU; add an `architecture:` block to its BaseModel")
    if unknown_rewards and fits:
        fits = None  # it fits without them; with them, who knows
    recompute = s.training.gradient_checkpointing
    per_token = flops_per_parameter_token(s.method, recompute, reference=s.has_reference_model,
                                          use_vllm=shape.method.use_vllm)
    flops = work.tokens * per_token * shape.parameters if work.tokens is not None else None
    peak = peak_flops(product, settings.peak_tflops) if gpus else None
    if gpus and peak is None:
        notes.append(f"peak FLOPS of {product or 'an unnamed GPU'} unknown: set resources.gpuProduct, "
                     "or planner.peakTflops in tuneops.yaml")
    if not gpus:
        notes.append("trains on CPU (gpusPerNode: 0): GPU-hours do not apply; memory is per process")
    return FineTuneEstimate(
        **common, device_bytes=device_bytes, memory=memory, fits=fits, largest_micro_batch=largest,
        parameters=shape.parameters, trainable=trainable, flops=flops, peak_flops=peak,
        mfu=assumed_mfu(product, settings.mfu) if gpus else None, notes=tuple(notes))


def _memory(shape: TrainingShape, declared: str, gpus: int,
            device_bytes: float | None) -> tuple[Estimate, bool | None, int | None]:
    """(estimate at the strategy and micro-batch it would run with, fits, largest micro-batch)."""
    if not gpus:
        return estimate(shape, "ddp"), None, None  # the local CPU backend runs plain data parallel
    strategy = declared  # the planner's name: fsdp as zero3, offloads as strategies of their own
    if strategy == "auto":
        if device_bytes is None:
            return estimate(shape, "ddp"), None, None  # what auto starts from
        chosen = choose_strategy(shape, device_bytes)
        if chosen is None:
            return estimate(shape, "zero3-offload", 1), False, None
        strategy = chosen.strategy
        found = chosen
    else:
        found = estimate(shape, strategy)
    if device_bytes is None:
        return found, None, None
    largest = largest_micro_batch(shape, strategy, device_bytes, limit=LARGEST_RECOMMENDED_MICRO_BATCH)
    return found, found.fits(device_bytes), largest.micro_batch if largest else None


def priced(found: FineTuneEstimate, pricing: PricingSettings) -> FineTuneEstimate:
    """The estimate with what a GPU-hour of its GPU product costs (none on CPU)."""
    return replace(found, price=pricing.price_of(found.gpu_product) if found.gpus else None)


def estimates_for(specs: SpecSet, architectures: Mapping[ResourceId, Architecture],
                  rows: Mapping[str, RowCount], settings: PlannerSettings | None = None,
                  names: set[str] | None = None) -> dict[str, FineTuneEstimate]:
    """Every FineTune's estimate (or those in `names`), by name."""
    found = {}
    for loaded in specs.of_kind("FineTune"):
        resource = loaded.resource
        assert isinstance(resource, FineTuneResource)
        if names is None or resource.metadata.name in names:
            found[resource.metadata.name] = estimate_fine_tune(specs, resource, architectures, rows, settings)
    return found
