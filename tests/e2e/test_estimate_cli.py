"""`tuneops estimate FINETUNE` and the estimates in `tuneops plan` (issue 7), as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, run_tuneops

EXAMPLES = REPO_ROOT / "specs-example"


def test_estimate_prints_the_breakdown_of_an_example_fine_tune():
    result = run_tuneops("estimate", "support-sft", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("FineTune/support-sft")
    assert "4 x NVIDIA-H100-80GB-HBM3" in out
    assert "parameters                     8.03B" in out  # Llama 3.1 8B, from the architecture block
    for row in ("frozen weights", "optimizer states", "activations", "peak per GPU", "fits",
                "largest micro-batch that fits", "assumed MFU", "GPU-hours (at most)", "cost (at most)"):
        assert row in out, row


def test_estimate_json_and_the_mfu_override():
    base = run_tuneops("estimate", "FineTune/support-dpo", str(EXAMPLES), "--format", "json")
    assert base.exit_code == 0, base.output
    data = json.loads(base.stdout)
    assert data["name"] == "support-dpo" and data["fits"] is True
    assert data["workload"]["steps"] == 2000
    assert data["mfu"] == 0.35 and data["gpu_hours_at_most"] > 0
    faster = json.loads(run_tuneops("estimate", "support-dpo", str(EXAMPLES), "--format", "json",
                                    "--mfu", "0.7").stdout)
    assert faster["gpu_hours_at_most"] * 2 == data["gpu_hours_at_most"]


def test_estimate_of_a_fine_tune_that_does_not_fit_shows_it_instead_of_refusing(tmp_path: Path):
    """validate refuses the spec; estimate is where the user looks to see why."""
    import shutil

    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    spec = repo / "fine-tunes" / "docs-cpt.yaml"
    spec.write_text(spec.read_text().replace("gradientCheckpointing: true", "gradientCheckpointing: false"))
    assert run_tuneops("validate", str(repo)).exit_code == 1
    result = run_tuneops("estimate", "docs-cpt", str(repo))
    assert result.exit_code == 0, result.output
    assert "fits                           no" in result.stdout
    assert "largest micro-batch that fits  4" in result.stdout


def test_estimate_errors_are_one_line():
    missing = run_tuneops("estimate", "nope", str(EXAMPLES))
    assert missing.exit_code == 1
    assert "no FineTune named 'nope'" in missing.stderr and "support-sft" in missing.stderr
    assert "Traceback" not in missing.output
    cpu = run_tuneops("estimate", "fruit-sft", str(EXAMPLES / "quickstart"), "--mfu", "0.5")
    assert cpu.exit_code == 1 and "--mfu needs resources.gpuProduct" in cpu.stderr


def test_offline_plan_shows_memory_and_gpu_hours_per_fine_tune_it_would_train():
    text = run_tuneops("plan", str(EXAMPLES), "--offline")
    assert text.exit_code == 0, text.output
    assert "estimate: peak" in text.stdout and "GPU-hours on 4 x NVIDIA-H100-80GB-HBM3" in text.stdout
    assert "Training: at most" in text.stdout
    data = json.loads(run_tuneops("plan", str(EXAMPLES), "--offline", "--format", "json").stdout)
    assert set(data["estimates"]) == {f"FineTune/support-{name}"  # docs-cpt is suspended
                                      for name in ("sft", "dpo", "rm", "grpo", "kto", "orpo")}
    total = sum(e["gpu_hours_at_most"] for e in data["estimates"].values())
    assert data["gpu_hours_at_most"] == total
    # priced from tuneops.yaml's pricing: $4.00 an H100-hour on demand, $1.60 on spot
    for estimate in data["estimates"].values():
        assert estimate["dollars_at_most"] == pytest.approx(
            {"on_demand": estimate["gpu_hours_at_most"] * 4.0, "spot": estimate["gpu_hours_at_most"] * 1.6})
    assert data["dollars_at_most"] == pytest.approx({"on_demand": total * 4.0, "spot": total * 1.6,
                                                     "fine_tunes_not_priced": 0})
    assert f"GPU-hours, ${total * 4.0:,.2f} on demand (${total * 1.6:,.2f} spot)." in text.stdout
    markdown = run_tuneops("plan", str(EXAMPLES), "--offline", "--format", "markdown").stdout
    assert "**Training estimates**" in markdown and "| `FineTune/support-dpo` | peak" in markdown


def test_a_gpu_without_a_price_is_said_to_be_unpriced_not_counted_as_free(tmp_path: Path):
    import shutil

    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    settings = repo / "tuneops.yaml"
    text = settings.read_text()
    settings.write_text(text.replace("  default: {onDemand: 2.50}\n", "").replace(
        "NVIDIA-H100-80GB-HBM3: {onDemand: 4.00, spot: 1.60}", "NVIDIA-A100-SXM4-80GB: {onDemand: 2.00}"))
    plan = run_tuneops("plan", str(repo), "--offline")
    assert plan.exit_code == 0, plan.output
    assert "not priced (no pricing for this GPU in tuneops.yaml)" in plan.stdout
    data = json.loads(run_tuneops("plan", str(repo), "--offline", "--format", "json").stdout)
    assert data["dollars_at_most"] is None
    assert all(e["dollars_at_most"] is None for e in data["estimates"].values())
    estimate = run_tuneops("estimate", "support-sft", str(repo))
    assert "cost                           not priced" in estimate.stdout, estimate.stdout
    for price in ("-1", "true", "'4'", "1.0e+308", ".nan"):
        settings.write_text(text.replace("onDemand: 2.50", f"onDemand: {price}"))
        refused = run_tuneops("validate", str(repo))
        assert refused.exit_code == 1, (price, refused.output)
        assert "tuneops.yaml:" in refused.output and "onDemand" in refused.output, (price, refused.output)
