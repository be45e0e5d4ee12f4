"""Property-based: no input, random or a mutated valid spec, makes validation raise."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.specs.validate import ValidationResult, validate_path
from reconciler.specs.yamldoc import read_documents
from tests.conftest import VALID_SPECS, write_repo

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["sft", "dpo", "lora", "qlora", "chats", "tiny", "sft-quality",
                                     "file://data/chats.jsonl", "hf://org/m", "", "0", "-1", "2e-4"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


def check_result(result: ValidationResult) -> None:
    for problem in result.problems:
        assert problem.position.line >= 1 and problem.position.column >= 1
        assert problem.text().startswith(f"{problem.position.file}:{problem.position.line}:")


def validate_repo(files: dict[str, str | bytes]) -> ValidationResult:
    with tempfile.TemporaryDirectory() as folder:
        repo = write_repo(Path(folder), {**VALID_SPECS, **files})
        result = validate_path(repo)
        check_result(result)
        return result


@SETTINGS
@given(st.text(max_size=300))
def test_random_text_never_raises(text: str):
    validate_repo({"random.yaml": text})


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes):
    validate_repo({"random.yaml": data})


@SETTINGS
@given(values)
def test_random_yaml_documents_never_raise(document: Any):
    validate_repo({"random.yaml": yaml.safe_dump(document)})


def mutate(document: Any, data: st.DataObject) -> Any:
    """Replace, delete or add one value somewhere in the document."""
    if isinstance(document, dict) and document and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(document)))
        copy = dict(document)
        action = data.draw(st.sampled_from(["replace", "delete", "descend", "add"]))
        if action == "replace":
            copy[key] = data.draw(values)
        elif action == "delete":
            del copy[key]
        elif action == "add":
            copy[data.draw(st.text(max_size=12))] = data.draw(values)
        else:
            copy[key] = mutate(copy[key], data)
        return copy
    if isinstance(document, list) and document:
        index = data.draw(st.integers(0, len(document) - 1))
        copy = list(document)
        copy[index] = mutate(copy[index], data)
        return copy
    return data.draw(values)


@SETTINGS
@given(st.sampled_from(sorted(n for n in VALID_SPECS if n.endswith(".yaml"))), st.data())
def test_mutated_valid_specs_never_raise(name: str, data: st.DataObject):
    [document] = read_documents(textwrap.dedent(VALID_SPECS[name]))
    mutated = mutate(document.data, data)
    result = validate_repo({name: yaml.safe_dump(mutated, sort_keys=False)})
    if mutated == document.data:
        assert result.valid
