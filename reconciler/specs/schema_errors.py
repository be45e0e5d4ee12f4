"""pydantic validation errors -> Problems a person can act on.

pydantic says "Input should be greater than 0"; we say `spec.adapter.r: must be > 0 (got -4)`
at the line and column of the value, and suggest the field that was probably meant.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel as PydanticModel
from pydantic import ValidationError

from reconciler.specs.problems import Position, Problem, Severity, describe_value

Locate = Callable[[tuple[Any, ...], bool], tuple[int, int]]
SourceText = Callable[[tuple[Any, ...]], "str | None"]


def format_path(loc: tuple[Any, ...]) -> str:
    """('spec', 'datasets', 0, 'name') -> 'spec.datasets[0].name'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def suggest(word: str, choices: typing.Iterable[str]) -> str | None:
    """'did you mean X?' for a near miss: the same word in another case or spelling
    (snake_case for camelCase), then a choice it starts (in the choices' own order, so that
    `adamw` finds the first-listed `adamw_torch`), then the closest spelling."""
    choices = list(choices)
    if not choices:
        return None
    folded = {re.sub(r"[_\-]", "", c).lower(): c for c in choices}
    key = re.sub(r"[_\-]", "", word).lower()
    if key in folded and folded[key] != word:
        return f"did you mean {folded[key]!r}?"
    if len(word) >= 3:
        for choice in choices:
            if choice.lower().startswith(word.lower()) and choice != word:
                return f"did you mean {choice!r}?"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def concrete_types(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold: Annotated and Optional/Union peeled off."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return concrete_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out.extend(concrete_types(arg))
        return out
    return [annotation]


def _step(annotation: Any, part: Any) -> Any:
    for candidate in concrete_types(annotation):
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if isinstance(candidate, type) and issubclass(candidate, PydanticModel) and isinstance(part, str):
            for name, info in candidate.model_fields.items():
                if (info.alias or name) == part:
                    return info.annotation
        elif origin in (tuple, list) and isinstance(part, int) and args:
            return args[0]
        elif origin is dict and isinstance(part, str) and len(args) == 2:
            return args[1]
    return None


def allowed_fields(model: type[PydanticModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names accepted in the mapping at `loc` (for unknown-field suggestions)."""
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    for candidate in concrete_types(annotation):
        if isinstance(candidate, type) and issubclass(candidate, PydanticModel):
            return [info.alias or name for name, info in candidate.model_fields.items()]
    return []


def refused_field(model: type[PydanticModel], loc: tuple[Any, ...]) -> str | None:
    """Why a field that users may expect is refused (a model's REFUSED_FIELDS), or None."""
    annotation: Any = model
    for part in loc[:-1]:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    for candidate in concrete_types(annotation):
        if isinstance(candidate, type) and issubclass(candidate, PydanticModel):
            return getattr(candidate, "REFUSED_FIELDS", {}).get(loc[-1])
    return None


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}
_TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "tuple_type": "a list", "list_type": "a list", "finite_number": "a finite number",
}


def _translate(err: dict[str, Any], model: type[PydanticModel],
               written: str | None = None) -> tuple[str, str, str | None, bool]:
    """(code, message, hint, show_value) for one pydantic error. `written` is the value's text
    in the file, for hints that must quote it exactly."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    loc = tuple(err["loc"])
    given = err.get("input")
    if kind == "missing":
        return "missing-field", "required field is missing", None, False
    if kind == "extra_forbidden":
        refused = refused_field(model, loc)
        if refused:
            return "unsupported-field", refused, None, False
        return "unknown-field", "unknown field", suggest(str(loc[-1]), allowed_fields(model, loc[:-1])), False
    if kind in _BOUNDS:
        key, symbol = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return "out-of-range", f"must be {symbol} {bound}", None, True
    if kind in _TYPE_NAMES:
        hint = None
        if kind == "string_type" and isinstance(given, int | float | bool):
            hint = f"quote it if you meant the string: '{written or describe_value(given)}'"
        elif kind in ("int_type", "float_type", "int_parsing", "float_parsing") and isinstance(given, str):
            hint = "remove the quotes" if _looks_numeric(given) else None
        elif kind in ("bool_type", "bool_parsing") and isinstance(given, str) and given.lower() in (
                "yes", "no", "on", "off", "y", "n"):
            hint = "write true or false"
        return "wrong-type", f"must be {_TYPE_NAMES[kind]}", hint, True
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", ""))) or re.findall(
            r"\b(\d+)\b", str(ctx.get("expected", "")))
        hint = suggest(str(given), expected) if isinstance(given, str) else None
        return "invalid-value", f"must be one of: {', '.join(expected)}", hint, True
    if kind == "value_error":
        error = ctx.get("error")
        hint = getattr(error, "hint", None)  # SpecValueError, KubernetesValueError
        shown = _is_scalar(given) and not getattr(error, "hides_value", False)  # ValueHiddenError
        return "invalid-value", str(error), hint, shown
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "at least" if kind == "too_short" else "at most"
        return "invalid-value", f"must have {word} {limit} item{'s' if limit != 1 else ''}", None, False
    if kind in ("string_too_short", "string_too_long"):
        limit = ctx.get("min_length") if kind == "string_too_short" else ctx.get("max_length")
        word = "at least" if kind == "string_too_short" else "at most"
        return "invalid-value", f"must be {word} {limit} characters", None, False
    if kind == "string_pattern_mismatch":
        return "invalid-value", f"must match {ctx.get('pattern')}", None, True
    message = str(err.get("msg", kind))
    return "invalid-value", message[:1].lower() + message[1:], None, _is_scalar(given)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def problems_from_validation_error(
    error: ValidationError,
    model: type[PydanticModel],
    file: str,
    locate: Locate,
    resource: str | None = None,
    source_text: SourceText | None = None,
) -> list[Problem]:
    problems = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        written = source_text(loc) if source_text else None
        code, message, hint, show_value = _translate(err, model, written)
        on_key = code in ("unknown-field", "unsupported-field") or (loc and loc[-1] == "[key]")
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
            if not (loc and loc[0] == "teams"):  # a team name's error names it itself
                message = f"label or annotation key {message}"
        line, column = locate(loc, bool(on_key))
        problems.append(Problem(
            severity=Severity.ERROR,
            code=code,
            message=message,
            position=Position(file, line, column),
            path=format_path(loc),
            value=describe_value(err.get("input")) if show_value else None,
            hint=hint,
            resource=resource,
        ))
    return _drop_echoes(problems)


_SUGGESTED = re.compile(r"did you mean '([^']+)'\?")


def _drop_echoes(problems: list[Problem]) -> list[Problem]:
    """One mistake, one report. pydantic reports some mistakes twice:
    - a misspelt required field is both "unknown" and "missing": keep the unknown one, whose
      hint names the missing field;
    - a list whose items are invalid is also "too short" once they are dropped;
    - a union reports one error per branch at the same place: keep the most specific."""
    suggested = set()
    item_errors = set()
    for problem in problems:
        parent, _, _ = problem.path.rpartition(".")
        if problem.code == "unknown-field" and problem.hint:
            match = _SUGGESTED.search(problem.hint)
            if match:
                suggested.add(f"{parent}.{match.group(1)}" if parent else match.group(1))
        item = re.match(r"^(.*?)\[\d+\]", problem.path)
        if item:
            item_errors.add(item.group(1))
    kept: dict[tuple[str, int, int], Problem] = {}
    for problem in problems:
        if problem.code == "missing-field" and problem.path in suggested:
            continue
        if problem.message.startswith("must have at least") and problem.path in item_errors:
            continue
        key = (problem.path, problem.position.line, problem.position.column)
        if key not in kept or (kept[key].code == "wrong-type" and problem.code != "wrong-type"):
            kept[key] = problem
    return list(kept.values())
