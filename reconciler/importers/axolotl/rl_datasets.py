"""The dataset types of axolotl's preference, feedback and RL methods -> Dataset.spec.schema:
preference pairs for dpo and orpo, binary feedback for kto, prompts for grpo and Bradley-Terry
pairs for a reward model. A type names the columns a row is read from; a type left unset hands the
rows to trl as they are, in trl's own columns."""

from __future__ import annotations

from typing import Any

from reconciler.importers.axolotl.keys import DPO_COLUMNS, KTO_COLUMNS, REWARD_MODEL_TYPES
from reconciler.importers.common import Context
from reconciler.importers.result import SpecDraft

# method -> (schema type, trl's columns when the type is left unset)
SCHEMAS = {
    "dpo": ("preference", "prompt, chosen, rejected"),
    "orpo": ("preference", "prompt, chosen, rejected"),
    "kto": ("binary-feedback", "prompt, completion, label"),
    "grpo": ("prompt", "prompt"),
    "reward": ("preference", "prompt, chosen, rejected"),
}
# custom (user_defined) types: field_* key -> column role
CUSTOM_FIELDS = {
    "dpo": {"field_prompt": "prompt", "field_chosen": "chosen", "field_rejected": "rejected"},
    "kto": {"field_prompt": "prompt", "field_completion": "completion", "field_label": "label"},
}


def rl_schema(entry: dict[str, Any], key: str, ctx: Context, draft: SpecDraft, method: str) -> None:
    """The schema of one dataset entry of a dpo, orpo, kto, grpo or reward-model config."""
    schema_type, trl_columns = SCHEMAS[method]
    kind = entry.get("type")
    type_key = f"{key}.type"
    how = "rl: " + method if method != "reward" else "reward_model"
    if kind is None and method != "reward":
        draft.set(
            "schema.type",
            schema_type,
            ctx.says(key, f"{how}; no type: rows read as they are, trl's columns {trl_columns}"),
        )
        if "type" in entry:
            ctx.result.map(type_key, "Dataset.spec.schema.type")
        if method == "grpo":
            ctx.result.note(
                f"{key}: axolotl hands every column to the reward functions; tuneops hands them the "
                "prompt's `reference` column: set schema.columns.reference to the column they compare with"
            )
        return
    draft.set("schema.type", schema_type, ctx.says(type_key, how))
    if isinstance(kind, dict) and method in CUSTOM_FIELDS:
        custom_columns(
            kind, type_key, ctx, draft, CUSTOM_FIELDS[method], "prompt formats are the chat template's"
        )
        return
    suffix = str(kind).rsplit(".", 1)[-1] if isinstance(kind, str) else ""
    columns = {"dpo": DPO_COLUMNS, "kto": KTO_COLUMNS}.get(method, {}).get(suffix)
    if method == "reward":
        columns = REWARD_MODEL_TYPES.get(str(kind))
    if columns is not None:
        ctx.result.map(type_key, "Dataset.spec.schema")
        for role, column in columns.items():
            draft.set(f"schema.columns.{role}", column, ctx.says(type_key, f"{kind} reads {column}"))
        template = str(kind).rsplit(".", 1)[0]
        tokens = "" if method == "reward" else f" and {template}'s tokens"
        ctx.result.note(
            f"{type_key}: axolotl's {kind} puts an optional system column{tokens} into the prompt; "
            "tuneops reads the prompt column alone and formats it with the BaseModel's chat template"
        )
        return
    ctx.result.report(type_key, "unsupported", _why_not(kind, method))


def _why_not(kind: Any, method: str) -> str:
    if method == "grpo":
        return (
            f"{kind!r} is a Python transform of the rows, which tuneops does not run: write the rows it "
            "makes to a file with a prompt (and reference) column and point this Dataset at it"
        )
    suffix = kind.rsplit(".", 1)[-1] if isinstance(kind, str) else ""
    if (
        suffix == "argilla_chat"
        or (method == "dpo" and suffix == "ultra")
        or (method == "orpo" and kind == "chat_template.argilla")
    ):
        schema_type, columns = SCHEMAS[method]
        return (
            f"{kind} reads its rows as conversations, and a tuneops {schema_type} row is text columns: "
            f"write the rows as {columns} columns of text"
        )
    offered = {
        "dpo": "*.intel, *.icr, *.prompt_pairs, *.argilla, custom field_* types, or no type",
        "orpo": "no type: prompt, chosen and rejected text columns",
        "kto": "*.intel, *.prompt_pairs, *.ultra, *.argilla, custom field_* types, or no type",
        "reward": ", ".join(REWARD_MODEL_TYPES),
    }[method]
    if isinstance(kind, dict):
        return f"axolotl has no custom type for {method} datasets (translated: {offered})"
    if kind is None:
        return f"no type: a {method} dataset names its format (translated: {offered})"
    return f"{method} dataset type {kind!r} is not translated (translated: {offered})"


def custom_columns(
    kind: dict[str, Any], type_key: str, ctx: Context, draft: SpecDraft, fields: dict[str, str], why: str
) -> None:
    """A custom format's `field_<role>` keys -> the schema's columns; any other key is reported."""
    ctx.result.map(type_key, "Dataset.spec.schema")
    for column, role in fields.items():
        if column in kind:
            draft.set(f"schema.columns.{role}", str(kind[column]), ctx.says(f"{type_key}.{column}"))
            ctx.result.map(f"{type_key}.{column}", f"Dataset.spec.schema.columns.{role}")
    for other in kind:
        if other not in fields:
            ctx.result.report(f"{type_key}.{other}", "unsupported", why)
