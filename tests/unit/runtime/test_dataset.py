"""The Dataset job's data preparation, on real files: formats, schemas, cleaning, splits, errors."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.jobs.jobfile import JobFile, MlflowTarget
from reconciler.runtime.dataset import (
    DatasetError,
    Manifest,
    _write,
    load_split,
    prepare_dataset,
    read_manifest,
)

ALL_TRAIN = {"train": 1, "validation": 0, "test": 0}
THIRDS = {"train": 0.6, "validation": 0.2, "test": 0.2}


def make_job(tmp_path: Path, data: Path, *, schema: dict | None = None, source: str | None = None,
             fingerprint: str = "a" * 64, **spec: Any) -> JobFile:
    """A Dataset job; an hf:// `source` is the spec's source too (file:// ones are made absolute)."""
    spec_source = source if source and source.startswith("hf://") else f"file://{data.name}"
    full_spec = {"source": spec_source, "schema": schema or {"type": "instruction"}, **spec}
    return JobFile(kind="Dataset", name="fruit", fingerprint=fingerprint, spec=full_spec,
                   source=source or f"file://{data}", storage_root=str(tmp_path / "store"),
                   mlflow=MlflowTarget(tracking_uri="sqlite:///x.db"))


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def instructions(count: int, start: int = 0) -> list[dict[str, str]]:
    return [{"instruction": f"What colour is fruit number {i}?", "output": f"Fruit {i} is green."}
            for i in range(start, start + count)]


def split_of(job: JobFile) -> dict[str, str]:
    """Each kept row's instruction -> the split it landed in."""
    return {row["instruction"]: split for split in ("train", "validation", "test")
            for row in load_split(job.output_dir, split)}


def assert_nothing_left(job: JobFile) -> None:
    assert not job.output_dir.exists()
    parent = job.output_dir.parent
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(".")] if parent.exists() else []
    assert leftovers == []


def failure(job: JobFile) -> str:
    with pytest.raises(DatasetError) as caught:
        prepare_dataset(job)
    assert_nothing_left(job)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("dataset 'fruit': ")
    return message


# --- formats and schemas -----------------------------------------------------------------------

ROWS = [{"q": f"  Question {i}  ", "a": f"Answer {i}", "extra": i} for i in range(12)]


def write_format(path: Path, kind: str) -> Path:
    if kind == "jsonl":
        return write_jsonl(path, ROWS)
    if kind == "json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")
    elif kind == "json-data":
        path.write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    elif kind == "csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["q", "a", "extra"])
            writer.writeheader()
            writer.writerows(ROWS)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


@pytest.mark.parametrize(("kind", "suffix"), [("jsonl", "jsonl"), ("json", "json"), ("json-data", "json"),
                                              ("csv", "csv"), ("parquet", "parquet")])
