"""The import layers of shared/ARCHITECTURE.md, enforced: nothing imports upward, and no circles.

cli -> daemon -> project -> apply -> plan/status/backends -> state/jobs/sizing/tracking/git
    -> graph/fingerprint -> specs -> config and the small helpers below everything
"""

from __future__ import annotations

import ast
from pathlib import Path

from reconciler.specs.dependencies import find_cycles
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "reconciler"

# Module or package -> the rank of its layer; a module may import only equal or lower ranks.
# The longest matching prefix wins, so a package can hold a lower-ranked vocabulary module.
LAYERS = {
    # Helpers every layer may use: no reconciler imports of their own beyond this rank.
    "reconciler.fileio": 0, "reconciler.values": 0, "reconciler.config": 0, "reconciler.redaction": 0,
    "reconciler.errors": 0, "reconciler.lock": 0, "reconciler.state_files": 0, "reconciler.starter": 0,
    "reconciler.actor": 0, "reconciler.codeowners": 0, "reconciler.peer_text": 0,
    "reconciler.specs": 1,
    "reconciler.graph": 2, "reconciler.fingerprint": 2, "reconciler.sources_digest": 2,
    "reconciler.contamination": 2,
    # Other tools' configs -> specs: builds spec documents, below anything that reads the world.
    "reconciler.importers": 2,
    # Records and the edges that read the world: MLflow, Git, job files, sizes.
    "reconciler.state": 3, "reconciler.jobs": 3, "reconciler.sizing": 3, "reconciler.tracking": 3,
    "reconciler.git": 3, "reconciler.pin": 3,
    # Sweeps: trials as resources (pure) and Optuna's suggestions, read by plan and apply.
    "reconciler.sweeps": 3,
    "reconciler.plan": 4, "reconciler.status": 4, "reconciler.backends": 4,
    "reconciler.apply": 5,
    "reconciler.project": 6,
    # Clients of the project façade: the daemon calls it in-process, as the command line does.
    "reconciler.daemon": 7,
    # The dashboard: reads through the façade, served by `tuneops ui` and by the daemon.
    "reconciler.ui": 7, "reconciler.ui.layout": 4, "reconciler.ui.charts": 0,
    "reconciler.cli": 8, "reconciler.__main__": 8, "reconciler.runtime": 8,
}
PURE = ("reconciler.specs", "reconciler.importers", "reconciler.graph", "reconciler.fingerprint",
        "reconciler.plan.plan", "reconciler.contamination", "reconciler.plan.contamination",
        "reconciler.plan.gates", "reconciler.plan.in_use", "reconciler.plan.report",
        "reconciler.sizing.memory", "reconciler.sizing.activations", "reconciler.sizing.strategy",
        "reconciler.sizing.throughput", "reconciler.sizing.estimates", "reconciler.state",
        "reconciler.status", "reconciler.plan.sweeps", "reconciler.sweeps.trials", "reconciler.sweeps.limits",
        "reconciler.plan.costs", "reconciler.codeowners", "reconciler.ui.layout", "reconciler.ui.charts")
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


def test_every_layer_and_pure_entry_names_a_module_that_exists():
    """A stale entry (a module renamed or removed) would silently check nothing."""
    names = {name for name, _ in modules()}
    assert [entry for entry in (*LAYERS, *PURE) if entry not in names] == []


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
        if any(name == pure or name.startswith(pure + ".") for pure in PURE):
            offenders += [f"{name} imports {m}" for m in imports_of(path)
                          if m.split(".")[0] in IMPURE_LIBRARIES]
    assert offenders == []


def _imported_modules(path: Path, names: set[str]) -> set[str]:
    """The reconciler modules a file imports: `from pkg import sub` is the module pkg.sub,
    `from mod import name` is mod; lazy imports inside functions count too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in names else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    resolved = set()
    for imported in found:
        while imported and imported not in names:
            imported = imported.rpartition(".")[0]
        if imported and imported != "reconciler":
            resolved.add(imported)
    return resolved


def _module_graph() -> dict[str, set[str]]:
    """Module -> the reconciler modules it imports."""
    names = {name for name, _ in modules()}
    return {name: _imported_modules(path, names) - {name} for name, path in modules()}


def test_no_import_circles():
    assert find_cycles(_module_graph()) == []  # each as [a, b, ..., a]

