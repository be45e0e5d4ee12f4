"""lm-evaluation-harness task YAMLs of the spec repository, read only as far as tuneops needs.

An Evaluation's `tasks: [{path: evals/support-mc.yaml}]` hands the file to lm-eval in the job;
before that, validation needs what it is called (gates name `task/<name>/<metric>`), the local
files it reads (its `include`s and `dataset_kwargs.data_files`: confined to the repository and
part of the fingerprint, like any `file://` source) and the Python it would run (`!function`).
The YAML is composed, not constructed, so lm-eval's own tags parse and every value keeps its
line. Relative paths are relative to the task YAML's folder (the job reads the data from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

FUNCTION_TAG = "!function"
_MAX_INCLUDES = 8
_MAX_BYTES = 1 << 20
# dataset_path values that name a loader of local files rather than a Hub dataset.
_LOCAL_PATH_PREFIXES = ("./", "../", "/")


class TaskFileError(ValueError):
    """A task YAML that cannot be read as one: where (file, line, column) and why."""

    def __init__(self, message: str, file: Path, line: int = 1, column: int = 1):
        super().__init__(message)
        self.message, self.file, self.line, self.column = message, file, line, column


@dataclass(frozen=True)
class Located:
    """A value of a task YAML, where it is written, and the folder a relative path in it is
    relative to: an include's, its file's folder (as lm-eval resolves it); a data file's, the
    folder of the task YAML the spec names (where the job runs lm-eval)."""

    value: str
    file: Path
    line: int
    column: int
    relative_to: Path

    def local_path(self) -> Path:
        path = Path(self.value)
        return path if path.is_absolute() else self.relative_to / path


@dataclass(frozen=True)
class TaskFile:
    path: Path
    names: tuple[str, ...]  # the task (or group) names it defines: what gates and results call it
    files: tuple[Located, ...]  # local files it reads: includes and data files
    functions: tuple[Located, ...]  # `!function module.name` it would import and run

    @property
    def data_files(self) -> tuple[Located, ...]:
        return tuple(item for item in self.files if not item.value.endswith((".yaml", ".yml")))


def task_file_path(spec_folder: Path, written: str) -> Path:
    """Where a `{path: ...}` task's YAML is: relative to the folder of the spec that names it."""
    path = Path(written)
    return (path if path.is_absolute() else spec_folder / path).absolute()


def read_task_file(path: Path) -> TaskFile:
    """The task YAML at `path` with the files it includes; TaskFileError for what lm-eval
    could not read either (a missing file, bad YAML, no `task`)."""
    entries, files, functions = _merged(path, [])
    names: list[str] = []
    for key in ("group", "task"):
        if key not in entries:
            continue
        _, value = entries[key]
        items = value.value if isinstance(value, SequenceNode) else [value]
        names += [item.value for item in items if isinstance(item, ScalarNode) and item.value]
    if not names:
        raise TaskFileError("no `task:` name: lm-evaluation-harness cannot run this file", path)
    files += _data_files(entries, path.parent)
    return TaskFile(path, tuple(dict.fromkeys(names)), tuple(files), tuple(functions))


_Entries = dict[str, tuple[Path, Node]]  # top-level key -> (the file that sets it, its value)


def _merged(path: Path, chain: list[Path]) -> tuple[_Entries, list[Located], list[Located]]:
    """Top-level keys of `path` over those of what it includes (lm-eval's override order)."""
    if len(chain) > _MAX_INCLUDES or path in chain:
        raise TaskFileError("includes loop or nest too deep", chain[-1])
    root = _compose(path)
    entries = {key.value: value for key, value in root.value if isinstance(key, ScalarNode)}
    files: list[Located] = []
    functions = [_located(node, path) for node in _walk(root) if node.tag == FUNCTION_TAG]
    merged: _Entries = {}
    include = entries.get("include")
    if include is not None:
        if not isinstance(include, ScalarNode):
            raise TaskFileError("include must be one file name", path, *_mark(include))
        included = _located(include, path)
        files.append(included)
        target = included.local_path()
        if not target.is_file():
            raise TaskFileError(f"included file not found: {target}", path, included.line, included.column)
        merged, more_files, more_functions = _merged(target, [*chain, path])
        files += more_files
        functions += more_functions
    merged.update({key: (path, value) for key, value in entries.items()})
    return merged, files, functions


def _compose(path: Path) -> MappingNode:
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise TaskFileError(f"over {_MAX_BYTES >> 20} MiB: not a task YAML", path)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TaskFileError(f"cannot read it: {getattr(error, 'strerror', None) or error}", path) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise TaskFileError(f"not valid YAML: {problem}", path, line, column) from None
    if not isinstance(root, MappingNode):
        raise TaskFileError("a task YAML is a mapping of settings", path)
    return root


def _data_files(entries: _Entries, folder: Path) -> list[Located]:
    """Local files the dataset is loaded from: `dataset_kwargs.data_files` (a name, a list, or
    split -> names) and a `dataset_path` written as a local path."""
    found: list[Located] = []
    if "dataset_path" in entries:
        path, dataset_path = entries["dataset_path"]
        if isinstance(dataset_path, ScalarNode) and dataset_path.value.startswith(_LOCAL_PATH_PREFIXES):
            found.append(_located(dataset_path, path, folder))
    if "dataset_kwargs" not in entries:
        return found
    path, kwargs = entries["dataset_kwargs"]
    if not isinstance(kwargs, MappingNode):
        return found
    for key, value in kwargs.value:
        if isinstance(key, ScalarNode) and key.value in ("data_files", "data_dir"):
            found += [_located(node, path, folder) for node in _walk(value)
                      if isinstance(node, ScalarNode) and node.value and "://" not in node.value]
    return found


def _walk(node: Node) -> list[Node]:
    """`node` and every node under it; for a mapping, its values (keys are names, not paths)."""
    out = [node]
    if isinstance(node, SequenceNode):
        for item in node.value:
            out += _walk(item)
    elif isinstance(node, MappingNode):
        for _, value in node.value:
            out += _walk(value)
    return out


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _located(node: Node, path: Path, relative_to: Path | None = None) -> Located:
    return Located(str(node.value), path, *_mark(node), relative_to or path.parent)
