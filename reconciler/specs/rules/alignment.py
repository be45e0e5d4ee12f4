"""Rules on the alignment methods (grpo, kto, orpo, reward): a GRPO fine-tune's rewards can be
found and run, a reward model is a FineTune trained to be one and is not served, evaluated or
trained further as a chat model, the group of generations fits the batch, and KTO has a batch to
estimate its KL term from.
"""

from __future__ import annotations

import ast
import errno
import stat
from collections.abc import Iterator
from pathlib import Path

from reconciler.specs.base import ResourceId
from reconciler.specs.confinement import SETTING, FileRoots, OutsideRoots, resolve_inside
from reconciler.specs.finetune import FineTuneResource, reward_file_path
from reconciler.specs.problems import Problem
from reconciler.specs.rules.registry import ERROR, WARNING, RuleContext, problem, rule


@rule
def python_rewards_are_readable(ctx: RuleContext) -> Iterator[Problem]:
    """A reward file is part of what the FineTune means: it must be in the repository, parse, and
    define the function at its top level (where the job looks it up)."""
    roots = FileRoots.of_project(ctx.specs.root, ctx.settings.policy.allowed_file_roots)
    for spec, fine_tune in ctx.fine_tunes():
        for index, reward in enumerate(fine_tune.spec.rewards):
            if reward.python is None:
                continue
            where = ("spec", "rewards", index, "python")
            written, function = reward.python_file or "", reward.python_function or ""
            path = reward_file_path(spec.path.parent, written)
            try:
                resolve_inside(path, roots.all, roots.describe())
            except OutsideRoots as error:
                yield problem(spec, ERROR, "outside-repository", f"reward file {error}", where,
                              value=reward.python, hint=f"keep reward functions in the spec repository, "
                                                        f"or list the folder in {SETTING} of tuneops.yaml")
                continue
            try:
                source = _read_reward_file(path)
            except OSError as error:
                yield problem(spec, ERROR, "missing-file",
                              f"reward file {written} cannot be read ({error.strerror or error}): {path}",
                              where, value=reward.python,
                              hint="the path is relative to the spec file's folder")
                continue
            try:
                tree = ast.parse(source, filename=written)
            except (SyntaxError, ValueError) as error:
                line = getattr(error, "lineno", None)
                yield problem(spec, ERROR, "reward-file",
                              f"reward file {written}{f':{line}' if line else ''} is not valid Python: "
                              f"{getattr(error, 'msg', error)}", where, value=reward.python)
                continue
            for line, module in _repository_imports(tree, path.parent):
                yield problem(spec, ERROR, "reward-file",
                              f"reward file {written}:{line} imports {module}, a file of the repository: a "
                              "reward file must be self-contained (only its own bytes are fingerprinted and "
                              "checked out into the job)", where, value=reward.python,
                              hint="put what it needs into the reward file; the standard library and "
                                   "installed packages may be imported")
            defined = _top_level_names(tree)
            if function not in defined:
                from reconciler.specs.schema_errors import suggest

                yield problem(spec, ERROR, "reward-file",
                              f"reward file {written} defines no function {function!r} at its top level",
                              where, value=reward.python,
                              hint=suggest(function, sorted(defined)) or
                              f"define def {function}(prompts, completions, **columns) -> list[float]")


MAX_REWARD_FILE_BYTES = 1 << 20


def _read_reward_file(path: Path) -> bytes:
    """The reward file's bytes: a regular file (a FIFO would block validation forever) of at most
    1 MiB (a reward function is code, not data)."""
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    if status.st_size > MAX_REWARD_FILE_BYTES:
        raise OSError(errno.EFBIG, f"over {MAX_REWARD_FILE_BYTES >> 20} MiB, not a reward function",
                      str(path))
    return path.read_bytes()


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds when it runs: definitions, assignments and imports at its top level,
    including those inside `if` and `try` blocks there."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.If | ast.Try | ast.With):
            pending.extend(node.body)
            pending.extend(getattr(node, "orelse", []))
            pending.extend(getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)
    return names


