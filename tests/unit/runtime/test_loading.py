"""Model loading takes the real code paths: file:// folders, and hf:// through the Hugging Face
cache at a pinned revision, offline (as on a cluster with a pre-filled cache)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("transformers", reason="needs the [train] extra")
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _hf_cache(tiny_model: Path, root: Path) -> Path:
    """The Hub cache layout: models--org--name/snapshots/<commit>/ plus refs/main."""
    repo = root / "hub" / "models--tuneops-test--tiny-llama"
    shutil.copytree(tiny_model, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return root / "hub"


def _load(cache: Path, revision: str) -> subprocess.CompletedProcess:
    probe = textwrap.dedent(f"""
        from reconciler.jobs.jobfile import BaseModelRef
        from reconciler.runtime.loading import ModelLoadError, load_base_model, load_tokenizer
        ref = BaseModelRef(name="tiny", source="hf://tuneops-test/tiny-llama", revision={revision!r})
        try:
            model = load_base_model(ref)
            tokenizer = load_tokenizer(ref)
            print("LOADED", model.config.model_type, len(tokenizer))
        except ModelLoadError as error:
            print("REFUSED", error)
        """)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_hf_source_loads_from_the_cache_at_the_pinned_revision(tiny_model: Path, tmp_path: Path) -> None:
    cache = _hf_cache(tiny_model, tmp_path)
    done = _load(cache, REVISION)
    assert "LOADED llama" in done.stdout, done.stdout + done.stderr[-3000:]


@pytest.mark.slow
def test_hf_revision_missing_from_the_cache_is_a_clear_refusal(tiny_model: Path, tmp_path: Path) -> None:
    cache = _hf_cache(tiny_model, tmp_path)
    done = _load(cache, "f" * 40)
    expected = "REFUSED base model 'tiny' (hf://tuneops-test/tiny-llama)"
    assert expected in done.stdout, done.stdout + done.stderr


def test_file_source_errors_name_the_model_and_what_is_missing(tmp_path: Path) -> None:
    from reconciler.jobs.jobfile import BaseModelRef
    from reconciler.runtime.loading import ModelLoadError, model_directory

    ref = BaseModelRef(name="tiny", source=f"file://{tmp_path / 'absent'}")
    with pytest.raises(ModelLoadError, match=r"base model 'tiny': .*absent is not a directory"):
        model_directory(ref)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        model_directory(BaseModelRef(name="tiny", source=f"file://{tmp_path / 'empty'}"))
