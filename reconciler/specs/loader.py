"""A spec repository on disk -> validated resources, each knowing its file and positions.

Layers 1 and 2 of validation happen here: reading (size, encoding, YAML syntax) and the
envelope and schema of each document. Whole-repository rules live in `rules/`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.config import PROJECT_FILE, STATE_DIR, ProjectSettings
from reconciler.errors import PermanentError
from reconciler.specs.base import API_VERSION, TEAM_SEPARATOR, Resource, ResourceId, qualified_name
from reconciler.specs.kinds import KINDS, RULE_KINDS
from reconciler.specs.problems import Position, Problem, Severity, describe_value
from reconciler.specs.schema_errors import Locate, problems_from_validation_error, suggest
from reconciler.specs.teams import teams_of_file
from reconciler.specs.yamldoc import Document, YamlError, read_documents

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Spec files are small; a larger YAML file in the tree is almost surely data, read by mistake."""

SPEC_SUFFIXES = (".yaml", ".yml")
_EXCLUDE_HINT = f"move it out of the spec directory, or list it under `exclude` in {PROJECT_FILE}"


@dataclass(frozen=True)
class LoadedSpec:
    """A valid resource and where it was written."""

    resource: Resource
    file: str  # as shown to the user
    path: Path  # absolute path of the file
    document: Document

    @property
    def id(self) -> ResourceId:
        return self.resource.id

    def position(self, path: tuple[Any, ...] = (), *, key: bool = False) -> Position:
        line, column = self.document.position(path, key=key)
        return Position(self.file, line, column)


@dataclass
class LoadResult:
    root: Path
    settings: ProjectSettings
    specs: list[LoadedSpec] = field(default_factory=list)
    declared: set[ResourceId] = field(default_factory=set)  # named by any document, valid or not
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    settings_file: str | None = None
    settings_document: Document | None = None  # tuneops.yaml as read: where each setting is
    tuneops_documents: int = 0  # documents (or unparsed files) that say they are tuneops specs
    unparsed: dict[str, str | None] = field(default_factory=dict)  # file -> its text; None: unread

    @property
    def is_project(self) -> bool:
        """A tuneops.yaml, or at least one tuneops spec: a folder of Kubernetes manifests, CI
        files or fixtures is not a spec project, and its YAML is not reported on as specs."""
        return self.settings_file is not None or self.tuneops_documents > 0


