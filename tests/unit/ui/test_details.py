"""What resource pages link to: the spec on its forge, the run in MLflow's UI, the lineage."""

from __future__ import annotations

import pytest

from reconciler.ui.details import forge_link, lineage_of, mlflow_run_link

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("remote,expected", [
    ("https://github.com/acme/specs.git", f"https://github.com/acme/specs/blob/{COMMIT}/specs/ft.yaml#L3"),
    ("git@github.com:acme/specs.git", f"https://github.com/acme/specs/blob/{COMMIT}/specs/ft.yaml#L3"),
    ("ssh://git@github.com/acme/specs", f"https://github.com/acme/specs/blob/{COMMIT}/specs/ft.yaml#L3"),
    ("https://gitlab.com/acme/ml/specs.git",
     f"https://gitlab.com/acme/ml/specs/-/blob/{COMMIT}/specs/ft.yaml#L3"),
    ("https://bitbucket.org/acme/specs.git", f"https://bitbucket.org/acme/specs/src/{COMMIT}/specs/ft.yaml#lines-3"),
    ("https://git.internal.example/acme/specs.git", None),  # an unknown forge: no guess
    ("/srv/git/specs.git", None),
    (None, None),
])
def test_a_spec_links_to_its_forge_at_the_commit_only_where_the_forge_is_known(remote, expected):
    assert forge_link(remote, COMMIT, "specs/ft.yaml", 3) == expected


def test_a_forge_link_never_carries_what_a_remote_hides():
    assert forge_link("https://github.com/acme/specs.git", "not-a-commit", "a.yaml", 1) is None
    link = forge_link("https://github.com/acme/specs.git", COMMIT, "my specs/a b.yaml", 1)
    assert link.endswith("/my%20specs/a%20b.yaml#L1")


def test_only_a_tracking_server_has_run_links_and_they_hold_no_credentials():
    assert mlflow_run_link("sqlite:////tmp/mlflow.db", "1", "abc") is None
    link = mlflow_run_link("https://bob:pa55word-long@mlflow.example.com/", "7", "abc")
    assert link == "https://mlflow.example.com/#/experiments/7/runs/abc"


def test_lineage_lists_commit_data_and_base_model_revision():
    found = lineage_of({"tuneops.git.commit": COMMIT, "tuneops.git.dirty": "true",
                        "tuneops.dataset.fruit-colors.digest": "sha256:aa",
                        "tuneops.base_model.source": "hf://org/model", "tuneops.base_model.revision": "",
                        "tuneops.fingerprint": "ff"})
    assert found == {"commit": f"{COMMIT} (with uncommitted changes)", "dataset fruit-colors": "sha256:aa",
                     "base model": "hf://org/model", "base revision": "unpinned", "fingerprint": "ff"}


def test_log_lines_are_shown_without_terminal_codes_and_cut_when_long():
    from reconciler.ui.details import LOG_LINE_CHARS, shown_line

    assert shown_line("\x1b[31mred\x1b[0m and \x1b]0;title\x07plain\n") == "red and plain"
    assert shown_line("  0%|   |\r 50%|#  |\r100%|###|\r\n") == "100%|###|"
    assert shown_line("bell\x07 and nul\x00") == "bell and nul"
    cut = shown_line("x" * 5_000_000)
    assert len(cut) < LOG_LINE_CHARS + 20 and cut.endswith("[... cut]")


def test_the_spec_shown_is_the_document_as_it_was_read(tmp_path):
    from reconciler.specs.loader import load
    from reconciler.ui.details import spec_source
    from tests.conftest import VALID_SPECS, write_repo

    repo = write_repo(tmp_path / "specs", VALID_SPECS)
    loaded = load(repo)
    (fine_tune,) = [spec for spec in loaded.specs if spec.id.kind == "FineTune"]
    fine_tune.path.write_text("# edited since\n" * 4 + fine_tune.path.read_text())  # lines move on disk
    shown = spec_source(fine_tune, None, None, None)
    assert "kind: FineTune" in shown.text and "# edited since" not in shown.text
    assert shown.file == fine_tune.file and shown.line == 1


def test_gates_are_read_only_from_a_results_file_under_the_projects_storage(tmp_path):
    import json

    from reconciler.ui.details import _gates

    gate = {"metric": "exact_match", "kind": "min", "value": 0.8, "bound": 0.5, "passed": True}
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    for folder in (store / "evaluations" / "e" / "fp", elsewhere):
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"gates": [gate]}))
    assert _gates(str(store / "evaluations" / "e" / "fp"), store) == [gate]
    assert _gates(str(elsewhere), store) == []  # a run's tag naming another folder is not followed
    assert _gates(str(store / ".." / "elsewhere"), store) == []
    assert _gates("s3://bucket/evaluations/e", store) == [] and _gates(None, store) == []
