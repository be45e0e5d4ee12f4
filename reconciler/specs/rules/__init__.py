"""Whole-repository rules: what no single spec can check on its own.

Each rule is a function from the RuleContext to Problems, registered in RULES, so a rule is
easy to find, to test from a fixture, and to document. Rules only see specs that passed their
own schema; a reference to a spec that exists but is invalid is not reported again.

The registry and what a rule is given live in `registry.py`; the rules, one module per family,
join it when imported here. Problems are put in reading order afterwards (validate.py), so the
order the families run in does not show.
"""

from __future__ import annotations

from reconciler.specs.base import ResourceId
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.policy import NO_APPROVAL, Approval
from reconciler.specs.problems import Problem
from reconciler.specs.rules import (
    alignment,
    benchmarks,
    deployments,
    evaluations,
    fine_tunes,
    policies,
    references,
    sources,
    sweeps,
    teams,
)
from reconciler.specs.rules.registry import ERROR, RULES, RuleContext, problem
from reconciler.specs.specset import SpecSet

# Importing a family registers its rules; this names them all, so none is left out by mistake.
FAMILIES = (references, fine_tunes, alignment, evaluations, benchmarks, sweeps, deployments, sources,
            policies, teams)


def check(specs: SpecSet, declared: set[ResourceId], approval: Approval = NO_APPROVAL) -> list[Problem]:
    ctx = RuleContext(specs, frozenset(declared), specs.settings, approval)
    return [found for check_rule in RULES for found in check_rule(ctx)]


def find_duplicates(loaded: list[LoadedSpec]) -> tuple[dict[ResourceId, LoadedSpec], list[Problem]]:
    """First definition wins; every later one is an error pointing back at the first."""
    by_id: dict[ResourceId, LoadedSpec] = {}
    problems = []
    for spec in loaded:
        first = by_id.get(spec.id)
        if first is None:
            by_id[spec.id] = spec
            continue
        problems.append(problem(spec, ERROR, "duplicate-name",
                                f"{spec.id} is already defined at "
                                f"{first.position(('metadata', 'name'))}",
                                ("metadata", "name"), hint="names are unique per kind"))
    return by_id, problems
