"""One Sweep step of an apply: suggest trials with Optuna, train and score each as an ordinary
FineTune and Evaluations, record each in MLflow, until maxTrials, the budget, or an interrupt.

Every trial is recorded (a child run of the sweep's run, with its parameters) before its job
starts, and its result when it ends, so an apply killed at any point resumes: recorded running
trials are run again with their recorded parameters (their jobs adopted if they still run,
their outputs reused if they finished), and new ones are suggested from the recorded ones
(sweeps/study.py). A trial whose FineTune or Evaluations were built before is not trained again:
its resources are named and fingerprinted by what they train.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from reconciler.apply.results import Outcome, StepResult
from reconciler.errors import TuneopsError
from reconciler.plan.plan import PlannedAction
from reconciler.specs.sweep import SweepResource
from reconciler.state import TrialRecord
from reconciler.sweeps.limits import in_space, refused_by_template, trial_limit
from reconciler.sweeps.trials import TrialResources, materialize
from reconciler.tracking import vocabulary as tracking

SYSTEM_CHUNK = 7000  # characters of the sampler's state per tag (MLflow keeps 8000 per value)
PARAM_LENGTH = 6000  # MLflow's limit on a param value
FAILED_IN_A_ROW = 3  # trials failing one after another: the cause is not the parameters; stop


class SweepRunner:
    # `executor` is the apply.executor.Executor that runs this step (it imports this module: Any).
    def __init__(self, executor: Any, planned: PlannedAction, sweep: SweepResource):
        self.executor, self.planned, self.sweep = executor, planned, sweep
        self.spec = sweep.spec
        self.store, self.experiment_id = executor.store, executor.experiment_id
        self.project = executor.project
        self.rid = planned.resource
        self._lock = threading.Lock()
        self._parent: str | None = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> StepResult:
        from reconciler.sweeps.study import ready, suggest

        recorded = self._read_trials()
        trials = {t.number: t for t in recorded if self._valid(t)}
        next_number = max((t.number for t in recorded), default=-1) + 1
        limit, parallel = trial_limit(self.spec), self.spec.parallel_trials
        spent = sum(t.gpu_hours or 0.0 for t in trials.values())
        budget = self.spec.budget.gpu_hours if self.spec.budget is not None else None
        retry = bool(getattr(self.executor.plan.options, "retry_failed", False))
        stopped_by, error = "", ""
        # Taken up first, in number order: trials an interrupted apply left running, failed ones
        # when told to retry them, and complete ones an Evaluation added since has not scored.
        resume = sorted((t for t in trials.values() if not t.done
                         or (retry and t.state == "failed" and t.fine_tune)
                         or (t.state == "complete" and self._unscored(t))), key=lambda t: t.number)
        in_flight: dict[Future, int] = {}
        failed_in_a_row = 0
        self.executor.reporter.say(f"  {self.rid}: {len(trials)} of {limit} trials recorded"
                                   + (f", {len(resume)} to take up" if resume else ""))
        with ThreadPoolExecutor(parallel, thread_name_prefix=f"sweep-{self.sweep.name}") as pool:
            while True:
                stopping = bool(error) or self.executor.stop_event.is_set()
                while resume and len(in_flight) < parallel and not stopping:
                    trial = resume.pop(0)
                    in_flight[pool.submit(self._run_trial, trial, retry)] = trial.number
                asking = (not stopped_by and not stopping and not resume and len(trials) < limit
                          and len(in_flight) < parallel)
                if asking and ready(sorted(trials.values(), key=lambda t: t.number), next_number, parallel):
                    ordered = sorted(trials.values(), key=lambda t: t.number)
                    suggestion = suggest(self.spec, next_number, ordered)
                    try:
                        resources = materialize(self.project.specs, self.project.inputs, self.sweep,
                                                suggestion.params, next_number)
                    except ValueError as refusal:  # values each valid alone, refused together
                        refused = self._record_new(next_number, suggestion, None, None)
                        why = f"the template refuses these values: {_first(refusal)}"
                        trials[refused.number] = self._finish(refused, "failed", message=why)
                        next_number += 1
                        continue
                    hours = self._gpu_hours(resources)
                    if budget is not None and hours is not None and spent + hours > budget:
                        stopped_by = (f"the budget: trial {next_number} would take the estimate to "
                                      f"{spent + hours:.3g} of {budget:g} GPU-hours")
                        self.executor.reporter.say(f"  {self.rid}: stopping before {stopped_by}")
                        continue
                    spent += hours or 0.0
                    trial = self._record_new(next_number, suggestion, resources, hours)
                    trials[trial.number] = trial
                    next_number += 1
                    in_flight[pool.submit(self._run_trial, trial, False)] = trial.number
                    continue
                if not in_flight:
                    break
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    in_flight.pop(future)
                    finished, problem = future.result()
                    trials[finished.number] = finished
                    error = error or problem
                    failed_in_a_row = failed_in_a_row + 1 if finished.state == "failed" else 0
                    if failed_in_a_row >= FAILED_IN_A_ROW and not stopped_by:
                        stopped_by = (f"{failed_in_a_row} trials failing in a row (last: "
                                      f"{finished.message}); fix the cause, then apply with --retry-failed")
        self._finish_parent(trials, stopped_by.removeprefix("the ") if stopped_by.startswith("the budget")
                            else "", budget)
        ordered = sorted(trials.values(), key=lambda t: t.number)
        counts = {state: sum(1 for t in ordered if t.state == state)
                  for state in ("complete", "pruned", "failed", "running")}
        text = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        best = self._best(ordered)
        best_text = (f"; best {self.spec.objective.metric} {best.value:.4g} (trial {best.number})"
                     if best is not None and best.value is not None else "")
        summary = f"{len(ordered)} of {limit} trials ({text or 'none'}){best_text}"
        if stopped_by:
            summary += f"; stopped by {stopped_by}"
        if error:
            return StepResult(self.rid, Outcome.FAILED, f"{error}; {summary}; the next apply takes the "
                                                         "unfinished trials up again")
        if self.executor.stop_event.is_set() or counts["running"]:
            return StepResult(self.rid, Outcome.SKIPPED, f"apply was interrupted: {summary}; the next "
                                                          "apply resumes the sweep")
        if not counts["complete"] or stopped_by.startswith(f"{FAILED_IN_A_ROW} trials"):
            return StepResult(self.rid, Outcome.FAILED, f"no trial completed: {summary}"
                              if not counts["complete"] else summary)
        return StepResult(self.rid, Outcome.DONE, summary)

    def _best(self, trials: list[TrialRecord]) -> TrialRecord | None:
        scored = [t for t in trials
                  if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
        if not scored:
            return None
        sign = -1.0 if self.spec.objective.direction == "maximize" else 1.0
        return min(scored, key=lambda t: (sign * (t.value or 0.0), t.number))

    def _valid(self, trial: TrialRecord) -> bool:
        """In the current search space, on the current template (else it is left out)."""
        if in_space(self.spec, trial):
            return False
        if refused_by_template(trial):
            return True
        try:
            resources = materialize(self.project.specs, self.project.inputs, self.sweep, trial.params)
        except ValueError:
            return False
        return resources.fine_tune.resource.name == trial.fine_tune

    # -- one trial --------------------------------------------------------------------------

    def _unscored(self, trial: TrialRecord) -> list[str]:
        """The sweep's Evaluations a complete trial has no run of (one added since it ran)."""
        resources = materialize(self.project.specs, self.project.inputs, self.sweep, trial.params)
        return [name for name in resources.evaluations
                if self.executor.lookup("Evaluation", resources.evaluation_id(name).name,
                                        resources.evaluation_fingerprint(name)) is None]

    def _run_trial(self, trial: TrialRecord, retry: bool) -> tuple[TrialRecord, str]:
        """(the trial as it ended, "" or a problem of the apply rather than of the trial). A job
        that ran and failed fails its trial; anything else (MLflow away, files not pushed)
        leaves it running for the next apply, so a broken setup does not use the trials up."""
        try:
            return self._train_and_score(trial, retry), ""
        except Exception as error:  # noqa: BLE001 - reported as the step's failure, trial kept
            return trial, f"trial {trial.number}: {error}" if isinstance(error, TuneopsError) \
                else f"trial {trial.number}: {type(error).__name__}: {error}"

    def _train_and_score(self, trial: TrialRecord, retry: bool) -> TrialRecord:
        resources = materialize(self.project.specs, self.project.inputs, self.sweep, trial.params,
                                trial.number)
        builder = self.executor.with_trials([resources])
        label = f"trial {trial.number} ({', '.join(f'{k}={v}' for k, v in sorted(trial.params.items()))})"
        self.executor.reporter.say(f"  {self.rid}: {label} as {resources.fine_tune_id}")
        fine_tune = resources.fine_tune_id
        pruned = self.executor.pruned(fine_tune, resources.fingerprint)  # before an interruption
        if pruned is not None:
            return self._finish(trial, "pruned", message=pruned)
        step = self.executor.build_step(fine_tune, resources.fingerprint, builder, retry_failed=retry,
                                        prepare=lambda job: self._with_pruning(job, trial))
        if step.outcome == Outcome.PRUNED:
            return self._finish(trial, "pruned", message=step.message)
        if step.outcome == Outcome.SKIPPED:
            return trial  # interrupted: still running, resumed by the next apply
        if step.outcome != Outcome.DONE:
            return self._finish(trial, "failed", message=step.message)
        value: float | None = None
        for evaluation in resources.evaluations:
            eid = resources.evaluation_id(evaluation)
            scored = self.executor.build_step(eid, resources.evaluation_fingerprint(evaluation), builder,
                                              retry_failed=retry)
            if scored.outcome == Outcome.SKIPPED:
                return trial
            if scored.outcome != Outcome.DONE:
                return self._finish(trial, "failed", message=f"{evaluation}: {scored.message}")
            if evaluation == self.spec.objective.evaluation:
                fingerprint = resources.evaluation_fingerprint(evaluation)
                run = self.executor.lookup("Evaluation", eid.name, fingerprint)
                value = run.metrics.get(self.spec.objective.metric) if run is not None else None
        if value is None:
            return self._finish(trial, "failed", message=f"{self.spec.objective.evaluation} recorded no "
                                                         f"{self.spec.objective.metric}")
        return self._finish(trial, "complete", value=value)

    def _with_pruning(self, job: Any, trial: TrialRecord) -> Any:
        """The trial's job file with median pruning against the trials complete so far."""
        pruning = self.spec.pruning
        if pruning is None:
            return job
        from reconciler.jobs.jobfile import PruningJob

        curves = tuple(curve for curve in (self._curve(t) for t in self._complete_trials()) if curve)
        return job.model_copy(update={"pruning": PruningJob(
            metric=pruning.metric, direction=pruning.direction, min_steps=pruning.min_steps,
            min_trials=pruning.min_trials, history=curves, trial=f"{self.sweep.name} #{trial.number}")})

    def _complete_trials(self) -> list[TrialRecord]:
        return [t for t in self._read_trials() if t.state == "complete" and self._valid(t)]

    def _curve(self, trial: TrialRecord) -> tuple[tuple[int, float], ...]:
        for record in self._fine_tune_runs(trial.fine_tune, trial.fingerprint):
            if record.tags.get(tracking.TAG_STATUS) != tracking.STATUS_COMPLETE:
                continue
            try:
                points = json.loads(record.tags.get(tracking.TAG_TRIAL_CURVE, "[]"))
                return tuple((int(step), float(value)) for step, value in points)
            except (ValueError, TypeError):
                return ()
        return ()

    def _fine_tune_runs(self, name: str, fingerprint: str) -> list[Any]:
        from reconciler.tracking.filters import tag_equals

        query = " and ".join((tag_equals(tracking.TAG_KIND, "FineTune"), tag_equals(tracking.TAG_NAME, name),
                              tag_equals(tracking.TAG_FINGERPRINT, fingerprint)))
        return self.store.search_runs(self.experiment_id, query, page_size=20)

    def _gpu_hours(self, resources: TrialResources) -> float | None:
        """The planner's GPU-hours for this trial (None on CPU, or when it cannot tell)."""
        estimate = self.executor.estimate(resources)
        return estimate.gpu_hours if estimate is not None else None

    # -- MLflow records -----------------------------------------------------------------------

    def _read_trials(self) -> list[TrialRecord]:
        from reconciler.tracking.actual_state import read_trials

        return list(read_trials(self.store, self.experiment_id, self.sweep.name).get(self.sweep.name, ()))

    def _parent_run(self) -> str:
        with self._lock:
            if self._parent is not None:
                return self._parent
            from reconciler.tracking.filters import tag_equals

            query = " and ".join((tag_equals(tracking.TAG_KIND, tracking.KIND_SWEEP),
                                  tag_equals(tracking.TAG_NAME, self.sweep.name)))
            found = self.store.search_runs(self.experiment_id, query, page_size=1)
            self._parent = found[0].run_id if found else self.store.create_run(
                self.experiment_id, self.sweep.name,
                {tracking.TAG_KIND: tracking.KIND_SWEEP, tracking.TAG_NAME: self.sweep.name,
                 "mlflow.runName": self.sweep.name})
            return self._parent

    def _record_new(self, number: int, suggestion: Any, resources: TrialResources | None,
                    gpu_hours: float | None) -> TrialRecord:
        parent = self._parent_run()
        system = json.dumps(suggestion.system_attrs, sort_keys=True, separators=(",", ":"))
        tags = {tracking.TAG_KIND: tracking.KIND_TRIAL, tracking.TAG_NAME: self.sweep.name,
                tracking.TAG_PARENT_RUN: parent, tracking.TAG_TRIAL_NUMBER: str(number),
                tracking.TAG_TRIAL_FINE_TUNE: resources.fine_tune_id.name if resources else "",
                tracking.TAG_FINGERPRINT: resources.fingerprint if resources else "",
                tracking.TAG_TRIAL_PARAMS: json.dumps(suggestion.params, sort_keys=True),
                tracking.TAG_TRIAL_DISTRIBUTIONS: _within_a_tag(json.dumps(suggestion.distributions,
                                                                           sort_keys=True)),
                tracking.TAG_TRIAL_STATE: "running"}
        if gpu_hours is not None:
            tags[tracking.TAG_TRIAL_GPU_HOURS] = repr(gpu_hours)
        if system != "{}":
            for index in range(0, len(system), SYSTEM_CHUNK):
                tags[f"{tracking.TAG_TRIAL_SYSTEM_PREFIX}{index // SYSTEM_CHUNK}"] = \
                    system[index:index + SYSTEM_CHUNK]
        run_id = self.store.create_run(self.experiment_id, f"{self.sweep.name}-trial-{number}", tags)
        self.store.log_batch(run_id, params={
            path: (json.dumps(value) if isinstance(value, str) else str(value))[:PARAM_LENGTH]
            for path, value in suggestion.params.items()})
        name, fingerprint = (resources.fine_tune_id.name, resources.fingerprint) if resources else ("", "")
        return TrialRecord(self.sweep.name, number, run_id, name, fingerprint, suggestion.params,
                           suggestion.distributions, "running", started_at=time.time(),
                           system_attrs=suggestion.system_attrs, gpu_hours=gpu_hours)

    def _finish(self, trial: TrialRecord, state: str, *, value: float | None = None,
                message: str = "") -> TrialRecord:
        tags = {tracking.TAG_TRIAL_STATE: state, tracking.TAG_TRIAL_MESSAGE: message[:500]}
        metrics = {}
        if value is not None:
            tags[tracking.TAG_TRIAL_VALUE] = repr(value)
            metrics = {"objective": value, self.spec.objective.metric: value}
        self.store.log_batch(trial.run_id, tags=tags, metrics=metrics)
        self.store.end_run(trial.run_id, {"complete": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED"))
        shown = f"{self.spec.objective.metric} {value:.4g}" if value is not None else message
        self.executor.reporter.say(f"  {self.rid}: trial {trial.number} {state}"
                                   + (f": {shown}" if shown else ""))
        return dataclasses.replace(trial, state=state, value=value, message=message, finished_at=time.time())

    def _finish_parent(self, trials: dict[int, TrialRecord], budget_stop: str, budget: float | None) -> None:
        """The sweep's run: its best trial, and whether the budget stopped it (the plan reads that,
        so a sweep the budget stopped is up to date until the budget changes)."""
        if self._parent is None and not trials:
            return
        best = self._best(sorted(trials.values(), key=lambda t: t.number))
        parent = self._parent_run()
        metrics = {f"best_{self.spec.objective.metric}": best.value} \
            if best is not None and best.value is not None else {}
        tags = {"tuneops.sweep.best_trial": str(best.number)} if best is not None else {}
        tags[tracking.TAG_SWEEP_STOPPED] = budget_stop
        tags[tracking.TAG_SWEEP_BUDGET] = repr(budget) if budget_stop and budget is not None else ""
        self.store.log_batch(parent, tags=tags, metrics=metrics)
        if all(t.done for t in trials.values()):
            self.store.end_run(parent, "FINISHED")



def _first(error: ValueError) -> str:
    """A validation error's first problem, on one line (pydantic's text puts it on lines 2-3)."""
    lines = [line.strip() for line in str(error).splitlines()]
    return " ".join(lines[1:3]) if len(lines) > 2 else " ".join(lines)


def _within_a_tag(text: str) -> str:
    """The search space as the trial saw it, for people reading the run; the study is rebuilt
    from the current spec's, so a space too long for one tag is left out ("{}")."""
    return text if len(text) <= tracking.MAX_TAG_LENGTH else "{}"
