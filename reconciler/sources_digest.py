"""Content digests of local `file://` sources, the one input to fingerprints that lives on disk.

A data file, a model folder, a chat template or a benchmark's task YAML changes what is built
even when no spec changes, so its bytes are part of the fingerprint. Hashing a model folder of
many gigabytes on every plan would be slow, so digests are cached per file by (size, mtime,
inode), as Git does for its index.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISREG

from reconciler.errors import PermanentError
from reconciler.fileio import write_text_atomic
from reconciler.specs.base import ResourceId
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.confinement import FileRoots, OutsideRoots, resolve_inside
from reconciler.specs.dataset import DatasetResource
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource, reward_file_path
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.sources import parse_source
from reconciler.specs.specset import SpecSet
from reconciler.specs.task_files import TaskFileError, read_task_file, task_file_path

MISSING = "missing"
"""The digest of a local source that is not there (a model folder a first step will build)."""
CACHE_FILE = "digests.json"
_CHUNK = 1 << 20


def local_sources(specs: SpecSet) -> Iterator[tuple[ResourceId, str, Path]]:
    """(resource, field path, absolute path) of every local file or folder a spec names."""
    for loaded in specs:
        resource = loaded.resource
        fields: list[tuple[str, str]] = []
        if isinstance(resource, DatasetResource):
            fields.append(("spec.source", resource.spec.source))
        elif isinstance(resource, BaseModelResource):
            fields.append(("spec.source", resource.spec.source))
            if resource.spec.chat_template.startswith("file://"):
                fields.append(("spec.chatTemplate", resource.spec.chat_template))
        for path, uri in fields:
            source = parse_source(uri)
            if source.scheme == "file":
                yield resource.id, path, source.local_path(loaded.path.parent).absolute()
        if isinstance(resource, EvaluationResource):
            yield from _task_files(loaded, resource)
        if isinstance(resource, FineTuneResource):
            for index, reward in enumerate(resource.spec.rewards):
                if reward.python_file:  # its bytes are what the policy is trained to maximise
                    yield (resource.id, f"spec.rewards[{index}].python",
                           reward_file_path(loaded.path.parent, reward.python_file))


def _task_files(loaded: LoadedSpec, evaluation: EvaluationResource) -> Iterator[tuple[ResourceId, str, Path]]:
    """An Evaluation's task YAMLs and every file they read (includes, local data): editing one
    changes what is scored. A YAML that cannot be read is digested alone (validation says why)."""
    for index, task in enumerate(evaluation.spec.tasks):
        if task.path is None:
            continue
        path = task_file_path(loaded.path.parent, task.path)
        yield evaluation.id, f"spec.tasks[{index}].path", path
        try:
            read = read_task_file(path)
        except TaskFileError:
            continue
        for item in read.files:
            yield evaluation.id, f"spec.tasks[{index}].path:{item.value}", item.local_path().absolute()


class DigestCache:
    """sha256 per file, remembered by (size, mtime_ns, inode); a missing or unwritable cache
    only costs time."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        self.changed = False
        if path is not None:
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.entries = {}

    def file_digest(self, path: Path) -> str:
        stat = path.stat()
        if not S_ISREG(stat.st_mode):  # reading a FIFO would block the plan forever
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        key = str(path)
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        cached = self.entries.get(key)
        if isinstance(cached, list) and len(cached) == 4 and cached[:3] == stamp:
            return cached[3]
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        self.entries[key] = [*stamp, value]
        self.changed = True
        return value

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        with contextlib.suppress(OSError):  # a read-only checkout (CI) plans fine without a cache
            write_text_atomic(self.path, json.dumps(self.entries, separators=(",", ":")))


def digest_path(path: Path, cache: DigestCache) -> str:
    """`sha256:<hex>` of a file's bytes, or of a folder's files (relative names and contents,
    hidden files skipped), or MISSING."""
    if path.is_file():
        return f"sha256:{cache.file_digest(path)}"
    if not path.is_dir():
        return MISSING
    listing = hashlib.sha256()
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            file = Path(folder) / name
            relative = file.relative_to(path).as_posix()
            listing.update(f"{relative}\0{cache.file_digest(file)}\n".encode())
    return f"sha256:{listing.hexdigest()}"


class UnreadableSource(PermanentError):
    """A local file a spec names, which the fingerprint needs, cannot be read: said with the
    spec, the field and the file."""


def source_digests(specs: SpecSet, cache_dir: Path | None = None) -> dict[tuple[ResourceId, str], str]:
    """Digests of every local source in the specs; `cache_dir` (the state folder) keeps the
    per-file cache."""
    cache = DigestCache(cache_dir / CACHE_FILE if cache_dir is not None else None)
    roots = FileRoots.of_project(specs.root, specs.settings.policy.allowed_file_roots)
    digests = {}
    for rid, field, path in local_sources(specs):
        try:  # validation refused these already; a symlink may have moved since
            resolve_inside(path, roots.all, roots.describe())
        except OutsideRoots as error:
            raise UnreadableSource(f"{field} of {rid}: {error}") from None
        try:
            digests[(rid, field)] = digest_path(path, cache)
        except OSError as error:
            where = error.filename or path
            raise UnreadableSource(f"cannot read {where} ({field} of {rid}): "
                                   f"{error.strerror or error}") from None
    cache.save()
    return digests
