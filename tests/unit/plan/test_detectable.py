"""The smallest effect a comparison gate's split can detect, and the plan's warning about it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from reconciler.plan.detectable import margin_warnings, minimum_detectable_effect
from reconciler.specs.validate import validate_path
from tests.conftest import REPO_ROOT


def test_the_formula_matches_a_hand_computation() -> None:
    # (z_0.975 + z_0.8) * sd / sqrt(n) = (1.959964 + 0.841621) * 0.5 / 6
    by_hand = (1.959964 + 0.841621) * 0.5 / 6
    assert minimum_detectable_effect(36, 0.5, 0.95) == pytest.approx(by_hand, rel=1e-5)
    # four times the rows halve it; a higher confidence raises it
    assert minimum_detectable_effect(144, 0.5, 0.95) == pytest.approx(by_hand / 2, rel=1e-5)
    assert minimum_detectable_effect(36, 0.5, 0.99) > minimum_detectable_effect(36, 0.5, 0.95)
    assert math.isinf(minimum_detectable_effect(1, 0.5, 0.95))


def _quickstart(tmp_path: Path) -> Path:
    root = tmp_path / "quickstart"
    shutil.copytree(REPO_ROOT / "specs-example" / "quickstart", root,
                    ignore=shutil.ignore_patterns(".tuneops"))
    (root / ".git").mkdir()
    return root


def test_the_quickstarts_small_test_split_is_warned_about_at_the_gate(tmp_path: Path) -> None:
    root = _quickstart(tmp_path)
    result = validate_path(root)
    assert result.valid, [p.text() for p in result.problems]
    found = [p.text() for p in margin_warnings(result.specs, None)]
    assert len(found) == 1, found
    assert found[0].startswith(f"{root / 'evaluation.yaml'}:24:15 warning spec.gates[1].margin: gate "
                               "exact_match margin 0.1 is below what 36 test rows can detect (about 0.23 at "
                               "80% power")
    assert "raise maxSamples or split.test" in found[0]


def test_a_margin_the_split_can_see_is_not_warned_about(tmp_path: Path) -> None:
    root = _quickstart(tmp_path)
    text = (root / "evaluation.yaml").read_text().replace("margin: 0.1", "margin: 0.25")
    (root / "evaluation.yaml").write_text(text)
    assert list(margin_warnings(validate_path(root).specs, None)) == []
