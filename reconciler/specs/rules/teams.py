"""Rules of a project with teams: a spec names another team's spec only when that team exports
it, Policies match teams that exist, and two teams' servers sharing a namespace do not take the
same Kubernetes name. (Which team a file belongs to is the loader's: specs/teams.py.)"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.config import PROJECT_FILE
from reconciler.specs.base import (
    TEAM_SEPARATOR,
    Reference,
    ResourceId,
    bare_name,
    kubernetes_name,
    qualified_name,
    team_of,
)
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.kinds import KINDS, RULE_KINDS
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.policy import PolicyResource
from reconciler.specs.problems import Position, Problem, describe_value
from reconciler.specs.rules.registry import ERROR, RuleContext, problem, rule
from reconciler.specs.schema_errors import suggest
from reconciler.specs.specset import SpecSet
from reconciler.specs.yamldoc import Document


def _named(spec: LoadedSpec) -> list[Reference]:
    """The specs a spec names: its references, and an Evaluation's judge Deployment (read when
    the job starts, so no edge of the graph)."""
    refs = spec.resource.references()
    resource = spec.resource
    if isinstance(resource, EvaluationResource) and resource.spec.judge is not None \
            and resource.spec.judge.endpoint.deployment:
        refs.append(Reference(ResourceId("Deployment", resource.spec.judge.endpoint.deployment),
                              ("spec", "judge", "endpoint", "deployment"), "judge"))
    return refs


@rule
def cross_team_references_are_exported(ctx: RuleContext) -> Iterator[Problem]:
    teams = ctx.settings.teams
    for spec in ctx.specs:
        own = team_of(spec.resource.name)
        for ref in _named(spec):
            other = team_of(ref.target.name)
            if other is None or other == own or ref.target not in ctx.specs:
                continue  # a name that is not defined is the reference rule's
            exported = f"{ref.target.kind}/{bare_name(ref.target.name)}"
            if other not in teams:
                yield problem(spec, ERROR, "team-not-exported",
                              f"{ref.role} names '{ref.target.name}' of team '{other}', which {PROJECT_FILE} "
                              "does not define", ref.path, hint=suggest(other, list(teams)))
            elif exported not in teams[other].exports:
                yield problem(spec, ERROR, "team-not-exported",
                              f"{ref.role} names {ref.target.kind} '{ref.target.name}' of team '{other}', "
                              f"which team '{other}' does not export", ref.path,
                              hint=f"team '{other}' may share it: add {exported} to teams.{other}.exports in "
                                   f"{PROJECT_FILE}")


@rule
def policies_match_known_teams(ctx: RuleContext) -> Iterator[Problem]:
    teams = list(ctx.settings.teams)
    for spec in ctx.specs.of_kind("Policy"):
        policy = spec.resource
        assert isinstance(policy, PolicyResource)
        for index, team in enumerate(policy.spec.match.teams):
            if team == "*" or team in teams:
                continue
            if teams:
                hint = suggest(team, teams) or f"its teams: {', '.join(teams)}"
            else:
                hint = ("this project defines no teams (no `teams:` in tuneops.yaml): match every "
                        "spec with *")
            yield problem(spec, ERROR, "policy-unknown-team", f"no team '{team}' in {PROJECT_FILE}",
                          ("spec", "match", "teams", index), value=team, hint=hint)


@rule
def servers_have_distinct_names(ctx: RuleContext) -> Iterator[Problem]:
    """`a.b-c` and `a-b.c` both become the server `a-b-c`: refused where they share a namespace."""
    if not ctx.settings.teams:
        return
    taken: dict[tuple[str, str], str] = {}
    for spec in ctx.specs.of_kind("Deployment"):
        name = spec.resource.name
        team = team_of(name)
        settings = ctx.settings.teams.get(team or "")
        namespace = (settings.namespace if settings else None) or ctx.settings.kubernetes.namespace
        key = (namespace, kubernetes_name(name))
        if key in taken:
            yield problem(spec, ERROR, "team-name-collision",
                          f"Deployment '{name}' and Deployment '{taken[key]}' would both be served as "
                          f"'{key[1]}' in namespace {namespace}", ("metadata", "name"),
                          hint="rename one, or give the teams their own namespaces")
        else:
            taken[key] = name


def export_problems(specs: SpecSet, declared: set[ResourceId], settings_file: str | None,
                    settings_document: Document | None) -> list[Problem]:
    """Each `exports:` entry names a spec of its team, by KIND/NAME as written in the spec: a
    typo would export nothing. Reported at the entry's line in tuneops.yaml."""
    found = []
    for team, settings in specs.settings.teams.items():
        for index, export in enumerate(settings.exports):
            kind, _, name = export.partition("/")
            where = ("teams", team, "exports", index)
            line, column = settings_document.position(where) if settings_document is not None else (1, 1)
            position = Position(settings_file or PROJECT_FILE, line, column)
            if kind not in KINDS or kind in RULE_KINDS:
                message = f"{kind} is not a kind of spec another team can use"
                hint = suggest(kind, [k for k in KINDS if k not in RULE_KINDS])
            elif TEAM_SEPARATOR in name:
                message = f"name the spec as its team wrote it, without a team: {kind}/{bare_name(name)}"
                hint = None
            elif ResourceId(kind, qualified_name(team, name)) not in declared:
                message = f"team {team} has no {kind} named '{name}' to export"
                hint = suggest(name, [bare_name(n) for n in specs.names(kind) if team_of(n) == team])
            else:
                continue
            found.append(Problem(ERROR, "team-not-exported", message, position, ".".join(map(str, where[:3]))
                                 + f"[{index}]", describe_value(export), hint))
    return found
