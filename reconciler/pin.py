"""`tuneops pin`: write into the spec files the pins that make a build reproducible, and nothing else.

A local Dataset file is pinned by its `sha256` (the digest fingerprints use, so the two agree),
an `hf://` BaseModel or Dataset by the commit its branch points at now (`revision`). Specs are
written by people and reviewed in diffs, so a pin must be a one-line change: ruamel.yaml's
round-trip composer gives the exact span and quoting of each value, the pin is spliced into the
text there, and the result is read back and compared with the original before the file is
replaced atomically. Commits come from the local Hugging Face cache, else from the Hub API only
when HF_ENDPOINT is set: no network otherwise.
"""

from __future__ import annotations

import codecs
import difflib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode

from reconciler.config import STATE_DIR
from reconciler.fileio import write_text_atomic
from reconciler.sizing.architectures import HUB_TIMEOUT_S, hub_cache, read_hub_answer
from reconciler.sources_digest import CACHE_FILE, DigestCache
from reconciler.specs.base import SpecValueError
from reconciler.specs.confinement import FileRoots, OutsideRoots, resolve_inside
from reconciler.specs.loader import discover, display_path, load_settings, read_yaml_file, resolve_scope
from reconciler.specs.problems import printable
from reconciler.specs.sources import is_pinned_hf_revision, parse_source
from reconciler.specs.yamldoc import YamlError, read_documents

if TYPE_CHECKING:
    from ruamel.yaml.nodes import Node

RepoType = Literal["model", "dataset"]
PINNED_KINDS: dict[str, RepoType] = {"BaseModel": "model", "Dataset": "dataset"}
_NOT_A_STRING = re.compile(r"[0-9]+([eE][0-9]+)?")  # plain, these hex strings would read as numbers
_SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")


@dataclass(frozen=True)
class Finding:
    """One source and its pin: what is missing or wrong (`--check`), or what was written."""

    file: str
    line: int
    resource: str  # "Dataset/support"
    field: str  # "spec.sha256" or "spec.revision"
    message: str

    def text(self) -> str:
        return printable(f"{self.file}:{self.line}: {self.resource} {self.field}: {self.message}")


@dataclass
class PinResult:
    unpinned: list[Finding] = field(default_factory=list)  # lacking or wrong, as found
    pinned: list[Finding] = field(default_factory=list)  # written (or, with dry_run, to be)
    left: list[Finding] = field(default_factory=list)  # --offline: the cache does not know them
    errors: list[str] = field(default_factory=list)  # "file:line: message"; such files are untouched
    diffs: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)


class PinError(Exception):
    """A pin that cannot be worked out; the message says what to do."""


def check(path: Path) -> PinResult:
    """Every local Dataset file without its right sha256 and every hf:// source without a commit."""
    return _run(path, hub=None, dry_run=True)


def pin(path: Path, *, offline: bool = False, dry_run: bool = False) -> PinResult:
    """Write the missing pins into the spec files at `path` (a spec file or a project folder)."""
    return _run(path, hub=HubRevisions(offline=offline), dry_run=dry_run)


