"""Structural schemas of the custom resources tuneops renders, for kinds the Kubernetes OpenAPI
bundle lacks. Transcribed from the CRDs their projects publish (the fields we may set, with
their types; unknown fields are refused, as for built-in kinds), so a template change that
breaks one fails `tuneops render` and CI instead of a cluster's admission.

- PodGroup: volcano-sh/volcano, config/crd/volcano/bases/scheduling.volcano.sh_podgroups.yaml
- JobSet: kubernetes-sigs/jobset, config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml
  (api/jobset/v1alpha2/jobset_types.go)
- PyTorchJob: kubeflow/training-operator, manifests/base/crds/kubeflow.org_pytorchjobs.yaml
  (pkg/apis/kubeflow.org/v1/pytorch_types.go, common_types.go)
- ClusterQueue, LocalQueue, ResourceFlavor (kueue.x-k8s.io/v1beta1): kubernetes-sigs/kueue,
  config/components/crd/bases/kueue.x-k8s.io_clusterqueues.yaml, kueue.x-k8s.io_localqueues.yaml,
  kueue.x-k8s.io_resourceflavors.yaml (apis/kueue/v1beta1/clusterqueue_types.go,
  localqueue_types.go, resourceflavor_types.go; pkg/webhooks/clusterqueue_webhook.go), as of
  v0.19.2, the same since v0.14 (v0.13 and older allow 16, not 64, coveredResources, flavors and
  resources). Kueue serves v1beta1 next to v1beta2 since v0.15. ClusterQueue and ResourceFlavor
  are cluster-scoped: their metadata has no namespace.

The rules a CRD states as CEL (x-kubernetes-validations) or its project's admission webhook
enforces, which a structural schema cannot say, are checked by `operator_problems`.

The built-in objects a custom resource embeds (a JobSet's Job templates, a PyTorchJob's pod
templates) are left open here and handed back by `embedded_objects`, to be checked against the
Kubernetes OpenAPI schemas like any Job or PodTemplate.
"""

from __future__ import annotations

import re
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