def test_every_format_gives_the_same_rows_and_digest(tmp_path: Path, kind: str, suffix: str):
    data = write_format(tmp_path / f"data.{suffix}", kind)
    schema = {"type": "instruction", "columns": {"instruction": "q", "output": "a"}}
    job = make_job(tmp_path, data, schema=schema, split=ALL_TRAIN)
    manifest = prepare_dataset(job)
    rows = load_split(job.output_dir, "train")
    assert rows[0] == {"instruction": "Question 0", "input": "", "output": "Answer 0"}
    assert [row["instruction"] for row in rows] == [f"Question {i}" for i in range(12)]
    assert manifest.rows == {"train": 12, "validation": 0, "test": 0}
    assert manifest.source_rows == 12
    assert manifest.columns == ("instruction", "input", "output")
    # The same content in any format is the same dataset.
    expected = hashlib.sha256(b"# train 12\n" + b"".join(
        (json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n").encode() for row in rows)
        + b"# validation 0\n# test 0\n").hexdigest()
    assert manifest.digest == f"sha256:{expected}"


def test_text_schema_with_a_column_mapping(tmp_path: Path):
    data = write_jsonl(tmp_path / "notes.jsonl", [{"body": " first note "}, {"body": "second note"}])
    job = make_job(tmp_path, data, schema={"type": "text", "columns": {"text": "body"}}, split=ALL_TRAIN)
    manifest = prepare_dataset(job)
    assert load_split(job.output_dir, "train") == [{"text": "first note"}, {"text": "second note"}]
    assert manifest.schema_type == "text"
    assert manifest.columns == ("text",)


def test_instruction_input_is_kept_when_present(tmp_path: Path):
    row = {"instruction": "Translate", "input": " pomme ", "output": "apple"}
    data = write_jsonl(tmp_path / "d.jsonl", [row])
    job = make_job(tmp_path, data, split=ALL_TRAIN)
    prepare_dataset(job)
    assert load_split(job.output_dir, "train") == [{"instruction": "Translate", "input": "pomme",
                                                    "output": "apple"}]


def test_chat_schema_maps_the_message_keys(tmp_path: Path):
    rows = [{"conversation": [{"from": "user", "value": "  hi "}, {"from": "assistant", "value": "hello"}]},
            {"conversation": [{"from": "user", "value": "bye"}, {"from": "assistant", "value": "see you"}]}]
    data = write_jsonl(tmp_path / "chats.jsonl", rows)
    schema = {"type": "chat", "columns": {"messages": "conversation", "role": "from", "content": "value"}}
    job = make_job(tmp_path, data, schema=schema, split=ALL_TRAIN)
    manifest = prepare_dataset(job)
    first = load_split(job.output_dir, "train")[0]
    assert first == {"messages": [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}]}
    assert manifest.columns == ("messages",)


def test_chat_messages_in_a_csv_cell_are_read_as_json(tmp_path: Path):
    data = tmp_path / "chats.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages"])
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        writer.writerow([json.dumps(messages)])
    job = make_job(tmp_path, data, schema={"type": "chat"}, split=ALL_TRAIN)
    prepare_dataset(job)
    assert load_split(job.output_dir, "train")[0]["messages"][1] == {"role": "assistant", "content": "yo"}


def test_preference_schema_with_a_column_mapping(tmp_path: Path):
    data = write_jsonl(tmp_path / "prefs.jsonl", [{"question": "2+2?", "good": "4", "bad": "5"}])
    schema = {"type": "preference", "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"}}
    job = make_job(tmp_path, data, schema=schema, split=ALL_TRAIN)
    manifest = prepare_dataset(job)
    assert load_split(job.output_dir, "train") == [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    assert manifest.columns == ("prompt", "chosen", "rejected")


def test_prompt_schema_keeps_an_optional_reference(tmp_path: Path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"q": "2+2?", "answer": "4"}, {"q": "Say hi"}])
    schema = {"type": "prompt", "columns": {"prompt": "q", "reference": "answer"}}
    job = make_job(tmp_path, data, schema=schema, split=ALL_TRAIN)
    manifest = prepare_dataset(job)
    rows = sorted(load_split(job.output_dir, "train"), key=lambda row: row["prompt"])
    assert rows == [{"prompt": "2+2?", "reference": "4"}, {"prompt": "Say hi", "reference": ""}]
    assert manifest.columns == ("prompt", "reference") and manifest.schema_type == "prompt"


def test_a_reference_column_the_spec_names_must_be_there(tmp_path: Path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"q": "2+2?", "answer": "4"}])
    schema = {"type": "prompt", "columns": {"prompt": "q", "reference": "anwser"}}
    job = make_job(tmp_path, data, schema=schema, split=ALL_TRAIN)
    assert "no row has a value in column 'anwser' (schema.columns.reference)" in failure(job)


def test_binary_feedback_labels_are_read_as_true_or_false(tmp_path: Path):
    rows = [{"prompt": f"q{i}", "completion": "a", "label": label}
            for i, label in enumerate([True, False, "yes", "0", 1, "Good", 1.0, None])]
    job = make_job(tmp_path, write_jsonl(tmp_path / "fb.jsonl", rows), schema={"type": "binary-feedback"},
                   split=ALL_TRAIN, clean={"maxDroppedFraction": 0.5})
    prepare_dataset(job)
    labels = {row["prompt"]: row["label"] for row in load_split(job.output_dir, "train")}
    assert labels == {"q0": "true", "q1": "false", "q2": "true", "q3": "false", "q4": "true", "q5": "true",
                      "q6": "true"}  # q7's null label: an empty row, dropped by cleaning


