"""Values written by the importer read back, with the YAML 1.2 reader validation uses, as the
same values and types; and a tool the importer does not know is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.importers import import_config
from reconciler.importers.commented_yaml import Commented, render
from reconciler.importers.common import ImportError_
from reconciler.specs.yamldoc import read_documents

TRICKY = [
    "yes",
    "no",
    "on",
    "null",
    "~",
    "2e-4",
    "1e3",
    "0x10",
    "<|im_end|>",
    "</tool_call>",
    "key: value",
    "# not a comment",
    "- item",
    "",
    " padded ",
    "naïve",
    "true",
    "3.0",
    "[x]",
    "a:b",
    "file://../d.jsonl",
]


@pytest.mark.parametrize("value", [*TRICKY, 0, -3, 2e-4, 1e-05, 0.95, 1.0, True, False])
def test_scalars_read_back_as_written(value):
    text = render({"spec": {"value": Commented(value, "axolotl: some_key"), "list": [value]}}, ["header"])
    data = read_documents(text)[0].data
    assert data["spec"]["value"] == value and type(data["spec"]["value"]) is type(value)
    assert data["spec"]["list"] == [value]


def test_comments_sit_beside_their_values():
    text = render(
        {
            "a": Commented({"b": Commented(1, "from b")}, "from a"),
            "items": [{"name": Commented("x", "first")}],
        },
        [],
    )
    assert text.splitlines() == [
        "a:                                # from a",
        "  b: 1                            # from b",
        "items:",
        "  - name: x                       # first",
    ]


def test_an_unknown_tool_is_refused(tmp_path: Path):
    config = tmp_path / "c.yml"
    config.write_text("base_model: x\n")
    with pytest.raises(ImportError_, match="unknown tool 'unsloth': one of axolotl, llamafactory"):
        import_config("unsloth", config, tmp_path)
