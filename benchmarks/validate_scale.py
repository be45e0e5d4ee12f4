"""Whole-process benchmark of `tuneops validate` on large generated spec repositories.

Generates a valid, fully cross-referenced spec repository of N specs (N/5 of each kind),
checks that `tuneops validate` accepts it with no warnings, then times whole processes
(wall clock, start-up included) against baselines run in the same session:

- `python -c pass`: interpreter start-up, the floor for any Python command;
- a raw-parse baseline: a Python process that only reads every YAML file of the repository
  with `yaml.compose_all(text, Loader=yaml.CSafeLoader)`, the floor for reading the specs.

It reports (median, min and the ratio to `python -c pass`) and never asserts on time: the only
non-zero exit is a generated repository that does not validate. Results go in
docs/benchmarks.md; `--markdown` prints the table in that form.

    python benchmarks/validate_scale.py                      # sizes 1000,10000, 5 repetitions
    python benchmarks/validate_scale.py --sizes 1000 --repeat 3
    python benchmarks/validate_scale.py --markdown
    python benchmarks/validate_scale.py --generate-only      # e.g. to profile a repository

Needs only the project itself and PyYAML.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from common import git_commit, print_table  # benchmarks/common.py, beside this script

HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = HERE / ".work"  # git-ignored

API_VERSION = "tuneops.dev/v1alpha1"
BASE_SOURCE = "hf://Qwen/Qwen2.5-0.5B-Instruct"
BASE_REVISION = "7ae557604adf67be50417f59c2c2f167def9a775"
DATA_FILE = "data/instructions.jsonl"

# The targets, on whole processes (median wall clock).
TARGETS_S = {"help": 0.3, 1_000: 0.5, 10_000: 3.0}

# Documents per file, per kind: a mix of one-document and multi-document (`---`) files.
DOCS_PER_FILE = {"Dataset": 1, "BaseModel": 10, "FineTune": 1, "Evaluation": 10, "Deployment": 5}
FILES_PER_FOLDER = 50

RAW_PARSE = r"""
import os, sys, yaml
for folder, subfolders, files in os.walk(sys.argv[1]):
    subfolders.sort()
    for name in sorted(files):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                text = handle.read()
            for _ in yaml.compose_all(text, Loader=yaml.CSafeLoader):
                pass
"""


# --------------------------------------------------------------------------- generation

def _data_rows() -> list[dict[str, str]]:
    products = ["Doorbell", "Mesh Router", "Camera", "Thermostat", "Smart Plug"]
    problems = [("has no sound", "Check that Do Not Disturb is off and the volume is above zero."),
                ("keeps going offline", "Move it within 10 metres of the router and update it."),
                ("will not pair", "Hold the reset button for 10 seconds, then pair it again."),
                ("shows the wrong time", "Set the time zone under Settings > Device > Time.")]
    rows = []
    for product in products:
        for plan in ("basic", "plus"):
            for problem, answer in problems:
                rows.append({"instruction": f"My Acme {product} {problem}.",
                             "input": f"Customer plan: {plan}",
                             "output": answer})
    return rows


def _dataset(i: int, sha256: str, depth: int) -> str:
    up = "../" * depth
    return f"""\
apiVersion: {API_VERSION}
kind: Dataset
metadata:
  name: tickets-{i:05d}
  labels:
    team: team-{i % 7}
  description: Support tickets, export {i}.
spec:
  source: file://{up}{DATA_FILE}
  sha256: {sha256}
  format: jsonl
  schema:
    type: instruction
  clean:
    dedup: exact
    minChars: 10
    maxChars: 8000
  split:
    train: 0.8
    validation: 0.1
    test: 0.1
    seed: {i}
"""


def _base_model(i: int) -> str:
    return f"""\
apiVersion: {API_VERSION}
kind: BaseModel
metadata:
  name: qwen-base-{i:05d}
  labels:
    family: qwen
  description: Qwen2.5 0.5B Instruct, copy {i}.
