"""What the LLM judge is asked, and how its replies are read.

Pairwise: two answers to the same question, A and B; the judge replies `[[A]]`, `[[B]]` or
`[[tie]]` (MT-Bench's convention; Zheng et al. 2023). Score: one answer graded 1-10 against the
rubric, `Score: N`. Replies are read leniently where the reading is unambiguous ("Answer A is
better", "Verdict: B", "7/10") and refused where it is not ("[[A]] ... no, [[B]]" gives two
verdicts): a reply read as nothing counts as a tie (pairwise) or leaves the
row out of the mean (score), and is counted, never guessed.
"""

from __future__ import annotations

import re
from typing import Literal

Preference = Literal["A", "B", "tie"]
PAIRWISE_MAX_TOKENS = 512  # room for a short justification before the verdict
SCORE_MAX_TOKENS = 512

_SYSTEM = ("You are an impartial judge of answers given by AI assistants. Judge only by this "
           "rubric:\n\n{rubric}")


def _question_block(prompt: list[dict[str, str]] | None, reference: str | None) -> str:
    conversation = "\n".join(f"{turn.get('role', 'user')}: {turn.get('content', '')}"
                             for turn in prompt or [])
    block = f"[Conversation]\n{conversation}\n"
    if reference:
        block += f"\n[Reference answer]\n{reference}\n"
    return block


def pairwise_messages(rubric: str, prompt: list[dict[str, str]] | None, reference: str | None,
                      answer_a: str, answer_b: str) -> list[dict[str, str]]:
    user = (f"{_question_block(prompt, reference)}\n[Answer A]\n{answer_a}\n\n[Answer B]\n{answer_b}\n\n"
            "Which answer is better by the rubric? Do not let the order, the length or the style "
            "of the answers sway you. End your reply with your verdict alone on the last line: "
            "[[A]] if A is better, [[B]] if B is better, [[tie]] if neither is.")
    return [{"role": "system", "content": _SYSTEM.format(rubric=rubric)}, {"role": "user", "content": user}]


def score_messages(rubric: str, prompt: list[dict[str, str]] | None, reference: str | None,
                   answer: str) -> list[dict[str, str]]:
    user = (f"{_question_block(prompt, reference)}\n[Answer]\n{answer}\n\n"
            "Grade the answer by the rubric from 1 (worst) to 10 (best). End your reply with the "
            "grade alone on the last line, as: Score: N")
    return [{"role": "system", "content": _SYSTEM.format(rubric=rubric)}, {"role": "user", "content": user}]


_LETTER = r"(A|B|[Tt][Ii][Ee])"
_BRACKETED = re.compile(r"\[\[\s*(A|B|C|[Tt][Ii][Ee])\s*\]\]")
_LABELLED = re.compile(r"(?i:verdict|winner|better answer|preferred answer|preference|choice|final answer)"
                       r"\s*(?:is)?\s*[:=\-]?\s*\**\s*(?:(?i:answer|response|assistant)\s+)?\(?" + _LETTER
                       + r"\)?(?![\w])")
_IS_BETTER = re.compile(r"(?:(?i:answer|response|assistant|option)\s+)?\(?\b(A|B)\)?\s+(?i:is|was)\s+"
                        r"(?i:better|superior|preferred|the better(?: one| answer)?|stronger)\b")
_PREFER = re.compile(r"(?i:I prefer|I choose|I pick)\s+(?:(?i:answer|response|assistant)\s+)?\(?(A|B)\)?\b")
_ALONE = re.compile(r"^\W*(?:(?i:answer|response|assistant|option)\s+)?\(?" + _LETTER + r"\)?\W*$")
_TIE_WORDS = re.compile(r"\b(?i:it'?s a tie|tie|equally good|equally bad|both (?:are )?equal(?:ly good)?)\b")
_MENTION = re.compile(r"\b(?i:answer|response|assistant|option)\s+(A|B)\b")


def _one(found: list[str]) -> Preference | None:
    """The single verdict among `found`, or None when there is none or several disagree."""
    verdicts = {_normalise(value) for value in found}
    return verdicts.pop() if len(verdicts) == 1 else None


def _normalise(value: str) -> Preference:
    upper = value.strip().upper()
    if upper in ("A", "B"):
        return upper  # type: ignore[return-value]
    return "tie"  # TIE, or C in MT-Bench's "[[C]]" for a tie


def parse_preference(reply: str) -> Preference | None:
    """"A", "B" or "tie" from a pairwise reply, or None when it says none unambiguously. The
    strongest form wins: [[X]], then a labelled verdict, then "X is better"/"I prefer X", then a
    reply that is a verdict alone, then tie words with no answer named."""
    text = reply.strip()
    if not text:
        return None
    for pattern in (_BRACKETED, _LABELLED):
        found = pattern.findall(text)
        if found:
            return _one(found)
    found = _IS_BETTER.findall(text) + _PREFER.findall(text)
    if found:
        return _one(found)
    alone = _ALONE.match(text)
    if alone:
        return _normalise(alone.group(1))
    last_line = text.splitlines()[-1]
    alone = _ALONE.match(last_line)
    if alone:
        return _normalise(alone.group(1))
    if _TIE_WORDS.search(text) and not _MENTION.search(text):
        return "tie"
    return None


_SCORE_BRACKETED = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_SCORE_LABELLED = re.compile(r"(?i:score|rating|grade)\s*(?:is|of)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)"
                             r"(?:\s*(?:/|out of)\s*10)?\b")
_OUT_OF_TEN = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:/|(?i:out of))\s*10\b")
_NUMBER_ALONE = re.compile(r"^\W*(\d+(?:\.\d+)?)\W*$")


def parse_score(reply: str) -> float | None:
    """A grade between 1 and 10 from a score reply ("Score: 7", "[[7]]", "7/10", "7"), or None
    when there is none, several disagree, or it is out of range."""
    text = reply.strip()
    if not text:
        return None
    for pattern in (_SCORE_BRACKETED, _SCORE_LABELLED, _OUT_OF_TEN):
        found = {float(value) for value in pattern.findall(text)}
        if found:
            return _in_range(found.pop()) if len(found) == 1 else None
    for candidate in (text, text.splitlines()[-1]):
        alone = _NUMBER_ALONE.match(candidate)
        if alone:
            return _in_range(float(alone.group(1)))
    return None


def _in_range(value: float) -> float | None:
    return value if 1.0 <= value <= 10.0 else None
