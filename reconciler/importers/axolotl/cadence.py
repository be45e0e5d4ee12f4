"""axolotl's evaluation and checkpoint cadence -> FineTune.evaluation and FineTune.checkpoint:
every N steps or once an epoch, the checkpoints kept, resuming, and early stopping."""

from __future__ import annotations

from typing import Any

from reconciler.importers import fine_tune as shared
from reconciler.importers.common import Context, as_int
from reconciler.importers.result import SpecDraft


def cadence(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    _one_cadence(config, ctx, fine_tune, "evaluation", "eval_steps", "evals_per_epoch", "eval_strategy")
    _one_cadence(config, ctx, fine_tune, "checkpoint", "save_steps", "saves_per_epoch", "save_strategy")
    shared.checkpoints_kept(ctx, fine_tune, config)
    if "auto_resume_from_checkpoints" in config:
        if config["auto_resume_from_checkpoints"]:
            fine_tune.set("checkpoint.resume", "auto", ctx.says("auto_resume_from_checkpoints"))
        else:
            fine_tune.set("checkpoint.resume", "never", ctx.says("auto_resume_from_checkpoints"))
        ctx.result.map("auto_resume_from_checkpoints", "FineTune.spec.checkpoint.resume")
    patience = as_int(config.get("early_stopping_patience"))
    if patience is not None and patience > 0:
        if fine_tune.get("evaluation.everySteps") or fine_tune.get("evaluation.perEpoch"):
            fine_tune.set("evaluation.earlyStopping.patience", patience, ctx.says("early_stopping_patience"))
            ctx.result.map("early_stopping_patience", "FineTune.spec.evaluation.earlyStopping.patience")
        else:
            ctx.result.report(
                "early_stopping_patience",
                "unsupported",
                "early stopping needs an evaluation cadence (eval_steps or evals_per_epoch: 1)",
            )
    elif "early_stopping_patience" in config:
        ctx.result.map("early_stopping_patience", "FineTune.spec.evaluation.earlyStopping")


def _one_cadence(
    config: dict[str, Any],
    ctx: Context,
    fine_tune: SpecDraft,
    section: str,
    steps_key: str,
    per_epoch_key: str,
    strategy_key: str,
) -> None:
    result = ctx.result
    strategy = config.get(strategy_key)
    steps = config.get(steps_key)
    per_epoch = as_int(config.get(per_epoch_key))
    if strategy_key in config:
        if strategy in ("no", None):
            result.map(strategy_key, f"FineTune.spec.{section}")
            for key in (steps_key, per_epoch_key):
                if key in config:
                    result.report(key, "ignored", f"{strategy_key}: no")
            return
        if strategy not in ("steps", "epoch"):
            result.report(strategy_key, "unsupported", f"{strategy} is not a cadence (steps, epoch)")
        else:
            result.map(strategy_key, f"FineTune.spec.{section}")
    whole = as_int(steps)
    if steps is not None and whole is not None and whole >= 1:
        fine_tune.set(f"{section}.everySteps", whole, ctx.says(steps_key))
        result.map(steps_key, f"FineTune.spec.{section}.everySteps")
        if per_epoch_key in config:
            result.report(per_epoch_key, "ignored", f"{steps_key} is set beside it")
    elif steps is not None:
        result.report(
            steps_key,
            "unsupported",
            f"{steps} is a share of all steps: tuneops takes a step count, "
            "and the total is not known before the data is",
        )
    elif per_epoch == 1 or (strategy == "epoch" and per_epoch is None):
        fine_tune.set(f"{section}.perEpoch", True, ctx.says(per_epoch_key if per_epoch else strategy_key))
        result.map(per_epoch_key if per_epoch else strategy_key, f"FineTune.spec.{section}.perEpoch")
    elif per_epoch is not None:
        result.report(
            per_epoch_key,
            "unsupported",
            f"{per_epoch} per epoch: tuneops takes a step count "
            "(everySteps), and steps per epoch are not known before "
            "the data is",
        )
