"""LLaMA-Factory's training keys -> FineTune.method and FineTune.training: the stage (sft, pt,
dpo, or orpo by its pref_loss, kto, rm) with its β, length, batch, learning rate and schedule,
optimizer, packing, which tokens train, precision, attention and Liger kernels, gradient
checkpointing."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers import fine_tune as shared
from reconciler.importers.common import Context, as_int, as_number
from reconciler.importers.llamafactory.keys import ATTENTION, STAGE_NOTES, STAGES
from reconciler.importers.result import SpecDraft


def method(config: dict[str, Any], ctx: Context) -> shared.MethodChoice:
    """The method, and the comment written beside it: the stage, and for stage dpo its loss."""
    result = ctx.result
    stage = config.get("stage", "sft")
    note = STAGE_NOTES.get(stage, "") if isinstance(stage, str) else ""
    comment = ctx.says("stage", note) if "stage" in config else None
    if isinstance(stage, str) and stage in STAGES:
        if "stage" in config:
            result.map("stage", "FineTune.spec.method")
        method = STAGES[stage]
    else:
        why = (
            "PPO is not offered: tuneops trains with rewards by method grpo (rules, Python functions "
            "or a reward model FineTune in rewards:), not with PPO"
            if stage == "ppo"
            else f"stage {stage} is not offered (sft, pt, dpo, kto, rm)"
        )
        result.report("stage", "unsupported", f"{why}; this FineTune was written as sft and needs review")
        method, comment = "sft", None
    loss = config.get("pref_loss", "sigmoid")
    if method == "dpo":
        if loss == "orpo":
            method, comment = "orpo", ctx.says("stage, pref_loss", "dpo with the ORPO loss: method orpo")
        if loss in ("sigmoid", "orpo"):
            if "pref_loss" in config:
                result.map("pref_loss", "FineTune.spec.method")
        else:
            result.report(
                "pref_loss",
                "unsupported",
                f"{loss} loss is not offered (sigmoid is method dpo, orpo method orpo); this "
                "FineTune was written as dpo and needs review",
            )
    elif "pref_loss" in config:
        result.report("pref_loss", "ignored", f"a stage dpo setting; stage is {stage}")
    return shared.MethodChoice(method, comment)


def method_settings(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, method: str) -> None:
    """β (pref_beta) of dpo, orpo and kto, and KTO's weights."""
    result = ctx.result
    stage = config.get("stage", "sft")
    beta = as_number(config.get("pref_beta"))
    if method in ("dpo", "orpo", "kto") and beta is not None and beta > 0:
        how = "ORPO's λ, the weight of its odds-ratio loss: trl's beta" if method == "orpo" else ""
        fine_tune.set("training.beta", float(beta), ctx.says("pref_beta", how))
        result.map("pref_beta", "FineTune.spec.training.beta")
    elif method in ("dpo", "orpo", "kto") and "pref_beta" in config:
        result.report("pref_beta", "unsupported", f"not a β above 0: {config['pref_beta']!r}")
    elif "pref_beta" in config:
        result.report("pref_beta", "ignored", f"a preference setting; stage is {stage}")
    for key in ("kto_chosen_weight", "kto_rejected_weight"):
        if key not in config:
            continue
        if method != "kto":
            result.report(key, "ignored", f"a KTO setting; stage is {stage}")
        elif as_number(config[key]) == 1:
            result.report(key, "ignored", "1.0, LLaMA-Factory's default, which tuneops trains with")
        else:
            result.report(
                key,
                "unsupported",
                "weighing desirable and undesirable rows apart is not offered (tuneops weighs both 1.0)",
            )


