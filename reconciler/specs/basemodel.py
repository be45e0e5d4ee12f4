"""`BaseModel`: a pretrained model to fine-tune from, pinned to a revision."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Strict

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
from reconciler.specs.sources import SourceURI, parse_source

BUILTIN_CHAT_TEMPLATES = ("tokenizer", "chatml", "llama3")


def check_chat_template(value: str) -> str:
    if value in BUILTIN_CHAT_TEMPLATES:
        return value
    if value.startswith("file://"):
        parse_source(value)
        if not value.endswith((".jinja", ".j2", ".jinja2")):
            raise SpecValueError("a chat template file must be a Jinja file (.jinja)")
        return value
    raise SpecValueError(
        "must be 'tokenizer', 'chatml', 'llama3' or file://path/to/template.jinja"
    )


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
        "tokenizer", "Chat template used to format conversations: the tokenizer's own, a built-in "
                     "(`chatml`, `llama3`) or a Jinja file (file://..., relative to this spec, inside "
                     "the spec repository or policy.allowedFileRoots).")
    trust_remote_code: Bool = field(
        False, "Run Python code shipped in the model repository. Off unless you trust the repository.")
    license: Str | None = field(None, "The model's license, recorded on every model built from it.",
                                example="llama3.1")
    architecture: ArchitectureSpec | None = field(
        None, "The model's shape, for planning GPU memory offline. Default: read from the "
              "model's config.json when it is on disk (a file:// source, or the Hugging Face "
              "cache).", operational=True)


class BaseModelResource(Resource):
    """A pretrained model to fine-tune from."""

    KIND: ClassVar[str] = "BaseModel"
    kind: Literal["BaseModel"] = field(doc="`BaseModel`.")
    spec: BaseModelSpec = field(doc="Where the model comes from.")
