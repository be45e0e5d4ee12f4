"""The LLM judge against a scripted OpenAI-compatible server (tests/support/judge_server.py): reply
parsing, the position swap, retries, a refused connection as one line, and the key kept out of
everything the job writes."""

from __future__ import annotations

import json
import socket

import pytest

from reconciler.jobs.jobfile import JobFile, MlflowTarget
from reconciler.plan.gates import evaluate_gates, verdict_of_run
from reconciler.runtime.evaluate import Example
from reconciler.runtime.judge import judge_answers
from reconciler.runtime.judge_client import JudgeClient, JudgeError
from reconciler.runtime.judge_replies import parse_preference, parse_score
from reconciler.specs.evaluation import JUDGE_METRICS, EvaluationSpec
from tests.support.judge_server import ScriptedJudge, always, prefers_longer

KEY = "sk-judge-0123456789abcdef"


@pytest.mark.parametrize("reply, verdict", [
    ("[[A]]", "A"), ("[[B]]", "B"), ("[[tie]]", "tie"), ("[[C]]", "tie"),
    ("Answer A is better.", "A"), ("Verdict: B", "B"), ("B", "B"), ("tie", "tie"),
    ("Reasoning about Answer A and Answer B.\n[[B]]", "B"), ("I prefer Answer B because it is short.", "B"),
    ("The better answer is A.", "A"), ("Both answers are equally good.", "tie"),
    # unreadable or ambiguous: never guessed
    ("", None), ("blah", None), ("[[A]] ... no, wait: [[B]]", None), ("a", None),
    ("Answer A is short. Answer B is long.", None),
])
def test_pairwise_replies_are_read_strictly(reply, verdict):
    assert parse_preference(reply) == verdict


@pytest.mark.parametrize("reply, score", [
    ("Score: 7", 7.0), ("7/10", 7.0), ("[[8]]", 8.0), ("7", 7.0), ("I would give it 6 out of 10.", 6.0),
    ("Good.\nScore: 9", 9.0), ("Rating: 11", None), ("Score: 0", None), ("great answer", None),
    ("Score: 7\nScore: 8", None), ("", None),
])
def test_score_replies_are_read_strictly(reply, score):
    assert parse_score(reply) == score


def _job(**fields: object) -> JobFile:
    return JobFile(kind="Evaluation", name="quality", fingerprint="0" * 64, spec={},
                   storage_root="/tmp/none", mlflow=MlflowTarget(tracking_uri="http://127.0.0.1:1"),
                   **fields)


def _spec(url: str, mode: str = "score", key_variable: str | None = None) -> EvaluationSpec:
    endpoint = {"url": url, **({"apiKeySecret": key_variable} if key_variable else {})}
    return EvaluationSpec.model_validate({
        "model": {"fineTune": "sft"}, "dataset": {"name": "chats"},
        "judge": {"endpoint": endpoint, "rubric": "Prefer complete answers.", "mode": mode},
    })


EXAMPLES = [Example([{"role": "user", "content": f"What color is fruit {i}?"}], "red") for i in range(6)]


def test_the_position_swap_cancels_a_judge_that_always_prefers_the_first_answer():
    with ScriptedJudge(always("[[A]]")) as judge:
        judged = judge_answers(_job(), _spec(judge.url, "pairwise"), EXAMPLES, ["long answer"] * 6,
                               {"serving": ["x"] * 6, "baseline": None})
        assert len(judge.chat_requests) == 12  # each row twice, the candidate first as A then as B
    assert judged.metrics["judge/win_rate"] == 0.5
    assert judged.metrics["judge/ties"] == 6 and judged.metrics["judge/unparsed"] == 0
    assert judged.document["champion"] == "serving"
    assert judged.rows[0] == {"outcome": "tie", "candidateFirst": "A", "candidateSecond": "A"}


def test_a_win_in_both_orders_is_a_win_with_its_interval():
    answers = ["a much longer answer"] * 4 + ["no"] * 2  # four rows longer than the champion's
    with ScriptedJudge(prefers_longer) as judge:
        judged = judge_answers(_job(), _spec(judge.url, "pairwise"), EXAMPLES, answers,
                               {"serving": None, "baseline": ["medium answer"] * 6})
    assert set(judged.metrics) == {f"judge/{name}" for name in JUDGE_METRICS["pairwise"]}  # as validated
    assert judged.metrics["judge/wins"] == 4 and judged.metrics["judge/losses"] == 2
    assert judged.metrics["judge/win_rate"] == pytest.approx(4 / 6)
    assert 0 <= judged.metrics["judge/win_rate_low"] < 4 / 6 < judged.metrics["judge/win_rate_high"] <= 1
    assert judged.document["champion"] == "baseline" and judged.document["model"] == "scripted-judge"
    verdict = evaluate_gates(judged.metrics, _gated("judge/win_rate", min=0.5).gates)
    assert verdict.passed and verdict.summary() == "passed (1 gate)"


