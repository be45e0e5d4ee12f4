"""The built-in OpenAI-compatible server, over real HTTP, on the tiny model built here.

httpx (which fastapi.testclient needs) is not a dependency, so the app runs in a real uvicorn
server on a background thread and is called with urllib; `serve(job)` itself runs in a child
process and is stopped with SIGTERM, as the local backend stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the server needs the train extras")
pytest.importorskip("fastapi", reason="the built-in server needs fastapi")
pytest.importorskip("uvicorn", reason="the built-in server needs uvicorn")

from reconciler.jobs.jobfile import BaseModelRef, JobFile, MlflowTarget, ModelVersionRef, ServeOptions
from reconciler.runtime.loading import load_model, load_model_tokenizer
from reconciler.runtime.serve import Generator, create_app, load_for_serving

NAME = "bot"
PROMPT = "The quick brown fox"


class Client:
    def __init__(self, url: str):
        self.url = url

    def call(self, path: str, body: object = None, *, raw: bytes | None = None) -> tuple[int, dict]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def ok(self, path: str, body: object = None) -> dict:
        status, answer = self.call(path, body)
        assert status == 200, answer
        return answer

    def complete(self, **body) -> dict:
        return self.ok("/v1/completions", {"model": NAME, "prompt": PROMPT, "temperature": 0, **body})


@contextlib.contextmanager
def running(app):
    """The app in a real uvicorn server on a thread, on a socket bound before it starts."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Client(f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def deployment(model, tmp_path: Path, *, merge: bool = False, port: int = 8000) -> JobFile:
    return JobFile(kind="Deployment", name=NAME, fingerprint="0" * 64,
                   spec={"model": {"fineTune": "ft"}, "mergeAdapter": merge, "runtime": "transformers"},
                   storage_root=str(tmp_path), mlflow=MlflowTarget(tracking_uri=f"file://{tmp_path}/mlruns"),
                   model=model, serve=ServeOptions(host="127.0.0.1", port=port))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from reconciler.runtime.tiny_model import build

    return build(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def base_ref(tiny_dir) -> BaseModelRef:
    return BaseModelRef(name="tiny", source=f"file://{tiny_dir}")


@pytest.fixture(scope="module")
def loaded(base_ref):
    return load_model(base_ref), load_model_tokenizer(base_ref)


@pytest.fixture(scope="module")
def client(loaded):
    with running(create_app(*loaded, NAME)) as client:
        yield client


@pytest.fixture(scope="module")
def adapter_ref(base_ref, tiny_dir, tmp_path_factory) -> ModelVersionRef:
    """A LoRA adapter whose B matrices are random, so that it changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(base_ref), LoraConfig(r=4, target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    location = tmp_path_factory.mktemp("adapter") / "ft"
    model.save_pretrained(location)
    return ModelVersionRef(fine_tune="ft", location=str(location), adapter=True, base_model=base_ref)


def test_health_and_models(client, loaded):
    assert client.ok("/health") == {"status": "ok", "model": NAME}
    with running(create_app(*loaded, NAME, version="sft/3", token="f00d")) as started:
        assert started.ok("/health") == {"status": "ok", "model": NAME, "version": "sft/3", "token": "f00d"}
    listing = client.ok("/v1/models")
    assert listing["object"] == "list"
    [entry] = listing["data"]
    assert entry["id"] == NAME and entry["object"] == "model" and entry["owned_by"] == "tuneops"
    assert isinstance(entry["created"], int)


def test_greedy_completion_is_the_models_argmax_and_repeatable(client, loaded):
    import torch

    model, tokenizer = loaded
    first = client.complete(max_tokens=10)
    assert client.complete(max_tokens=10)["choices"] == first["choices"]
    assert first["object"] == "text_completion" and first["id"].startswith("cmpl-")
    assert first["model"] == NAME and isinstance(first["created"], int)
    [choice] = first["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    ids = tokenizer(PROMPT)["input_ids"]
    with torch.inference_mode():
        expected = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    generated = expected[0, len(ids):].tolist()
    assert tokenizer.eos_token_id not in generated  # else this test would need another prompt
    assert choice["text"] == tokenizer.decode(generated, skip_special_tokens=True)
    assert choice["finish_reason"] == "length"
    assert first["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 10,
                              "total_tokens": len(ids) + 10}


def test_max_tokens_caps_the_completion(client):
    for cap in (1, 3):
        answer = client.complete(max_tokens=cap)
        assert answer["usage"]["completion_tokens"] <= cap
        reason = "length" if answer["usage"]["completion_tokens"] == cap else "stop"
        assert answer["choices"][0]["finish_reason"] == reason
    # the OpenAI default is 16 tokens
    assert client.complete()["usage"]["completion_tokens"] <= 16


def test_sampling_with_a_seed_is_reproducible_and_not_greedy(client):
    greedy = client.complete(max_tokens=16)["choices"][0]["text"]
    sampled = [client.complete(max_tokens=16, temperature=1.0, seed=7)["choices"][0]["text"]
               for _ in range(2)]
    assert sampled[0] == sampled[1]
    assert sampled[0] != greedy


def test_concurrent_requests_are_served_one_at_a_time(client):
    """Seeded sampling reseeds torch's global generator: interleaved requests would mix their draws."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"max_tokens": 24, "temperature": 1.0, "seed": 3}
    alone = client.complete(**body)["choices"]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda _: client.complete(**body)["choices"], range(6)))
    assert together == [alone] * 6


