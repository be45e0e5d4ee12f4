"""Training throughput of `tuneops run finetune` with packing, against a plain transformers Trainer.

Both sides train the same tiny Llama model (built here) with the same LoRA adapter and
hyperparameters, for one epoch over the same rows of a generated instruction dataset whose rows
vary widely in length. Each side is a whole process; the order of the two alternates from round
to round. Both train on the CPU with `--threads` torch threads each (default 1: on a small shared
machine, two threads that spin-wait for each other make timings erratic):

- the runtime: `tuneops run dataset` once, then `tuneops run finetune` with
  `training.packing: true` (trl's SFTTrainer: best-fit-decreasing packing, padding-free batches);
- the baseline: this file run with `--child baseline`. It is a plain `transformers.Trainer`
  whose collator (`DataCollatorForSeq2Seq`) pads every micro batch to its longest sequence.

Tokens per second means real (non-padding) training tokens divided by the Trainer's own
`train_runtime`: the training loop, from the first batch to the end-of-epoch checkpoint. The
runtime's figures come from its MLflow run (trl's `num_tokens`, and `train_runtime`). The
baseline's collator counts the ones in its attention masks. Peak memory is each process's
maximum resident set size, from `os.wait4`.

Before timing anything, `--child check` builds the runtime's SFTTrainer (through
`reconciler.runtime.finetune`). On a real packed batch it checks that no example attends to
another: each example's log-probabilities are the same packed and alone. If they are not, the
script exits non-zero. It never asserts on time.

    python benchmarks/train_throughput.py                    # the defaults (see --help), 3 rounds
    python benchmarks/train_throughput.py --repeat 1 --rows 300
    python benchmarks/train_throughput.py --with-unpacked    # also the runtime with packing off
    python benchmarks/train_throughput.py --dataloader-workers 2   # also with training.dataloaderWorkers 2
    python benchmarks/train_throughput.py --markdown         # the table for docs/benchmarks.md

Needs the project's [train] extra (torch, transformers, peft, trl, datasets, mlflow). Works
offline: the data, the model and its tokenizer, MLflow's SQLite store and every output are
written to benchmarks/.work/train-throughput/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import git_commit, print_table  # benchmarks/common.py, beside this script

HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = HERE / ".work" / "train-throughput"  # git-ignored

# The target: the runtime's tokens per second at least this multiple of the baseline's,
# with equal or lower peak memory.
TARGET_RATIO = 1.3

# Shared by both sides. The runtime gets them as a FineTune spec. The baseline gets them as the
# TrainingArguments and LoraConfig that the runtime resolves that spec to.
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
TRAINING = {"epochs": 1, "learning_rate": 2e-4, "scheduler": "cosine", "warmup_ratio": 0.03,
            "weight_decay": 0.0, "max_grad_norm": 1.0, "optimizer": "adamw_torch", "seed": 42}
MAX_SEQ_LENGTH = 512
LENGTHS = ("log-uniform", "uniform")


def model_shape(hidden: int, layers: int) -> dict[str, int]:
    """Llama proportions: heads of 32 dimensions, two query heads per key/value head, and an MLP
    3x as wide as the model."""
    return {"vocab_size": 1024, "hidden_size": hidden, "layers": layers, "heads": hidden // 32,
            "kv_heads": max(1, hidden // 64), "intermediate_size": 3 * hidden,
            "max_positions": MAX_SEQ_LENGTH}


# A small closed vocabulary: the tokenizer learns every word, so a word is about one token.
_VOCABULARY = """
account address after again answer apply battery before button cable camera change charge check
clean close code colour connect contact cover customer data default delete device display door
download email error factory file filter first firmware fix green hold home install issue key
label light limit list login manual menu message mode model network new night offline order
outdoor password phone plan plug port power press printer problem profile reboot receipt red
refund remote replace reset restart return room router schedule screen send sensor server
service setting signal slow smart sound speaker start status step storage switch system team
thermostat time timer update user volume wall warranty week wifi window wire wireless yellow
zone quickly slowly always never often please then also only still here there when while
"""
WORDS = _VOCABULARY.split()


# --------------------------------------------------------------------------- generation

def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def data_rows(n: int, lengths: str = "log-uniform", seed: int = 0) -> list[dict[str, str]]:
    """`n` instruction rows of 5..200 words each (about as many tokens).

    10-40% of a row's words are the instruction (and, in 30% of rows, an input); the rest are the
    answer. `log-uniform` sizes are skewed the way real instruction data is: there are as many
    rows of 5-10 words as of 100-200, and the median row is about 32 words. `uniform` sizes are
    spread evenly, with a median of about 100 words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if lengths == "uniform":
            total = rng.randint(5, 200)
        else:
            total = round(math.exp(rng.uniform(math.log(5), math.log(200))))
        asked = max(2, round(total * rng.uniform(0.1, 0.4)))
        context = asked // 2 if rng.random() < 0.3 else 0
        answer = max(1, total - asked)
        rows.append({"instruction": f"Ticket {i}: {_sentence(rng, asked - context)}",
                     "input": _sentence(rng, context) if context else "",
                     "output": _sentence(rng, answer)})
    return rows


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Work:
    root: Path
    rows: int
    lengths: str
    shape: dict[str, int]
    micro_batch: int  # runtime: packed sequences (of up to MAX_SEQ_LENGTH tokens) per step
    baseline_batch: int  # baseline and --with-unpacked: examples per step
    session: str = field(default_factory=lambda: f"{time.time_ns():x}")  # fresh runs, never resumed

    @property
    def data(self) -> Path:
        return self.root / "data" / f"instructions-{self.lengths}-{self.rows}.jsonl"

    @property
    def model(self) -> Path:
        return self.root / f"tiny-llama-h{self.shape['hidden_size']}-l{self.shape['layers']}-{self.data.stem}"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


