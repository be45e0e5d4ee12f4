"""`tuneops run dataset`: read a Dataset's source, map it to the schema's roles, clean, split, write.

The output folder (`job.output_dir`) holds `train.parquet`, `validation.parquet`, `test.parquet`,
`manifest.json` and `row_hashes.json` (each row's normalised prompt hashed, for the planner's
contamination warning before anything is evaluated: `reconciler/contamination.py`). All three
splits are always written, an empty one where the spec's ratio is 0, so that readers never need
to ask whether a file exists. Rows are stored under the schema's role
names (text: text; instruction: instruction, input, output; chat: messages of {role, content};
preference: prompt, chosen, rejected), so later jobs never need the spec's column mapping.

Splitting hashes each row's normalised content with the seed, so appending rows never moves an
existing row to another split. The manifest's digest covers every kept row, not a sample.
File I/O only: logging to MLflow is the caller's business.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from reconciler.contamination import ROW_HASHES_FILE, row_hashes_document
from reconciler.fileio import replace_directory
from reconciler.jobs.jobfile import JobFile
from reconciler.runtime.readers import (  # DatasetError is part of this module's API
    READERS,
    DatasetError,
    Located,
    Row,
    kind_of,
    local_file,
    read_hf,
    sha256_file,
)
from reconciler.specs.dataset import DEFAULT_COLUMNS, FORMAT_BY_EXTENSION, DatasetSpec, SchemaType

if TYPE_CHECKING:
    import pyarrow

SPLITS = ("train", "validation", "test")
ROLES: dict[str, tuple[str, ...]] = {
    "text": ("text",), "instruction": ("instruction", "input", "output"), "chat": ("messages",),
    "preference": ("prompt", "chosen", "rejected"), "prompt": ("prompt", "reference"),
    "binary-feedback": ("prompt", "completion", "label"),
}
OPTIONAL_ROLES = frozenset({"input", "reference"})
# How a binary-feedback label may be written; stored as "true" or "false".
LABELS = {"true": "true", "false": "false", "1": "true", "0": "false", "1.0": "true", "0.0": "false",
          "yes": "true", "no": "false", "good": "true", "bad": "false", "desirable": "true",
          "undesirable": "false"}
DROP_RULES = ("empty", "duplicate", "too_short", "too_long", "no_assistant_turn")
# Drops that mean a row cannot be used (as opposed to the filters a spec chooses: dedup and the
# length bounds); more of them than clean.maxDroppedFraction fails the job.
UNUSABLE = {"empty": "empty after cleaning",
            "no_assistant_turn": "a chat with no assistant reply after its first message"}
WHY_DROPPED = {**UNUSABLE, "duplicate": "a duplicate of an earlier row",
               "too_short": "shorter than clean.minChars", "too_long": "longer than clean.maxChars"}


class Manifest(BaseModel):
    """What a prepared dataset holds; written as manifest.json (camelCase) beside the splits."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    format_version: Literal[1] = 1
    name: str
    fingerprint: str
    source: str
    schema_type: SchemaType
    digest: str  # "sha256:<hex>" over every kept row of every split, in split order
    source_sha256: str | None  # the source file's bytes; None for hf:// sources
    source_rows: int
    rows: dict[str, int]
    dropped: dict[str, int]
    split_digests: dict[str, str]
    columns: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def prepare_dataset(job: JobFile) -> Manifest:
    """Build `job.output_dir` from the job's source and return its manifest.

    Everything is read, checked and split in memory first; the files are then written into a
    temporary folder beside the output and renamed into place, so a failure leaves nothing behind
    and a reader never sees half a dataset. An existing output (a rebuild) is replaced.
    """
    try:
        return _prepare(job)
    except DatasetError as error:
        raise DatasetError(f"dataset '{job.name}': {error}") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise DatasetError(f"dataset '{job.name}': {error.filename or job.source}: {reason}") from None


def read_manifest(directory: str | Path) -> Manifest:
    path = _folder(directory) / "manifest.json"
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist; is {path.parent} a prepared dataset?") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise DatasetError(f"{path}: not a dataset manifest ({where}: {first['msg']})") from None


