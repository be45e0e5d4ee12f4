"""The request printed under a served Deployment: a question its Evaluation asked the version
serving, decoded as it decoded, that survives being pasted into a shell."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import MappingProxyType

from reconciler.specs.base import ResourceId
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.validate import validate_path
from reconciler.state import ActualState, BackendState, BuiltRun, ServerObservation
from reconciler.tracking.sample_request import GREETING, curl, sample_request
from tests.conftest import REPO_ROOT

URL = "http://127.0.0.1:8000"


def deployment() -> DeploymentResource:
    specs = validate_path(REPO_ROOT / "specs-example" / "quickstart").specs
    found = specs.resource(ResourceId("Deployment", "fruit-bot"), DeploymentResource)
    assert found is not None
    return found


def server(version: str = "fruit-sft/2") -> ServerObservation:
    return ServerObservation(name="fruit-bot", fingerprint="f" * 64, model_fingerprint="m" * 64,
                             model_version=version, phase="serving", url=URL, started_at=0.0, message="",
                             handle="pid 1", log=None)


def scored(tmp_path: Path, samples: list[dict], **results: object) -> ActualState:
    """fruit-sft/2 scored by fruit-sft-quality, whose results.json holds `samples`."""
    output = tmp_path / "evaluation"
    output.mkdir()
    document = {"dataset": {"name": "fruit-colors", "split": "test"}, "samples": samples, **results}
    (output / "results.json").write_text(json.dumps(document))
    run = BuiltRun("Evaluation", "fruit-sft-quality", "e" * 64, "run", 0.0, output=str(output),
                   spec={"model": {"fineTune": "fruit-sft"}, "dataset": {"name": "fruit-colors"},
                         "generation": {"maxNewTokens": 8}},
                   model_version="fruit-sft/2")
    return ActualState(built=MappingProxyType({}),
                       history=MappingProxyType({("Evaluation", "fruit-sft-quality"): (run,)}),
                       unfinished=MappingProxyType({}), backend=BackendState(servers=(server(),)))


def sample(question: str, reference: str, answer: str) -> dict:
    return {"prompt": question, "messages": [{"role": "user", "content": question}], "reference": reference,
            "answer": answer, "exactMatch": reference == answer}


def pasted(command: str) -> dict:
    """The JSON body the shell hands curl, from the line as printed."""
    words = shlex.split(command)
    return json.loads(words[words.index("-d") + 1])


def test_the_request_asks_a_question_the_evaluation_got_right_decoded_as_it_decoded(tmp_path: Path) -> None:
    state = scored(tmp_path, [sample("What color is a kiwi?", "brown", "green"),
                              sample("What's the color of a banana?", "yellow", "yellow")],
                   generation={"maxNewTokens": 6, "temperature": 0.0})
    request = sample_request(deployment(), server(), state)
    command = curl(URL, "fruit-bot", request)
    assert command.startswith(f"curl -s {URL}/v1/chat/completions -H 'Content-Type: application/json' -d ")
    assert pasted(command) == {"model": "fruit-bot", "max_tokens": 6, "temperature": 0.0,
                               "messages": [{"role": "user", "content": "What's the color of a banana?"}]}
    assert request.note.splitlines() == [
        "A question from the test split of fruit-colors, decoded as Evaluation fruit-sft-quality decodes;",
        'it expects "yellow", and fruit-sft/2 answered "yellow" there.']


def test_results_from_before_they_kept_messages_and_decoding_still_give_a_question(tmp_path: Path) -> None:
    state = scored(tmp_path, [{"prompt": "What color is a kiwi?", "reference": "brown", "answer": "green"}])
    request = sample_request(deployment(), server(), state)
    assert pasted(curl(URL, "fruit-bot", request)) == {
        "model": "fruit-bot", "max_tokens": 8, "temperature": 0.0,  # from the spec the Evaluation ran
        "messages": [{"role": "user", "content": "What color is a kiwi?"}]}
    assert 'it expects "brown", and fruit-sft/2 answered "green" there.' in request.note


def test_a_version_no_evaluation_on_this_machine_scored_gets_the_greeting(tmp_path: Path) -> None:
    state = scored(tmp_path, [sample("What color is a kiwi?", "brown", "brown")])
    assert sample_request(deployment(), server("fruit-sft/1"), state) == GREETING
    (Path(state.history[("Evaluation", "fruit-sft-quality")][0].output) / "results.json").unlink()
    assert sample_request(deployment(), server(), state) == GREETING
    assert pasted(curl(URL, "fruit-bot", GREETING))["messages"] == [{"role": "user", "content": "Hello!"}]
