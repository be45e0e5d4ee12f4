"""Rules on an Evaluation's named benchmarks (lm-evaluation-harness tasks): a task YAML of the
repository reads, stays inside the repository with every file it reads, and runs no Python the
project's policy refuses; a gate on `task/<task>/<metric>` names a listed task.

What needs lm-eval itself (a task name it knows, a Hub dataset in the cache) is checked when the
job starts, which refuses in one line before any document is scored (runtime/benchmark_tasks.py):
the control plane does not import lm-eval.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.specs.confinement import SETTING, FileRoots, OutsideRoots, resolve_inside
from reconciler.specs.evaluation import TASK_METRIC_PREFIX, BenchmarkTask, EvaluationResource
from reconciler.specs.loader import LoadedSpec, display_path
from reconciler.specs.problems import Position, Problem, Severity
from reconciler.specs.rules.registry import ERROR, WARNING, RuleContext, problem, rule
from reconciler.specs.schema_errors import format_path, suggest
from reconciler.specs.specset import SpecSet
from reconciler.specs.task_files import Located, TaskFile, TaskFileError, read_task_file, task_file_path


def _readable_task_file(spec: LoadedSpec, task: BenchmarkTask) -> TaskFile | None:
    try:
        return read_task_file(task_file_path(spec.path.parent, task.path or ""))
    except (TaskFileError, OSError):
        return None  # task_files_are_readable says why


def task_names(spec: LoadedSpec, evaluation: EvaluationResource) -> list[str]:
    """The tasks an Evaluation runs, by the names lm-eval reports them under."""
    names: list[str] = []
    for task in evaluation.spec.tasks:
        if task.name:
            names.append(task.name)
        elif (read := _readable_task_file(spec, task)) is not None:
            names += read.names
    return names


def task_yaml_files(specs: SpecSet) -> set[str]:
    """Every task YAML the Evaluations name, and the files they include, as validation shows
    file names: they sit among the specs but are lm-eval's, so they are not read as specs."""
    found: set[str] = set()
    for spec in specs.of_kind("Evaluation"):
        assert isinstance(spec.resource, EvaluationResource)
        for task in spec.resource.spec.tasks:
            if task.path is None:
                continue
            found.add(display_path(task_file_path(spec.path.parent, task.path or "")))
            if (read := _readable_task_file(spec, task)) is not None:
                found |= {display_path(item.local_path().absolute()) for item in read.files
                          if item.value.endswith((".yaml", ".yml"))}
    return found


@rule
def task_gates_name_listed_tasks(ctx: RuleContext) -> Iterator[Problem]:
    for spec, evaluation in ctx.evaluations():
        gated = [(index, gate.metric) for index, gate in enumerate(evaluation.spec.gates)
                 if gate.metric.startswith(TASK_METRIC_PREFIX)]
        if not gated:
            continue
        names = task_names(spec, evaluation)
        for index, metric in gated:
            task, _, metric_name = metric.removeprefix(TASK_METRIC_PREFIX).partition("/")
            where = ("spec", "gates", index, "metric")
            if task not in names:
                listed = f"listed: {', '.join(names)}" if names else f"add {{name: {task}}} to tasks"
                yield problem(spec, ERROR, "gate-metric-not-computed",
                              f"gate on {metric}, but no task '{task}' is listed in tasks",
                              where, value=metric, hint=suggest(task, names) or listed)
            elif "," in metric_name:
                name, _, filter_name = metric_name.partition(",")
                recorded = name if filter_name == "none" else f"{name}.{filter_name}"
                yield problem(spec, ERROR, "gate-metric-not-computed",
                              f"lm-eval's '{metric_name}' is recorded as "
                              f"{TASK_METRIC_PREFIX}{task}/{recorded} (MLflow metric names hold "
                              "no commas)", where, value=metric,
                              hint=f"gate on {TASK_METRIC_PREFIX}{task}/{recorded}")


@rule
def task_files_are_readable(ctx: RuleContext) -> Iterator[Problem]:
    """A task YAML is part of what the Evaluation means, like a chat template: it must be there,
    parse, and stay inside the repository with the files it includes and loads its data from."""
    roots = FileRoots.of_project(ctx.specs.root, ctx.settings.policy.allowed_file_roots)
    for spec, evaluation in ctx.evaluations():
        for index, task in enumerate(evaluation.spec.tasks):
            if task.path is None:
                continue
            where = ("spec", "tasks", index, "path")
            path = task_file_path(spec.path.parent, task.path or "")
            try:
                resolve_inside(path, roots.all, roots.describe())
            except OutsideRoots as error:
                yield problem(spec, ERROR, "outside-repository", f"task YAML {error}", where,
                              value=task.path, hint=f"keep task YAMLs in the spec repository, or "
                                                    f"list the folder in {SETTING} of tuneops.yaml")
                continue
            if not path.is_file():
                yield problem(spec, ERROR, "missing-file", f"task YAML not found: {path}", where,
                              value=task.path, hint="the path is relative to the spec file's folder")
                continue
            try:
                read = read_task_file(path)
            except TaskFileError as error:
                yield _in_task_file(spec, ERROR, "task-file", error.message, index,
                                    Position(display_path(error.file), error.line, error.column))
                continue
            yield from _files_of(ctx, spec, index, read, roots)


def _files_of(ctx: RuleContext, spec: LoadedSpec, index: int, read: TaskFile,
              roots: FileRoots) -> Iterator[Problem]:
    for item in read.files:
        local = item.local_path()
        try:
            resolve_inside(local, roots.all, roots.describe())
        except OutsideRoots as error:
            yield _in_task_file(spec, ERROR, "outside-repository", f"{item.value}: {error}", index,
                                _where(item), hint=f"keep task data in the spec repository, or list "
                                                   f"the folder in {SETTING}")
            continue
        except (OSError, ValueError) as error:
            yield _in_task_file(spec, ERROR, "missing-file", f"{item.value} is not a usable path ({error})",
                                index, _where(item))
            continue
        if not local.exists():
            yield _in_task_file(spec, ERROR, "missing-file", f"not found: {local}", index, _where(item),
                                hint="paths in a task YAML are relative to the folder of the task YAML "
                                     "that the Evaluation names")
    setting = ctx.settings.policy.trust_remote_code
    if setting == "allow":
        return
    for item in read.functions:
        yield _in_task_file(spec, ERROR if setting == "deny" else WARNING, "trust-remote-code",
                            f"!function {item.value} runs Python from the repository in the evaluation job",
                            index, _where(item),
                            hint="allow it for the project with policy.trustRemoteCode: allow"
                            if setting == "warn" else "the project policy denies it")


def _where(item: Located) -> Position:
    return Position(display_path(item.file), item.line, item.column)


def _in_task_file(spec: LoadedSpec, severity: Severity, code: str, message: str, index: int,
                  position: Position, *, hint: str | None = None) -> Problem:
    """A problem inside a task YAML: its own file:line, and the spec field that names it."""
    return Problem(severity=severity, code=code, message=message, position=position,
                   path=format_path(("spec", "tasks", index, "path")), hint=hint, resource=str(spec.id))
