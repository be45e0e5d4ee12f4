"""The CODEOWNERS block: anchored patterns (escaped where the spec root's path has a space),
replaced in place, appended after the file's own rules, and never guessed at when its markers
are broken."""

from __future__ import annotations

import pytest

from reconciler.codeowners import BEGIN, END, MarkersBroken, block, merged, owner_pattern
from reconciler.config import ProjectSettings

SETTINGS = ProjectSettings.model_validate({"teams": {
    "nlp": {"paths": ["teams/nlp/**", "shared/nlp"], "owners": ["@org/nlp", "ada@example.com"]},
    "ops": {"paths": ["teams/ops"]}}})


def test_patterns_are_anchored_and_folders_own_what_is_below_them():
    assert owner_pattern("teams/nlp/**", "") == "/teams/nlp/**"
    assert owner_pattern("teams/nlp", "") == "/teams/nlp/"
    assert owner_pattern("teams/nlp", "ml specs") == "/ml\\ specs/teams/nlp/"
    assert block(SETTINGS) == [BEGIN, "# team nlp", "/teams/nlp/** @org/nlp ada@example.com",
                               "/shared/nlp/ @org/nlp ada@example.com",
                               "# team ops: no owners in tuneops.yaml", END]


def test_the_block_is_replaced_in_place_or_appended():
    lines = block(SETTINGS)
    first = merged("* @org/platform\n", lines)
    assert first.startswith("* @org/platform\n\n" + BEGIN)
    edited = first + "/docs/ @org/docs\n"
    again = merged(edited.replace("ada@example.com", "bo@example.com"), lines)
    assert again == edited and again.count(BEGIN) == 1


@pytest.mark.parametrize("text", [f"{BEGIN}\n/docs/ @org/docs\n", f"{END}\n{BEGIN}\n",
                                  f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"])
def test_broken_markers_touch_nothing(text: str):
    with pytest.raises(MarkersBroken, match="fix the file by hand"):
        merged(text, block(SETTINGS))
