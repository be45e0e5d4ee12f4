"""What a resource's page reads beyond the snapshot: its spec as written, its runs with their
lineage and curves, an Evaluation's gates, a Deployment's switches, and the tail of its log.

Every read is bounded (runs, points, log lines) and fails soft: a page that cannot reach MLflow
or a log says so in its place and still shows the rest.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from reconciler import redaction
from reconciler.errors import TuneopsError
from reconciler.specs.base import ResourceId
from reconciler.tracking import vocabulary as tracking
from reconciler.tracking.records import RunRecord

MAX_RUNS = 20  # runs listed per resource, newest first
CURVE_RUNS = 5  # runs whose curves are drawn
CURVES = ("loss", "eval_loss", "learning_rate", "reward")
LOG_LINES = 200
LOG_LINE_CHARS = 2000  # a longer line is cut
LOG_CHARS = 128 * 1024  # the tail shown is at most this long
MAX_SPEC_CHARS = 64 * 1024  # of one document


@dataclass(frozen=True)
class SpecSource:
    file: str  # as the project shows it
    line: int  # 1-based first line of the document
    text: str
    link: str | None  # the file at the commit on the forge, when the remote is one we know


@dataclass(frozen=True)
class RunDetails:
    record: RunRecord
    version: str  # "fruit-sft/2", or "" when no version was registered (yet)
    lineage: dict[str, str]  # label -> value: commit, dataset digests, base revision, ...
    mlflow_link: str | None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)  # an Evaluation's, from results.json


def spec_source(spec: Any, repo_root: Path | None, remote: str | None, commit: str | None) -> SpecSource:
    """The YAML document of a loaded spec (specs.loader.LoadedSpec) as it was read: the file on
    disk may have changed since (specs being edited), and its lines would no longer match."""
    document = spec.document
    first = document.line_offset
    text = document.source.rstrip()
    if len(text) > MAX_SPEC_CHARS:
        more = len(text) - MAX_SPEC_CHARS
        text = text[:MAX_SPEC_CHARS] + f"\n... ({more:,} more characters in {spec.file})"
    link = None
    if repo_root is not None and commit:
        try:
            relative = spec.path.resolve().relative_to(repo_root.resolve()).as_posix()
        except (OSError, ValueError):
            relative = None
        link = forge_link(remote, commit, relative, first + 1) if relative else None
    return SpecSource(spec.file, first + 1, redaction.redact(text), link)


_SCP_REMOTE = re.compile(r"^(?:[\w.-]+@)?(?P<host>[\w.-]+):(?P<path>[^/].*)$")


def forge_link(remote: str | None, commit: str, path: str, line: int) -> str | None:
    """A web link to `path` at `commit` for remotes on GitHub, GitLab or Bitbucket (ssh or https);
    None for any other remote, rather than a guess that 404s."""
    if not remote or not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        return None
    parts = urlsplit(remote)
    if parts.scheme in ("https", "http", "ssh", "git+ssh"):
        host, repo = parts.hostname or "", parts.path
    else:
        found = _SCP_REMOTE.match(remote)
        if found is None:
            return None
        host, repo = found["host"], "/" + found["path"]
    repo = repo.removesuffix("/").removesuffix(".git").strip("/")
    if not host or not re.fullmatch(r"[\w.-]+(/[\w.-]+)+", repo):
        return None
    where = quote(path)
    if host == "github.com" or host.startswith("github."):
        return f"https://{host}/{repo}/blob/{commit}/{where}#L{line}"
    if host == "gitlab.com" or host.startswith("gitlab."):
        return f"https://{host}/{repo}/-/blob/{commit}/{where}#L{line}"
    if host == "bitbucket.org":
        return f"https://{host}/{repo}/src/{commit}/{where}#lines-{line}"
    return None


def mlflow_run_link(tracking_uri: str | None, experiment_id: str | None, run_id: str) -> str | None:
    """The run in MLflow's own UI: only a tracking server has one (a SQLite file does not)."""
    if not tracking_uri or not experiment_id or urlsplit(tracking_uri).scheme not in ("http", "https"):
        return None
    base = redaction.without_credentials(tracking_uri).rstrip("/")
    return f"{base}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"