def test_stop_string_truncates_and_ends_generation(client):
    full = client.complete(max_tokens=24)["choices"][0]["text"]
    match = re.search(r"[A-Za-z]{2}", full[3:])
    assert match, f"no ASCII letters to stop on in {full!r}"
    stop = match.group()
    answer = client.complete(max_tokens=24, stop=["never-generated", stop])
    [choice] = answer["choices"]
    assert choice["text"] == full[:full.index(stop)]
    assert choice["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] < 24  # generation stopped, not only the text
    assert client.complete(max_tokens=24, stop=stop)["choices"][0]["text"] == choice["text"]


def test_a_list_of_prompts_gives_one_choice_each(client):
    single = [client.complete(prompt=p, max_tokens=4) for p in ("red green", "What is")]
    both = client.complete(prompt=["red green", "What is"], max_tokens=4)
    assert [c["index"] for c in both["choices"]] == [0, 1]
    assert [c["text"] for c in both["choices"]] == [s["choices"][0]["text"] for s in single]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert both["usage"][key] == sum(s["usage"][key] for s in single)


def test_chat_completion_applies_the_chat_template(client, loaded):
    _, tokenizer = loaded
    messages = [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "What is the color of the sky?"}]
    answer = client.ok("/v1/chat/completions", {"model": NAME, "messages": messages, "temperature": 0,
                                                 "max_tokens": 6})
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert answer["model"] == NAME
    [choice] = answer["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    usage = answer["usage"]
    assert usage["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # max_completion_tokens wins over max_tokens; text parts read as the string they join to
    parts = [messages[0], {"role": "user", "content": [{"type": "text", "text": "What is the color "},
                                                       {"type": "text", "text": "of the sky?"}]}]
    again = client.ok("/v1/chat/completions", {"model": NAME, "messages": parts, "temperature": 0,
                                               "max_tokens": 50, "max_completion_tokens": 6})
    assert again["choices"][0]["message"] == choice["message"] and again["usage"] == usage


def test_end_of_turn_token_ends_generation(loaded, base_ref):
    """A model that says <|im_end|> after three tokens: finish_reason stop, the token not in the text."""
    import torch

    model, tokenizer = load_model(base_ref), loaded[1]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    calls = []

    def say_eos_after_three(module, inputs, output):
        calls.append(1)
        if len(calls) > 3:
            output[..., eos] = torch.finfo(output.dtype).max
        return output

    model.lm_head.register_forward_hook(say_eos_after_three)
    with running(create_app(model, tokenizer, NAME)) as client:
        answer = client.complete(max_tokens=16)
        calls.clear()
        chat = client.ok("/v1/chat/completions", {"model": NAME, "temperature": 0,
                                                  "messages": [{"role": "user", "content": "hi"}]})
    for choice, usage in ((answer["choices"][0], answer["usage"]), (chat["choices"][0], chat["usage"])):
        assert choice["finish_reason"] == "stop"
        assert usage["completion_tokens"] == 4
    assert "<|im_end|>" not in answer["choices"][0]["text"] and answer["choices"][0]["text"]


def test_end_of_turn_tokens_stop_even_when_eos_is_another_token(loaded):
    import copy

    model, tokenizer = loaded
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.eos_token = "<s>"  # a base model's eos, with ChatML turns added by the fine-tune
    ids = Generator(model, tokenizer).stop_ids
    assert set(ids) == {tokenizer.convert_tokens_to_ids("<s>"), tokenizer.convert_tokens_to_ids("<|im_end|>")}


@pytest.mark.parametrize(("path", "body", "status", "param", "code"), [
    ("/v1/completions", {"model": "other", "prompt": "a"}, 404, "model", "model_not_found"),
    ("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "a"}]}, 404,
     "model", "model_not_found"),
    ("/v1/completions", {"model": NAME, "prompt": "a", "stream": True}, 400, "stream", None),
    ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": "a"}], "stream": True},
     400, "stream", None),
    ("/v1/completions", {"model": NAME, "prompt": "a", "n": 2}, 400, "n", None),
    ("/v1/completions", {"model": NAME}, 400, "prompt", None),
    ("/v1/completions", {"model": NAME, "prompt": "a", "max_tokens": "lots"}, 400, "max_tokens", None),
    ("/v1/completions", {"model": NAME, "prompt": "a", "temperature": 5}, 400, "temperature", None),
    ("/v1/completions", {"model": NAME, "prompt": []}, 400, "prompt", None),
    ("/v1/completions", {"model": NAME, "prompt": "a", "max_tokens": 100000}, 400, "max_tokens",
     "context_length_exceeded"),
    ("/v1/chat/completions", {"model": NAME, "messages": []}, 400, "messages", None),
    ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": [{"type": "image"}]}]},
     400, "messages.0.content", None),
    # Values the model cannot take are refused, not left to fail inside generation (a 500).
    ("/v1/completions", {"model": NAME, "prompt": ""}, 400, "prompt", None),
    ("/v1/completions", {"model": NAME, "prompt": ["a", ""]}, 400, "prompt", None),
    ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": "a"}],
                              "seed": 2**64 + 1}, 400, "seed", None),
    ("/v1/completions", {"model": NAME, "prompt": "a", "seed": -(2**63) - 1}, 400, "seed", None),
    ("/v1/completions", {"model": NAME, "prompt": "a", "temperature": 0.5, "top_k": 2**70}, 400, "top_k",
     None),
    ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": "a"}],
                              "max_completion_tokens": 2**70}, 400, "max_completion_tokens", None),
])
def test_errors_have_openais_shape(client, path, body, status, param, code):
    got, answer = client.call(path, body)
    assert got == status, answer
    assert set(answer) == {"error"}
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param and error["code"] == code
    if body.get("stream"):
        assert "not supported" in error["message"] and "built-in server" in error["message"]