def training(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, method: str) -> None:
    result = ctx.result
    steps = as_int(config.get("max_steps"))
    if steps is not None and steps > 0:
        fine_tune.set("training.maxSteps", steps, ctx.says("max_steps"))
        result.map("max_steps", "FineTune.spec.training.maxSteps")
        if "num_train_epochs" in config:
            result.report("num_train_epochs", "ignored", "max_steps is set, which ends training first")
    else:
        if "max_steps" in config:
            result.map("max_steps", "FineTune.spec.training.maxSteps")
        epochs = as_number(config.get("num_train_epochs"))
        if epochs is not None:
            fine_tune.set("training.epochs", epochs, ctx.says("num_train_epochs"))
            result.map("num_train_epochs", "FineTune.spec.training.epochs")
    shared.set_numbers(
        ctx,
        fine_tune,
        config,
        (
            ("learning_rate", "learningRate", as_number),
            ("per_device_train_batch_size", "microBatchSize", as_int),
            ("gradient_accumulation_steps", "gradientAccumulation", as_int),
            ("cutoff_len", "maxSeqLength", as_int),
            ("weight_decay", "weightDecay", as_number),
            ("max_grad_norm", "maxGradNorm", as_number),
            ("seed", "seed", as_int),
            ("dataloader_num_workers", "dataloaderWorkers", as_int),
        ),
        defaults={"learning_rate": 5e-5, "per_device_train_batch_size": 8},
    )
    if (
        config.get("packing")
        or config.get("neat_packing")
        or (method == "pretrain" and "packing" not in config)
    ):
        source = "neat_packing" if config.get("neat_packing") else "packing"
        how = (
            "attention stays within each example"
            if source == "neat_packing"
            else "tuneops keeps attention within each example, as neat_packing does"
        )
        if method == "pretrain" and "packing" not in config and not config.get("neat_packing"):
            fine_tune.set("training.packing", True, "LLaMA-Factory packs for stage pt (packing not set)")
        else:
            fine_tune.set("training.packing", True, ctx.says(source, how))
    for key in ("packing", "neat_packing"):
        if key in config:
            result.map(key, "FineTune.spec.training.packing")
    if "train_on_prompt" in config:
        fine_tune.set("training.trainOnInputs", bool(config["train_on_prompt"]), ctx.says("train_on_prompt"))
        result.map("train_on_prompt", "FineTune.spec.training.trainOnInputs")
    if "mask_history" in config:
        if config["mask_history"]:
            fine_tune.set("training.trainOn", "lastAssistantTurn", ctx.says("mask_history"))
        result.map("mask_history", "FineTune.spec.training.trainOn")
    _schedule(config, ctx, fine_tune, steps)
    _precision(config, ctx, fine_tune)
    attention = config.get("flash_attn")
    if attention is not None:
        if isinstance(attention, str) and attention in ATTENTION:
            if attention != "auto":
                fine_tune.set("training.attention", ATTENTION[attention], ctx.says("flash_attn", attention))
            result.map("flash_attn", "FineTune.spec.training.attention")
        else:
            result.report(
                "flash_attn", "unsupported", f"{attention} is not offered (auto, sdpa, fa2, disabled)"
            )
    if "enable_liger_kernel" in config:
        if config["enable_liger_kernel"]:
            fine_tune.set("training.kernels", "liger", ctx.says("enable_liger_kernel"))
        result.map("enable_liger_kernel", "FineTune.spec.training.kernels")
    disabled = config.get("disable_gradient_checkpointing", False)
    if "disable_gradient_checkpointing" in config:
        result.map("disable_gradient_checkpointing", "FineTune.spec.training.gradientCheckpointing")
    if "gradient_checkpointing" in config:
        result.map("gradient_checkpointing", "FineTune.spec.training.gradientCheckpointing")
    fine_tune.set(
        "training.gradientCheckpointing",
        not disabled,
        ctx.says("disable_gradient_checkpointing")
        if "disable_gradient_checkpointing" in config
        else "LLaMA-Factory turns it on unless disable_gradient_checkpointing",
    )


def _schedule(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, steps: int | None) -> None:
    result = ctx.result
    scheduler = config.get("lr_scheduler_type")
    if scheduler is None:
        common.set_default(ctx, fine_tune, "training.scheduler", "linear", "lr_scheduler_type")
    else:
        shared.set_choice(
            ctx, fine_tune, "lr_scheduler_type", scheduler, "training.scheduler", shared.OFFERED_SCHEDULERS
        )
    optimizer = config.get("optim")
    if optimizer is not None:
        shared.set_choice(ctx, fine_tune, "optim", optimizer, "training.optimizer", shared.OFFERED_OPTIMIZERS)
    ratio = as_number(config.get("warmup_ratio"))
    warmup_steps = as_int(config.get("warmup_steps"))
    if warmup_steps:
        shared.warmup_from_steps(ctx, fine_tune, warmup_steps, steps)
        if "warmup_ratio" in config:
            result.report("warmup_ratio", "ignored", "warmup_steps overrides it (as in transformers)")
    elif ratio is not None:
        fine_tune.set("training.warmupRatio", float(ratio), ctx.says("warmup_ratio"))
        result.map("warmup_ratio", "FineTune.spec.training.warmupRatio")
        if "warmup_steps" in config:
            result.map("warmup_steps", "FineTune.spec.training.warmupRatio")
    else:
        if "warmup_steps" in config:
            result.map("warmup_steps", "FineTune.spec.training.warmupRatio")
        common.set_default(ctx, fine_tune, "training.warmupRatio", 0.0, "warmup_ratio")


def _precision(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    for key in ("bf16", "fp16"):
        if key in config:
            ctx.result.map(key, "FineTune.spec.training.precision")
    if config.get("bf16"):
        fine_tune.set("training.precision", "bf16", ctx.says("bf16"))
    elif config.get("fp16"):
        fine_tune.set("training.precision", "fp16", ctx.says("fp16"))
    else:
        fine_tune.set("training.precision", "fp32", "transformers' default (neither bf16 nor fp16 set)")
    if "tf32" in config:
        if config["tf32"] is not None:
            fine_tune.set("training.tf32", bool(config["tf32"]), ctx.says("tf32"))
        ctx.result.map("tf32", "FineTune.spec.training.tf32")