def generate(work: Work) -> None:
    """Write the JSONL data, and build the model with its tokenizer trained on that data, once."""
    from reconciler.runtime.tiny_model import build

    work.data.parent.mkdir(parents=True, exist_ok=True)
    rows = data_rows(work.rows, work.lengths)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if not work.data.is_file() or work.data.read_text(encoding="utf-8") != text:
        work.data.write_text(text, encoding="utf-8")
        shutil.rmtree(work.model, ignore_errors=True)  # its tokenizer learnt the old words
    if not (work.model / "model.safetensors").is_file():
        corpus = [value for row in rows for value in row.values() if value]
        build(work.model, corpus=corpus, **work.shape)


# --------------------------------------------------------------------------- job files

def dataset_job(work: Work):  # -> JobFile
    from reconciler.jobs.jobfile import GitOrigin, JobFile, MlflowTarget

    spec = {"source": f"file://{work.data.name}", "schema": {"type": "instruction"},
            "split": {"train": 1.0, "validation": 0.0, "test": 0.0}}
    digest = hashlib.sha256(work.data.read_bytes()).hexdigest()
    return JobFile(kind="Dataset", name=f"throughput-{work.lengths}-{work.rows}",
                   fingerprint=fingerprint("Dataset", spec, digest), spec=spec,
                   spec_path="datasets/throughput.yaml", git=GitOrigin(),
                   storage_root=str(work.root / "store"), source=f"file://{work.data}",
                   mlflow=MlflowTarget(tracking_uri=work.tracking_uri, experiment="train-throughput"))


def finetune_spec(work: Work, packing: bool, workers: int = 0) -> dict[str, Any]:
    t = TRAINING
    return {
        "method": "sft",
        "adapter": {"type": "lora", "r": LORA["r"], "alpha": LORA["alpha"], "dropout": LORA["dropout"],
                    "targetModules": LORA["target_modules"]},
        "training": {"epochs": t["epochs"], "learningRate": t["learning_rate"],
                     "microBatchSize": work.micro_batch if packing else work.baseline_batch,
                     "gradientAccumulation": 1, "maxSeqLength": MAX_SEQ_LENGTH, "packing": packing,
                     "scheduler": t["scheduler"], "warmupRatio": t["warmup_ratio"],
                     "weightDecay": t["weight_decay"], "maxGradNorm": t["max_grad_norm"],
                     "optimizer": t["optimizer"], "precision": "fp32", "seed": t["seed"],
                     "dataloaderWorkers": workers},
        "distributed": {"strategy": "ddp"},
    }


def prepared_dataset(data: Any):  # -> PreparedDataset
    """What a FineTune job file says of a Dataset job's output, read from its manifest."""
    from reconciler.jobs.jobfile import PreparedDataset

    manifest = json.loads((data.output_dir / "manifest.json").read_text())
    return PreparedDataset(name=data.name, location=str(data.output_dir), digest=manifest["digest"],
                           schema_type=manifest["schemaType"], fingerprint=data.fingerprint)


