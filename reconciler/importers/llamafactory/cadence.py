"""LLaMA-Factory's (transformers') evaluation and save strategies -> FineTune.evaluation and
FineTune.checkpoint: every N steps (500 unless set) or once an epoch, and the checkpoints kept."""

from __future__ import annotations

from typing import Any

from reconciler.importers import fine_tune as shared
from reconciler.importers.common import Context, as_number
from reconciler.importers.result import SpecDraft


def cadence(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    for section, strategy_key, steps_key, default in (
        ("evaluation", "eval_strategy", "eval_steps", "no"),
        ("checkpoint", "save_strategy", "save_steps", "steps"),
    ):
        strategy = config.get(
            strategy_key, config.get("evaluation_strategy", default) if section == "evaluation" else default
        )
        for key in (strategy_key, "evaluation_strategy" if section == "evaluation" else strategy_key):
            if key in config:
                result.map(key, f"FineTune.spec.{section}")
        steps = as_number(config.get(steps_key, 500))
        if strategy == "steps":
            if steps is not None and steps >= 1 and float(steps).is_integer():
                if steps_key in config:
                    fine_tune.set(f"{section}.everySteps", int(steps), ctx.says(steps_key))
                    result.map(steps_key, f"FineTune.spec.{section}.everySteps")
                else:
                    fine_tune.set(
                        f"{section}.everySteps", 500, f"transformers' default ({steps_key} not set)"
                    )
            elif steps_key in config:
                result.report(
                    steps_key,
                    "unsupported",
                    f"{config[steps_key]} is a share of all steps: tuneops takes a step count",
                )
        elif strategy == "epoch":
            fine_tune.set(f"{section}.perEpoch", True, ctx.says(strategy_key))
            if steps_key in config:
                result.report(steps_key, "ignored", f"{strategy_key}: epoch")
        elif strategy == "no":
            if steps_key in config:
                result.report(steps_key, "ignored", f"{strategy_key}: no")
        else:
            result.report(strategy_key, "unsupported", f"{strategy} is not a cadence (steps, epoch, no)")
    shared.checkpoints_kept(ctx, fine_tune, config)
