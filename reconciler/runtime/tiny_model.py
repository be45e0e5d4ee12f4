"""A tiny Llama-architecture model built on this machine: random weights, a BPE tokenizer
trained on a small corpus, and a ChatML chat template.

Nothing can be downloaded at run time here, so the tests and specs-example/quickstart load
this model through the same `file://` code path a real model takes. Same arguments, same
library versions: same bytes.

    python -m reconciler.runtime.tiny_model OUT_DIR [--corpus FILE.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from reconciler.fileio import replace_directory
from reconciler.runtime.chat_templates import CHATML

CHATML_TEMPLATE = CHATML
SPECIAL_TOKENS = ["<unk>", "<s>", "<|im_end|>", "<pad>", "<|im_start|>"]

# A little English, so that the tokenizer has merges for ordinary words too.
_BASE_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please answer the question in one word.",
    "What is the color of the sky? It is blue.",
    "A model learns from examples; a fine-tune adapts it to a task.",
    "user assistant system question answer instruction input output",
    "red green blue yellow orange purple black white brown pink",
]


def build(out_dir: Path, *, corpus: Iterable[str] = (), vocab_size: int = 512, hidden_size: int = 64,
          layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate_size: int = 128,
          max_positions: int = 512, initializer_range: float = 0.2, seed: int = 0) -> Path:
    """Write config.json, model.safetensors, the tokenizer and generation_config.json to `out_dir`.

    Written to a temporary folder beside `out_dir` and renamed into place when complete."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer_model = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer_model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer_model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    lines = list(_BASE_CORPUS) + [line for line in corpus if line.strip()]
    tokenizer_model.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_model, bos_token="<s>", eos_token="<|im_end|>",
        unk_token="<unk>", pad_token="<pad>", additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHATML_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=initializer_range, dtype="float32")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)  # mkdtemp makes 0700: be an ordinary folder
        for written in staging.iterdir():
            written.chmod(0o644)
        replace_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def corpus_from_jsonl(path: Path) -> list[str]:
    """Every string value of every row: enough for the tokenizer to know the task's words."""
    lines: list[str] = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        if raw.strip():
            lines.extend(_strings(json.loads(raw)))
    return lines


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--corpus", type=Path, action="append", default=[],
                        help="JSONL file whose strings join the tokenizer's training corpus.")
    args = parser.parse_args(argv)
    corpus = [line for path in args.corpus for line in corpus_from_jsonl(path)]
    print(build(args.out_dir, corpus=corpus))


if __name__ == "__main__":
    main()
