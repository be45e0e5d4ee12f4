"""Validation of the alignment methods: each data type goes with its method, a GRPO fine-tune's
rewards can be found and run, a reward model is used as one and only as one, the group fits the
batch, and a cluster can forbid Python rewards. Each rule shown firing at its file and line."""

from __future__ import annotations

from pathlib import Path

from reconciler.specs.problems import Problem
from reconciler.specs.validate import validate_path
from tests.conftest import API, VALID_SPECS, write_repo

PROMPTS = f"""
    {API}
    kind: Dataset
    metadata:
      name: prompts
    spec:
      source: file://data/prompts.jsonl
      schema:
        type: prompt
    """
PAIRS = f"""
    {API}
    kind: Dataset
    metadata:
      name: pairs
    spec:
      source: file://data/pairs.jsonl
      schema:
        type: preference
    """
RM = f"""
    {API}
    kind: FineTune
    metadata:
      name: rm
    spec:
      baseModel: tiny
      method: reward
      datasets:
        - name: pairs
      adapter:
        type: none
    """
REWARD_FILE = "def score(prompts, completions, **columns):\n    return [0.0 for _ in completions]\n"


def grpo(rewards: str = "    - python: rewards/tone.py:score\n    - rewardModel: {fineTune: rm}\n",
         extra: str = "") -> str:
    return (f"{API}\nkind: FineTune\nmetadata:\n  name: grpo\nspec:\n  fromFineTune: sft\n  method: grpo\n"
            f"  datasets:\n    - name: prompts\n  rewards:\n{rewards}  training:\n    microBatchSize: 8\n"
            + extra)


def validated(tmp_path: Path, files: dict[str, str], settings: str = "") -> list[Problem]:
    repo = write_repo(tmp_path / "specs", {
        **VALID_SPECS, "prompts.yaml": PROMPTS, "pairs.yaml": PAIRS, "rm.yaml": RM,
        "rewards/tone.py": REWARD_FILE, "data/prompts.jsonl": '{"prompt": "hi"}\n',
        "data/pairs.jsonl": '{"prompt": "hi", "chosen": "a", "rejected": "b"}\n',
        **({"tuneops.yaml": settings} if settings else {}), **files})
    return list(validate_path(repo).problems)


def texts(found: list[Problem]) -> str:
    return "\n".join(p.text() for p in found)


def test_a_grpo_fine_tune_with_a_python_reward_and_a_reward_model_is_valid(tmp_path: Path):
    found = validated(tmp_path, {"grpo.yaml": grpo()})
    assert [p for p in found if p.severity.value == "error"] == [], texts(found)


def test_each_method_reads_its_data_type_and_the_hint_names_the_method_for_the_data(tmp_path: Path):
    found = validated(tmp_path, {"grpo.yaml": grpo().replace("name: prompts", "name: chats")})
    assert "grpo.yaml:9:13 error spec.datasets[0].name: method grpo needs prompt data, but Dataset " \
           "'chats' has schema type chat" in texts(found)
    assert "use method: sft" in texts(found)
    kto = RM.replace("name: rm", "name: kto").replace("method: reward", "method: kto")
    found = validated(tmp_path / "kto", {"kto.yaml": kto})
    assert "method kto needs binary-feedback data" in texts(found) and "use method: dpo" in texts(found)


