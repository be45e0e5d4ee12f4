"""How many training rows each Dataset has, for the planner's GPU-hours.

Best first: the count the Dataset's own run recorded (`rows_train`, after cleaning and
splitting); else, for a local file, its rows counted here times `split.train` (before cleaning,
so an upper bound). Remote sources without a built run stay unknown: nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from reconciler.fingerprint import FingerprintInput
from reconciler.sizing.estimates import RowCount
from reconciler.specs.base import ResourceId
from reconciler.specs.confinement import FileRoots, leads_inside
from reconciler.specs.dataset import DatasetResource
from reconciler.specs.sources import parse_source
from reconciler.specs.specset import SpecSet
from reconciler.state import ActualState

ROWS_METRIC = "rows_train"


def count_file_rows(path: Path, data_format: str) -> int | None:
    """Rows of a jsonl, json (array, or object of arrays) or csv file; None for others."""
    if data_format == "jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    if data_format == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return max(sum(1 for _ in csv.reader(handle)) - 1, 0)
    if data_format == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            return len(data)
        if isinstance(data, dict) and data:
            return max((len(value) for value in data.values() if isinstance(value, list)), default=None)
    return None


def _file_rows(dataset: DatasetResource, spec_folder: Path, roots: tuple[Path, ...]) -> int | None:
    """Rows of a Dataset's local source file, before cleaning and splitting; None when it is not
    a local file of a format counted here (or may not be read)."""
    source = parse_source(dataset.spec.source)
    if source.scheme != "file":
        return None
    path = source.local_path(spec_folder)
    if not leads_inside(path, roots):  # not read: validation refuses it with its file:line
        return None
    data_format = dataset.spec.format or path.suffix.lstrip(".").lower()
    try:
        return count_file_rows(path, data_format) if path.is_file() else None
    except (OSError, ValueError, csv.Error):
        return None


def local_rows(dataset: DatasetResource, spec_folder: Path, specs: SpecSet) -> int | None:
    """Rows of a Dataset's local source file, before cleaning and splitting."""
    roots = FileRoots.of_project(specs.root, specs.settings.policy.allowed_file_roots).all
    return _file_rows(dataset, spec_folder, roots)


def _counted(dataset: DatasetResource, spec_folder: Path, roots: tuple[Path, ...]) -> RowCount | None:
    count = _file_rows(dataset, spec_folder, roots)
    if count is None:
        return None
    source = parse_source(dataset.spec.source)
    share = dataset.spec.split.train
    return RowCount(int(count * share), f"counted in {source.location} x split.train {share:g}, "
                                        "before cleaning")


def train_rows(specs: SpecSet, inputs: dict[ResourceId, FingerprintInput] | None = None,
               state: ActualState | None = None) -> dict[str, RowCount]:
    """Training rows per Dataset name, where known."""
    found = {}
    roots = FileRoots.of_project(specs.root, specs.settings.policy.allowed_file_roots).all
    for loaded in specs.of_kind("Dataset"):
        dataset = loaded.resource
        assert isinstance(dataset, DatasetResource)
        name = dataset.metadata.name
        recorded = None
        if state is not None and state.read:
            current = inputs.get(loaded.id) if inputs else None
            runs = state.history.get(("Dataset", name), ())
            exact = [run for run in runs if current and run.fingerprint == current.fingerprint]
            for run in exact or runs:
                if ROWS_METRIC in run.metrics:
                    version = "" if exact else " (an earlier version of the spec)"
                    recorded = RowCount(int(run.metrics[ROWS_METRIC]),
                                        f"recorded by run {run.run_id[:8]}{version}")
                    break
        counted = recorded or _counted(dataset, loaded.path.parent, roots)
        if counted is not None:
            found[name] = counted
    return found
