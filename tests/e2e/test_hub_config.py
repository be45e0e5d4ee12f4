"""A base model's shape read from the Hub's config.json when the spec has no `architecture:`
block: by `tuneops estimate` and a plan that reads state, never by `validate` or `plan
--offline`. The Hub here is a FAKE: a local HTTP server answering the `resolve` route the way
the Hub does (401 for a gated model without a token); HF_ENDPOINT points at it."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, run_tuneops

REVISION = "0e9e39f249a16976918f6564b8830bc894c89659"
LLAMA_3_1_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}


class FakeHub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.requests.append((self.path, self.headers.get("Authorization")))
                if self.path != f"/meta-llama/Llama-3.1-8B-Instruct/resolve/{REVISION}/config.json":
                    return self._reply(404, b'{"error": "Entry not found"}')
                if self.headers.get("Authorization") != "Bearer hf-test-token":
                    return self._reply(401, b'{"error": "Access to model is restricted."}')
                return self._reply(200, json.dumps(LLAMA_3_1_8B).encode())

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hub():
    fake = FakeHub()
    yield fake
    fake.server.shutdown()


@pytest.fixture
def without_architecture(tmp_path: Path) -> Path:
    repo = tmp_path / "specs"
    shutil.copytree(
        REPO_ROOT / "specs-example", repo, ignore=shutil.ignore_patterns("quickstart", ".tuneops")
    )
    models = repo / "base-models.yaml"
    text = models.read_text()
    models.write_text(
        text[: text.index("  # The shape from the model's config.json")] + text[text.index("---") :]
    )
    return repo


def test_the_shape_comes_from_the_hub_once_then_from_the_cache(
    hub: FakeHub, without_architecture: Path, tmp_path: Path
):
    env = {"HF_ENDPOINT": hub.url, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf")}
    gated = run_tuneops("estimate", "support-sft", str(without_architecture), env=env)
    assert gated.exit_code == 0 and "architecture of BaseModel/llama-3-1-8b-instruct unknown" in gated.stdout
    assert hub.requests == [(f"/meta-llama/Llama-3.1-8B-Instruct/resolve/{REVISION}/config.json", None)]

    env["HF_TOKEN"] = "hf-test-token"
    found = run_tuneops("estimate", "support-sft", str(without_architecture), env=env)
    assert found.exit_code == 0, found.output
    assert "parameters                     8.03B" in found.stdout  # as from the architecture block
    assert len(hub.requests) == 2 and hub.requests[-1][1] == "Bearer hf-test-token"
    cached = tmp_path / "cache" / "tuneops" / "hub-configs" / "meta-llama--Llama-3.1-8B-Instruct"
    assert json.loads((cached / f"{REVISION}.json").read_text()) == LLAMA_3_1_8B

    hub.server.shutdown()  # a pinned revision cannot change: the cache answers from now on
    again = run_tuneops("estimate", "support-sft", str(without_architecture), env=env)
    assert "parameters                     8.03B" in again.stdout and len(hub.requests) == 2


def test_validate_and_offline_plans_never_ask_the_hub(
    hub: FakeHub, without_architecture: Path, tmp_path: Path
):
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf-test-token", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert run_tuneops("validate", str(without_architecture), env=env).exit_code == 0
    assert run_tuneops("plan", str(without_architecture), "--offline", env=env).exit_code == 0
    assert hub.requests == []
