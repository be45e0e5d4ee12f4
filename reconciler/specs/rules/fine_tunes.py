"""Rules on FineTunes: the method reads the data it is given, the hardware can run the adapter,
early stopping has something to evaluate, settings apply to the method, registered models are
written by one FineTune each, an adapter trains the embeddings of tokens its base model adds.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.specs.loader import LoadedSpec
from reconciler.specs.problems import Problem
from reconciler.specs.rules.registry import ERROR, WARNING, RuleContext, problem, rule

# What each training method reads, in the user's words.
METHOD_DATA = {
    "sft": ("instruction", "chat"),
    "dpo": ("preference",),
    "pretrain": ("text",),
    "grpo": ("prompt",),
    "kto": ("binary-feedback",),
    "orpo": ("preference",),
    "reward": ("preference",),
}
METHOD_FOR_DATA = {"instruction": "sft", "chat": "sft", "preference": "dpo", "text": "pretrain",
                   "prompt": "grpo", "binary-feedback": "kto"}
# Methods whose loss weighs a KL or odds-ratio term by training.beta (trl's `beta`).
BETA_METHODS = ("dpo", "kto", "orpo")
# What the input embedding and the output head are called in common architectures (Llama-like,
# GPT-2, GPT-NeoX, Falcon, Llama's original code).
EMBEDDING_MODULES = ("embed_tokens", "wte", "embed_in", "word_embeddings", "tok_embeddings")
HEAD_MODULES = ("lm_head", "embed_out", "output")


@rule
def method_matches_data(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        method = fine_tune.spec.method
        for index, data in enumerate(fine_tune.spec.datasets):
            dataset = ctx.dataset(data.name)
            if dataset is None:
                continue
            schema_type = dataset.spec.data_schema.type
            if schema_type not in METHOD_DATA[method]:
                wanted = " or ".join(METHOD_DATA[method])
                yield problem(spec, ERROR, "method-data-mismatch",
                              f"method {method} needs {wanted} data, but Dataset '{data.name}' has "
                              f"schema type {schema_type}", ("spec", "datasets", index, "name"),
                              hint=f"use method: {METHOD_FOR_DATA[schema_type]}, or another dataset")


@rule
def hardware_fits_adapter(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        s = fine_tune.spec
        quantized = s.adapter.quantization is not None
        if quantized and s.resources.gpus_per_node == 0:
            qlora = s.adapter.type == "qlora"
            yield problem(spec, ERROR, "needs-gpu",
                          f"{'qlora' if qlora else 'a quantized base'} needs a GPU: bitsandbytes "
                          "4- and 8-bit training runs on CUDA only",
                          ("spec", "adapter", "type" if qlora else "quantization"),
                          hint="set resources.gpusPerNode to 1 or more")
        if quantized and s.distributed.strategy == "fsdp":
            yield problem(spec, ERROR, "unsupported-combination",
                          "a quantized base is refused with fsdp: sharding 4-bit weights needs "
                          "FSDP-QLoRA settings that tuneops does not generate",
                          ("spec", "distributed", "strategy"), hint="use ddp or zero2")
        elif quantized and s.distributed.strategy in ("zero3", "zero3-offload"):
            yield problem(spec, WARNING, "fragile-combination",
                          f"{s.distributed.strategy} with a quantized base is fragile (ZeRO-3 shards "
                          "4-bit weights poorly)", ("spec", "distributed", "strategy"),
                          hint="prefer zero2 or ddp for qlora")
        if s.training.precision == "fp16" and s.resources.gpus_per_node == 0:
            yield problem(spec, ERROR, "needs-gpu", "fp16 mixed precision needs a GPU",
                          ("spec", "training", "precision"), hint="use bf16, fp32 or auto on CPU")
        if s.training.attention == "flash_attention_2" and s.resources.gpus_per_node == 0:
            # a warning, not an error: the job refuses it at start on a machine without CUDA
            yield problem(spec, WARNING, "needs-gpu", "flash_attention_2 needs a CUDA GPU; this spec "
                          "asks for none, so the job will refuse to start",
                          ("spec", "training", "attention"),
                          hint="set resources.gpusPerNode to 1 or more, or use attention: auto")
        if s.training.kernels == "liger" and s.resources.gpus_per_node == 0:
            yield problem(spec, WARNING, "needs-gpu", "the Liger kernels need a CUDA GPU; this spec "
                          "asks for none, so the job will refuse to start",
                          ("spec", "training", "kernels"),
                          hint="set resources.gpusPerNode to 1 or more, or use kernels: none")
        offload = s.distributed.offload
        if offload is not None and s.resources.gpus_per_node == 0:
            yield problem(spec, WARNING, "offload-without-gpus", "offload moves GPU memory to the CPU; "
                          "this spec trains on CPU (gpusPerNode: 0), where it only costs time",
                          ("spec", "distributed", "offload"),
                          hint="set resources.gpusPerNode, or remove offload")


@rule
def early_stopping_has_evaluation(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        s = fine_tune.spec
        validation_rows = any(
            (d := ctx.dataset(data.name)) is not None and d.spec.split.validation > 0
            for data in s.datasets)
        known_datasets = all(ctx.dataset(data.name) is not None for data in s.datasets)
        cadence = "everySteps" if s.evaluation.every_steps else "perEpoch" if s.evaluation.per_epoch else None
        if s.evaluation.early_stopping is None:
            if cadence and known_datasets and not validation_rows:
                yield problem(spec, WARNING, "no-validation-data",
                              f"evaluation.{cadence} is set but no dataset has a validation split",
                              ("spec", "evaluation", cadence),
                              hint="give a dataset split.validation > 0")
            continue
        path = ("spec", "evaluation", "earlyStopping")
        every = s.evaluation.every_steps
        if cadence is None:
            yield problem(spec, ERROR, "early-stopping-needs-evaluation",
                          "early stopping needs evaluation.everySteps or evaluation.perEpoch", path, key=True)
            continue
        if known_datasets and not validation_rows:
            yield problem(spec, ERROR, "early-stopping-needs-evaluation",
                          "early stopping needs validation data, but no dataset has a validation "
                          "split", path, key=True, hint="give a dataset split.validation > 0")
        saving = s.checkpoint.every_steps
        if every is None:  # per epoch: the best checkpoint is one of those saved at each epoch's end
            if saving is not None:
                yield problem(spec, ERROR, "early-stopping-needs-evaluation",
                              "with early stopping and evaluation.perEpoch, checkpoints are saved at the "
                              "end of each epoch too", ("spec", "checkpoint", "everySteps"), value=saving,
                              hint="drop checkpoint.everySteps")
            continue
        if saving is None or saving % every:
            yield problem(spec, ERROR, "early-stopping-needs-evaluation",
                          f"with early stopping, checkpoint.everySteps must be a multiple of "
                          f"evaluation.everySteps ({every}) so the best checkpoint can be kept",
                          ("spec", "checkpoint", "everySteps") if saving else path, key=saving is None,
                          value=saving)


@rule
def method_specific_settings(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        s = fine_tune.spec
        if s.method not in BETA_METHODS and "beta" in s.training.model_fields_set:
            written = spec.document.data.get("spec", {}).get("training", {})
            key = "beta" if "beta" in written else "dpoBeta"
            yield problem(spec, WARNING, "ignored-setting", f"{key} only applies to methods "
                          f"{', '.join(BETA_METHODS)}"
                          + (" (grpo's is grpo.beta)" if s.method == "grpo" else ""),
                          ("spec", "training", key), key=True)
        if s.adapter.type == "none":
            ignored = sorted(s.adapter.model_fields_set & {"r", "alpha", "dropout", "target_modules"})
            if ignored:
                yield problem(spec, WARNING, "ignored-setting",
                              "adapter settings have no effect with full fine-tuning (type: none)",
                              ("spec", "adapter", "type"))
        if s.method in ("dpo", "kto", "orpo", "reward") and s.training.packing:
            yield problem(spec, WARNING, "ignored-setting",
                          f"packing does not apply to {s.method} (pairs and rows are scored whole)",
                          ("spec", "training", "packing"), key=True)


@rule
def registered_models_unique(ctx: RuleContext) -> Iterator[Problem]:
    owners: dict[str, LoadedSpec] = {}
    for spec, fine_tune in ctx.fine_tunes():
        name = fine_tune.registered_model
        if name in owners:
            yield problem(spec, ERROR, "duplicate-registered-model",
                          f"registered model '{name}' is already written by "
                          f"{owners[name].id} ({owners[name].position()})",
                          ("spec", "register", "model") if fine_tune.spec.registration.model
                          else ("metadata", "name"),
                          hint="give each FineTune its own register.model")
        else:
            owners[name] = spec


@rule
def added_tokens_are_trained(ctx: RuleContext) -> Iterator[Problem]:
    """A token new to the vocabulary starts with an untrained embedding row and output-head row;
    an adapter trains neither unless they are in `modulesToSave`, so the model could not learn
    to read or write it. Whether pad/eos/bos are new cannot be known offline: a warning."""
    for spec, fine_tune in ctx.fine_tunes():
        adapter = fine_tune.spec.adapter
        base = ctx.base_model_of(fine_tune)
        tokens = base.spec.tokens if base is not None else None
        if adapter.type == "none" or base is None or tokens is None:
            continue
        saved = {name.rpartition(".")[2] for name in adapter.modules_to_save}
        missing = [kind for kind, names in (("embedding", EMBEDDING_MODULES), ("output head", HEAD_MODULES))
                   if saved.isdisjoint(names)]
        if not missing:
            continue
        fix = "add them to adapter.modulesToSave: [embed_tokens, lm_head]"
        path = ("spec", "adapter", "modulesToSave") if adapter.modules_to_save else ("spec", "adapter")
        what = " and ".join(missing)
        if tokens.add:
            yield problem(spec, ERROR, "untrained-new-tokens",
                          f"BaseModel '{base.metadata.name}' adds tokens ({', '.join(tokens.add)}), but "
                          f"this {adapter.type} adapter does not train the {what} that hold them",
                          path, key=not adapter.modules_to_save, hint=fix)
        elif tokens.special():
            roles = ", ".join(role.removesuffix("_token") for role in tokens.special())
            yield problem(spec, WARNING, "untrained-new-tokens",
                          f"BaseModel '{base.metadata.name}' sets {roles} tokens; if any is new to its "
                          f"vocabulary, this {adapter.type} adapter does not train the {what} that "
                          "hold it", path, key=not adapter.modules_to_save,
                          hint=f"{fix}, unless the tokens are already in the vocabulary")
