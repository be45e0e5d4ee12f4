"""axolotl's method keys -> FineTune.method: `rl` (dpo, kto, orpo, grpo), `reward_model`, or sft
and pretraining told apart by the datasets' types; and β, which axolotl takes from the first of
trl.beta, rl_beta (dpo_beta, its older name) and orpo_alpha that is set."""

from __future__ import annotations

from typing import Any

from reconciler.importers.common import Context, as_number
from reconciler.importers.fine_tune import METHODS, MethodChoice
from reconciler.importers.result import Category, SpecDraft

RL_METHODS = ("dpo", "kto", "orpo", "grpo")
# axolotl's order: its RL trainer builder passes the first of these that is set as trl's `beta`.
BETA_KEYS = ("trl.beta", "rl_beta", "dpo_beta", "orpo_alpha")
KTO_WEIGHTS = ("kto_desirable_weight", "kto_undesirable_weight")


def method(config: dict[str, Any], ctx: Context) -> MethodChoice:
    """The method, and the comment written beside it."""
    result = ctx.result
    rl = config.get("rl")
    if rl in (None, False, ""):
        if "rl" in config:
            result.map("rl", "FineTune.spec.method")
        _not_rl(config, ctx, "rl is not set")
        if _reward_model(config, ctx):
            return MethodChoice(
                "reward", ctx.says("reward_model", "a reward model: a scoring head on preference pairs")
            )
        datasets = config.get("datasets")
        types = (
            {repr(d.get("type")) for d in datasets if isinstance(d, dict)}
            if isinstance(datasets, list)
            else set()
        )
        if types == {repr("completion")}:
            return MethodChoice("pretrain", "text datasets (completion): continued pretraining")
        return MethodChoice("sft", None)
    _reward_model_beside(config, ctx, rl)
    if isinstance(rl, str) and rl in RL_METHODS:
        result.map("rl", "FineTune.spec.method")
        return MethodChoice(rl, ctx.says("rl"))
    result.report(
        "rl",
        "unsupported",
        f"rl: {rl} is not offered (methods: {METHODS}); this FineTune was written as sft and needs review",
    )
    _not_rl(config, ctx, f"a setting of rl: {rl}", "unsupported")
    return MethodChoice("sft", None)


def method_settings(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, method: str) -> None:
    """β and KTO's weights, for the rl methods (the other methods' were reported by method())."""
    if method in RL_METHODS and config.get("rl") == method:
        _beta(config, ctx, fine_tune, method)
        _kto_weights(config, ctx, method)


def _reward_model(config: dict[str, Any], ctx: Context) -> bool:
    """`reward_model: true` (with the one-score head `num_labels: 1`) -> method reward."""
    result = ctx.result
    flag = config.get("reward_model")
    if "reward_model" in config and not isinstance(flag, bool) and flag is not None:
        result.report("reward_model", "unsupported", f"not true or false: {flag!r}")
        flag = None
    elif "reward_model" in config:
        result.map("reward_model", "FineTune.spec.method")
    labels = config.get("num_labels")
    if "num_labels" in config:
        if flag and labels == 1:
            result.map("num_labels", "FineTune.spec.method")
        elif flag:
            result.report(
                "num_labels", "unsupported", f"a reward model has one score (num_labels: 1), not {labels!r}"
            )
        else:
            result.report("num_labels", "unsupported", "a classification head is read for reward_model only")
    return flag is True


def _reward_model_beside(config: dict[str, Any], ctx: Context, rl: Any) -> None:
    """`reward_model` and `num_labels` in a config that sets rl, which axolotl trains with."""
    if "reward_model" in config:
        if config["reward_model"]:
            ctx.result.report(
                "reward_model",
                "unsupported",
                f"set beside rl: {rl}, which axolotl trains with; a reward model is a FineTune of its own "
                "(method: reward)",
            )
        else:
            ctx.result.map("reward_model", "FineTune.spec.method")
    if "num_labels" in config:
        ctx.result.report("num_labels", "unsupported", "a classification head is read for reward_model only")


def _not_rl(config: dict[str, Any], ctx: Context, why: str, category: Category = "ignored") -> None:
    """The RL settings of a config that trains without rl (or with an rl tuneops lacks)."""
    for key in (*BETA_KEYS[1:], *KTO_WEIGHTS):
        if key in config:
            ctx.result.report(key, category, why)


def _beta(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, rl: str) -> None:
    """β of dpo, kto and orpo (training.beta; ORPO's λ) or of grpo (grpo.beta, its KL penalty)."""
    result = ctx.result
    trl = config.get("trl") if isinstance(config.get("trl"), dict) else {}
    given = {"trl.beta": trl.get("beta"), **{key: config.get(key) for key in BETA_KEYS[1:]}}
    path = "grpo.beta" if rl == "grpo" else "training.beta"
    chosen: str | None = None
    for key in BETA_KEYS:
        value = given[key]
        if value is None:
            if key in config or (key == "trl.beta" and "beta" in trl):
                result.report(key, "ignored", "empty: not set")
            continue
        number = as_number(value)
        if chosen is not None:
            result.report(key, "ignored", f"{chosen} is set, which axolotl passes as β first")
        elif number is None or number < 0 or (number == 0 and path == "training.beta"):
            result.report(key, "unsupported", f"not a β above 0: {value!r}")
        else:
            chosen = key
            how = {
                "orpo_alpha": "ORPO's λ, the weight of its odds-ratio loss: trl's beta"
                if rl == "orpo"
                else "axolotl passes it as β when trl.beta and rl_beta are not set",
                "dpo_beta": "the older name of rl_beta",
            }.get(key, "")
            fine_tune.set(path, float(number), ctx.says(key, how))
            result.map(key, f"FineTune.spec.{path}")


def _kto_weights(config: dict[str, Any], ctx: Context, rl: str) -> None:
    for key in KTO_WEIGHTS:
        if key not in config:
            continue
        if rl != "kto":
            ctx.result.report(key, "ignored", f"a KTO setting; rl is {rl}")
        elif as_number(config[key]) == 1:
            ctx.result.report(key, "ignored", "1.0, trl's default, which tuneops trains with")
        else:
            ctx.result.report(
                key,
                "unsupported",
                "weighing desirable and undesirable rows apart is not offered (tuneops weighs both 1.0)",
            )
