"""The built-in OpenAI-compatible server for Deployments on the local backend.

On Kubernetes vLLM serves the same routes (/health, /v1/models, /v1/completions,
/v1/chat/completions), so clients written against one work against the other: request and
response shapes, and error bodies, are OpenAI's, and a field a request leaves out takes the
model's generation_config.json value as vLLM's does (the fine-tune writes its Evaluation's
decoding there, so a plain request decodes as the gate measured). Streaming is not supported
here. Requests are generated one at a time on one lock: a local server is for trying a model,
not for throughput. fastapi, uvicorn and torch are imported inside functions so that importing
this module stays cheap.
"""

import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.errors import TuneopsError
from reconciler.jobs.jobfile import BaseModelRef, JobFile, ModelVersionRef
from reconciler.runtime.chat_templates import END_OF_TURN_TOKENS

if TYPE_CHECKING:  # quoted below: this module does not postpone annotations (FastAPI reads them)
    from types import FrameType

    from fastapi import FastAPI, Request

# The generation_config.json fields a request falls back to, as in vLLM (`--generation-config auto`).
DEFAULTED_FIELDS = ("temperature", "top_p", "top_k", "max_new_tokens")
# Integer fields are bounded where the model's code would overflow (torch takes a 64-bit seed,
# a token count is a 32-bit int), so that a value out of range is a 400 that names the field, not
# a 500 from inside generation. The seed takes vLLM's range, a signed 64-bit integer.
SEED_RANGE = (-(2**63), 2**63 - 1)
MAX_COUNT = 2**31 - 1


class _Request(BaseModel):
    # OpenAI clients send fields this server ignores (user, logit_bias...): accept them, as vLLM does.
    model_config = ConfigDict(extra="allow")

    # null is accepted wherever a default is: some clients send every field.
    model: str | None = Field(None, description="Defaults to the served model.")
    temperature: float | None = Field(None, ge=0, le=2, description="When unset: the model's "
                                      "generation_config.json, else 1.0. 0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, le=MAX_COUNT, description="vLLM's extension; 0 or -1: no limit.")
    stop: str | list[str] | None = None
    n: int | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool | None = None

    def sampling(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """Each field left out takes the model's default, then OpenAI's."""
        def chosen(value: Any, key: str, fallback: Any) -> Any:
            return value if value is not None else defaults.get(key, fallback)

        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return {"temperature": chosen(self.temperature, "temperature", 1.0),
                "top_p": chosen(self.top_p, "top_p", 1.0), "top_k": max(chosen(self.top_k, "top_k", 0), 0),
                "seed": self.seed, "stop": [text for text in stop if text]}


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1, le=MAX_COUNT, description="When unset: the model's "
                                                                         "max_new_tokens, else 16.")

    @field_validator("prompt")
    @classmethod
    def _prompts_have_text(cls, prompt: str | list[str]) -> str | list[str]:
        """An empty prompt leaves the model nothing to continue (vLLM refuses it too)."""
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not prompts:
            raise ValueError("must not be empty")
        empty = [index for index, text in enumerate(prompts) if not text]
        if empty:
            where = "" if isinstance(prompt, str) else f" (prompt {empty[0]} is \"\")"
            raise ValueError(f"must not be an empty string{where}")
        return prompt


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)


class ServeError(TuneopsError, RuntimeError):
    """A server that cannot start for a reason the user can fix: its port is taken."""


