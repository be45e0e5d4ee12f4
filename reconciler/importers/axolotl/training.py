"""axolotl's training keys -> FineTune.training: length, batch, learning rate and schedule,
optimizer, packing, precision, attention and Liger kernels, gradient checkpointing."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers import fine_tune as shared
from reconciler.importers.axolotl.keys import LIGER_FLAGS, LIGER_PLUGIN
from reconciler.importers.common import Context, as_int, as_list, as_number
from reconciler.importers.result import SpecDraft


def training(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    steps = as_int(config.get("max_steps"))
    if steps is not None and steps > 0:
        fine_tune.set("training.maxSteps", steps, ctx.says("max_steps"))
        result.map("max_steps", "FineTune.spec.training.maxSteps")
        if "num_epochs" in config:
            result.report(
                "num_epochs", "ignored", "max_steps is set, which ends training first (as in axolotl)"
            )
    elif as_number(config.get("num_epochs")) is not None:
        fine_tune.set("training.epochs", as_number(config["num_epochs"]), ctx.says("num_epochs"))
        result.map("num_epochs", "FineTune.spec.training.epochs")
        if "max_steps" in config:
            result.map("max_steps", "FineTune.spec.training.maxSteps")
    else:
        common.set_default(ctx, fine_tune, "training.epochs", 1, "num_epochs")
    shared.set_numbers(
        ctx,
        fine_tune,
        config,
        (
            ("learning_rate", "learningRate", as_number),
            ("micro_batch_size", "microBatchSize", as_int),
            ("gradient_accumulation_steps", "gradientAccumulation", as_int),
            ("sequence_len", "maxSeqLength", as_int),
            ("weight_decay", "weightDecay", as_number),
            ("max_grad_norm", "maxGradNorm", as_number),
            ("seed", "seed", as_int),
            ("dataloader_num_workers", "dataloaderWorkers", as_int),
        ),
        text_read_as="a string in YAML 1.1, read as a number as axolotl does",
    )
    if "micro_batch_size" not in config:
        common.set_default(ctx, fine_tune, "training.microBatchSize", 1, "micro_batch_size")
    if "sequence_len" not in config:
        common.set_default(ctx, fine_tune, "training.maxSeqLength", 512, "sequence_len")
    if "batch_size" in config:
        if "micro_batch_size" in config and "gradient_accumulation_steps" in config:
            result.report(
                "batch_size", "ignored", "micro_batch_size x gradient_accumulation_steps x GPUs is it"
            )
        else:
            result.report(
                "batch_size",
                "unsupported",
                "a global batch needs the GPU count to become gradientAccumulation: set it by hand",
            )
    if "sample_packing" in config:
        fine_tune.set(
            "training.packing",
            bool(config["sample_packing"]),
            ctx.says("sample_packing", "attention stays within each packed example"),
        )
        result.map("sample_packing", "FineTune.spec.training.packing")
    if "train_on_inputs" in config:
        fine_tune.set("training.trainOnInputs", bool(config["train_on_inputs"]), ctx.says("train_on_inputs"))
        result.map("train_on_inputs", "FineTune.spec.training.trainOnInputs")
    _schedule(config, ctx, fine_tune, steps)
    _precision(config, ctx, fine_tune)
    _attention(config, ctx, fine_tune)
    checkpointing = config.get("gradient_checkpointing")
    if checkpointing is not None:
        if isinstance(checkpointing, bool):
            fine_tune.set("training.gradientCheckpointing", checkpointing, ctx.says("gradient_checkpointing"))
            result.map("gradient_checkpointing", "FineTune.spec.training.gradientCheckpointing")
        else:
            fine_tune.set(
                "training.gradientCheckpointing",
                True,
                ctx.says("gradient_checkpointing", f"{checkpointing}: plain recomputation"),
            )
            result.report(
                "gradient_checkpointing",
                "unsupported",
                f"{checkpointing} checkpointing is not offered; plain gradient checkpointing was written",
            )
    if "gradient_checkpointing_kwargs" in config:
        result.report(
            "gradient_checkpointing_kwargs", "ignored", "tuneops checkpoints without re-entrant autograd"
        )


def _schedule(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, steps: int | None) -> None:
    result = ctx.result
    scheduler = config.get("lr_scheduler")
    if scheduler is not None:
        shared.set_choice(
            ctx, fine_tune, "lr_scheduler", scheduler, "training.scheduler", shared.OFFERED_SCHEDULERS
        )
    optimizer = config.get("optimizer")
    if optimizer is not None:
        shared.set_choice(
            ctx, fine_tune, "optimizer", optimizer, "training.optimizer", shared.OFFERED_OPTIMIZERS
        )
    else:
        common.set_default(ctx, fine_tune, "training.optimizer", "adamw_torch_fused", "optimizer")
    ratio = as_number(config.get("warmup_ratio"))
    warmup_steps = as_int(config.get("warmup_steps"))
    if ratio is not None:
        fine_tune.set("training.warmupRatio", float(ratio), ctx.says("warmup_ratio"))
        result.map("warmup_ratio", "FineTune.spec.training.warmupRatio")
        if "warmup_steps" in config:
            result.report("warmup_steps", "ignored", "warmup_ratio is set beside it")
    elif warmup_steps is not None:
        if warmup_steps == 0:
            fine_tune.set("training.warmupRatio", 0.0, ctx.says("warmup_steps"))
            result.map("warmup_steps", "FineTune.spec.training.warmupRatio")
        elif not shared.warmup_from_steps(ctx, fine_tune, warmup_steps, steps):
            common.set_default(ctx, fine_tune, "training.warmupRatio", 0.0, "warmup_ratio")
    else:
        common.set_default(ctx, fine_tune, "training.warmupRatio", 0.0, "warmup_ratio")


def _precision(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    bf16, fp16 = config.get("bf16", "auto"), config.get("fp16")
    if "bf16" in config:
        ctx.result.map("bf16", "FineTune.spec.training.precision")
    if "fp16" in config:
        ctx.result.map("fp16", "FineTune.spec.training.precision")
    if bf16 is True:
        fine_tune.set("training.precision", "bf16", ctx.says("bf16"))
    elif fp16 is True:
        fine_tune.set("training.precision", "fp16", ctx.says("fp16"))
    elif bf16 == "auto":
        if "bf16" in config:
            fine_tune.set("training.precision", "auto", ctx.says("bf16"))
    else:
        fine_tune.set("training.precision", "fp32", ctx.says("bf16", "off, and fp16 off"))
    if "tf32" in config:
        fine_tune.set("training.tf32", bool(config["tf32"]), ctx.says("tf32"))
        ctx.result.map("tf32", "FineTune.spec.training.tf32")


def _attention(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    for key, ours in (
        ("flash_attention", "flash_attention_2"),
        ("sdp_attention", "sdpa"),
        ("eager_attention", "eager"),
    ):
        if key in config:
            ctx.result.map(key, "FineTune.spec.training.attention")
            if config[key]:
                fine_tune.set("training.attention", ours, ctx.says(key))
    plugins = as_list(config.get("plugins"))
    liger = LIGER_PLUGIN in plugins
    for plugin in plugins:
        if plugin != LIGER_PLUGIN:
            ctx.result.report(
                f"plugins: {plugin}",
                "unsupported",
                "only the Liger plugin is translated (training.kernels: liger)",
            )
    if "plugins" in config:
        ctx.result.map("plugins", "FineTune.spec.training.kernels")
    flags = [key for key in LIGER_FLAGS if key in config]
    for key in flags:
        ctx.result.map(key, "FineTune.spec.training.kernels")
    if liger and any(config[key] for key in flags):
        fine_tune.set(
            "training.kernels",
            "liger",
            ctx.says("plugins", "LigerPlugin with " + ", ".join(k for k in flags if config[k])),
        )
        if not all(config[key] for key in flags):
            ctx.result.note(
                "liger_*: tuneops applies every Liger kernel the model supports, not a chosen few"
            )
    elif flags and not liger:
        ctx.result.note(
            "liger_* settings without the LigerPlugin have no effect in axolotl; none were written"
        )
