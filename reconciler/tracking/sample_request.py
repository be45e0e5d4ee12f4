"""The request `tuneops apply` prints under each served Deployment, to paste into a shell.

A greeting shows nothing of what was trained (the quickstart's model answers "Hello!" with a
colour), so the request asks a question the Deployment's Evaluation asked the version now
serving, from the split it scored, decoded as it decoded: pasted, it gets the answer the
evaluation got. It comes from that Evaluation's results.json, which the local backend keeps
on this machine; without one (on Kubernetes, say) the greeting is all there is.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import EvaluationSpec
from reconciler.state import ActualState, ServerObservation


@dataclass(frozen=True)
class SampleRequest:
    messages: tuple[Mapping[str, str], ...]
    max_tokens: int
    temperature: float | None  # None: the server's default
    note: str = ""  # where the question comes from and what it expects, one or two lines

    def body(self, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in self.messages],
                                "max_tokens": self.max_tokens}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body


GREETING = SampleRequest(({"role": "user", "content": "Hello!"},), max_tokens=32, temperature=None)


def sample_request(deployment: DeploymentResource, server: ServerObservation,
                   state: ActualState) -> SampleRequest:
    """A question one of the Deployment's required Evaluations asked the version serving (one it
    answered right, when there is one), or the greeting."""
    for evaluation in deployment.spec.requires:
        run = state.evaluation_of(evaluation, server.model_version) if server.model_version else None
        results = _results(run.output) if run is not None and run.output else None
        if results is None:
            continue
        samples = [s for s in results.get("samples") or () if isinstance(s, dict) and s.get("prompt")]
        if not samples:
            continue
        sample = next((s for s in samples if s.get("exactMatch")), samples[0])
        decoding = results.get("generation") or _decoding(run.spec if run is not None else None)
        dataset = results.get("dataset") or {}
        expects = (f'it expects "{sample.get("reference")}", and {server.model_version} answered '
                   f'"{sample.get("answer")}" there')
        split, name = dataset.get("split", "test"), dataset.get("name", "its dataset")
        note = (f"A question from the {split} split of {name}, decoded as Evaluation {evaluation} "
                f"decodes;\n{expects}.")
        asked = sample.get("messages") or [{"role": "user", "content": sample["prompt"]}]
        messages = tuple({"role": m.get("role"), "content": m.get("content")} for m in asked)
        return SampleRequest(messages, max_tokens=int(decoding.get("maxNewTokens", 128)),
                             temperature=float(decoding.get("temperature", 0.0)), note=note)
    return GREETING


def curl(url: str, model: str, request: SampleRequest) -> str:
    """The request as a shell command: the body is quoted for the shell, whatever the question holds."""
    body = json.dumps(request.body(model), ensure_ascii=False)
    return (f"curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)}")


def _results(output: str) -> dict[str, Any] | None:
    try:
        results = json.loads((Path(output) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def _decoding(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """An Evaluation's decoding from the spec it ran with (results from before they recorded it)."""
    try:
        generation = EvaluationSpec.model_validate(dict(spec or {})).generation
    except ValueError:
        return {}
    return {"maxNewTokens": generation.max_new_tokens, "temperature": generation.temperature}


def endpoint_lines(specs: Any, state: ActualState | None) -> list[str]:
    """Where each Deployment of `specs` (a SpecSet) answers, with a request the reader can paste
    that shows what was trained: a question its Evaluation asked, decoded as it decoded."""
    from reconciler.specs.base import ResourceId

    lines: list[str] = []
    for server in state.backend.servers if state is not None else ():
        deployment = specs.resource(ResourceId("Deployment", server.name), DeploymentResource)
        if server.phase != "serving" or deployment is None or server.url is None:
            continue
        request = sample_request(deployment, server, state)
        lines.append(f"{server.name}: serving {server.model_version} at {server.url}")
        lines += [f"  # {line}" for line in request.note.splitlines()]
        lines.append(f"  {curl(server.url, server.name, request)}")
    return lines