def local_base_model(name: str, folder: Path):  # -> BaseModelRef
    from reconciler.jobs.jobfile import BaseModelRef

    return BaseModelRef(name=name, source=f"file://{folder}", chat_template="chatml",
                        fingerprint=fingerprint("BaseModel", str(folder)))


def finetune_job(work: Work, data: Any, name: str, packing: bool, run_key: str,
                 workers: int = 0):  # -> JobFile
    """A FineTune job with its own storage root and fingerprint, so that no run resumes another."""
    from reconciler.jobs.jobfile import GitOrigin, JobFile, MlflowTarget

    prepared = prepared_dataset(data)
    base = local_base_model("tiny-llama", work.model)
    spec = {"baseModel": base.name, "datasets": [{"name": prepared.name, "weight": 1.0}],
            **finetune_spec(work, packing, workers)}
    return JobFile(kind="FineTune", name=name,
                   fingerprint=fingerprint("FineTune", name, spec, str(work.model), work.session, run_key),
                   spec=spec, spec_path=f"finetunes/{name}.yaml", git=GitOrigin(),
                   storage_root=str(work.root / "runs" / f"{name}-{run_key}"),
                   mlflow=MlflowTarget(tracking_uri=work.tracking_uri, experiment="train-throughput"),
                   base_model=base, datasets=(prepared,))


def write_job(job: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job.command}-{job.name}-{job.fingerprint[:8]}.json"
    path.write_text(job.to_json())
    return path


# --------------------------------------------------------------------------- processes

def tuneops_command() -> list[str]:
    """The `tuneops` entry point of this interpreter, else the one on PATH, else `-m reconciler`."""
    for path in (sysconfig.get_path("scripts"), None):
        found = shutil.which("tuneops", path=path)
        if found:
            return [found]
    return [sys.executable, "-m", "reconciler"]


# Children may cache bytecode, as every normal install does (see validate_scale.py). Both sides
# train on the CPU, even on a machine with a GPU: the comparison is of like with like.
CHILD_ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "TUNEOPS_DEBUG")},
    "CUDA_VISIBLE_DEVICES": "",
    "DS_ACCELERATOR": "cpu",
    "NO_COLOR": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TUNEOPS_MLFLOW_RETRY_DELAYS": "0.2,0.5",
}


@dataclass
class Finished:
    wall_s: float
    max_rss_mib: float