def test_malformed_json_and_unknown_routes_have_openais_shape(client):
    status, answer = client.call("/v1/completions", raw=b"{not json")
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"
    status, answer = client.call("/v1/embeddings", {"input": "a"})
    assert status == 404 and set(answer["error"]) == {"message", "type", "param", "code"}


def test_adapter_is_served_and_merging_it_keeps_the_greedy_text(adapter_ref, client, tmp_path):
    base_text = client.complete(max_tokens=12)["choices"][0]["text"]
    texts = {}
    for merge in (False, True):
        model, tokenizer = load_for_serving(deployment(adapter_ref, tmp_path, merge=merge))
        assert hasattr(model, "peft_config") != merge  # merge_and_unload leaves a plain model
        with running(create_app(model, tokenizer, NAME)) as served:
            texts[merge] = served.complete(max_tokens=12)["choices"][0]["text"]
    assert texts[False] != base_text  # the adapter is applied
    assert texts[True] == texts[False]


def test_the_models_generation_config_decides_what_a_request_leaves_out(adapter_ref, tmp_path):
    """As vLLM does: a field the request leaves out takes generation_config.json's value (the
    fine-tune writes its Evaluation's decoding there: here greedy, 5 new tokens); a field it
    sets wins."""
    folder = tmp_path / "ft"
    shutil.copytree(adapter_ref.location, folder)
    decoding = {"do_sample": False, "temperature": 0.0, "max_new_tokens": 5}
    (folder / "generation_config.json").write_text(json.dumps(decoding))
    ref = adapter_ref.model_copy(update={"location": str(folder)})
    with running(create_app(*load_for_serving(deployment(ref, tmp_path)), NAME)) as served:
        left_out = served.ok("/v1/completions", {"model": NAME, "prompt": PROMPT})
        greedy = served.complete(max_tokens=5)
        assert left_out["choices"] == greedy["choices"] and left_out["usage"] == greedy["usage"]
        assert greedy["usage"]["completion_tokens"] <= 5
        question = {"model": NAME, "messages": [{"role": "user", "content": "hi"}]}
        chat = served.ok("/v1/chat/completions", question)
        assert chat["usage"]["completion_tokens"] <= 5
        assert served.ok("/v1/chat/completions", question)["choices"] == chat["choices"]
        longer = served.complete(max_tokens=12, temperature=1.0, seed=7)
        assert longer["usage"]["completion_tokens"] > 5 or longer["choices"][0]["finish_reason"] == "stop"
        assert longer["choices"][0]["text"] != served.complete(max_tokens=12)["choices"][0]["text"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_serve_runs_in_its_own_process_and_stops_on_sigterm(adapter_ref, tmp_path):
    port = free_port()
    job_path = tmp_path / "job.json"
    job_path.write_text(deployment(adapter_ref, tmp_path, merge=True, port=port).to_json(), encoding="utf-8")
    code = ("import sys; from pathlib import Path; from reconciler.jobs.jobfile import read_job_file; "
            "from reconciler.runtime.serve import serve; serve(read_job_file(Path(sys.argv[1])))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, "-c", code, str(job_path)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    client = Client(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the server did not answer /health in time"
            with contextlib.suppress(OSError):
                if client.call("/health") == (200, {"status": "ok", "model": NAME}):
                    break
            time.sleep(0.2)
        assert client.ok("/v1/models")["data"][0]["id"] == NAME
        served = client.complete(max_tokens=12)
        in_process = load_for_serving(deployment(adapter_ref, tmp_path))
        with running(create_app(*in_process, NAME)) as unmerged:
            assert served["choices"] == unmerged.complete(max_tokens=12)["choices"]
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout.splitlines()[0] == (f"serving {NAME} on http://127.0.0.1:{port} (model: fine-tune ft, "
                                      f"adapter, merged, at {adapter_ref.location} on tiny)")


def test_a_port_that_cannot_be_bound_fails_at_once_saying_so(tmp_path):
    """Before the model loads (which takes minutes for a real one): the model here does not exist,
    so an answer about the model would mean the port was tried too late."""
    missing = ModelVersionRef(fine_tune="ft", location=str(tmp_path / "no-model"), adapter=False,
                              base_model=BaseModelRef(name="tiny", source=f"file://{tmp_path}/no-base"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job_path = tmp_path / "job.json"
        job_path.write_text(deployment(missing, tmp_path, port=port).to_json(), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "reconciler", "run", "serve", "--job", str(job_path)],
                              capture_output=True, text=True, timeout=120,
                              env={**{k: v for k, v in os.environ.items() if k != "TUNEOPS_DEBUG"},
                                   "NO_COLOR": "1"})
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use")
    assert "Traceback" not in done.stderr
