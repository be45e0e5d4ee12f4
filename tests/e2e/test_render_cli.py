"""`tuneops render` as a user runs it: YAML on stdout, one file per object, clear refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT, run_tuneops

EXAMPLES = REPO_ROOT / "specs-example"


def test_render_prints_the_objects_of_a_target():
    result = run_tuneops("render", str(EXAMPLES), "--target", "Deployment/support-bot")
    assert result.exit_code == 0, result.output
    kinds = [(doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == [
        ("ConfigMap", "support-bot"),
        ("Deployment", "support-bot"),
        ("Service", "support-bot"),
        ("HorizontalPodAutoscaler", "support-bot"),
    ]


def test_render_writes_one_file_per_object(tmp_path: Path):
    result = run_tuneops("render", str(EXAMPLES), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert f"wrote {len(files)} object(s)" in result.stderr
    assert "horizontalpodautoscaler-support-bot.yaml" in files and any(
        f.startswith("job-support-sft-") for f in files
    )


def test_render_refuses_what_cannot_become_a_manifest(tmp_path: Path):
    repo = tmp_path / "specs"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    settings = repo / "tuneops.yaml"
    settings.write_text(
        settings.read_text().replace("  image: registry.example.internal/ml/tuneops-trainer:0.1.0\n", "")
    )
    result = run_tuneops("render", str(repo))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "kubernetes.image is not set in tuneops.yaml" in result.stderr
    unknown = run_tuneops("render", str(EXAMPLES), "--target", "Deployment/nope")
    assert unknown.exit_code == 1 and "--target Deployment/nope: no such spec" in unknown.stderr