def run_process(argv: list[str], log: Path) -> Finished:
    """Run `argv` to completion with its output in `log`. Returns the wall clock and the peak RSS
    of that one child (`os.wait4`, not RUSAGE_CHILDREN, which keeps the largest child so far)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=CHILD_ENV, cwd=HERE.parent)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"FAIL: {' '.join(map(str, argv))} exited {proc.returncode} (log: {log}):\n{tail}")
    return Finished(elapsed, usage.ru_maxrss / 1024)  # Linux reports KiB


@dataclass
class Measure:
    tokens: int  # real (non-padding) tokens trained on
    padded_tokens: int  # tokens the model computed on, padding included
    steps: int
    train_s: float  # the Trainer's train_runtime
    wall_s: float  # the whole process
    max_rss_mib: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s


@dataclass
class Case:
    label: str
    measures: list[Measure] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(m, attribute) for m in self.measures)


def run_runtime(work: Work, data: Any, tuneops: list[str], packing: bool, key: str,
                workers: int = 0) -> Measure:
    name = "throughput-packed" if packing else "throughput-unpacked"
    name += f"-workers{workers}" if workers else ""
    job = finetune_job(work, data, name, packing, key, workers)
    shutil.rmtree(job.storage_root, ignore_errors=True)
    job_file = write_job(job, work.root / "jobs")
    done = run_process([*tuneops, "run", "finetune", "--job", str(job_file)],
                       work.root / "logs" / f"{name}-{key}.log")
    metrics = runtime_metrics(job)
    shutil.rmtree(job.storage_root, ignore_errors=True)
    # trl's num_tokens counts real tokens (attention-mask ones, or the length of a padding-free
    # row). The Trainer's num_input_tokens_seen counts padding too (the runtime asks for "all").
    return Measure(tokens=int(metrics["num_tokens"]), padded_tokens=int(metrics["num_input_tokens_seen"]),
                   steps=int(metrics["final_global_step"]), train_s=metrics["train_runtime"],
                   wall_s=done.wall_s, max_rss_mib=done.max_rss_mib)


def runtime_metrics(job: Any) -> dict[str, float]:
    """The latest value of each metric of the job's MLflow run, found by its fingerprint tag."""
    import mlflow

    client = mlflow.MlflowClient(job.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(job.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.`tuneops.fingerprint` = '{job.fingerprint}'")
    if len(runs) != 1:
        raise SystemExit(f"FAIL: expected one MLflow run for {job.name}, found {len(runs)}")
    metrics = dict(runs[0].data.metrics)
    for needed in ("num_tokens", "num_input_tokens_seen", "train_runtime", "final_global_step"):
        if needed not in metrics:
            raise SystemExit(f"FAIL: the MLflow run of {job.name} has no {needed} metric")
    return metrics


def run_baseline(work: Work, data: Any, key: str) -> Measure:
    out = work.root / "baseline" / key
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = {"model": str(work.model), "train": str(data.output_dir / "train.parquet"),
              "output_dir": str(out / "checkpoints"), "result": str(out / "result.json"),
              "micro_batch": work.baseline_batch}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    done = run_process([sys.executable, str(Path(__file__).resolve()), "--child", "baseline",
                        str(out / "config.json")], work.root / "logs" / f"baseline-{key}.log")
    result = json.loads((out / "result.json").read_text())
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return Measure(tokens=result["tokens"], padded_tokens=result["padded_tokens"], steps=result["steps"],
                   train_s=result["train_runtime"], wall_s=done.wall_s, max_rss_mib=done.max_rss_mib)


def check_packing(work: Work, data: Any) -> dict[str, Any]:
    job = finetune_job(work, data, "throughput-check", True, "check")
    job_file = write_job(job, work.root / "jobs")
    result_path = work.root / "check.json"
    result_path.unlink(missing_ok=True)
    run_process([sys.executable, str(Path(__file__).resolve()), "--child", "check", str(job_file),
                 str(result_path)], work.root / "logs" / "check.log")
    result = json.loads(result_path.read_text())
    if not result["isolated"]:
        raise SystemExit(f"FAIL: packed examples attend to each other:\n{json.dumps(result, indent=2)}")
    return result


# --------------------------------------------------------------------------- children

def child_baseline(config_path: str) -> None:
    """A plain transformers Trainer. It pads each micro batch to its longest sequence, puts the
    loss on the completion only, and uses the same LoRA adapter and the same arguments that the
    runtime resolves the spec to. Rows are tokenized as trl does for prompt/completion chats."""
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from reconciler.runtime.tiny_model import CHATML_TEMPLATE

    config = json.loads(Path(config_path).read_text())
    tokenizer = AutoTokenizer.from_pretrained(config["model"])
    tokenizer.chat_template = CHATML_TEMPLATE  # the job's `chatTemplate: chatml`
    rows = datasets.Dataset.from_parquet(config["train"])

    def tokenize(row: dict[str, Any]) -> dict[str, list[int]]:
        extra = (row.get("input") or "").strip()
        question = f"{row['instruction']}\n\n{extra}" if extra else row["instruction"]  # as the runtime
        prompt = [{"role": "user", "content": question}]
        conversation = [*prompt, {"role": "assistant", "content": row["output"]}]
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                   return_dict=True)["input_ids"]
        ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        ids = ids[:MAX_SEQ_LENGTH]
        prefix = 0
        while prefix < min(len(prompt_ids), len(ids)) and prompt_ids[prefix] == ids[prefix]:
            prefix += 1
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * prefix + ids[prefix:]}

    train = rows.map(tokenize, remove_columns=rows.column_names)
    padder = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    counted = {"tokens": 0, "padded_tokens": 0}

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = padder(features)
        counted["tokens"] += int(batch["attention_mask"].sum())
        counted["padded_tokens"] += batch["input_ids"].numel()
        return batch

    torch.manual_seed(TRAINING["seed"])
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(config["model"]),
        LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                   target_modules=LORA["target_modules"], task_type="CAUSAL_LM", bias="none"))
    t = TRAINING
    args = TrainingArguments(
        output_dir=config["output_dir"], num_train_epochs=t["epochs"], learning_rate=t["learning_rate"],
        per_device_train_batch_size=config["micro_batch"], gradient_accumulation_steps=1,
        lr_scheduler_type=t["scheduler"], warmup_steps=t["warmup_ratio"], weight_decay=t["weight_decay"],
        max_grad_norm=t["max_grad_norm"], optim=t["optimizer"], seed=t["seed"], data_seed=t["seed"],
        logging_steps=1, logging_first_step=True, report_to="none", disable_tqdm=True,
        save_strategy="epoch", use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collate)
    result = trainer.train()
    Path(config["result"]).write_text(json.dumps({
        "tokens": counted["tokens"], "padded_tokens": counted["padded_tokens"], "steps": result.global_step,
        "train_runtime": result.metrics["train_runtime"], "train_loss": result.training_loss,
        "threads": torch.get_num_threads()}))


