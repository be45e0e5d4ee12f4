"""The tiny model builder is reproducible: the tests and the quickstart rely on its bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="needs the [train] extra")


@pytest.mark.slow
def test_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    from reconciler.runtime.tiny_model import build

    corpus = ["What color is a banana? yellow", "What color is a cherry? red"]
    first = build(tmp_path / "a", corpus=corpus, seed=3)
    second = build(tmp_path / "b", corpus=corpus, seed=3)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = build(tmp_path / "c", corpus=corpus, seed=4)
    assert (other / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_the_model_loads_through_the_file_source_path(tmp_path: Path) -> None:
    from reconciler.jobs.jobfile import BaseModelRef
    from reconciler.runtime.loading import load_base_model, load_tokenizer
    from reconciler.runtime.tiny_model import build

    folder = build(tmp_path / "tiny", corpus=["hello world"], hidden_size=32, layers=1)
    ref = BaseModelRef(name="tiny", source=f"file://{folder}", chat_template="tokenizer")
    tokenizer = load_tokenizer(ref)
    model = load_base_model(ref)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == 32
    assert model.config.vocab_size == len(tokenizer)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"


QUICKSTART = Path(__file__).resolve().parents[3] / "specs-example" / "quickstart"


@pytest.mark.slow
def test_the_quickstart_model_is_what_the_builder_makes(tmp_path: Path) -> None:
    """specs-example/quickstart/models/tiny-llama is committed so the quickstart runs offline;
    rebuild it with the command in docs/runtime.md when the builder changes."""
    from reconciler.runtime.tiny_model import build, corpus_from_jsonl

    committed = QUICKSTART / "models" / "tiny-llama"
    corpus = corpus_from_jsonl(QUICKSTART / "data" / "fruit-colors.jsonl")
    rebuilt = build(tmp_path / "tiny-llama", corpus=corpus)
    assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in rebuilt.iterdir())
    for path in rebuilt.iterdir():
        if path.suffix == ".json":  # the same model whichever transformers release stamped it
            assert _unstamped(committed / path.name) == _unstamped(path), path.name
        else:
            assert (committed / path.name).read_bytes() == path.read_bytes(), path.name


def _unstamped(path: Path) -> object:
    document = json.loads(path.read_text())
    if isinstance(document, dict):
        document.pop("transformers_version", None)
    return document
