"""docs/specs.md documents every kind and field with a default and an example."""

from __future__ import annotations

from reconciler.specs.reference import documented_models, fields_without_example, generate_reference


def test_every_field_has_an_example_or_a_default_worth_showing():
    assert fields_without_example() == []


def test_every_documented_field_appears_in_the_reference():
    text = generate_reference()
    for path, model in documented_models():
        assert f"### `{'.'.join(path)}`" in text
        for name, info in model.model_fields.items():
            assert f"| `{info.alias or name}` |" in text


def test_operational_fields_are_marked():
    text = generate_reference()
    assert "`replicas`" in text and "**operational**" in text