spec:
  source: {BASE_SOURCE}
  revision: {BASE_REVISION}
  chatTemplate: tokenizer
  license: apache-2.0
"""


def _fine_tune(i: int, k: int) -> str:
    early_stopping = ""
    if i % 4 == 0:
        early_stopping = """\
  evaluation:
    everySteps: 100
    earlyStopping:
      metric: eval_loss
      patience: 3
"""
    return f"""\
apiVersion: {API_VERSION}
kind: FineTune
metadata:
  name: support-sft-{i:05d}
  labels:
    team: team-{i % 7}
spec:
  baseModel: qwen-base-{i % k:05d}
  datasets:
    - name: tickets-{i % k:05d}
      weight: 3.0
    - name: tickets-{(i + 1) % k:05d}
  method: sft
  adapter:
    type: lora
    r: {8 * (1 + i % 4)}
    dropout: 0.05
    targetModules: [q_proj, k_proj, v_proj, o_proj]
  training:
    epochs: 3
    learningRate: 2.0e-4
    microBatchSize: 4
    gradientAccumulation: 4
    maxSeqLength: 2048
    precision: bf16
    gradientCheckpointing: true
    seed: {i}
  distributed:
    strategy: ddp
  resources:
    gpusPerNode: {1 + i % 2}
    memory: 64Gi
  checkpoint:
    everySteps: 200
    keep: 2
{early_stopping}  scheduling:
    queue: gpu-training
"""


def _evaluation(i: int, k: int) -> str:
    baseline = ""
    if i % 2 == 0:
        baseline = f"""\
  baseline:
    baseModel: qwen-base-{i % k:05d}
    maxRegression: 0.01
"""
    return f"""\
apiVersion: {API_VERSION}
kind: Evaluation
metadata:
  name: support-sft-{i:05d}-quality
spec:
  model:
    fineTune: support-sft-{i:05d}
  dataset:
    name: tickets-{(i + 2) % k:05d}
    split: test
    maxSamples: 500
  metrics: [perplexity, rougeL, exact_match]
  generation:
    maxNewTokens: 256
  gates:
    - metric: rougeL
      min: 0.3
    - metric: perplexity
      max: 20
{baseline}  resources:
    gpus: 1
"""


def _deployment(i: int) -> str:
    return f"""\
apiVersion: {API_VERSION}
kind: Deployment
metadata:
  name: support-bot-{i:05d}
spec:
  model:
    fineTune: support-sft-{i:05d}
  requires: [support-sft-{i:05d}-quality]
  runtime: vllm
  replicas: {1 + i % 3}
  resources:
    gpus: 1
    memory: 48Gi
  alias: production