class APIError(Exception):
    """An error answered with OpenAI's body: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


class Generator:
    """Greedy or sampled decoding on a causal LM, one request at a time."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer
        self.lock = threading.Lock()
        vocabulary = tokenizer.get_vocab()
        stop_ids = {tokenizer.eos_token_id} | {vocabulary[t] for t in END_OF_TURN_TOKENS if t in vocabulary}
        self.stop_ids = sorted(token for token in stop_ids if token is not None)
        self.context = getattr(model.config, "max_position_embeddings", None)

    def encode(self, text: str, *, chat: bool) -> list[int]:
        # A chat template writes its own bos token when the model wants one. Under the lock: a fast
        # tokenizer used from two threads at once can fail with "Already borrowed".
        with self.lock:
            return self.tokenizer(text, add_special_tokens=not chat)["input_ids"]

    def generate(self, prompt_ids: list[int], *, max_tokens: int | None, temperature: float, top_p: float,
                 top_k: int, stop: list[str], seed: int | None) -> tuple[str, int, str]:
        """(text, completion tokens, finish reason) for one prompt."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        room = self.context - len(prompt_ids) if self.context else None
        if room is not None and room < (max_tokens or 1):
            raise APIError(400, f"This model's maximum context length is {self.context} tokens; the "
                           f"prompt has {len(prompt_ids)} and {max_tokens or 1} more were requested.",
                           param="max_tokens", code="context_length_exceeded")
        limit = max_tokens or room or 256
        tokenizer, start = self.tokenizer, len(prompt_ids)

        class StopStrings(StoppingCriteria):
            def __call__(self, input_ids: "torch.LongTensor", scores: "torch.FloatTensor",
                         **kwargs: object) -> "torch.BoolTensor":
                text = tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
                hit = any(s in text for s in stop)
                return torch.full((input_ids.shape[0],), hit, dtype=torch.bool, device=input_ids.device)

        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k} \
            if temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([prompt_ids], device=device)
        with self.lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)  # the global generator: safe only because of the lock
            output = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=limit,
                eos_token_id=self.stop_ids, pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([StopStrings()] if stop else []), **sampling)
            generated = output[0, start:].tolist()
            ended = bool(generated) and generated[-1] in self.stop_ids
            text = tokenizer.decode(generated[:-1] if ended else generated, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            return text[:cut], len(generated), "stop"
        return text, len(generated), "stop" if ended else "length"


def create_app(model: Any, tokenizer: Any, served_name: str, *, version: str | None = None,
               token: str | None = None) -> "FastAPI":
    """The routes, on an already loaded model: /health answers only once there is one, with the
    model version and the start's token, so whoever checks it knows which process answered."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    model.eval()
    generator = Generator(model, tokenizer)
    defaults = generation_defaults(model)
    created = int(time.time())
    app = FastAPI(title=f"tuneops: {served_name}", docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    def _api_error(request: "Request", error: APIError) -> "JSONResponse":
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: "Request", error: RequestValidationError) -> "JSONResponse":
        # FastAPI answers 422 with its own shape; OpenAI clients expect 400 and an error object.
        first = error.errors()[0]
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        message = f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid value')}"
        return JSONResponse(APIError(400, message, param=".".join(where) or None).body(), status_code=400)

    @app.exception_handler(HTTPException)
    def _http_error(request: "Request", error: HTTPException) -> "JSONResponse":
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return JSONResponse(APIError(error.status_code, str(error.detail), kind=kind).body(),
                            status_code=error.status_code, headers=getattr(error, "headers", None))

    def check(request: _Request) -> None:
        if request.model is not None and request.model != served_name:
            raise APIError(404, f"The model `{request.model}` does not exist; this server serves "
                           f"`{served_name}`.", param="model", code="model_not_found")
        if request.stream:
            raise APIError(400, "Streaming is not supported by the built-in server (stream must be "
                           "false); the vLLM runtime supports it.", param="stream")
        if request.n not in (None, 1):
            raise APIError(400, "Only n=1 is supported by the built-in server.", param="n")

    def usage(prompt: int, completion: int) -> dict[str, int]:
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    identity = {key: value for key, value in (("version", version), ("token", token)) if value}

    @app.get("/health")
    def health():  # noqa: ANN202 - FastAPI would take a return type for the response model
        return {"status": "ok", "model": served_name, **identity}

    @app.get("/v1/models")
    def models():  # noqa: ANN202 - as above
        return {"object": "list", "data": [{"id": served_name, "object": "model", "created": created,
                                            "owned_by": "tuneops"}]}

    @app.post("/v1/completions")
    def completions(request: CompletionRequest):  # noqa: ANN202 - as above
        check(request)
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, prompt in enumerate(prompts):
            ids = generator.encode(prompt, chat=False)
            limit = request.max_tokens or defaults.get("max_new_tokens") or 16
            text, count, reason = generator.generate(ids, max_tokens=limit, **request.sampling(defaults))
            choices.append({"index": index, "text": text, "finish_reason": reason, "logprobs": None})
            prompt_tokens, completion_tokens = prompt_tokens + len(ids), completion_tokens + count
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": served_name, "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatCompletionRequest):  # noqa: ANN202 - as above
        check(request)
        messages = [{"role": m.role, "content": _text_content(m, i)} for i, m in enumerate(request.messages)]
        try:
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as error:  # jinja's TemplateError, or a template that raises on a bad role
            raise APIError(400, f"the chat template rejected the messages: {error}",
                           param="messages") from None
        ids = generator.encode(prompt, chat=True)
        limit = request.max_completion_tokens or request.max_tokens or defaults.get("max_new_tokens")
        text, count, reason = generator.generate(ids, max_tokens=limit, **request.sampling(defaults))
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": served_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": reason, "logprobs": None}],
                "usage": usage(len(ids), count)}

    return app


