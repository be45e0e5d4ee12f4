"""README's first command: `tuneops apply specs-example/quickstart --yes` on the embedded
default (local processes, MLflow on SQLite under .tuneops/), from specs to a served model."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.reconcile_support import SpecRepo, chat
from tests.runtime_support import needs_training


def readme_first_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", readme, re.S)[0]


def test_readme_first_command_applies_the_quickstart():
    command = readme_first_command()
    assert "[train]" in command
    assert command.rstrip().endswith("tuneops apply specs-example/quickstart --yes")


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
        curl = next(line.strip() for line in applied.stdout.splitlines() if line.strip().startswith("curl "))
        url = re.search(r"(http://127\.0\.0\.1:\d+)/v1/chat/completions", curl).group(1)
        pasted = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=60)  # as pasted
        assert json.loads(pasted.stdout)["object"] == "chat.completion"
        # The tiny model learned the task's answers: one colour word, not random tokens.
        answer = chat(url, "What color is a blueberry?")["choices"][0]["message"]["content"].strip()
        assert answer in {"blue", "brown", "green", "orange", "purple", "red", "yellow"}

        # Lineage: the registered version names the commit and the dataset digest it came from.
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{database}")
        version = client.get_model_version("fruit-sft", "1")
        assert version.tags["tuneops.git.commit"] == commit
        assert version.tags["tuneops.dataset.fruit-colors.digest"].startswith("sha256:")
        assert version.tags["tuneops.gate.fruit-sft-quality"] == "passed"
        assert str(client.get_model_version_by_alias("fruit-sft", "production").version) == "1"
        assert (repo.root / ".tuneops" / "artifacts").is_dir()

        stopped = repo.tuneops("stop", ".")
        assert stopped.exit_code == 0 and "Deployment/fruit-bot: stopped pid" in stopped.stdout
        with pytest.raises(OSError):
            chat(url, "What color is a blueberry?")
        assert repo.tuneops("stop", ".").stdout.strip() == "nothing is running"
        typo = repo.tuneops("stop", ".", "--target", "Deployment/fruit-bto")
        assert typo.exit_code == 0 and "Deployment/fruit-bto: not running" in typo.stdout
    finally:
        repo.stop_servers()
