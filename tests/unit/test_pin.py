"""`tuneops pin`: pins written in place, every other byte of the spec file kept."""

from __future__ import annotations

import contextlib
import hashlib
import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler import pin as pinning
from tests.conftest import API, write_repo

DATA = '{"text": "hello"}\n'
DATA_SHA = hashlib.sha256(DATA.encode()).hexdigest()
MODEL_COMMIT = "0e9e39f249a16976918f6564b8830bc894c89659"
DATASET_COMMIT = "292c16329d921287c4166934cac1a6ad1e13a6c5"

MODEL_HEAD = f"{API}\nkind: BaseModel\nmetadata: {{name: llama}}\nspec:\n  source: hf://meta-llama/Llama-3.1-8B\n"

COMMENTED = f"""\
# The data the support bot learns from.
{API}
kind: Dataset
metadata:
    name: support      # four-space indentation, kept
spec:
    source: 'file://data/support.jsonl'   # quoted, kept
    format: jsonl
    # what one row is
    schema: {{type: text}}
---
# second document: a model from the Hub
{API}
kind: BaseModel
metadata:
  name: llama
spec:
  source: "hf://meta-llama/Llama-3.1-8B"
  license: llama3.1  # kept
"""


@pytest.fixture(autouse=True)
def hub_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and no endpoint, unless a test says otherwise."""
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-home" / "hub"


def cache_ref(hub: Path, folder: str, commit: str, branch: str = "main") -> None:
    """What `huggingface_hub` leaves after a download: refs/<branch> holds the commit."""
    ref = hub / folder / "refs" / branch
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)


def project(root: Path, files: dict[str, str]) -> Path:
    return write_repo(root, {"tuneops.yaml": "", "data/support.jsonl": DATA, **files})


def removed_and_added(before: str, after: str) -> tuple[list[str], list[str]]:
    """Lines only in `before`, lines only in `after`, compared in order, byte for byte."""
    import difflib

    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    removed, added = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += old[i1:i2]
            added += new[j1:j2]
    return removed, added


def test_pinning_a_commented_file_changes_only_the_pinned_lines(tmp_path: Path, hub_environment: Path):
    repo = project(tmp_path / "specs", {"specs.yaml": COMMENTED})
    cache_ref(hub_environment, "models--meta-llama--Llama-3.1-8B", MODEL_COMMIT)

    result = pinning.pin(repo)

    after = (repo / "specs.yaml").read_text()
    removed, added = removed_and_added(COMMENTED, after)
    assert removed == []
    assert added == [f"    sha256: {DATA_SHA}\n", f"  revision: {MODEL_COMMIT}\n"]
    assert after.count("\n---\n") == 1 and "# second document: a model from the Hub" in after
    assert after.index("source: 'file://") < after.index("sha256:") < after.index("format:")
    assert [(f.resource, f.field, f.line) for f in result.pinned] == [
        ("Dataset/support", "spec.sha256", 7), ("BaseModel/llama", "spec.revision", 18)]
    assert result.errors == [] and [Path(file).name for file in result.written] == ["specs.yaml"]


def test_check_fails_before_pinning_and_passes_after(tmp_path: Path, hub_environment: Path):
    repo = project(tmp_path / "specs", {"specs.yaml": COMMENTED})
    cache_ref(hub_environment, "models--meta-llama--Llama-3.1-8B", MODEL_COMMIT)

    before = pinning.check(repo)
    assert [(f.line, f.resource, f.field) for f in before.unpinned] == [
        (7, "Dataset/support", "spec.sha256"), (18, "BaseModel/llama", "spec.revision")]
    assert "missing (file://data/support.jsonl)" in before.unpinned[0].text()
    assert (repo / "specs.yaml").read_text() == COMMENTED  # --check writes nothing

    pinning.pin(repo)
    after = pinning.check(repo)
    assert after.unpinned == [] and after.errors == []


def test_a_wrong_sha256_is_found_and_corrected_in_its_own_quotes(tmp_path: Path):
    wrong = "a" * 64
    spec = f"""\
        {API}
        kind: Dataset
        metadata: {{name: support}}
        spec:
          source: file://data/support.jsonl
          sha256: "{wrong}"   # pinned last week
        """
    repo = project(tmp_path / "specs", {"dataset.yaml": spec})

    found = pinning.check(repo).unpinned
    assert len(found) == 1 and found[0].line == 6
    assert found[0].message == f"does not match the file: its sha256 is {DATA_SHA} (file://data/support.jsonl)"

    pinning.pin(repo)
    pinned_line = (repo / "dataset.yaml").read_text().splitlines()[5]
    assert pinned_line == f'  sha256: "{DATA_SHA}"   # pinned last week'
    assert pinning.check(repo).unpinned == []


def test_the_digest_is_the_one_fingerprints_use(tmp_path: Path):
    from reconciler.sources_digest import DigestCache, digest_path

    repo = project(tmp_path / "specs", {"dataset.yaml": COMMENTED.split("---")[0]})
    pinning.pin(repo)
    assert f"sha256: {DATA_SHA}" in (repo / "dataset.yaml").read_text()
    assert digest_path(repo / "data" / "support.jsonl", DigestCache(None)) == f"sha256:{DATA_SHA}"


def test_hf_revisions_come_from_the_local_cache(tmp_path: Path, hub_environment: Path):
    spec = f"""\
        {API}
        kind: BaseModel
        metadata: {{name: llama}}
        spec:
          source: hf://meta-llama/Llama-3.1-8B
          revision: 'release'
        ---
        {API}
        kind: Dataset
        metadata: {{name: feedback}}
        spec:
          source: hf://openbmb/UltraFeedback
          schema: {{type: preference}}
        """
    repo = project(tmp_path / "specs", {"hub.yaml": spec})
    cache_ref(hub_environment, "models--meta-llama--Llama-3.1-8B", MODEL_COMMIT, branch="release")
    cache_ref(hub_environment, "datasets--openbmb--UltraFeedback", DATASET_COMMIT)

    result = pinning.pin(repo)

    lines = (repo / "hub.yaml").read_text().splitlines()
    assert lines[5] == f"  revision: '{MODEL_COMMIT}'"
    assert lines[12] == f"  revision: {DATASET_COMMIT}"
    assert result.errors == [] and len(result.pinned) == 2


@pytest.fixture
def hub_stand_in() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A stand-in for the Hugging Face Hub API on localhost (not the real Hub): answers
    /api/{models,datasets}/<repo>/revision/<rev> with a commit, and keeps each request's path
    and Authorization header."""
    requests: list[tuple[str, str | None]] = []
    commits = {"/api/models/meta-llama/Llama-3.1-8B/revision/main": MODEL_COMMIT,
               "/api/datasets/openbmb/UltraFeedback/revision/v2": DATASET_COMMIT}

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append((self.path, self.headers.get("Authorization")))
            commit = commits.get(self.path)
            body = json.dumps({"sha": commit} if commit else {"error": "Revision Not Found"}).encode()
            self.send_response(200 if commit else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_hf_revisions_come_from_hf_endpoint_when_the_cache_does_not_know(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_stand_in: tuple[str, list]):
    endpoint, requests = hub_stand_in
    monkeypatch.setenv("HF_ENDPOINT", endpoint + "/")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    spec = f"""\
        {API}
        kind: BaseModel
        metadata: {{name: llama}}
        spec:
          source: hf://meta-llama/Llama-3.1-8B
        ---
        {API}
        kind: Dataset
        metadata: {{name: feedback}}
        spec:
          source: hf://openbmb/UltraFeedback
          revision: v2
        """
    repo = project(tmp_path / "specs", {"hub.yaml": spec})

    result = pinning.pin(repo)

    assert result.errors == []
    assert requests == [("/api/models/meta-llama/Llama-3.1-8B/revision/main", "Bearer hf_test"),
                        ("/api/datasets/openbmb/UltraFeedback/revision/v2", "Bearer hf_test")]
    text = (repo / "hub.yaml").read_text()
    assert f"  source: hf://meta-llama/Llama-3.1-8B\n  revision: {MODEL_COMMIT}\n" in text
    assert f"  revision: {DATASET_COMMIT}\n" in text


def test_a_revision_the_hub_does_not_have_is_an_error_and_the_file_is_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_stand_in: tuple[str, list]):
    endpoint, _ = hub_stand_in
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    spec = MODEL_HEAD + "  revision: no-such-branch\n"
    repo = project(tmp_path / "specs", {"hub.yaml": spec})

    result = pinning.pin(repo)

    assert len(result.errors) == 1
    assert "hub.yaml:6: BaseModel/llama:" in result.errors[0]  # the revision it could not resolve
    assert "has no model meta-llama/Llama-3.1-8B at 'no-such-branch' (HTTP 404)" in result.errors[0]
    assert (repo / "hub.yaml").read_text() == spec


