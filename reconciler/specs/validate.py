"""Validate a spec repository: read, check each spec, then check the set as a whole.

The one entry point the CLI and the reconciler use. It never raises for bad input: every
problem a user can cause comes back as a Problem.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

from reconciler.specs import loader, rules
from reconciler.specs.problems import Problem, Severity
from reconciler.specs.specset import SpecSet


@dataclass(frozen=True)
class ValidationResult:
    specs: SpecSet
    problems: tuple[Problem, ...]
    files: tuple[str, ...]
    strict: bool

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.WARNING]

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        """The documented, versioned JSON form (see docs/cli.md)."""
        return {
            "version": 1,
            "valid": self.valid,
            "strict": self.strict,
            "specs": len(self.specs),
            "files": len(self.files),
            "errors": [p.to_json() for p in self.errors],
            "warnings": [p.to_json() for p in self.warnings],
        }


def validate_path(path: Path, *, strict: bool = False) -> ValidationResult:
    # Loading allocates many small objects and frees none (node trees are kept for positions),
    # so the cyclic collector would rescan them again and again for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _validate(path, strict)
    finally:
        if collecting:
            gc.enable()


def _validate(path: Path, strict: bool) -> ValidationResult:
    loaded = loader.load(path)
    by_id, problems = rules.find_duplicates(loaded.specs)
    problems = loaded.problems + problems
    specs = SpecSet(loaded.root, loaded.settings, by_id)
    problems += rules.check(specs, loaded.declared)
    strict = strict or loaded.settings.policy.strict
    if strict:
        problems = [p.as_error() for p in problems]
    return ValidationResult(specs, tuple(sorted(problems, key=Problem.sort_key)),
                            tuple(loaded.files), strict)
