"""Reading a Dataset's source: local files, s3:// (through fsspec) and hf:// (through `datasets`).

Each reader yields (where, record), where `where` is the file and line or row number, so that
every error a user can fix points at the row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from reconciler.errors import PermanentError
from reconciler.specs.confinement import OutsideRoots, resolve_for_job
from reconciler.specs.dataset import DatasetSpec

Row = dict[str, Any]
Located = Iterator[tuple[str, Row]]  # (where the row is, for messages; the raw record)


class DatasetError(PermanentError, ValueError):
    """A dataset that cannot be prepared for a reason the user can fix; one line naming the file."""


@contextmanager
def local_file(scheme: str, location: str) -> Iterator[tuple[Path, str]]:
    """The source as a local file, and how messages name it (the path, or the s3:// URI)."""
    if scheme == "file":
        path = Path(location).absolute()
        try:  # re-checked here, against the roots the starting process names: see specs/confinement.py
            resolved = resolve_for_job(path)
        except OutsideRoots as error:
            raise DatasetError(str(error)) from None
        if not path.exists():
            raise DatasetError(f"{path} does not exist")
        if not path.is_file():
            raise DatasetError(f"{path} is not a file")
        yield resolved, str(path)
        return
    uri = f"s3://{location}"
    try:
        import fsspec
        import s3fs  # noqa: F401 - fsspec's s3 implementation
    except ImportError:
        raise DatasetError(f"reading {uri} needs s3fs (pip install s3fs)") from None
    with tempfile.TemporaryDirectory(prefix="tuneops-s3-") as scratch:
        target = Path(scratch) / (PurePosixPath(location).name or "source")
        try:
            fsspec.filesystem("s3").get(uri, str(target))
        except FileNotFoundError:
            raise DatasetError(f"{uri} does not exist") from None
        except Exception as error:  # credentials, network, permissions: all reported the same way
            raise DatasetError(f"cannot download {uri}: {first_line(error)}") from None
        yield target, uri


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- readers: each yields (where, record) so that errors can point at the row --------------------

def read_jsonl(path: Path, where: str) -> Located:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DatasetError(f"{where}:{number}: not UTF-8 text") from None
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(
                    f"{where}:{number}: not valid JSON: {error.msg} (column {error.colno})") from None
            if not isinstance(value, dict):
                raise DatasetError(f"{where}:{number}: expected a JSON object, got {kind_of(value)}")
            yield f"{where}:{number}", value


def read_json(path: Path, where: str) -> Located:
    try:
        value = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{where}:{error.lineno}: not valid JSON: {error.msg} "
                           f"(column {error.colno})") from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        raise DatasetError(f'{where}: expected a list of objects or {{"data": [...]}}, got {kind_of(value)}')
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise DatasetError(f"{where}: item {number} is not an object (got {kind_of(item)})")
        yield f"{where}: item {number}", item


def read_csv(path: Path, where: str) -> Located:
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB) is too small for long documents
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for record in reader:
                yield f"{where}:{reader.line_num}", {k: v for k, v in record.items() if k is not None}
        except UnicodeDecodeError:
            raise DatasetError(f"{where}:{reader.line_num}: not UTF-8 text") from None
        except csv.Error as error:
            raise DatasetError(f"{where}:{reader.line_num}: not valid CSV: {error}") from None


def read_parquet(path: Path, where: str) -> Located:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(f"{where}: not a readable parquet file ({first_line(error)})") from None
    number = 0
    for batch in table.iter_batches(batch_size=8192):
        for record in batch.to_pylist():
            number += 1
            yield f"{where}: row {number}", record


def read_hf(location: str, spec: DatasetSpec, uri: str) -> Located:
    """Through `datasets`, which honours HF_HUB_OFFLINE and the local Hub cache."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise DatasetError(f"reading {uri} needs the datasets package (pip install datasets)") from None
    try:
        data = load_dataset(location, name=spec.subset, revision=spec.revision, split=spec.source_split)
    except Exception as error:  # the Hub's errors are many and change between versions
        pinned = f" at revision {spec.revision}" if spec.revision else ""
        raise DatasetError(f"cannot load {uri}{pinned} (split '{spec.source_split}'): "
                           f"{type(error).__name__}: {first_line(error)}") from None
    for number, record in enumerate(data, 1):
        yield f"{uri}: row {number}", record


READERS = {"jsonl": read_jsonl, "json": read_json, "csv": read_csv, "parquet": read_parquet}


def kind_of(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