def child_check(job_path: str, result_path: str) -> None:
    """Does packing keep attention within each example? Build the SFTTrainer as `tuneops run
    finetune` does and take its first real training batch. Then compare each example's logits and
    per-token log-probabilities (the terms of the training loss) packed and alone. A control, the
    same batch without its position_ids (one causal sequence), must differ, or the check could
    not see a leak."""
    import torch

    from reconciler.jobs.jobfile import read_job_file
    from reconciler.runtime import loading
    from reconciler.runtime.finetune import build_trainer, peft_config, training_arguments
    from reconciler.runtime.training_data import load_records
    from reconciler.specs.finetune import FineTuneSpec

    job = read_job_file(Path(job_path))
    spec = FineTuneSpec.model_validate(job.spec)
    tokenizer = loading.load_tokenizer(job.base_model)
    model = loading.load_base_model(job.base_model)
    records = load_records(job.datasets, "train", spec.method, spec.training.seed)[:64]
    arguments = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    trainer = build_trainer(spec, model, tokenizer, peft_config(spec), arguments, records, [])
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    model.eval()  # LoRA dropout off, so that two forwards of the same tokens agree

    position_ids = batch["position_ids"][0]
    starts = (position_ids == 0).nonzero().flatten().tolist() + [position_ids.numel()]
    segments = list(zip(starts[:-1], starts[1:], strict=True))
    ids, labels = batch["input_ids"], batch["labels"]

    def forward(inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        # As SFTTrainer.compute_loss calls the model: use_cache off, the fused LM head's log-probs.
        with torch.no_grad():
            log_probs = model(**inputs, use_cache=False, fused_lm_head=True).log_probs[0]
            logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits[0]
        return log_probs, logits

    packed_lp, packed_logits = forward(dict(batch))
    control_lp, _ = forward({"input_ids": ids, "labels": labels})
    worst_lp = worst_logit = worst_loss = leak = 0.0
    for start, end in segments:
        alone_lp, alone_logits = forward({"input_ids": ids[:, start:end], "labels": labels[:, start:end]})
        # log_probs[i] scores token i + 1: this example's own predictions are start .. end - 2.
        mine = packed_lp[start:end - 1]
        worst_lp = max(worst_lp, float((mine - alone_lp).abs().max()))
        worst_logit = max(worst_logit, float((packed_logits[start:end] - alone_logits).abs().max()))
        scored = int((labels[0, start + 1:end] != -100).sum())
        worst_loss = max(worst_loss, float((mine.sum() - alone_lp.sum()).abs()) / max(scored, 1))
        if start > 0:
            leak = max(leak, float((control_lp[start:end - 1] - alone_lp).abs().max()))
    result = {
        "attention": model.config._attn_implementation,
        "batch_keys": sorted(batch),
        "sequence_tokens": int(position_ids.numel()),
        "examples": len(segments),
        "max_abs_logit_diff": worst_logit,
        "max_abs_logprob_diff": worst_lp,
        "max_abs_loss_diff": worst_loss,
        "control_max_abs_logprob_diff": leak,
    }
    result["isolated"] = ("attention_mask" not in batch and len(segments) > 1 and worst_lp < 1e-3
                          and worst_logit < 1e-3 and leak > 1e-2)
    Path(result_path).write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- report

def environment(threads: int) -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "threads": str(threads),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "commit": git_commit(),
    }


