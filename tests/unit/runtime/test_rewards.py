"""GRPO's rewards as trl calls them: the built-in rules score what they say, a repository function
is loaded from its file and checked, and each failure names the reward, the row and what was
wrong in one line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from reconciler.jobs.jobfile import JobFile, MlflowTarget, RewardFileRef
from reconciler.runtime.rewards import (
    ROW_COLUMN,
    RewardError,
    as_trl_callable,
    builtin,
    reward_functions,
)
from reconciler.specs.finetune import FineTuneSpec, Reward

PROMPTS = [[{"role": "user", "content": "What color is a banana?"}]] * 3


def completions(*texts: str) -> list[list[dict[str, str]]]:
    return [[{"role": "assistant", "content": text}] for text in texts]


def spec_with(*rewards: dict, max_completion_length: int = 8) -> FineTuneSpec:
    return FineTuneSpec.model_validate({
        "baseModel": "tiny", "datasets": [{"name": "prompts"}], "method": "grpo", "rewards": list(rewards),
        "grpo": {"maxCompletionLength": max_completion_length}})


def job_with(tmp_path: Path, files: dict[str, str]) -> JobFile:
    refs = []
    for written, text in files.items():
        path = tmp_path / written
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        refs.append(RewardFileRef(path=written, location=f"file://{path}"))
    return JobFile(kind="FineTune", name="grpo", fingerprint="0" * 64, spec={}, storage_root=str(tmp_path),
                   mlflow=MlflowTarget(tracking_uri="http://127.0.0.1:1"), reward_files=tuple(refs))


def score(reward: dict, texts: tuple[str, ...], **columns: list) -> list[float]:
    spec = spec_with(reward)
    (function,) = reward_functions(job_with(Path("/nonexistent"), {}), spec)
    return function(PROMPTS[: len(texts)], completions(*texts), **columns)


def test_exact_match_and_contains_compare_with_the_rows_reference_as_the_evaluation_does():
    references = {"reference": ["Yellow", "yellow", "yellow"]}
    assert score({"builtin": "exact_match"}, ("yellow.", "It is yellow", "green"), **references) == [1, 0, 0]
    contains = score({"builtin": "contains"}, ("yellow.", "It is Yellow!", "yellowish"), **references)
    assert contains == [1, 1, 0]


def test_regex_length_penalty_and_json_rules():
    assert score({"builtin": "regex", "pattern": r"^Answer: \w+$"}, ("Answer: red", "red")) == [1, 0]
    json_scores = score({"builtin": "format_json"}, ('{"a": 1}', "```json\n[1, 2]\n```", "{nope", "1"))
    assert json_scores == [1, 1, 0, 0]  # an object or an array, not a bare number
    length = builtin(Reward.model_validate({"builtin": "length_penalty"}), 8)
    assert length(["q", "q"], ["x", "y"], token_ids=[[1, 2], list(range(12))]) == [-0.25, -1.0]


def test_a_rule_that_needs_a_reference_fails_when_the_data_has_none_rather_than_score_zero():
    for references in ({}, {"reference": ["", ""]}):  # no column; a column mapped to nothing
        with pytest.raises(RewardError, match="the prompt rows of this batch have no reference answer"):
            score({"builtin": "exact_match"}, ("red", "The."), **references)
    # an empty reference among others never matches, even an answer that normalises to nothing
    assert score({"builtin": "exact_match"}, ("The.", "red"), reference=["", "red"]) == [0.0, 1.0]


def test_a_python_reward_is_loaded_from_its_file_and_sees_text_and_columns(tmp_path: Path):
    code = "def score(prompts, completions, reference, **columns):\n" \
           "    return [float(len(c)) + (10 if r in p else 0)\n" \
           "            for p, c, r in zip(prompts, completions, reference)]\n"
    job = job_with(tmp_path, {"rewards/length.py": code})
    (function,) = reward_functions(job, spec_with({"python": "rewards/length.py:score", "weight": 0.5}))
    assert function.weight == 0.5 and function.name == "length.score"
    scored = function(PROMPTS[:2], completions("abc", "de"), reference=["banana", "kiwi"],
                      completion_ids=[[1], [2]], trainer_state=object())
    assert scored == [13.0, 2.0]
    trl_callable = as_trl_callable(function)  # trl logs rewards/<__name__>/mean
    assert trl_callable.__name__ == "length.score"


@pytest.mark.parametrize(("body", "message"), [
    ("return [1.0]",
     r"rewards/bad\.py:score: returned 1 scores for 2 completions \(rows 4 of p's train split"),
    ("return [1.0, float('nan')]", r"rewards/bad\.py:score: row 5 of p's train split: score nan is not a "
                                   r"finite number"),
    ("return [1.0, None]", r"row 5 of p's train split: score None is not a finite number"),
    ("return 3", r"returned int, not a list of 2 scores"),
    ("return '10'", r"returned str, not a list of 2 scores"),
    ("return [1.0, '1']", r"row 5 of p's train split: score '1' is not a finite number"),
    ("return [1 / (0 if 'kiwi' in r else 1) for r in reference]",
     r"rewards/bad\.py:score: row 5 of p's train split: raised ZeroDivisionError: division by zero"),
])
def test_a_broken_reward_fails_with_the_file_the_function_and_the_row(tmp_path: Path, body: str,
                                                                       message: str):
    code = f"def score(prompts, completions, reference, **columns):\n    {body}\n"
    job = job_with(tmp_path, {"rewards/bad.py": code})
    (function,) = reward_functions(job, spec_with({"python": "rewards/bad.py:score"}))
    rows = {ROW_COLUMN: ["4 of p's train split", "5 of p's train split"]}
    with pytest.raises(RewardError, match=message) as raised:
        function(PROMPTS[:2], completions("a", "b"), reference=["banana", "kiwi"], **rows)
    assert "\n" not in str(raised.value)


def test_a_reward_file_that_fails_to_import_names_its_line(tmp_path: Path):
    job = job_with(tmp_path, {"rewards/boom.py": "import math\n\nVALUE = 1 / 0\n"})
    with pytest.raises(RewardError, match=r"rewards/boom\.py:3: importing it raised ZeroDivisionError"):
        reward_functions(job, spec_with({"python": "rewards/boom.py:score"}))


def test_two_rewards_of_one_rule_are_logged_apart():
    spec = spec_with({"builtin": "regex", "pattern": "a"}, {"builtin": "regex", "pattern": "b"})
    names = [f.name for f in reward_functions(job_with(Path("/nonexistent"), {}), spec)]
    assert len(set(names)) == 2 and all(name.startswith("regex") for name in names)


def test_scores_are_plain_floats_for_trl():
    result = score({"builtin": "format_json"}, ('{"answer": 1}',))
    assert result == [1.0] and all(isinstance(v, float) and math.isfinite(v) for v in result)


def test_true_and_false_are_scores_as_trl_reads_them(tmp_path: Path):
    job = job_with(tmp_path, {"rewards/yes.py": "def score(prompts, completions, **columns):\n"
                                                "    return ['a' in c for c in completions]\n"})
    (function,) = reward_functions(job, spec_with({"python": "rewards/yes.py:score"}))
    assert function(PROMPTS[:2], completions("a", "b")) == [1.0, 0.0]


def test_a_reward_file_with_a_dataclass_imports_and_its_neighbours_are_not_on_the_path(tmp_path: Path):
    dataclass_file = ("from __future__ import annotations\nfrom dataclasses import dataclass\n\n\n"
                      "@dataclass\nclass Weights:\n    hit: float = 2.0\n\n\n"
                      "def score(prompts, completions, **columns):\n"
                      "    return [Weights().hit for _ in completions]\n")
    job = job_with(tmp_path, {"rewards/dc.py": dataclass_file, "rewards/helper.py": "LIMIT = 1\n",
                              "rewards/uses.py": "from helper import LIMIT\n\n\n"
                                                 "def score(prompts, completions, **columns):\n"
                                                 "    return [LIMIT] * len(completions)\n"})
    (function,) = reward_functions(job, spec_with({"python": "rewards/dc.py:score"}))
    assert function(PROMPTS[:1], completions("a")) == [2.0]
    with pytest.raises(RewardError, match=r"rewards/uses\.py:1: importing it raised ModuleNotFoundError"):
        reward_functions(job, spec_with({"python": "rewards/uses.py:score"}))
