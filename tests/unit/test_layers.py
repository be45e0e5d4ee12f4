"""The import layers of shared/ARCHITECTURE.md, enforced: nothing imports upward.

cli -> apply/daemon/gitops -> plan/report/render/planner -> graph/fingerprint -> specs -> config
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "reconciler"

# Module (or package) -> the rank of its layer; a module may import only equal or lower ranks.
LAYERS = {
    "reconciler.fileio": 0, "reconciler.config": 0, "reconciler.scalars": 0, "reconciler.starter": 0,
    "reconciler.crd_schemas": 0, "reconciler.state_files": 0, "reconciler.kubernetes_rules": 0,
    "reconciler.redaction": 0,
    "reconciler.specs": 1,
    "reconciler.graph": 2, "reconciler.fingerprint": 2, "reconciler.gates": 2,
    # Vocabularies and data formats: no I/O of their own.
    "reconciler.tracking": 2, "reconciler.jobfile": 2, "reconciler.backends.base": 2,
    "reconciler.plan": 3, "reconciler.plan_report": 3, "reconciler.report": 3, "reconciler.render": 3,
    "reconciler.planner": 3, "reconciler.capacity": 3, "reconciler.state": 3, "reconciler.status": 3,
    "reconciler.estimates": 3, "reconciler.estimate_report": 3, "reconciler.base_state": 3,
    "reconciler.in_use": 3,
    # The edges that read the world: MLflow, the backend, Git, local files.
    "reconciler.architectures": 4, "reconciler.tracking_store": 4, "reconciler.jobs": 4,
    "reconciler.backends": 4, "reconciler.sources_digest": 4, "reconciler.gitinfo": 4,
    "reconciler.project": 4, "reconciler.lock": 4, "reconciler.dataset_rows": 4,
    "reconciler.manifests": 4, "reconciler.gitbase": 4, "reconciler.sample_request": 4,
    "reconciler.apply": 5, "reconciler.gitops": 5, "reconciler.daemon": 5, "reconciler.daemon_http": 5,
    "reconciler.notify": 5,
    "reconciler.cli": 6, "reconciler.__main__": 6, "reconciler.runtime": 6,
}
PURE = ("reconciler.specs", "reconciler.graph", "reconciler.gates", "reconciler.plan", "reconciler.planner",
        "reconciler.fingerprint", "reconciler.estimates", "reconciler.in_use")
IMPURE_LIBRARIES = ("mlflow", "kubernetes", "git", "torch", "transformers", "peft", "trl",
                    "deepspeed", "datasets", "jinja2")


def layer_of(module: str) -> int | None:
    best = None
    for prefix, rank in LAYERS.items():
        matches = module == prefix or module.startswith(prefix + ".")
        if matches and (best is None or len(prefix) > len(best[0])):
            best = (prefix, rank)
    return best[1] if best else None


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def test_every_module_has_a_layer():
    assert [name for name, _ in modules() if layer_of(name) is None and name != "reconciler"] == []


def test_nothing_imports_upward():
    upward = []
    for name, path in modules():
        rank = layer_of(name)
        for imported in imports_of(path):
            target = layer_of(imported)
            if rank is not None and target is not None and target > rank:
                upward.append(f"{name} imports {imported}")
    assert upward == []


def test_pure_layers_import_no_services():
    offenders = []
    for name, path in modules():
        if name.startswith(PURE):
            offenders += [f"{name} imports {m}" for m in imports_of(path)
                          if m.split(".")[0] in IMPURE_LIBRARIES]
    assert offenders == []
