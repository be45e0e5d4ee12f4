"""The built-in chat templates render as their model families' official templates do, and train,
prompt and stop with the runtime's own code.

Each expected string below is what the family's official Jinja (the `chat_template` of the
model named in runtime/chat_templates.py) renders for the conversation, worked out by hand from
that Jinja: its special tokens, whitespace, trimming and system-message placement. The tokenizers
are built here with each family's special tokens, so `bos_token` and `eos_token` are theirs.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

pytest.importorskip("transformers", reason="needs the [train] extra")

from reconciler.jobs.jobfile import BaseModelRef  # noqa: E402
from reconciler.runtime.chat_templates import TEMPLATES  # noqa: E402
from reconciler.runtime.evaluate import stop_token_ids  # noqa: E402
from reconciler.runtime.loading import chat_template_text  # noqa: E402
from reconciler.runtime.training_data import (  # noqa: E402
    TrainingDataError,
    assistant_spans,
    to_record,
    tokenize_chat,
)
from reconciler.specs.basemodel import BUILTIN_CHAT_TEMPLATES  # noqa: E402

SYSTEM = {"role": "system", "content": "You are terse."}
CHAT = [SYSTEM,
        {"role": "user", "content": "What color is the sky?"},
        {"role": "assistant", "content": "Blue.\n"},  # the trailing newline shows which templates trim
        {"role": "user", "content": "And grass?"},
        {"role": "assistant", "content": "Green."}]

# name: (bos, eos, the family's other special tokens, the token that ends an assistant turn)
FAMILIES: dict[str, tuple[str | None, str, tuple[str, ...], str]] = {
    "chatml": ("<s>", "<|im_end|>", ("<|im_start|>",), "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", ("<|start_header_id|>", "<|end_header_id|>"),
               "<|eot_id|>"),
    "qwen2.5": (None, "<|im_end|>", ("<|im_start|>", "<|endoftext|>"), "<|im_end|>"),
    "qwen3": (None, "<|im_end|>", ("<|im_start|>", "<|endoftext|>", "<think>", "</think>"), "<|im_end|>"),
    "qwen3-no-thinking": (None, "<|im_end|>", ("<|im_start|>", "<|endoftext|>", "<think>", "</think>"),
                          "<|im_end|>"),
    "mistral": ("<s>", "</s>", ("[INST]", "[/INST]"), "</s>"),
    "gemma": ("<bos>", "<eos>", ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>"),
    "phi3": ("<s>", "<|endoftext|>", ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"), "<|end|>"),
    "phi4": ("<|endoftext|>", "<|im_end|>", ("<|im_start|>", "<|im_sep|>"), "<|im_end|>"),
}

QWEN_HISTORY = ("<|im_start|>system\nYou are terse.<|im_end|>\n"
                "<|im_start|>user\nWhat color is the sky?<|im_end|>\n"
                "<|im_start|>assistant\nBlue.\n<|im_end|>\n"
                "<|im_start|>user\nAnd grass?<|im_end|>\n")
LLAMA3_HISTORY = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nWhat color is the sky?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nAnd grass?<|eot_id|>")
MISTRAL_HISTORY = ("<s>[INST] What color is the sky?[/INST] Blue.</s>"
                   "[INST] You are terse.\n\nAnd grass?[/INST]")
GEMMA_HISTORY = ("<bos><start_of_turn>user\nYou are terse.\n\nWhat color is the sky?<end_of_turn>\n"
                 "<start_of_turn>model\nBlue.<end_of_turn>\n"
                 "<start_of_turn>user\nAnd grass?<end_of_turn>\n")
PHI3_HISTORY = ("<|system|>\nYou are terse.<|end|>\n<|user|>\nWhat color is the sky?<|end|>\n"
                "<|assistant|>\nBlue.\n<|end|>\n<|user|>\nAnd grass?<|end|>\n")
PHI4_HISTORY = ("<|im_start|>system<|im_sep|>You are terse.<|im_end|>"
                "<|im_start|>user<|im_sep|>What color is the sky?<|im_end|>"
                "<|im_start|>assistant<|im_sep|>Blue.\n<|im_end|>"
                "<|im_start|>user<|im_sep|>And grass?<|im_end|>")

# name: (the whole conversation, the first four messages with a generation prompt)
EXPECTED: dict[str, tuple[str, str]] = {
    "chatml": (QWEN_HISTORY + "<|im_start|>assistant\nGreen.<|im_end|>\n",
               QWEN_HISTORY + "<|im_start|>assistant\n"),
    "llama3": (LLAMA3_HISTORY + "<|start_header_id|>assistant<|end_header_id|>\n\nGreen.<|eot_id|>",
               LLAMA3_HISTORY + "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "qwen2.5": (QWEN_HISTORY + "<|im_start|>assistant\nGreen.<|im_end|>\n",
                QWEN_HISTORY + "<|im_start|>assistant\n"),
    # the last reply, after the last question, gets a (here empty) think block; earlier ones none
    "qwen3": (QWEN_HISTORY + "<|im_start|>assistant\n<think>\n\n</think>\n\nGreen.<|im_end|>\n",
              QWEN_HISTORY + "<|im_start|>assistant\n"),
    "qwen3-no-thinking": (QWEN_HISTORY + "<|im_start|>assistant\n<think>\n\n</think>\n\nGreen.<|im_end|>\n",
                          QWEN_HISTORY + "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    "mistral": ("<s>[INST] What color is the sky?[/INST] Blue.</s>[INST] You are terse.\n\nAnd grass?[/INST]"
                " Green.</s>", MISTRAL_HISTORY),
    "gemma": (GEMMA_HISTORY + "<start_of_turn>model\nGreen.<end_of_turn>\n",
              GEMMA_HISTORY + "<start_of_turn>model\n"),
    "phi3": (PHI3_HISTORY + "<|assistant|>\nGreen.<|end|>\n<|endoftext|>", PHI3_HISTORY + "<|assistant|>\n"),
    "phi4": (PHI4_HISTORY + "<|im_start|>assistant<|im_sep|>Green.<|im_end|>",
             PHI4_HISTORY + "<|im_start|>assistant<|im_sep|>"),
}


@functools.cache
def family_tokenizer(name: str) -> Any:
    """A small BPE tokenizer with the family's special tokens and the named template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, others, _ = FAMILIES[name]
    specials = ["<unk>", *([bos] if bos else []), eos, *others]
    model = Tokenizer(models.BPE(unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator([m["content"] for m in CHAT], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, bos_token=bos, eos_token=eos,
                                        unk_token="<unk>", additional_special_tokens=list(others))
    ref = BaseModelRef(name="m", source="hf://m/m", chat_template=name)
    tokenizer.chat_template = chat_template_text(ref, tokenizer)
    return tokenizer


def render(name: str, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    return family_tokenizer(name).apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=generation_prompt)


def test_every_name_the_spec_accepts_has_a_template() -> None:
    assert set(TEMPLATES) == set(BUILTIN_CHAT_TEMPLATES) - {"tokenizer"} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_renders_as_the_official_one(name: str) -> None:
    whole, prompt = EXPECTED[name]
    assert render(name, CHAT, False) == whole
    assert render(name, CHAT[:4], True) == prompt


def test_qwen2_5_writes_its_default_system_message() -> None:
    assert render("qwen2.5", CHAT[1:2], True) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat color is the sky?<|im_end|>\n<|im_start|>assistant\n")


def test_qwen3_keeps_reasoning_only_after_the_last_question() -> None:
    thought = [CHAT[1], {"role": "assistant", "content": "<think>\nIt scatters.\n</think>\n\nBlue."},
               CHAT[3], {"role": "assistant", "content": "<think>\nChlorophyll.\n</think>\n\nGreen."}]
    assert render("qwen3", thought, False) == (
        "<|im_start|>user\nWhat color is the sky?<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"
        "<|im_start|>user\nAnd grass?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nChlorophyll.\n</think>\n\nGreen.<|im_end|>\n")


def test_roles_must_alternate_where_the_family_says_so() -> None:
    twice = [CHAT[1], CHAT[3]]
    for name in ("mistral", "gemma"):
        with pytest.raises(Exception, match="alternate"):
            render(name, twice, True)


# What allAssistantTurns trains: the reply and what ends its turn, in each template's own words.
TRAINED = {
    "chatml": ["Blue.\n<|im_end|>\n", "Green.<|im_end|>\n"],
    "llama3": ["Blue.<|eot_id|>", "Green.<|eot_id|>"],
    "qwen2.5": ["Blue.\n<|im_end|>\n", "Green.<|im_end|>\n"],
    "gemma": ["Blue.<end_of_turn>\n", "Green.<end_of_turn>\n"],
    # the eos that closes a conversation is trained on the last turn only
    "phi3": ["Blue.\n<|end|>\n", "Green.<|end|>\n<|endoftext|>"],
    "phi4": ["Blue.\n<|im_end|>", "Green.<|im_end|>"],
}


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_every_assistant_turn_is_found_in_the_rendering(name: str) -> None:
    text, spans = assistant_spans(family_tokenizer(name), CHAT, [2, 4])
    assert text == EXPECTED[name][0]
    assert [text[start:end] for start, end in spans] == TRAINED[name]
    record = tokenize_chat(family_tokenizer(name), CHAT, [2, 4])
    trained_ids = [token for token, bit in zip(record["input_ids"], record["completion_mask"], strict=True)
                   if bit]
    assert family_tokenizer(name).decode(trained_ids) == "".join(TRAINED[name])


def test_mistral_trains_every_turn_of_a_conversation_without_system_message() -> None:
    text, spans = assistant_spans(family_tokenizer("mistral"), CHAT[1:], [1, 3])
    assert [text[start:end] for start, end in spans] == [" Blue.</s>", " Green.</s>"]


@pytest.mark.parametrize("name", ["qwen3", "qwen3-no-thinking", "mistral"])
def test_templates_that_rewrite_earlier_turns_ask_for_the_last_turn_only(name: str) -> None:
    """Qwen3 drops the think block of replies once a question follows; Mistral moves the system
    message to the last question: no single rendering holds every turn as it was generated."""
    with pytest.raises(TrainingDataError, match="trainOn: lastAssistantTurn"):
        assistant_spans(family_tokenizer(name), CHAT, [2, 4])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_last_assistant_turn_prompt_is_where_the_completion_starts(name: str) -> None:
    """lastAssistantTurn trains a prompt/completion pair: trl renders the prompt with a generation
    prompt and needs it to begin the rendering of prompt and completion together."""
    record = to_record({"messages": CHAT}, "chat", "sft")
    assert record is not None
    prompt = render(name, record["prompt"], True)
    whole = render(name, record["prompt"] + record["completion"], False)
    assert whole.startswith(prompt)
    assert whole[len(prompt):].startswith(("Green.", " Green.", "<think>\n\n</think>\n\nGreen."))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_generation_stops_at_the_end_of_a_turn(name: str) -> None:
    tokenizer = family_tokenizer(name)
    end_of_turn = FAMILIES[name][3]
    assert tokenizer.convert_tokens_to_ids(end_of_turn) in stop_token_ids(tokenizer)