# Kueue (kueue.x-k8s.io/v1beta1)
_DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_CLUSTER_METADATA = {  # a cluster-scoped object's: no namespace
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": _DNS1123_SUBDOMAIN, "maxLength": 253},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
# A ClusterQueue, ResourceFlavor or cohort, as another object names it.
_KUEUE_REFERENCE = {"type": "string", "pattern": _DNS1123_SUBDOMAIN, "maxLength": 253}
_KUEUE_QUANTITY = {**_QUANTITY, "pattern": (  # resource.Quantity's, as the CRD states it
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|"
    r"(\.[0-9]+))))?$")}
_STOP_POLICY = {"enum": ["None", "Hold", "HoldAndDrain"]}
_LABEL_SELECTOR = {  # metav1.LabelSelector
    "type": "object",
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    # The CRD says string; the webhook's ValidateLabelSelector takes only these.
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
_RESOURCE_QUOTA = {
    "type": "object",
    "required": ["name", "nominalQuota"],
    "properties": {
        "name": {"type": "string"},
        "nominalQuota": _KUEUE_QUANTITY,
        "borrowingLimit": _KUEUE_QUANTITY,
        "lendingLimit": _KUEUE_QUANTITY,
    },
    "additionalProperties": False,
}
_RESOURCE_GROUP = {  # a ClusterQueue's
    "type": "object",
    "required": ["coveredResources", "flavors"],
    "properties": {
        "coveredResources": {"type": "array", "minItems": 1, "maxItems": 64, "items": {"type": "string"}},
        "flavors": {
            "type": "array",
            "minItems": 1,
            "maxItems": 64,
            "items": {
                "type": "object",
                "required": ["name", "resources"],
                "properties": {
                    "name": _KUEUE_REFERENCE,
                    "resources": {"type": "array", "minItems": 1, "maxItems": 64, "items": _RESOURCE_QUOTA},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
_TAINT_EFFECT = {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}  # the CRD's CEL rule

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
    ("kueue.x-k8s.io/v1beta1", "ClusterQueue"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "kueue.x-k8s.io/v1beta1"},
            "kind": {"const": "ClusterQueue"},
            "metadata": _CLUSTER_METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "namespaceSelector": _LABEL_SELECTOR,
                    "resourceGroups": {"type": "array", "maxItems": 16, "items": _RESOURCE_GROUP},
                    "cohort": _KUEUE_REFERENCE,
                    "queueingStrategy": {"enum": ["StrictFIFO", "BestEffortFIFO"]},
                    "preemption": {
                        "type": "object",
                        "properties": {
                            "borrowWithinCohort": {
                                "type": "object",
                                "properties": {
                                    "policy": {"enum": ["Never", "LowerPriority"]},
                                    "maxPriorityThreshold": _INT32,
                                },
                                "additionalProperties": False,
                            },
                            "reclaimWithinCohort": {"enum": ["Never", "LowerPriority", "Any"]},
                            "withinClusterQueue": {
                                "enum": ["Never", "LowerPriority", "LowerOrNewerEqualPriority"]},
                        },
                        "additionalProperties": False,
                    },
                    "stopPolicy": _STOP_POLICY,
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    ("kueue.x-k8s.io/v1beta1", "LocalQueue"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "kueue.x-k8s.io/v1beta1"},
            "kind": {"const": "LocalQueue"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                # The CRD leaves clusterQueue optional (a LocalQueue without one admits nothing).
                "properties": {"clusterQueue": _KUEUE_REFERENCE, "stopPolicy": _STOP_POLICY},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    ("kueue.x-k8s.io/v1beta1", "ResourceFlavor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],  # a flavor that only names itself has no spec
        "properties": {
            "apiVersion": {"const": "kueue.x-k8s.io/v1beta1"},
            "kind": {"const": "ResourceFlavor"},
            "metadata": _CLUSTER_METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "nodeLabels": {**_STRING_MAP, "maxProperties": 8},
                    "nodeTaints": {
                        "type": "array",
                        "maxItems": 8,
                        "items": {
                            "type": "object",
                            "required": ["key", "effect"],
                            "properties": {
                                "key": {"type": "string"},
                                "value": {"type": "string"},
                                "effect": _TAINT_EFFECT,
                                "timeAdded": {"type": "string"},
                            },
                            "additionalProperties": False,
                        },
                    },
                    "tolerations": {
                        "type": "array",
                        "maxItems": 8,
                        "items": {
                            "type": "object",
                            "properties": {
                                "key": {"type": "string"},
                                "operator": {"enum": ["Equal", "Exists"]},  # the CRD's CEL rule
                                "value": {"type": "string"},
                                "effect": _TAINT_EFFECT,
                                "tolerationSeconds": {"type": "integer"},
                            },
                            "additionalProperties": False,
                        },
                    },
                    "topologyName": _KUEUE_REFERENCE,
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
    """What a custom resource's controller refuses beyond its structure: its CRD's CEL rules and
    its webhook's checks."""
    problems = []
    if obj.get("kind") == "PyTorchJob":
        for replica, replica_spec in ((obj.get("spec") or {}).get("pytorchReplicaSpecs") or {}).items():
            containers = ((replica_spec.get("template") or {}).get("spec") or {}).get("containers") or []
            if not any(container.get("name") == "pytorch" for container in containers):
                problems.append(f"the training operator needs a container named 'pytorch' (at "
                                f"spec.pytorchReplicaSpecs.{replica}.template.spec.containers)")
    elif obj.get("kind") == "ClusterQueue" and obj.get("apiVersion") == "kueue.x-k8s.io/v1beta1":
        problems += _cluster_queue_problems(obj.get("spec"))
    elif obj.get("kind") == "ResourceFlavor" and obj.get("apiVersion") == "kueue.x-k8s.io/v1beta1":
        problems += _resource_flavor_problems(obj.get("spec"))
    return problems


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a list, with their index; nothing when it is not one (the structural
    schema reports that)."""
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _negative(quantity: Any) -> bool:
    if isinstance(quantity, int):
        return quantity < 0
    mantissa = re.match(r"-([0-9.]*)", str(quantity).strip())
    return bool(mantissa and mantissa.group(1).strip("0."))


def _cluster_queue_problems(spec: Any) -> list[str]:
    """A ClusterQueue's CEL rules (its CRD) and what Kueue's webhook refuses
    (pkg/webhooks/clusterqueue_webhook.go), in their words."""
    if not isinstance(spec, dict):
        return []
    problems: list[str] = []
    has_cohort = bool(spec.get("cohort"))
    seen_resources: set[str] = set()
    seen_flavors: set[str] = set()
    for i, group in _dicts(spec.get("resourceGroups")):
        covered = group.get("coveredResources") if isinstance(group.get("coveredResources"), list) else []
        for j, name in enumerate(covered):
            if isinstance(name, str) and name in seen_resources:
                problems.append(f"Duplicate value: {name!r} "
                                f"(at spec.resourceGroups.{i}.coveredResources.{j})")
            seen_resources.add(str(name))
        flavors = _dicts(group.get("flavors"))
        if any(isinstance(flavor.get("resources"), list) and len(flavor["resources"]) != len(covered)
               for _, flavor in flavors):
            problems.append("flavors must have the same number of resources as the coveredResources "
                            f"(at spec.resourceGroups.{i})")
        for j, flavor in flavors:
            where = f"spec.resourceGroups.{i}.flavors.{j}"
            name = flavor.get("name")
            if isinstance(name, str) and name in seen_flavors:
                problems.append(f"Duplicate value: {name!r} (at {where}.name)")
            seen_flavors.add(str(name))
            for k, quota in _dicts(flavor.get("resources")):
                if k < len(covered) and quota.get("name") != covered[k]:
                    problems.append(f"{quota.get('name')!r} must match the name in coveredResources "
                                    f"(at {where}.resources.{k}.name)")
                for field in ("nominalQuota", "borrowingLimit", "lendingLimit"):
                    if field in quota and _negative(quota[field]):
                        problems.append(f"{quota[field]!r} must be greater than or equal to 0 "
                                        f"(at {where}.resources.{k}.{field})")
                for field in ("borrowingLimit", "lendingLimit"):
                    if field in quota and not has_cohort:
                        problems.append(f"{field} must be nil when cohort is empty "
                                        f"(at {where}.resources.{k}.{field})")
    preemption = spec.get("preemption")
    if isinstance(preemption, dict) and isinstance(preemption.get("borrowWithinCohort"), dict) and \
            preemption.get("reclaimWithinCohort", "Never") == "Never" and \
            preemption["borrowWithinCohort"].get("policy", "Never") != "Never":
        problems.append("reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never (at spec.preemption)")
    return problems


def _resource_flavor_problems(spec: Any) -> list[str]:
    """A ResourceFlavor's CEL rules (its CRD), in their words."""
    if not isinstance(spec, dict):
        return []
    problems: list[str] = []
    if spec.get("topologyName") and not spec.get("nodeLabels"):
        problems.append("at least one nodeLabel is required when topology is set (at spec)")
    for i, toleration in _dicts(spec.get("tolerations")):
        where = f"spec.tolerations.{i}"
        if "key" not in toleration and toleration.get("operator") != "Exists":
            problems.append("operator must be Exists when 'key' is empty, which means 'match all values and "
                            f"all keys' (at {where}.operator)")
        if "tolerationSeconds" in toleration and toleration.get("effect") != "NoExecute":
            problems.append(f"effect must be 'NoExecute' when 'tolerationSeconds' is set (at {where}.effect)")
        if toleration.get("operator") == "Exists" and "value" in toleration:
            problems.append(f"a value must be empty when 'operator' is 'Exists' (at {where}.value)")
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
