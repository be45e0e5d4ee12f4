"""Is an evaluation row in the training data? Normalised exact match of the prompt, and 13-gram
overlap of the prompt and reference, as GPT-3's decontamination did (Brown et al. 2020, app. C).

Pure and standard library only: the Dataset job writes each split's row hashes with it, the
Evaluation job counts the contaminated rows with it, and the planner warns with it, before
anything is evaluated, from those hashes.

Normalisation: Unicode NFKC, case-folded, every character that is neither a letter, a digit nor
whitespace (punctuation, symbols, underscores) made a space, whitespace collapsed. Tokens are
the words that leaves. A row's *prompt* is what the model is asked: an instruction with its
input, a chat's messages before its last assistant reply, a preference row's prompt, a text
row's whole text. Its *text* is the prompt and the answer: the output, every message, the chosen
reply (a rejected reply is not an answer the model learns to give).

An evaluation row is contaminated when its normalised prompt equals a training row's (exact), or
when any 13 consecutive tokens of its prompt and reference appear in a training row's text
(13-gram). A row of fewer than 13 tokens has no 13-gram: only exact match applies to it.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

NGRAM = 13
ROW_HASHES_FILE = "row_hashes.json"
ROW_HASHES_VERSION = 1
SAMPLES = 5
"""Contaminated rows kept as examples in results.json and MLflow; the count covers all of them."""

_NOT_WORD = re.compile(r"[\W_]+")
# ASCII text (most training text) takes a path ten times faster with the same result: NFKC leaves
# it as it is, case-folding is lower-casing, and the characters to drop are these.
_ASCII_NOT_WORD = bytes(c for c in range(128) if not chr(c).isalnum() and not chr(c).isspace())
_ASCII_TABLE = bytes.maketrans(_ASCII_NOT_WORD, b" " * len(_ASCII_NOT_WORD))
Match = Literal["exact", "13-gram"]


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols to spaces, whitespace collapsed."""
    if text.isascii():
        return " ".join(text.encode().translate(_ASCII_TABLE).lower().decode().split())
    return " ".join(_NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def _reply_index(messages: Sequence[Mapping[str, Any]]) -> int | None:
    """The last assistant message after the first, as training and evaluation take the reply."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    return last if last else None


def parts_of(row: Mapping[str, Any], schema_type: str) -> tuple[list[str], list[str]]:
    """(what the model is asked, what it answers), as written, in the order a reader meets them."""
    if schema_type == "instruction":
        return [row.get("instruction") or "", row.get("input") or ""], [row.get("output") or ""]
    if schema_type == "chat":
        contents = [m.get("content") or "" for m in row.get("messages") or ()]
        reply = _reply_index(row.get("messages") or ())
        return (contents, []) if reply is None else (contents[:reply], contents[reply:])
    if schema_type == "preference":
        return [row.get("prompt") or ""], [row.get("chosen") or ""]
    if schema_type == "prompt":
        return [row.get("prompt") or ""], [row.get("reference") or ""]
    if schema_type == "binary-feedback":
        return [row.get("prompt") or ""], [row.get("completion") or ""]
    return [row.get("text") or ""], []


def prompt_of(row: Mapping[str, Any], schema_type: str) -> str:
    """What the model is asked, as written (not yet normalised)."""
    return "\n".join(part for part in parts_of(row, schema_type)[0] if part)


def normalised(row: Mapping[str, Any], schema_type: str) -> tuple[str, str]:
    """(the normalised prompt, the normalised prompt and answer): each part normalised once."""
    asked, answered = parts_of(row, schema_type)
    prompt = " ".join(filter(None, map(normalise, asked)))
    answer = " ".join(filter(None, map(normalise, answered)))
    return prompt, f"{prompt} {answer}" if prompt and answer else prompt or answer


def stable_hash(text: str) -> str:
    """64 bits of BLAKE2b, hex: the same in every process (Python's hash() is salted per process)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def ngrams(tokens: Sequence[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    """Every window of n consecutive tokens; none when there are fewer than n."""
    return set(zip(*(tokens[i:] for i in range(n)), strict=False))


# --- counting --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowMatch:
    """One contaminated evaluation row and the first training row found to contain it."""

    row: int  # index in the scored rows
    prompt: str  # as written, cut short
    match: Match
    dataset: str  # the training dataset
    training_row: int  # index in its train split
    ngram: str | None = None  # the shared 13 tokens, for a 13-gram match

    def to_json(self) -> dict[str, Any]:
        out = {"row": self.row, "prompt": self.prompt, "match": self.match, "dataset": self.dataset,
               "trainingRow": self.training_row}
        if self.ngram is not None:
            out["ngram"] = self.ngram
        return out


@dataclass(frozen=True)
class Contamination:
    """How many scored rows appear in the training data, and a few of them."""

    split: str
    checked: int  # rows scored
    contaminated: int
    exact: int
    ngram: int
    datasets: tuple[str, ...]  # the training datasets compared with
    samples: tuple[RowMatch, ...] = ()
    skipped: str | None = None  # why nothing was compared (e.g. a base model), else None

    @property
    def fraction(self) -> float:
        return self.contaminated / self.checked if self.checked else 0.0

    def describe(self) -> str:
        """"3 of 36 test rows appear in training data (2 exact, 1 13-gram)"."""
        if self.skipped:
            return f"not checked: {self.skipped}"
        line = f"{self.contaminated} of {self.checked} {self.split} rows appear in training data"
        if self.contaminated:
            line += f" ({self.exact} exact, {self.ngram} {NGRAM}-gram)"
        return line

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "checkedRows": self.checked, "contaminatedRows": self.contaminated,
                "contaminatedFraction": self.fraction, "exact": self.exact, "ngram": self.ngram,
                "n": NGRAM, "trainingDatasets": list(self.datasets), "skipped": self.skipped,
                "samples": [sample.to_json() for sample in self.samples], "summary": self.describe()}


@dataclass
class _EvalIndex:
    """The evaluation rows' normalised prompts and 13-grams, to look training rows up in."""

    prompts: dict[str, list[int]] = field(default_factory=dict)
    windows: dict[tuple[str, ...], list[int]] = field(default_factory=dict)


def _index(rows: Sequence[Mapping[str, Any]], schema_type: str) -> _EvalIndex:
    index = _EvalIndex()
    for number, row in enumerate(rows):
        prompt, text = normalised(row, schema_type)
        if prompt:
            index.prompts.setdefault(prompt, []).append(number)
        for window in ngrams(text.split()):
            index.windows.setdefault(window, []).append(number)
    return index


def find_contamination(rows: Sequence[Mapping[str, Any]], schema_type: str, split: str,
                       training: Iterable[tuple[str, str, Iterable[Mapping[str, Any]]]]) -> Contamination:
    """Compare the scored `rows` with each training dataset's rows, `(name, schema type, rows)`.

    The evaluation rows are indexed once (prompts and 13-grams in hash tables); each training row
    is then normalised once and its windows checked against them in one C-level set operation,
    so the cost is one pass over the training text (about 4 s for 100,000 rows of
    120 words on one core).
    """
    index = _index(rows, schema_type)
    windows = index.windows.keys()
    found: dict[int, RowMatch] = {}
    names = []
    for name, training_type, training_rows in training:
        names.append(name)
        for number, row in enumerate(training_rows):
            if len(found) == len(rows):
                break
            prompt, text = normalised(row, training_type)
            for hit in index.prompts.get(prompt, ()):
                if hit not in found:
                    found[hit] = RowMatch(hit, _short(prompt_of(rows[hit], schema_type)), "exact", name,
                                          number)
            if not index.windows:
                continue
            tokens = text.split()
            if windows.isdisjoint(zip(*(tokens[i:] for i in range(NGRAM)), strict=False)):
                continue  # the common case, decided in C; only a hit is looked at closer
            for window in zip(*(tokens[i:] for i in range(NGRAM)), strict=False):
                for hit in index.windows.get(window, ()):
                    if hit not in found:
                        found[hit] = RowMatch(hit, _short(prompt_of(rows[hit], schema_type)), "13-gram",
                                              name, number, " ".join(window))
    matches = sorted(found.values(), key=lambda match: match.row)
    exact = sum(1 for match in matches if match.match == "exact")
    return Contamination(split, len(rows), len(matches), exact, len(matches) - exact, tuple(names),
                         tuple(matches[:SAMPLES]))


def not_checked(split: str, rows: int, why: str) -> Contamination:
    return Contamination(split, rows, 0, 0, 0, (), (), skipped=why)


def _short(text: str, most: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[:most - 1] + "…"


# --- the row hashes a Dataset job writes, for the planner ----------------------------------------

def row_hashes(rows: Iterable[Mapping[str, Any]], schema_type: str) -> list[str]:
    """Each row's normalised prompt, hashed; "" for a row with no prompt text."""
    hashes = []
    for row in rows:
        prompt = normalised(row, schema_type)[0]
        hashes.append(stable_hash(prompt) if prompt else "")
    return hashes


def row_hashes_document(splits: Mapping[str, Iterable[Mapping[str, Any]]], schema_type: str) -> str:
    """`row_hashes.json`: per split, the hash of each row's normalised prompt, in row order."""
    document = {"formatVersion": ROW_HASHES_VERSION, "normalisation": "nfkc-casefold-words",
                "hash": "blake2b-64", "schemaType": schema_type,
                "prompts": {split: row_hashes(rows, schema_type) for split, rows in splits.items()}}
    return json.dumps(document, separators=(",", ":")) + "\n"


ROW_HASHES_LIMIT = 256 * 1024 * 1024  # about 13 million rows of 64-bit hashes; larger: not read at plan time


def read_row_hashes(folder: str | Path) -> dict[str, list[str]] | None:
    """A prepared dataset's prompt hashes per split; None when it has none (prepared before this
    file existed, or not readable from here, as a cluster's storage may not be)."""
    path = Path(str(folder).removeprefix("file://")) / ROW_HASHES_FILE
    try:
        # the folder comes from an MLflow record: read only a regular file of a bounded size
        if not path.is_file() or path.stat().st_size > ROW_HASHES_LIMIT:
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("formatVersion") != ROW_HASHES_VERSION:
        return None
    prompts = document.get("prompts")
    return prompts if isinstance(prompts, dict) else None


def exact_overlap(evaluated: Sequence[str], trained: Iterable[str]) -> int:
    """How many evaluation rows' prompt hashes are among the training rows' ("" never matches)."""
    seen = set(trained)
    seen.discard("")
    return sum(1 for digest in evaluated if digest and digest in seen)