"""


FOLDERS = {"Dataset": "datasets", "BaseModel": "base-models", "FineTune": "fine-tunes",
           "Evaluation": "evaluations", "Deployment": "deployments"}


@dataclass
class Repo:
    path: Path
    specs: int
    files: int  # YAML files, tuneops.yaml included


def generate(root: Path, n: int) -> Repo:
    """A valid, cross-referenced repository of `n` specs (n/5 of each kind) under `root`."""
    if n <= 0 or n % 5:
        raise SystemExit(f"size must be a positive multiple of 5 (got {n})")
    if root.exists():
        shutil.rmtree(root)
    k = n // 5
    (root / "data").mkdir(parents=True)
    data = "".join(json.dumps(row) + "\n" for row in _data_rows()).encode()
    (root / DATA_FILE).write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    (root / "tuneops.yaml").write_text(
        "# Generated by benchmarks/validate_scale.py\nbackend: local\nmlflow:\n"
        "  experiment: benchmark\n", encoding="utf-8")

    # Every file sits at <root>/<kind folder>/<group>/<file>: two levels below the root.
    render = {
        "Dataset": lambda i: _dataset(i, sha256, depth=2),
        "BaseModel": _base_model,
        "FineTune": lambda i: _fine_tune(i, k),
        "Evaluation": lambda i: _evaluation(i, k),
        "Deployment": _deployment,
    }
    files = 1
    for kind, folder in FOLDERS.items():
        per_file = DOCS_PER_FILE[kind]
        for file_index, first in enumerate(range(0, k, per_file)):
            group = root / folder / f"group-{file_index // FILES_PER_FOLDER:03d}"
            group.mkdir(parents=True, exist_ok=True)
            documents = [render[kind](i) for i in range(first, min(first + per_file, k))]
            last = first + len(documents) - 1
            stem = f"{folder}-{first:05d}" + (f"-{last:05d}" if per_file > 1 else "")
            (group / f"{stem}.yaml").write_text("---\n".join(documents), encoding="utf-8")
            files += 1
    return Repo(root, n, files)


# --------------------------------------------------------------------------- commands

def tuneops_command() -> list[str]:
    """The `tuneops` entry point of this interpreter, else the one on PATH, else `-m reconciler`.

    The interpreter's own scripts folder is searched first so that a version-manager shim (pyenv
    puts a bash script on PATH that adds tens of milliseconds) is not what gets timed.
    """
    for path in (sysconfig.get_path("scripts"), None):
        found = shutil.which("tuneops", path=path)
        if found:
            return [found]
    return [sys.executable, "-m", "reconciler"]


def check_valid(tuneops: list[str], repo: Repo, cwd: Path) -> None:
    """Fail loudly unless `tuneops validate` accepts the repository with no warnings."""
    relative = os.path.relpath(repo.path, cwd)
    proc = subprocess.run([*tuneops, "validate", relative, "--format", "json"], cwd=cwd,
                          capture_output=True, text=True)
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        result = None
    failures = []
    if proc.returncode != 0:
        failures.append(f"exit status {proc.returncode}")
    if result is None:
        failures.append("output is not JSON")
    else:
        if result.get("errors"):
            failures.append(f"{len(result['errors'])} errors")
        if result.get("warnings"):
            failures.append(f"{len(result['warnings'])} warnings")
        if result.get("specs") != repo.specs:
            failures.append(f"{result.get('specs')} valid specs, expected {repo.specs}")
        if result.get("files") != repo.files:
            failures.append(f"{result.get('files')} files read, expected {repo.files}")
    if failures:
        print(f"FAIL: generated repository {repo.path} does not validate cleanly: "
              + "; ".join(failures), file=sys.stderr)
        if result:
            for problem in (result.get("errors") or [])[:10] + (result.get("warnings") or [])[:10]:
                print(f"  {problem['file']}:{problem['line']}:{problem['column']} "
                      f"{problem['severity']} {problem['path']}: {problem['message']}",
                      file=sys.stderr)
        else:
            print(proc.stdout[-2000:] + proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(1)
    print(f"ok: {' '.join(tuneops)} validate {relative} --format json: {result['specs']} specs "
          f"in {result['files']} files, no errors, no warnings", file=sys.stderr)


@dataclass
class Case:
    label: str  # as shown in the table
    argv: list[str]
    target_s: float | None = None
    times: list[float] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times or [float("nan")])

    @property
    def best(self) -> float:
        return min(self.times or [float("nan")])


# Children may cache bytecode, as every normal install does. Some sandboxes export
# PYTHONDONTWRITEBYTECODE=1, which makes each run recompile the project from source.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def time_once(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=CHILD_ENV)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(argv)} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def run_cases(cases: list[Case], repeat: int, cwd: Path) -> None:
    """One untimed warm-up round, then `repeat` rounds; each round runs every case once, so
    drift in the machine's speed spreads over all cases instead of biasing one."""
    for case in cases:
        time_once(case.argv, cwd)
        case.times = []
    for round_index in range(repeat):
        for case in cases:
            case.times.append(time_once(case.argv, cwd))
        print(f"round {round_index + 1}/{repeat} done", file=sys.stderr)


