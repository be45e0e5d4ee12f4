"""Normalisation, exact-prompt and 13-gram overlap, and the row hashes the planner reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

from reconciler.contamination import (
    ROW_HASHES_FILE,
    exact_overlap,
    find_contamination,
    normalise,
    prompt_of,
    read_row_hashes,
    row_hashes,
    row_hashes_document,
)

TRAINING = [
    {"instruction": "Summarise the following passage about the Great Barrier Reef.",
     "input": "The Great Barrier Reef is the world's largest coral reef system, composed of over "
              "2,900 individual reefs and 900 islands stretching for over 2,300 kilometres off the "
              "coast of Queensland, Australia.",
     "output": "It is the largest coral reef system on Earth, off Queensland."},
    {"instruction": "What is the boiling point of water at sea level in Celsius?", "input": "",
     "output": "100 degrees Celsius."},
    {"instruction": "Name the color of a banana.", "input": "", "output": "yellow"},
]


def _evaluate(rows: list[dict], training: list[dict] = TRAINING):
    return find_contamination(rows, "instruction", "test", [("reef-facts", "instruction", training)])


def test_normalisation_folds_case_width_punctuation_and_spacing() -> None:
    assert normalise("  What's the  BOILING point\tof water?!  ") == "what s the boiling point of water"
    assert normalise("Ｆｕｌｌｗｉｄｔｈ ＡＢＣ") == "fullwidth abc"  # NFKC
    assert normalise("Straße — “quoted”, snake_case") == "strasse quoted snake case"
    assert normalise("...!?") == ""


def test_the_ascii_fast_path_normalises_as_the_general_one_does() -> None:
    text = "".join(chr(c) for c in range(128)) + " Mixed CASE, punctuation; and_underscores!"
    general = " ".join(re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).split())
    assert normalise(text) == general


def test_the_prompt_is_what_the_model_is_asked() -> None:
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                         {"role": "assistant", "content": "Hello!"}]}
    assert prompt_of(chat, "chat") == "Be brief.\nHi there"
    assert prompt_of({"instruction": "Translate", "input": "chat", "output": "cat"}, "instruction") == \
        "Translate\nchat"
    assert prompt_of({"prompt": "Pick one", "chosen": "a", "rejected": "b"}, "preference") == "Pick one"
    assert prompt_of({"text": "Once upon a time"}, "text") == "Once upon a time"


def test_a_row_asked_again_with_other_case_and_punctuation_is_an_exact_match() -> None:
    found = _evaluate([{"instruction": "what is the BOILING point of water at sea level in celsius",
                        "input": "", "output": "Boils at 100 C"}])
    assert (found.contaminated, found.exact, found.ngram) == (1, 1, 0)
    (sample,) = found.samples
    assert (sample.row, sample.match, sample.dataset, sample.training_row) == (0, "exact", "reef-facts", 1)


def test_a_reworded_question_over_a_copied_passage_is_caught_only_by_13_grams() -> None:
    near = {"instruction": "In one sentence, what does this text say?",  # not the training prompt
            "input": "Composed of over 2,900 individual reefs and 900 islands stretching for over "
                     "2,300 kilometres, it is a natural wonder.",
            "output": "A huge reef system."}
    found = _evaluate([near])
    assert (found.contaminated, found.exact, found.ngram) == (1, 0, 1)
    (sample,) = found.samples
    assert sample.match == "13-gram" and sample.training_row == 0
    assert sample.ngram == "composed of over 2 900 individual reefs and 900 islands stretching for over"
    # Twelve shared words in a row are not enough.
    shorter = dict(near, input="Composed of over 2,900 individual reefs and 900 islands stretching for "
                               "many kilometres, it is a natural wonder.")
    assert _evaluate([shorter]).contaminated == 0


def test_a_short_row_is_compared_by_exact_match_only() -> None:
    """Fewer than 13 words have no 13-gram: the same answer to another question is not a match."""
    rows = [{"instruction": "Name the colour of a lemon.", "input": "", "output": "yellow"},
            {"instruction": "Name the color of a banana!", "input": "", "output": "Yellow."}]
    found = _evaluate(rows)
    assert (found.contaminated, found.checked) == (1, 2)
    assert [(s.row, s.match) for s in found.samples] == [(1, "exact")]
    assert found.describe() == "1 of 2 test rows appear in training data (1 exact, 0 13-gram)"
    assert found.to_json()["contaminatedFraction"] == 0.5


def test_a_clean_split_counts_zero_and_samples_are_capped() -> None:
    hamlet = {"instruction": "Who wrote Hamlet?", "input": "", "output": "Shakespeare"}
    assert _evaluate([hamlet]).contaminated == 0
    copies = [dict(TRAINING[1]) for _ in range(8)]
    found = _evaluate(copies)
    assert found.contaminated == 8 and len(found.samples) == 5


def test_chat_rows_compare_with_instruction_training_data() -> None:
    chat = {"messages": [{"role": "user", "content": "Name the color of a banana"},
                         {"role": "assistant", "content": "It is yellow"}]}
    found = find_contamination([chat], "chat", "validation", [("fruit", "instruction", TRAINING)])
    assert found.exact == 1 and found.split == "validation"


def test_overlap_is_one_pass_over_the_training_text() -> None:
    """Hash lookups, not pairwise comparison: 10,000 training rows against 200 scored rows."""
    import time

    training = [{"instruction": f"Question number {i} about topic {i % 97}", "input": "",
                 "output": " ".join(f"w{i}x{j % 50}" for j in range(60))} for i in range(10_000)]
    scored = [{"instruction": f"Unseen question {i}", "input": "",
               "output": " ".join(f"other{(i + j) % 991}" for j in range(40))} for i in range(200)]
    scored.append({"instruction": "Recall", "input": "", "output": training[9_999]["output"]})
    started = time.perf_counter()
    found = _evaluate(scored, training)
    assert found.contaminated == 1 and found.samples[0].training_row == 9_999
    assert time.perf_counter() - started < 10  # about 0.4 s here


def test_row_hashes_are_stable_and_find_exact_prompts(tmp_path: Path) -> None:
    splits = {"train": TRAINING, "validation": [], "test": [
        {"instruction": "NAME the color of a banana", "input": "", "output": "green"},
        {"instruction": "Who wrote Hamlet?", "input": "", "output": "Shakespeare"}]}
    (tmp_path / ROW_HASHES_FILE).write_text(row_hashes_document(splits, "instruction"))
    hashes = read_row_hashes(f"file://{tmp_path}")
    assert hashes is not None and len(hashes["train"]) == 3 and hashes["validation"] == []
    assert hashes["test"] == row_hashes(splits["test"], "instruction")
    # The same in another process, whose str hashes are salted differently.
    other = subprocess.run([sys.executable, "-c", "from reconciler.contamination import row_hashes; "
                            f"print(row_hashes([{{'text': {TRAINING[2]['instruction']!r}}}], 'text')[0])"],
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "7"})
    assert other.stdout.strip() == hashes["train"][2] and len(hashes["train"][2]) == 16
    assert exact_overlap(hashes["test"], hashes["train"]) == 1
    assert read_row_hashes(tmp_path / "missing") is None
    (tmp_path / ROW_HASHES_FILE).write_text('{"formatVersion": 99}')
    assert read_row_hashes(tmp_path) is None


def test_row_hashes_that_are_no_regular_file_are_not_read(tmp_path) -> None:  # noqa: ANN001
    """The folder comes from an MLflow record: a link to a device must not be read without end."""
    from reconciler.contamination import ROW_HASHES_FILE, read_row_hashes

    (tmp_path / ROW_HASHES_FILE).symlink_to("/dev/zero")
    assert read_row_hashes(tmp_path) is None
