"""A spec folder made ready to plan: validated specs, fingerprints, and where its state lives.

The edges the reconciler reads from sit here: the spec files, local source digests, the MLflow
URI (explicit, MLFLOW_TRACKING_URI, or the embedded `sqlite:///<root>/.tuneops/mlflow.db`), the
storage root and the backend. `Project` is also the façade the command line and the daemon call:
`Project.load(path)`, then `validate()`, `plan(base=)`, `apply()`, `status()`, `render()`, and
`estimate`, `stop`, `logs` on a path whose specs need not validate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import redaction
from reconciler.config import PROJECT_FILE, STATE_DIR, ProjectSettings
from reconciler.errors import PermanentError, TuneopsError
from reconciler.fingerprint import FingerprintInput, fingerprint_inputs
from reconciler.graph import DependencyGraph
from reconciler.specs.policy import NO_APPROVAL, Approval
from reconciler.specs.validate import ValidationResult, validate_path
from reconciler.state import ActualState, BackendState, BuiltRun
from reconciler.tracking.actual_state import read_actual_state, with_missing_outputs
from reconciler.tracking.store import TrackingStore

if TYPE_CHECKING:
    from reconciler.apply.executor import Reporter
    from reconciler.apply.session import ApplyOutcome
    from reconciler.backends.base import Backend
    from reconciler.backends.stopping import Stopping
    from reconciler.plan.project_plan import PlannedProject
    from reconciler.sizing.estimates import FineTuneEstimate
    from reconciler.specs.base import ResourceId
    from reconciler.specs.loader import LoadResult
    from reconciler.specs.specset import SpecSet


class ProjectInvalid(PermanentError):
    """The specs do not validate: nothing is planned or applied. Carries the validation result."""

    def __init__(self, result: ValidationResult):
        super().__init__(f"{len(result.errors)} error(s) in the specs")
        self.result = result


class ProjectError(TuneopsError, RuntimeError):
    """A project that cannot be worked on as configured (one line for the user)."""


class NoProject(ProjectError):
    """The path is in no spec project: no tuneops.yaml there or above, and no tuneops spec in
    it. Said once, with how to make one, instead of an error for every unrelated YAML file."""

    def __init__(self, root: Path, yaml_files: int):
        from reconciler.specs.loader import display_path, nested_projects

        shown = display_path(root)
        where = str(root) if shown == "." else shown
        holds = f"none of its {yaml_files} YAML files is a tuneops spec" if yaml_files else \
            "it holds no YAML files"
        message = (f"no tuneops project in {where}: no {PROJECT_FILE} there or in a folder above it, and "
                   f"{holds}\nhint: `tuneops init DIR` writes a starter project; a folder of specs is a "
                   f"project once it holds a {PROJECT_FILE} (empty will do)")
        below = nested_projects(root)
        if below:
            message += "; projects below this folder (give one as the path): " + ", ".join(
                display_path(p) for p in below)
        super().__init__(message)
        self.root = root


def embedded_tracking_uri(root: Path) -> str:
    return f"sqlite:///{(root / STATE_DIR / 'mlflow.db').absolute()}"


def tracking_uri_of(settings: ProjectSettings, root: Path) -> str:
    """Explicit in tuneops.yaml, else MLFLOW_TRACKING_URI, else the embedded database. Its
    credentials are masked in everything shown from then on."""
    uri = settings.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or embedded_tracking_uri(root)
    redaction.remember_credentials_of(uri)
    return uri


def tracking_state_exists(uri: str, root: Path) -> bool:
    """False only for the embedded database before anything was applied: nothing is built, and
    opening it (a plan, a status, a log lookup) would create it."""
    if uri != embedded_tracking_uri(root):
        return True
    try:
        return (root / STATE_DIR / "mlflow.db").exists()
    except OSError:  # there but unreadable: opening it names the file and what is wrong
        return True


@dataclass(frozen=True)
class Project:
    validation: ValidationResult
    approval: Approval = NO_APPROVAL  # policies whose violations the command line let through

    @property
    def specs(self) -> SpecSet:
        return self.validation.specs

    @property
    def root(self) -> Path:
        return self.specs.root

    @property
    def settings(self) -> ProjectSettings:
        return self.specs.settings

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def tracking_uri(self) -> str:
        return tracking_uri_of(self.settings, self.root)

    @property
    def experiment(self) -> str:
        return self.settings.mlflow.experiment

    @property
    def storage_root(self) -> Path:
        configured = self.settings.storage.root
        if not configured:
            return self.state_dir / "store"
        path = Path(configured).expanduser()
        return path if path.is_absolute() else self.root / path

    @cached_property
    def graph(self) -> DependencyGraph:
        return DependencyGraph.from_specs(self.specs)

    @cached_property
    def inputs(self) -> dict:
        """ResourceId -> FingerprintInput, with local sources hashed (cached under .tuneops/)."""
        from reconciler.sources_digest import UnreadableSource, source_digests

        cache_dir = self.state_dir if self.state_dir.is_dir() else None  # a plan creates no state
        try:
            digests = source_digests(self.specs, cache_dir)
        except UnreadableSource as error:
            raise ProjectError(str(error)) from None
        return fingerprint_inputs(self.specs, self.graph, digests)

    def fingerprint(self, rid: ResourceId) -> str:
        item: FingerprintInput = self.inputs[rid]
        return item.fingerprint

    def backend(self) -> Backend:
        return open_backend(self.settings, self.state_dir, self.specs)

    def store(self) -> TrackingStore:
        from reconciler.tracking.store import open_store

        return open_store(self.tracking_uri)

    @property
    def tracking_state_exists(self) -> bool:
        return tracking_state_exists(self.tracking_uri, self.root)

    def read_state(self, store: TrackingStore | None, backend: Backend) -> ActualState:
        """What is built and running; `store` None: nothing is recorded yet. On the local backend
        a built output that is gone from disk is marked, so the plan rebuilds it."""
        observed = backend.observe()
        if store is None:
            return ActualState({}, {}, {}, observed, self.tracking_uri)
        state = read_actual_state(store, self.experiment, observed)
        return with_missing_outputs(state) if self.settings.backend == "local" else state

    # -- the façade: what the command line and the daemon call ------------------------------

    @classmethod
    def load(cls, path: Path, *, strict: bool = False, approval: Approval | None = None) -> Project:
        """The validated project at `path`: NoProject, or ProjectInvalid with the report.
        `approval` lets through violations of the policies it names (`--approve`)."""
        return load_project(path, strict=strict, approval=approval)

    @staticmethod
    def check(paths: list[Path], *, strict: bool = False, capacity: bool = True,
              approval: Approval | None = None) -> ValidationResult:
        """The validation of spec folders or files (`tuneops validate`), with the planner's
        verdict on FineTunes that cannot fit their GPUs unless `capacity` is False; NoProject
        for a folder that is no spec project."""
        from reconciler.specs.validate import validate_paths

        result = validate_paths(paths, strict=strict, approval=approval or NO_APPROVAL)
        if not result.is_project:
            raise NoProject(result.specs.root, len(result.files))
        return with_capacity_check(result) if capacity else result

    def validate(self) -> ValidationResult:
        """The verdict this project was loaded with (valid, perhaps with warnings)."""
        return self.validation

    def check_fetched_modules(self) -> None:
        """Target modules of base models whose config only the Hub has: validation cannot check
        them offline; a plan that reads state can (ProjectInvalid with file:line problems)."""
        from reconciler.sizing import modules

        problems = list(modules.check(self.specs, fetch=True))
        if problems:
            raise ProjectInvalid(self.validation.adding(problems))

    def plan(self, base: str | None = None, *, offline: bool = False, targets: frozenset | None = None,
             prune: bool = False, retry_failed: bool = False, creating: bool = False,
             warn: Callable[[str], None] = lambda line: None) -> PlannedProject:
        """What apply would do: against the actual state (none `offline`), or with `base` (a Git
        ref) the change since that ref. `warn` hears that the specs at the base do not validate."""
        from reconciler.plan.project_plan import plan_against_base, plan_options, plan_project

        options = plan_options(self, prune=prune, retry_failed=retry_failed, target=targets)
        if not offline:
            self.check_fetched_modules()
        if base is None:
            return plan_project(self, options, offline=offline, creating=creating)

        def load_base(root: Path) -> Project | None:
            try:  # what --approve lets through at the head, it lets through at the base
                return load_project(root, approval=self.approval)
            except NoProject:  # no specs yet at the base: everything is new
                return None
            except ProjectInvalid as invalid:
                warn(f"warning: the specs at {base} do not validate ({len(invalid.result.errors)} "
                     "error(s)): the change is compared with nothing built")
                return None

        return plan_against_base(self, base, offline=offline, options=options, load_base=load_base)

    def apply(self, *, targets: frozenset | None = None, prune: bool = False, force: bool = False,
              retry_failed: bool = False, reporter: Reporter, stop: threading.Event | None = None,
              shown: Callable[[PlannedProject], None] = lambda planned: None,
              go_ahead: Callable[[PlannedProject], bool] = lambda planned: True,
              applied_by: str | None = None) -> ApplyOutcome:
        """Plan and run the plan's steps under the project's apply lock: `shown` sees the plan,
        a prune beyond prune.maxDeletes is refused unless `force`, `go_ahead` may decline.
        `applied_by` is who the audit trail says switched a Deployment (default: this user)."""
        from reconciler.apply.session import apply_project

        return apply_project(self, targets=targets, prune=prune, force=force, retry_failed=retry_failed,
                             reporter=reporter, stop=stop, shown=shown, go_ahead=go_ahead,
                             applied_by=applied_by)

    def status(self) -> list:
        """Each resource's phase, progress and model version (status.StatusRow)."""
        import time

        from reconciler.status import status_rows

        planned = self.plan()
        return status_rows(planned.plan, planned.state, time.time())

    def sweep(self, name: str) -> tuple[Any, dict[str, float]]:
        """A Sweep's trials as the plan sees them (plan/sweeps.SweepView), and Optuna's parameter
        importances over its complete trials ({} with fewer than three)."""
        from reconciler.plan.sweeps import sweep_view
        from reconciler.specs.base import ResourceId
        from reconciler.specs.sweep import SweepResource

        sweep = self.specs.resource(ResourceId("Sweep", name), SweepResource)
        if sweep is None:
            known = ", ".join(sorted(self.specs.names("Sweep"))) or "none"
            raise TuneopsError(f"no Sweep named {name!r} under {self.root} (Sweeps: {known})")
        state = self.plan().state
        view = sweep_view(self.specs, self.inputs, sweep, state.trials_of(name), state.built_run)
        importances: dict[str, float] = {}
        if sum(1 for t in view.valid if t.state == "complete") >= 3:
            from reconciler.sweeps.study import importances as parameter_importances

            importances = parameter_importances(sweep.spec, [t.record for t in view.valid])
        return view, importances

    @staticmethod
    def audit_trail(path: Path) -> AuditTrail:
        """What apply recorded of the project at `path`, whose specs need not validate (the
        record of what served must be readable while they are being fixed)."""
        from reconciler.specs.loader import load, resolve_scope

        root, _ = resolve_scope([path])
        loaded = load(root)
        if not loaded.is_project:
            raise NoProject(root, len(loaded.files))
        refuse_broken_settings(loaded)  # else it would read the default MLflow, and find nothing
        return AuditTrail(tracking_uri_of(loaded.settings, root), loaded.settings.mlflow.experiment, root)

    def approved_violations(self) -> list:
        """The policy violations let through, by `--approve` or by the specs' annotations
        (specs/rules/policies.Violation), for apply to record."""
        from reconciler.specs.rules.policies import violations
        from reconciler.specs.rules.registry import RuleContext

        ctx = RuleContext(self.specs, frozenset(self.specs.by_id), self.specs.settings, self.approval)
        return [found for found in violations(ctx) if found.approval is not None]

    def render(self, targets: frozenset | None = None, *, validate: bool = True) -> list[dict]:
        """The Kubernetes manifests of the project (or of `targets`), checked unless told not to."""
        from reconciler.backends.kubernetes.project_manifests import project_manifests

        unknown = [str(rid) for rid in targets or () if rid not in self.specs]
        if unknown:
            first = next(rid for rid in targets or () if rid not in self.specs)
            raise TuneopsError(f"--target {', '.join(unknown)}: no such spec under {self.root} "
                               f"({self.specs.unknown_target_hint(first)})")
        return project_manifests(self, targets, validate=validate)

    @staticmethod
    def estimate(path: Path, fine_tune: str, *, mfu: float | None = None) -> FineTuneEstimate:
        """What a FineTune needs before it is scheduled. Its project is validated without the
        capacity check (a FineTune that does not fit is shown); ProjectInvalid otherwise."""
        from reconciler.sizing import architectures
        from reconciler.sizing.dataset_rows import train_rows
        from reconciler.sizing.estimates import estimate_fine_tune, priced
        from reconciler.specs.base import ResourceId
        from reconciler.specs.finetune import FineTuneResource

        result = Project.check([path], capacity=False)
        if not result.valid:
            raise ProjectInvalid(result)
        specs, name = result.specs, fine_tune.removeprefix("FineTune/")
        resource = specs.resource(ResourceId("FineTune", name), FineTuneResource)
        if resource is None:
            known = ", ".join(loaded.id.name for loaded in specs.of_kind("FineTune")) or "none"
            raise TuneopsError(f"no FineTune named '{name}' under {path} (FineTunes: {known})")
        settings, product = specs.settings.planner, resource.spec.resources.gpu_product
        if mfu is not None and product:
            settings = settings.model_copy(update={"mfu": {**settings.mfu, product: mfu}})
        elif mfu is not None:
            raise TuneopsError("--mfu needs resources.gpuProduct on the FineTune: GPU-hours are per GPU "
                               "product")
        found = estimate_fine_tune(specs, resource, architectures.architectures(specs, fetch=True),
                                   train_rows(specs), settings)
        return priced(found, specs.settings.pricing)

    @staticmethod
    def stop(path: Path, targets: frozenset | None = None) -> Stopping:
        """The live servers and running jobs of the project at `path` (its specs need not
        validate), ready to be stopped one by one."""
        from reconciler.backends.stopping import Stopping

        backend = project_backend(path)
        try:
            return Stopping.of(backend, targets)
        except OSError as error:
            raise TuneopsError(f"cannot read the local state: {error}") from None

    @staticmethod
    def logs(path: Path, rid: ResourceId, *, version: int | None = None,
             **how: int | bool | None) -> tuple[Iterable[str], str | None]:  # how: Backend.logs' tail, follow
        """(lines, note) of a resource's job or server in the project at `path`, whose specs
        need not validate: the run of model `version`, else the one the specs ask for, else the
        newest. An error when the resource is not defined there or never ran."""
        from reconciler.backends.run_logs import logs_of_version, logs_of_wanted_run
        from reconciler.specs.rules.references import DefinedNames

        backend, loaded = unvalidated_project(path)
        from reconciler.specs.sweep import is_trial_name

        defined = loaded.declared | {spec.id for spec in loaded.specs}
        sweeps = [d.name for d in defined if d.kind == "Sweep"]
        trial = rid.kind in ("FineTune", "Evaluation") and any(is_trial_name(rid.name, s) for s in sweeps)
        if rid not in defined and not trial:  # a sweep's trials have logs, as `sweep show` names them
            hint = DefinedNames(defined).hint(rid)
            raise TuneopsError(f"{rid} is not defined in {path}" + (f" ({hint})" if hint else ""))
        if rid.kind == "BaseModel":
            raise TuneopsError(f"{rid} has no log: a BaseModel is read where it is, by the jobs that use it "
                               "(see `tuneops logs FineTune/NAME`)")
        if version is not None:
            runs = built_versions(loaded.settings, loaded.root, rid.kind, rid.name)
            return logs_of_version(backend, rid, version, runs, **how)
        fingerprint = None
        try:
            project = load_project(path)
            if rid in project.inputs:
                fingerprint = project.fingerprint(rid)
        except (ProjectInvalid, ProjectError):  # specs being edited still get a log: the newest
            pass
        lines, note = logs_of_wanted_run(backend, rid, fingerprint, **how)
        if lines is None:
            raise TuneopsError(f"no logs for {rid} in {path}: it has not run here (see `tuneops status`)")
        return lines, note


