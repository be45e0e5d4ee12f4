"""FineTune settings both importers translate the same way: the draft itself, the GPU count the
configs leave to the launcher, the scheduler and optimizer names (transformers' own, which both
tools pass through), numeric hyperparameters, warmup steps, LoRA's scale and the checkpoints kept;
and the methods and GRPO defaults that reasons and notes name."""

from __future__ import annotations

import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple

from reconciler.importers.common import Context, as_int, as_list, as_number, header, name_from, set_default
from reconciler.importers.result import SpecDraft
from reconciler.specs.finetune import OPTIMIZER_SYNONYMS, OPTIMIZERS, Grpo, Method, Scheduler

OFFERED_SCHEDULERS = frozenset(typing.get_args(Scheduler))
# The methods a FineTune trains with, as a reason names them: "sft, dpo, pretrain, grpo, ...".
METHODS = ", ".join(typing.get_args(Method))


class MethodChoice(NamedTuple):
    """The method a config trains with, and the comment written beside it in the FineTune."""

    method: str
    comment: str | None


# tuneops' GRPO settings left unset, in the spec's words: what a config that leaves trl's defaults
# (which change between trl versions) gets instead.
GRPO_DEFAULTS = {
    name: Grpo.model_fields[field_name].default
    for name, field_name in (
        ("numGenerations", "num_generations"),
        ("maxCompletionLength", "max_completion_length"),
        ("temperature", "temperature"),
        ("beta", "beta"),
    )
}
OFFERED_OPTIMIZERS = frozenset((*OPTIMIZERS, *OPTIMIZER_SYNONYMS))
# Hyperparameters written as floats even when the config gives a whole number.
_FLOATS = ("learningRate", "weightDecay", "maxGradNorm")


def fine_tune_draft(ctx: Context, name: str | None, base: SpecDraft) -> SpecDraft:
    """The FineTune of `base`, named by `--name` or after the config file."""
    fine_tune = SpecDraft(
        "FineTune",
        name or name_from(ctx.config_path.name, "fine-tune"),
        header=header(ctx, "Unset fields take tuneops' defaults (docs/specs.md)."),
    )
    fine_tune.set("baseModel", base.name)
    return fine_tune


def ask_for_gpus(ctx: Context, fine_tune: SpecDraft) -> None:
    """Neither tool's config says how many GPUs it ran on (the launcher does): one, to be set."""
    fine_tune.set(
        "resources.gpusPerNode",
        1,
        f"not in the config: {ctx.tool} trains on the GPUs it is launched with; set how many",
    )
    ctx.result.note("resources.gpusPerNode: 1 was written; set the GPUs (and nodes) the config ran on")


def set_choice(
    ctx: Context, fine_tune: SpecDraft, key: str, value: Any, path: str, offered: Collection[str]
) -> None:
    """A name from a fixed set (a scheduler, an optimizer): written, or reported with the set."""
    if isinstance(value, str) and value in offered:
        fine_tune.set(path, value, ctx.says(key))
        ctx.result.map(key, f"FineTune.spec.{path}")
    else:
        ctx.result.report(key, "unsupported", f"{value} is not offered ({', '.join(sorted(offered))})")


def set_numbers(
    ctx: Context,
    fine_tune: SpecDraft,
    config: dict[str, Any],
    settings: Iterable[tuple[str, str, Callable[[Any], float | int | None]]],
    defaults: Mapping[str, Any] | None = None,
    text_read_as: str = "",
) -> None:
    """(config key, training field, conversion) -> training.<field>; a key left out takes its
    entry in `defaults`, if any. `text_read_as` says how a number written as text was read."""
    for key, name, convert in settings:
        if key not in config:
            if defaults and key in defaults:
                set_default(ctx, fine_tune, f"training.{name}", defaults[key], key)
            continue
        value = convert(config[key])
        if value is None:
            ctx.result.report(key, "unsupported", f"not a number: {config[key]!r}")
            continue
        how = text_read_as if isinstance(config[key], str) else ""
        fine_tune.set(f"training.{name}", float(value) if name in _FLOATS else value, ctx.says(key, how))
        ctx.result.map(key, f"FineTune.spec.training.{name}")


def warmup_from_steps(ctx: Context, fine_tune: SpecDraft, warmup_steps: int, steps: int | None) -> bool:
    """`warmup_steps` as the share of max_steps tuneops takes; False (reported) without max_steps."""
    if steps:
        fine_tune.set(
            "training.warmupRatio",
            round(warmup_steps / steps, 6),
            ctx.says("warmup_steps", f"{warmup_steps} of max_steps {steps}"),
        )
        ctx.result.map("warmup_steps", "FineTune.spec.training.warmupRatio")
        return True
    ctx.result.report(
        "warmup_steps",
        "unsupported",
        f"{warmup_steps} steps: tuneops warms up for a share of "
        "the steps (warmupRatio), and the total is not known "
        "before the data is; set warmupRatio by hand",
    )
    return False


def lora_alpha_and_dropout(ctx: Context, fine_tune: SpecDraft, config: dict[str, Any]) -> None:
    """`lora_alpha` and `lora_dropout`, which both tools spell so; neither uses dropout unless told."""
    alpha = as_int(config.get("lora_alpha"))
    if alpha is not None:
        fine_tune.set("adapter.alpha", alpha, ctx.says("lora_alpha"))
        ctx.result.map("lora_alpha", "FineTune.spec.adapter.alpha")
    dropout = as_number(config.get("lora_dropout"))
    if dropout is not None:
        fine_tune.set("adapter.dropout", float(dropout), ctx.says("lora_dropout"))
        ctx.result.map("lora_dropout", "FineTune.spec.adapter.dropout")
    else:
        set_default(ctx, fine_tune, "adapter.dropout", 0.0, "lora_dropout")


def modules_to_save(ctx: Context, fine_tune: SpecDraft, config: dict[str, Any], key: str) -> None:
    saved = as_list(config.get(key))
    if saved:
        fine_tune.set("adapter.modulesToSave", saved, ctx.says(key))
        ctx.result.map(key, "FineTune.spec.adapter.modulesToSave")


def checkpoints_kept(ctx: Context, fine_tune: SpecDraft, config: dict[str, Any]) -> None:
    keep = as_int(config.get("save_total_limit"))
    if keep is not None and keep > 0:
        fine_tune.set("checkpoint.keep", keep, ctx.says("save_total_limit"))
        ctx.result.map("save_total_limit", "FineTune.spec.checkpoint.keep")
    elif "save_total_limit" in config:
        ctx.result.report("save_total_limit", "unsupported", "keeping every checkpoint is not offered")