HEADER = ["Run", "Real tokens", "Padding", "Steps", "Train s", "Tokens/s", "Tokens/s vs baseline",
          "Peak RSS MiB", "Process s"]


def table_rows(cases: list[Case], baseline: Case) -> list[list[str]]:
    """Medians over the rounds; tokens, padding and steps are the same in every round."""
    base_rate = baseline.median("tokens_per_s")
    rows = []
    for case in cases:
        first = case.measures[0]
        padding = 1 - first.tokens / first.padded_tokens if first.padded_tokens else 0.0
        rate = case.median("tokens_per_s")
        rows.append([case.label, f"{first.tokens:,}", f"{padding:.0%}", str(first.steps),
                     f"{case.median('train_s'):.1f}", f"{rate:,.0f}", f"{rate / base_rate:.2f}x",
                     f"{case.median('max_rss_mib'):,.0f}", f"{case.median('wall_s'):.1f}"])
    return rows


def verdicts(runtime: Case, baseline: Case) -> list[str]:
    ratio = runtime.median("tokens_per_s") / baseline.median("tokens_per_s")
    pairs = zip(runtime.measures, baseline.measures, strict=True)
    rounds = [mine.tokens_per_s / theirs.tokens_per_s for mine, theirs in pairs]
    rss, base_rss = runtime.median("max_rss_mib"), baseline.median("max_rss_mib")
    return [
        f"tokens/s, runtime / baseline: {ratio:.2f}x (rounds: {', '.join(f'{r:.2f}x' for r in rounds)}); "
        f"target >= {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'}",
        f"peak RSS, runtime / baseline: {rss:,.0f} / {base_rss:,.0f} MiB; "
        f"target equal or lower: {'met' if rss <= base_rss else 'NOT met'}",
    ]


