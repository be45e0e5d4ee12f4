"""`BaseModel`: a pretrained model to fine-tune from, pinned to a revision."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Strict, field_validator

from reconciler.specs.base import (
    Bool,
    Int,
    PositiveInt,
    Resource,
    SpecModel,
    SpecValueError,
    Str,
    field,
)
from reconciler.specs.schema_errors import suggest
from reconciler.specs.sources import SourceURI, parse_source

BUILTIN_CHAT_TEMPLATES = ("tokenizer", "chatml", "llama3", "qwen2.5", "qwen3", "qwen3-no-thinking",
                          "mistral", "gemma", "phi3", "phi4")
"""`tokenizer` keeps the model's own; the others are written in runtime/chat_templates.py."""

# Names other fine-tuning tools give these formats (axolotl's `chat_template`, LLaMA-Factory's
# `template`), folded as `_folded` folds them, for a did-you-mean.
OTHER_TOOLS_NAMES = {
    "qwen": "qwen2.5", "qwen2": "qwen2.5", "qwen3nothink": "qwen3-no-thinking",
    "qwen3nothinking": "qwen3-no-thinking", "llama31": "llama3", "llama32": "llama3",
    "llama33": "llama3", "mistralv3": "mistral", "mistralv2v3": "mistral", "mistralv03": "mistral",
    "gemma2": "gemma", "gemma3": "gemma", "phi": "phi3", "phi35": "phi3",
}


def _folded(name: str) -> str:
    return "".join(character for character in name.lower() if character.isalnum())


def suggest_chat_template(value: str) -> str | None:
    """'did you mean ...?' for a template name written another way (`qwen2_5`, `llama-3`) or
    as another tool calls it (`qwen3_nothink`, `phi_3`, `mistral_v3`)."""
    folded = _folded(value)
    for name in BUILTIN_CHAT_TEMPLATES:
        if _folded(name) == folded:
            return f"did you mean {name!r}?"
    if folded in OTHER_TOOLS_NAMES:
        return f"did you mean {OTHER_TOOLS_NAMES[folded]!r}?"
    return suggest(value, BUILTIN_CHAT_TEMPLATES)


def check_chat_template(value: str) -> str:
    if value in BUILTIN_CHAT_TEMPLATES:
        return value
    if value.startswith("file://"):
        parse_source(value)
        if not value.endswith((".jinja", ".j2", ".jinja2")):
            raise SpecValueError("a chat template file must be a Jinja file (.jinja)")
        return value
    choices = ", ".join(BUILTIN_CHAT_TEMPLATES)
    raise SpecValueError(f"must be one of {choices}, or file://path/to/template.jinja",
                         hint=suggest_chat_template(value))


ChatTemplate = Annotated[str, Strict(), AfterValidator(check_chat_template)]


class ArchitectureSpec(SpecModel):
    """The model's shape, for memory planning without reading its config.json."""

    hidden_size: PositiveInt = field(doc="Hidden size (`hidden_size` in config.json).", example=4096)
    num_layers: PositiveInt = field(doc="Decoder layers (`num_hidden_layers`).", example=32)
    num_attention_heads: PositiveInt = field(doc="Attention heads (`num_attention_heads`).",
                                             example=32)
    num_key_value_heads: Int | None = field(
        None, "Key/value heads for grouped-query attention (`num_key_value_heads`); "
              "default: as many as attention heads.", gt=0, example=8)
    intermediate_size: PositiveInt = field(doc="MLP width (`intermediate_size`).", example=14336)
    vocab_size: PositiveInt = field(doc="Vocabulary size (`vocab_size`).", example=128256)
    tie_word_embeddings: Bool = field(False, "Whether the output head shares the embedding weights.")


class TokensSpec(SpecModel):
    """Special and added tokens, as a fine-tuning config sets them (axolotl's `special_tokens` and
    `tokens`). A token not yet in the vocabulary is added, and the model's embeddings grow to hold
    it: a FineTune with an adapter then trains them too (`adapter.modulesToSave`)."""

    pad: Str | None = field(None, "The padding token.", example="<|pad|>")
    eos: Str | None = field(None, "The end-of-sequence token: generation stops at it.", example="<|im_end|>")
    bos: Str | None = field(None, "The beginning-of-sequence token.", example="<s>")
    add: tuple[Str, ...] = field((), "Tokens added to the vocabulary, each kept whole by the tokenizer.",
                                 example=["<tool_call>", "</tool_call>"])

    @field_validator("pad", "eos", "bos")
    @classmethod
    def _not_empty(cls, token: str | None) -> str | None:
        if token == "":
            raise SpecValueError("a token must not be empty")
        return token

    @field_validator("add")
    @classmethod
    def _distinct(cls, tokens: tuple[str, ...]) -> tuple[str, ...]:
        if any(not token for token in tokens):
            raise SpecValueError("a token must not be empty")
        repeated = sorted({token for token in tokens if tokens.count(token) > 1})
        if repeated:
            raise SpecValueError(f"{', '.join(map(repr, repeated))} listed more than once")
        return tokens

    def special(self) -> dict[str, str]:
        """{"pad_token": ..., ...}: the special tokens it sets, as transformers names them."""
        return {f"{role}_token": token for role, token in
                (("pad", self.pad), ("eos", self.eos), ("bos", self.bos)) if token is not None}


class BaseModelSpec(SpecModel):
    source: SourceURI = field(
        doc="Where the weights are: hf://org/name, s3://bucket/prefix or file://path "
            "(relative to this spec file; the folder and every file in it must resolve, symlinks "
            "followed, inside the spec repository or policy.allowedFileRoots).",
        example="hf://meta-llama/Llama-3.1-8B-Instruct")
    revision: Str | None = field(
        None, "The exact revision: a 40-character commit sha for hf:// sources. Branches and tags "
              "move, so an unpinned hf:// source is a warning (an error under --strict).",
        example="0e9e39f249a16976918f6564b8830bc894c89659")
    chat_template: ChatTemplate = field(
        "tokenizer", "Chat template used to format conversations: the tokenizer's own (`tokenizer`), "
                     "a built-in that renders as its model family's official template (`chatml`, "
                     "`llama3`, `qwen2.5`, `qwen3`, `qwen3-no-thinking`, `mistral`, `gemma`, `phi3`, "
                     "`phi4`; see docs/runtime.md) or a Jinja file (file://..., relative to this spec, "
                     "inside the spec repository or policy.allowedFileRoots).", example="qwen2.5")
    trust_remote_code: Bool = field(
        False, "Run Python code shipped in the model repository. Off unless you trust the repository.")
    license: Str | None = field(None, "The model's license, recorded on every model built from it.",
                                example="llama3.1")
    tokens: TokensSpec | None = field(
        None, "Special tokens to set (pad, eos, bos) and tokens to add to the vocabulary; the model's "
              "embeddings grow to hold new ones. A FineTune with an adapter must then train the "
              "embeddings and output head: `adapter.modulesToSave: [embed_tokens, lm_head]`.",
        added_later=True)
    architecture: ArchitectureSpec | None = field(
        None, "The model's shape, for planning GPU memory offline. Default: read from the "
              "model's config.json when it is on disk (a file:// source, or the Hugging Face "
              "cache).", operational=True)


class BaseModelResource(Resource):
    """A pretrained model to fine-tune from."""

    KIND: ClassVar[str] = "BaseModel"
    kind: Literal["BaseModel"] = field(doc="`BaseModel`.")
    spec: BaseModelSpec = field(doc="Where the model comes from.")