def test_without_cache_or_endpoint_pinning_refuses_and_says_what_to_do(tmp_path: Path):
    spec = MODEL_HEAD
    repo = project(tmp_path / "specs", {"hub.yaml": spec, "dataset.yaml": COMMENTED.split("---")[0]})

    result = pinning.pin(repo)

    assert len(result.errors) == 1
    message = result.errors[0]
    assert "hub.yaml:5: BaseModel/llama:" in message
    assert "not in the Hugging Face cache" in message and "HF_ENDPOINT is not set" in message
    assert "--offline" in message and "huggingface-cli download meta-llama/Llama-3.1-8B" in message
    assert (repo / "hub.yaml").read_text() == spec  # refused: untouched
    assert f"sha256: {DATA_SHA}" in (repo / "dataset.yaml").read_text()  # the other file is pinned

    offline = pinning.pin(repo, offline=True)
    assert offline.errors == [] and offline.pinned == []
    assert [f.resource for f in offline.left] == ["BaseModel/llama"]
    assert (repo / "hub.yaml").read_text() == spec


def test_a_yaml_error_is_reported_at_its_line_and_the_file_is_untouched(tmp_path: Path):
    broken = f"{API}\nkind: Dataset\nmetadata:\n  name: support\nspec:\n" \
             "  source: file://data/support.jsonl\n   format: jsonl\n"
    repo = project(tmp_path / "specs", {"broken.yaml": broken})

    for result in (pinning.pin(repo), pinning.check(repo)):
        assert len(result.errors) == 1
        assert result.errors[0].split(": ", 1)[0].endswith("broken.yaml:7")
    assert (repo / "broken.yaml").read_text() == broken


