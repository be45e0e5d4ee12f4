"""Pinning a spec repository from the command line: check in CI, pin, review the diff."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.conftest import API, run_tuneops, write_repo

DATA = '{"messages": [{"role": "user", "content": "hi"}]}\n'
COMMIT = "0e9e39f249a16976918f6564b8830bc894c89659"
SPECS = {
    "tuneops.yaml": "",
    "data/chats.jsonl": DATA,
    "dataset.yaml": f"""
        # Chats exported from the helpdesk.
        {API}
        kind: Dataset
        metadata:
          name: chats
        spec:
          source: "file://data/chats.jsonl"   # relative to this file
          schema:
            type: chat
        """,
    "base-model.yaml": f"""
        {API}
        kind: BaseModel
        metadata:
          name: llama
        spec:
          source: hf://meta-llama/Llama-3.1-8B
          revision: main  # moves: pin it
        """,
}


def no_hub(tmp_path: Path) -> dict[str, str]:
    """An empty Hugging Face cache and no HF_ENDPOINT, whatever the machine running the tests has."""
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_ENDPOINT": ""}


def test_check_lists_what_is_unpinned_then_pin_writes_it_and_check_passes(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", SPECS)
    env = no_hub(tmp_path)
    ref = tmp_path / "hf" / "hub" / "models--meta-llama--Llama-3.1-8B" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text(COMMIT)
    before = (repo / "dataset.yaml").read_text()

    check = run_tuneops("pin", "--check", cwd=repo, env=env)
    assert check.exit_code == 1, check.output
    assert check.stdout.splitlines() == [
        "base-model.yaml:7: BaseModel/llama spec.revision: 'main' is a branch or tag, not a commit "
        "(hf://meta-llama/Llama-3.1-8B)",
        "dataset.yaml:7: Dataset/chats spec.sha256: missing (file://data/chats.jsonl)",
        "2 source(s) not pinned: `tuneops pin` writes their pins",
    ]

    dry = run_tuneops("pin", "--dry-run", ".", cwd=repo, env=env)
    assert dry.exit_code == 0, dry.output
    assert "-  revision: main  # moves: pin it\n" in dry.stdout
    assert f"+  revision: {COMMIT}  # moves: pin it\n" in dry.stdout
    assert (repo / "dataset.yaml").read_text() == before

    pinned = run_tuneops("pin", cwd=repo, env=env)
    assert pinned.exit_code == 0, pinned.output
    assert "wrote 2 pin(s) to 2 file(s)" in pinned.stdout
    sha = hashlib.sha256(DATA.encode()).hexdigest()
    assert (repo / "dataset.yaml").read_text() == before.replace(
        '   # relative to this file\n', f'   # relative to this file\n  sha256: {sha}\n')

    after = run_tuneops("pin", "--check", ".", cwd=repo, env=env)
    assert (after.exit_code, after.stdout) == (0, "every source is pinned\n")
    assert run_tuneops("validate", ".", "--strict", cwd=repo).exit_code == 0


def test_without_the_cache_or_hf_endpoint_pin_refuses_and_says_what_to_do(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", SPECS)
    model_spec = (repo / "base-model.yaml").read_text()

    refused = run_tuneops("pin", cwd=repo, env=no_hub(tmp_path))

    assert refused.exit_code == 1
    assert "error: base-model.yaml:7: BaseModel/llama: the commit of model meta-llama/Llama-3.1-8B " \
           "at 'main' is not in the Hugging Face cache" in refused.stderr
    assert "HF_ENDPOINT" in refused.stderr and "--offline" in refused.stderr
    assert (repo / "base-model.yaml").read_text() == model_spec

    offline = run_tuneops("pin", "--offline", cwd=repo, env=no_hub(tmp_path))
    assert offline.exit_code == 0, offline.output
    assert "left unpinned base-model.yaml:7: BaseModel/llama spec.revision" in offline.stdout
    assert (repo / "base-model.yaml").read_text() == model_spec


def test_a_file_with_a_yaml_error_is_named_by_line_and_left_alone(tmp_path: Path):
    broken = f"{API}\nkind: Dataset\nmetadata:\n  name: chats\nspec:\n  source: file://data/chats.jsonl\n" \
             "    schema: {type: chat}\n"
    repo = write_repo(tmp_path / "specs", {**SPECS, "dataset.yaml": broken})

    result = run_tuneops("pin", "--check", cwd=repo, env=no_hub(tmp_path))

    assert result.exit_code == 1
    assert result.stderr.startswith("error: dataset.yaml:7: ")
    assert (repo / "dataset.yaml").read_text() == broken
