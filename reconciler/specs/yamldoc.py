"""YAML text -> plain Python documents that remember where every value came from.

Read through libyaml (PyYAML's C parser), which keeps each node's line and column and is
about 25x faster than a round-trip loader. The node tree is kept beside each document so that
positions are looked up only for values that have a problem.

Defences, because spec files arrive in pull requests:
- a stream is split at document markers and each document composed alone (libyaml slows
  down sharply on long multi-document streams);
- nesting deeper than MAX_DEPTH is refused before composing (libyaml's composer recurses in C
  and crashes the process on very deep input);
- aliases are allowed, but a document that expands to more than MAX_VALUES values is refused
  (the "billion laughs" alias bomb), and so is an alias that contains itself;
- duplicate keys in one mapping are an error, not a silent overwrite.

Scalars follow the YAML 1.2 core schema, not PyYAML's YAML 1.1 defaults: `2e-4` is a number,
`yes`, `no`, `on` and `off` are strings, and dates stay strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import CollectionEndEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.errors import PermanentError
from reconciler.specs.yaml_errors import locate

MAX_DEPTH = 64
MAX_VALUES = 100_000
_SAFE_TO_COMPOSE = 8_000  # a chunk this short cannot nest deep enough to hurt libyaml

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"
MAP = "tag:yaml.org,2002:map"
SEQ = "tag:yaml.org,2002:seq"
MERGE = "tag:yaml.org,2002:merge"

_INT = re.compile(r"^[-+]?[0-9]+$|^0o[0-7]+$|^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$"
                    r"|^\.(nan|NaN|NAN)$")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
MAX_DOCUMENTS = 20_000  # per file; more is a generated file or an attack, not a spec repository

try:
    from yaml.cyaml import CParser as _Parser  # `yaml` itself does not export CParser
except ImportError:  # PyYAML built without libyaml: slower, same results
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser, Composer):  # type: ignore[no-redef]
        def __init__(self, stream: str):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)


LIBYAML = _Parser.__module__ == "yaml._yaml"


class _SpecLoader(_Parser):
    """libyaml's parser and composer with a YAML 1.2 core-schema resolver (see module docstring)."""

    def __init__(self, stream: str):
        _Parser.__init__(self, stream)

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return STR
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = _resolve_plain(value)
                if len(_PLAIN_TAGS) < 50_000:  # keys and common values repeat across specs
                    _PLAIN_TAGS[value] = tag
            return tag
        return SEQ if kind is SequenceNode else MAP


_PLAIN_TAGS: dict[str, str] = {}


def _resolve_plain(value: str) -> str:
    if value in _NULLS:
        return NULL
    if value in _BOOLS:
        return BOOL
    if value == "<<":
        return MERGE
    if value[0] in "-+.0123456789":
        if _INT.fullmatch(value):
            return INT
        if _FLOAT.fullmatch(value):
            return FLOAT
    return STR


