"""Named benchmarks: an Evaluation's `tasks`, run by lm-evaluation-harness on the loaded model.

lm-eval does the work with its own task machinery (TaskManager, task YAMLs, the metrics each
task defines); this module hands it the model the job already loaded (adapter applied), fixes
its seeds, keeps its output out of the job log, and names each result `task/<task>/<metric>`
(`<metric>.<filter>` for a filter other than lm-eval's `none`: MLflow names hold no commas).

Everything a user can get wrong (lm-eval not installed, a task it does not know, a dataset
missing from the Hugging Face cache offline, a task YAML outside the repository) is checked for
every task before any is scored, and said in one line as an EvaluationError.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import PermanentError
from reconciler.jobs.jobfile import TaskFileRef
from reconciler.specs.confinement import OutsideRoots, resolve_for_job
from reconciler.specs.evaluation import TASK_METRIC_PREFIX, BenchmarkTask
from reconciler.specs.schema_errors import suggest
from reconciler.specs.task_files import TaskFileError, read_task_file

if TYPE_CHECKING:
    from reconciler.runtime.paired import RowScores

BATCH_SIZE = 8  # fixed, not "auto": the same model gives the same numbers on any machine
SEED = 1234
BOOTSTRAP_ITERATIONS = 1000  # lm-eval's standard errors of non-mean metrics; unused in gates
_QUIET_LOGGERS = ("lm_eval", "lm-eval", "datasets", "transformers", "accelerate", "evaluate")


class BenchmarkError(PermanentError, ValueError):
    """A named benchmark that cannot run as specified (as evaluate.EvaluationError, which cannot be
    imported here without a circle): the message names the task and the fix."""


@dataclass(frozen=True)
class BenchmarkResults:
    """`task/<task>/<metric>` -> value, and each metric's per-document values (in document
    order, the same documents for every model) for paired comparisons."""

    metrics: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def row_scores(self) -> dict[str, RowScores]:
        """Per-document scores for paired comparisons, of the metrics that are the mean of them
        (acc, acc_norm, exact_match...); a corpus-level metric (BLEU, a perplexity) is left out,
        and a comparison gate on it fails as not computed per row."""
        import numpy as np

        from reconciler.runtime.paired import RowScores, mean_of_rows

        found = {}
        for name, values in self.samples.items():
            value = self.metrics.get(name)
            if values and value is not None and math.isclose(sum(values) / len(values), value,
                                                             rel_tol=1e-9, abs_tol=1e-12):
                found[name] = RowScores(name, np.asarray(values, dtype=np.float64)[:, None], mean_of_rows)
        return found


@dataclass(frozen=True)
class _Prepared:
    spec: BenchmarkTask
    name: str  # what lm-eval calls it
    manager: Any  # lm_eval.tasks.TaskManager (lm-eval is imported lazily)
    folder: Path | None  # a task YAML's folder: its relative data files are read from there


def run_tasks(model: Any, tokenizer: Any, tasks: Sequence[BenchmarkTask],
              task_files: Sequence[TaskFileRef] = ()) -> BenchmarkResults:
    """Score `model` on every task; `task_files` says where the job finds each `path` task."""
    if not tasks:
        return BenchmarkResults()
    with _quiet():
        prepared = _prepare(tasks, task_files)
        for item in prepared:  # every dataset, before any scoring: a missing one fails fast
            _load(item)
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=BATCH_SIZE, device=str(model.device))
        results = BenchmarkResults()
        for item in prepared:
            found = _evaluate(lm, item)
            results.metrics.update(found.metrics)
            results.samples.update(found.samples)
    for item in prepared:
        shown = ", ".join(f"{name.rpartition('/')[2]} {value:.4g}" for name, value in results.metrics.items()
                          if name.startswith(f"{TASK_METRIC_PREFIX}{item.name}/"))
        print(f"task {item.name}: {shown or 'no metrics'}", flush=True)
    return results


def _prepare(tasks: Sequence[BenchmarkTask], task_files: Sequence[TaskFileRef]) -> list[_Prepared]:
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise BenchmarkError("named benchmarks (tasks) need lm-evaluation-harness where the job runs: "
                             "pip install 'tuneops[eval]'") from None
    locations = {ref.path: ref for ref in task_files}
    defaults = None
    prepared = []
    for task in tasks:
        if task.name is not None:
            if defaults is None:
                defaults = TaskManager()
            if task.name not in defaults.all_tasks:
                close = suggest(task.name, defaults.all_tasks)
                raise BenchmarkError(f"task '{task.name}': lm-evaluation-harness has no task, group or "
                                     f"tag of that name{f' ({close})' if close else ''}")
            prepared.append(_Prepared(task, task.name, defaults, None))
            continue
        ref = locations.get(task.path or "")
        if ref is None:
            raise BenchmarkError(f"task {task.path}: the job file does not say where it is "
                                 "(written by an older tuneops? plan and apply again)")
        path = _confined(task, ref)
        try:
            name = read_task_file(path).names[0]
        except TaskFileError as error:
            raise BenchmarkError(f"task {task.path}: {error.file}:{error.line}: {error.message}") from None
        manager = TaskManager(include_path=str(path.parent), include_defaults=False)
        if name not in manager.all_tasks:
            raise BenchmarkError(f"task {task.path}: lm-evaluation-harness does not read it as task '{name}'")
        prepared.append(_Prepared(task, name, manager, path.parent))
    return prepared


def _confined(task: BenchmarkTask, ref: TaskFileRef) -> Path:
    """The task YAML, after checking it and every file it reads against the job's roots."""
    try:
        path = resolve_for_job(Path(ref.location.removeprefix("file://")))
        for file in ref.files:
            resolve_for_job(Path(file.removeprefix("file://")))
    except OutsideRoots as error:
        raise BenchmarkError(f"task {task.path}: {error}") from None
    return path


