"""`Dataset`: training data, its schema, cleaning rules and a deterministic split."""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import ClassVar, Literal

from pydantic import ValidationInfo, field_validator, model_validator

from reconciler.specs.base import Bool, Float, Int, Resource, SpecModel, SpecValueError, Str, field
from reconciler.specs.sources import SourceURI, parse_source

SchemaType = Literal["text", "instruction", "chat", "preference", "prompt", "binary-feedback"]
DataFormat = Literal["jsonl", "json", "csv", "parquet"]

# The columns each schema type reads, and the column names assumed when `columns` is silent.
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "text": {"text": "text"},
    "instruction": {"instruction": "instruction", "input": "input", "output": "output"},
    "chat": {"messages": "messages", "role": "role", "content": "content"},
    "preference": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
    "prompt": {"prompt": "prompt", "reference": "reference"},
    "binary-feedback": {"prompt": "prompt", "completion": "completion", "label": "label"},
}

ChatRole = Literal["system", "user", "assistant", "tool"]
ChatLayout = Literal["messages", "sharegpt"]

# What each chat layout implies: the column names (over DEFAULT_COLUMNS) and which role values in
# the data stand for which role. `schema.columns` and `schema.roles` override them.
LAYOUTS: dict[str, tuple[dict[str, str], dict[str, tuple[str, ...]]]] = {
    "messages": ({}, {"system": ("system",), "user": ("user",), "assistant": ("assistant",),
                      "tool": ("tool",)}),
    "sharegpt": ({"messages": "conversations", "role": "from", "content": "value"},
                 {"system": ("system",), "user": ("human", "user"), "assistant": ("gpt", "assistant")}),
}

FORMAT_BY_EXTENSION = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
                       ".parquet": "parquet", ".pq": "parquet"}