def print_report(cases: list[Case], env: dict[str, str], args: argparse.Namespace, work: Work,
                 check: dict[str, Any]) -> None:
    baseline, runtime = cases[0], cases[1]
    shape = work.shape
    setup = (f"{args.rows} rows ({args.lengths} sizes), 1 epoch; model hidden {shape['hidden_size']}, "
             f"{shape['layers']} layers, {shape['heads']} heads ({shape['kv_heads']} KV), MLP "
             f"{shape['intermediate_size']}, vocab {shape['vocab_size']}; LoRA r {LORA['r']} all-linear, "
             f"fp32; {env['threads']} torch thread(s) per process; median of {args.repeat} rounds")
    isolation = (f"packing isolation ({check['attention']}): {check['examples']} examples in one "
                 f"{check['sequence_tokens']}-token row; max |logit packed - alone| "
                 f"{check['max_abs_logit_diff']:.1e}, max |log p packed - alone| "
                 f"{check['max_abs_logprob_diff']:.1e}; control without position_ids "
                 f"{check['control_max_abs_logprob_diff']:.1e}")
    table = table_rows(cases, baseline)
    if args.markdown:
        command = " ".join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]])
        print(f"Command: `{command}`\n")
        print(f"Measured {env['date']}: {env['cpus']} CPUs, {env['platform']}; Python {env['python']}, "
              f"torch {env['torch']}, transformers {env['transformers']}, trl {env['trl']}, peft "
              f"{env['peft']}; commit {env['commit']}. {setup}.\n")
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|")
        for row in table:
            print("| " + " | ".join(row) + " |")
        print()
        for line in [*verdicts(runtime, baseline), isolation]:
            print(f"- {line}")
        return
    print(f"\n{env['date']}  {env['cpus']} CPUs  Python {env['python']}  torch {env['torch']}  "
          f"transformers {env['transformers']}  trl {env['trl']}  peft {env['peft']}  commit {env['commit']}")
    print(setup + "\n")
    print_table([list(HEADER), *[[c.replace("`", "") for c in row] for row in table]])
    print()
    for line in [*verdicts(runtime, baseline), isolation]:
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=600, help="rows of generated data (default: %(default)s)")
    parser.add_argument("--lengths", choices=LENGTHS, default=LENGTHS[0],
                        help="how row sizes spread over 5..200 words (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=256, help="model width (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=4, help="model depth (default: %(default)s)")
    parser.add_argument("--micro-batch", type=int, default=1,
                        help=f"runtime: packed rows of up to {MAX_SEQ_LENGTH} tokens per step "
                             "(default: %(default)s)")
    parser.add_argument("--baseline-batch", type=int, default=8,
                        help="baseline (and --with-unpacked): examples per step (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per training process, as OMP_NUM_THREADS (default: %(default)s)")
    parser.add_argument("--with-unpacked", action="store_true",
                        help="also time `tuneops run finetune` with packing off, to separate packing's gain")
    parser.add_argument("--dataloader-workers", type=int, default=0, metavar="N",
                        help="also time the runtime (packing) with training.dataloaderWorkers N")
    parser.add_argument("--markdown", action="store_true", help="print the results for docs/benchmarks.md")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="where everything is written (default: benchmarks/.work/train-throughput)")
    parser.add_argument("--child", choices=["baseline", "check"], help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "baseline":
        return child_baseline(*args.paths)
    if args.child == "check":
        return child_check(*args.paths)
    if args.paths:
        parser.error(f"unexpected arguments: {' '.join(args.paths)}")
    if args.dataloader_workers < 0:
        parser.error("--dataloader-workers must be 0 or more")
    if args.repeat < 1 or args.rows < 10 or args.hidden < 64 or args.hidden % 64:
        parser.error("--repeat must be at least 1, --rows at least 10, --hidden a multiple of 64")

    CHILD_ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    os.environ.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")  # building the model here, too
    work = Work(args.workdir.resolve(), args.rows, args.lengths, model_shape(args.hidden, args.layers),
                args.micro_batch, args.baseline_batch)
    work.root.mkdir(parents=True, exist_ok=True)
    # the jobs read the model and data from file:// paths under the work folder, as `tuneops
    # apply` would let them read the spec repository
    CHILD_ENV["TUNEOPS_FILE_ROOTS"] = str(work.root)
    tuneops = tuneops_command()
    start = time.perf_counter()
    generate(work)
    data = dataset_job(work)
    if not (data.output_dir / "manifest.json").is_file():
        run_process([*tuneops, "run", "dataset", "--job", str(write_job(data, work.root / "jobs"))],
                    work.root / "logs" / "dataset.log")
    print(f"data, model and prepared dataset in {work.root} ({time.perf_counter() - start:.1f} s)",
          file=sys.stderr)

    check = check_packing(work, data)
    print(f"ok: packing keeps attention within each example ({check['attention']}): {check['examples']} "
          f"examples in one {check['sequence_tokens']}-token row, max |log p packed - alone| = "
          f"{check['max_abs_logprob_diff']:.1e} (without position_ids: "
          f"{check['control_max_abs_logprob_diff']:.1e})", file=sys.stderr)

    baseline = Case(f"plain `Trainer`, padded to longest, {work.baseline_batch} examples/step")
    runtime = Case(f"`tuneops run finetune`, packing, {work.micro_batch} x {MAX_SEQ_LENGTH} tokens/step")
    unpacked = Case(f"`tuneops run finetune`, no packing, {work.baseline_batch} examples/step")
    workers = Case(f"`tuneops run finetune`, packing, dataloaderWorkers {args.dataloader_workers}")
    cases = [baseline, runtime, *([unpacked] if args.with_unpacked else []),
             *([workers] if args.dataloader_workers else [])]
    for index in range(args.repeat):
        key = f"r{index + 1}"
        # Alternate which side goes first, so that drift in the machine's speed spreads over both.
        for case in (cases[1:] + cases[:1]) if index % 2 == 0 else cases:
            if case is baseline:
                case.measures.append(run_baseline(work, data, key))
            elif case is workers:
                case.measures.append(run_runtime(work, data, tuneops, True, key, args.dataloader_workers))
            else:
                case.measures.append(run_runtime(work, data, tuneops, case is runtime, key))
        print(f"round {index + 1}/{args.repeat}: "
              + ", ".join(f"{case.measures[-1].tokens_per_s:,.0f} tok/s ({case.label})" for case in cases),
              file=sys.stderr)
    for case in cases[1:]:
        if case.measures[0].tokens != baseline.measures[0].tokens:
            print(f"WARNING: {case.label} trained on {case.measures[0].tokens:,} real tokens, the baseline "
                  f"on {baseline.measures[0].tokens:,}: the two do not see the same data", file=sys.stderr)
    print_report(cases, environment(args.threads), args, work, check)


if __name__ == "__main__":
    main()
