"""axolotl's `trl` settings -> FineTune.grpo and FineTune.rewards: the generations (num_generations,
max_completion_length, temperature, use_vllm) and the reward functions, which axolotl imports by
module path from the folder it runs in. A reward function is translated only where it is a file
of the spec folder, which is where a FineTune's `python:` rewards are read from."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from reconciler.importers.commented_yaml import Commented
from reconciler.importers.common import Context, as_int, as_list, as_number
from reconciler.importers.fine_tune import GRPO_DEFAULTS
from reconciler.importers.result import SpecDraft

# trl key -> (grpo field, conversion)
GENERATION = {
    "num_generations": ("numGenerations", as_int),
    "max_completion_length": ("maxCompletionLength", as_int),
    "temperature": ("temperature", as_number),
}
_GRPO_ONLY = (*GENERATION, "use_vllm", "vllm_mode", "reward_funcs", "reward_weights")
_VLLM_SERVER = ("vllm_server_host", "vllm_server_port", "vllm_server_timeout", "vllm_server_base_url")
_BUILTINS = "exact_match, contains, regex, length_penalty, format_json"


def trl_settings(config: dict[str, Any], ctx: Context, fine_tune: SpecDraft, method: str) -> None:
    """Every key under `trl`: GRPO's settings for rl: grpo; β (trl.beta) is the method's."""
    result = ctx.result
    trl = config.get("trl")
    if "trl" in config and not isinstance(trl, dict):
        if trl is not None:
            result.report("trl", "unsupported", "not a mapping of TRL settings")
        else:
            result.report("trl", "ignored", "empty")
        return
    settings = trl or {}
    if method == "grpo":
        _generations(settings, ctx, fine_tune)
        _rewards(settings, ctx, fine_tune)
    for name in settings:
        key = f"trl.{name}"
        if key in result.accounted():
            continue
        if name == "max_completion_length" and method in ("dpo", "kto", "orpo"):
            result.report(key, "unsupported", f"{method} rows are truncated whole, to training.maxSeqLength")
        elif name == "beta" or (name in _GRPO_ONLY and method != "grpo"):
            why = f"rl is {config.get('rl')}" if config.get("rl") else "rl is not set"
            result.report(key, "ignored", f"{'β' if name == 'beta' else 'a GRPO setting'}; {why}")
        elif name in _VLLM_SERVER:
            result.report(
                key, "ignored", "tuneops runs vLLM inside the training job (grpo.useVllm): no server to reach"
            )
        elif name.startswith("vllm_"):
            result.report(key, "unsupported", "vLLM's settings are tuneops' (colocated on the training GPU)")
        elif name == "log_completions":
            result.report(key, "ignored", "logging: tuneops logs every run to MLflow")
        else:
            result.report(
                key,
                "unsupported",
                "not offered (grpo: numGenerations, maxCompletionLength, temperature, beta, useVllm)",
            )


def _generations(settings: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    result = ctx.result
    for name, (field_name, convert) in GENERATION.items():
        if name not in settings:
            continue
        value = convert(settings[name])
        if value is None:
            result.report(f"trl.{name}", "unsupported", f"not a number: {settings[name]!r}")
            continue
        fine_tune.set(f"grpo.{field_name}", value, ctx.says(f"trl.{name}"))
        result.map(f"trl.{name}", f"FineTune.spec.grpo.{field_name}")
    mode = settings.get("vllm_mode")
    if "use_vllm" in settings:
        if isinstance(settings["use_vllm"], bool):
            how = "colocated on the training GPU" if settings["use_vllm"] else ""
            if settings["use_vllm"] and mode != "colocate":
                how += "; axolotl's default reaches a separate `axolotl vllm-serve` server"
            fine_tune.set("grpo.useVllm", settings["use_vllm"], ctx.says("trl.use_vllm", how))
            result.map("trl.use_vllm", "FineTune.spec.grpo.useVllm")
        else:
            result.report("trl.use_vllm", "unsupported", f"not true or false: {settings['use_vllm']!r}")
    if mode == "colocate":
        result.map("trl.vllm_mode", "FineTune.spec.grpo.useVllm")
    elif "vllm_mode" in settings:
        result.report(
            "trl.vllm_mode", "ignored", "tuneops colocates vLLM on the training GPU: there is no server mode"
        )
    unset = {
        f"trl.{name}": field_name for name, (field_name, _) in GENERATION.items() if name not in settings
    }
    if fine_tune.get("grpo.beta") is None:
        unset["trl.beta"] = "beta"
    if unset:
        result.note(
            f"{', '.join(unset)} not set: axolotl left them to trl's defaults, which differ between trl "
            f"versions; tuneops' are {', '.join(f'grpo.{f}: {GRPO_DEFAULTS[f]}' for f in unset.values())}. "
            "Set what the run used"
        )


def _rewards(settings: dict[str, Any], ctx: Context, fine_tune: SpecDraft) -> None:
    """`trl.reward_funcs` (module paths, or reward models named by path or Hub id) and their
    `trl.reward_weights` -> rewards: [{python: file.py:function, weight}]."""
    result = ctx.result
    names = as_list(settings.get("reward_funcs"))
    if "reward_funcs" in settings and not names:
        result.report("trl.reward_funcs", "unsupported", "no reward function named")
    weights = _weights(settings, ctx, len(names))
    rewards: list[dict[str, Any]] = []
    for index, name in enumerate(names):
        written = _python_reward(name, ctx)
        if written is None:
            continue
        entry: dict[str, Any] = {"python": Commented(written, ctx.says("trl.reward_funcs", name))}
        if weights is not None:
            entry["weight"] = Commented(weights[index], ctx.says("trl.reward_weights"))
        rewards.append(entry)
    if rewards:
        fine_tune.set("rewards", rewards, ctx.says("trl.reward_funcs"))
        result.map("trl.reward_funcs", "FineTune.spec.rewards")
        if weights is not None:
            result.map("trl.reward_weights", "FineTune.spec.rewards[].weight")
        result.note(
            "trl.reward_funcs: tuneops calls a python reward as function(prompts, completions, **columns) "
            "with text (the user's message and the completion) and the prompt Dataset's reference "
            "column; under axolotl, trl passed conversational messages and every dataset column by "
            "keyword. Check that each function reads text"
        )
    elif names:
        result.report(
            "trl.reward_funcs",
            "unsupported",
            "no reward function could be translated (each is listed); method grpo needs rewards",
        )
    if "reward_weights" in settings and not rewards and "trl.reward_weights" not in result.accounted():
        result.report(
            "trl.reward_weights", "unsupported", "weights of reward functions that were not translated"
        )


def _weights(settings: dict[str, Any], ctx: Context, count: int) -> list[float] | None:
    if "reward_weights" not in settings:
        return None
    raw = settings["reward_weights"]
    weights = [as_number(w) for w in raw] if isinstance(raw, list) else []
    if len(weights) != count or any(w is None for w in weights):
        ctx.result.report(
            "trl.reward_weights", "unsupported", f"not one number per reward function ({count}): {raw!r}"
        )
        return None
    return [float(w) for w in weights if w is not None]


def _python_reward(name: str, ctx: Context) -> str | None:
    """`pkg.module.function` -> `pkg/module.py:function` relative to the spec folder, or None (the
    entry reported, with what to write instead)."""
    key = f"trl.reward_funcs: {name}"
    result = ctx.result
    module, _, function = name.rpartition(".")
    if "/" in name or not module or not function.isidentifier():
        result.report(
            key,
            "unsupported",
            "a reward model named by path or Hub id: tuneops scores with reward models it trains; "
            "import or write that model as a FineTune with method: reward and set "
            "rewards: [{rewardModel: {fineTune: <its name>}}]",
        )
        return None
    parts = module.split(".")
    candidates = [ctx.cwd.joinpath(*parts).with_suffix(".py"), ctx.cwd.joinpath(*parts, "__init__.py")]
    file = next((path for path in candidates if path.is_file()), None)
    if file is None:
        result.report(
            key,
            "unsupported",
            f"{module} is not a file of the repository (no {'/'.join(parts)}.py from {ctx.cwd}): an "
            "installed package's function, which tuneops does not run. Copy it into a .py file in the "
            "spec folder and write rewards: [{python: <file>.py:<function>}], or use a builtin reward "
            f"({_BUILTINS})",
        )
        return None
    relative = os.path.relpath(file.absolute(), ctx.out_dir.absolute()).replace(os.sep, "/")
    if relative.split("/")[0] == "..":
        result.report(
            key,
            "unsupported",
            f"{file} is outside the spec folder {ctx.out_dir}: a python reward's path is relative to the "
            f"FineTune's file and may not leave its folder; move {file.name} into {ctx.out_dir} and write "
            f"rewards: [{{python: {file.name}:{function}}}] (or write the specs beside it, --out "
            f"{file.parent})",
        )
        return None
    problem = _signature_problem(file, function)
    if problem is not None:
        result.report(key, "unsupported", problem)
        return None
    return f"{relative}:{function}"


def _signature_problem(file: Path, function: str) -> str | None:
    """Why tuneops could not call `function` of `file` as function(prompts, completions, **columns)."""
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as error:
        return f"{file} cannot be read as Python ({type(error).__name__}: {error})"
    found = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function
        ),
        None,
    )
    if found is None:
        return f"{file} defines no function {function!r} at its top level"
    positional = [a.arg for a in (*found.args.posonlyargs, *found.args.args)]
    takes_two = len(positional) >= 2 or found.args.vararg is not None
    swapped = positional[:1] == ["completions"] or positional[1:2] == ["prompts"]
    if takes_two and not swapped:
        return None
    wrapper = f"{function}_tuneops"
    return (
        f"tuneops calls a reward as {function}(prompts, completions, **columns), and {function} takes "
        f"({', '.join(positional)}) first: add `def {wrapper}(prompts, completions, **columns): return "
        f"{function}(prompts=prompts, completions=completions, **columns)` and name {wrapper}"
    )