def project_backend(path: Path) -> Backend:
    """The backend of the project at `path` without validating its specs (for `tuneops logs`,
    which must work while the specs are being edited)."""
    return unvalidated_project(path)[0]


@dataclass(frozen=True)
class AuditTrail:
    """The switches of what Deployments served and the policy overrides, as MLflow holds them."""

    tracking_uri: str
    experiment: str
    root: Path

    def _experiment_id(self) -> tuple[TrackingStore, str] | None:
        from reconciler.tracking.store import open_store

        if not tracking_state_exists(self.tracking_uri, self.root):
            return None  # nothing was ever applied here; opening the database would create it
        store = open_store(self.tracking_uri)
        experiment = store.experiment_id(self.experiment)
        return None if experiment is None else (store, experiment)

    def switches(self, deployment: str | None = None, since: float | None = None) -> list:
        """Every recorded switch of what a Deployment served (tracking.switches.Switch), oldest
        first: of `deployment` alone when given, since the epoch second `since` when given."""
        from reconciler.tracking.switches import read_switches

        opened = self._experiment_id()
        return [] if opened is None else read_switches(*opened, deployment, since)

    def overrides(self, policy: str | None = None, since: float | None = None) -> list:
        """Every recorded override of a policy (tracking.overrides.Override), oldest first."""
        from reconciler.tracking.overrides import read_overrides

        opened = self._experiment_id()
        found = [] if opened is None else read_overrides(*opened, policy)
        return [o for o in found if since is None or o.at >= since]


