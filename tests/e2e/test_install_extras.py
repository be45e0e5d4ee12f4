"""Installing the extras in any order leaves a consistent environment (`pip check` clean).

pip resolves each `pip install '.[extra]'` on its own and, by default, upgrades an installed
package only when the new request needs it. So installing [kubernetes] after [train] once pulled
kubernetes 37, which needs python-dateutil>=3, over mlflow's graphene, which refuses it. This
resolves each extra as pip would on a fresh machine (`pip install --dry-run --report`, no
install) and replays each order: whatever the second install would change must still satisfy
what the first installed.
"""

from __future__ import annotations

import functools
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO_ROOT

EXTRAS = ("train", "kubernetes", "daemon", "eval")

pytestmark = pytest.mark.slow


def _resolve(extra: str, folder: Path) -> dict[str, dict]:
    """name -> the metadata pip would install for `.[extra]` on an empty environment."""
    report = folder / f"{extra}.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--report", str(report), "-c", str(REPO_ROOT / ".ci/constraints.txt"), f".[{extra}]"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"pip cannot resolve .[{extra}]: {done.stderr[-2000:]}")
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]
            for item in json.loads(report.read_text())["install"]}


@functools.cache
def _requirement(text: str) -> Requirement:
    """Parsed once: the same requirements are looked through for every pair of extras."""
    return Requirement(text)


def _wants(closure: dict[str, dict], name: str) -> list[Requirement]:
    """Every requirement on `name` that the packages of `closure` declare (extras off)."""
    found = []
    for metadata in closure.values():
        for text in metadata.get("requires_dist") or ():
            requirement = _requirement(text)
            if canonicalize_name(requirement.name) != name:
                continue
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                found.append(requirement)
    return found


def _refusing(closure: dict[str, dict], name: str, version: str) -> list[str]:
    return [f"{req} (from {owner})" for owner, metadata in closure.items()
            for req in _wants({owner: metadata}, name)
            if not req.specifier.contains(Version(version), prereleases=True)]


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("pip-reports")
    # Four independent `pip` processes, each mostly on one core: at once, not one after another.
    with ThreadPoolExecutor(max_workers=len(EXTRAS)) as pool:
        reports = {extra: pool.submit(_resolve, extra, folder) for extra in EXTRAS}
        return {extra: report.result() for extra, report in reports.items()}


@pytest.mark.parametrize(("first", "then"), list(itertools.permutations(EXTRAS, 2)))
def test_installing_one_extra_after_another_breaks_nothing(resolved, first: str, then: str):
    installed, wanted = resolved[first], resolved[then]
    conflicts = []
    for name, metadata in wanted.items():
        if name not in installed or name == "tuneops":
            continue
        kept = installed[name]["version"]
        if not _refusing(wanted, name, kept):
            continue  # pip keeps what is installed
        replaced_by = metadata["version"]  # what pip installs instead, as on a fresh machine
        broken = _refusing(installed, name, replaced_by)
        if broken:
            conflicts.append(f"{name} {kept} -> {replaced_by} breaks {', '.join(broken)}")
    assert not conflicts, f"pip install '.[{first}]' then '.[{then}]': " + "; ".join(conflicts)


def test_the_dev_extra_declares_what_the_tests_import():
    """markdown-it-py (the plan's Markdown is parsed in tests), the Kubernetes libraries, and
    selenium (the dashboard's browser tests)."""
    from importlib.metadata import requires

    dev = [Requirement(text) for text in requires("tuneops") or ()]
    declared = {canonicalize_name(req.name) for req in dev
                if req.marker is not None and req.marker.evaluate({"extra": "dev"})}
    wanted = {"markdown-it-py", "kubernetes", "kubernetes-validate", "pytest", "hypothesis", "selenium"}
    assert wanted <= declared