def test_a_pinned_revision_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         hub_stand_in: tuple[str, list]):
    endpoint, requests = hub_stand_in
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    spec = MODEL_HEAD + f"  revision: {DATASET_COMMIT}  # an older commit, on purpose\n"
    repo = project(tmp_path / "specs", {"hub.yaml": spec})

    assert pinning.check(repo).unpinned == []
    result = pinning.pin(repo)
    assert result.pinned == [] and result.errors == [] and requests == []
    assert (repo / "hub.yaml").read_text() == spec


def test_dry_run_shows_the_diff_and_writes_nothing(tmp_path: Path):
    spec = COMMENTED.split("---")[0]
    repo = project(tmp_path / "specs", {"dataset.yaml": spec})

    result = pinning.pin(repo, dry_run=True)

    assert (repo / "dataset.yaml").read_text() == spec and result.written == []
    assert f"+    sha256: {DATA_SHA}\n" in result.diffs[0]


@pytest.mark.parametrize("spec_block, pinned_block", [
    ("spec: {source: file://data/support.jsonl}\n",
     f"spec: {{source: file://data/support.jsonl, sha256: {DATA_SHA}}}\n"),
    ("spec:\n  source: file://data/support.jsonl\n  sha256:\n",
     f"spec:\n  source: file://data/support.jsonl\n  sha256: {DATA_SHA}\n"),
    ("spec:\r\n  source: file://data/support.jsonl\r\n  format: jsonl\r\n",
     f"spec:\r\n  source: file://data/support.jsonl\r\n  sha256: {DATA_SHA}\r\n  format: jsonl\r\n"),
    ("spec:\n  source: file://data/support.jsonl",
     f"spec:\n  source: file://data/support.jsonl\n  sha256: {DATA_SHA}"),
], ids=["flow-mapping", "empty-value", "crlf", "no-final-newline"])
def test_layouts_are_kept(tmp_path: Path, spec_block: str, pinned_block: str):
    head = f"{API}\nkind: Dataset\nmetadata: {{name: support}}\n"
    repo = project(tmp_path / "specs", {})
    (repo / "dataset.yaml").write_bytes((head + spec_block).encode())

    result = pinning.pin(repo)

    assert result.errors == []
    assert (repo / "dataset.yaml").read_bytes() == (head + pinned_block).encode()


def test_local_model_folders_and_other_kinds_need_no_pin(tmp_path: Path):
    spec = f"""\
        {API}
        kind: BaseModel
        metadata: {{name: tiny}}
        spec:
          source: file://models/tiny
        ---
        apiVersion: apps/v1
        kind: Dataset
        metadata: {{name: not-ours}}
        spec:
          source: hf://some/thing
        """
    repo = project(tmp_path / "specs", {"other.yaml": spec})
    assert pinning.check(repo).unpinned == []


def test_a_value_pin_cannot_rewrite_alone_is_left_for_a_person(tmp_path: Path, hub_environment: Path):
    spec = MODEL_HEAD + "  revision: &branch main\n  license: *branch\n"
    repo = project(tmp_path / "specs", {"hub.yaml": spec})
    cache_ref(hub_environment, "models--meta-llama--Llama-3.1-8B", MODEL_COMMIT)

    result = pinning.pin(repo)

    [error] = result.errors
    assert "hub.yaml:6: BaseModel/llama: spec.revision is not a plain one-line value" in error
    assert (repo / "hub.yaml").read_text() == spec



def test_a_pinned_file_keeps_its_permissions(tmp_path: Path, hub_environment: Path):
    """An edit in place is not a new file: a spec someone made unreadable to others stays so."""
    repo = project(tmp_path / "specs", {"specs.yaml": COMMENTED})
    cache_ref(hub_environment, "models--meta-llama--Llama-3.1-8B", MODEL_COMMIT)
    spec = repo / "specs.yaml"
    spec.chmod(0o640)

    result = pinning.pin(repo)

    assert [Path(file).name for file in result.written] == ["specs.yaml"]
    assert stat.S_IMODE(spec.stat().st_mode) == 0o640


def test_an_endpoint_that_answers_without_end_is_not_read_into_memory(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """A hostile or broken HF_ENDPOINT: the answer is read up to a limit, then refused."""
    from reconciler.sizing.architectures import HUB_ANSWER_LIMIT

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            chunk = b" " * 65536
            with contextlib.suppress(OSError):
                for _ in range(HUB_ANSWER_LIMIT // len(chunk) + 64):
                    self.wfile.write(chunk)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        spec = MODEL_HEAD
        repo = project(tmp_path / "specs", {"hub.yaml": spec})
        result = pinning.pin(repo)
    finally:
        server.shutdown()
    assert len(result.errors) == 1 and "larger than 4 MiB" in result.errors[0]
    assert (repo / "hub.yaml").read_text() == spec