def unvalidated_project(path: Path) -> tuple[Backend, LoadResult]:
    """The backend and the specs as read, not validated: `tuneops logs` and `stop` work while
    the specs are being edited, but not on a broken tuneops.yaml (it says which backend)."""
    from reconciler.specs.loader import load, resolve_scope

    root, _ = resolve_scope([path])
    loaded = load(root)
    if not loaded.is_project:
        raise NoProject(root, len(loaded.files))
    refuse_broken_settings(loaded)  # which backend to ask is not known
    return open_backend(loaded.settings, root / STATE_DIR), loaded


def refuse_broken_settings(loaded: LoadResult) -> None:
    """ProjectError for the first error in tuneops.yaml: what it configures is not known."""
    from reconciler.specs.problems import Severity

    broken = [p for p in loaded.problems
              if p.severity == Severity.ERROR and p.position.file == loaded.settings_file]
    if broken:
        first = broken[0]
        raise ProjectError(f"{first.position}: {first.path + ': ' if first.path else ''}{first.message}"
                           + (f" ({first.hint})" if first.hint else ""))


def built_versions(settings: ProjectSettings, root: Path, kind: str, name: str) -> tuple[BuiltRun, ...]:
    """A resource's complete runs, newest first, read from MLflow without validating the specs
    (`tuneops logs --version`): a FineTune's registered versions, an Evaluation's scorings."""
    from reconciler.tracking.store import open_store

    uri = tracking_uri_of(settings, root)
    if not tracking_state_exists(uri, root):
        return ()  # nothing was ever applied here; opening the database would create it
    state = read_actual_state(open_store(uri), settings.mlflow.experiment, BackendState((), ()))
    return state.history.get((kind, name), ())


