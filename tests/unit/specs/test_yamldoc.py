"""The position-aware YAML reader: scalars, positions, and the limits that keep it safe."""

from __future__ import annotations

import math

import pytest

from reconciler.specs.yamldoc import MAX_DEPTH, YamlError, read_documents, split_documents


@pytest.mark.parametrize("text, value", [
    ("2e-4", 2e-4), ("1.0e-3", 1e-3), ("-3", -3), ("0x1f", 31), ("0o17", 15), ("42", 42),
    ("true", True), ("False", False), ("yes", "yes"), ("no", "no"), ("on", "on"),
    ("~", None), ("null", None), ("", None), ("2024-01-01", "2024-01-01"), ("'8'", "8"),
    ("1_000", "1_000"), (".inf", math.inf), ("-.inf", -math.inf), ("v1", "v1"), ("1.2.3", "1.2.3"),
])
def test_scalars_follow_yaml_1_2_core(text: str, value: object):
    [document] = read_documents(f"key: {text}\n")
    assert document.data["key"] == value
    assert type(document.data["key"]) is type(value)


def test_nan_is_a_float():
    [document] = read_documents("key: .nan\n")
    assert math.isnan(document.data["key"])


def test_positions_are_one_based_and_count_across_documents():
    text = "a: 1\n---\nb:\n  c: [x, y]\n  d: {e: 2}\n---\n# comment\nf: 3\n"
    first, second, third = read_documents(text)
    assert first.position(("a",)) == (1, 4)
    assert second.position(("b", "c", 1)) == (4, 10)
    assert second.position(("b", "d"), key=True) == (5, 3)
    assert second.position(("b", "missing")) == (3, 1)  # stops at the mapping's key
    assert third.position(("f",)) == (8, 4)
    assert [d.index for d in (first, second, third)] == [0, 1, 2]


def test_document_markers_inside_block_scalars_end_them_as_yaml_says():
    text = "a: |\n  text\n---\nb: 2\n"
    assert [d.data for d in read_documents(text)] == [{"a": "text\n"}, {"b": 2}]
    assert len(split_documents(text)) == 2


def test_directives_keep_the_stream_whole():
    assert read_documents("%YAML 1.2\n---\na: 1\n")[0].data == {"a": 1}


def test_empty_documents_are_skipped():
    assert [d.data for d in read_documents("---\n---\na: 1\n---\n")] == [{"a": 1}]


def test_merge_keys_merge_and_local_keys_win():
    [document] = read_documents("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n")
    assert document.data["use"] == {"x": 1, "y": 3}
    assert document.position(("use", "x")) == (1, 14)  # from the anchored mapping


@pytest.mark.parametrize("text, message, line", [
    ("a: 1\na: 2\n", "duplicate key 'a' (first defined at line 1)", 2),
    ("1: x\n", "must be a string", 1),
    ("a: !!binary aGVsbG8=\n", "unsupported YAML tag", 1),
    ("a: !custom x\n", "unsupported YAML tag", 1),
    ("a: &x [*x]\n", "contains it", 1),
    ("a:\n\tb: 1\n", "tab character", 2),
    ("a: [1\nb: 2\n", "invalid YAML", 2),
])
def test_bad_yaml_raises_a_positioned_error(text: str, message: str, line: int):
    with pytest.raises(YamlError) as caught:
        read_documents(text)
    assert message in caught.value.message + (caught.value.hint or "")
    assert caught.value.line == line


@pytest.mark.parametrize("text, line, column, message", [
    # over-indented under a key that has a value (libyaml stops at the colon)
    ("spec:\n  baseModel: tiny\n    datasets: x\n", 3, 5, "indented under `baseModel` (line 2)"),
    ("spec:\n  a: 1\n\n  # note\n    b: 2\n", 5, 5, "indented under `a` (line 2)"),
    ("spec:\n  - name: a\n      weight: 2\n", 3, 7, "indented under `name` (line 2)"),
    # one indentation step too few or too many, matching no key above
    ("spec:\n  adapter:\n    r: 8\n   alpha: 16\n", 4, 4,
     "indented 3 spaces, between `r` on line 3 (4 spaces) and `adapter` on line 2 (2 spaces)"),
    ("spec:\n  datasets:\n    - name: a\n   - name: b\n", 4, 4,
     "between `-` on line 3 (4 spaces) and `datasets` on line 2 (2 spaces)"),
    ("spec:\n  adapter:\n      r: 8\n    alpha: 16\n", 4, 5, "indented 4 spaces, between `r`"),
    # a key with no colon: libyaml stops on the next line, the mistake is on this one
    ("spec:\n  a 1\n  b: 2\n", 2, 3, "no `:` after its key"),
    ("spec:\n  adapter:\n    r: 8\n    alpha 16\n  training: x\n", 4, 5, "no `:` after its key"),
    ("spec:\n  adapter:\n    r 8\n    alpha: 16\n", 3, 5, "no `:` after its key"),
    ("spec:\n  a: 1\n  b 2\n\n  c: 3\n", 3, 3, "no `:` after its key"),
    ("spec:\n  prompt: |\n    hello\n  world\n", 4, 3, "no `:` after its key"),
    # a colon inside a one-line value stays where it is
    ("spec:\n  a: b: c\n", 2, 7, "quote a value"),
    # a quote never closed: libyaml stops at the end of the file, the mistake is where it opened
    ('metadata:\n  name: "fruit\nspec:\n  source: x\n', 2, 9, 'this " is never closed'),
    ("metadata:\n  name: 'fruit\nspec:\n  a: 1\n\n", 2, 9, "write a ' as ''"),
])
def test_indentation_mistakes_point_at_the_line_to_fix(text: str, line: int, column: int, message: str):
    with pytest.raises(YamlError) as caught:
        read_documents(text)
    assert message in caught.value.message + " " + (caught.value.hint or "")
    assert (caught.value.line, caught.value.column) == (line, column)


def test_positions_of_indentation_mistakes_count_across_documents():
    with pytest.raises(YamlError) as caught:
        read_documents("a: 1\n---\nspec:\n  adapter:\n    r: 8\n   alpha: 16\n")
    assert (caught.value.line, caught.value.column) == (6, 4)
    assert "between `r` on line 5 (4 spaces) and `adapter` on line 4 (2 spaces)" in caught.value.message


def test_depth_limit_applies_to_short_and_long_documents():
    short = "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    long = short + "\n" + "\n".join(f"k{i}: {i}" for i in range(2000))
    for text in (short, long):
        with pytest.raises(YamlError, match="nesting deeper"):
            read_documents(text)


def test_alias_bomb_is_refused_quickly():
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    with pytest.raises(YamlError, match="expands to more than"):
        read_documents("\n".join(lines))


def test_libyaml_is_used_when_pyyaml_has_it():
    # A silent fallback to the pure-Python parser once made validation ten times slower.
    import yaml

    from reconciler.specs import yamldoc

    assert yaml.__with_libyaml__ == yamldoc.LIBYAML


def test_source_text_is_the_scalar_as_written():
    [document] = read_documents("a: {version: 1.30, sha: 0123456, list: [x, 2e-4]}\n")
    assert document.data["a"]["version"] == 1.3
    assert document.source_text(("a", "version")) == "1.30"
    assert document.source_text(("a", "sha")) == "0123456"
    assert document.source_text(("a", "list", 1)) == "2e-4"
    assert document.source_text(("a", "missing")) is None
    assert document.source_text(("a",)) is None
