"""Plan + actual state -> one status row per resource: phase, progress, model version, URL.

Pure: `tuneops status` reads the state and computes the plan; this only decides what each
resource's row says. Phases, worst first: Failed, Blocked, Running, Pending, Suspended, Ready.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass

from reconciler.plan.plan import Action, Plan, PlannedAction, utc_iso
from reconciler.plan.report import reason_for_people
from reconciler.state import ActualState

PHASES = ("Failed", "Blocked", "Running", "Pending", "Suspended", "Ready")


@dataclass(frozen=True)
class StatusRow:
    kind: str
    name: str
    fingerprint: str  # short
    phase: str
    progress: str  # "40% (step 12), ETA 1m30s" for a running fine-tune; "" otherwise
    model_version: str
    result: str  # dataset digest, evaluation verdict, or why it is not Ready
    last_run: str  # UTC ISO-8601: when the run in use started (at this fingerprint, else the one compared)
    url: str

    def to_json(self) -> dict:
        return asdict(self)


def _when(timestamp: float | None) -> str:
    """Data is UTC, the same on every machine (`status --format json`); text shows local time."""
    return utc_iso(timestamp) if timestamp else ""


def _local_minute(when: str) -> str:
    """A row's UTC time as people at this machine read it: "2026-12-06 03:05"."""
    if not when:
        return ""
    moment = datetime.datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_text(progress: float | None, step: int | None, started_at: float, now: float) -> str:
    """Share done and the time left at the pace so far."""
    if progress is None or progress <= 0:
        return "starting"
    text = f"{progress:.0%}" + (f" (step {step})" if step is not None else "")
    elapsed = now - started_at
    if 0 < progress < 1 and elapsed > 0:
        text += f", ETA {_duration(elapsed * (1 - progress) / progress)}"
    return text


def _phase(planned: PlannedAction, state: ActualState) -> str:
    rid = planned.resource
    if planned.action == Action.NOOP:
        return "Ready"
    if planned.action == Action.WAIT:
        return "Running"
    if planned.action == Action.SUSPENDED:
        return "Suspended"
    if planned.action == Action.RETRY:
        return "Failed"
    if planned.action == Action.BLOCKED:
        job = state.job(rid.kind, rid.name, planned.fingerprint or "")
        return "Failed" if job is not None and job.phase == "failed" else "Blocked"
    return "Pending"


def status_rows(plan: Plan, state: ActualState, now: float) -> list[StatusRow]:
    rows = []
    for planned in plan.actions:
        if planned.action == Action.DELETE:
            continue
        rid = planned.resource
        fp = planned.fingerprint or ""
        built = state.built_run(rid.kind, rid.name, fp)
        compared = state.built_run(rid.kind, rid.name, planned.previous) if planned.previous else None
        in_use = built or compared
        phase = _phase(planned, state)
        progress = ""
        if phase == "Running":
            running = state.unfinished.get((rid.kind, rid.name, fp))
            job = state.job(rid.kind, rid.name, fp)
            started = running.started_at if running else (job.started_at if job else now)
            progress = progress_text(running.progress if running else None, running.step if running else None,
                                     started, now)
        model_version, result, url = "", "", ""
        if rid.kind == "Deployment":
            server = state.server(rid.name)
            if server is not None:
                model_version, url = server.model_version or "", server.url or ""
                if server.phase != "serving":
                    result = f"server {server.phase}: {server.message}".rstrip(": ")
        elif rid.kind == "Sweep" and planned.sweep is not None:
            best = planned.sweep.best()
            model_version = (best.model_version or "") if best is not None else ""
            result = planned.sweep.summary()
            if phase == "Pending" and planned.sweep.count("running"):
                phase = "Running"
        elif rid.kind == "Evaluation" and built is None:
            model_version = _version_to_score(plan, planned, state)  # not the one scored before
        elif in_use is not None:
            model_version = in_use.model_version or ""
            if rid.kind == "Evaluation":
                result = in_use.verdict_summary or in_use.verdict or ""
            elif rid.kind == "Dataset":
                result = (in_use.dataset_digest or "")[:19]
        if phase != "Ready" and planned.reason:
            reason = reason_for_people(planned)
            result = reason if not result else f"{result}; {reason}"
        rows.append(StatusRow(rid.kind, rid.name, fp[:12], phase, progress, model_version, result,
                              _when(in_use.started_at if in_use else None), url))
    return rows


def _version_to_score(plan: Plan, evaluation: PlannedAction, state: ActualState) -> str:
    """The model version an Evaluation not yet built at its fingerprint will score, once built."""
    for dep in evaluation.depends_on:
        upstream = plan.get(dep)
        if dep.kind == "FineTune" and upstream is not None and upstream.fingerprint:
            run = state.built_run(dep.kind, dep.name, upstream.fingerprint)
            return run.model_version or "" if run is not None else ""
    return ""


def status_text(rows: list[StatusRow]) -> str:
    headers = ("RESOURCE", "FINGERPRINT", "PHASE", "PROGRESS", "MODEL VERSION", "LAST RUN", "URL", "DETAIL")
    table = [(f"{r.kind}/{r.name}", r.fingerprint, r.phase, r.progress, r.model_version,
              _local_minute(r.last_run), r.url, r.result) for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(headers[:-1])]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths, strict=True)) + "  " + cells[-1]

    return "\n".join([line(headers).rstrip()] + [line(row).rstrip() for row in table])
