"""Execute a Plan through a Backend: dependency order, independent branches in parallel.

Each step is idempotent on its fingerprint: a job already running is waited on (adopted), a
finished one is read back from MLflow, never rerun. A failure stops only what depends on it.
Deployments start only after their FineTune's required evaluations passed; otherwise the
version already serving keeps serving and the registry alias stays where it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.actor import who_applies
from reconciler.apply.results import NOT_DONE, ApplyResult, Outcome, StepResult
from reconciler.errors import PermanentError
from reconciler.jobs.builder import JobBuilder, JobContext
from reconciler.plan.plan import Action, Plan, PlannedAction
from reconciler.specs.base import ResourceId
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.finetune import FineTuneResource
from reconciler.state import STOPPED, BuiltRun, built_run_from
from reconciler.tracking import vocabulary as tracking

if TYPE_CHECKING:
    from reconciler.backends.base import Backend
    from reconciler.jobs.jobfile import GitOrigin, JobFile, MlflowTarget, ModelVersionRef
    from reconciler.state import ActualState
    from reconciler.sweeps.trials import TrialResources
    from reconciler.tracking.store import TrackingStore

PROGRESS_EVERY_S = 10.0  # how often a running fine-tune's progress is read from MLflow
WORK = frozenset({Action.CREATE, Action.REBUILD, Action.RETRY, Action.WAIT, Action.UPDATE, Action.DELETE})


class PruneRefused(PermanentError, RuntimeError):
    """A prune that would delete more than allowed: refused unless forced."""


class SourcesNotPublished(PermanentError, RuntimeError):
    """A job would check out spec-repository files that differ from, or are missing at, the
    remote's copy of the commit: it would train on other bytes than the plan fingerprinted."""