def load_split(directory: str | Path, split: str) -> list[Row]:
    """One split's rows as dicts under the role names (chat messages as lists of dicts)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}' (use train, validation or test)")
    path = _folder(directory) / f"{split}.parquet"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; is {path.parent} a prepared dataset?")
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _folder(directory: str | Path) -> Path:
    return Path(str(directory).removeprefix("file://"))


# --- the job -----------------------------------------------------------------------------------

def _prepare(job: JobFile) -> Manifest:
    if job.kind != "Dataset":
        raise DatasetError(f"is a {job.kind} job, not a Dataset job")
    try:
        spec = DatasetSpec.model_validate(job.spec)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        raise DatasetError(f"invalid spec: {where}: {first['msg']}") from None
    uri = job.source or spec.source
    scheme, _, location = uri.partition("://")
    if scheme == "hf":
        if spec.sha256:
            raise DatasetError("sha256 pins a file's bytes and cannot check hf:// sources; "
                               "pin the Hub commit with revision instead")
        splits, dropped, count = _clean_and_split(read_hf(location, spec, uri), spec)
        where, source_sha256 = uri, None
    elif scheme in ("file", "s3"):
        with local_file(scheme, location) as (path, where):
            source_sha256 = sha256_file(path)
            if spec.sha256 and spec.sha256 != source_sha256:
                raise DatasetError(f"{where} has sha256 {source_sha256}, but spec.sha256 pins "
                                   f"{spec.sha256}; update the pin if the data changed on purpose")
            data_format = spec.format or FORMAT_BY_EXTENSION.get(PurePosixPath(location).suffix.lower())
            reader = READERS.get(data_format or "")
            if reader is None:
                raise DatasetError(f"{where}: cannot tell the file format; "
                                   "set format: jsonl, json, csv or parquet")
            splits, dropped, count = _clean_and_split(reader(path, where), spec)
    else:
        raise DatasetError(f"unsupported source scheme '{scheme}://' in {uri}; use file://, hf:// or s3://")

    kept = sum(len(rows) for rows in splits.values())
    if count == 0:
        raise DatasetError(f"{where} has no rows")
    if kept == 0:
        reasons = ", ".join(f"{rule} {n}" for rule, n in dropped.items() if n)
        raise DatasetError(f"no rows left after cleaning ({count} read; dropped: {reasons}); "
                           "check the schema's columns and the clean settings")
    _check_dropped(dropped, count, spec)
    named = spec.data_schema.columns.get("reference")
    if named and not any(row.get("reference") for rows in splits.values() for row in rows):
        # a reference column the spec names that no row has: most likely a misspelt mapping, which
        # would leave every reference empty and a GRPO rule that reads them scoring nothing
        raise DatasetError(f"no row has a value in column '{named}' (schema.columns.reference); "
                           "check the column's name, or drop the mapping for prompts without references")
    for split in SPLITS:
        if spec.split.ratio(split) > 0 and not splits[split]:
            fix = "add rows" if split == "train" else f"add rows or set split.{split}: 0"
            raise DatasetError(f"split '{split}' is empty after cleaning "
                               f"({kept} row{'s' * (kept != 1)} kept); {fix}")

    digest, split_digests = _digests(splits)
    manifest = Manifest(
        name=job.name, fingerprint=job.fingerprint, source=uri, schema_type=spec.data_schema.type,
        digest=digest, source_sha256=source_sha256, source_rows=count,
        rows={split: len(splits[split]) for split in SPLITS}, dropped=dropped,
        split_digests=split_digests, columns=ROLES[spec.data_schema.type])
    _write(job.output_dir, manifest, splits)
    return manifest




def dropped_summary(manifest: Manifest) -> str:
    """'N of M rows kept; dropped: 3 empty (empty after cleaning), ...' for the job's log."""
    kept = sum(manifest.rows.values())
    drops = [f"{n} {rule} ({WHY_DROPPED.get(rule, rule)})" for rule, n in manifest.dropped.items() if n]
    return f"{kept} of {manifest.source_rows} rows kept" + (f"; dropped: {', '.join(drops)}" if drops else "")


def _check_dropped(dropped: dict[str, int], count: int, spec: DatasetSpec) -> None:
    unusable = {rule: dropped[rule] for rule in UNUSABLE if dropped.get(rule)}
    total = sum(unusable.values())
    limit = spec.clean.max_dropped_fraction
    if total / count <= limit:
        return
    reasons = ", ".join(f"{n} {UNUSABLE[rule]} ({rule})" for rule, n in unusable.items())
    fix = "fix the data or the schema"
    if spec.data_schema.type == "chat" and "no_assistant_turn" in unusable:
        mapping = spec.data_schema.role_mapping()
        fix += (f" (a reply is a message whose role is {' or '.join(mapping.get('assistant', ()))}; "
                "if yours are called otherwise, set schema.roles or schema.layout)")
    raise DatasetError(f"{total} of {count} rows ({total / count:.0%}) were dropped as unusable: {reasons}; "
                       f"more than clean.maxDroppedFraction {limit:g} allows: {fix}, or raise "
                       f"clean.maxDroppedFraction to {_ceiling(total / count)} to keep the rest")


