"""Validate a spec repository: read, check each spec, then check the set as a whole.

The one entry point the CLI and the reconciler use. It never raises for bad input: every
problem a user can cause comes back as a Problem.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler.specs import loader, rules
from reconciler.specs.base import ResourceId
from reconciler.specs.builtin_policies import builtin_policies
from reconciler.specs.loader import UNPARSED_CODES, LoadedSpec
from reconciler.specs.policy import NO_APPROVAL, Approval
from reconciler.specs.problems import Problem, Severity
from reconciler.specs.rules.benchmarks import task_yaml_files
from reconciler.specs.rules.policies import APPROVED
from reconciler.specs.rules.teams import export_problems
from reconciler.specs.specset import SpecSet


@dataclass(frozen=True)
class UncheckedReference:
    """A reference to a spec that is not defined, not reported: the file that would define it
    did not parse, so the error would only repeat that one."""

    file: str  # the referring spec's file
    target: ResourceId
    unparsed_file: str  # where the name appears, or the file that could not be read at all


@dataclass(frozen=True)
class ValidationResult:
    specs: SpecSet  # the whole project, even when only some files were asked about
    problems: tuple[Problem, ...]  # in the files asked about
    files: tuple[str, ...]  # the files asked about, as shown
    strict: bool
    checked_specs: int  # specs in the files asked about
    scoped: bool = False  # files were asked about, not a whole folder
    is_project: bool = True  # False: a folder with no tuneops.yaml and no tuneops spec in it
    unchecked: tuple[UncheckedReference, ...] = ()

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.WARNING]

    @property
    def valid(self) -> bool:
        return not self.errors

    def adding(self, extra: list[Problem]) -> ValidationResult:
        """This result with problems found by a later pass (the capacity check), under the same
        scope and strictness."""
        if self.scoped:
            extra = [p for p in extra if p.position.file in self.files]
        if self.strict:
            extra = [p.as_error() for p in extra]
        return replace(self, problems=reading_order([*self.problems, *extra]))

    def to_json(self) -> dict:
        """The documented, versioned JSON form (see docs/cli.md)."""
        return {
            "version": 1,
            "valid": self.valid,
            "strict": self.strict,
            "specs": self.checked_specs,
            "files": len(self.files),
            "errors": [p.to_json() for p in self.errors],
            "warnings": [p.to_json() for p in self.warnings],
            "unchecked_references": len(self.unchecked),
        }


def reading_order(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """Files that did not parse first, each starting with why: the rest of the report may
    change once they do. Then by file, line and column."""
    problems = list(problems)
    unparsed = {p.position.file for p in problems if p.code in UNPARSED_CODES}
    return tuple(sorted(problems, key=lambda p: (p.position.file not in unparsed, p.position.file,
                                                 p.code not in UNPARSED_CODES, *p.sort_key()[1:])))


def validate_path(path: Path, *, strict: bool = False, approval: Approval = NO_APPROVAL) -> ValidationResult:
    return validate_paths([path], strict=strict, approval=approval)


def validate_paths(paths: list[Path], *, strict: bool = False,
                   approval: Approval = NO_APPROVAL) -> ValidationResult:
    """Validate one project folder, or files within their project. Raises loader.ScopeError
    for paths that are not one project."""
    root, requested = loader.resolve_scope(paths)
    # Loading allocates many small objects and frees none (node trees are kept for positions),
    # so the cyclic collector would rescan them again and again for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _validate(root, requested, strict, approval)
    finally:
        if collecting:
            gc.enable()


def _validate(root: Path, requested: list[Path] | None, strict: bool, approval: Approval) -> ValidationResult:
    loaded = loader.load(root, also=requested or ())
    by_id, problems = rules.find_duplicates(loaded.specs)
    builtin = builtin_policies(loaded.settings, loaded.root, loaded.settings_file, loaded.settings_document)
    specs = SpecSet(loaded.root, loaded.settings, by_id, builtin)
    # Task YAMLs an Evaluation names are lm-eval's files, not specs: their own rule reads them.
    task_yamls = task_yaml_files(specs)
    loaded.files = [file for file in loaded.files if file not in task_yamls]
    loaded.unparsed = {file: text for file, text in loaded.unparsed.items() if file not in task_yamls}
    problems = [p for p in loaded.problems if p.position.file not in task_yamls] + problems
    unchecked = list(_unchecked_references(specs, loaded.declared, loaded.unparsed))
    problems += rules.check(specs, loaded.declared | {ref.target for ref in unchecked}, approval)
    problems += export_problems(specs, loaded.declared, loaded.settings_file, loaded.settings_document)
    strict = strict or loaded.settings.policy.strict
    if strict:  # an approved policy violation stays a warning: approving it is what lets it through
        problems = [p if p.code == APPROVED else p.as_error() for p in problems]
    files = tuple(loaded.files)
    checked = len(specs)
    if requested is not None:
        files = tuple(loader.display_path(path) for path in requested)
        problems = [p for p in problems if p.position.file in files]
        unchecked = [ref for ref in unchecked if ref.file in files]
        checked = sum(1 for spec in specs if spec.file in files)
    return ValidationResult(specs, reading_order(problems), files, strict, checked,
                            scoped=requested is not None,
                            is_project=requested is not None or loaded.is_project, unchecked=tuple(unchecked))


def _unchecked_references(specs: SpecSet, declared: set[ResourceId],
                          unparsed: Mapping[str, str | None]) -> Iterable[UncheckedReference]:
    """References to specs that are not defined but may be, in a file that did not parse: its
    text names them (or it could not be read at all)."""
    if not unparsed:
        return
    spec: LoadedSpec
    for spec in specs:
        for ref in spec.resource.references():
            if ref.target in specs or ref.target in declared:
                continue
            word = re.compile(rf"(?<![\w.-]){re.escape(ref.target.name)}(?![\w.-])")
            where = next((file for file, text in unparsed.items() if text is None or word.search(text)),
                         None)
            if where is not None:
                yield UncheckedReference(spec.file, ref.target, where)