class DataSchema(SpecModel):
    type: SchemaType = field("text", "What one row is: plain `text`, an `instruction`/`input`/"
                                     "`output` triple, a `chat` of messages, a `preference` pair, a "
                                     "`prompt` (with an optional "
                                     "`reference` answer, for grpo) or `binary-feedback` (a `prompt`, a "
                                     "`completion` and a true/false `label`, for kto).")
    layout: ChatLayout = field(
        "messages", "For chat data, the shape its rows follow: `messages` (OpenAI style: a `messages` "
                    "list of `role`/`content`, roles system, user, assistant, tool) or `sharegpt` (a "
                    "`conversations` list of `from`/`value`, roles human, gpt, system). A layout names "
                    "both the columns and the role values, so one line reads a ShareGPT file; "
                    "`columns` and `roles` override either.", example="sharegpt", added_later=True)
    columns: dict[Str, Str] = field(
        default_factory=dict,
        doc="Maps this schema's roles to your column names, when they differ from the defaults "
            "(text: text; instruction: instruction, input, output; chat: messages, role, content; "
            "preference: prompt, chosen, rejected; prompt: prompt, reference; binary-feedback: prompt, "
            "completion, label).",
        example={"instruction": "question", "output": "answer"})

    @field_validator("columns")
    @classmethod
    def _columns_fit_type(cls, columns: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        schema_type = info.data.get("type")
        if schema_type is None:  # the type itself is invalid and reported
            return columns
        allowed = DEFAULT_COLUMNS[schema_type]
        for role in columns:
            if role not in allowed:
                from reconciler.specs.schema_errors import suggest

                raise SpecValueError(
                    f"'{role}' is not a column role of schema type '{schema_type}' "
                    f"(roles: {', '.join(allowed)})", suggest(role, allowed))
        return columns

    roles: dict[ChatRole, tuple[Str, ...]] = field(
        default_factory=dict,
        doc="For chat data, which role values in the rows stand for each role, when the layout's "
            "do not fit; replaces the layout's whole mapping. A message whose role is not listed "
            "fails the dataset job with its row.",
        example={"user": ["human", "user"], "assistant": ["gpt", "assistant"], "system": ["system"]},
        added_later=True)

    @field_validator("layout")
    @classmethod
    def _layout_is_for_chat(cls, layout: str, info: ValidationInfo) -> str:
        if layout != "messages" and info.data.get("type") not in (None, "chat"):
            raise SpecValueError(f"layout {layout} is for chat data (schema type is "
                                 f"{info.data.get('type')})", "set type: chat, or remove layout")
        return layout

    @field_validator("roles")
    @classmethod
    def _roles_are_distinct(cls, roles: dict[str, tuple[str, ...]],
                            info: ValidationInfo) -> dict[str, tuple[str, ...]]:
        if roles and info.data.get("type") not in (None, "chat"):
            raise SpecValueError(f"roles map chat messages' roles (schema type is {info.data.get('type')})",
                                 "set type: chat, or remove roles")
        seen: dict[str, str] = {}
        for role, values in roles.items():
            if not values:
                raise SpecValueError(f"roles.{role} lists no value", f"e.g. {role}: [{role}]")
            for value in values:
                if value in seen and seen[value] != role:
                    raise SpecValueError(
                        f"role value '{value}' is listed under both {seen[value]} and {role}")
                seen[value] = role
        return roles

    def column(self, role: str) -> str:
        layout_columns = LAYOUTS[self.layout][0] if self.type == "chat" else {}
        return self.columns.get(role, layout_columns.get(role, DEFAULT_COLUMNS[self.type][role]))

    def role_mapping(self) -> dict[str, tuple[str, ...]]:
        """Role -> the values in the data that stand for it (chat data)."""
        return dict(self.roles) if self.roles else dict(LAYOUTS[self.layout][1])


class Cleaning(SpecModel):
    dedup: Literal["exact", "none"] = field(
        "exact", "Drop rows whose normalised content repeats an earlier row (`exact`), or keep all.")
    drop_empty: Bool = field(True, "Drop rows whose required columns are empty after stripping.")
    min_chars: Int = field(0, "Drop rows shorter than this (all columns together).",
                           unit="characters", ge=0)
    max_chars: Int | None = field(None, "Drop rows longer than this.", unit="characters", gt=0,
                                  example=8000)
    max_dropped_fraction: Float = field(
        0.1, "Fail the dataset job when more than this share of the rows read are dropped as "
             "unusable (empty, or a chat with no assistant reply), which usually means the schema "
             "does not fit the data. Rows dropped by dedup, minChars and maxChars do not count: "
             "those are filters you chose. All drops are counted per reason in the log and in "
             "MLflow either way.", unit="ratio", ge=0, le=1, operational=True)

    @field_validator("max_chars")
    @classmethod
    def _above_min(cls, max_chars: int | None, info: ValidationInfo) -> int | None:
        min_chars = info.data.get("min_chars")
        if max_chars is not None and min_chars is not None and max_chars < min_chars:
            raise SpecValueError(f"is below minChars ({min_chars})")
        return max_chars


class Split(SpecModel):
    train: Float = field(0.9, "Share of rows for training.", unit="ratio", ge=0, le=1)
    validation: Float = field(0.05, "Share of rows for validation (early stopping, eval loss).",
                              unit="ratio", ge=0, le=1)
    test: Float = field(0.05, "Share of rows held out for Evaluations.", unit="ratio", ge=0, le=1)
    seed: Int = field(42, "Salt of the per-row hash that assigns rows to splits. Appending rows "
                          "never moves existing rows between splits.", ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        total = self.train + self.validation + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise SpecValueError(
                f"train + validation + test must sum to 1 (they sum to {round(total, 6)})")
        if self.train == 0:
            raise SpecValueError("train must be above 0")
        return self

    def ratio(self, split: str) -> float:
        return float(getattr(self, split))


class DatasetSpec(SpecModel):
    source: SourceURI = field(
        doc="Where the data is: file://path (relative to this spec file; it must resolve, "
            "symlinks followed, inside the spec repository or policy.allowedFileRoots), "
            "hf://org/name or s3://bucket/key.", example="file://data/support.jsonl")
    revision: Str | None = field(
        None, "For hf:// sources, the dataset repository's commit sha.",
        example="292c16329d921287c4166934cac1a6ad1e13a6c5")
    subset: Str | None = field(None, "For hf:// sources, the dataset configuration (subset) name.",
                               example="default")
    source_split: Str = field("train", "For hf:// sources, which published split to read; "
                                       "tuneops makes its own train/validation/test split from it.")
    sha256: Str | None = field(
        None, "Pin of the source file's content; the dataset job refuses different bytes.",
        example="4f7f560d1e87e67e29229650d8c2e1de805d0b0cbbc0eec8ff5c780939581ed3",
        pattern=r"^[0-9a-f]{64}$")
    format: DataFormat | None = field(
        None, "File format; inferred from the file extension when omitted.", example="jsonl")
    data_schema: DataSchema = field(default_factory=DataSchema, alias="schema",
                                    doc="What a row is and which columns hold it.")
    clean: Cleaning = field(default_factory=Cleaning, doc="Cleaning applied before splitting.")
    split: Split = field(default_factory=Split, doc="Deterministic train/validation/test split.")

    @model_validator(mode="after")
    def _format_known(self) -> DatasetSpec:
        source = parse_source(self.source)
        if self.format is None and source.scheme != "hf":
            suffix = PurePosixPath(source.location).suffix.lower()
            if suffix not in FORMAT_BY_EXTENSION:
                raise SpecValueError(
                    f"cannot infer the format from '{suffix or source.location}'",
                    "set format: jsonl, json, csv or parquet")
        return self

    @property
    def resolved_format(self) -> str | None:
        if self.format:
            return self.format
        return FORMAT_BY_EXTENSION.get(PurePosixPath(parse_source(self.source).location).suffix.lower())


class DatasetResource(Resource):
    """Training or evaluation data."""

    KIND: ClassVar[str] = "Dataset"
    kind: Literal["Dataset"] = field(doc="`Dataset`.")
    spec: DatasetSpec = field(doc="Where the data comes from and how it is prepared.")
