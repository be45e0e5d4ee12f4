"""Spec documents as YAML with a comment beside each value, written by hand rather than by a
YAML library: imported specs are read and reviewed by people, so every value sits on its own
line with the config key it came from beside it, and scalars are quoted only where YAML 1.2
(what `tuneops validate` reads) would take them for something else."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:@+-]*")  # matched whole
_SPECIAL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"})
_COMMENT_COLUMN = 34


@dataclass(frozen=True)
class Commented:
    """A value and the comment written beside it (for a mapping or list: beside its key)."""

    value: Any
    comment: str | None = None


def scalar(value: Any) -> str:
    """A scalar as YAML 1.2 reads it back to the same value and type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".e") else f"{text}.0"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _SPECIAL_WORDS and not text.endswith(":"):
        return text
    return json.dumps(text, ensure_ascii=False)  # JSON strings are YAML double-quoted scalars


def _flow(values: list[Any]) -> str:
    return "[" + ", ".join(scalar(v) for v in values) + "]"


def _line(text: str, comment: str | None) -> str:
    if not comment:
        return text
    return (
        f"{text.ljust(_COMMENT_COLUMN - 1)} # {comment}"
        if len(text) < _COMMENT_COLUMN - 1
        else f"{text}  # {comment}"
    )


def _unwrap(value: Any) -> tuple[Any, str | None]:
    return (value.value, value.comment) if isinstance(value, Commented) else (value, None)


def _is_scalar_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        not isinstance(_unwrap(v)[0], dict | list | tuple) for v in value
    )


def _mapping(mapping: dict[str, Any], indent: str, first_prefix: str | None = None) -> list[str]:
    lines: list[str] = []
    for index, (key, wrapped) in enumerate(mapping.items()):
        value, comment = _unwrap(wrapped)
        lead = first_prefix if (first_prefix is not None and index == 0) else indent
        if isinstance(value, dict):
            lines.append(_line(f"{lead}{key}:", comment))
            lines += _mapping(value, indent + "  ")
        elif isinstance(value, list | tuple) and not _is_scalar_list(value):
            lines.append(_line(f"{lead}{key}:", comment))
            for item in value:
                item_value, item_comment = _unwrap(item)
                if isinstance(item_value, dict):
                    lines += _mapping(item_value, indent + "    ", first_prefix=indent + "  - ")
                else:
                    lines.append(_line(f"{indent}  - {scalar(item_value)}", item_comment))
        elif isinstance(value, list | tuple):
            lines.append(_line(f"{lead}{key}: {_flow([_unwrap(v)[0] for v in value])}", comment))
        else:
            lines.append(_line(f"{lead}{key}: {scalar(value)}", comment))
    return lines


def render(document: dict[str, Any], header: list[str]) -> str:
    """One YAML document: the header as comment lines, then the mapping."""
    lines = [f"# {line}" if line else "#" for line in header]
    return "\n".join(lines + _mapping(document, "")) + "\n"
