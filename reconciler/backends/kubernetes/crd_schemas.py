"""Structural schemas of the custom resources tuneops renders, for kinds the Kubernetes OpenAPI
bundle lacks. Transcribed from the CRDs their projects publish (the fields we may set, with
their types; unknown fields are refused, as for built-in kinds), so a template change that
breaks one fails `tuneops render` and CI instead of a cluster's admission.

- PodGroup: volcano-sh/volcano, config/crd/volcano/bases/scheduling.volcano.sh_podgroups.yaml
- JobSet: kubernetes-sigs/jobset, config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml
  (api/jobset/v1alpha2/jobset_types.go)
- PyTorchJob: kubeflow/training-operator, manifests/base/crds/kubeflow.org_pytorchjobs.yaml
  (pkg/apis/kubeflow.org/v1/pytorch_types.go, common_types.go)

The built-in objects a custom resource embeds (a JobSet's Job templates, a PyTorchJob's pod
templates) are left open here and handed back by `embedded_objects`, to be checked against the
Kubernetes OpenAPI schemas like any Job or PodTemplate.
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

_INT32 = {"type": "integer", "minimum": -2147483648, "maximum": 2147483647}
_NON_NEGATIVE = {"type": "integer", "minimum": 0, "maximum": 2147483647}
_EMBEDDED = {"type": "object"}  # a built-in template: checked by embedded_objects' callers
_TEMPLATE_METADATA = {
    "type": "object",
    "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP},
    "additionalProperties": False,
}
_REPLICA_SPEC = {  # PyTorchJob's ReplicaSpec
    "type": "object",
    "required": ["template"],
    "properties": {
        "replicas": _NON_NEGATIVE,
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": _EMBEDDED,
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
    ("jobset.x-k8s.io/v1alpha2", "JobSet"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "jobset.x-k8s.io/v1alpha2"},
            "kind": {"const": "JobSet"},
            # The webhook refuses names whose pods' hostnames would pass 63 characters.
            "metadata": {**_METADATA, "properties": {**_METADATA["properties"], "name": {
                **_METADATA["properties"]["name"], "maxLength": 47}}},
            "spec": {
                "type": "object",
                "required": ["replicatedJobs"],
                "properties": {
                    "replicatedJobs": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "template"],
                            "properties": {
                                "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"},
                                "replicas": _NON_NEGATIVE,
                                "template": {
                                    "type": "object",
                                    "required": ["spec"],
                                    "properties": {"metadata": _TEMPLATE_METADATA, "spec": _EMBEDDED},
                                    "additionalProperties": False,
                                },
                            },
                            "additionalProperties": False,
                        },
                    },
                    "network": {
                        "type": "object",
                        "properties": {
                            "enableDNSHostnames": {"type": "boolean"},
                            "publishNotReadyAddresses": {"type": "boolean"},
                            "subdomain": {"type": "string", "maxLength": 63},
                        },
                        "additionalProperties": False,
                    },
                    "failurePolicy": {
                        "type": "object",
                        "properties": {
                            "maxRestarts": _INT32,
                            "restartStrategy": {"enum": ["Recreate", "BlockingRecreate"]},
                        },
                        "additionalProperties": False,
                    },
                    "successPolicy": {
                        "type": "object",
                        "required": ["operator"],
                        "properties": {
                            "operator": {"enum": ["All", "Any"]},
                            "targetReplicatedJobs": {"type": "array", "items": {"type": "string"}},
                        },
                        "additionalProperties": False,
                    },
                    "suspend": {"type": "boolean"},
                    "ttlSecondsAfterFinished": _NON_NEGATIVE,
                    "managedBy": {"type": "string", "maxLength": 63},
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    ("kubeflow.org/v1", "PyTorchJob"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "kubeflow.org/v1"},
            "kind": {"const": "PyTorchJob"},
            "metadata": {**_METADATA, "properties": {**_METADATA["properties"], "name": {
                "type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 50}}},
            "spec": {
                "type": "object",
                "required": ["pytorchReplicaSpecs"],
                "properties": {
                    "nprocPerNode": {"type": "string"},
                    "runPolicy": {
                        "type": "object",
                        "properties": {
                            "backoffLimit": _INT32,
                            "activeDeadlineSeconds": {"type": "integer", "minimum": 0},
                            "ttlSecondsAfterFinished": _INT32,
                            "cleanPodPolicy": {"enum": ["All", "Running", "None"]},
                            "suspend": {"type": "boolean"},
                            "managedBy": {"type": "string"},
                            "schedulingPolicy": {
                                "type": "object",
                                "properties": {
                                    "minAvailable": _INT32,
                                    "queue": {"type": "string"},
                                    "priorityClass": {"type": "string"},
                                    "minResources": {"type": "object", "additionalProperties": _QUANTITY},
                                    "scheduleTimeoutSeconds": _INT32,
                                },
                                "additionalProperties": False,
                            },
                        },
                        "additionalProperties": False,
                    },
                    "pytorchReplicaSpecs": {
                        "type": "object",
                        "required": ["Master"],
                        "properties": {
                            # The training operator's webhook: exactly one Master, stated.
                            "Master": {
                                **_REPLICA_SPEC,
                                "required": ["replicas", "template"],
                                "properties": {**_REPLICA_SPEC["properties"], "replicas": {"const": 1}},
                            },
                            "Worker": _REPLICA_SPEC,
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}


def embedded_objects(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The built-in objects a custom resource carries, as stand-alone objects to validate:
    (where, object). A JobSet's replicated Jobs are Jobs; a PyTorchJob's replicas, PodTemplates.
    The operator's own rules the OpenAPI cannot know (PyTorchJob's container `pytorch`) are
    checked by `operator_problems`."""
    kind, meta = obj.get("kind"), obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name, namespace = str(meta.get("name") or ""), meta.get("namespace")
    found: list[tuple[str, dict[str, Any]]] = []
    if kind == "JobSet":
        for index, replicated in enumerate(spec.get("replicatedJobs") or []):
            template = replicated.get("template") or {}
            found.append((f"spec.replicatedJobs.{index}.template", {
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": f"{name}-{replicated.get('name')}-0", "namespace": namespace,
                             **(template.get("metadata") or {})},
                "spec": template.get("spec")}))
    elif kind == "PyTorchJob":
        for replica, replica_spec in (spec.get("pytorchReplicaSpecs") or {}).items():
            found.append((f"spec.pytorchReplicaSpecs.{replica}.template", {
                "apiVersion": "v1", "kind": "PodTemplate",
                "metadata": {"name": f"{name}-{str(replica).lower()}", "namespace": namespace},
                "template": replica_spec.get("template")}))
    return found


def operator_problems(obj: dict[str, Any]) -> list[str]:
    """What a custom resource's controller refuses beyond its structure."""
    problems = []
    if obj.get("kind") == "PyTorchJob":
        for replica, replica_spec in ((obj.get("spec") or {}).get("pytorchReplicaSpecs") or {}).items():
            containers = ((replica_spec.get("template") or {}).get("spec") or {}).get("containers") or []
            if not any(container.get("name") == "pytorch" for container in containers):
                problems.append(f"the training operator needs a container named 'pytorch' (at "
                                f"spec.pytorchReplicaSpecs.{replica}.template.spec.containers)")
    return problems


def crd_problems(obj: dict[str, Any]) -> list[str] | None:
    """Problems of a custom resource against its structure; None when the kind is unknown here."""
    schema = CRD_SCHEMAS.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if schema is None:
        return None
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [f"{error.message} (at {'.'.join(map(str, error.path)) or 'top level'})"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))]