@contextlib.contextmanager
def _in_folder(folder: Path | None) -> Iterator[None]:
    """Relative `data_files` of a task YAML are relative to its folder, as datasets reads them
    from the working directory."""
    if folder is None:
        yield
        return
    with contextlib.chdir(folder):
        yield


def _load(item: _Prepared) -> None:
    try:
        with _in_folder(item.folder):
            item.manager.load([item.name])
    except Exception as error:  # noqa: BLE001 - lm-eval and datasets raise many kinds; each is one line here
        raise BenchmarkError(f"task '{item.name}': cannot load its data: {_first_line(error)}"
                             f"{_offline_hint()}") from None


def _evaluate(lm: Any, item: _Prepared) -> BenchmarkResults:
    from lm_eval import simple_evaluate

    with _in_folder(item.folder):
        output = simple_evaluate(
            model=lm, tasks=[item.name], task_manager=item.manager, num_fewshot=item.spec.num_fewshot,
            limit=item.spec.limit, log_samples=True, bootstrap_iters=BOOTSTRAP_ITERATIONS,
            random_seed=0, numpy_random_seed=SEED, torch_random_seed=SEED, fewshot_random_seed=SEED,
            verbosity="ERROR")
    if output is None:  # a non-zero rank of a distributed run: not how a job runs it
        raise BenchmarkError(f"task '{item.name}': lm-evaluation-harness returned no results")
    return BenchmarkResults(_metrics(output["results"]), _samples(output.get("samples") or {}))


def metric_name(task: str, key: str) -> str | None:
    """`task/<task>/<metric>` for lm-eval's result key `<metric>,<filter>`; None for what is
    not a metric (its alias, sample count, standard errors)."""
    metric, comma, filter_name = key.partition(",")
    if not comma or metric.endswith("_stderr"):
        return None
    suffix = "" if filter_name == "none" else f".{filter_name}"
    return f"{TASK_METRIC_PREFIX}{task}/{metric}{suffix}"


def _metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    found = {}
    for task, values in results.items():
        for key, value in values.items():
            name = metric_name(task, key)
            if name is not None and isinstance(value, int | float) and not isinstance(value, bool):
                found[name] = float(value)
    return found


def _samples(samples: dict[str, list[dict[str, Any]]]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for task, rows in samples.items():
        for row in sorted(rows, key=lambda row: row.get("doc_id", 0)):
            for metric in row.get("metrics") or ():
                name = metric_name(task, f"{metric},{row.get('filter', 'none')}")
                value = row.get(metric)
                if name is not None and isinstance(value, int | float) and math.isfinite(value):
                    found.setdefault(name, []).append(float(value))
    return found


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval's progress bars and info logs stay out of the job log: one line per task is
    printed instead. Warnings and errors still show."""
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # tqdm writes its bars to sys.stderr
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        sys.stderr.flush()


def _offline_hint() -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or \
            os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return " (offline: put the dataset in the Hugging Face cache where the job runs, or use a task " \
               "YAML with local data_files)"
    return ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
