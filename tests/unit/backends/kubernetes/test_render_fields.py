"""Documented fields reach the manifests: every field of a spec's metadata and of the sections
that describe its Kubernetes objects (resources, scheduling, replicas, autoscaling, launcher),
found by walking the published JSON Schemas, changes the rendered objects when it is set, and
not only through the job file a ConfigMap carries. A field added to one of those sections
without an effect fails here."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.specs.jsonschema import generate_schemas, schema_file_name
from tests.unit.backends.kubernetes.test_render import EXAMPLES, rendered_objects

# The spec of each rendered kind the walk edits, by file and name.
RESOURCES = {
    "Dataset": ("datasets/support-tickets.yaml", "support-tickets"),
    "FineTune": ("fine-tunes/docs-cpt.yaml", "docs-cpt"),
    "Evaluation": ("evaluations/support-quality.yaml", "support-sft-quality"),
    "Deployment": ("deployments/support-bot.yaml", "support-bot"),
}
# The sections whose fields describe Kubernetes objects, as paths in a spec.
KUBERNETES_SECTIONS = [("metadata",), ("spec", "resources"), ("spec", "scheduling"), ("spec", "autoscaling"),
                       ("spec", "replicas"), ("spec", "distributed", "launcher")]
# What the walk sets each field to: unlike the example's value, and valid where it is.
VALUES: dict[str, Any] = {
    "labels": {"example.com/walk": "yes"}, "annotations": {"example.com/walk": "yes"},
    "nodes": 1, "gpusPerNode": 4, "gpus": 2, "gpuProduct": "NVIDIA-A10G", "cpu": "3", "memory": "5Gi",
    "queue": "walk-queue", "priority": "walk-priority", "launcher": "jobset",
    "replicas": 3, "maxReplicas": 7, "metric": "walk_requests", "target": 4.0,
}
# Fields of those sections that are not about the objects, and why.
NOT_OBJECT_FIELDS = {
    ("metadata", "name"): "names every object: changing it renders another resource",
    ("metadata", "description"): "for people reading the spec; documented as nothing more",
}


def _schema_fields(schema: dict, definitions: dict, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The leaf field paths under `path` in a kind's JSON Schema."""
    node = schema
    for part in path:
        node = _resolve(node, definitions)
        node = node.get("properties", {}).get(part)
        if node is None:
            return []
    node = _resolve(node, definitions)
    properties = node.get("properties")
    if not properties:
        return [path]
    return [leaf for name in properties for leaf in _schema_fields(schema, definitions, (*path, name))]


def _resolve(node: dict, definitions: dict) -> dict:
    for option in [node, *node.get("anyOf", [])]:
        if "$ref" in option:
            return definitions[option["$ref"].rsplit("/", 1)[-1]]
    return node


def walked_fields() -> list[tuple[str, tuple[str, ...]]]:
    schemas = generate_schemas()
    found = []
    for kind in RESOURCES:
        schema = json.loads(schemas[schema_file_name(kind)])
        definitions = schema.get("$defs", {})
        for section in KUBERNETES_SECTIONS:
            found += [(kind, path) for path in _schema_fields(schema, definitions, section)]
    return found


def _without_job_files(objects: list[dict]) -> list[dict]:
    kept = copy.deepcopy(objects)
    for obj in kept:
        if obj["kind"] == "ConfigMap":
            obj["data"].pop("job.json", None)
    return kept


def _set(root: Path, kind: str, path: tuple[str, ...], value: Any) -> None:
    file, name = RESOURCES[kind]
    documents = list(yaml.safe_load_all((root / file).read_text()))
    spec = next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)
    node = spec
    for part in path[:-1]:
        node = node.setdefault(part, {})
    assert node.get(path[-1]) != value, f"{kind} {'.'.join(path)} already is {value!r}: pick another"
    node[path[-1]] = value
    (root / file).write_text(yaml.safe_dump_all(documents, sort_keys=False))


def _objects_of(objects: list[dict], kind: str) -> list[dict]:
    name = RESOURCES[kind][1]
    return [o for o in objects if o["metadata"]["labels"].get("tuneops.dev/name") == name]


@pytest.fixture(scope="module")
def baseline() -> list[dict]:
    return rendered_objects(EXAMPLES)


def test_the_walk_finds_the_fields_it_is_about():
    fields = walked_fields()
    assert ("Evaluation", ("spec", "resources", "gpuProduct")) in fields
    assert ("Deployment", ("metadata", "annotations")) in fields
    assert ("FineTune", ("spec", "scheduling", "priority")) in fields
    assert not any(path == ("metadata", "namespace") for _, path in fields)
    assert set(NOT_OBJECT_FIELDS) <= {path for _, path in fields}


def _field_id(value: Any) -> str:
    return value if isinstance(value, str) else ".".join(value)


@pytest.mark.parametrize("kind, path", [(kind, path) for kind, path in walked_fields()
                                        if path not in NOT_OBJECT_FIELDS], ids=_field_id)
def test_every_documented_object_field_changes_the_rendered_objects(tmp_path, baseline, kind, path):
    assert path[-1] in VALUES, f"{kind} {'.'.join(path)}: a field with no value in VALUES; give it one, or " \
                               "list it in NOT_OBJECT_FIELDS with why it does not reach the objects"
    root = tmp_path / "specs"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    _set(root, kind, path, VALUES[path[-1]])
    before = _without_job_files(_objects_of(baseline, kind))
    after = _without_job_files(_objects_of(rendered_objects(root), kind))
    assert after != before, f"{kind} {'.'.join(path)} is documented but changes no rendered object"


def test_an_evaluation_on_several_gpus_is_one_process_that_gets_them_all(tmp_path):
    root = tmp_path / "specs"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    _set(root, "Evaluation", ("spec", "resources", "gpus"), 2)
    [job] = [o for o in _objects_of(rendered_objects(root), "Evaluation") if o["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    assert container["command"][:3] == ["python", "-m", "reconciler"]  # not torchrun: one process
