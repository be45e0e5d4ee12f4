"""Results -> what people and machines read: terminal text and JSON.

Text is grouped per file, one line per problem, in the `file:line:col severity path: message`
form editors and CI annotations understand; color only when asked for (a terminal).
"""

from __future__ import annotations

import json
from itertools import groupby

import click

from reconciler.specs.problems import Problem, Severity, printable
from reconciler.specs.validate import UncheckedReference, ValidationResult

_COLORS = {Severity.ERROR: "red", Severity.WARNING: "yellow"}
MAX_PROBLEMS_PER_FILE = 50
"""Text output shows this many problems per file; JSON shows all."""


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def problem_line(problem: Problem, color: bool) -> str:
    line = problem.text()
    if not color:
        return line
    where = str(problem.position)
    severity = str(problem.severity)
    rest = line[len(where) + 1 + len(severity):]
    return (click.style(where, bold=True) + " "
            + click.style(severity, fg=_COLORS[problem.severity], bold=True) + rest)


def caret_lines(problem: Problem, width: int = 100) -> list[str]:
    """The line the problem is on, as written, and a caret under its column, as compilers show
    them: for a syntax error, the column says more than any message. Long lines are cut around
    the column; control characters are escaped, and the caret counts what is shown."""
    if problem.source_line is None:
        return []
    source, column = problem.source_line, max(problem.position.column - 1, 0)
    before, after = source[:column], source[column:]
    if len(source) > width:  # a minified or generated line: keep what is around the column
        before = ("..." if len(before) > width // 2 else "") + before[-(width // 2):]
        after = after[: width // 2] + ("..." if len(after) > width // 2 else "")
    before, after = printable(before), printable(after)
    gutter = " " * len(str(problem.position.line))
    return [f"    {problem.position.line} | {before}{after}".rstrip(), f"    {gutter} | {' ' * len(before)}^"]


def validation_text(result: ValidationResult, color: bool = False) -> str:
    lines: list[str] = []
    for _, group in groupby(result.problems, key=lambda p: p.position.file):
        if lines:
            lines.append("")
        problems = list(group)
        for problem in problems[:MAX_PROBLEMS_PER_FILE]:
            lines.append(problem_line(problem, color))
            lines.extend(caret_lines(problem))
        if len(problems) > MAX_PROBLEMS_PER_FILE:
            hidden = len(problems) - MAX_PROBLEMS_PER_FILE
            lines.append(f"... and {_plural(hidden, 'more problem')} in this file "
                         "(--format json lists all)")
    if result.unchecked:
        if lines:
            lines.append("")
        lines.append(unchecked_note(result.unchecked))
    errors, warnings = len(result.errors), len(result.warnings)
    scope = f"{_plural(result.checked_specs, 'valid spec')} in {_plural(len(result.files), 'file')}"
    if errors:
        summary = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}; {scope}"
        summary = click.style(summary, fg="red", bold=True) if color else summary
    elif warnings:
        summary = f"valid with {_plural(warnings, 'warning')}: {scope}"
        summary = click.style(summary, fg="yellow") if color else summary
    else:
        summary = f"valid: {scope}"
        summary = click.style(summary, fg="green") if color else summary
    if lines:
        lines.append("")
    lines.append(summary)
    return "\n".join(lines)


def unchecked_note(unchecked: tuple[UncheckedReference, ...], limit: int = 3) -> str:
    """One line for every reference left unchecked: the errors they would give would only
    repeat that a file did not parse."""
    targets: dict[str, str] = {}
    for ref in unchecked:
        targets.setdefault(str(ref.target), ref.unparsed_file)
    named = [f"{target}: {file}" for target, file in list(targets.items())[:limit]]
    if len(targets) > limit:
        named.append(f"and {len(targets) - limit} more")
    return printable(f"note: {_plural(len(unchecked), 'reference')} to specs in files that did not parse "
                     f"{'was' if len(unchecked) == 1 else 'were'} not checked ({', '.join(named)})")


def validation_json(result: ValidationResult) -> str:
    return json.dumps(result.to_json(), indent=2)
