"""libyaml's syntax errors -> the line the person got wrong, in their words.

libyaml reports where its parser stopped, which for indentation is often not where the mistake
is: a key with no `:` is read together with the next line, and found out only at that line's
`:`; a line indented one space too few is "did not find expected key". These functions look at
the tokens read before the error and at the indentation of the lines above to name the line to
fix and the columns it could line up with. Only called when a file does not parse.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.tokens import ScalarToken, ValueToken


@dataclass(frozen=True)
class Located:
    """What to report: 0-based line and column within the chunk, message and hint."""

    line: int
    column: int
    problem: str
    hint: str | None


def locate(error: yaml.MarkedYAMLError, chunk: str, loader: Any, first_line: int = 0) -> Located | None:
    """A better place and message for indentation mistakes and keys without `:`, or None to
    keep libyaml's. `loader` is the parser class the chunk was read with; `first_line`, the
    chunk's 0-based line in its file, for the line numbers messages name."""
    mark, problem, context = error.problem_mark, error.problem or "", error.context or ""
    if mark is None:
        return None
    lines = chunk.splitlines()
    if problem.startswith("mapping values are not allowed"):
        return _colon_after_multi_line_text(error, chunk, lines, loader, first_line)
    if problem == "could not find expected ':'" and context == "while scanning a simple key" \
            and error.context_mark is not None:
        key = error.context_mark
        return Located(key.line, key.column, "this line has no `:` after its key",
                       "write `key: value`, or indent it further if it is the value of the key above")
    if problem in ("did not find expected key", "did not find expected '-' indicator"):
        return _misindented(mark.line, lines, first_line)
    if context == "while scanning a quoted scalar" and problem.startswith("found unexpected end of stream") \
            and error.context_mark is not None:
        # libyaml reads on to the end of the file looking for the closing quote: the line to fix
        # is where the quote opened, not the end of the file.
        opened = error.context_mark
        quote = lines[opened.line][opened.column] if opened.line < len(lines) \
            and opened.column < len(lines[opened.line]) else '"'
        return Located(opened.line, opened.column, f"this {quote} is never closed",
                       f"end the text with {quote} on this line; inside it, write a {quote} as "
                       + ('\\"' if quote == '"' else "''"))
    return None


def _colon_after_multi_line_text(error: yaml.MarkedYAMLError, chunk: str, lines: list[str],
                                 loader: Any, first_line: int) -> Located:
    """libyaml found a `:` inside text that began on an earlier line: either that line is a key
    with no `:` (so the two lines became one text), or this line is indented under a key that
    already has its value."""
    mark = error.problem_mark
    recent: deque[Any] = deque(maxlen=4)
    try:
        for token in yaml.scan(chunk, Loader=loader):
            recent.append(token)
    except yaml.YAMLError:
        pass
    problem = error.problem or ""
    text = recent[-1] if recent else None
    if not isinstance(text, ScalarToken) or text.start_mark.line >= mark.line:
        return Located(mark.line, mark.column, problem, "quote a value that holds `: `")  # `a: b: c`
    before = recent[-2] if len(recent) > 1 else None
    key = recent[-3] if len(recent) > 2 else None
    if isinstance(before, ValueToken) and isinstance(key, ScalarToken) \
            and before.start_mark.line == text.start_mark.line:
        line = mark.line
        return _under_a_value(line, _indent(lines[line]) if line < len(lines) else mark.column,
                              key.value, key.start_mark.line + first_line)
    return _no_colon(text.start_mark.line, text.start_mark.column, mark.line + first_line)


def _no_colon(line: int, column: int, next_line: int) -> Located:
    return Located(line, column, "this line has no `:` after its key",
                   f"write `key: value`: without the `:`, YAML reads it and line {next_line + 1} as one text")


def _under_a_value(line: int, column: int, key: str, key_line: int) -> Located:
    return Located(line, column, f"this line is indented under `{key}` (line {key_line + 1}), which "
                                 "already has a value",
                   f"indent it like `{key}`; or, if the value goes on, quote it")


def _misindented(line: int, lines: list[str], first_line: int) -> Located | None:
    """A line whose indentation lines up with no key above it: name the two it falls between.
    One that lines up with a line with no `:` above it: that line is the mistake."""
    while line > 0 and (line >= len(lines) or _is_blank(lines[line])):
        line -= 1  # a mark at the end of the text, or on a blank line: the line before is meant
    if line >= len(lines):
        return None
    indent = _indent(lines[line])
    levels = _levels_above(lines, line)
    if levels and levels[0][0] == indent and ":" not in lines[levels[0][1]] \
            and not lines[levels[0][1]].lstrip().startswith(("-", "|", ">", "[", "{", "'", '"')):
        return _no_colon(levels[0][1], indent, line + first_line)  # `r 8` then `alpha: 16` below it
    if any(level == indent for level, _, _ in levels):
        return None  # it lines up with something: not an indentation mistake libyaml could mean
    deeper = min((item for item in levels if item[0] > indent), default=None)
    shallower = max((item for item in levels if item[0] < indent), default=None)
    if deeper is None and shallower is not None:  # were `key:` empty, this line would be its value
        return _under_a_value(line, indent, shallower[2], shallower[1] + first_line)
    around = [f"`{name}` on line {number + first_line + 1} ({_spaces(level)})"
              for level, number, name in (item for item in (deeper, shallower) if item)]
    if not around:
        return None
    where = " and ".join(around)
    return Located(line, indent, f"this line is indented {_spaces(indent)}, "
                                 + (f"between {where}" if len(around) == 2 else f"unlike {where}"),
                   "YAML nests by indentation: indent it like the key it belongs beside")


def _spaces(count: int) -> str:
    return f"{count} space" if count == 1 else f"{count} spaces"


def _levels_above(lines: list[str], line: int) -> list[tuple[int, int, str]]:
    """(indent, line, key) of the keys and list items that enclose `line`, nearest first: the
    columns a line there can line up with."""
    levels: list[tuple[int, int, str]] = []
    lowest: int | None = None
    for number in range(line - 1, -1, -1):
        text = lines[number]
        if _is_blank(text):
            continue
        indent = _indent(text)
        content = text[indent:]
        found = []
        while content.startswith("- "):  # `- name: x`: the item's `-`, then the key after it
            found.append((indent, "-"))
            rest = content[2:]
            indent += 2 + len(rest) - len(rest.lstrip(" "))
            content = rest.lstrip(" ")
        key = content.split(":", 1)[0].strip() if ":" in content else content.strip()
        found.append((indent, key[:30]))
        for level, name in reversed(found):  # the innermost column first
            if lowest is None or level < lowest:
                levels.append((level, number, name))
                lowest = level
        if lowest == 0:
            break
    return levels


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _is_blank(text: str) -> bool:
    stripped = text.strip()
    return not stripped or stripped.startswith("#")