class YamlError(PermanentError):
    """A document that cannot be read; carries a 1-based position within the file."""

    def __init__(self, message: str, line: int = 1, column: int = 1, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.hint = hint


@dataclass
class Document:
    """One YAML document: its plain value plus the node tree for looking up positions."""

    data: Any
    root: Node
    line_offset: int  # 0-based line of this document's chunk within the file
    index: int  # position of the document in its file, from 0
    source: str = field(default="", repr=False, compare=False)  # its chunk's text, as read
    _key_cache: dict[int, dict[str, tuple[Node, Node]]] = field(default_factory=dict, repr=False)

    def position(self, path: tuple[Any, ...], *, key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the value at `path`, or of its key when `key` is set.

        A path that leaves the document (a missing field) stops at the deepest existing
        node: the mapping that should have held it.
        """
        node: Node = self.root
        key_node: Node | None = None
        for part in path:
            if isinstance(node, MappingNode):
                entries = self._entries(node)
                if not isinstance(part, str) or part not in entries:
                    break
                key_node, node = entries[part]
            elif isinstance(node, SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                key_node, node = None, node.value[part]
            else:
                break
        target = key_node if (key or not isinstance(node, ScalarNode)) and key_node else node
        mark = target.start_mark
        return mark.line + self.line_offset + 1, mark.column + 1

    def has(self, path: tuple[Any, ...]) -> bool:
        """Whether the document writes the value at `path` (defaults are not written)."""
        return self._node_at(path) is not None

    def source_text(self, path: tuple[Any, ...]) -> str | None:
        """The scalar at `path` as written in the file (`1.30`, not the parsed 1.3)."""
        node = self._node_at(path)
        return node.value if isinstance(node, ScalarNode) else None

    def _node_at(self, path: tuple[Any, ...]) -> Node | None:
        """The node at `path`; None when the document does not write it."""
        node: Node = self.root
        for part in path:
            if isinstance(node, MappingNode) and isinstance(part, str) and part in self._entries(node):
                node = self._entries(node)[part][1]
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return None
        return node

    def _entries(self, node: MappingNode) -> dict[str, tuple[Node, Node]]:
        cached = self._key_cache.get(id(node))
        if cached is None:
            cached = {}
            for key_node, value_node in _mapping_pairs(node):
                if isinstance(key_node, ScalarNode):
                    cached.setdefault(key_node.value, (key_node, value_node))
            self._key_cache[id(node)] = cached
        return cached


def _mapping_pairs(node: MappingNode) -> list[tuple[Node, Node]]:
    """The mapping's own pairs first, then pairs brought in by `<<` merge keys."""
    own, merged = [], []
    for key_node, value_node in node.value:
        if key_node.tag == MERGE:
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if isinstance(source, MappingNode):
                    merged.extend(_mapping_pairs(source))
        else:
            own.append((key_node, value_node))
    return own + merged


def split_documents(text: str) -> list[tuple[int, str]]:
    """Cut a stream at `---` lines: [(0-based first line, chunk)].

    A line starting with a document marker ends any block scalar in YAML, so cutting there
    never changes what a document means (a chunk may still hold `...`-separated documents,
    which libyaml reads as usual). Streams with directives are left whole.
    """
    if "%" in text and re.search(r"^%", text, re.MULTILINE):
        return [(0, text)]
    starts = [m.start() for m in _DOCUMENT_START.finditer(text)]
    if not starts:
        return [(0, text)]
    bounds = ([0] if starts[0] != 0 else []) + starts + [len(text)]
    chunks, line = [], 0
    for begin, end in zip(bounds, bounds[1:], strict=False):
        chunk = text[begin:end]
        chunks.append((line, chunk))
        line += chunk.count("\n")
    return chunks


def _check_depth(chunk: str) -> None:
    depth = 0
    for event in yaml.parse(chunk, Loader=_SpecLoader):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlError(f"nesting deeper than {MAX_DEPTH} levels is not supported",
                                mark.line + 1, mark.column + 1)
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def read_documents(text: str, errors: list[YamlError] | None = None) -> list[Document]:
    """Every non-empty document in `text`.

    Without `errors`, raises YamlError at the first unreadable document. With a list, records
    each unreadable document's error there and goes on with the next, so one bad document does
    not hide the others.
    """
    documents: list[Document] = []
    chunks = split_documents(text)
    if len(chunks) > MAX_DOCUMENTS:
        raise YamlError(f"more than {MAX_DOCUMENTS:,} documents in one file",
                        hint="split the file")
    for line_offset, chunk in chunks:
        try:
            documents.extend(_read_chunk(chunk, line_offset, len(documents)))
        except YamlError as error:
            if errors is None:
                raise
            errors.append(error)
    return documents


def _read_chunk(chunk: str, line_offset: int, first_index: int) -> list[Document]:
    try:
        if len(chunk) > _SAFE_TO_COMPOSE:
            _check_depth(chunk)
        roots = list(yaml.compose_all(chunk, Loader=_SpecLoader))
    except YamlError as error:
        error.line += line_offset
        raise
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(error, line_offset, chunk) from None
    except yaml.YAMLError as error:
        raise YamlError(f"invalid YAML: {error}", line_offset + 1) from None
    documents = []
    for root in roots:
        if root is None or (isinstance(root, ScalarNode) and root.tag == NULL):
            continue  # an empty document, e.g. after a trailing `---`
        data = _Builder(line_offset).build(root, 0)
        documents.append(Document(data, root, line_offset, first_index + len(documents), chunk))
    return documents


def _syntax_error(error: yaml.MarkedYAMLError, line_offset: int, chunk: str) -> YamlError:
    mark = error.problem_mark or error.context_mark
    line = (mark.line if mark else 0) + line_offset + 1
    column = (mark.column if mark else 0) + 1
    problem = error.problem or "invalid YAML"
    hint = None
    lines = chunk.splitlines()
    bad_line = lines[mark.line] if mark and mark.line < len(lines) else ""
    if "maximum nesting depth" in problem:  # PyYAML 6.0.4 and later stop deep input themselves
        return YamlError(f"nesting deeper than {MAX_DEPTH} levels is not supported", line, column)
    if "\t" in bad_line[: (mark.column if mark else 0) + 1] or bad_line.startswith("\t"):
        problem = "a tab character where YAML expects spaces"
        hint = "YAML indents with spaces only"
    elif located := locate(error, chunk, _SpecLoader, line_offset):
        return YamlError(f"invalid YAML: {located.problem}", located.line + line_offset + 1,
                         located.column + 1, located.hint)
    elif error.context:
        hint = error.context
        if error.context_mark and error.context_mark is not mark:
            hint += f" at line {error.context_mark.line + line_offset + 1}"
    return YamlError(f"invalid YAML: {problem}", line, column, hint)


def _shorten(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


class _Builder:
    """Node tree -> plain dict/list/scalars, enforcing the limits in the module docstring."""

    def __init__(self, line_offset: int):
        self.line_offset = line_offset
        self.values = 0
        self.active: set[int] = set()

    def _error(self, node: Node, message: str, hint: str | None = None) -> YamlError:
        mark = node.start_mark
        return YamlError(message, mark.line + self.line_offset + 1, mark.column + 1, hint)

    def build(self, node: Node, depth: int) -> Any:
        if node.tag == STR and type(node) is ScalarNode:  # most values: skip the general path
            self.values += 1
            return node.value
        self.values += 1
        if self.values > MAX_VALUES:
            raise self._error(node, f"document expands to more than {MAX_VALUES:,} values "
                                    "through aliases", "this looks like an alias bomb")
        if depth > MAX_DEPTH:
            raise self._error(node, f"nesting deeper than {MAX_DEPTH} levels is not supported")
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if id(node) in self.active:
            raise self._error(node, "an alias refers to a collection that contains it")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != SEQ:
                    raise self._error(node, f"unsupported YAML tag {node.tag}")
                return [self.build(item, depth + 1) for item in node.value]
            if node.tag != MAP:
                raise self._error(node, f"unsupported YAML tag {node.tag}")
            return self._mapping(node, depth)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, Node] = {}
        merged: list[dict[str, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise self._error(source, "a merge key (<<) takes a mapping or a list of "
                                                  "mappings")
                    merged.append(self.build(source, depth + 1))
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (STR, INT, FLOAT, BOOL,
                                                                             NULL):
                raise self._error(key_node, "mapping keys must be plain strings")
            key = key_node.value
            if key_node.tag != STR:
                raise self._error(key_node, f"mapping key {key!r} must be a string",
                                  f"quote it: '{key}'")
            if key in seen:
                first = seen[key].start_mark.line + self.line_offset + 1
                raise self._error(key_node, f"duplicate key '{key}' (first defined at line {first})")
            seen[key] = key_node
            result[key] = self.build(value_node, depth + 1)
        for source in merged:
            for key, value in source.items():
                result.setdefault(key, value)
        return result

    def _scalar(self, node: ScalarNode) -> Any:
        tag, value = node.tag, node.value
        if tag == STR:
            return value
        if tag == NULL:
            if value not in _NULLS:
                raise self._error(node, f"{value!r} is not a null")
            return None
        if tag == BOOL:
            if value not in _BOOLS:
                raise self._error(node, f"{value!r} is not true or false")
            return _BOOLS[value]
        if tag == INT:
            try:
                return int(value, 0) if value[:2] in ("0x", "0o") else int(value)
            except ValueError:
                raise self._error(node, f"{_shorten(value)} is not an integer") from None
        if tag == FLOAT:
            lowered = value.lower()
            if lowered.endswith(".inf"):
                return float("-inf") if lowered.startswith("-") else float("inf")
            if lowered == ".nan":
                return float("nan")
            try:
                return float(value)
            except ValueError:
                raise self._error(node, f"{_shorten(value)} is not a number") from None
        if tag == MERGE:
            raise self._error(node, "a merge key (<<) must be a mapping key")
        raise self._error(node, f"unsupported YAML tag {tag}",
                          "tuneops specs use plain YAML: strings, numbers, booleans, lists and "
                          "mappings")
