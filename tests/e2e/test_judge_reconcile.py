"""A Deployment gated by an LLM judge, through `tuneops apply`: the quickstart's Evaluation grades
its answers with a judge (a scripted OpenAI-compatible server standing in for the hosted LLM) and
`judge/score` decides whether the version is served. The key travels in the environment only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.judge_server import ScriptedJudge, always
from tests.support.reconcile_support import SpecRepo, chat

KEY = "sk-judge-planted-0a1b2c3d4e5f"
GATES = """\
  gates:
    - metric: exact_match
      min: 0.5
    # A new version must not be measurably worse than the one fruit-bot serves now: both are
    # scored on the same rows and compared with a paired interval (skipped while nothing serves).
    # `tuneops plan` warns that 36 test rows cannot see a difference this small; on real data,
    # score a few hundred rows (docs/evaluation.md).
    - metric: exact_match
      notWorseThan: serving
      margin: 0.1
"""


@pytest.fixture
def judged_repo(tmp_path: Path, mlflow_server):
    judge = ScriptedJudge(always("Too vague.\nScore: 3"), api_key=KEY)
    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    repo.edit("evaluation.yaml", GATES, f"""\
  judge:
    endpoint:
      url: {judge.url}
      apiKeySecret: JUDGE_API_KEY
    rubric: Name the fruit's usual color, in one word.
  gates:
    - metric: judge/score
      min: 5
""")
    repo.commit("gate on the judge")
    yield repo, judge
    repo.stop_servers()
    judge.close()


@pytest.mark.slow
def test_the_judges_score_decides_whether_a_version_is_served(judged_repo) -> None:
    repo, judge = judged_repo
    assert repo.tuneops("validate", ".").exit_code == 0
    env = {"JUDGE_API_KEY": KEY}
    applied = repo.tuneops("apply", ".", "--yes", env=env)
    assert applied.exit_code == 0, applied.output
    assert "Deployment/fruit-bot: blocked" in applied.stdout
    assert f"{repo.model}/1 did not pass fruit-sft-quality: gate judge/score 3 < 5" in applied.stdout
    assert judge.chat_requests
    assert {r["headers"]["Authorization"] for r in judge.requests} == {f"Bearer {KEY}"}
    deployment = next(a for a in repo.plan()["actions"] if a["name"] == "fruit-bot")
    assert deployment["action"] == "blocked" and "gate judge/score 3 < 5" in deployment["reason"]

    # The judge now likes the answers; a rubric edit re-runs the Evaluation, not the fine-tune.
    judge.reply = always("Correct and short.\nScore: 8")
    repo.edit("evaluation.yaml", "in one word.", "in one or two words.")
    repo.commit("a kinder rubric")
    plan = repo.plan()["by_resource"]
    assert plan["FineTune/fruit-sft"] == "noop" and plan["Evaluation/fruit-sft-quality"] == "rebuild"
    applied = repo.tuneops("apply", ".", "--yes", env=env)
    assert applied.exit_code == 0, applied.output
    assert "Deployment/fruit-bot: done" in applied.stdout
    url = applied.stdout.split(f"serving {repo.model}/1 at ")[1].split()[0]
    assert chat(url, "What color is a banana?")["model"] == "fruit-bot"

    # The key is in no file tuneops wrote (job files, logs, results) and in nothing it printed.
    written = [path for path in (repo.root / ".tuneops").rglob("*") if path.is_file()]
    assert written and not [path for path in written if KEY.encode() in path.read_bytes()]
    logs = repo.tuneops("logs", "Evaluation/fruit-sft-quality", ".", env=env)
    assert KEY not in applied.output + logs.output
