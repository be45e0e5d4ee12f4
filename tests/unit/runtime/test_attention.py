"""training.attention: which kernel the model is loaded with, and where it is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.specs.finetune import FineTuneSpec

pytest.importorskip("transformers", reason="needs the [train] extra")


def fine_tune(**training: object) -> FineTuneSpec:
    return FineTuneSpec.model_validate({"baseModel": "b", "datasets": [{"name": "d"}], "training": training})


def test_auto_is_sdpa_without_cuda_and_explicit_choices_pass_through() -> None:
    from reconciler.runtime.loading import attention_implementation

    assert fine_tune().training.attention == "auto"
    assert attention_implementation("auto", cuda=False) == "sdpa"
    for explicit in ("eager", "sdpa", "flash_attention_2"):
        assert attention_implementation(explicit, cuda=False) == explicit


def test_auto_on_cuda_is_flash_attention_only_where_flash_attn_is_installed() -> None:
    import importlib.util

    from reconciler.runtime.loading import attention_implementation

    installed = importlib.util.find_spec("flash_attn") is not None
    assert attention_implementation("auto", cuda=True) == ("flash_attention_2" if installed else "sdpa")


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_loader_loads_the_model_with_the_attention_asked_for(tiny_model: Path, attention: str) -> None:
    from reconciler.jobs.jobfile import BaseModelRef
    from reconciler.runtime.loading import load_base_model

    model = load_base_model(BaseModelRef(name="tiny", source=f"file://{tiny_model}"), attention=attention)
    assert model.config._attn_implementation == attention


def test_flash_attention_without_cuda_is_refused_at_job_start() -> None:
    from reconciler.runtime.finetune import FineTuneError, check_hardware

    with pytest.raises(FineTuneError, match="flash_attention_2 needs a CUDA GPU"):
        check_hardware(fine_tune(attention="flash_attention_2"), cuda=False)
    check_hardware(fine_tune(attention="flash_attention_2"), cuda=True)
    check_hardware(fine_tune(attention="eager"), cuda=False)