def _gated(metric: str, **bounds: float) -> EvaluationSpec:
    return EvaluationSpec.model_validate({
        "model": {"fineTune": "sft"}, "dataset": {"name": "chats"}, "gates": [{"metric": metric, **bounds}],
    })


def test_unreadable_pairwise_replies_are_ties_counted_and_quoted():
    def undecided_when_mine_comes_second(system: str, user: str) -> str:
        return "[[A]]" if "[Answer A]\nmine" in user else "I cannot decide"

    with ScriptedJudge(undecided_when_mine_comes_second) as judge:
        judged = judge_answers(_job(), _spec(judge.url, "pairwise"), EXAMPLES[:1], ["mine"],
                               {"serving": ["theirs"]})
    assert judged.metrics["judge/unparsed"] == 1 and judged.metrics["judge/win_rate"] == 0.5
    assert judged.rows[0] == {"outcome": "tie", "candidateFirst": "A", "candidateSecond": None}
    assert judged.document["unparsedSamples"][0]["reply"] == "I cannot decide"


def test_unreadable_scores_are_left_out_of_the_mean_and_counted():
    grades = {"a0": "Score: 8", "a1": "Score: 6", "a2": "no idea", "a3": "Score: 10", "a4": "7/10",
              "a5": "Rating: 99"}
    def grade(system: str, user: str) -> str:
        return next(reply for answer, reply in grades.items() if f"\n{answer}\n" in user)

    with ScriptedJudge(grade) as judge:
        judged = judge_answers(_job(), _spec(judge.url), EXAMPLES, list(grades), {})
    metrics = judged.metrics
    assert set(metrics) == {f"judge/{name}" for name in JUDGE_METRICS["score"]}  # as validated
    assert metrics["judge/unparsed"] == 2 and metrics["judge/rows"] == 4
    assert metrics["judge/score"] == pytest.approx((8 + 6 + 10 + 7) / 4)
    assert [row["score"] for row in judged.rows] == [8.0, 6.0, None, 10.0, 7.0, None]
    assert judged.document["unparsedSamples"] == [{"row": 2, "reply": "no idea"},
                                                  {"row": 5, "reply": "Rating: 99"}]


def test_no_readable_score_fails_its_gate_as_not_computed():
    with ScriptedJudge(always("I refuse to grade this.")) as judge:
        judged = judge_answers(_job(), _spec(judge.url), EXAMPLES[:2], ["a", "b"], {})
    assert "judge/score" not in judged.metrics and judged.metrics["judge/unparsed"] == 2
    verdict = evaluate_gates(judged.metrics, _gated("judge/score", min=5).gates)
    assert not verdict.passed and verdict.summary() == "failed: gate judge/score: not computed"


def test_a_pairwise_judge_without_a_champion_is_skipped_and_its_gates_pass_saying_so():
    judged = judge_answers(_job(), _spec("http://127.0.0.1:9/v1", "pairwise"), EXAMPLES, ["a"] * 6,
                           {"serving": None, "baseline": None})
    assert judged.metrics == {"judge/skipped": 1.0} and "no champion" in judged.document["skipped"]
    gates = _gated("judge/win_rate", min=0.5).gates
    for verdict in (evaluate_gates(judged.metrics, gates), verdict_of_run(judged.metrics, gates, None)):
        assert verdict.passed
        assert "gate judge/win_rate: not judged, no champion to compare with" in verdict.summary()