def _ceiling(fraction: float) -> str:
    return f"{math.ceil(fraction * 100) / 100:g}"


# --- mapping, cleaning, splitting ----------------------------------------------------------------

def _to_roles(record: Row, where: str, kind: str, columns: dict[str, str],
              roles: dict[str, tuple[str, ...]] | None = None) -> Row:
    if kind == "chat":
        _require(record, columns["messages"], "messages", where)
        return {"messages": _messages(record[columns["messages"]], where, columns, roles or {})}
    row: Row = {}
    for role in ROLES[kind]:
        column = columns[role]
        if column not in record and role in OPTIONAL_ROLES:
            row[role] = ""
            continue
        _require(record, column, role, where)
        try:
            row[role] = _text(record[column])
        except _NotText as error:
            raise DatasetError(f"{where}: column '{column}' (role '{role}') must be text, "
                               f"got {error}") from None
        if role == "label" and row[role]:  # an empty label leaves the row empty: cleaning drops it
            label = LABELS.get(row[role].casefold())
            if label is None:
                raise DatasetError(f"{where}: column '{column}' (role 'label') must be true or false, "
                                   f"got {row[role][:40]!r}")
            row[role] = label
    return row


def _require(record: Row, column: str, role: str, where: str, noun: str = "column") -> None:
    if column not in record:
        found = _names(record)
        raise DatasetError(f"{where}: no {noun} '{column}' for schema role '{role}' ({noun}s found: "
                           f"{found}); map it with schema.columns.{role}")


def _names(record: Row, most: int = 20, longest: int = 40) -> str:
    """The keys of a record, as a message may show them: names, not data. A CSV without a header
    row makes its first row the names, so each is cut short and only the first few are shown."""
    names = sorted(map(str, record))
    shown = [name if len(name) <= longest else f"{name[:longest - 1]}…" for name in names[:most]]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return (", ".join(shown) or "none") + more


def _messages(value: Any, where: str, columns: dict[str, str],
              roles: dict[str, tuple[str, ...]]) -> list[Row]:
    if isinstance(value, str):  # CSV cells hold the list as JSON text
        with suppress(json.JSONDecodeError):
            value = json.loads(value) if value.strip() else []
    if not isinstance(value, list):
        raise DatasetError(f"{where}: column '{columns['messages']}' (role 'messages') must be a list "
                           f"of messages, got {kind_of(value)}")
    role_key, content_key = columns["role"], columns["content"]
    messages = []
    for number, message in enumerate(value, 1):
        try:
            messages.append({"role": _text(message[role_key]), "content": _text(message[content_key])})
        except (TypeError, KeyError) as error:  # rare: work out what is wrong only now
            at = f"{where}: message {number}"
            if not isinstance(message, dict):
                raise DatasetError(f"{at}: expected an object with '{role_key}' and '{content_key}', "
                                   f"got {kind_of(message)}") from None
            _require(message, role_key, "role", at, "key")
            _require(message, content_key, "content", at, "key")
            raise DatasetError(f"{at}: '{role_key}' and '{content_key}' must be text, got {error}") from None
    if roles:
        role_of = {value: role for role, values in roles.items() for value in values}
        for number, message in enumerate(messages, 1):
            role = role_of.get(message["role"])
            if role is None:
                raise DatasetError(_unknown_role(where, number, message["role"], role_key, roles))
            message["role"] = role
    return messages


_ROLE_GUESS = {"gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant",
               "chatgpt": "assistant", "function_call": "assistant", "human": "user", "prompter": "user",
               "observation": "tool", "function": "tool", "ipython": "tool"}


def _unknown_role(where: str, number: int, value: str, key: str, roles: dict[str, tuple[str, ...]]) -> str:
    """The message for a role value the mapping lacks: the row, the value, and the mapping with
    the value added under the role it most likely plays."""
    guess = _ROLE_GUESS.get(value.casefold(), "user")
    fixed = {**roles, guess: (*roles.get(guess, ()), value or '""')}
    mapping = ", ".join(f"{role}: [{', '.join(values)}]" for role, values in fixed.items())
    return (f"{where}: message {number}: role value {value!r} (key '{key}') is not mapped to a role; "
            f"add it to schema.roles under the role it plays, e.g. roles: {{{mapping}}}"
            + ("" if "gpt" in roles.get("assistant", ())
               else " (for ShareGPT data: schema.layout: sharegpt)"))


class _NotText(TypeError):
    """Raised with the JSON kind of a value that should have been text."""


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return str(value)
    raise _NotText(kind_of(value))