class HubRevisions:
    """The commit a Hub branch or tag points at: the local cache first, then HF_ENDPOINT's API."""

    def __init__(self, *, offline: bool):
        self.offline = offline
        self.endpoint = None if offline else (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None

    def commit(self, repo_type: RepoType, repo: str, revision: str) -> str | None:
        """The 40-hex commit, or None when offline and the cache does not know it."""
        cached = self.cached_commit(repo_type, repo, revision)
        if cached is not None:
            return cached
        if self.endpoint is not None:
            return self.hub_commit(repo_type, repo, revision)
        if self.offline:
            return None
        kind_option = "--repo-type dataset " if repo_type == "dataset" else ""
        download = f"huggingface-cli download {kind_option}{repo}"
        raise PinError(f"the commit of {repo_type} {repo} at '{revision}' is not in the Hugging Face cache "
                       f"({hub_cache()}) and HF_ENDPOINT is not set (no network without it): set "
                       f"HF_ENDPOINT=https://huggingface.co to ask the Hub, download it first "
                       f"(`{download}`), or pass --offline to pin only what the cache knows")

    @staticmethod
    def cached_commit(repo_type: RepoType, repo: str, revision: str) -> str | None:
        folder = hub_cache() / f"{repo_type}s--{repo.replace('/', '--')}"
        if ".." not in revision.split("/") and not revision.startswith("/"):
            try:
                commit = (folder / "refs" / revision).read_text(encoding="utf-8").strip()
            except (OSError, ValueError):
                commit = ""
            if is_pinned_hf_revision(commit):
                return commit
        if _SHORT_SHA.fullmatch(revision):  # an abbreviated commit: its one snapshot, if downloaded
            try:
                matches = [s.name for s in (folder / "snapshots").iterdir() if s.name.startswith(revision)]
            except OSError:
                matches = []
            if len(matches) == 1 and is_pinned_hf_revision(matches[0]):
                return matches[0]
        return None

    def hub_commit(self, repo_type: RepoType, repo: str, revision: str) -> str:
        import urllib.error
        import urllib.request
        from urllib.parse import quote

        url = f"{self.endpoint}/api/{repo_type}s/{repo}/revision/{quote(revision, safe='')}"
        headers = {"User-Agent": "tuneops", "Accept": "application/json"}
        if os.environ.get("HF_TOKEN"):
            headers["Authorization"] = f"Bearer {os.environ['HF_TOKEN']}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=HUB_TIMEOUT_S) as answer:
                commit = json.loads(read_hub_answer(answer)).get("sha")
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise PinError(f"{self.endpoint} refused {repo_type} {repo} (HTTP {error.code}): a gated or "
                               "private repository needs HF_TOKEN") from None
            if error.code == 404:
                raise PinError(f"{self.endpoint} has no {repo_type} {repo} at '{revision}' "
                               "(HTTP 404)") from None
            raise PinError(f"{self.endpoint} answered HTTP {error.code} for {repo_type} {repo}") from None
        except (OSError, ValueError, AttributeError) as error:
            reason = getattr(error, "reason", None) or error
            raise PinError(f"cannot ask {self.endpoint} for {repo_type} {repo}: {reason}") from None
        if not isinstance(commit, str) or not is_pinned_hf_revision(commit):
            raise PinError(f"{self.endpoint} gave no commit sha for {repo_type} {repo} at '{revision}'")
        return commit


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class _Pin:
    finding: Finding
    identity: tuple[str, str]  # (kind, name) of the document, to check the result against
    key: str  # "sha256" or "revision"
    value: str
    edit: _Edit


def _run(path: Path, *, hub: HubRevisions | None, dry_run: bool) -> PinResult:
    root, files = resolve_scope([path])
    settings, _, _ = load_settings(root)  # a broken tuneops.yaml is validate's to report
    roots = FileRoots.of_project(root, settings.policy.allowed_file_roots)
    state = root / STATE_DIR
    digests = DigestCache(state / CACHE_FILE if state.is_dir() else None)
    result = PinResult()
    for file in files if files is not None else discover(root, settings.exclude):
        _pin_file(file, roots, digests, hub, dry_run, result)
    digests.save()
    return result


def _pin_file(file: Path, roots: FileRoots, digests: DigestCache, hub: HubRevisions | None,
              dry_run: bool, result: PinResult) -> None:
    shown = display_path(file)
    _, problems, text = read_yaml_file(file, shown)
    if problems or text is None:
        result.errors += [f"{p.position.file}:{p.position.line}: {p.message}"
                          + (f" ({p.hint})" if p.hint else "") for p in problems]
        return
    try:
        targets = _targets(text)
    except YAMLError as error:  # ruamel reads what libyaml read; should it not, say where
        mark = getattr(error, "problem_mark", None)
        result.errors.append(f"{shown}:{mark.line + 1 if mark else 1}: cannot read for pinning: {error}")
        return
    pins: list[_Pin] = []
    errors: list[str] = []
    for target in targets:
        try:
            found = _examine(target, text, file, shown, roots, digests, hub, result)
        except PinError as error:
            errors.append(f"{shown}:{target.line}: {target.resource}: {error}")
            continue
        if found is not None:
            pins.append(found)
    result.errors += errors
    if hub is None or not pins or errors:
        return  # a file with a pin that cannot be worked out is left as it is
    new_text = text
    for edit in sorted((p.edit for p in pins), key=lambda e: e.start, reverse=True):
        new_text = new_text[:edit.start] + edit.text + new_text[edit.end:]
    if not _only_pins_changed(text, new_text, pins):
        result.errors.append(f"{shown}:{pins[0].finding.line}: cannot pin this file in place without "
                             "changing more than the pins: add them by hand")
        return
    result.pinned += [p.finding for p in pins]
    result.diffs.append("".join(difflib.unified_diff(
        text.splitlines(keepends=True), new_text.splitlines(keepends=True), f"a/{shown}", f"b/{shown}")))
    if not dry_run:
        bom = "\ufeff" if file.read_bytes().startswith(codecs.BOM_UTF8) else ""
        write_text_atomic(file, bom + new_text, mode=stat.S_IMODE(file.stat().st_mode))
        result.written.append(shown)


@dataclass(frozen=True)
class _Target:
    """A BaseModel or Dataset document's spec, as ruamel composed it."""

    kind: str
    name: str
    spec: MappingNode
    entries: dict[str, tuple[Node, Node]]
    source: str

    @property
    def resource(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def key(self) -> str:
        """The field that pins this source: a file's sha256, else a Hub revision."""
        return "sha256" if self.source.startswith("file://") else "revision"

    def current(self) -> str | None:
        node = self.entries.get(self.key, (None, None))[1]
        return node.value if isinstance(node, ScalarNode) and node.value not in ("", "~", "null") else None

    @property
    def line(self) -> int:
        """Where a finding points: the pin's line when there is one, else the source's."""
        node = self.entries[self.key][1] if self.current() else None
        return (node or self.entries["source"][1]).start_mark.line + 1


def _targets(text: str) -> list[_Target]:
    def entries(node: MappingNode) -> dict[str, tuple[Node, Node]]:
        return {key.value: (key, value) for key, value in node.value if isinstance(key, ScalarNode)}

    def scalar(pairs: dict[str, tuple[Node, Node]], key: str) -> str | None:
        value = pairs.get(key, (None, None))[1]
        return value.value if isinstance(value, ScalarNode) else None

    found = []
    for document in YAML(typ="rt").compose_all(text):
        if not isinstance(document, MappingNode):
            continue
        top = entries(document)
        kind, api_version = scalar(top, "kind"), scalar(top, "apiVersion")
        if kind not in PINNED_KINDS or (api_version is not None and "tuneops" not in api_version):
            continue
        metadata, spec = top.get("metadata", (None, None))[1], top.get("spec", (None, None))[1]
        if not isinstance(spec, MappingNode):
            continue
        pairs = entries(spec)
        source = scalar(pairs, "source")
        if source is None:
            continue
        name = scalar(entries(metadata), "name") if isinstance(metadata, MappingNode) else None
        found.append(_Target(kind, name or "?", spec, pairs, source))
    return found


def _examine(target: _Target, text: str, file: Path, shown: str, roots: FileRoots, digests: DigestCache,
             hub: HubRevisions | None, result: PinResult) -> _Pin | None:
    """Record what `target` lacks; with `hub` (pinning), also the pin that fixes it."""
    try:
        source = parse_source(target.source)
    except SpecValueError:
        return None  # validate says what is wrong with it
    current, line = target.current(), target.line
    if source.scheme == "file" and target.kind == "Dataset":
        key = "sha256"
        try:
            path = resolve_inside(source.local_path(file.parent).absolute(), roots.all, roots.describe())
        except OutsideRoots as error:
            raise PinError(f"{target.source}: {error}") from None
        if not path.is_file():
            raise PinError(f"{target.source} is not a file ({path}): there are no bytes to pin")
        try:
            wanted: str | None = digests.file_digest(path)
        except OSError as error:
            raise PinError(f"cannot read {path}: {error.strerror or error}") from None
        if current == wanted:
            return None
        problem = "missing" if current is None else f"does not match the file: its sha256 is {wanted}"
    elif source.scheme == "hf":
        key = "revision"
        if is_pinned_hf_revision(current):
            return None
        problem = "no commit revision" if current is None else f"'{current}' is a branch or tag, not a commit"
        wanted = None
    else:
        return None  # s3:// is not pinned here; a local model folder is fingerprinted by its content
    field_path = f"spec.{key}"
    result.unpinned.append(Finding(shown, line, target.resource, field_path, f"{problem} ({target.source})"))
    if hub is None:
        return None
    if wanted is None:
        wanted = hub.commit(PINNED_KINDS[target.kind], source.location, current or "main")
        if wanted is None:
            result.left.append(Finding(shown, line, target.resource, field_path, f"'{current or 'main'}' "
                                       f"of {target.source} is not in the Hugging Face cache"))
            return None
    edit = _edit(text, target, key, wanted)
    return _Pin(Finding(shown, line, target.resource, field_path, wanted), (target.kind, target.name),
                key, wanted, edit)


def _edit(text: str, target: _Target, key: str, value: str) -> _Edit:
    """The splice that sets spec.<key> to `value`, in the value's own quoting, or as a new line
    below `source:` indented like it."""
    existing = target.entries.get(key)
    if existing is not None:
        key_node, node = existing
        start, end = node.start_mark.index, node.end_mark.index
        if node.value == "" and not node.style:  # `sha256:` with nothing after it
            colon = text.index(":", key_node.end_mark.index)
            return _Edit(colon + 1, colon + 1, " " + _scalar(value, ""))
        if node.start_mark.line != node.end_mark.line or text[start] in "|>*&!":
            raise PinError(f"spec.{key} is not a plain one-line value (a block scalar, an anchor or an "
                           f"alias): write `{key}: {value}` by hand")
        quote = text[start] if text[start] in "'\"" else ""
        return _Edit(start, end, _scalar(value, quote))
    spec = target.spec
    if text[spec.start_mark.index] == "{":  # spec: {source: ..., ...}
        closing = spec.end_mark.index - 1
        while closing > 0 and text[closing - 1] in " \t\r\n":
            closing -= 1
        return _Edit(closing, closing, f", {key}: {_scalar(value, '')}")
    source_key, source_value = target.entries["source"]
    newline = "\r\n" if "\r\n" in text else "\n"
    line = f"{' ' * source_key.start_mark.column}{key}: {_scalar(value, '')}"
    end = source_value.end_mark.index
    if end > 0 and text[end - 1] == "\n":  # a block scalar ends at the start of the next line
        return _Edit(end, end, line + newline)
    after = text.find("\n", end)
    if after < 0:  # the last line, with no newline at its end
        return _Edit(len(text), len(text), newline + line)
    return _Edit(after + 1, after + 1, line + newline)


def _scalar(value: str, quote: str) -> str:
    if not quote and _NOT_A_STRING.fullmatch(value):
        quote = '"'
    return f"{quote}{value}{quote}"


def _only_pins_changed(before: str, after: str, pins: list[_Pin]) -> bool:
    """Whether `after` reads as `before` with the pins set and nothing else changed."""
    try:
        old, new = read_documents(before), read_documents(after)
    except YamlError:
        return False
    changes: dict[tuple[str, str], dict[str, str]] = {}
    for pin_ in pins:
        changes.setdefault(pin_.identity, {})[pin_.key] = pin_.value
    if len(old) != len(new):
        return False
    for was, now in zip(old, new, strict=True):
        expected = was.data
        if isinstance(expected, dict) and isinstance(expected.get("spec"), dict):
            metadata = expected.get("metadata")
            name = metadata.get("name") if isinstance(metadata, dict) else None
            wanted = changes.pop((expected.get("kind"), name or "?"), None)
            if wanted:
                expected = {**expected, "spec": {**expected["spec"], **wanted}}
        if expected != now.data:
            return False
    return not changes