class Reporter:
    """What the user sees while an apply runs: a line per event, and for long steps a line every
    `heartbeat` seconds with the time so far (and a fine-tune's progress and ETA)."""

    def __init__(self, echo: Callable[[str], None] = print, heartbeat: float = 60.0):
        self._echo = echo
        self._lock = threading.Lock()
        self.heartbeat = heartbeat
        self.progress_of: Callable[[ResourceId, str], str] = lambda rid, fingerprint: ""
        self._running: dict[ResourceId, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def say(self, line: str) -> None:
        with self._lock:
            self._echo(line)

    def started(self, rid: ResourceId, what: str, fingerprint: str = "") -> None:
        with self._lock:
            self._running.setdefault(rid, (time.monotonic(), fingerprint))
        self.say(f"  {rid}: {what}")

    def finished(self, result: StepResult, seconds: float) -> None:
        with self._lock:
            self._running.pop(result.resource, None)
        mark = "FAILED" if result.outcome == Outcome.FAILED else result.outcome
        self.say(f"  {result.resource}: {mark} after {_duration(seconds)}"
                 + (f": {result.message}" if result.message else ""))

    def running_lines(self) -> list[str]:
        with self._lock:
            running = list(self._running.items())
        lines = []
        for rid, (since, fingerprint) in running:
            progress = self.progress_of(rid, fingerprint) if fingerprint else ""
            lines.append(f"  {rid}: running for {_duration(time.monotonic() - since)}"
                         + (f", {progress}" if progress else ""))
        return lines

    def __enter__(self) -> Reporter:
        if self.heartbeat > 0:
            self._thread = threading.Thread(target=self._beat, name="apply-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            for line in self.running_lines():
                self.say(line)


class LiveReporter(Reporter):
    """For a terminal: a rich spinner per running step with its elapsed time and progress,
    above which the event lines scroll."""

    def __init__(self, heartbeat: float = 2.0):
        from rich.console import Console
        from rich.live import Live

        self._console = Console()
        self._live = Live(console=self._console, refresh_per_second=4, transient=True)
        super().__init__(lambda line: self._live.console.print(line, highlight=False, markup=False),
                         heartbeat)

    def __enter__(self) -> LiveReporter:
        self._live.start()
        return super().__enter__()  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._live.stop()

    def _beat(self) -> None:
        from rich.spinner import Spinner
        from rich.table import Table

        while not self._stop.wait(self.heartbeat):
            table = Table.grid()
            for line in self.running_lines():
                table.add_row(Spinner("dots", text=line.strip()))
            self._live.update(table)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def check_prune(plan: Plan, max_deletes: int, force: bool, live_objects: int) -> None:
    """Refuse a prune that deletes more than `max_deletes` objects, or every live object."""
    deletes = plan.deletes()
    if not deletes or force:
        return
    if len(deletes) > max_deletes:
        raise PruneRefused(f"the plan deletes {len(deletes)} live objects, more than prune.maxDeletes "
                           f"({max_deletes}); check that the spec folder is the right one, then pass "
                           "--force to delete them anyway")
    if len(deletes) >= live_objects:
        raise PruneRefused(f"the plan stops everything that runs ({len(deletes)} live object(s)): "
                           "refusing, in case the spec folder is not the right one (pass --force if "
                           "that is what you want)")


class Executor:
    # `project` is a reconciler.project.Project, a layer above this one: typed Any, not imported.
    def __init__(self, project: Any, plan: Plan, backend: Backend, store: TrackingStore, git: GitOrigin,
                 reporter: Reporter, max_parallel: int = 1, max_attempts: int = 2,
                 stop: threading.Event | None = None, state: ActualState | None = None,
                 applied_by: str | None = None):
        self.project, self.plan, self.backend, self.store = project, plan, backend, store
        self.git, self.applied_by = git, applied_by or who_applies()
        self.state = state  # what the plan read: the planner's row counts for a sweep's budget
        self.reporter = reporter
        self.max_parallel = max(1, max_parallel)
        self._slots = threading.Semaphore(self.max_parallel)  # jobs at once, trials included
        self.max_attempts = max_attempts
        self.stop_event = stop or threading.Event()
        self.experiment_id = store.ensure_experiment(project.experiment)
        if project.settings.backend == "kubernetes":  # paths and URIs as pods see them
            from reconciler.backends.kubernetes.manifests import cluster_context

            context = cluster_context(project.specs, git, _repo_root(project))
        else:
            context = JobContext(storage_root=project.storage_root,
                                 mlflow=_mlflow_target(project), git=git, repo_root=_repo_root(project))
        self._runs: dict[tuple[str, str, str], BuiltRun] = {}
        self._runs_lock = threading.Lock()
        self.builder = JobBuilder(project.specs, project.inputs, context, self.lookup, self.serving,
                                  self.server_url)
        self._trials: dict[str, TrialResources] = {}  # every sweep trial this apply materialized
        self._sizing: tuple[Any, Any] | None = None
        self._build_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._progress: dict[str, tuple[float, str]] = {}
        reporter.progress_of = self.progress_of

    def progress_of(self, rid: ResourceId, fingerprint: str) -> str:
        """A running fine-tune's share done and ETA, from the `progress` metric it logs."""
        if rid.kind != "FineTune":
            return ""
        cached = self._progress.get(fingerprint)
        if cached is not None and time.monotonic() - cached[0] < PROGRESS_EVERY_S:
            return cached[1]
        text = self._read_progress(rid, fingerprint)
        self._progress[fingerprint] = (time.monotonic(), text)
        return text

    def _read_progress(self, rid: ResourceId, fingerprint: str) -> str:
        from reconciler.status import progress_text
        from reconciler.tracking.filters import tag_equals

        query = " and ".join((tag_equals(tracking.TAG_KIND, rid.kind),
                              tag_equals(tracking.TAG_FINGERPRINT, fingerprint)))
        try:
            runs = self.store.search_runs(self.experiment_id, query, page_size=5)
        except Exception:  # progress is a nicety; the job's outcome is what counts
            return ""
        for record in runs:
            if record.status == "RUNNING":
                return progress_text(record.metrics.get("progress"), record.metric_steps.get("progress"),
                                     record.start_time / 1000, time.time())
        return ""

    # -- MLflow reads ------------------------------------------------------------------------

    def lookup(self, kind: str, name: str, fingerprint: str) -> BuiltRun | None:
        """The complete run of a resource at a fingerprint, read fresh (and then remembered)."""
        key = (kind, name, fingerprint)
        with self._runs_lock:
            if key in self._runs:
                return self._runs[key]
        from reconciler.tracking.filters import tag_equals

        query = " and ".join((tag_equals(tracking.TAG_KIND, kind), tag_equals(tracking.TAG_NAME, name),
                              tag_equals(tracking.TAG_FINGERPRINT, fingerprint),
                              tag_equals(tracking.TAG_STATUS, tracking.STATUS_COMPLETE)))
        for record in self.store.search_runs(self.experiment_id, query, page_size=10):
            run = built_run_from(record)
            if run is not None:
                with self._runs_lock:
                    self._runs[key] = run
                return run
        return None

    def pruned(self, rid: ResourceId, fingerprint: str) -> str | None:
        """Why a sweep trial's fine-tune at this fingerprint was pruned, if it was."""
        if rid.kind != "FineTune":
            return None
        from reconciler.tracking.filters import tag_equals

        query = " and ".join((tag_equals(tracking.TAG_KIND, rid.kind),
                              tag_equals(tracking.TAG_NAME, rid.name),
                              tag_equals(tracking.TAG_FINGERPRINT, fingerprint),
                              tag_equals(tracking.TAG_STATUS, tracking.STATUS_PRUNED)))
        for record in self.store.search_runs(self.experiment_id, query, page_size=1):
            return record.tags.get(tracking.TAG_PRUNED_REASON) or "pruned"
        return None

    def serving(self, evaluation: str) -> tuple[str, ModelVersionRef] | None:
        """The champion of a `notWorseThan: serving` gate or a pairwise judge: the Deployment that
        requires `evaluation` and could serve what it scores, and the version it serves now. A
        sweep trial's copy of an Evaluation compares with what the Deployments of that sweep serve,
        the original with what those of its FineTune serve. None while nothing serves."""
        from reconciler.specs.evaluation import EvaluationResource
        from reconciler.tracking.filters import tag_equals

        sweep = None
        with self._runs_lock:  # a sweep trial's copy of an Evaluation stands for the original
            copies = {copy.id.name: (original, trial.fine_tune_id.name) for trial in self._trials.values()
                      for original, copy in trial.evaluations.items()}
        if evaluation in copies:
            evaluation, trial_name = copies[evaluation]
            sweep = self._sweep_of(trial_name)
        scored = self.project.specs.resource(ResourceId("Evaluation", evaluation), EvaluationResource)
        servers = None
        for name in sorted(self.project.specs.names("Deployment")):
            deployment = self.project.specs.resource(ResourceId("Deployment", name), DeploymentResource)
            if deployment is None or evaluation not in deployment.spec.requires:
                continue
            model = deployment.spec.model
            if sweep is not None or model.sweep is not None:
                could_serve = model.sweep == sweep
            else:
                could_serve = scored is None or model.fine_tune == scored.spec.model.fine_tune
            if not could_serve:  # what it serves is not what this Evaluation scores
                continue
            fine_tune = model.fine_tune
            if fine_tune is not None and self.project.specs.resource(
                    ResourceId("FineTune", fine_tune), FineTuneResource) is None:
                continue
            servers = servers or self.backend.observe()
            live = servers.server(name)
            if live is None or live.phase != "serving" or not live.model_version:
                continue
            # A sweep serves one of its trials' FineTunes: the registered version names it alone.
            query = " and ".join((tag_equals(tracking.TAG_KIND, "FineTune"),
                                  *([tag_equals(tracking.TAG_NAME, fine_tune)] if fine_tune else []),
                                  tag_equals(tracking.TAG_REGISTERED_VERSION, live.model_version),
                                  tag_equals(tracking.TAG_STATUS, tracking.STATUS_COMPLETE)))
            for record in self.store.search_runs(self.experiment_id, query, page_size=5):
                run = built_run_from(record)
                if run is not None:
                    return name, self._served_model(name, run, model.sweep)
        return None

    def _sweep_of(self, trial: str) -> str | None:
        from reconciler.specs.sweep import is_trial_name

        return next((name for name in self.project.specs.names("Sweep") if is_trial_name(trial, name)), None)

    def _served_model(self, deployment: str, run: BuiltRun, sweep: str | None) -> ModelVersionRef:
        """The served FineTune run as a job names its model. A sweep's trial is no spec: its
        FineTune is rebuilt from the parameters its sweep recorded for it (the template may have
        changed since it trained, so its name stays the run's)."""
        fine_tune = ResourceId("FineTune", run.name)
        if sweep is None or self.project.specs.get(fine_tune) is not None:
            return self.builder.model_version(fine_tune, run)
        from reconciler.specs.sweep import SweepResource
        from reconciler.sweeps.trials import materialize
        from reconciler.tracking.actual_state import read_trials

        resource = self.project.specs.resource(ResourceId("Sweep", sweep), SweepResource)
        assert resource is not None, sweep
        record = next((t for t in read_trials(self.store, self.experiment_id, sweep).get(sweep, ())
                       if t.fine_tune == run.name), None)
        if record is None:
            raise LookupError(f"Deployment/{deployment} serves {run.name}, of which Sweep/{sweep} has no "
                              "trial record in MLflow: it cannot be compared with")
        trial = materialize(self.project.specs, self.project.inputs, resource, record.params)
        served = self.with_trials([trial]).model_version(trial.fine_tune_id, run)
        return served.model_copy(update={"fine_tune": run.name})

    def server_url(self, deployment: str) -> str | None:
        """Where a Deployment's server answers now (None while it serves nothing): a judge's."""
        live = self.backend.observe().server(deployment)
        return live.url if live is not None and live.phase == "serving" else None

    # -- scheduling --------------------------------------------------------------------------

    def run(self) -> ApplyResult:
        result = ApplyResult()
        todo = {a.resource: a for a in self.plan.actions if a.action in WORK}
        for planned in [a for a in todo.values() if a.action == Action.DELETE]:
            result.steps.append(self._timed(planned, self._delete))
            del todo[planned.resource]
        outcomes: dict[ResourceId, Outcome] = {}
        running: dict[Future, ResourceId] = {}
        # A Sweep's step only schedules its trials, which take job slots: it takes no slot itself.
        sweeps = sum(1 for planned in todo.values() if planned.resource.kind == "Sweep")
        with ThreadPoolExecutor(self.max_parallel + sweeps, thread_name_prefix="apply") as pool:
            while todo or running:
                for rid, planned in list(todo.items()):
                    deps = [d for d in planned.depends_on if d in todo or d in outcomes
                            or any(r == d for r in running.values())]
                    broken = [d for d in deps if outcomes.get(d) in NOT_DONE]
                    if broken:
                        del todo[rid]
                        step = StepResult(rid, Outcome.SKIPPED, f"not started: {', '.join(map(str, broken))} "
                                                          f"{outcomes[broken[0]]}")
                        self.reporter.finished(step, 0)
                        result.steps.append(step)
                        outcomes[rid] = Outcome.SKIPPED
                        continue
                    if all(outcomes.get(d) == Outcome.DONE for d in deps) and not self.stop_event.is_set():
                        del todo[rid]
                        running[pool.submit(self._timed, planned, self._step)] = rid
                if not running:
                    # Nothing runs and nothing more can start: interrupted (or, defensively, a
                    # dependency that can never finish). Say so rather than spin.
                    why = ("apply was interrupted" if self.stop_event.is_set()
                           else "its dependencies did not finish")
                    for rid in list(todo):
                        result.steps.append(StepResult(rid, Outcome.SKIPPED, why))
                    todo.clear()
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    rid = running.pop(future)
                    step = future.result()
                    outcomes[rid] = step.outcome
                    result.steps.append(step)
        return result

    def _timed(self, planned: PlannedAction, call: Callable[[PlannedAction], StepResult]) -> StepResult:
        started = time.monotonic()
        try:
            step = call(planned)
        except Exception as error:  # one failed step must not sink the others
            step = StepResult(planned.resource, Outcome.FAILED, f"{type(error).__name__}: {error}"
                              if not isinstance(error, RuntimeError | LookupError | OSError) else str(error))
        self.reporter.finished(step, time.monotonic() - started)
        return step

    def _step(self, planned: PlannedAction) -> StepResult:
        if planned.resource.kind == "Deployment":
            return self._deploy(planned)
        if planned.resource.kind == "Sweep":
            from reconciler.apply.sweep import SweepRunner
            from reconciler.specs.sweep import SweepResource

            sweep = self.project.specs.resource(planned.resource, SweepResource)
            assert sweep is not None
            return SweepRunner(self, planned, sweep).run()
        return self._job(planned)

    # -- sweep trials ------------------------------------------------------------------------

    def with_trials(self, trials: list[TrialResources]) -> JobBuilder:
        """A job builder that also knows these sweep trials' FineTunes and Evaluations."""
        from reconciler.sweeps.trials import with_trials

        with self._runs_lock:
            for trial in trials:
                self._trials[trial.fine_tune_id.name] = trial
            known = list(self._trials.values())
        specs, inputs = with_trials(self.project.specs, self.project.inputs, known)
        return JobBuilder(specs, inputs, self.builder.context, self.lookup, self.serving, self.server_url)

    def build_step(self, rid: ResourceId, fingerprint: str, builder: JobBuilder,
                   prepare: Callable[[JobFile], JobFile] | None = None, retry_failed: bool = False,
                   ) -> StepResult:
        """Build one resource the plan did not list (a sweep trial's), as the plan would have:
        read back when built, adopted while its job runs, retried while attempts are left. One
        at a time per resource: two trials that drew the same parameters train it once."""
        with self._runs_lock:
            lock = self._build_locks.setdefault((rid.kind, rid.name, fingerprint), threading.Lock())
        with lock:
            return self._build_step(rid, fingerprint, builder, prepare, retry_failed)

    def _build_step(self, rid: ResourceId, fingerprint: str, builder: JobBuilder,
                    prepare: Callable[[JobFile], JobFile] | None, retry_failed: bool) -> StepResult:
        if self.lookup(rid.kind, rid.name, fingerprint) is not None:
            return StepResult(rid, Outcome.DONE, "built before")
        observed = self.backend.observe().job(rid.kind, rid.name, fingerprint)
        action, attempt = Action.CREATE, 0
        if observed is not None and observed.is_live:
            action = Action.WAIT
        elif observed is not None and observed.phase == "failed" and observed.message != STOPPED:
            if retry_failed:
                action, attempt = Action.RETRY, 1
            elif observed.attempts >= self.max_attempts:
                return StepResult(rid, Outcome.FAILED, f"failed {observed.attempts} attempts: "
                                                      f"{observed.message or 'see its log'}")
            action, attempt = Action.RETRY, observed.attempts + 1
        planned = PlannedAction(rid, action, fingerprint, attempt=attempt)
        return self._timed(planned, lambda p: self._job(p, builder=builder, prepare=prepare))

    def estimate(self, trial: TrialResources) -> Any:
        """The planner's estimate of a trial's FineTune (None when it cannot be made)."""
        from reconciler.sizing import architectures
        from reconciler.sizing.dataset_rows import train_rows
        from reconciler.sizing.estimates import estimate_fine_tune

        if self._sizing is None:
            specs = self.project.specs
            self._sizing = (architectures.architectures(specs, fetch=self.state is not None),
                            train_rows(specs, self.project.inputs, self.state))
        found_architectures, rows = self._sizing
        specs, _ = self._trial_specs([trial])
        resource = trial.fine_tune.resource
        return estimate_fine_tune(specs, resource, found_architectures, rows, self.project.settings.planner)

    def _trial_specs(self, trials: list[TrialResources]) -> tuple[Any, Any]:
        from reconciler.sweeps.trials import with_trials

        return with_trials(self.project.specs, self.project.inputs, trials)

    # -- steps -------------------------------------------------------------------------------

    def _job(self, planned: PlannedAction, builder: JobBuilder | None = None,
             prepare: Callable[[JobFile], JobFile] | None = None) -> StepResult:
        """One job, once one of the `max_parallel` job slots is free: the apply's own steps and a
        sweep's trials share them, so maxParallel caps the processes whatever starts them."""
        if not self._slots.acquire(blocking=False):
            self.reporter.say(f"  {planned.resource}: waiting for one of the {self.max_parallel} job slots")
            while not self._slots.acquire(timeout=1.0):
                if self.stop_event.is_set():
                    return StepResult(planned.resource, Outcome.SKIPPED, "apply was interrupted")
        try:
            if self.stop_event.is_set():
                return StepResult(planned.resource, Outcome.SKIPPED, "apply was interrupted")
            return self._run_job(planned, builder, prepare)
        finally:
            self._slots.release()

    def _run_job(self, planned: PlannedAction, builder: JobBuilder | None,
                 prepare: Callable[[JobFile], JobFile] | None) -> StepResult:
        rid = planned.resource
        builder = builder or self.builder
        fingerprint = planned.fingerprint or ""
        adopt = planned.action == Action.WAIT
        # Attempts this apply may still make: a retry continues the count the plan showed (reset
        # by --retry-failed); the backend's own numbering keeps growing across applies.
        budget = self.max_attempts - (planned.attempt - 1 if planned.action == Action.RETRY else 0)
        if getattr(self.backend, "retries_jobs", False):  # Kubernetes retries the pods (backoffLimit)
            budget = 1
        made = 0
        while True:
            if adopt:
                self.reporter.started(rid, "already running: waiting for it", fingerprint)
            else:
                job = self._published(builder.job(rid))
                if prepare is not None:
                    job = prepare(job)
                observed = self.backend.submit(job, processes=_processes(builder.specs, rid))
                self.reporter.started(rid, f"started {observed.handle}, attempt {observed.attempts} "
                                           f"(log: {observed.log})", fingerprint)
            observed = self.backend.wait(rid.kind, rid.name, fingerprint, stop_event=self.stop_event)
            made += 1
            if observed.is_live:
                return StepResult(rid, Outcome.SKIPPED,
                                  "apply was interrupted; the job keeps running and the next apply adopts it")
            if observed.phase == "failed" and observed.message == STOPPED:
                return StepResult(rid, Outcome.SKIPPED,
                                  "stopped by `tuneops stop`; the next apply starts it again")
            if observed.phase == "succeeded":
                run = self.lookup(rid.kind, rid.name, fingerprint)
                pruned = self.pruned(rid, fingerprint) if run is None else None
                if pruned is not None:
                    return StepResult(rid, Outcome.PRUNED, pruned)
                if run is None:
                    return StepResult(rid, Outcome.FAILED,
                                      f"the job exited 0 but left no complete MLflow run; see {observed.log}")
                return StepResult(rid, Outcome.DONE, _built_summary(run))
            if made >= budget or self.stop_event.is_set():
                why = observed.message or "failed"
                return StepResult(rid, Outcome.FAILED, f"{why} (log: {observed.log})")
            self.reporter.say(f"  {rid}: attempt {observed.attempts} failed ({observed.message}); retrying")
            adopt = False

    def _deploy(self, planned: PlannedAction) -> StepResult:
        rid = planned.resource
        resource = self.project.specs.resource(rid, DeploymentResource)
        assert resource is not None
        builder = self.builder
        if resource.spec.model.sweep:
            chosen = self._sweep_choice(rid, resource)
            if isinstance(chosen, StepResult):
                return chosen
            run, model_fp, builder, gates = chosen
            requires: tuple[str, ...] = ()  # the trial passed its copies of them
        else:
            fine_tune = ResourceId("FineTune", resource.spec.model.fine_tune or "")
            model_fp = self.project.fingerprint(fine_tune)
            found = self.lookup("FineTune", fine_tune.name, model_fp)
            if found is None:
                return StepResult(rid, Outcome.FAILED, f"{fine_tune} has no model at its current fingerprint")
            run, requires, gates = found, tuple(resource.spec.requires), {}
        for evaluation in requires:
            eid = ResourceId("Evaluation", evaluation)
            verdict = self.lookup("Evaluation", evaluation, self.project.fingerprint(eid))
            if verdict is None:
                return StepResult(rid, Outcome.FAILED, f"{eid} has not scored {run.model_version}")
            if verdict.verdict != tracking.GATE_PASSED:
                live = self.backend.observe().server(rid.name)
                kept = (f"; {live.model_version} keeps serving at {live.url}"
                        if live is not None and live.phase == "serving" else "")
                summary = (verdict.verdict_summary or "failed").removeprefix("failed: ")
                return StepResult(rid, Outcome.BLOCKED, f"{run.model_version} did not pass {evaluation}: "
                                                  f"{summary}{kept}")
            gates[evaluation] = verdict.verdict_summary or verdict.verdict
        self.reporter.started(rid, f"starting a server for {run.model_version}")
        job = self._published(builder.job(rid, serve_run=run))
        switch = self._begin_switch(planned, run.model_version, gates)
        try:
            served = self.backend.serve(job, model_fingerprint=model_fp, model_version=run.model_version)
        except BaseException:
            self._end_switch(switch, False)
            raise
        self._end_switch(switch, served.phase == "serving")
        if served.phase != "serving":
            return StepResult(rid, Outcome.FAILED, served.message or "the server did not become healthy")
        registered, _, version = (run.model_version or "").rpartition("/")
        if registered and version:
            self.store.set_alias(registered, resource.spec.alias, version)
        return StepResult(rid, Outcome.DONE, f"serving {run.model_version} at {served.url} "
                                       f"(alias {resource.spec.alias})", url=served.url)

    def _sweep_choice(self, rid: ResourceId, resource: DeploymentResource,
                      ) -> StepResult | tuple[BuiltRun, str, JobBuilder, dict[str, str]]:
        """The best trial of the served sweep that passes the Deployment's gates, read fresh: its
        FineTune run, fingerprint, a builder that knows it, and its gate results (by the
        Evaluation the trial's copy stands for). A StepResult when there is none."""
        from reconciler.plan.sweeps import sweep_view
        from reconciler.specs.sweep import SweepResource
        from reconciler.tracking.actual_state import read_trials

        name = resource.spec.model.sweep or ""
        sweep = self.project.specs.resource(ResourceId("Sweep", name), SweepResource)
        assert sweep is not None, name
        trials = read_trials(self.store, self.experiment_id, name).get(name, ())
        view = sweep_view(self.project.specs, self.project.inputs, sweep, trials, self.lookup)
        best = view.best(tuple(resource.spec.requires))
        if best is None or best.resources is None:
            live = self.backend.observe().server(rid.name)
            kept = (f"; {live.model_version} keeps serving at {live.url}"
                    if live is not None and live.phase == "serving" else "")
            return StepResult(rid, Outcome.BLOCKED, f"no trial of Sweep/{name} passes "
                                                    f"{', '.join(resource.spec.requires)}{kept}")
        run = self.lookup("FineTune", best.resources.fine_tune_id.name, best.resources.fingerprint)
        if run is None:
            return StepResult(rid, Outcome.FAILED, f"trial {best.number} of Sweep/{name} has no model")
        gates = {}
        for evaluation in resource.spec.requires:
            verdict = self.lookup("Evaluation", best.resources.evaluation_id(evaluation).name,
                                  best.resources.evaluation_fingerprint(evaluation))
            if verdict is not None:
                gates[evaluation] = f"trial {best.number}: {verdict.verdict_summary or verdict.verdict}"
        return run, best.resources.fingerprint, self.with_trials([best.resources]), gates

    # -- the audit trail -------------------------------------------------------------------------

    def _begin_switch(self, planned: PlannedAction, version: str | None,
                      gates: dict[str, str | None]) -> str | None:
        """Record in MLflow, before it happens, that a Deployment switches what it serves (None
        when it serves that already). Unrecorded, it does not switch: the error stops the step."""
        from reconciler.git.info import commit_details
        from reconciler.tracking.switches import Switch, begin_switch, is_rollback, read_switches

        rid = planned.resource
        live = self.backend.observe().server(rid.name)
        previous = live.model_version if live is not None and live.phase == "serving" else None
        if previous == version:
            return None
        earlier = read_switches(self.store, self.experiment_id, rid.name)
        author, subject = commit_details(self.project.root, self.git.commit)
        switch = Switch(deployment=rid.name, version=version, previous=previous, commit=self.git.commit,
                        dirty=self.git.dirty, author=author, subject=subject,
                        gates={name: summary or "" for name, summary in gates.items()},
                        applied_by=self.applied_by, reason=planned.reason,
                        rollback=is_rollback(version, previous, earlier))
        return begin_switch(self.store, self.experiment_id, switch)

    def _end_switch(self, run_id: str | None, switched: bool) -> None:
        if run_id is not None:
            from reconciler.tracking.switches import end_switch

            end_switch(self.store, run_id, switched)

    def _published(self, job: JobFile) -> JobFile:
        """The job, once the spec-repository files its pods check out are as committed and pushed."""
        root = self.builder.context.repo_root
        if job.checkout is None or root is None:
            return job
        from reconciler.git.info import unpublished

        problems = unpublished(root, job.checkout.paths)
        if problems:
            paths, commit = ", ".join(job.checkout.paths), (job.git.commit or "")[:12]
            raise SourcesNotPublished(f"its pods check out {paths} at commit {commit} from origin, but "
                                      f"{'; '.join(problems)}: commit and push, then apply again")
        return job

    def _delete(self, planned: PlannedAction) -> StepResult:
        rid = planned.resource
        self.reporter.started(rid, "stopping (its spec was removed)")
        switch = self._begin_switch(planned, None, {}) if rid.kind == "Deployment" else None
        try:
            stopped = self.backend.stop(rid.kind, rid.name)
        except BaseException:
            self._end_switch(switch, False)
            raise
        self._end_switch(switch, True)
        return StepResult(rid, Outcome.DONE, f"stopped {', '.join(stopped) or 'nothing (already gone)'}")


def _processes(specs: Any, rid: ResourceId) -> int:
    resource = specs.resource(rid, FineTuneResource)
    return resource.spec.resources.processes if resource is not None else 1


def _built_summary(run: BuiltRun) -> str:
    if run.kind == "FineTune" and run.model_version:
        return f"registered {run.model_version}"
    if run.kind == "Evaluation":
        return (run.verdict_summary or run.verdict or "scored").replace("failed:", "gates failed:")
    if run.kind == "Dataset":
        return f"prepared ({(run.dataset_digest or '')[:19]})"
    return "built"


def _mlflow_target(project: Any) -> MlflowTarget:
    from reconciler.jobs.jobfile import MlflowTarget
    from reconciler.redaction import without_credentials

    # Its credentials reach the jobs through their environment (project.open_backend).
    return MlflowTarget(tracking_uri=without_credentials(project.tracking_uri), experiment=project.experiment)


def _repo_root(project: Any) -> Path | None:
    from reconciler.git.info import repo_root

    return repo_root(project.root)
