"""adapter.targetModules: `all` means all-linear, and module names are checked against the base model."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from reconciler.fingerprint import fingerprint_inputs
from reconciler.graph import DependencyGraph
from reconciler.sizing import modules
from reconciler.sizing.architectures import fetched_config_path
from reconciler.sources_digest import source_digests
from reconciler.specs.base import ResourceId
from reconciler.specs.finetune import FineTuneSpec
from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, run_tuneops, write_repo

FINE_TUNE = ResourceId("FineTune", "sft")


def spec(name: str) -> str:
    return textwrap.dedent(VALID_SPECS[name]).lstrip("\n")


def with_targets(targets: str) -> dict[str, str]:
    return {**VALID_SPECS, "fine-tune.yaml": spec("fine-tune.yaml").replace(
        "    r: 8\n", f"    r: 8\n    targetModules: {targets}\n")}


def fine_tune_fingerprint(root: Path, targets: str) -> str:
    result = validate_path(write_repo(root, with_targets(targets)))
    assert result.valid, [p.text() for p in result.problems]
    graph = DependencyGraph.from_specs(result.specs)
    return fingerprint_inputs(result.specs, graph, source_digests(result.specs))[FINE_TUNE].fingerprint


def test_all_is_all_linear_with_the_same_fingerprint(tmp_path: Path) -> None:
    # LLaMA-Factory's `lora_target: all`: it validated, then named no module.
    spelled = {targets: fine_tune_fingerprint(tmp_path / str(i), targets)
               for i, targets in enumerate(("[all]", "all", "all-linear", "[all-linear]"))}
    assert len(set(spelled.values())) == 1, spelled
    adapter = FineTuneSpec.model_validate({"baseModel": "b", "datasets": [{"name": "d"}],
                                           "adapter": {"targetModules": ["all"]}}).adapter
    assert adapter.target_modules == "all-linear"


def test_the_peft_config_gets_all_linear_for_all() -> None:
    from reconciler.runtime.finetune import peft_config

    spec = FineTuneSpec.model_validate({"baseModel": "b", "datasets": [{"name": "d"}],
                                        "adapter": {"targetModules": ["all"]}})
    assert peft_config(spec).target_modules == "all-linear"


def test_a_typo_in_a_module_name_is_a_file_line_error_with_a_did_you_mean(tmp_path: Path, tiny_model) -> None:
    files = with_targets("[q_prj, v_proj]")
    repo = write_repo(tmp_path / "specs", files)
    shutil.copytree(tiny_model, repo / "models" / "tiny")
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 1, result.output
    line = files["fine-tune.yaml"].splitlines().index("    targetModules: [q_prj, v_proj]") + 1
    assert f"fine-tune.yaml:{line}:" in result.output
    assert "BaseModel 'tiny' has no module 'q_prj' (from its weights)" in result.output
    assert "did you mean 'q_proj'?" in result.output
    assert "v_proj" not in result.output.replace("[q_prj, v_proj]", "")
    fixed = files["fine-tune.yaml"].replace("q_prj", "self_attn.q_proj")
    (repo / "fine-tune.yaml").write_text(fixed)
    assert run_tuneops("validate", ".", cwd=repo).exit_code == 0


def test_without_weights_the_config_model_type_names_the_modules(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "specs", {**with_targets("[q_proj, gate_prj]"),
                                           "models/tiny/config.json": '{"model_type": "qwen2"}'})
    result = validate_path(repo)
    [found] = modules.check(result.specs)
    assert (found.code, found.path) == ("unknown-module", "spec.adapter.targetModules[1]")
    assert found.hint == "did you mean 'gate_proj'?" and "model_type qwen2" in found.message
    (repo / "models/tiny/config.json").write_text('{"model_type": "some-new-architecture"}')
    assert list(modules.check(validate_path(repo).specs)) == []  # unknown: never blocks


def test_a_hub_model_is_checked_only_when_its_config_may_be_fetched(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # no network: only the cache answers
    revision = "0123456789abcdef0123456789abcdef01234567"
    files = with_targets("[q_prj]")
    files["base-model.yaml"] = spec("base-model.yaml").replace(
        "file://models/tiny", f"hf://org/model\n  revision: {revision}")
    repo = write_repo(tmp_path / "specs", files)
    cached = fetched_config_path("org/model", revision)  # what a fetch keeps for a pinned revision
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps({"model_type": "llama"}))
    specs = validate_path(repo).specs
    assert list(modules.check(specs)) == []  # validate and plan --offline never fetch
    [found] = modules.check(specs, fetch=True)
    assert found.hint == "did you mean 'q_proj'?"
    # an `architecture:` block says "do not read the config": a plan asks the Hub nothing for it
    block = ("\n  architecture: {hiddenSize: 64, numLayers: 2, numAttentionHeads: 4, intermediateSize: 128,"
             " vocabSize: 512}\n")
    (repo / "base-model.yaml").write_text(files["base-model.yaml"].rstrip("\n") + block)
    assert list(modules.check(validate_path(repo).specs, fetch=True)) == []


def test_plan_checks_a_hub_model_that_validate_cannot(tmp_path: Path) -> None:
    revision = "0123456789abcdef0123456789abcdef01234567"
    files = with_targets("[q_prj]")
    files["base-model.yaml"] = spec("base-model.yaml").replace(
        "file://models/tiny", f"hf://org/model\n  revision: {revision}")
    repo = write_repo(tmp_path / "specs", files)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    cached = tmp_path / "cache" / "tuneops" / "hub-configs" / "org--model" / f"{revision}.json"
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps({"model_type": "llama"}))
    assert run_tuneops("validate", ".", cwd=repo, env=env).exit_code == 0
    assert run_tuneops("plan", ".", "--offline", cwd=repo, env=env).exit_code == 0
    result = run_tuneops("plan", ".", cwd=repo, env=env)
    assert result.exit_code == 1, result.output
    assert "fine-tune.yaml:11:" in result.output and "did you mean 'q_proj'?" in result.output
    assert "nothing was planned" in result.output


def test_a_process_asks_the_hub_once_for_the_same_config_even_when_the_answer_was_a_refusal(
        tmp_path: Path, monkeypatch) -> None:
    """The daemon and the dashboard plan every few seconds: a config the Hub gave, or refused,
    is not asked for again on each plan (unpinned revisions are kept on no disk)."""
    import http.server
    import threading

    from reconciler.sizing.architectures import fetch_config

    asked: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            found = self.path.startswith("/org/model/")
            body = json.dumps({"model_type": "llama"}).encode() if found else b"{}"
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        assert [fetch_config("org/model", "main") for _ in range(3)] == [{"model_type": "llama"}] * 3
        assert [fetch_config("org/gated", "main") for _ in range(3)] == [None] * 3
        assert asked == ["/org/model/resolve/main/config.json", "/org/gated/resolve/main/config.json"]
    finally:
        server.shutdown()
