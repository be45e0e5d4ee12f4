"""The Kubernetes rules for names, label keys and values, quantities and metric names, each
against examples the API server accepts and refuses (apimachinery's own test tables), and
through the spec fields that use them."""

from __future__ import annotations

import pytest

from reconciler.specs.deployment import Autoscaling, ServingResources
from reconciler.specs.evaluation import EvaluationResources
from reconciler.specs.finetune import Resources, Scheduling
from reconciler.values import kubernetes as kube

ACCEPTED = {
    kube.check_dns1123_label: ["a", "0", "a-0", "1-2", "a" * 63],
    kube.check_dns1123_subdomain: ["a", "a.b", "a-1.b-2", "0.0", "a" * 253],
    kube.check_qualified_name: ["simple", "now-with-dashes", "1-starts-with-num", "1234", "simple/simple",
                                "example.com/team", "a/" + "b" * 63, "Upper_And.dots"],
    kube.check_label_value: ["", "simple", "now-with-dashes", "NVIDIA-H100-80GB-HBM3", "a" * 63],
    kube.check_quantity: ["0", "8", "500m", "64Gi", "1.5", "1.", ".5", "1e3", "1E-3", "100n", "250u",
                          "2k", "3M", "+1"],
    kube.check_path_segment_name: ["vllm:num_requests_waiting", "requests_per_second", "a.b"],
    kube.check_image: ["vllm/vllm-openai:v0.8.5"],
}
REFUSED = {
    kube.check_dns1123_label: ["", "A", "a_b", "-a", "a-", "a.b", "a\n", "a" * 64, "é"],
    kube.check_dns1123_subdomain: ["", "A.b", "a..b", ".a", "a.", "a_b", "a\n", "a" * 254],
    kube.check_qualified_name: ["", "/name", "a/b/c", "nospecialchars%^=@", "-x", "x-", "prefix/",
                                "Pre.fix/name", "a" * 64, "name\n", "team\n/x", "x/" + "b" * 64],
    kube.check_label_value: ["-a", "a-", "a b", "a/b", "a\n", "a" * 64],
    kube.check_quantity: ["", "-1", "8\n", " 8", "1Gb", "64GB", "1K", "1e", "1e1.5", "1.2.3", "m", "1mi"],
    kube.check_path_segment_name: ["", ".", "..", "a/b", "a%2f", "a b", "a\n"],
    kube.check_image: ["", " img", "img\n"],
}


@pytest.mark.parametrize("rule, value", [(rule, v) for rule, values in ACCEPTED.items() for v in values])
def test_what_kubernetes_accepts_is_accepted(rule, value):
    assert rule(value) == value


@pytest.mark.parametrize("rule, value", [(rule, v) for rule, values in REFUSED.items() for v in values])
def test_what_kubernetes_refuses_is_refused(rule, value):
    with pytest.raises(kube.KubernetesValueError):
        rule(value)


def test_service_names_start_with_a_letter():
    assert kube.is_dns1035_label("bot") and not kube.is_dns1035_label("1bot")


@pytest.mark.parametrize("quantity", ["1e3", ".5", "1.", "100n", "250u", "2E"])
def test_every_quantity_kubernetes_reads_is_a_valid_resource_request(quantity):
    for model in (Resources, EvaluationResources, ServingResources):
        assert model.model_validate({"cpu": quantity, "memory": quantity}).cpu == quantity


def test_the_strings_that_become_kubernetes_fields_are_matched_whole():
    """`$` matches before a final newline; these reached object names, labels and selectors."""
    cases = [(Scheduling, {"queue": "gpu\n"}), (Scheduling, {"priority": "high\n"}),
             (Resources, {"gpuProduct": "NVIDIA-L4\n"}), (EvaluationResources, {"gpuProduct": "L4\n"}),
             (ServingResources, {"cpu": "8\n"}), (Autoscaling, {"maxReplicas": 2, "metric": "a/b"})]
    for model, data in cases:
        with pytest.raises(ValueError):
            model.model_validate(data)