def display_path(path: Path, cwd: Path | None = None) -> str:
    """Paths in messages: relative to the working directory when below it, like compilers print."""
    cwd = cwd or Path.cwd()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def discover(root: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Spec files below `root`, sorted. Skips hidden folders, `.tuneops/`, the project file, and
    sub-folders with their own `tuneops.yaml` (they are separate projects)."""
    found = []
    top = str(root)
    for folder, subfolders, files in os.walk(top):
        subfolders[:] = sorted(
            d for d in subfolders
            if not d.startswith(".") and d != STATE_DIR
            and not os.path.isfile(os.path.join(folder, d, PROJECT_FILE))
        )
        relative_folder = os.path.relpath(folder, top).replace(os.sep, "/")
        for name in sorted(files):
            if not name.endswith(SPEC_SUFFIXES) or name.startswith("."):
                continue
            if folder == top and name == PROJECT_FILE:
                continue
            relative = name if relative_folder == "." else f"{relative_folder}/{name}"
            if exclude and any(fnmatch.fnmatch(relative, pattern) for pattern in exclude):
                continue
            found.append(root / relative)
    return found


UNPARSED_CODES = frozenset({"yaml-syntax", "not-utf8", "unreadable-file"})
"""Problems that leave (part of) a spec file unread: what it declares is unknown."""


def read_yaml_file(path: Path, shown: str) -> tuple[list[Document], list[Problem], str | None]:
    """Read and parse one file, turning every way it can be unreadable into a Problem. Also
    returns the text (None when it could not be read), which says what a file that did not
    parse meant to declare."""

    def problem(code: str, message: str, line: int = 1, column: int = 1, hint: str | None = None,
                text: str | None = None) -> tuple[list[Document], list[Problem], str | None]:
        return [], [Problem(Severity.ERROR, code, message, Position(shown, line, column), hint=hint,
                            source_line=_line_of(text, line) if code == "yaml-syntax" else None)], text

    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):  # a FIFO would block the read forever
            return problem("unreadable-file", "not a regular file", hint=_EXCLUDE_HINT)
        size = status.st_size
        if size > MAX_FILE_BYTES:
            return problem("file-too-large",
                           f"file is {size / 1e6:.1f} MB; spec files are limited to "
                           f"{MAX_FILE_BYTES // (1024 * 1024)} MiB", hint=_EXCLUDE_HINT)
        raw = path.read_bytes()
    except OSError as error:
        return problem("unreadable-file", f"cannot read file: {error.strerror or error}")
    if b"\x00" in raw:
        return problem("binary-file", "binary file, not YAML", hint=_EXCLUDE_HINT)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        return problem("not-utf8", f"not valid UTF-8: byte 0x{raw[error.start]:02x}", line, column,
                       "save the file as UTF-8", text=raw.decode("utf-8", "replace"))
    errors: list[YamlError] = []
    try:
        documents = read_documents(text, errors)
    except YamlError as error:
        return problem("yaml-syntax", error.message, error.line, error.column, error.hint, text)
    return documents, [
        Problem(Severity.ERROR, "yaml-syntax", error.message, Position(shown, error.line, error.column),
                hint=error.hint, source_line=_line_of(text, error.line))
        for error in errors
    ], text


def _line_of(text: str | None, line: int) -> str | None:
    lines = text.splitlines() if text else []
    return lines[line - 1] if 1 <= line <= len(lines) else None


def load_settings(root: Path) -> tuple[ProjectSettings, list[Problem], str | None]:
    settings, problems, shown, _ = read_settings(root)
    return settings, problems, shown


def read_settings(root: Path) -> tuple[ProjectSettings, list[Problem], str | None, Document | None]:
    """tuneops.yaml's settings, its problems, its path as shown, and its document (positions)."""
    path = root / PROJECT_FILE
    if not path.is_file():
        return ProjectSettings(), [], None, None
    shown = display_path(path)
    documents, problems, _ = read_yaml_file(path, shown)
    if problems:
        return ProjectSettings(), problems, shown, None
    if not documents:
        return ProjectSettings(), [], shown, None
    document = documents[0]
    if len(documents) > 1 or not isinstance(document.data, dict):
        line, column = document.position(())
        return ProjectSettings(), [Problem(
            Severity.ERROR, "invalid-settings",
            f"{PROJECT_FILE} must be a single mapping of settings", Position(shown, line, column),
        )], shown, None
    try:
        return ProjectSettings.model_validate(document.data), [], shown, document
    except ValidationError as error:
        locate = _locator(document)
        return _teams_of(document.data), problems_from_validation_error(
            error, ProjectSettings, shown, locate, source_text=document.source_text), shown, document


def _teams_of(data: dict) -> ProjectSettings:
    """Default settings, but for the teams when they are valid: an error elsewhere in tuneops.yaml
    does not turn every team's specs into one team's duplicates."""
    try:
        return ProjectSettings.model_validate({key: data[key] for key in ("teams",) if key in data})
    except ValidationError:
        return ProjectSettings()


def _locator(document: Document) -> Locate:
    return lambda path, key: document.position(path, key=key)


class ScopeError(PermanentError, ValueError):
    """Paths that do not make one project, e.g. files from two different projects."""


def settings_root(start: Path) -> Path | None:
    """The nearest folder from `start` up that holds a tuneops.yaml, not leaving the Git
    repository (as git finds its own folder); None when there is none."""
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
        if (folder / ".git").exists():
            break
    return None


def project_root(start: Path) -> Path:
    """The project a folder or a spec file's folder belongs to: the nearest tuneops.yaml up, or
    without one `start` itself (a folder of specs needs no settings)."""
    return settings_root(start) or start


def nested_projects(root: Path, limit: int = 5) -> list[Path]:
    """Folders below `root` that hold a tuneops.yaml: where the user probably meant to be."""
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d != STATE_DIR)
        if PROJECT_FILE in files and folder != str(root):
            found.append(Path(folder))
            if len(found) >= limit:
                break
    return found


