"""Configs are user input: any key may hold a value of the wrong type. Each top-level key of each
typical config, and each key of its first dataset entry, is replaced in turn by values of other
types; the import must translate or report it (or refuse the config with a TuneopsError), never
crash."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from reconciler.errors import TuneopsError
from reconciler.importers import import_config
from tests.unit.importers.configs import CONFIGS, write_project

WRONG = [3, -1, 2.5, True, None, "text", [], [1, "a"], {}, {"x": 1}]


def _variants(config: dict) -> list[tuple[str, dict]]:
    found = []
    for key in config:
        for value in WRONG:
            found.append((f"{key}={value!r}", {**config, key: value}))
    for group in ("datasets", "test_datasets"):
        entries = config.get(group)
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            for key in entries[0]:
                for value in WRONG:
                    entry = {**entries[0], key: value}
                    found.append((f"{group}[0].{key}={value!r}", {**config, group: [entry, *entries[1:]]}))
    return found


@pytest.mark.parametrize("tool, shape", sorted(CONFIGS))
def test_no_value_of_the_wrong_type_crashes_the_import(tmp_path: Path, tool: str, shape: str) -> None:
    root = write_project(tmp_path / "project")
    config = yaml.safe_load(textwrap.dedent(CONFIGS[(tool, shape)]))
    crashes = []
    for index, (label, variant) in enumerate(_variants(config)):
        path = root / "configs" / f"v{index}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(variant))
        try:
            import_config(tool, path, root / "specs", cwd=root)
        except TuneopsError:
            pass
        except Exception as error:  # noqa: BLE001 - what this test looks for
            crashes.append(f"{label}: {type(error).__name__}: {error}")
    assert not crashes, "\n".join(crashes[:40]) + f"\n({len(crashes)} crashes)"