def test_a_label_that_is_not_true_or_false_fails_with_its_row(tmp_path: Path):
    rows = [{"prompt": "q", "completion": "a", "label": True},
            {"prompt": "r", "completion": "b", "label": "maybe"}]
    job = make_job(tmp_path, write_jsonl(tmp_path / "fb.jsonl", rows), schema={"type": "binary-feedback"},
                   split=ALL_TRAIN)
    message = failure(job)
    assert "fb.jsonl:2: column 'label' (role 'label') must be true or false, got 'maybe'" in message


# --- cleaning ----------------------------------------------------------------------------------

def test_cleaning_counts_each_rule(tmp_path: Path):
    rows = [
        {"instruction": "Name a red fruit", "output": "Apple"},        # kept
        {"instruction": "   ", "output": "Banana"},                     # empty (after stripping)
        {"instruction": "Name a fruit", "output": None},               # empty (null)
        {"instruction": "Hi", "output": "Yo"},                         # too short
        {"instruction": "Describe a fruit", "output": "x" * 100},      # too long
        {"instruction": "name a  RED fruit", "output": "apple "},     # duplicate of the first
        {"instruction": "Name a yellow fruit", "output": "Banana"},    # kept
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    job = make_job(tmp_path, data, split=ALL_TRAIN, clean={"minChars": 10, "maxChars": 60,
                                                              "maxDroppedFraction": 0.5})
    manifest = prepare_dataset(job)
    assert manifest.dropped == {"empty": 2, "duplicate": 1, "too_short": 1, "too_long": 1,
                                "no_assistant_turn": 0}
    assert [row["output"] for row in load_split(job.output_dir, "train")] == ["Apple", "Banana"]
    assert manifest.source_rows == 7


def test_cleaning_can_keep_empty_rows_and_duplicates(tmp_path: Path):
    rows = [{"instruction": "a", "output": ""}, {"instruction": "b", "output": "B"},
            {"instruction": "B", "output": "b"}, {"instruction": "b", "output": "B"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    job = make_job(tmp_path, data, split=ALL_TRAIN, clean={"dropEmpty": False, "dedup": "none"})
    manifest = prepare_dataset(job)
    assert manifest.rows["train"] == 4
    assert manifest.dropped == {"empty": 0, "duplicate": 0, "too_short": 0, "too_long": 0,
                                "no_assistant_turn": 0}


def test_dedup_normalises_case_and_whitespace_only(tmp_path: Path):
    rows = [{"text": "Hello  World"}, {"text": "hello world\n"}, {"text": "HELLO\tWORLD"},
            {"text": "hello, world"}, {"text": "hello world!"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    job = make_job(tmp_path, data, schema={"type": "text"}, split=ALL_TRAIN)
    manifest = prepare_dataset(job)
    assert [row["text"] for row in load_split(job.output_dir, "train")] == [
        "Hello  World", "hello, world", "hello world!"]
    assert manifest.dropped["duplicate"] == 2


def test_a_chat_with_an_empty_message_is_empty(tmp_path: Path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
            {"messages": []},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    job = make_job(tmp_path, data, schema={"type": "chat"}, split=ALL_TRAIN,
                   clean={"maxDroppedFraction": 1})
    manifest = prepare_dataset(job)
    assert manifest.dropped["empty"] == 2
    assert manifest.rows["train"] == 1


# --- splitting -----------------------------------------------------------------------------------

def test_split_is_deterministic_follows_the_ratios_and_keeps_source_order(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(1000))
    first = make_job(tmp_path, data, split=THIRDS)
    second = make_job(tmp_path, data, split=THIRDS, fingerprint="b" * 64)
    one, two = prepare_dataset(first), prepare_dataset(second)
    assert one.digest == two.digest
    assert one.split_digests == two.split_digests
    assert split_of(first) == split_of(second)
    assert 540 <= one.rows["train"] <= 660
    assert 150 <= one.rows["validation"] <= 250
    assert 150 <= one.rows["test"] <= 250
    assert sum(one.rows.values()) == 1000
    for split in ("train", "validation", "test"):
        rows = load_split(first.output_dir, split)
        numbers = [int(row["instruction"].split()[-1].rstrip("?")) for row in rows]
        assert numbers == sorted(numbers)


def test_appending_rows_never_moves_existing_rows(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(300))
    before = make_job(tmp_path, data, split=THIRDS)
    prepare_dataset(before)
    old = split_of(before)
    write_jsonl(data, instructions(300) + instructions(200, start=300))
    after = make_job(tmp_path, data, split=THIRDS, fingerprint="b" * 64)
    manifest = prepare_dataset(after)
    new = split_of(after)
    assert manifest.source_rows == 500
    assert {key: new[key] for key in old} == old
    assert len(new) == 500


def test_a_different_seed_gives_a_different_split(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(300))
    seeded = make_job(tmp_path, data, split=THIRDS)
    reseeded = make_job(tmp_path, data, split={**THIRDS, "seed": 7}, fingerprint="b" * 64)
    one, two = prepare_dataset(seeded), prepare_dataset(reseeded)
    assert split_of(seeded) != split_of(reseeded)
    assert one.digest != two.digest


def test_digest_covers_every_row(tmp_path: Path):
    rows = instructions(12_000)
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    base = prepare_dataset(make_job(tmp_path, data, split=THIRDS))
    again = prepare_dataset(make_job(tmp_path, data, split=THIRDS, fingerprint="b" * 64))
    assert again.digest == base.digest
    rows[-1] = {**rows[-1], "output": "Fruit 11999 is purple."}
    write_jsonl(data, rows)
    job = make_job(tmp_path, data, split=THIRDS, fingerprint="c" * 64)
    changed = prepare_dataset(job)
    assert changed.digest != base.digest
    moved = split_of(job)["What colour is fruit number 11999?"]
    for split in ("train", "validation", "test"):
        assert (changed.split_digests[split] != base.split_digests[split]) == (split == moved)


# --- sha256 pin ----------------------------------------------------------------------------------

def test_sha256_pin_is_checked(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(5))
    actual = hashlib.sha256(data.read_bytes()).hexdigest()
    manifest = prepare_dataset(make_job(tmp_path, data, split=ALL_TRAIN, sha256=actual))
    assert manifest.source_sha256 == actual


def test_sha256_mismatch_writes_nothing(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(5))
    actual = hashlib.sha256(data.read_bytes()).hexdigest()
    job = make_job(tmp_path, data, split=ALL_TRAIN, sha256="0" * 64)
    message = failure(job)
    assert f"{data} has sha256 {actual}, but spec.sha256 pins {'0' * 64}" in message
    assert not (tmp_path / "store").exists()


# --- errors ----------------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path):
    job = make_job(tmp_path, tmp_path / "nope.jsonl")
    assert failure(job) == f"dataset 'fruit': {tmp_path / 'nope.jsonl'} does not exist"


def test_malformed_jsonl_line_names_the_line(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c",\n', encoding="utf-8")
    message = failure(make_job(tmp_path, data))
    assert f"{data}:3: not valid JSON: Expecting property name enclosed in double quotes" in message


def test_a_jsonl_line_that_is_not_an_object(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, ["a", "b"]])
    assert f"{data}:2: expected a JSON object, got an array" in failure(make_job(tmp_path, data))


def test_a_json_file_that_is_not_a_list(tmp_path: Path):
    data = tmp_path / "d.json"
    data.write_text('{"rows": []}', encoding="utf-8")
    assert f'{data}: expected a list of objects or {{"data": [...]}}, got an object' in failure(
        make_job(tmp_path, data))


def test_missing_column_names_the_column_role_and_the_columns_found(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": "b"}])
    job = make_job(tmp_path, data, schema={"type": "instruction", "columns": {"instruction": "question"}})
    message = failure(job)
    assert (f"{data}:1: no column 'output' for schema role 'output' (columns found: answer, question); "
            "map it with schema.columns.output") in message


def test_missing_message_key(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "text": "hi"}]}])
    message = failure(make_job(tmp_path, data, schema={"type": "chat"}))
    assert f"{data}:1: message 1: no key 'content' for schema role 'content' (keys found: role, text)" \
        in message


def test_a_value_that_is_not_text(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": ["b"]}])
    message = failure(make_job(tmp_path, data))
    assert f"{data}:1: column 'output' (role 'output') must be text, got an array" in message


def test_an_empty_split_says_how_to_fix_it(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(1))
    job = make_job(tmp_path, data, split={"train": 0.99, "validation": 0.01, "test": 0})
    assert failure(job).endswith("split 'validation' is empty after cleaning (1 row kept); "
                                 "add rows or set split.validation: 0")


def test_no_rows_after_cleaning(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": " "}] * 3)
    assert "no rows left after cleaning (3 read; dropped: empty 3)" in failure(make_job(tmp_path, data))


def test_an_empty_file(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n", encoding="utf-8")
    assert failure(make_job(tmp_path, data)) == f"dataset 'fruit': {data} has no rows"


def test_text_that_is_not_valid_unicode(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "\\ud800", "output": "b"}\n',
                    encoding="utf-8")
    assert f"{data}:2: text that is not valid Unicode" in failure(make_job(tmp_path, data))


def test_unsupported_scheme(tmp_path: Path):
    job = make_job(tmp_path, tmp_path / "d.jsonl", source="gs://bucket/d.jsonl")
    assert "unsupported source scheme 'gs://' in gs://bucket/d.jsonl" in failure(job)


def test_unsupported_format(tmp_path: Path):
    data = tmp_path / "d.txt"
    data.write_text("hello\n", encoding="utf-8")
    job = make_job(tmp_path, tmp_path / "d.jsonl", source=f"file://{data}")
    assert f"{data}: cannot tell the file format; set format: jsonl, json, csv or parquet" in failure(job)


def test_a_corrupt_parquet_file(tmp_path: Path):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"not parquet at all")
    assert f"{data}: not a readable parquet file" in failure(make_job(tmp_path, data))


def test_s3_without_s3fs_says_what_to_install(tmp_path: Path):
    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed")
    job = make_job(tmp_path, tmp_path / "d.jsonl", source="s3://my-bucket/data/d.jsonl")
    assert "reading s3://my-bucket/data/d.jsonl needs s3fs (pip install s3fs)" in failure(job)


# --- hf:// (offline, from a local folder the Hub client resolves first) ---------------------------

@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    # `datasets` and `huggingface_hub` read these variables once, when imported: where an earlier
    # test of the session imported them, the variables alone leave them online, and a missing
    # dataset is looked for on huggingface.co (with retries, ~23 s here) before it fails.
    for module, flags in (("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
                          ("huggingface_hub.constants", ("HF_HUB_OFFLINE",))):
        if module in sys.modules:
            for flag in flags:
                monkeypatch.setattr(sys.modules[module], flag, True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_hf_source_reads_through_datasets(offline_hub: Path):
    folder = offline_hub / "org" / "fruit"
    folder.mkdir(parents=True)
    write_jsonl(folder / "train.jsonl", [{"text": "apple"}, {"text": "pear"}])
    job = make_job(offline_hub, folder, schema={"type": "text"}, split=ALL_TRAIN, source="hf://org/fruit")
    manifest = prepare_dataset(job)
    assert manifest.source_sha256 is None
    assert manifest.source == "hf://org/fruit"
    assert load_split(job.output_dir, "train") == [{"text": "apple"}, {"text": "pear"}]


def test_hf_source_that_cannot_be_loaded(offline_hub: Path):
    job = make_job(offline_hub, offline_hub / "x.jsonl", schema={"type": "text"}, source="hf://nobody/missing")
    message = failure(job)
    assert "cannot load hf://nobody/missing (split 'train'): " in message


def test_hf_source_refuses_a_sha256_pin(offline_hub: Path):
    job = make_job(offline_hub, offline_hub / "x.jsonl", source="hf://org/fruit", sha256="1" * 64)
    assert "pin the Hub commit with revision instead" in failure(job)


# --- output folder and manifest ------------------------------------------------------------------

def test_manifest_round_trips_and_is_camel_case(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(50))
    job = make_job(tmp_path, data, split=THIRDS)
    manifest = prepare_dataset(job)
    assert read_manifest(job.output_dir) == manifest
    assert read_manifest(f"file://{job.output_dir}") == manifest
    written = json.loads((job.output_dir / "manifest.json").read_text(encoding="utf-8"))
    assert set(written) == {"formatVersion", "name", "fingerprint", "source", "schemaType", "digest",
                            "sourceSha256", "sourceRows", "rows", "dropped", "splitDigests", "columns"}
    assert written["formatVersion"] == 1
    assert written["fingerprint"] == "a" * 64
    assert written["sourceSha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert Manifest.model_validate_json(manifest.to_json()) == manifest
    assert sorted(p.name for p in job.output_dir.iterdir()) == [
        "manifest.json", "row_hashes.json", "test.parquet", "train.parquet", "validation.parquet"]
    # One prompt hash per row of each split, in row order, for the plan's contamination warning.
    from reconciler.contamination import read_row_hashes, row_hashes
    from reconciler.runtime.dataset import load_split

    hashes = read_row_hashes(job.output_dir)
    assert {split: len(found) for split, found in hashes.items()} == manifest.rows
    assert hashes["test"] == row_hashes(load_split(job.output_dir, "test"), "instruction")


def test_a_zero_ratio_split_is_written_empty(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(20))
    job = make_job(tmp_path, data, split={"train": 0.8, "validation": 0.2, "test": 0})
    manifest = prepare_dataset(job)
    assert manifest.rows["test"] == 0
    assert load_split(job.output_dir, "test") == []
    assert manifest.split_digests["test"] == f"sha256:{hashlib.sha256(b'').hexdigest()}"


def test_a_rebuild_replaces_the_output_and_leaves_no_temporary_folders(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(10))
    job = make_job(tmp_path, data, split=ALL_TRAIN)
    prepare_dataset(job)
    (job.output_dir / "stale.txt").write_text("from an earlier build", encoding="utf-8")
    write_jsonl(data, instructions(11))
    manifest = prepare_dataset(job)
    assert manifest.rows["train"] == 11
    assert read_manifest(job.output_dir).rows["train"] == 11
    assert not (job.output_dir / "stale.txt").exists()
    assert [p.name for p in job.output_dir.parent.iterdir()] == [job.output_dir.name]


def test_a_failed_write_removes_its_temporary_folder(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", instructions(3))
    job = make_job(tmp_path, data, split=ALL_TRAIN)
    manifest = prepare_dataset(job)
    shutil.rmtree(job.output_dir)
    unwritable = {"train": [{"instruction": 1, "input": "", "output": "x"}], "validation": [], "test": []}
    with pytest.raises(Exception, match="Expected bytes"):
        _write(job.output_dir, manifest, unwritable)
    assert_nothing_left(job)


def test_reading_what_is_not_a_dataset(tmp_path: Path):
    with pytest.raises(DatasetError, match="manifest.json does not exist; is .* a prepared dataset"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"name": "x"}', encoding="utf-8")
    with pytest.raises(DatasetError, match="not a dataset manifest"):
        read_manifest(tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        load_split(tmp_path, "dev")
    with pytest.raises(DatasetError, match="train.parquet does not exist"):
        load_split(tmp_path, "train")


# --- chat layouts, roles and dropped rows --------------------------------------------------------

def sharegpt(count: int) -> list[dict[str, Any]]:
    return [{"conversations": [{"from": "system", "value": "Answer with a color."},
                               {"from": "human", "value": f"What colour is fruit number {i}?"},
                               {"from": "gpt", "value": f"Fruit {i} is green."}]}
            for i in range(count)]


def test_a_sharegpt_file_prepares_with_every_row_kept(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", sharegpt(10))
    job = make_job(tmp_path, data, schema={"type": "chat", "layout": "sharegpt"}, split=ALL_TRAIN)
    manifest = prepare_dataset(job)
    assert manifest.rows["train"] == 10 and not any(manifest.dropped.values())
    [first, *_] = load_split(job.output_dir, "train")
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]


def test_roles_map_the_values_a_file_uses(tmp_path: Path):
    rows = [{"dialog": [{"speaker": "customer", "text": "hi"}, {"speaker": "agent", "text": f"hello {i}"}]}
            for i in range(3)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    schema = {"type": "chat", "columns": {"messages": "dialog", "role": "speaker", "content": "text"},
              "roles": {"user": ["customer"], "assistant": ["agent"]}}
    job = make_job(tmp_path, data, schema=schema, split=ALL_TRAIN)
    assert prepare_dataset(job).rows["train"] == 3
    assert {m["role"] for row in load_split(job.output_dir, "train") for m in row["messages"]} == {
        "user", "assistant"}


def test_a_role_value_the_mapping_lacks_names_the_row_and_the_mapping_to_add(tmp_path: Path):
    rows = sharegpt(3)
    rows[1]["conversations"].append({"from": "bot", "value": "Anything else?"})
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    message = failure(make_job(tmp_path, data, schema={"type": "chat", "layout": "sharegpt"}))
    assert (f"{data}:2: message 4: role value 'bot' (key 'from') is not mapped to a role; add it to "
            "schema.roles under the role it plays, e.g. roles: {system: [system], user: [human, user], "
            "assistant: [gpt, assistant, bot]}") in message


def test_sharegpt_columns_without_its_roles_fail_instead_of_dropping_every_row(tmp_path: Path):
    data = write_jsonl(tmp_path / "d.jsonl", sharegpt(3))
    schema = {"type": "chat", "columns": {"messages": "conversations", "role": "from", "content": "value"}}
    message = failure(make_job(tmp_path, data, schema=schema))
    assert f"{data}:1: message 1: role value 'system' is not" not in message  # system maps as is
    assert f"{data}:1: message 2: role value 'human' (key 'from') is not mapped to a role" in message
    assert message.endswith("(for ShareGPT data: schema.layout: sharegpt)")


def test_a_dataset_that_drops_half_its_chats_fails_with_the_count(tmp_path: Path):
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          *([{"role": "assistant", "content": f"Answer {i}."}] if i % 2 else [])]}
            for i in range(10)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    message = failure(make_job(tmp_path, data, schema={"type": "chat"}, split=ALL_TRAIN))
    assert message == (
        "dataset 'fruit': 5 of 10 rows (50%) were dropped as unusable: 5 a chat with no assistant reply "
        "after its first message (no_assistant_turn); more than clean.maxDroppedFraction 0.1 allows: fix "
        "the data or the schema (a reply is a message whose role is assistant; if yours are called "
        "otherwise, set schema.roles or schema.layout), or raise clean.maxDroppedFraction to 0.5 to "
        "keep the rest")
    job = make_job(tmp_path, data, schema={"type": "chat"}, split=ALL_TRAIN,
                   clean={"maxDroppedFraction": 0.5})
    manifest = prepare_dataset(job)
    assert manifest.rows["train"] == 5 and manifest.dropped["no_assistant_turn"] == 5
    from reconciler.runtime.dataset import dropped_summary

    assert dropped_summary(manifest) == ("5 of 10 rows kept; dropped: 5 no_assistant_turn "
                                         "(a chat with no assistant reply after its first message)")


def test_filters_the_spec_chooses_do_not_count_towards_the_limit(tmp_path: Path):
    rows = instructions(4) + instructions(4)  # half are duplicates
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    manifest = prepare_dataset(make_job(tmp_path, data, split=ALL_TRAIN))
    assert manifest.dropped["duplicate"] == 4 and manifest.rows["train"] == 4


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "instruction", "layout": "sharegpt"}, "layout sharegpt is for chat data"),
    ({"type": "text", "roles": {"user": ["human"]}}, "roles map chat messages' roles"),
    ({"type": "chat", "roles": {"user": []}}, "roles.user lists no value"),
    ({"type": "chat", "roles": {"speaker": ["x"]}}, "roles.speaker"),
])
def test_the_schema_refuses_roles_that_cannot_apply(schema: dict, expected: str):
    from pydantic import ValidationError

    from reconciler.specs.dataset import DatasetSpec

    with pytest.raises(ValidationError, match=re.escape(expected)):
        DatasetSpec.model_validate({"source": "file://d.jsonl", "schema": schema})