def test_the_key_travels_as_a_bearer_token_from_the_named_variable_only(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    with ScriptedJudge(always("Score: 9"), api_key=KEY) as judge:
        judged = judge_answers(_job(), _spec(judge.url, key_variable="JUDGE_API_KEY"), EXAMPLES[:2],
                               ["a", "b"], {})
        assert {r["headers"]["Authorization"] for r in judge.requests} == {f"Bearer {KEY}"}
        assert all(r["body"]["temperature"] == 0 for r in judge.chat_requests)
    assert judged.metrics["judge/score"] == 9
    assert KEY not in json.dumps(judged.document) + json.dumps(judged.rows)


def test_a_missing_or_wrong_key_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.delenv("JUDGE_API_KEY", raising=False)
    with pytest.raises(JudgeError, match=r"^the judge's API key is missing: environment variable "
                                              r"JUDGE_API_KEY \(judge.endpoint.apiKeySecret\) is not set"):
        judge_answers(_job(), _spec("http://127.0.0.1:9/v1", key_variable="JUDGE_API_KEY"), EXAMPLES,
                      ["a"] * 6, {})
    monkeypatch.setenv("JUDGE_API_KEY", "sk-wrong-key-123456")
    with ScriptedJudge(api_key=KEY) as judge, pytest.raises(JudgeError) as raised:
        judge_answers(_job(), _spec(judge.url, key_variable="JUDGE_API_KEY"), EXAMPLES, ["a"] * 6, {})
    message = str(raised.value)
    assert message == (f"the judge at {judge.url} refused the request (HTTP 401: Incorrect API key "
                       "provided): check the key judge.endpoint.apiKeySecret names")
    assert "sk-wrong" not in message


def _refusing_url() -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://user:s3cret-password@127.0.0.1:{port}/v1"


def test_a_refused_connection_is_retried_then_one_line_naming_the_url_without_credentials():
    waits: list[float] = []
    client = JudgeClient(_refusing_url(), attempts=3, backoff_s=0.5, sleep=waits.append)
    with pytest.raises(JudgeError) as raised:
        client.complete("m", [{"role": "user", "content": "hi"}], 8)
    message = str(raised.value)
    assert "\n" not in message and "s3cret" not in message and "user@" not in message
    assert message.startswith("the judge at http://127.0.0.1:") and "after 3 attempts" in message
    assert "refused" in message.lower()
    assert len(waits) == 2 and waits[0] == 0.5 and 1.0 <= waits[1] <= 1.1  # backoff doubles, jittered


def test_a_refused_connection_in_a_job_is_an_evaluation_error_not_a_traceback():
    with pytest.raises(JudgeError, match=r"^the judge at http://127\.0\.0\.1:\d+/v1 cannot be reached"):
        spec = _spec(_refusing_url().replace("user:s3cret-password@", ""))
        judge_answers(_job(), spec, EXAMPLES[:1], ["a"], {},
                      client=JudgeClient(spec.judge.endpoint.url or "", attempts=2, sleep=lambda s: None))


def test_server_errors_are_retried_honouring_retry_after():
    waits: list[float] = []
    failures = [(500, {}), (429, {"Retry-After": "3"}), (503, {})]
    with ScriptedJudge(always("Score: 4"), failures=failures) as judge:
        client = JudgeClient(judge.url, backoff_s=0.25, sleep=waits.append)
        assert client.complete("m", [{"role": "user", "content": "hi"}], 8) == "Score: 4"
        assert len(judge.chat_requests) == 4
    assert waits[0] == 0.25 and waits[1] == 3.0 and 1.0 <= waits[2] <= 1.25  # doubled twice, jittered
    assert client.retries_made == 3


def test_retries_are_bounded_and_a_prompt_over_the_context_is_named():
    with ScriptedJudge(failures=[(500, {})] * 5) as judge:
        client = JudgeClient(judge.url, attempts=3, sleep=lambda s: None)
        with pytest.raises(JudgeError, match=r"refused the request \(HTTP 500: scripted failure 500\) "
                                             r"after 3 attempts$"):
            client.complete("m", [], 8)
    with ScriptedJudge(failures=[(400, {})]) as judge:
        client = JudgeClient(judge.url, sleep=lambda s: None)
        with pytest.raises(JudgeError, match=r"HTTP 400: scripted failure 400\)$"):
            client.complete("m", [], 8)
        assert len(judge.chat_requests) == 1  # a 400 is not retried


def test_a_prompt_the_endpoint_finds_too_long_is_one_line_saying_so():
    too_long = "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens."
    with ScriptedJudge(failures=[(400, {}, too_long)]) as judge, pytest.raises(JudgeError) as raised:
        judge_answers(_job(), _spec(judge.url), EXAMPLES[:1], ["a"], {})
    assert str(raised.value) == (f"the judge at {judge.url} refused the request (HTTP 400: {too_long}): "
                                 "the prompt is over the judge's context (shorten the rubric or "
                                 "generation.maxNewTokens)")


def test_an_endpoint_that_answers_without_end_is_refused_not_read_into_memory() -> None:
    """A hostile or broken peer: 5 MiB of a never-closing JSON string is cut at the 4 MiB bound."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Endless(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"choices": "' + b"x" * (5 * 1024 * 1024))

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = JudgeClient(f"http://127.0.0.1:{server.server_address[1]}/v1", attempts=1)
        with pytest.raises(JudgeError, match="answered more than 4 MiB"):
            client.complete("judge", [{"role": "user", "content": "hi"}], 8)
    finally:
        server.shutdown()
        server.server_close()