def _is_empty(row: Row) -> bool:
    """Chat rows are empty without messages or with a message of no content; others when a
    required role is empty (an instruction's input is optional)."""
    if "messages" in row:
        return not row["messages"] or any(not m["content"] for m in row["messages"])
    return any(not value for role, value in row.items() if role not in OPTIONAL_ROLES)


def _chars(row: Row) -> int:
    """Characters of all text together (for chat, the contents of every message)."""
    if "messages" in row:
        return sum(len(m["content"]) for m in row["messages"])
    return sum(len(value) for value in row.values())


def _normalised_key(row: Row) -> bytes:
    """Hash of the row's texts in role order, casefolded with whitespace collapsed: rows that
    differ only in case or spacing are duplicates (and land in the same split)."""
    if "messages" in row:
        texts = [text for message in row["messages"] for text in (message["role"], message["content"])]
    else:
        texts = list(row.values())
    return hashlib.sha256(" ".join("\x00".join(texts).casefold().split()).encode()).digest()


_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _clean_and_split(records: Located, spec: DatasetSpec) -> tuple[dict[str, list[Row]], dict[str, int], int]:
    """Rules apply in order empty, no_assistant_turn (chat), too_short, too_long, duplicate: a row
    counts once, under the first rule that drops it. Chat roles are mapped to system, user,
    assistant and tool by the schema's roles; a role value it does not map fails the job. A
    row's split depends only on its normalised content and the seed."""
    clean, seed, kind = spec.clean, spec.split.seed, spec.data_schema.type
    columns = {role: spec.data_schema.column(role) for role in DEFAULT_COLUMNS[kind]}
    roles = spec.data_schema.role_mapping() if kind == "chat" else None
    bounds, total = [], 0.0
    for split in SPLITS:
        if spec.split.ratio(split) > 0:
            total += spec.split.ratio(split)
            bounds.append((total, split))
    bounds[-1] = (float("inf"), bounds[-1][1])  # rounding never leaves a row without a split
    splits: dict[str, list[Row]] = {split: [] for split in SPLITS}
    dropped = dict.fromkeys(DROP_RULES, 0)
    seen: set[bytes] = set()
    count = 0
    for where, record in records:
        count += 1
        row = _to_roles(record, where, kind, columns, roles)
        size = _chars(row)
        if clean.drop_empty and _is_empty(row):
            dropped["empty"] += 1
        elif kind == "chat" and not any(m["role"] == "assistant" for m in row["messages"][1:]):
            dropped["no_assistant_turn"] += 1
        elif size < clean.min_chars:
            dropped["too_short"] += 1
        elif clean.max_chars is not None and size > clean.max_chars:
            dropped["too_long"] += 1
        else:
            try:
                key = _normalised_key(row)
            except UnicodeEncodeError:
                raise DatasetError(f"{where}: text that is not valid Unicode (a lone surrogate such as "
                                   "\\ud800); fix or drop the row") from None
            if clean.dedup == "exact" and key in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(key)
            point = int.from_bytes(hashlib.sha256(f"{seed}:{key.hex()}".encode()).digest()[:8], "big") / 2**64
            splits[next(split for bound, split in bounds if point < bound)].append(row)
    return splits, dropped, count


def _digests(splits: dict[str, list[Row]]) -> tuple[str, dict[str, str]]:
    """The overall digest also hashes a header per split, so moving a row across a split
    boundary changes it even when the concatenated rows stay the same."""
    overall, per_split = hashlib.sha256(), {}
    for split in SPLITS:
        digest = hashlib.sha256()
        overall.update(f"# {split} {len(splits[split])}\n".encode())
        for row in splits[split]:
            line = (_CANONICAL.encode(row) + "\n").encode()
            digest.update(line)
            overall.update(line)
        per_split[split] = f"sha256:{digest.hexdigest()}"
    return f"sha256:{overall.hexdigest()}", per_split


# --- writing -------------------------------------------------------------------------------------

def _arrow_schema(columns: tuple[str, ...]) -> pyarrow.Schema:
    import pyarrow as pa

    if columns == ("messages",):
        message = pa.struct([("role", pa.string()), ("content", pa.string())])
        return pa.schema([("messages", pa.list_(message))])
    return pa.schema([(column, pa.string()) for column in columns])


def _write(output: Path, manifest: Manifest, splits: dict[str, list[Row]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        schema = _arrow_schema(manifest.columns)
        for split in SPLITS:
            pq.write_table(pa.Table.from_pylist(splits[split], schema=schema), temporary / f"{split}.parquet")
        (temporary / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
        (temporary / ROW_HASHES_FILE).write_text(row_hashes_document(splits, manifest.schema_type),
                                                 encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)  # mkdtemp makes 0700; be an ordinary folder
        replace_directory(temporary, output)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