def open_backend(settings: ProjectSettings, state_dir: Path, specs: SpecSet | None = None) -> Backend:
    """The configured backend. Without specs the Kubernetes backend reads, logs and stops but
    cannot start anything (it renders from the specs)."""
    tracking_uri = tracking_uri_of(settings, state_dir.parent)  # its credentials are masked from now on
    if settings.backend == "kubernetes":
        from reconciler.backends.base import BackendError
        from reconciler.backends.kubernetes.api import KubeApi, load_connection
        from reconciler.backends.kubernetes.backend import KubernetesBackend

        k8s = settings.kubernetes
        try:
            connection = load_connection(k8s.context, k8s.namespace)
        except BackendError as error:
            raise ProjectError(str(error)) from None
        launchers = {k8s.multi_node}
        if specs is not None:
            launchers |= {loaded.resource.spec.distributed.launcher for loaded in specs.of_kind("FineTune")
                          if loaded.resource.spec.distributed.launcher}
        team_namespaces = {team: settings.namespace_of(team) for team in settings.teams}
        return KubernetesBackend(KubeApi(connection), k8s.namespace, specs, launchers=sorted(launchers),
                                 team_namespaces=team_namespaces)
    from reconciler.backends.local.backend import LocalBackend
    from reconciler.specs.confinement import FileRoots

    # The state folder is `<project>/.tuneops`: its jobs read file:// paths from the project's repository.
    roots = FileRoots.of_project(state_dir.parent, settings.policy.allowed_file_roots)
    # Job files name MLflow without credentials; the jobs get them in their environment.
    return LocalBackend(state_dir, file_roots=roots,
                        credentials=redaction.credentials_environment(tracking_uri),
                        jobs_at_once=settings.local.max_parallel)