_TUNEOPS_KIND = re.compile(r"^kind:[ \t]*['\"]?(" + "|".join(KINDS) + r")\b", re.MULTILINE)
_ANY_API_VERSION = re.compile(r"^apiVersion:", re.MULTILINE)


def _is_tuneops_document(api_version: object, kind: object) -> bool:
    """Our apiVersion, or one of our kinds with no apiVersion at all (Kubernetes has a
    `Deployment` too)."""
    if api_version is None:
        return isinstance(kind, str) and kind in KINDS
    return isinstance(api_version, str) and "tuneops" in api_version


def _looks_like_specs(text: str) -> bool:
    """The same question for a file that did not parse, asked of its text."""
    if "tuneops.dev/" in text:
        return True
    return _ANY_API_VERSION.search(text) is None and _TUNEOPS_KIND.search(text) is not None


def resolve_scope(paths: list[Path]) -> tuple[Path, list[Path] | None]:
    """(project root, the files asked about, or None for the whole project).

    One folder names the whole project it is in: the nearest folder up with a tuneops.yaml, or
    the folder itself. Files are validated within their project, so references to the specs
    beside them resolve, and only their own problems are reported."""
    resolved = [path.resolve() for path in paths]
    if len(resolved) == 1 and resolved[0].is_dir():
        return project_root(resolved[0]), None
    if any(path.is_dir() for path in resolved):
        raise ScopeError("give one folder, or any number of files, not both")
    roots = sorted({project_root(path.parent) for path in resolved})
    if len(roots) > 1:
        raise ScopeError("these files belong to different projects: "
                         + ", ".join(display_path(root) for root in roots))
    return roots[0], resolved


def load(root: Path, also: list[Path] | tuple[Path, ...] = ()) -> LoadResult:
    """Read every spec of the project at `root` (plus `also`, files discovery would skip) and
    validate each on its own."""
    root = root.resolve()
    settings, problems, settings_file, settings_document = read_settings(root)
    result = LoadResult(root=root, settings=settings, problems=list(problems),
                        settings_file=settings_file, settings_document=settings_document)
    if settings_file:
        result.files.append(settings_file)
    files = discover(root, settings.exclude)
    files += [f for f in also if f not in files and f != root / PROJECT_FILE]
    misnamed = root / "tuneops.yml"
    if misnamed.is_file():
        files = [f for f in files if f != misnamed]
        result.problems.append(Problem(
            Severity.ERROR, "invalid-settings", "project settings are read from tuneops.yaml only",
            Position(display_path(misnamed), 1, 1), hint="rename this file to tuneops.yaml"))
    if not files:
        result.problems.append(Problem(
            Severity.WARNING, "no-specs", f"no spec files (*.yaml, *.yml) under {display_path(root)}",
            Position(display_path(root), 1, 1), hint="is this the folder that holds your specs?"))
    cwd = Path.cwd()
    for file_path in files:
        shown = display_path(file_path, cwd)
        result.files.append(shown)
        documents, problems, text = read_yaml_file(file_path, shown)
        result.problems.extend(problems)
        if any(p.code in UNPARSED_CODES for p in problems):
            result.unparsed[shown] = text
            if text is not None and _looks_like_specs(text):
                result.tuneops_documents += 1
        if not documents and not problems:
            result.problems.append(Problem(
                Severity.ERROR, "empty-file",
                "no spec documents: the file is empty or holds only comments",
                Position(shown, 1, 1), hint=_EXCLUDE_HINT))
        teams = teams_of_file(_relative_to(file_path, root), settings.teams) if settings.teams else []
        for document in documents:
            _load_document(document, file_path, shown, result, teams)
    return result


