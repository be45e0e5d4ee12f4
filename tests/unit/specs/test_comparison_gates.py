"""notWorseThan gates at validate time: a champion must exist, and their knobs must make sense."""

from __future__ import annotations

import textwrap
from pathlib import Path

from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, write_repo


def _problems(root: Path, gate_lines: str, *, deployment: bool = True, baseline: bool = False) -> list[str]:
    evaluation = textwrap.dedent(VALID_SPECS["evaluation.yaml"]).lstrip("\n")
    evaluation = evaluation.replace("    - metric: rougeL\n      min: 0.3\n", gate_lines)
    if baseline:
        evaluation += "  baseline:\n    baseModel: tiny\n"
    files = {**VALID_SPECS, "evaluation.yaml": evaluation}
    if not deployment:
        files.pop("deployment.yaml")
    result = validate_path(write_repo(root, files))
    return [p.text() for p in result.problems]


def test_a_comparison_with_the_serving_version_validates(tmp_path: Path) -> None:
    found = _problems(tmp_path, "    - metric: rougeL\n      notWorseThan: serving\n      margin: 0.02\n")
    assert not [line for line in found if " error " in line], found


def test_serving_with_no_deployment_requiring_the_evaluation_is_a_file_line_error(tmp_path: Path) -> None:
    found = _problems(tmp_path, "    - metric: rougeL\n      notWorseThan: serving\n", deployment=False)
    assert any("evaluation.yaml:13:21 error" in line and "no Deployment requires it" in line
               and "add sft-quality to a Deployment's requires" in line for line in found), found


def test_baseline_without_a_baseline_is_an_error_and_with_one_validates(tmp_path: Path) -> None:
    lines = "    - metric: perplexity\n      notWorseThan: baseline\n"
    assert any("notWorseThan: baseline needs this Evaluation's baseline" in line
               for line in _problems(tmp_path / "a", lines)), lines
    found = _problems(tmp_path / "b", lines, baseline=True)
    assert not [line for line in found if " error " in line], found


def test_bad_margin_confidence_and_stray_knobs_are_file_line_errors(tmp_path: Path) -> None:
    cases = {
        "    - metric: rougeL\n      notWorseThan: serving\n      margin: -0.1\n": "margin",
        "    - metric: rougeL\n      notWorseThan: serving\n      confidence: 1.2\n": "confidence",
        "    - metric: rougeL\n      notWorseThan: serving\n      confidence: 0.4\n": "confidence",
        "    - metric: rougeL\n      min: 0.3\n      margin: 0.02\n": "only applies to a comparison gate",
        "    - metric: rougeL\n      notWorseThan: champion\n": "notWorseThan",
    }
    for index, (lines, needle) in enumerate(cases.items()):
        errors = [line for line in _problems(tmp_path / str(index), lines) if " error " in line]
        assert any(needle in line and "evaluation.yaml:" in line for line in errors), (lines, errors)
