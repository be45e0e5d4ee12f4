"""An Evaluation's `judge` at validate time: every mistake is a file:line error, before any job."""

from __future__ import annotations

import textwrap
from pathlib import Path

from reconciler.specs.evaluation import RUBRIC_MAX_CHARS
from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, write_repo

JUDGE_ON_URL = """\
  judge:
    endpoint:
      url: https://api.example.com/v1
      apiKeySecret: JUDGE_API_KEY
    model: judge-large
    rubric: Prefer answers that are correct and short.
    mode: {mode}
"""


def _errors(root: Path, judge: str, *, deployment: bool = True, baseline: bool = False,
            extra: dict[str, str] | None = None) -> list[str]:
    evaluation = textwrap.dedent(VALID_SPECS["evaluation.yaml"]).lstrip("\n") + judge
    if baseline:
        evaluation += "  baseline:\n    baseModel: tiny\n"
    files = {**VALID_SPECS, "evaluation.yaml": evaluation, **(extra or {})}
    if not deployment:
        files.pop("deployment.yaml")
    return [p.text() for p in validate_path(write_repo(root, files)).problems if p.severity == "error"]


def test_a_judge_on_a_hosted_api_validates_in_both_modes(tmp_path: Path) -> None:
    assert _errors(tmp_path / "score", JUDGE_ON_URL.format(mode="score")) == []
    assert _errors(tmp_path / "pairwise", JUDGE_ON_URL.format(mode="pairwise")) == []


def test_a_pairwise_judge_needs_a_champion(tmp_path: Path) -> None:
    found = _errors(tmp_path / "a", JUDGE_ON_URL.format(mode="pairwise"), deployment=False)
    assert len(found) == 1 and "evaluation.yaml:20:11 error" in found[0], found
    assert "a pairwise judge compares with the version serving" in found[0]
    assert _errors(tmp_path / "b", JUDGE_ON_URL.format(mode="pairwise"), deployment=False,
                   baseline=True) == []
    assert _errors(tmp_path / "c", JUDGE_ON_URL.format(mode="score"), deployment=False) == []


def test_a_judge_deployment_must_exist(tmp_path: Path) -> None:
    judge = "  judge:\n    endpoint:\n      deployment: {name}\n    rubric: Be right.\n"
    found = _errors(tmp_path / "a", judge.format(name="judge-llm"))
    assert len(found) == 1 and "evaluation.yaml:16:19 error" in found[0], found
    assert "names Deployment 'judge-llm', which does not exist" in found[0] and "one of: bot" in found[0]
    assert _errors(tmp_path / "b", judge.format(name="bot")) == []


def test_endpoint_mistakes_are_file_line_errors(tmp_path: Path) -> None:
    cases = {
        "    endpoint:\n      url: https://api.example.com/v1\n      deployment: bot\n":
            "set exactly one of deployment or url",
        "    endpoint:\n      deployment: bot\n      apiKeySecret: JUDGE_API_KEY\n":
            "apiKeySecret goes with url",
        "    endpoint:\n      url: https://api.example.com/v1\n      apiKeySecret: HF_TOKEN\n":
            "HF_TOKEN holds one of tuneops' own credentials",
        "    endpoint:\n      url: https://api.example.com/v1\n      apiKeySecret: sk-live-123\n":
            "apiKeySecret",  # a key pasted where its variable's name goes
        "    endpoint:\n      url: https://me:sk-live@api.example.com/v1\n": "url",
        "    endpoint:\n      url: ftp://api.example.com\n": "url",
    }
    for index, (endpoint, needle) in enumerate(cases.items()):
        found = _errors(tmp_path / str(index), f"  judge:\n{endpoint}    rubric: Be right.\n")
        assert any(needle in line and "evaluation.yaml:1" in line for line in found), (endpoint, found)
        assert all("sk-live" not in line for line in found), found


def test_a_rubric_over_the_limit_is_a_file_line_error(tmp_path: Path) -> None:
    rubric = "x" * (RUBRIC_MAX_CHARS + 1)
    found = _errors(tmp_path, f"  judge:\n    endpoint:\n      deployment: bot\n    rubric: {rubric}\n")
    assert any("evaluation.yaml:17:13 error spec.judge.rubric" in line and "32000" in line
               for line in found), [line[:200] for line in found]


def test_a_judge_needs_data_with_prompts(tmp_path: Path) -> None:
    text_data = textwrap.dedent(VALID_SPECS["dataset.yaml"]).replace("type: chat", "type: text")
    found = _errors(tmp_path, JUDGE_ON_URL.format(mode="score"), extra={"dataset.yaml": text_data})
    assert any("judge-needs-prompts" in line or "the judge grades answers to prompts" in line
               for line in found), found


def test_a_gate_on_a_judge_metric_that_is_never_logged_is_a_file_line_error(tmp_path: Path) -> None:
    gate = "  gates:\n    - metric: rougeL\n      min: 0.3\n"
    evaluation = textwrap.dedent(VALID_SPECS["evaluation.yaml"]).lstrip("\n")
    without = evaluation.replace(gate, "  gates:\n    - metric: judge/score\n      min: 5\n")
    found = _errors(tmp_path / "b", "", extra={"evaluation.yaml": without})
    assert any("evaluation.yaml:12:15 error spec.gates[0].metric: gate on judge/score, which is never "
               "logged: this Evaluation has no judge" in line for line in found), found
    wrong_mode = without.replace("min: 5", "min: 0.5").replace("judge/score", "judge/win_rate")
    scored = wrong_mode + JUDGE_ON_URL.format(mode="score")
    found = _errors(tmp_path / "c", "", extra={"evaluation.yaml": scored})
    assert any("gate on judge/win_rate, which is never logged: the score judge logs judge/score, "
               "judge/score_low" in line for line in found), found
    assert _errors(tmp_path / "d", "", extra={
        "evaluation.yaml": wrong_mode + JUDGE_ON_URL.format(mode="pairwise")}) == []
