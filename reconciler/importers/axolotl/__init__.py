"""axolotl configs -> tuneops specs. axolotl's keys are read as its docs define them (config
reference, dataset formats); values it leaves to its own defaults are written where tuneops'
defaults differ (sequence_len 512, one epoch, micro batch 1, no warmup, no LoRA dropout)."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers import fine_tune as shared
from reconciler.importers.axolotl.adapter import adapter
from reconciler.importers.axolotl.base_model import base_model, tokens
from reconciler.importers.axolotl.cadence import cadence
from reconciler.importers.axolotl.datasets import dataset_specs, validation_share
from reconciler.importers.axolotl.distributed import distributed
from reconciler.importers.axolotl.grpo import trl_settings
from reconciler.importers.axolotl.keys import IGNORED, UNSUPPORTED
from reconciler.importers.axolotl.method import method, method_settings
from reconciler.importers.axolotl.training import training
from reconciler.importers.common import Context
from reconciler.importers.result import ImportResult

TOOL = "axolotl"


def import_axolotl(config: dict[str, Any], ctx: Context, name: str | None) -> ImportResult:
    result = ctx.result
    common.report_present(ctx, config, IGNORED, "ignored")
    common.report_present(ctx, config, UNSUPPORTED, "unsupported")
    base = base_model(config, ctx)
    fine_tune = shared.fine_tune_draft(ctx, name, base)
    training_method, method_comment = method(config, ctx)
    val_share = validation_share(config, ctx)
    datasets, held_out = dataset_specs(config, ctx, training_method, val_share)
    fine_tune.set(
        "datasets",
        [{"name": d.name} for d in datasets if d not in held_out["eval_only"]],
        ctx.says("datasets"),
    )
    if len(fine_tune.get("datasets")) > 1:
        result.note(
            "datasets: axolotl concatenates its datasets; tuneops mixes them by weight (1 each here: "
            "equal shares). For axolotl's mix, set each weight to its dataset's row count"
        )
    fine_tune.set("method", training_method, method_comment)
    adapter(config, ctx, fine_tune)
    training(config, ctx, fine_tune)
    method_settings(config, ctx, fine_tune, training_method)
    trl_settings(config, ctx, fine_tune, training_method)
    distributed(config, ctx, fine_tune)
    cadence(config, ctx, fine_tune)
    tokens(config, ctx, base, fine_tune)
    shared.ask_for_gpus(ctx, fine_tune)
    evaluation_drafts = common.evaluations(ctx, fine_tune, held_out["sets"], training_method)
    result.report_unread(config)
    return common.package(ctx, base, datasets, fine_tune, evaluation_drafts)