# --------------------------------------------------------------------------- report

def environment() -> dict[str, str]:
    import pydantic
    import yaml

    return {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "pyyaml": f"{yaml.__version__} ({'libyaml' if yaml.__with_libyaml__ else 'pure Python'})",
        "pydantic": pydantic.VERSION,
        "commit": git_commit(),
    }


def verdict(case: Case) -> str:
    if case.target_s is None:
        return "-"
    met = case.median <= case.target_s
    return f"<= {case.target_s:g} s: {'met' if met else 'NOT met'}"


def rows(cases: list[Case], baseline: Case) -> list[list[str]]:
    return [[case.label, f"{case.median:.3f}", f"{case.best:.3f}",
             f"{case.median / baseline.median:.1f}x", verdict(case)] for case in cases]


HEADER = ["Command", "Median s", "Min s", "Median / `python -c pass`", "Target (median)"]


def print_text(cases: list[Case], baseline: Case, env: dict[str, str], repeat: int) -> None:
    print(f"\n{env['date']}  Python {env['python']}  {env['cpus']} CPUs  PyYAML {env['pyyaml']}  "
          f"pydantic {env['pydantic']}  commit {env['commit']}  ({repeat} runs each, wall clock, "
          "whole processes)")
    table = [[h.replace("`", "") for h in HEADER]] + [
        [cell.replace("`", "") for cell in row] for row in rows(cases, baseline)]
    print_table(table)


def print_markdown(cases: list[Case], baseline: Case, env: dict[str, str], repeat: int,
                   tuneops: list[str]) -> None:
    command = " ".join(["python", "benchmarks/validate_scale.py", *sys.argv[1:]])
    print(f"Command: `{command}` (entry point: `{' '.join(tuneops)}`)")
    print()
    print(f"Measured {env['date']}: Python {env['python']} ({env['implementation']}), "
          f"{env['cpus']} CPUs, {env['platform']}; PyYAML {env['pyyaml']}, pydantic "
          f"{env['pydantic']}; commit {env['commit']}. {repeat} runs of each command, interleaved, "
          "after one warm-up run.")
    print()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "|".join(["---"] + ["---:"] * 3 + ["---"]) + "|")
    for row in rows(cases, baseline):
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000",
                        help="comma-separated numbers of specs, each a multiple of 5 (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command (default: 5)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the results as a Markdown table for docs/benchmarks.md")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="where the repositories are generated (default: benchmarks/.work)")
    parser.add_argument("--generate-only", action="store_true",
                        help="generate and check the repositories, time nothing")
    args = parser.parse_args()
    sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tuneops = tuneops_command()
    print(f"tuneops command: {' '.join(tuneops)}", file=sys.stderr)

    repos = []
    for n in sizes:
        start = time.perf_counter()
        repo = generate(workdir / f"repo-{n}", n)
        print(f"generated {repo.path}: {repo.specs} specs in {repo.files} YAML files "
              f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
        check_valid(tuneops, repo, workdir)
        repos.append(repo)
    if args.generate_only:
        return

    baseline = Case("`python -c pass`", [sys.executable, "-c", "pass"])
    cases = [baseline, Case("`tuneops --help`", [*tuneops, "--help"], TARGETS_S["help"])]
    for repo in repos:
        relative = os.path.relpath(repo.path, workdir)
        cases.append(Case(f"raw parse, {repo.specs:,} specs ({repo.files:,} files)",
                          [sys.executable, "-c", RAW_PARSE, relative]))
        cases.append(Case(f"`tuneops validate`, {repo.specs:,} specs",
                          [*tuneops, "validate", relative], TARGETS_S.get(repo.specs)))
    run_cases(cases, args.repeat, workdir)

    env = environment()
    if args.markdown:
        print_markdown(cases, baseline, env, args.repeat, tuneops)
    else:
        print_text(cases, baseline, env, args.repeat)


if __name__ == "__main__":
    main()
