"""MLflow's search filter syntax, written safely: the quoting its parser accepts for a value,
and the clause that matches a tag (our keys hold dots).
"""

from __future__ import annotations


def quote_value(value: str) -> str:
    """A string literal for an MLflow filter. MLflow does not unescape quotes (`'it''s'` and
    `'it\\'s'` match nothing), so the value is wrapped in the quote character it does not contain."""
    if value.endswith("\\"):
        raise ValueError(f"an MLflow filter cannot match a value ending in a backslash: {value!r}")
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"an MLflow filter cannot match a value holding both quote characters: {value!r}")


def tag_equals(key: str, value: str) -> str:
    """The filter clause `tags.`key` = 'value'`: backticks because our keys hold dots."""
    if "`" in key:
        raise ValueError(f"an MLflow filter cannot name a tag key holding a backtick: {key!r}")
    return f"tags.`{key}` = {quote_value(value)}"
