"""The actual state read: what MLflow says is built (one paged search per built kind) and what
the backend says runs, as one frozen ActualState for the planner; built runs whose local output
was deleted are marked so, rather than read as built."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

from reconciler.state import (
    BUILT_KINDS,
    ActualState,
    BackendState,
    BuiltRun,
    RunProgress,
    TrialRecord,
    built_run_from,
    trial_from,
)
from reconciler.tracking import vocabulary as tracking
from reconciler.tracking.filters import tag_equals
from reconciler.tracking.store import TrackingStore


def with_missing_outputs(state: ActualState) -> ActualState:
    """Built runs whose local output folder no longer exists, marked `output_missing` (a deleted
    store would otherwise read as built, and every later step would fail on the missing files)."""
    def checked(run: BuiltRun) -> BuiltRun:
        output = run.output or ""
        if not output or "://" in output or Path(output).exists():
            return run
        return dataclasses.replace(run, output_missing=True)

    built = {key: checked(run) for key, run in state.built.items()}
    history = {key: tuple(checked(run) for run in runs) for key, runs in state.history.items()}
    return dataclasses.replace(state, built=MappingProxyType(built), history=MappingProxyType(history))


def read_actual_state(store: TrackingStore, experiment: str, backend_state: BackendState) -> ActualState:
    """One paged search per built kind in the project's experiment, plus the backend's view.

    `store` is a `tracking_store.TrackingStore`. A missing experiment means nothing is built yet.
    """
    built: dict[tuple[str, str, str], BuiltRun] = {}
    history: dict[tuple[str, str], list[BuiltRun]] = {}
    unfinished: dict[tuple[str, str, str], RunProgress] = {}
    experiment_id = store.experiment_id(experiment)
    trials: dict[str, tuple[TrialRecord, ...]] = {}
    stops: dict[str, tuple[str, float]] = {}
    if experiment_id is not None:
        for kind in BUILT_KINDS:
            for record in store.search_runs(experiment_id, tag_equals(tracking.TAG_KIND, kind)):
                run = built_run_from(record)  # records come newest first
                if run is not None:
                    built.setdefault((run.kind, run.name, run.fingerprint), run)
                    history.setdefault((run.kind, run.name), []).append(run)
                    continue
                tags = record.tags
                key = (kind, tags.get(tracking.TAG_NAME, ""), tags.get(tracking.TAG_FINGERPRINT, ""))
                if key not in unfinished and record.status in ("RUNNING", "SCHEDULED"):
                    progress = record.metrics.get("progress")
                    unfinished[key] = RunProgress(kind, key[1], key[2], record.run_id,
                                                  record.start_time / 1000, progress,
                                                  record.metric_steps.get("progress"))
        trials = read_trials(store, experiment_id)
        stops = read_sweep_stops(store, experiment_id)
    return ActualState(
        sweep_stops=MappingProxyType(stops),
        trials=MappingProxyType(trials) if experiment_id is not None else MappingProxyType({}),
        built=MappingProxyType(built),
        history=MappingProxyType({key: tuple(runs) for key, runs in history.items()}),
        unfinished=MappingProxyType(unfinished),
        backend=backend_state,
        tracking_uri=store.uri,
    )


def read_trials(store: TrackingStore, experiment_id: str, sweep: str | None = None,
                ) -> dict[str, tuple[TrialRecord, ...]]:
    """Every sweep's recorded trials (or one sweep's), by trial number; one paged search."""
    query = tag_equals(tracking.TAG_KIND, tracking.KIND_TRIAL)
    if sweep is not None:
        query += " and " + tag_equals(tracking.TAG_NAME, sweep)
    found: dict[str, dict[int, TrialRecord]] = {}
    for record in store.search_runs(experiment_id, query):  # newest first: the first per number wins
        trial = trial_from(record)
        if trial is not None:
            found.setdefault(trial.sweep, {}).setdefault(trial.number, trial)
    return {name: tuple(by_number[n] for n in sorted(by_number)) for name, by_number in found.items()}


def read_sweep_stops(store: TrackingStore, experiment_id: str) -> dict[str, tuple[str, float]]:
    """Sweeps whose last apply the budget stopped: name -> (why, the budget then)."""
    stops: dict[str, tuple[str, float]] = {}
    for record in store.search_runs(experiment_id, tag_equals(tracking.TAG_KIND, tracking.KIND_SWEEP)):
        reason = record.tags.get(tracking.TAG_SWEEP_STOPPED, "")
        name = record.tags.get(tracking.TAG_NAME, "")
        try:
            budget = float(record.tags.get(tracking.TAG_SWEEP_BUDGET, ""))
        except ValueError:
            continue
        if reason and name not in stops:
            stops[name] = (reason, budget)
    return stops