def lineage_of(tags: dict[str, str] | Any) -> dict[str, str]:
    """What produced a run, in the order people ask: the commit, the data, the base model."""
    found: dict[str, str] = {}
    commit = tags.get(tracking.TAG_GIT_COMMIT)
    if commit:
        found["commit"] = commit + (" (with uncommitted changes)" if tags.get(tracking.TAG_GIT_DIRTY) else "")
    if tags.get(tracking.TAG_GIT_REPO):
        found["repository"] = tags[tracking.TAG_GIT_REPO]
    if tags.get(tracking.TAG_SPEC_PATH):
        found["spec file"] = tags[tracking.TAG_SPEC_PATH]
    for key in sorted(tags):
        if key.startswith(tracking.TAG_DATASET_DIGEST_PREFIX) and key.endswith(".digest"):
            name = key[len(tracking.TAG_DATASET_DIGEST_PREFIX):-len(".digest")]
            found[f"dataset {name}" if name else "dataset digest"] = tags[key]
    if tags.get(tracking.TAG_BASE_SOURCE):
        found["base model"] = tags[tracking.TAG_BASE_SOURCE]
        found["base revision"] = tags.get(tracking.TAG_BASE_REVISION) or "unpinned"
    if tags.get(tracking.TAG_STARTED_FROM):
        found["started from"] = tags[tracking.TAG_STARTED_FROM]
    for key in sorted(tags):
        if key.startswith(tracking.TAG_REWARD_MODEL_PREFIX):
            found[f"reward model {key[len(tracking.TAG_REWARD_MODEL_PREFIX):]}"] = tags[key]
    if tags.get(tracking.TAG_FINGERPRINT):
        found["fingerprint"] = tags[tracking.TAG_FINGERPRINT]
    return {label: redaction.redact(value) for label, value in found.items()}


def runs_of(planned: Any, rid: ResourceId) -> tuple[list[RunDetails], str]:
    """The resource's runs, newest first, with lineage, curves (the newest few) and gates; and a
    line saying what could not be read ("" when everything was)."""
    store, project = planned.store, planned.project
    if store is None:
        return [], "nothing has been recorded in MLflow yet"
    from reconciler.tracking.filters import tag_equals

    try:
        experiment_id = store.experiment_id(project.experiment)
        if experiment_id is None:
            return [], "nothing has been recorded in MLflow yet"
        records = store.search_runs(experiment_id, f"{tag_equals(tracking.TAG_KIND, rid.kind)} and "
                                    f"{tag_equals(tracking.TAG_NAME, rid.name)}", page_size=MAX_RUNS,
                                    limit=MAX_RUNS)
    except (TuneopsError, ValueError) as error:
        return [], redaction.redact(f"cannot read the runs: {error}")
    runs, problem = [], ""
    for index, record in enumerate(records[:MAX_RUNS]):
        tags = record.tags
        version = tags.get(tracking.TAG_REGISTERED_VERSION) or tags.get(tracking.TAG_MODEL_VERSION) or ""
        curves: dict[str, list[tuple[int, float]]] = {}
        if rid.kind == "FineTune" and index < CURVE_RUNS:
            for key in CURVES:
                if key in record.metrics:
                    try:
                        curves[key] = _history(store, record, key)
                    except TuneopsError as error:
                        problem = redaction.redact(f"cannot read the curves: {error}")
        gates = []
        if rid.kind == "Evaluation":
            gates = _gates(tags.get(tracking.TAG_OUTPUT), project.storage_root)
        runs.append(RunDetails(record, version, lineage_of(tags),
                               mlflow_run_link(project.tracking_uri, experiment_id, record.run_id),
                               curves, gates))
    return runs, problem


