"""JSON Schemas for editors, generated from the models so they cannot disagree with validation."""

from __future__ import annotations

import json
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from reconciler.config import ProjectSettings
from reconciler.specs.kinds import KINDS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def schema_file_name(kind: str) -> str:
    return f"{kind.lower()}.json"


def generate_schemas() -> dict[str, str]:
    """File name -> JSON text: one schema per kind, `spec.json` for any kind (files that mix
    kinds), and `project.json` for tuneops.yaml."""
    out: dict[str, str] = {}
    for kind, model in KINDS.items():
        schema = {"$schema": SCHEMA_DIALECT, **model.model_json_schema(by_alias=True)}
        schema["title"] = kind
        out[schema_file_name(kind)] = _dump(schema)
    any_kind = TypeAdapter(Annotated[Union[tuple(KINDS.values())], Field(discriminator="kind")])  # noqa: UP007 - a Union of a tuple built at run time
    out["spec.json"] = _dump({"$schema": SCHEMA_DIALECT, "title": "tuneops spec",
                              **any_kind.json_schema(by_alias=True)})
    out["project.json"] = _dump({"$schema": SCHEMA_DIALECT,
                                 **ProjectSettings.model_json_schema(by_alias=True),
                                 "title": "tuneops.yaml"})
    return out
