"""Peak GPU memory of `tuneops run finetune` against the planner's estimate for the same run.

For a Llama-shaped model of about 250M parameters (built here, stored in bf16 as published
checkpoints are), it trains LoRA and full fine-tunes at a few sequence lengths, micro-batches
and with gradient checkpointing on and off. Each case is a whole `tuneops run finetune`
process on one GPU (`strategy: ddp`, bf16, AdamW) for a few steps. The measured peak is the
run's own `peak_memory_mb` metric in MLflow, which the runtime takes from
`torch.cuda.max_memory_allocated()`. The estimate is `reconciler.sizing.strategy.estimate()` for the
same shape: what `tuneops estimate` and `strategy: auto` decide with. The ratio
measured / estimate is the figure docs/benchmarks.md records (target: within 15%).

Every row is truncated to exactly `maxSeqLength` tokens (the generated answers are longer), so
each micro-batch is `micro-batch x sequence length` tokens, as the planner assumes, with no
padding and no packing.

    python benchmarks/planner_memory.py                  # on a CUDA GPU: the six cases
    python benchmarks/planner_memory.py --markdown       # the table for docs/benchmarks.md
    python benchmarks/planner_memory.py --quick          # a tiny model on the CPU: checks the
                                                         # harness only; the peak is then the
                                                         # process RSS, not comparable

Needs the project's [train] extra. Works offline: the model, its tokenizer, the data,
MLflow's SQLite store and every output go to benchmarks/.work/planner-memory/ (git-ignored).
Never asserts on memory or time; exits non-zero only when a run fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import HERE, git_commit, print_table
from train_throughput import (
    CHILD_ENV,
    WORDS,
    fingerprint,
    local_base_model,
    prepared_dataset,
    run_process,
    tuneops_command,
    write_job,
)

DEFAULT_WORKDIR = HERE / ".work" / "planner-memory"
TARGET = 0.15  # the target: measured within 15% of the estimate

# About 252M parameters, in Llama 3's proportions: heads of 64 dimensions, 2 query heads per
# key/value head, an MLP 2.75x the width, a 32,000-token vocabulary and an untied head.
GPU_SHAPE = {"hidden_size": 1024, "layers": 16, "heads": 16, "kv_heads": 8, "intermediate_size": 2816,
             "vocab_size": 32000}
QUICK_SHAPE = {"hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate_size": 176,
               "vocab_size": 1024}


@dataclass(frozen=True)
class Case:
    adapter: str  # "lora" or "none" (full fine-tuning)
    sequence_length: int
    micro_batch: int
    checkpointing: bool

    @property
    def name(self) -> str:
        return (f"{'lora' if self.adapter == 'lora' else 'full'}-s{self.sequence_length}-b{self.micro_batch}"
                f"{'-ckpt' if self.checkpointing else ''}")

    @property
    def label(self) -> str:
        method = "LoRA r=16 all-linear" if self.adapter == "lora" else "full"
        return (f"{method}, {self.micro_batch} x {self.sequence_length} tokens"
                f"{', checkpointing' if self.checkpointing else ''}")


GPU_CASES = [Case("lora", 512, 4, False), Case("lora", 2048, 1, False), Case("lora", 2048, 4, True),
             Case("none", 512, 4, False), Case("none", 2048, 1, False), Case("none", 2048, 4, True)]
QUICK_CASES = [Case("lora", 128, 2, False), Case("none", 128, 2, True)]


# --------------------------------------------------------------------------- inputs

def build_model(folder: Path, shape: dict[str, int], max_positions: int) -> Path:
    """The tiny-model builder's tokenizer and architecture at `shape`, with the embedding and
    head widened to the full vocabulary (the builder's tokenizer learns only a few hundred
    tokens) and every weight stored in bf16. Written beside `folder`, renamed when complete."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM

    from reconciler.runtime.tiny_model import build

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        small = build(Path(scratch) / "small", corpus=[" ".join(WORDS)], vocab_size=512,
                      hidden_size=shape["hidden_size"], layers=shape["layers"], heads=shape["heads"],
                      kv_heads=shape["kv_heads"], intermediate_size=shape["intermediate_size"],
                      max_positions=max_positions)
        model = AutoModelForCausalLM.from_pretrained(small, dtype=torch.float32)
        model.resize_token_embeddings(shape["vocab_size"], mean_resizing=False)
        staging = Path(scratch) / "model"
        model.to(torch.bfloat16).save_pretrained(staging)
        for item in small.iterdir():
            if not (staging / item.name).exists():
                shutil.copy(item, staging / item.name)
        staging.rename(folder)
    return folder


