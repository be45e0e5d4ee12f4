"""LLaMA-Factory configs -> tuneops specs. Datasets are named in the config and described in
`dataset_info.json` under `dataset_dir` (default `data`, from the working directory), as
LLaMA-Factory finds them; their entries' keys are accounted for as `dataset_info.<name>.<key>`.
Values left to LLaMA-Factory's or transformers' defaults are written where tuneops' differ
(LoRA rank 8 without dropout, learning rate 5e-5, batch 8, a linear schedule, fp32, gradient
checkpointing on, a checkpoint every 500 steps)."""

from __future__ import annotations

from typing import Any

from reconciler.importers import common
from reconciler.importers import fine_tune as shared
from reconciler.importers.common import Context
from reconciler.importers.llamafactory.adapter import adapter
from reconciler.importers.llamafactory.base_model import base_model, tokens
from reconciler.importers.llamafactory.cadence import cadence
from reconciler.importers.llamafactory.datasets import dataset_specs, mix
from reconciler.importers.llamafactory.distributed import distributed
from reconciler.importers.llamafactory.keys import IGNORED, UNSUPPORTED
from reconciler.importers.llamafactory.training import method, method_settings, training
from reconciler.importers.result import ImportResult

TOOL = "LLaMA-Factory"


def import_llamafactory(config: dict[str, Any], ctx: Context, name: str | None) -> ImportResult:
    result = ctx.result
    common.report_present(ctx, config, IGNORED, "ignored")
    for key, reason in UNSUPPORTED.items():
        if key in config and config[key] not in (None, False):
            result.report(key, "unsupported", reason)
        elif key in config:
            result.report(key, "ignored", "off, as tuneops has it")
    base = base_model(config, ctx)
    fine_tune = shared.fine_tune_draft(ctx, name, base)
    training_method, method_comment = method(config, ctx)
    datasets, training_sets, held_out, info_used = dataset_specs(config, ctx, training_method)
    mix(config, ctx, fine_tune, training_sets)
    fine_tune.set("method", training_method, method_comment)
    adapter(config, ctx, fine_tune)
    training(config, ctx, fine_tune, training_method)
    method_settings(config, ctx, fine_tune, training_method)
    distributed(config, ctx, fine_tune)
    cadence(config, ctx, fine_tune)
    tokens(config, ctx, base)
    shared.ask_for_gpus(ctx, fine_tune)
    evaluation_drafts = common.evaluations(ctx, fine_tune, held_out, training_method)
    result.report_unread(config)
    result.report_unread(info_used, "dataset_info")
    return common.package(ctx, base, datasets, fine_tune, evaluation_drafts)