def _text_content(message: ChatMessage, index: int) -> str:
    """A message's text: a string, or OpenAI's list of {"type": "text"} parts joined."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, "only text content parts are supported by the built-in server",
                           param=f"messages.{index}.content")
        parts.append(part["text"])
    return "".join(parts)


def generation_defaults(model: Any) -> dict[str, Any]:
    """The decoding fields the model's generation config sets (only those it sets, as vLLM
    reads them): what a request that leaves them out gets."""
    config = getattr(model, "generation_config", None)
    written = config.to_diff_dict() if config is not None else {}
    return {key: written[key] for key in DEFAULTED_FIELDS if isinstance(written.get(key), int | float)}


def describe(ref: Any, *, merged: bool = False) -> str:
    """What is served, for the one line a user sees when the server starts."""
    if isinstance(ref, BaseModelRef):
        return f"base model {ref.name} from {ref.source}"
    what = ("adapter, merged," if merged else "adapter") if ref.adapter else "full weights"
    version = f" version {ref.version}" if ref.version else ""
    return f"fine-tune {ref.fine_tune}{version}, {what} at {ref.location} on {ref.base_model.name}"


def load_for_serving(job: JobFile) -> tuple[Any, Any]:
    """The Deployment's model (adapter merged in when the spec says mergeAdapter) and tokenizer."""
    import torch

    from reconciler.runtime.loading import ModelLoadError, load_model, load_model_tokenizer

    if job.model is None:
        raise ModelLoadError(f"deployment '{job.name}': the job file names no model to serve")
    model = load_model(job.model)
    tokenizer = load_model_tokenizer(job.model)
    if job.spec.get("mergeAdapter") and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # plain weights: no adapter overhead per token
    if isinstance(job.model, ModelVersionRef) and job.model.adapter:
        _use_adapter_generation_config(model, Path(job.model.location))
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a port another program holds fails the
    start in a moment, with the reason, not after minutes of loading. It listens only once the
    model is loaded, so until then a health check is refused rather than left waiting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = (error.strerror or str(error)).lower()
        raise ServeError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def served_version(ref: Any) -> str | None:
    """"registered-model/version", as the backend records it, or None for an unregistered model."""
    if isinstance(ref, ModelVersionRef) and ref.registered_model and ref.version:
        return f"{ref.registered_model}/{ref.version}"
    return None


def _use_adapter_generation_config(model: Any, folder: Path) -> None:
    """An adapter's own generation_config.json, where the fine-tune wrote one, over the base
    model's (full weights load theirs with the model)."""
    if not (folder / "generation_config.json").is_file():
        return
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise ServeError(f"{folder / 'generation_config.json'}: {error}") from None
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    target.generation_config = config


def serve(job: JobFile) -> None:
    """Load the Deployment's model and serve it; return once SIGTERM or SIGINT has shut it down.

    uvicorn re-raises the signal after its graceful shutdown, which would end the process as
    killed; a server stopped on request has not failed, so the handlers that see that re-raise
    only ask the server to stop (and cover the moment before uvicorn installs its own). The
    shutdown is graceful: requests in progress are answered before the process exits.
    """
    import signal

    import uvicorn

    sock = listening_socket(job.serve.host, job.serve.port)
    model, tokenizer = load_for_serving(job)
    app = create_app(model, tokenizer, job.name, version=served_version(job.model), token=job.serve.token)
    server = uvicorn.Server(uvicorn.Config(app, host=job.serve.host, port=job.serve.port,
                                           log_level="warning"))
    print(f"serving {job.name} on http://{job.serve.host}:{job.serve.port} "
          f"(model: {describe(job.model, merged=bool(job.spec.get('mergeAdapter')))})", flush=True)
    on_main = threading.current_thread() is threading.main_thread()  # signals are only set there

    def stop(signum: int, frame: "FrameType | None") -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if on_main else {}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
