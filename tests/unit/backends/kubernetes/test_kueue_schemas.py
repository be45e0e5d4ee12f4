"""Kueue's queue objects (kueue.x-k8s.io/v1beta1 ClusterQueue, LocalQueue, ResourceFlavor) against
the structure Kueue's CRDs publish (crd_schemas), with the CEL rules and webhook checks a schema
cannot state: valid objects pass, invalid ones are refused naming the field. ClusterQueue and
ResourceFlavor are cluster-scoped: no namespace. The built-in objects a team gets beside its
queues (Namespace, Role, RoleBinding) go through the Kubernetes OpenAPI schemas."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.backends.kubernetes.crd_schemas import crd_problems, operator_problems
from reconciler.backends.kubernetes.validate import validate_manifests

KUEUE = "kueue.x-k8s.io/v1beta1"
LABELS = {"app.kubernetes.io/managed-by": "tuneops", "tuneops.dev/team": "nlp"}


def resource_flavor(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": KUEUE, "kind": "ResourceFlavor",
            "metadata": {"name": "tuneops-default", "labels": LABELS}, "spec": spec}


def cluster_queue(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": KUEUE, "kind": "ClusterQueue",
            "metadata": {"name": "tuneops-nlp", "labels": LABELS},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nlp-train"}},
                "queueingStrategy": "BestEffortFIFO",
                "resourceGroups": [{
                    "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                    "flavors": [{"name": "tuneops-default", "resources": [
                        {"name": "cpu", "nominalQuota": "1000"},
                        {"name": "memory", "nominalQuota": "64Ti"},
                        {"name": "nvidia.com/gpu", "nominalQuota": 16}]}],
                }],
                **spec,
            }}


def local_queue(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": KUEUE, "kind": "LocalQueue",
            "metadata": {"name": "gpu-training", "namespace": "nlp-train", "labels": LABELS},
            "spec": {"clusterQueue": "tuneops-nlp", **spec}}


def problems(obj: dict[str, Any]) -> list[str]:
    found = crd_problems(obj)
    assert found is not None, "a Kueue kind without a schema"
    return found + operator_problems(obj)


def test_valid_kueue_objects_pass():
    full = cluster_queue(
        cohort="research",
        stopPolicy="Hold",
        namespaceSelector={"matchExpressions": [
            {"key": "tuneops.dev/team", "operator": "In", "values": ["nlp", "vision"]},
            {"key": "frozen", "operator": "DoesNotExist"}]},
        preemption={"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority",
                    "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": 100}},
    )
    full["spec"]["resourceGroups"][0]["flavors"][0]["resources"][2].update(
        borrowingLimit=4, lendingLimit="8")
    flavor = resource_flavor(
        nodeLabels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        nodeTaints=[{"key": "gpu", "value": "h100", "effect": "NoSchedule"}],
        tolerations=[{"key": "gpu", "operator": "Equal", "value": "h100", "effect": "NoSchedule"},
                     {"operator": "Exists"}])
    objects = [resource_flavor(), flavor, cluster_queue(), full, local_queue(),
               local_queue(stopPolicy="HoldAndDrain")]
    for obj in objects:
        assert problems(obj) == [], obj
    assert validate_manifests(objects, "1.30") == []


def test_a_flavor_that_only_names_itself_needs_no_spec():
    flavor = resource_flavor()
    del flavor["spec"]
    assert problems(flavor) == []


@pytest.mark.parametrize("obj", [cluster_queue(), resource_flavor()], ids=["ClusterQueue", "ResourceFlavor"])
def test_cluster_scoped_kinds_have_no_namespace(obj):
    assert "namespace" not in obj["metadata"] and problems(obj) == []
    namespaced = copy.deepcopy(obj)
    namespaced["metadata"]["namespace"] = "nlp-train"
    assert problems(namespaced) == ["Additional properties are not allowed ('namespace' was unexpected) "
                                    "(at metadata)"]


def test_a_local_queue_is_namespaced():
    queue = local_queue()
    del queue["metadata"]["namespace"]
    assert problems(queue) == ["'namespace' is a required property (at metadata)"]


def _without_nominal_quota() -> dict[str, Any]:
    queue = cluster_queue()
    del queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"][2]["nominalQuota"]
    return queue


def _without(field: str) -> dict[str, Any]:
    queue = cluster_queue()
    del queue["spec"]["resourceGroups"][0][field]
    return queue


@pytest.mark.parametrize(("obj", "expected"), [
    (_without_nominal_quota(),
     "'nominalQuota' is a required property (at spec.resourceGroups.0.flavors.0.resources.2)"),
    (_without("coveredResources"), "'coveredResources' is a required property (at spec.resourceGroups.0)"),
    (_without("flavors"), "'flavors' is a required property (at spec.resourceGroups.0)"),
    (cluster_queue(queueingStrategy="FIFO"),
     "'FIFO' is not one of ['StrictFIFO', 'BestEffortFIFO'] (at spec.queueingStrategy)"),
    (cluster_queue(stopPolicy="Pause"),
     "'Pause' is not one of ['None', 'Hold', 'HoldAndDrain'] (at spec.stopPolicy)"),
    (cluster_queue(preemption={"withinClusterQueue": "Always"}),
     "'Always' is not one of ['Never', 'LowerPriority', 'LowerOrNewerEqualPriority'] "
     "(at spec.preemption.withinClusterQueue)"),
    (cluster_queue(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "Equals"}]}),
     "'Equals' is not one of ['In', 'NotIn', 'Exists', 'DoesNotExist'] "
     "(at spec.namespaceSelector.matchExpressions.0.operator)"),
    (cluster_queue(cohort="Research_Team"), "(at spec.cohort)"),
    (cluster_queue(resourceGroups=[{"coveredResources": ["cpu"], "flavors": [
        {"name": "default", "resources": [{"name": "cpu", "nominalQuota": "lots"}]}]}]),
     "'lots' does not match"),
    (cluster_queue(resourceGroups=[{"coveredResources": [], "flavors": []}]),
     "[] should be non-empty (at spec.resourceGroups.0.coveredResources)"),
    (cluster_queue(resourceGroups=[{
        "coveredResources": [f"example.com/r{i}" for i in range(65)],
        "flavors": [{"name": "default", "resources": [{"name": "cpu", "nominalQuota": 1}]}]}]),
     "is too long (at spec.resourceGroups.0.coveredResources)"),
    (cluster_queue(resourceGroups=[{"coveredResources": ["cpu"], "flavors": [
        {"name": "default", "resources": [{"name": "cpu", "nominalQuota": 1, "guaranteed": 1}]}]}]),
     "('guaranteed' was unexpected) (at spec.resourceGroups.0.flavors.0.resources.0)"),
    (cluster_queue(fairShare={"weight": 1}), "('fairShare' was unexpected) (at spec)"),
], ids=["nominalQuota", "coveredResources", "flavors", "queueingStrategy", "stopPolicy", "preemption",
        "selector-operator", "cohort", "quantity", "empty-group", "too-many-resources", "unknown-quota-field",
        "unknown-spec-field"])
def test_an_invalid_cluster_queue_is_refused_naming_the_field(obj, expected):
    found = problems(obj)
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize(("obj", "expected"), [
    (local_queue(clusterQueue="Tuneops_NLP"), "(at spec.clusterQueue)"),
    (local_queue(clusterQueue="a" * 254), "is too long (at spec.clusterQueue)"),
    (local_queue(stopPolicy="Pause"),
     "'Pause' is not one of ['None', 'Hold', 'HoldAndDrain'] (at spec.stopPolicy)"),
    (local_queue(cohort="research"), "('cohort' was unexpected) (at spec)"),
    (resource_flavor(nodeLabels={f"l{i}": "x" for i in range(9)}),
     "has too many properties (at spec.nodeLabels)"),
    (resource_flavor(nodeLabels={"gpu": 1}), "1 is not of type 'string' (at spec.nodeLabels.gpu)"),
    (resource_flavor(nodeTaints=[{"key": "gpu", "effect": "NoWhere"}]),
     "'NoWhere' is not one of ['NoSchedule', 'PreferNoSchedule', 'NoExecute'] (at spec.nodeTaints.0.effect)"),
    (resource_flavor(nodeTaints=[{"key": "gpu"}]), "'effect' is a required property (at spec.nodeTaints.0)"),
    (resource_flavor(tolerations=[{"key": "gpu", "operator": "Matches"}]),
     "'Matches' is not one of ['Equal', 'Exists'] (at spec.tolerations.0.operator)"),
], ids=["lq-clusterQueue-pattern", "lq-clusterQueue-length", "lq-stopPolicy", "lq-unknown-field",
        "rf-nodeLabels-count", "rf-nodeLabels-type", "rf-taint-effect", "rf-taint-effect-missing",
        "rf-toleration-operator"])
def test_an_invalid_local_queue_or_flavor_is_refused_naming_the_field(obj, expected):
    found = problems(obj)
    assert any(expected in problem for problem in found), found


def _one_group(*resources: dict[str, Any], covered: tuple[str, ...] = ("cpu", "nvidia.com/gpu")) -> list:
    return [{"coveredResources": list(covered),
             "flavors": [{"name": "default", "resources": list(resources)}]}]


CPU, GPU = {"name": "cpu", "nominalQuota": 8}, {"name": "nvidia.com/gpu", "nominalQuota": 2}


@pytest.mark.parametrize(("obj", "expected"), [
    (cluster_queue(resourceGroups=_one_group(CPU)),
     "flavors must have the same number of resources as the coveredResources (at spec.resourceGroups.0)"),
    (cluster_queue(resourceGroups=_one_group(GPU, CPU)),
     "'nvidia.com/gpu' must match the name in coveredResources "
     "(at spec.resourceGroups.0.flavors.0.resources.0.name)"),
    (cluster_queue(resourceGroups=_one_group(CPU, {**GPU, "borrowingLimit": 1})),
     "borrowingLimit must be nil when cohort is empty "
     "(at spec.resourceGroups.0.flavors.0.resources.1.borrowingLimit)"),
    (cluster_queue(resourceGroups=_one_group(CPU, {**GPU, "nominalQuota": "-2"})),
     "'-2' must be greater than or equal to 0 (at spec.resourceGroups.0.flavors.0.resources.1.nominalQuota)"),
    (cluster_queue(resourceGroups=_one_group(CPU, GPU) + _one_group(
        {"name": "memory", "nominalQuota": "1Ti"}, covered=("memory",))),
     "Duplicate value: 'default' (at spec.resourceGroups.1.flavors.0.name)"),
    (cluster_queue(preemption={"borrowWithinCohort": {"policy": "LowerPriority"}}),
     "reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never (at spec.preemption)"),
    (resource_flavor(topologyName="default"),
     "at least one nodeLabel is required when topology is set (at spec)"),
    (resource_flavor(tolerations=[{"effect": "NoSchedule"}]),
     "operator must be Exists when 'key' is empty, which means 'match all values and all keys' "
     "(at spec.tolerations.0.operator)"),
    (resource_flavor(tolerations=[{"key": "gpu", "operator": "Exists", "value": "h100"}]),
     "a value must be empty when 'operator' is 'Exists' (at spec.tolerations.0.value)"),
    (resource_flavor(tolerations=[{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 60}]),
     "effect must be 'NoExecute' when 'tolerationSeconds' is set (at spec.tolerations.0.effect)"),
], ids=["resource-count", "resource-order", "borrowing-without-cohort", "negative-quota", "duplicate-flavor",
        "preemption-rule", "topology-without-labels", "toleration-no-key", "toleration-exists-value",
        "toleration-seconds"])
def test_what_the_crds_cel_rules_and_kueues_webhook_refuse(obj, expected):
    assert crd_problems(obj) == []  # structurally fine: these are the rules a schema cannot state
    assert expected in operator_problems(obj)


def test_a_malformed_object_is_reported_not_crashed_on():
    queue = cluster_queue(resourceGroups=[{"coveredResources": [{"name": "cpu"}],
                                           "flavors": [{"name": ["x"], "resources": "cpu"}]}, "group"])
    assert problems(queue)  # the structural schema reports it; the rules do not raise


def test_validate_manifests_checks_a_teams_objects_built_in_and_kueue():
    """What `tuneops render` prints for a team: built-in kinds through the Kubernetes OpenAPI
    schemas (a Namespace is cluster-scoped there too), Kueue's through their CRDs' structure."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nlp-train", "labels": LABELS}}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "tuneops", "namespace": "nlp-train", "labels": LABELS},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "create"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "tuneops", "namespace": "nlp-train", "labels": LABELS},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tuneops"},
               "subjects": [{"kind": "ServiceAccount", "name": "tuneops", "namespace": "ml"}]}
    objects = [namespace, role, binding, resource_flavor(), cluster_queue(), local_queue()]
    assert validate_manifests(objects, "1.30") == []

    bad_role = copy.deepcopy(role)
    bad_role["rules"][0]["verbs"] = "get"
    bad_binding = copy.deepcopy(binding)
    del bad_binding["roleRef"]
    bad_namespace = {**namespace, "spec": {"finalizers": "kubernetes"}}
    assert validate_manifests([bad_namespace, bad_role, bad_binding, _without_nominal_quota()], "1.30") == [
        "Namespace/nlp-train: 'kubernetes' is not of type 'array', 'null' (at spec.finalizers)",
        "Role/tuneops: 'get' is not of type 'array' (at rules.0.verbs)",
        "RoleBinding/tuneops: 'roleRef' is a required property (at top level)",
        "ClusterQueue/tuneops-nlp: 'nominalQuota' is a required property "
        "(at spec.resourceGroups.0.flavors.0.resources.2)",
    ]