def test_a_python_reward_must_exist_parse_and_define_its_function(tmp_path: Path):
    missing = validated(tmp_path / "a", {"grpo.yaml": grpo("    - python: rewards/none.py:score\n")})
    assert "grpo.yaml:11:15 error spec.rewards[0].python: reward file rewards/none.py cannot be read" \
           in texts(missing)
    broken = validated(tmp_path / "b", {"grpo.yaml": grpo("    - python: rewards/bad.py:score\n"),
                                        "rewards/bad.py": "def score(:\n"})
    assert "reward file rewards/bad.py:1 is not valid Python" in texts(broken)
    typo = validated(tmp_path / "c", {"grpo.yaml": grpo("    - python: rewards/tone.py:scor\n")})
    assert "reward file rewards/tone.py defines no function 'scor' at its top level" in texts(typo)
    assert "did you mean 'score'" in texts(typo)
    outside = validated(tmp_path / "d", {"grpo.yaml": grpo("    - python: ../tone.py:score\n")})
    assert [p.code for p in outside] == ["outside-repository"], texts(outside)
    # `..` may lead to a folder beside the spec's, inside the repository
    sibling = grpo("    - python: ../rewards/tone.py:score\n")
    beside = validated(tmp_path / "e", {"fine-tunes/grpo.yaml": sibling})
    assert [p for p in beside if p.severity.value == "error"] == [], texts(beside)
    absolute = validated(tmp_path / "f", {"grpo.yaml": grpo("    - python: /etc/tone.py:score\n")})
    assert "error spec.rewards[0].python: '/etc/tone.py:score' is not `path/to/file.py:function`" \
        in texts(absolute)


def test_a_reward_file_is_a_small_self_contained_regular_file(tmp_path: Path):
    import os

    fifo_repo = tmp_path / "fifo"
    found = validated(fifo_repo, {"grpo.yaml": grpo("    - python: rewards/pipe.py:score\n")})
    assert "rewards/pipe.py cannot be read" in texts(found)  # missing, before the FIFO exists
    os.mkfifo(fifo_repo / "specs" / "rewards" / "pipe.py")
    from reconciler.specs.validate import validate_path as again

    blocked = list(again(fifo_repo / "specs").problems)  # returns: a FIFO is not read
    assert "rewards/pipe.py cannot be read (not a regular file)" in texts(blocked)
    huge = validated(tmp_path / "huge", {"grpo.yaml": grpo("    - python: rewards/big.py:score\n"),
                                         "rewards/big.py": REWARD_FILE + "#" * (1 << 20)})
    assert "rewards/big.py cannot be read (over 1 MiB, not a reward function)" in texts(huge)
    helper = "from helper import LIMIT\nimport json\n\n\n" + REWARD_FILE
    imports = validated(tmp_path / "imports", {"grpo.yaml": grpo("    - python: rewards/uses.py:score\n"),
                                               "rewards/uses.py": helper, "rewards/helper.py": "LIMIT = 1\n"})
    assert "reward file rewards/uses.py:1 imports helper, a file of the repository" in texts(imports)
    assert "imports json" not in texts(imports)


def test_a_reward_function_may_be_imported_or_defined_under_a_condition(tmp_path: Path):
    for index, code in enumerate(("from statistics import mean as score\n",
                                  "try:\n    import numpy\nexcept ImportError:\n    pass\n"
                                  "else:\n    def score(p, c, **k):\n        return [0.0] * len(c)\n",
                                  "from typing import Callable\n"
                                  "score: Callable = lambda p, c, **k: [0.0]\n")):
        found = validated(tmp_path / str(index), {"grpo.yaml": grpo("    - python: rewards/r.py:score\n"),
                                                  "rewards/r.py": code})
        assert [p for p in found if p.severity.value == "error"] == [], texts(found)


def test_a_reward_model_is_a_fine_tune_trained_as_one_and_is_used_only_as_one(tmp_path: Path):
    not_rm = validated(tmp_path / "a", {"grpo.yaml": grpo("    - rewardModel: {fineTune: sft}\n")})
    assert "error spec.rewards[0].rewardModel.fineTune: FineTune 'sft' trains with method sft, not a " \
           "reward model" in texts(not_rm)
    missing = validated(tmp_path / "b", {"grpo.yaml": grpo("    - rewardModel: {fineTune: nope}\n")})
    assert any(p.code == "missing-reference" for p in missing), texts(missing)
    served = validated(tmp_path / "c", {"deployment.yaml": VALID_SPECS["deployment.yaml"].replace(
        "fineTune: sft", "fineTune: rm")})
    assert "FineTune 'rm' is a reward model (method reward): it does not generate, so it cannot be served" \
           in texts(served)