def _team_of_document(kind: object, teams: list[str], result: LoadResult, where: Position) -> str | None:
    """The team a spec's names are qualified with. A project with teams reports a spec in no
    team's paths, or in two, once per document, and loads it under its bare name."""
    if not result.settings.teams or not isinstance(kind, str) or kind not in KINDS or kind in RULE_KINDS:
        return None
    if len(teams) == 1:
        return teams[0]
    if teams:
        result.problems.append(Problem(
            Severity.ERROR, "team-ambiguous",
            f"this file is in the paths of {len(teams)} teams ({', '.join(teams)}); a spec belongs to one",
            where, hint=f"narrow the teams' paths in {PROJECT_FILE} so that only one holds it"))
        return None
    configured = "; ".join(f"{team}: {', '.join(s.paths)}" for team, s in result.settings.teams.items())
    result.problems.append(Problem(
        Severity.ERROR, "team-unknown",
        f"this file is in no team's paths; with teams in {PROJECT_FILE}, every spec belongs to one",
        where, hint=f"move it into a team's folder, or add its folder to a team's paths ({configured})"))
    return None


def _relative_to(path: Path, root: Path) -> str | None:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


def _load_document(document: Document, file_path: Path, shown: str, result: LoadResult,
                   teams: list[str]) -> None:
    data = document.data

    def here(path: tuple[Any, ...] = (), key: bool = False) -> Position:
        line, column = document.position(path, key=key)
        return Position(shown, line, column)

    def error(code: str, message: str, position: Position, path: str = "",
              value: str | None = None, hint: str | None = None) -> None:
        result.problems.append(Problem(Severity.ERROR, code, message, position, path, value, hint))

    if not isinstance(data, dict):
        error("not-a-mapping",
              "a spec document must be a mapping with apiVersion, kind, metadata and spec",
              here(), value=describe_value(data))
        return
    # A spec that is invalid still exists: references to it are not "missing".
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    kind = data.get("kind")
    named_at = here(("metadata", "name")) if isinstance(name, str) else here()
    team = _team_of_document(kind, teams, result, named_at)
    if isinstance(kind, str) and kind in KINDS and isinstance(name, str):
        # a name that is not a label (`a.x` written in metadata.name) is reported, and counted as is
        result.declared.add(ResourceId(kind, name if TEAM_SEPARATOR in name else qualified_name(team, name)))
    api_version = data.get("apiVersion")
    if _is_tuneops_document(api_version, kind):
        result.tuneops_documents += 1

    if api_version is None:
        error("missing-field", "required field is missing", here(), "apiVersion",
              hint=f"add apiVersion: {API_VERSION}")
        data = {"apiVersion": API_VERSION, **data}  # still check the rest of the document
    elif api_version != API_VERSION:
        foreign = not (isinstance(api_version, str) and "tuneops" in api_version)
        error("unsupported-api-version",
              f"unsupported apiVersion; this release reads {API_VERSION}",
              here(("apiVersion",)), "apiVersion", describe_value(api_version),
              "this is not a tuneops spec: " + _EXCLUDE_HINT if foreign else None)
        return  # the rest would be judged by the wrong schema

    kind = data.get("kind")
    if kind is None:
        error("missing-field", "required field is missing", here(), "kind",
              hint=f"one of {', '.join(KINDS)}")
    elif not isinstance(kind, str):
        error("wrong-type", "must be a string", here(("kind",)), "kind", describe_value(kind))
        kind = None
    elif kind not in KINDS:
        error("unknown-kind", f"unknown kind (tuneops kinds: {', '.join(KINDS)})",
              here(("kind",)), "kind", describe_value(kind), suggest(kind, KINDS))
        kind = None

    if kind is None:
        return

    model = KINDS[kind]
    label = f"{kind}/{name}" if isinstance(name, str) else kind
    try:
        resource = model.model_validate(data, context={"team": team})
    except ValidationError as validation_error:
        result.problems.extend(problems_from_validation_error(
            validation_error, model, shown, _locator(document), label,
            source_text=document.source_text))
        return
    result.specs.append(LoadedSpec(resource, shown, file_path, document))