def _repository_imports(tree: ast.Module, folder: Path) -> list[tuple[int, str]]:
    """(line, module) of the imports that would read another file of the repository: relative
    imports, and modules found beside the reward file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.append((node.lineno, "." * node.level + (node.module or "")))
            continue
        modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                   else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for module in modules:
            top = module.split(".")[0]
            if (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file():
                found.append((node.lineno, module))
    return found


@rule
def reward_models_are_reward_models(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        for index, reward in enumerate(fine_tune.spec.rewards):
            if reward.reward_model is None:
                continue
            name = reward.reward_model.fine_tune
            scorer = ctx.specs.resource(ResourceId("FineTune", name), FineTuneResource)
            if scorer is not None and scorer.spec.method != "reward":
                yield problem(spec, ERROR, "not-a-reward-model",
                              f"FineTune '{name}' trains with method {scorer.spec.method}, not a reward "
                              "model", ("spec", "rewards", index, "rewardModel", "fineTune"), value=name,
                              hint=f"give FineTune '{name}' method: reward, or name one that has it")


@rule
def reward_models_are_not_chat_models(ctx: RuleContext) -> Iterator[Problem]:
    """A reward model is a scoring head: it cannot generate, so it is neither served, evaluated on
    text, nor trained further with another method."""

    def is_reward_model(name: str | None) -> bool:
        found = ctx.specs.resource(ResourceId("FineTune", name), FineTuneResource) if name else None
        return found is not None and found.spec.method == "reward"

    hint = "a reward model is used by a grpo FineTune's rewards: [{rewardModel: {fineTune: ...}}]"
    for spec, fine_tune in ctx.fine_tunes():
        source = fine_tune.spec.from_fine_tune
        if is_reward_model(source) and fine_tune.spec.method != "reward":
            yield problem(spec, ERROR, "reward-model-misused",
                          f"FineTune '{source}' is a reward model (method reward): it scores text and "
                          "cannot be trained further as a language model", ("spec", "fromFineTune"),
                          value=source, hint=hint)
    for spec, evaluation in ctx.evaluations():
        for field_name, target in (("model", evaluation.spec.model), ("baseline", evaluation.spec.baseline)):
            if target is not None and is_reward_model(target.fine_tune):
                yield problem(spec, ERROR, "reward-model-misused",
                              f"FineTune '{target.fine_tune}' is a reward model (method reward): it "
                              "scores text and does not generate, so it cannot be evaluated as a model",
                              ("spec", field_name, "fineTune"), value=target.fine_tune, hint=hint)
    for spec, deployment in ctx.deployments():
        if is_reward_model(deployment.spec.model.fine_tune):
            yield problem(spec, ERROR, "reward-model-misused",
                          f"FineTune '{deployment.spec.model.fine_tune}' is a reward model (method "
                          "reward): it does not generate, so it cannot be served",
                          ("spec", "model", "fineTune"), value=deployment.spec.model.fine_tune, hint=hint)


@rule
def grpo_group_fits_the_batch(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        s = fine_tune.spec
        if s.method != "grpo":
            if "grpo" in s.model_fields_set:
                yield problem(spec, WARNING, "ignored-setting", f"grpo settings only apply to method grpo "
                              f"(method is {s.method})", ("spec", "grpo"), key=True)
            continue
        if s.grpo.use_vllm and s.resources.gpus_per_node == 0:
            yield problem(spec, ERROR, "needs-gpu",
                          "grpo.useVllm generates with vLLM, which needs a CUDA GPU",
                          ("spec", "grpo", "useVllm"), hint="set resources.gpusPerNode, or useVllm: false")
        if s.training.packing:
            yield problem(spec, WARNING, "ignored-setting", "packing does not apply to grpo (completions "
                          "are generated and scored one by one)", ("spec", "training", "packing"), key=True)


@rule
def batch_fits_the_method(ctx: RuleContext) -> Iterator[Problem]:
    """GRPO's group divides the completions of a step; KTO has other rows in a micro-batch to
    estimate its KL term from (FineTuneSpec.batch_conflicts)."""
    for spec, fine_tune in ctx.fine_tunes():
        for conflict in fine_tune.spec.batch_conflicts():
            if conflict.path[-1] == "numGenerations":
                yield problem(spec, ERROR, "grpo-group-size", conflict.message, conflict.path,
                              value=conflict.value, hint=conflict.hint)
            else:
                yield problem(spec, ERROR, "unsupported-combination", conflict.message, conflict.path,
                              value=conflict.value, hint=conflict.hint)


@rule
def reward_model_starts_from_full_weights(ctx: RuleContext) -> Iterator[Problem]:
    """A reward model gets a new scoring head; it can start from a base model or a fully fine-tuned
    one, not from an adapter (which is saved for the language-model head it was trained with)."""
    for spec, fine_tune in ctx.fine_tunes():
        source = fine_tune.spec.from_fine_tune
        if fine_tune.spec.method != "reward" or not source:
            continue
        start = ctx.specs.resource(ResourceId("FineTune", source), FineTuneResource)
        if start is not None and start.spec.adapter.type != "none":
            yield problem(spec, ERROR, "unsupported-combination",
                          f"a reward model starts from a base model or a full fine-tune; FineTune "
                          f"'{source}' trains a {start.spec.adapter.type} adapter", ("spec", "fromFineTune"),
                          value=source,
                          hint=f"use baseModel: (the base of '{source}'), or give '{source}' "
                               "adapter.type: none")


@rule
def reward_model_has_held_out_pairs(ctx: RuleContext) -> Iterator[Problem]:
    """A reward model's accuracy is measured on its datasets' validation pairs: without any, it is
    trained but nothing says how well it ranks."""
    for spec, fine_tune in ctx.fine_tunes():
        s = fine_tune.spec
        datasets = [ctx.dataset(data.name) for data in s.datasets]
        if s.method != "reward" or any(d is None for d in datasets):
            continue
        if not any(d is not None and d.spec.split.validation > 0 for d in datasets):
            yield problem(spec, WARNING, "no-validation-data",
                          "method reward records reward_accuracy on held-out pairs, and no dataset has a "
                          "validation split", ("spec", "datasets"), key=True,
                          hint="give a dataset split.validation > 0")