def test_the_group_must_divide_the_batch_and_vllm_needs_a_gpu(tmp_path: Path):
    settings = "  grpo:\n    numGenerations: 3\n    useVllm: true\n"
    found = validated(tmp_path, {"grpo.yaml": grpo(extra=settings)})
    assert "error spec.grpo.numGenerations: grpo.numGenerations (3) must divide the completions of one " \
           "optimizer step: training.microBatchSize x gradientAccumulation x processes = 8" in texts(found)
    assert "error spec.grpo.useVllm: grpo.useVllm generates with vLLM, which needs a CUDA GPU" in texts(found)


def test_rewards_and_grpo_settings_belong_to_grpo(tmp_path: Path):
    no_rewards = validated(tmp_path / "a", {"grpo.yaml": grpo("    []\n").replace("  rewards:\n    []\n",
                                                                                 "")})
    assert "method grpo needs rewards to maximise" in texts(no_rewards)
    sft = VALID_SPECS["fine-tune.yaml"].replace("      r: 8\n", "      r: 8\n          grpo:\n"
                                                                 "            numGenerations: 4\n")
    ignored = validated(tmp_path / "b", {"fine-tune.yaml": sft})
    assert "warning spec.grpo: grpo settings only apply to method grpo (method is sft)" in texts(ignored)


def test_a_project_can_forbid_python_rewards(tmp_path: Path):
    found = validated(tmp_path, {"grpo.yaml": grpo()}, settings="policy:\n  allowPythonRewards: false\n")
    violation = [p for p in found if "builtin-python-rewards" in p.message]
    assert len(violation) == 1 and violation[0].severity.value == "error", texts(found)
    assert violation[0].position.file.endswith("grpo.yaml")


def test_a_sweep_may_not_try_a_group_or_a_batch_the_trainer_refuses(tmp_path: Path):
    evaluation = VALID_SPECS["evaluation.yaml"].replace("name: sft-quality", "name: grpo-quality").replace(
        "fineTune: sft", "fineTune: grpo")
    sweep = f"""
        {API}
        kind: Sweep
        metadata:
          name: grpo-sweep
        spec:
          fineTune: grpo
          objective:
            evaluation: grpo-quality
            metric: rougeL
            direction: maximize
          parameters:
            grpo.numGenerations: {{choice: [4, 3]}}
            training.microBatchSize: {{choice: [8, 6]}}
          maxTrials: 4
        """
    found = validated(tmp_path, {"grpo.yaml": grpo(), "grpo-quality.yaml": evaluation, "sweep.yaml": sweep})
    refused = [p for p in found if p.code == "parameter-value-refused"]
    assert len(refused) == 2, texts(found)  # 3 does not divide 8, and 8 (the group) does not divide 6
    assert "refuses grpo.numGenerations = 3 (grpo.numGenerations (3) must divide" in texts(refused)
    assert "refuses training.microBatchSize = 6 (grpo.numGenerations (8) must divide" in texts(refused)


def test_a_job_refuses_a_combination_of_values_that_each_validated():
    import pytest

    from reconciler.runtime.finetune import FineTuneError, check_batch
    from reconciler.specs.finetune import FineTuneSpec

    spec = FineTuneSpec.model_validate({"baseModel": "b", "datasets": [{"name": "p"}], "method": "grpo",
                                        "rewards": [{"builtin": "contains"}], "grpo": {"numGenerations": 8},
                                        "training": {"microBatchSize": 4}})
    with pytest.raises(FineTuneError, match=r"grpo.numGenerations \(8\) must divide .* = 4; set"):
        check_batch(spec)


def test_a_reward_model_without_held_out_pairs_is_a_warning(tmp_path: Path):
    whole = "      split:\n        train: 1.0\n        validation: 0.0\n        test: 0.0\n"
    found = validated(tmp_path / "a", {"pairs.yaml": PAIRS.rstrip(" ") + whole})
    assert "warning spec.datasets: method reward records reward_accuracy on held-out pairs" in texts(found)
    assert "reward_accuracy" not in texts(validated(tmp_path / "b", {}))  # the default split has some
