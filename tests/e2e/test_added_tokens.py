"""A BaseModel's `tokens` through training and back: the runtime adds the tokens, grows the
embeddings before the adapter wraps the model, trains them (modulesToSave), and evaluation and
serving load the adapter on a base grown the same way, the new token mapped to its trained row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.jobs.jobfile import JobFile, Tokens
from tests.support.runtime_support import (
    FRUIT_DATA,
    GIT,
    base_model,
    dataset_job,
    finetune_job,
    needs_training,
    prepared,
    run_job,
    trained_model,
    write_job,
)

pytestmark = [pytest.mark.slow, needs_training]


def test_added_tokens_are_trained_saved_and_served(tmp_path: Path, tiny_model: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from reconciler.runtime.serve import Generator, load_for_serving

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = dataset_job(tmp_path / "store", uri, "fruit-colors", FRUIT_DATA,
                       {"schema": {"type": "instruction"}})
    assert run_job("dataset", write_job(data, tmp_path / "jobs")).exit_code == 0
    old_vocabulary = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    base = base_model(tiny_model).model_copy(update={"tokens": Tokens(pad="<|pad|>", add=("<tool_call>",))})
    job = finetune_job(tmp_path / "store", uri, "tools", base, [prepared(data)], {
        "adapter": {"r": 4, "modulesToSave": ["embed_tokens", "lm_head"]},
        "training": {"maxSteps": 2, "microBatchSize": 4, "maxSeqLength": 64, "precision": "fp32"}})
    result = run_job("finetune", write_job(job, tmp_path / "jobs"))
    assert result.exit_code == 0, result.output[-3000:]

    saved = load_file(job.output_dir / "adapter_model.safetensors")
    embedding = saved["base_model.model.model.embed_tokens.modules_to_save.weight"]
    assert embedding.shape[0] == old_vocabulary + 2  # <|pad|> and <tool_call> are both new

    deployment = JobFile(kind="Deployment", name="tools", fingerprint="0" * 64, spec={}, spec_path="d.yaml",
                         git=GIT, storage_root=str(tmp_path / "store"), mlflow=job.mlflow,
                         model=trained_model(job))
    model, tokenizer = load_for_serving(deployment)
    [tool_call] = tokenizer("<tool_call>", add_special_tokens=False)["input_ids"]
    assert tool_call >= old_vocabulary and tokenizer.pad_token == "<|pad|>"
    weights = model.get_input_embeddings().weight
    assert weights.shape[0] == len(tokenizer) == old_vocabulary + 2
    assert torch.equal(weights[tool_call], embedding[tool_call])  # the trained row, not a fresh one
    text, count, _ = Generator(model, tokenizer).generate(
        tokenizer.apply_chat_template([{"role": "user", "content": "<tool_call> red?"}], tokenize=True,
                                      add_generation_prompt=True, return_dict=True)["input_ids"],
        max_tokens=3, temperature=0, top_p=1, top_k=0, stop=[], seed=None)
    assert count >= 1

    from peft import PeftModel

    from reconciler.runtime.loading import load_base_model

    with pytest.raises(RuntimeError, match="size mismatch"):  # why the job file carries the tokens
        PeftModel.from_pretrained(load_base_model(base_model(tiny_model)), str(job.output_dir))


def test_every_load_grows_the_base_alike(tiny_model: Path) -> None:
    """The new rows start from a fixed seed: the base an adapter is loaded on for evaluation or
    serving is the base it was trained on."""
    import torch

    from reconciler.runtime.loading import load_base_model

    plain = base_model(tiny_model)
    with_tokens = plain.model_copy(update={"tokens": Tokens(add=("<a>", "<b>"))})
    size = load_base_model(plain).get_input_embeddings().weight.shape[0]
    first, second = (load_base_model(with_tokens).get_input_embeddings().weight for _ in range(2))
    assert first.shape[0] == size + 2 and torch.equal(first, second)
