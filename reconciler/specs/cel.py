"""CEL expressions for policies: compiled with the `common-expression-language` package (a
conformant implementation, not a home-made evaluator), with what a rule reads found before it
runs, its cost bounded, and what goes wrong said in a line, never as a traceback.

Imported only where a project has a Policy: the package loads its command line too (~0.15 s).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Macros that loop over a list or map, binding their first argument inside their parentheses.
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# A rule loops at most this deep: each level multiplies its cost by a list's length, and the
# evaluator has no time limit, so a deeper rule could stall validate, CI and the daemon.
MAX_LOOP_DEPTH = 2
KEYWORDS = frozenset({"true", "false", "null", "in"})
_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<raw>(?:[rR][bB]?|[bB][rR])(?:'''.*?'''|\"\"\".*?\"\"\"|'[^'\n]*'|"[^"\n]*"))
  | (?P<string>[bB]?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
                    |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<number>\d[\w.]*)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<punct>.)
""", re.VERBOSE | re.DOTALL)


class CelError(ValueError):
    """A rule that does not compile, or that failed on a spec; the message is one line."""


@dataclass(frozen=True)
class CompiledRule:
    source: str
    program: Any
    variables: frozenset[str]  # the free variables it reads (those a macro binds left out)
    paths: tuple[tuple[str, ...], ...]  # the dotted field paths it names, in order: ("spec", "replicas")


def _cel() -> Any:
    """The CEL extension module. The package's `__init__` also imports its command-line tool
    (about 0.2 s); a validate that only compiles rules loads the compiled module alone (7 ms),
    and falls back to the package where that is not possible."""
    if "cel.cel" in sys.modules:
        return sys.modules["cel.cel"]
    try:
        found = importlib.util.find_spec("cel")
        if found is None or not found.submodule_search_locations:
            raise ImportError("the CEL package is not installed")
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        library = next(path for path in sorted(Path(found.submodule_search_locations[0]).iterdir())
                       if path.name.startswith("cel.") and path.name.endswith(suffixes))
        loader = importlib.machinery.ExtensionFileLoader("cel.cel", str(library))
        spec = importlib.util.spec_from_file_location("cel.cel", library, loader=loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        sys.modules["cel.cel"] = module
        return module
    except (ImportError, OSError, StopIteration, AssertionError):
        import cel

        return cel


def compile_rule(source: str) -> CompiledRule:
    cel = _cel()
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError, TypeError) as error:
        raise CelError(_parse_error(str(error))) from None
    variables, paths, depth = _read(source)
    if depth > MAX_LOOP_DEPTH:
        raise CelError(f"loops nest {depth} deep (all, exists, map, filter inside one another); at most "
                       f"{MAX_LOOP_DEPTH} are allowed, so that checking a rule stays quick")
    return CompiledRule(source, program, frozenset(variables), tuple(dict.fromkeys(paths)))


def _tokens(source: str) -> Iterator[tuple[str, str]]:
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup or "punct"
        if kind != "space":
            yield kind, match.group()


def _read(source: str) -> tuple[list[str], list[tuple[str, ...]], int]:
    """(free variables, dotted paths from a free variable, deepest nesting of loop macros),
    from the rule's tokens: strings and comments are not read as names, and a macro's bound
    name counts only inside its own parentheses."""
    tokens = list(_tokens(source))
    free: list[str] = []
    paths: list[tuple[str, ...]] = []
    opened: list[str | None] = []  # per open parenthesis: the name a macro bound there, or None
    macro_at: set[int] = set()  # the indexes of '(' that open a macro
    depth = deepest = 0
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        previous = tokens[i - 1][1] if i else ""
        if text == "(":
            bound = None
            if (previous in MACROS and i >= 2 and tokens[i - 2][1] == "." and i + 2 < len(tokens)
                    and tokens[i + 1][0] == "name" and tokens[i + 2][1] == ","):
                bound = tokens[i + 1][1]
                macro_at.add(len(opened))
                depth += 1
                deepest = max(deepest, depth)
            opened.append(bound)
        elif text == ")" and opened:
            if len(opened) - 1 in macro_at:
                macro_at.discard(len(opened) - 1)
                depth -= 1
            opened.pop()
        elif kind == "name" and previous != "." and text not in KEYWORDS:
            following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
            is_binding = following == "," and previous == "(" and len(opened) - 1 in macro_at
            if following != "(" and not is_binding and text not in opened:
                free.append(text)
                path = [text]
                j = i + 1
                while j + 1 < len(tokens) and tokens[j][1] == "." and tokens[j + 1][0] == "name":
                    if j + 2 < len(tokens) and tokens[j + 2][1] == "(":
                        break  # a method: spec.requires.size()
                    path.append(tokens[j + 1][1])
                    j += 2
                if len(path) > 1:
                    paths.append(tuple(path))
        i += 1
    return list(dict.fromkeys(free)), paths, deepest


def evaluate(rule: CompiledRule, variables: Mapping[str, Any]) -> bool:
    """The rule's verdict on these variables; CelError when it fails or is not a boolean."""
    try:
        result = rule.program.execute(dict(variables))
    except KeyError as error:
        key = error.args[0] if error.args else "?"
        raise CelError(f"no such key {key!r} (test for it first: has(x.{key}), or '{key}' in x)") from None
    except (ValueError, RuntimeError, TypeError, ArithmeticError, RecursionError) as error:
        raise CelError(_one_line(str(error))) from None
    if not isinstance(result, bool):
        raise CelError(f"the rule gave {_short(repr(result))}, not true or false")
    return result


def _parse_error(text: str) -> str:
    """CEL's reason first (`Syntax error: ... at column 15 of the rule`), not the rule echoed."""
    reasons = re.findall(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)", text)
    if reasons:
        return "; ".join(f"{reason} (line {line}, column {column} of the rule)"
                         for line, column, reason in reasons[:3])
    return _one_line(re.sub(r"^Failed to parse expression '.*?': ", "", text, flags=re.DOTALL))


def _one_line(text: str) -> str:
    return _short(" ".join(text.split()))


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
