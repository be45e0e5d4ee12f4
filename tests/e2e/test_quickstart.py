"""README's first command: `tuneops apply specs-example/quickstart --yes` on the embedded
default (local processes, MLflow on SQLite under .tuneops/), from specs to a served model."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from reconciler.runtime.metrics import normalise_answer
from tests.conftest import REPO_ROOT
from tests.support.http_support import Poller
from tests.support.reconcile_support import SpecRepo, chat
from tests.support.runtime_support import needs_training


def readme_first_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", readme, re.S)[0]


def test_readme_first_command_applies_the_quickstart():
    command = readme_first_command()
    assert "[train]" in command
    assert command.rstrip().endswith("tuneops apply specs-example/quickstart --yes")


def questions_of_the_test_split(repo_root: Path) -> dict[str, str]:
    """The test split the evaluation scores, as question -> expected answer."""
    import pyarrow.parquet as pq

    from reconciler.runtime.training_data import user_prompt

    (split,) = (repo_root / ".tuneops" / "store" / "datasets" / "fruit-colors").glob("*/test.parquet")
    return {user_prompt(row): row["output"] for row in pq.read_table(split).to_pylist()}


def pasted(command: str) -> str:
    """The answer to a curl as printed, run by a shell as a user would paste it."""
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["object"] == "chat.completion", answer
    return answer["choices"][0]["message"]["content"].strip()


@needs_training
@pytest.mark.slow
def test_the_quickstart_goes_from_specs_to_a_served_model_with_no_settings(tmp_path: Path):
    repo = SpecRepo(tmp_path / "quickstart", tracking_uri=None, own_model=False)
    (repo.root / "tuneops.yaml").write_text((REPO_ROOT / "specs-example/quickstart/tuneops.yaml").read_text())
    commit = repo.commit("the quickstart's own settings")
    try:
        applied = repo.tuneops("apply", ".", "--yes")
        assert applied.exit_code == 0, applied.output
        database = repo.root / ".tuneops" / "mlflow.db"
        assert f"MLflow sqlite:///{database}" in applied.stdout
        assert "Evaluation/fruit-sft-quality: done" in applied.stdout and "passed" in applied.stdout

        # The printed curl asks a question of the test split, decoded as the evaluation decodes
        # (greedy, 8 tokens), and the model gives the answer the split expects.
        curl = next(line.strip() for line in applied.stdout.splitlines() if line.strip().startswith("curl "))
        url = re.search(r"(http://127\.0\.0\.1:\d+)/v1/chat/completions", curl).group(1)
        body = json.loads(shlex.split(curl)[-1])
        assert (body["max_tokens"], body["temperature"]) == (8, 0.0)
        question = body["messages"][-1]["content"]
        expected = questions_of_the_test_split(repo.root)
        assert question in expected, f"{question!r} is not a question of the test split"
        answer = pasted(curl)
        assert normalise_answer(answer) == normalise_answer(expected[question])
        assert "# A question from the test split of fruit-colors" in applied.stdout
        # A plain request decodes the same way: the trained model's generation_config.json says so.
        assert chat(url, question, max_tokens=None)["choices"][0]["message"]["content"].strip() == answer
        store = repo.root / ".tuneops" / "store"
        (model,) = (store / "finetunes" / "fruit-sft").glob("*/generation_config.json")
        decoding = json.loads(model.read_text())
        assert (decoding["temperature"], decoding["max_new_tokens"]) == (0.0, 8)

        # Lineage: the registered version names the commit and the dataset digest it came from.
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{database}")
        version = client.get_model_version("fruit-sft", "1")
        assert version.tags["tuneops.git.commit"] == commit
        assert version.tags["tuneops.dataset.fruit-colors.digest"].startswith("sha256:")
        assert version.tags["tuneops.gate.fruit-sft-quality"] == "passed"
        assert str(client.get_model_version_by_alias("fruit-sft", "production").version) == "1"
        assert (repo.root / ".tuneops" / "artifacts").is_dir()

        # A new version takes over without a failed request from clients polling all along.
        repo.edit("fine-tune.yaml", "epochs: 3", "epochs: 4")
        repo.commit("train a little longer")
        with Poller(f"{url}/health", pause=0.05) as clients:
            switched = repo.tuneops("apply", ".", "--yes")
            clients.wait_for_answers(3)
        assert switched.exit_code == 0, switched.output
        assert f"fruit-bot: serving fruit-sft/2 at {url}" in switched.stdout
        assert clients.failures == []
        versions = [json.loads(answer)["version"] for answer in clients.answers]
        assert versions[0] == "fruit-sft/1" and versions[-1] == "fruit-sft/2"
        assert versions == sorted(versions), "fruit-sft/1 answered again after fruit-sft/2 took over"

        # Roll back, then edit one field: the plan compares with version 1, which serves again,
        # not version 2, the newest, so the reverted epochs are not listed as a change.
        repo.git("revert", "--no-edit", "HEAD")
        reverted = repo.tuneops("apply", ".", "--yes")
        assert reverted.exit_code == 0 and "serving fruit-sft/1" in reverted.stdout, reverted.output
        repo.edit("fine-tune.yaml", "learningRate: 3.0e-3", "learningRate: 1.0e-3")
        edited = next(a for a in repo.plan()["actions"] if a["kind"] == "FineTune")
        assert [change["path"] for change in edited["changes"]] == ["training.learningRate"], edited
        assert edited["compared_with"] == "fruit-sft/1, serving"

        stopped = repo.tuneops("stop", ".")
        assert stopped.exit_code == 0 and "Deployment/fruit-bot: stopped pid" in stopped.stdout
        with pytest.raises(OSError):
            chat(url, "What color is a blueberry?")
        assert repo.tuneops("stop", ".").stdout.strip() == "nothing is running"
        typo = repo.tuneops("stop", ".", "--target", "Deployment/fruit-bto")
        assert typo.exit_code == 0 and "Deployment/fruit-bto: not running" in typo.stdout
    finally:
        repo.stop_servers()
