"""How lm-evaluation-harness's results become tuneops metrics: `task/<task>/<metric>`, its filter
after a dot (MLflow names hold no commas), no standard errors, and per-document values in
document order for paired comparisons."""

from __future__ import annotations

from reconciler.runtime.benchmark_tasks import _metrics, _samples, metric_name


def test_result_keys_become_metric_names():
    assert metric_name("hellaswag", "acc,none") == "task/hellaswag/acc"
    assert metric_name("gsm8k", "exact_match,strict-match") == "task/gsm8k/exact_match.strict-match"
    assert metric_name("hellaswag", "acc_stderr,none") is None
    assert metric_name("hellaswag", "alias") is None


def test_only_numbers_are_metrics():
    results = {"mc": {"alias": "mc", "sample_len": 4, "acc,none": 0.25, "acc_stderr,none": "N/A"},
               "gsm8k": {"exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": 0.1}}
    assert _metrics(results) == {"task/mc/acc": 0.25, "task/gsm8k/exact_match.flexible-extract": 0.5}


def test_per_document_values_follow_the_documents_order():
    rows = [{"doc_id": 2, "filter": "none", "metrics": ["acc"], "acc": 1.0},
            {"doc_id": 0, "filter": "none", "metrics": ["acc"], "acc": 0.0},
            {"doc_id": 1, "filter": "none", "metrics": ["acc"], "acc": 1.0}]
    assert _samples({"mc": rows}) == {"task/mc/acc": [0.0, 1.0, 1.0]}
