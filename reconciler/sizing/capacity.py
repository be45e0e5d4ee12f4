"""Does each FineTune fit its declared GPUs? The planner's estimates as validation problems.

Checked only where both the architecture and the GPU's memory are known, so an unknown never
blocks a pull request; a FineTune on CPU (gpusPerNode: 0) is not checked. A GRPO FineTune whose
reward model's architecture is unknown is checked without it: what does not fit without it does
not fit with it either.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

from reconciler.sizing.memory import Architecture, MethodShape, TrainingShape, device_memory
from reconciler.sizing.strategy import (
    AUTO_ORDER,
    SAFETY_MARGIN,
    Estimate,
    choose_strategy,
    estimate,
    largest_micro_batch,
)
from reconciler.specs.base import ResourceId
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.problems import Problem, Severity
from reconciler.specs.rules.registry import problem
from reconciler.specs.specset import SpecSet

GB = 1e9


def base_model_of(specs: SpecSet, fine_tune: FineTuneResource) -> ResourceId | None:
    """The BaseModel a FineTune starts from, following fromFineTune (validation refuses cycles)."""
    seen = set()
    while fine_tune.spec.base_model is None and fine_tune.spec.from_fine_tune not in seen:
        seen.add(fine_tune.spec.from_fine_tune)
        parent = specs.resource(ResourceId("FineTune", fine_tune.spec.from_fine_tune or ""),
                                FineTuneResource)
        if parent is None:
            return None
        fine_tune = parent
    return ResourceId("BaseModel", fine_tune.spec.base_model) if fine_tune.spec.base_model else None


def reward_model_architectures(specs: SpecSet, fine_tune: FineTuneResource,
                               architectures: Mapping[ResourceId, Architecture],
                               ) -> tuple[tuple[Architecture, ...], tuple[str, ...]]:
    """(the architectures of the FineTune's reward models, each once; the names of those whose
    architecture is unknown). A reward model has its FineTune's base model's architecture."""
    known, unknown = [], []
    for name in fine_tune.spec.reward_models:
        scorer = specs.resource(ResourceId("FineTune", name), FineTuneResource)
        base = base_model_of(specs, scorer) if scorer is not None else None
        architecture = architectures.get(base) if base else None
        if architecture is None:
            unknown.append(name)
        else:
            known.append(architecture)
    return tuple(known), tuple(unknown)


def training_shape(fine_tune: FineTuneResource, architecture: Architecture,
                   reward_models: tuple[Architecture, ...] = ()) -> TrainingShape:
    """The planner's shape of a FineTune. GRPO's sequences are a prompt of at most maxSeqLength
    tokens and a completion of at most grpo.maxCompletionLength (trl does not truncate prompts
    to make room for the completion), so they are sized at the sum: an upper bound."""
    s = fine_tune.spec
    modules = s.adapter.target_modules
    gpus = s.resources.nodes * s.resources.gpus_per_node
    grpo = s.method == "grpo"
    method = MethodShape(
        name=s.method, reference_model=s.has_reference_model, reward_models=reward_models,
        completion_length=s.grpo.max_completion_length if grpo else 0,
        # trl generates steps_per_generation micro-batches at once, gradient_accumulation_steps by default
        generation_micro_batches=s.training.gradient_accumulation if grpo else 1,
        use_vllm=grpo and s.grpo.use_vllm)
    return TrainingShape(
        architecture=architecture, adapter=s.adapter.type, rank=s.adapter.r,
        target_modules=modules if isinstance(modules, str) else tuple(modules),
        sequence_length=s.training.max_seq_length + method.completion_length,
        micro_batch=s.training.micro_batch_size, devices=gpus,
        gradient_checkpointing=s.training.gradient_checkpointing, lora_dropout=s.adapter.dropout,
        packing=s.training.packing, optimizer=s.training.optimizer,
        attention=planned_attention(s.training.attention), kernels=s.training.kernels,
        modules_to_save=tuple(s.adapter.modules_to_save), method=method,
        precision=planned_precision(s.training.precision, gpus),
        device_bytes=device_memory(s.resources.gpu_product) if gpus else None)


def planned_precision(choice: str, gpus: int) -> str:
    """`auto` is bf16 on GPUs (the planner assumes one that supports it) and fp32 on CPU."""
    if choice == "auto":
        return "bf16" if gpus else "fp32"
    return choice


def planned_attention(choice: str) -> str:
    """The attention kernel the planner sizes: `auto` picks flash-attention only where the job's
    image has it, which a plan cannot know, so it is sized as SDPA (the larger of the two)."""
    return "sdpa" if choice == "auto" else choice


def _describe(found: Estimate) -> str:
    return (f"about {found.peak / GB:.1f} GB per GPU with {found.strategy} at microBatchSize "
            f"{found.micro_batch} (model states {found.states.total / GB:.1f} GB, activations "
            f"{found.activations / GB:.1f} GB)")


def nearest_fit(shape: TrainingShape, device_bytes: float) -> str:
    for strategy in AUTO_ORDER:
        found = largest_micro_batch(shape, strategy, device_bytes)
        if found is not None:
            return f"nearest that fits: strategy {strategy} with microBatchSize {found.micro_batch}"
    if not shape.gradient_checkpointing:
        with_recompute = replace(shape, gradient_checkpointing=True)
        for strategy in AUTO_ORDER:
            found = largest_micro_batch(with_recompute, strategy, device_bytes)
            if found is not None:
                return (f"nearest that fits: gradientCheckpointing: true, strategy {strategy}, "
                        f"microBatchSize {found.micro_batch}")
    return "nothing fits these GPUs: use qlora, a shorter maxSeqLength, or GPUs with more memory"


def check(specs: SpecSet, architectures: dict[ResourceId, Architecture]) -> Iterator[Problem]:
    for loaded in specs.of_kind("FineTune"):
        fine_tune = loaded.resource
        assert isinstance(fine_tune, FineTuneResource)
        s = fine_tune.spec
        base = base_model_of(specs, fine_tune)
        architecture = architectures.get(base) if base else None
        device_bytes = device_memory(s.resources.gpu_product)
        if s.resources.gpus_per_node == 0 or architecture is None or device_bytes is None:
            continue
        shape = training_shape(fine_tune, architecture,
                               reward_model_architectures(specs, fine_tune, architectures)[0])
        try:
            shape.trainable  # noqa: B018 - target modules this architecture lacks: no estimate
        except ValueError:
            continue
        usable = f"{s.resources.gpu_product} has {device_bytes / GB:.0f} GB, " \
                 f"{device_bytes * (1 - SAFETY_MARGIN) / GB:.0f} GB usable"
        if s.distributed.strategy == "auto":
            if choose_strategy(shape, device_bytes) is None:
                smallest = estimate(shape, "zero3-offload", 1)
                yield problem(loaded, Severity.ERROR, "does-not-fit",
                              f"fits no strategy: {_describe(smallest)}; {usable}",
                              ("spec", "resources"), key=True, hint=nearest_fit(shape, device_bytes))
            continue
        found = estimate(shape, s.distributed.planned_strategy)
        if not found.fits(device_bytes):
            yield problem(loaded, Severity.ERROR, "does-not-fit",
                          f"needs {_describe(found)}; {usable}", ("spec", "distributed", "strategy"),
                          hint=nearest_fit(shape, device_bytes))
