"""Structural schemas of the custom resources tuneops renders, for kinds the Kubernetes OpenAPI
bundle lacks. Transcribed from the CRDs their projects publish (the fields we may set, with
their types; unknown fields are refused, as for built-in kinds), so a template change that
breaks one fails `tuneops render` and CI instead of a cluster's admission.

- PodGroup: volcano-sh/volcano, config/crd/volcano/bases/scheduling.volcano.sh_podgroups.yaml
"""

from __future__ import annotations

from typing import Any

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}]}

_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}

CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("scheduling.volcano.sh/v1beta1", "PodGroup"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "scheduling.volcano.sh/v1beta1"},
            "kind": {"const": "PodGroup"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "minMember": {"type": "integer", "minimum": 0, "maximum": 2147483647},
                    "minResources": {"type": "object", "additionalProperties": _QUANTITY},
                    "minTaskMember": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "priorityClassName": {"type": "string"},
                    "queue": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}


def crd_problems(obj: dict[str, Any]) -> list[str] | None:
    """Problems of a custom resource against its structure; None when the kind is unknown here."""
    schema = CRD_SCHEMAS.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if schema is None:
        return None
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [f"{error.message} (at {'.'.join(map(str, error.path)) or 'top level'})"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))]