def load_project(path: Path, *, strict: bool = False, approval: Approval | None = None) -> Project:
    """Validate the folder; raise ProjectInvalid when any spec has an error."""
    result = validate_path(path, strict=strict, approval=approval or NO_APPROVAL)
    if not result.is_project:
        raise NoProject(result.specs.root, len(result.files))
    if result.valid:  # the same verdict as `tuneops validate`: a FineTune that cannot fit is an error
        result = with_capacity_check(result)
    if not result.valid:
        raise ProjectInvalid(result)
    _remember_judge_keys(result.specs)
    return Project(result, approval or NO_APPROVAL)


def _remember_judge_keys(specs: SpecSet) -> None:
    """The API keys Evaluations' judges read from this environment (the local backend's jobs
    inherit them): masked in everything shown, as HF_TOKEN is."""
    for loaded in specs.of_kind("Evaluation"):
        judge = getattr(loaded.resource.spec, "judge", None)
        if judge is not None and judge.endpoint.api_key_secret:
            redaction.remember_secret(os.environ.get(judge.endpoint.api_key_secret))


def with_capacity_check(result: ValidationResult) -> ValidationResult:
    """Add the checks that read the base model: target modules it lacks, FineTunes that cannot
    fit their declared GPUs."""
    from reconciler.sizing import architectures, capacity, modules

    return result.adding([*modules.check(result.specs),
                          *capacity.check(result.specs, architectures.architectures(result.specs))])