_FINISHED_CURVES: OrderedDict[tuple[str, str, str], list[tuple[int, float]]] = OrderedDict()
_FINISHED_CURVES_KEPT = 32
_CURVE_KEPT_POINTS = 20_000  # a longer history is read again each time rather than held
_FINISHED = frozenset({"FINISHED", "FAILED", "KILLED"})
_curves_lock = threading.Lock()  # pages render on several threads at once


def _history(store: Any, record: RunRecord, key: str) -> list[tuple[int, float]]:
    """A metric's history; a finished run's is read once (it cannot change), a running run's on
    every refresh."""
    cache_key = (store.uri, record.run_id, key)
    with _curves_lock:
        if cache_key in _FINISHED_CURVES:
            _FINISHED_CURVES.move_to_end(cache_key)
            return _FINISHED_CURVES[cache_key]
    points = store.metric_history(record.run_id, key)
    if record.status in _FINISHED and len(points) <= _CURVE_KEPT_POINTS:
        with _curves_lock:
            _FINISHED_CURVES[cache_key] = points
            while len(_FINISHED_CURVES) > _FINISHED_CURVES_KEPT:
                _FINISHED_CURVES.popitem(last=False)
    return points


def _gates(output: str | None, storage_root: Path) -> list[dict[str, Any]]:
    """Each check of an evaluation from its results.json, where the output is a local folder
    under the project's storage root: a run's tags are MLflow's to say, and a path elsewhere is
    not read."""
    if not output or "://" in output:
        return []
    try:
        path = (Path(output) / "results.json").resolve()
        if not path.is_relative_to(storage_root.resolve()):
            return []
        if not path.is_file() or path.stat().st_size > 4 * 1024 * 1024:
            return []
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    gates = results.get("gates") if isinstance(results, dict) else None
    return [gate for gate in gates if isinstance(gate, dict)] if isinstance(gates, list) else []


def log_tail(planned: Any, rid: ResourceId, fingerprint: str | None) -> tuple[list[str], str]:
    """The last lines of the resource's job or server log, and which run they are from."""
    from reconciler.backends.run_logs import logs_of_wanted_run

    if rid.kind in ("BaseModel", "Sweep") or planned.backend is None:
        return [], ""
    try:
        lines, note = logs_of_wanted_run(planned.backend, rid, fingerprint, tail=LOG_LINES, follow=False)
        shown = [shown_line(line) for line in lines] if lines is not None else []
    except (TuneopsError, OSError) as error:
        return [], redaction.redact(f"cannot read the log: {error}")
    shown = shown[-LOG_LINES:]
    while len(shown) > 1 and sum(len(line) + 1 for line in shown) > LOG_CHARS:
        shown.pop(0)
    return shown, note or "it has not run here"


_TERMINAL_CODES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def shown_line(line: str) -> str:
    """A log line as a page shows it: terminal colour and cursor codes removed, a progress bar's
    carriage returns resolved to what the terminal would show last, cut at LOG_LINE_CHARS."""
    line = line.rstrip("\n")
    if len(line) > 4 * LOG_LINE_CHARS:  # cut before the regexes: a line may be megabytes
        line = line[: 4 * LOG_LINE_CHARS]
    line = _TERMINAL_CODES.sub("", line)
    line = line.rstrip("\r").rsplit("\r", 1)[-1]
    line = _CONTROL.sub("", line)
    if len(line) > LOG_LINE_CHARS:
        line = line[:LOG_LINE_CHARS] + " [... cut]"
    return line


def switches_of(project: Any, deployment: str) -> tuple[list[Any], str]:
    """What the Deployment served, oldest first (tracking.switches.Switch)."""
    from reconciler.project import AuditTrail

    try:
        trail = AuditTrail(project.tracking_uri, project.experiment, project.root)
        return trail.switches(deployment), ""
    except TuneopsError as error:
        return [], redaction.redact(f"cannot read the switches: {error}")
