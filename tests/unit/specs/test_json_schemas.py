"""The JSON Schemas editors use agree with the validator on every shipped example."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from reconciler.specs.jsonschema import generate_schemas
from reconciler.specs.yamldoc import read_documents
from reconciler.starter import starter_files
from tests.conftest import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "specs-example").rglob("*.yaml"))
SCHEMAS = {name: json.loads(text) for name, text in generate_schemas().items()}


def schema_named_by(text: str) -> str:
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema="), first
    return Path(first.split("=", 1)[1]).name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_example_passes_the_schema_its_first_line_names(path: Path):
    text = path.read_text()
    validator = jsonschema.Draft202012Validator(SCHEMAS[schema_named_by(text)])
    for document in read_documents(text):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document.data)]
        assert errors == []


@pytest.mark.parametrize("name", sorted(n for n in starter_files() if n.endswith(".yaml")))
def test_every_starter_file_passes_its_schema(name: str):
    text = starter_files()[name]
    validator = jsonschema.Draft202012Validator(SCHEMAS[schema_named_by(text)])
    for document in read_documents(text):
        assert [e.message for e in validator.iter_errors(document.data)] == []


def test_the_schemas_refuse_what_the_validator_refuses():
    validator = jsonschema.Draft202012Validator(SCHEMAS["finetune.json"])
    bad = {"apiVersion": "tuneops.dev/v1alpha1", "kind": "FineTune", "metadata": {"name": "x"},
           "spec": {"baseModel": "b", "datasets": [{"name": "d"}], "adapter": {"r": 0},
                    "trainingg": {}}}
    messages = [e.message for e in validator.iter_errors(bad)]
    assert any("0 is less than or equal to the minimum of 0" in m for m in messages), messages
    assert any("'trainingg' was unexpected" in m for m in messages), messages
