"""CEL expressions for policies: compiled with the `common-expression-language` package (a
conformant implementation, not a home-made evaluator), with what a rule names found before it
runs and what goes wrong said in a line, never as a traceback.

Imported only where a project has a Policy: the package loads its command line too (~0.15 s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A string literal, so that a dotted path inside quotes is not read as a field.
_STRING = re.compile(r"""(?:[rRbB]{0,2})('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""",
                     re.DOTALL)
_DOTTED = re.compile(r"(?<![\w.])([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*)+)")
# A macro binds its first argument as a variable: list.all(x, ...), map(x, ...), exists_one(x, ...)
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
# What CEL calls that are methods, not fields: `spec.requires.size()`.
_CALL = re.compile(r"\s*\(")


class CelError(ValueError):
    """A rule that does not compile, or that failed on a spec; the message is one line."""


@dataclass(frozen=True)
class CompiledRule:
    source: str
    program: Any
    variables: frozenset[str]  # the free variables it reads (those a macro binds left out)
    paths: tuple[tuple[str, ...], ...]  # the dotted field paths it names, in order: ("spec", "replicas")


def compile_rule(source: str) -> CompiledRule:
    import cel

    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError, TypeError) as error:
        raise CelError(_first_lines(str(error))) from None
    text = _STRING.sub("''", source)
    bound = set(_BOUND.findall(text))
    variables = frozenset(name for name in program.references().get("variables", ()) if name not in bound)
    paths = []
    for match in _DOTTED.finditer(text):
        parts = [match.group(1)] + [part.strip() for part in match.group(2).split(".")[1:]]
        end = match.end()
        if _CALL.match(text, end):  # the last part is a method call
            parts = parts[:-1]
        if parts[0] in variables and len(parts) > 1:
            paths.append(tuple(parts))
    return CompiledRule(source, program, variables, tuple(dict.fromkeys(paths)))


def evaluate(rule: CompiledRule, variables: Mapping[str, Any]) -> bool:
    """The rule's verdict on these variables; CelError when it fails or is not a boolean."""
    try:
        result = rule.program.execute(dict(variables))
    except KeyError as error:
        key = error.args[0] if error.args else "?"
        raise CelError(f"no such key {key!r} (test for it first: has(x.{key}), or '{key}' in x)") from None
    except (ValueError, RuntimeError, TypeError, ArithmeticError) as error:
        raise CelError(_first_lines(str(error))) from None
    if not isinstance(result, bool):
        raise CelError(f"the rule gave {result!r}, not true or false")
    return result


def _first_lines(text: str) -> str:
    """CEL's message, with its caret drawing joined into one line."""
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(line for line in lines if not set(line.strip()) <= {".", "^", "|", " "}
                    and not line.lstrip().startswith("|"))[:500]
