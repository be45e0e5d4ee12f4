"""A GRPO fine-tune's rewards as the callables trl's GRPOTrainer sums: built-in rules, Python
functions from the spec repository, and reward models trained by other FineTunes.

Every reward sees text: the prompt (the user's message) and the completion, with the row's other
columns (a `reference` answer) as keyword arguments. A score that is not a finite number, a list of
the wrong length, or a function that raises fails the job with one line that names the reward
(file and function), the row (dataset and row number of its split) and what was wrong: a reward
that is silently NaN would train on noise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.jobs.jobfile import JobFile, ModelVersionRef
from reconciler.runtime.metrics import normalise_answer
from reconciler.specs.finetune import FineTuneSpec, Reward

# The column each GRPO record carries to say where it came from ("17 of support-prompts's train
# split"), for messages; reward functions do not see it.
ROW_COLUMN = "tuneops_row"
# What trl passes besides the columns, which a reward function written to our contract ignores.
_TRAINER_KEYWORDS = ("trainer_state", "log_extra", "log_metric", "completion_ids", "environments")


class RewardError(PermanentError, ValueError):
    """A reward that cannot score: said in one line with the reward, the row and why."""


@dataclass(frozen=True)
class RewardFunction:
    """One reward, callable as trl calls a reward function; `name` is what its metrics are logged
    under (`rewards/<name>/mean`)."""

    name: str
    described: str  # for messages: "rewards/tone.py:score", "builtin exact_match"
    weight: float
    score: Callable[..., list[float]]
    # A user's function fails with the row it fails on; tuneops' own scorers (a reward model) fail
    # as themselves: an out-of-memory error is not a mistake in a row.
    user_code: bool = True

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        asked = [prompt_text(p) for p in prompts]
        rows = list(columns.pop(ROW_COLUMN, None) or [None] * len(texts))
        token_ids = columns.get("completion_ids")
        user_columns = {k: v for k, v in columns.items() if k not in _TRAINER_KEYWORDS}
        if not self.user_code:
            scored = self.score(asked, texts, token_ids=token_ids, **user_columns)
            return self._checked(scored, len(texts), rows)
        try:
            scores = self.score(asked, texts, token_ids=token_ids, **user_columns)
        except RewardError:
            raise
        except Exception as error:  # the user's code: find the row it fails on
            raise RewardError(self._failing_row(asked, texts, token_ids, user_columns, rows, error)) from None
        return self._checked(scores, len(texts), rows)

    def _checked(self, scores: Any, expected: int, rows: Sequence[str | None]) -> list[float]:
        try:
            if isinstance(scores, str | bytes | dict):
                raise TypeError
            values = list(scores)
        except TypeError:
            raise RewardError(f"{self.described}: returned {type(scores).__name__}, not a list of "
                              f"{expected} scores (one per completion)") from None
        if len(values) != expected:
            raise RewardError(f"{self.described}: returned {len(values)} scores for {expected} completions "
                              f"(rows {_rows(rows)}); return one score per completion")
        checked = []
        for index, value in enumerate(values):
            number = _finite(value)
            if number is None:
                raise RewardError(f"{self.described}: {_row(rows, index)}: score {value!r} is not a finite "
                                  "number")
            checked.append(number)
        return checked

    def _failing_row(self, asked: list[str], texts: list[str], token_ids: Any, columns: dict[str, list],
                     rows: Sequence[str | None], error: Exception) -> str:
        """The batch raised: call the function row by row to name the first row that raises."""
        failing = None
        for index in range(len(texts)):
            one = {key: [value[index]] for key, value in columns.items()
                   if isinstance(value, list) and len(value) == len(texts)}
            ids = [token_ids[index]] if isinstance(token_ids, list) and len(token_ids) == len(texts) else None
            try:
                self.score([asked[index]], [texts[index]], token_ids=ids, **one)
            except Exception as row_error:  # noqa: BLE001 - the user's code, reported
                failing, error = index, row_error
                break
        where = _row(rows, failing) if failing is not None else f"rows {_rows(rows)}"
        detail = str(error).splitlines()[0] if str(error) else ""
        return f"{self.described}: {where}: raised {type(error).__name__}{f': {detail}' if detail else ''}"


def _finite(value: Any) -> float | None:
    """A score as a float (True is 1.0, as trl reads it), or None for what is not a number."""
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _row(rows: Sequence[str | None], index: int) -> str:
    where = rows[index] if index < len(rows) else None
    return f"row {where}" if where else f"completion {index + 1} of the batch"


def _rows(rows: Sequence[str | None]) -> str:
    known = [row for row in rows if row]
    return ", ".join(dict.fromkeys(known)) if known else "of this batch"


def completion_text(completion: Any) -> str:
    """A completion as text: trl hands conversational completions as a list of messages."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def prompt_text(prompt: Any) -> str:
    """What the user asked: the last user message of a conversational prompt."""
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str((users or prompt)[-1].get("content", "")) if prompt else ""
    return str(prompt)