def write_data(path: Path, rows: int, words: int) -> Path:
    """Instruction rows whose answers run past every sequence length measured, so that each
    row is truncated to exactly `maxSeqLength` tokens."""
    rng = random.Random(0)
    lines = [json.dumps({"instruction": f"Ticket {i}: " + " ".join(rng.choice(WORDS) for _ in range(12)),
                         "output": " ".join(rng.choice(WORDS) for _ in range(words))})
             for i in range(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@dataclass
class Work:
    root: Path
    model: Path
    data: Path
    steps: int
    session: str

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


def dataset_job(work: Work):  # -> JobFile
    import hashlib

    from reconciler.jobs.jobfile import GitOrigin, JobFile, MlflowTarget

    spec = {"source": f"file://{work.data.name}", "schema": {"type": "instruction"},
            "split": {"train": 1.0, "validation": 0.0, "test": 0.0}}
    digest = hashlib.sha256(work.data.read_bytes()).hexdigest()
    return JobFile(kind="Dataset", name="planner-memory", fingerprint=fingerprint("Dataset", spec, digest),
                   spec=spec, spec_path="datasets/planner-memory.yaml", git=GitOrigin(),
                   storage_root=str(work.root / "store"), source=f"file://{work.data}",
                   mlflow=MlflowTarget(tracking_uri=work.tracking_uri, experiment="planner-memory"))


def finetune_spec(case: Case, steps: int) -> dict[str, Any]:
    adapter = {"type": "lora", "r": 16, "targetModules": "all-linear"} if case.adapter == "lora" else {
        "type": "none"}
    return {"method": "sft", "adapter": adapter,
            "training": {"maxSteps": steps, "learningRate": 1e-5, "microBatchSize": case.micro_batch,
                         "gradientAccumulation": 1, "maxSeqLength": case.sequence_length, "packing": False,
                         "gradientCheckpointing": case.checkpointing, "optimizer": "adamw_torch",
                         "precision": "bf16", "seed": 0},
            "distributed": {"strategy": "ddp"}, "checkpoint": {"resume": "never"}}


def finetune_job(work: Work, data: Any, case: Case):  # -> JobFile
    from reconciler.jobs.jobfile import GitOrigin, JobFile, MlflowTarget

    prepared = prepared_dataset(data)
    base = local_base_model("llama-250m", work.model)
    spec = {"baseModel": base.name, "datasets": [{"name": prepared.name, "weight": 1.0}],
            **finetune_spec(case, work.steps)}
    name = f"memory-{case.name}"
    return JobFile(kind="FineTune", name=name, fingerprint=fingerprint("FineTune", name, spec, work.session),
                   spec=spec, spec_path=f"finetunes/{name}.yaml", git=GitOrigin(),
                   storage_root=str(work.root / "runs" / name),
                   mlflow=MlflowTarget(tracking_uri=work.tracking_uri, experiment="planner-memory"),
                   base_model=base, datasets=(prepared,))


# --------------------------------------------------------------------------- measuring

@dataclass
class Result:
    case: Case
    measured: float  # bytes: the run's peak_memory_mb (max_memory_allocated on a GPU)
    states: float  # bytes, the planner's model states
    activations: float  # bytes, the planner's activations
    process_s: float

    @property
    def estimate(self) -> float:
        return self.states + self.activations

    @property
    def ratio(self) -> float:
        return self.measured / self.estimate


def measured_peak(job: Any, case: Case, steps: int) -> float:
    """The largest `peak_memory_mb` the run logged, in bytes, once the run is shown to have
    trained on exactly `steps x micro-batch x sequence length` tokens (no short rows)."""
    import mlflow

    client = mlflow.MlflowClient(job.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(job.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.`tuneops.fingerprint` = '{job.fingerprint}'")
    if len(runs) != 1:
        raise SystemExit(f"FAIL: expected one MLflow run for {job.name}, found {len(runs)}")
    history = client.get_metric_history(runs[0].info.run_id, "peak_memory_mb")
    if not history:
        raise SystemExit(f"FAIL: the MLflow run of {job.name} logged no peak_memory_mb")
    seen = runs[0].data.metrics.get("num_input_tokens_seen")
    expected = steps * case.micro_batch * case.sequence_length
    if seen != expected:
        raise SystemExit(f"FAIL: {job.name} trained on {seen} tokens, not {expected}: some rows were "
                         "shorter than the sequence length, so the shape is not the one estimated")
    return max(point.value for point in history) * 2**20


def planned(work: Work, case: Case) -> tuple[float, float]:
    from reconciler.sizing import memory as planner
    from reconciler.sizing.strategy import estimate
    architecture = planner.Architecture.from_config(json.loads((work.model / "config.json").read_text()))
    shape = planner.TrainingShape(architecture, case.adapter, rank=16, sequence_length=case.sequence_length,
                                  micro_batch=case.micro_batch, gradient_checkpointing=case.checkpointing)
    found = estimate(shape, "ddp")
    return found.states.total, found.activations


def run_case(work: Work, data: Any, tuneops: list[str], case: Case) -> Result:
    job = finetune_job(work, data, case)
    shutil.rmtree(job.storage_root, ignore_errors=True)
    done = run_process([*tuneops, "run", "finetune", "--job", str(write_job(job, work.root / "jobs"))],
                       work.root / "logs" / f"{case.name}.log")
    measured = measured_peak(job, case, work.steps)
    shutil.rmtree(job.storage_root, ignore_errors=True)
    states, activations = planned(work, case)
    return Result(case, measured, states, activations, done.wall_s)


# --------------------------------------------------------------------------- report

def environment(cuda: bool) -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)",
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "peft": peft.__version__, "commit": git_commit()}


def size(value: float) -> str:
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def table(results: list[Result], cuda: bool) -> list[list[str]]:
    rows = [["Run", "Measured", "Estimate", "states", "activations", "Measured / estimate",
             "Within 15%", "Process s"]]
    for result in results:
        verdict = ("yes" if abs(result.ratio - 1) <= TARGET else "no") if cuda else "n/a (RSS)"
        rows.append([result.case.label, size(result.measured), size(result.estimate), size(result.states),
                     size(result.activations), f"{result.ratio:.2f}", verdict, f"{result.process_s:.0f}"])
    return rows


def print_report(results: list[Result], env: dict[str, str], parameters: int, markdown: bool,
                 cuda: bool) -> None:
    print(f"# {parameters / 1e6:.1f}M-parameter Llama, bf16, AdamW, one device, "
          + ", ".join(f"{k} {v}" for k, v in env.items()))
    if not cuda:
        print("# CPU: the measured peak is the process's maximum RSS (imports included), not "
              "max_memory_allocated: this checks the harness, it measures nothing")
    rows = table(results, cuda)
    if markdown:
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "|".join("---" for _ in rows[0]) + "|")
        for row in rows[1:]:
            print("| " + " | ".join(row) + " |")
    else:
        print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a tiny model and two cases on the CPU, to check the harness")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run (default: %(default)s)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only the named case (e.g. full-s2048-b1); repeatable")
    parser.add_argument("--markdown", action="store_true", help="print the table for docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="where everything is written (default: benchmarks/.work/planner-memory)")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available() and not args.quick
    if not cuda and not args.quick:
        parser.error("no CUDA GPU here: the measurement needs one "
                     "(--quick checks the harness on the CPU)")
    cases = QUICK_CASES if args.quick else GPU_CASES
    if args.only:
        unknown = sorted(set(args.only) - {case.name for case in cases})
        if unknown:
            parser.error(f"unknown case {', '.join(unknown)}; cases: {', '.join(c.name for c in cases)}")
        cases = [case for case in cases if case.name in args.only]
    if not cuda:
        CHILD_ENV.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    else:  # the children train on the GPU; the train_throughput defaults hide it
        CHILD_ENV.pop("CUDA_VISIBLE_DEVICES", None)
        CHILD_ENV.pop("DS_ACCELERATOR", None)
    shape = QUICK_SHAPE if args.quick else GPU_SHAPE
    longest = max(case.sequence_length for case in cases)
    root = args.workdir.resolve() / ("quick" if args.quick else "gpu")
    CHILD_ENV["TUNEOPS_FILE_ROOTS"] = str(root)  # the jobs' file:// model and data live here
    start = time.perf_counter()
    work = Work(root, build_model(root / "model", shape, max_positions=longest),
                write_data(root / "data" / "long-answers.jsonl", rows=64, words=longest + 200),
                args.steps, f"{time.time_ns():x}")
    tuneops = tuneops_command()
    data = dataset_job(work)
    if not (data.output_dir / "manifest.json").is_file():
        run_process([*tuneops, "run", "dataset", "--job", str(write_job(data, root / "jobs"))],
                    root / "logs" / "dataset.log")
    print(f"model, data and prepared dataset in {root} ({time.perf_counter() - start:.1f} s)",
          file=sys.stderr)
    results = []
    for case in cases:
        results.append(run_case(work, data, tuneops, case))
        last = results[-1]
        print(f"{case.name}: measured {size(last.measured)} GiB, estimate {size(last.estimate)} GiB "
              f"(ratio {last.ratio:.2f}, {last.process_s:.0f} s)", file=sys.stderr, flush=True)
    from reconciler.sizing import memory as planner
    config = json.loads((work.model / "config.json").read_text())
    parameters = planner.Architecture.from_config(config).parameters
    env = environment(cuda)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "parameters": parameters, "results": [
            {"case": result.case.name, "measured_bytes": result.measured, "states_bytes": result.states,
             "activation_bytes": result.activations, "ratio": result.ratio, "process_s": result.process_s}
            for result in results]}, indent=2))
    print_report(results, env, parameters, args.markdown, cuda)


if __name__ == "__main__":
    main()