# --- built-in rules ---------------------------------------------------------------------------

def _references(columns: dict[str, Any], count: int, rule: str) -> list[str]:
    """The rows' reference answers. A batch with none at all means the prompt dataset has no
    reference column (or maps it to a column its rows lack): the rule would score nothing, every
    step, and the policy would learn noise, so the job fails instead."""
    found = ["" if value is None else str(value) for value in columns.get("reference") or []][:count]
    if not any(normalise_answer(reference) for reference in found):
        raise RewardError(f"builtin {rule}: the prompt rows of this batch have no reference answer; give the "
                          "prompt dataset one per row (schema.columns.reference names its column), or use "
                          "another reward")
    return found + [""] * (count - len(found))


def builtin(reward: Reward, max_completion_length: int) -> Callable[..., list[float]]:
    rule = reward.builtin
    if rule == "exact_match":
        def score(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
            refs = _references(columns, len(completions), "exact_match")
            return [float(bool(normalise_answer(r)) and normalise_answer(c) == normalise_answer(r))
                    for c, r in zip(completions, refs, strict=True)]
    elif rule == "contains":
        def score(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
            refs = _references(columns, len(completions), "contains")
            return [float(_contains_words(c, r)) for c, r in zip(completions, refs, strict=True)]
    elif rule == "regex":
        pattern = re.compile(reward.pattern or "")

        def score(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
            return [float(pattern.search(c) is not None) for c in completions]
    elif rule == "length_penalty":
        def score(prompts: list[str], completions: list[str], *, token_ids: Any = None,
                  **columns: Any) -> list[float]:
            if isinstance(token_ids, list) and len(token_ids) == len(completions):
                lengths = [len(ids) for ids in token_ids]
            else:  # about four characters a token
                lengths = [math.ceil(len(c) / 4) for c in completions]
            return [-min(1.0, n / max_completion_length) for n in lengths]
    elif rule == "format_json":
        def score(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
            return [float(_parses_as_json(c)) for c in completions]
    else:  # the spec's Literal has no other value
        raise RewardError(f"unknown builtin reward {rule!r}")

    def without_ids(prompts: list[str], completions: list[str], *, token_ids: Any = None,
                    **columns: Any) -> list[float]:
        return score(prompts, completions, **columns)

    return score if rule == "length_penalty" else without_ids


def _contains_words(completion: str, reference: str) -> bool:
    """Whether the reference's words appear together in the completion (normalised as exact_match)."""
    wanted = normalise_answer(reference)
    return bool(wanted) and f" {wanted} " in f" {normalise_answer(completion)} "


def _parses_as_json(text: str) -> bool:
    """Whether the text is a JSON object or array (a bare number or string is not what a prompt
    asking for JSON means)."""
    stripped = text.strip()
    if stripped.startswith("```"):  # a fenced block: what is inside it
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        parsed = json.loads(stripped)
    except ValueError:
        return False
    return isinstance(parsed, dict | list)


# --- Python functions from the repository ------------------------------------------------------

def python_function(location: str, written: str, function: str) -> Callable[..., list[float]]:
    """The function `function` of the reward file at `location` (file://, where this job sees the
    spec repository's file). Importing it runs its top level: an error there fails the job with the
    file and line."""
    path = Path(location.removeprefix("file://"))
    module_name = f"tuneops_reward_{abs(hash(str(path)))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise RewardError(f"{written}: not a Python file the job can import ({path})")
    module = importlib.util.module_from_spec(loader_spec)
    # Registered before it runs, as an import would (dataclasses look their module up there). The
    # file's folder is not put on sys.path: a reward file is self-contained, since only its own
    # bytes are fingerprinted and checked out.
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except FileNotFoundError:
        del sys.modules[module_name]
        raise RewardError(f"{written}: not found where the job reads the spec repository ({path})") from None
    except Exception as error:  # noqa: BLE001 - the user's code, reported
        del sys.modules[module_name]
        line = _user_line(error, path)
        raise RewardError(f"{written}{f':{line}' if line else ''}: importing it raised "
                          f"{type(error).__name__}: {error}") from None
    found = getattr(module, function, None)
    if not callable(found):
        raise RewardError(f"{written}: defines no function {function!r}")

    def score(prompts: list[str], completions: list[str], *, token_ids: Any = None,
              **columns: Any) -> list[float]:
        return found(prompts, completions, **columns)

    return score


def _user_line(error: BaseException, path: Path) -> int | None:
    if isinstance(error, SyntaxError):
        return error.lineno
    trace = error.__traceback__
    line = None
    while trace is not None:
        if Path(trace.tb_frame.f_code.co_filename) == path:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


# --- reward models -----------------------------------------------------------------------------

SCORING_BATCH = 16  # completions a reward model scores per forward pass


def reward_model_scorer(ref: ModelVersionRef, device: Any, max_length: int) -> Callable[..., list[float]]:
    """A reward model's score of each (prompt, completion), rendered with its own chat template as
    it was trained (a user turn and an assistant turn), in batches padded on the right: the head
    reads the last token before the padding, with the pad token it was trained with. A rendering
    longer than `max_length` tokens keeps its end (the completion)."""
    import torch

    from reconciler.runtime import loading

    tokenizer = loading.load_model_tokenizer(ref)
    model = loading.load_reward_model(ref).to(device)
    if model.config.pad_token_id is None:  # an adapter's base config may not say; training set it so
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()

    def score(prompts: list[str], completions: list[str], *, token_ids: Any = None,
              **columns: Any) -> list[float]:
        rendered = []
        for prompt, completion in zip(prompts, completions, strict=True):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            rendered.append(list(ids)[-max_length:])
        scores: list[float] = []
        for start in range(0, len(rendered), SCORING_BATCH):
            batch = rendered[start:start + SCORING_BATCH]
            longest = max(len(ids) for ids in batch)
            pad = model.config.pad_token_id
            inputs = torch.tensor([ids + [pad] * (longest - len(ids)) for ids in batch], device=device)
            mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids in batch], device=device)
            with torch.inference_mode():
                logits = model(input_ids=inputs, attention_mask=mask).logits
            scores.extend(float(value) for value in logits[:, 0])
        return scores

    return score


def _metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def reward_functions(job: JobFile, spec: FineTuneSpec, device: Any = None) -> list[RewardFunction]:
    """The spec's rewards in order, each ready for trl (with its weight beside it)."""
    files = {ref.path: ref.location for ref in job.reward_files or ()}
    models = {ref.fine_tune: ref for ref in job.reward_models or ()}
    made: list[RewardFunction] = []
    scorers: dict[str, Callable[..., list[float]]] = {}  # one copy of each reward model, however often named
    for reward in spec.rewards:
        if reward.builtin is not None:
            label = reward.builtin if reward.builtin != "regex" else f"regex {reward.pattern}"
            made.append(RewardFunction(_metric_name(reward.builtin), f"builtin {label}", reward.weight,
                                       builtin(reward, spec.grpo.max_completion_length)))
        elif reward.python is not None:
            written, function = reward.python_file or "", reward.python_function or ""
            location = files.get(written)
            if location is None:
                raise RewardError(f"{reward.python}: the job file does not say where the reward file is")
            made.append(RewardFunction(_metric_name(f"{Path(written).stem}.{function}"), reward.python,
                                       reward.weight, python_function(location, written, function)))
        elif reward.reward_model is not None:
            name = reward.reward_model.fine_tune
            ref = models.get(name)
            if ref is None:
                raise RewardError(f"rewardModel {name}: the job file names no built version of it")
            if name not in scorers:
                scorers[name] = reward_model_scorer(
                    ref, device, spec.training.max_seq_length + spec.grpo.max_completion_length)
            made.append(RewardFunction(_metric_name(f"model.{name}"), f"reward model {name}", reward.weight,
                                       scorers[name], user_code=False))
    names = [made_function.name for made_function in made]
    for index, function in enumerate(made):  # trl keys its metrics by name: keep them apart
        if names.count(function.name) > 1:
            made[index] = dataclasses.replace(function, name=f"{function.name}.{index}")
    return made


def as_trl_callable(function: RewardFunction) -> Callable[..., list[float]]:
    """A plain function named after the reward: trl logs `rewards/<__name__>/mean`."""
    def call(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        return function(prompts, completions, **columns)

    call.__name__ = function.name
    return call
