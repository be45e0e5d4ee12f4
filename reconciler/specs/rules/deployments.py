"""Rules on Deployments: something gates what they serve, each alias is moved by one of them,
and the names Kubernetes gives their Services (and a multi-node FineTune's) are valid.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.specs.base import ResourceId, kubernetes_name
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.problems import Problem
from reconciler.specs.rules.registry import ERROR, WARNING, RuleContext, problem, rule
from reconciler.specs.sweep import SweepResource
from reconciler.values import kubernetes as kube


@rule
def deployments_are_gated(ctx: RuleContext) -> Iterator[Problem]:
    aliases: dict[tuple[str, str], LoadedSpec] = {}
    for spec, deployment in ctx.deployments():
        s = deployment.spec
        served = _served_fine_tune(ctx, s.model.source)
        if served is None:  # a Sweep that is not defined: references_exist says so
            continue
        resolved = True
        gating = False
        for index, name in enumerate(s.requires):
            evaluation = ctx.specs.resource(ResourceId("Evaluation", name), EvaluationResource)
            if evaluation is None:
                resolved = False
                continue
            if evaluation.spec.model.target != served:
                what = f"the served {served}" if s.model.sweep is None else \
                    f"{served}, the template of the served Sweep '{s.model.sweep}'"
                yield problem(spec, ERROR, "gate-for-other-model",
                              f"Evaluation '{name}' scores {evaluation.spec.model.target}, not "
                              f"{what}", ("spec", "requires", index))
            elif evaluation.spec.is_gating:
                gating = True
        if resolved and not gating and not s.allow_ungated:
            yield problem(spec, ERROR, "ungated-deployment",
                          f"nothing gates what this Deployment serves: no Evaluation with gates of "
                          f"{served} is in requires", ("spec", "requires") if s.requires else ("spec",),
                          key=True, hint="add one to requires, or set allowUngated: true")
        if ctx.settings.backend == "local" and s.autoscaling is not None:
            yield problem(spec, WARNING, "ignored-setting",
                          "the local backend runs one server: autoscaling takes effect on Kubernetes only",
                          ("spec", "autoscaling"))
        if (ctx.settings.backend == "kubernetes" and s.runtime == "vllm" and s.resources.gpus == 0):
            yield problem(spec, WARNING, "needs-gpu",
                          "vLLM on Kubernetes expects a GPU per replica, and resources.gpus is 0",
                          ("spec", "runtime"), hint="set resources.gpus, or use runtime: transformers")
        # a Sweep's trials register where the sweep engine says; their aliases are its to check
        fine_tune = ctx.specs.resource(served, FineTuneResource) if s.model.sweep is None else None
        if fine_tune is not None:
            slot = (fine_tune.registered_model, s.alias)
            if slot in aliases:
                written = "alias" in s.model_fields_set
                yield problem(spec, ERROR, "duplicate-alias",
                              f"alias '{s.alias}'{'' if written else ' (the default)'} of registered "
                              f"model '{slot[0]}' is already moved by {aliases[slot].id}",
                              ("spec", "alias") if written else ("spec",), key=not written,
                              hint="give one of the Deployments another alias")
            else:
                aliases[slot] = spec


def _served_fine_tune(ctx: RuleContext, source: ResourceId) -> ResourceId | None:
    """The FineTune whose versions a Deployment serves: its own, or its Sweep's template (None
    when the Sweep is not defined)."""
    if source.kind != "Sweep":
        return source
    sweep = ctx.specs.resource(source, SweepResource)
    return ResourceId("FineTune", sweep.spec.fine_tune) if sweep is not None else None


@rule
def service_names_start_with_a_letter(ctx: RuleContext) -> Iterator[Problem]:
    """A Deployment's Service, and the headless Service of a multi-node FineTune, are named after
    the spec; Service names are DNS-1035 labels (IsDNS1035Label), which start with a letter."""
    on_kubernetes = ctx.settings.backend == "kubernetes"  # elsewhere only `tuneops render` meets it
    for spec in ctx.specs:
        resource = spec.resource
        if isinstance(resource, DeploymentResource):
            service = "its Service"
        elif isinstance(resource, FineTuneResource) and resource.spec.resources.nodes > 1:
            service = "the Service that connects its nodes"
        else:
            continue
        name = kubernetes_name(resource.name)  # a team's spec: `<team>-<name>`
        if not kube.is_dns1035_label(name):
            yield problem(spec, ERROR if on_kubernetes else WARNING, "invalid-kubernetes-name",
                          f"{resource.KIND} names become the name of {service}, which must start with a "
                          "letter (a DNS-1035 label)", ("metadata", "name"), value=name,
                          hint="start the name with a letter" if name == resource.name
                          else "start the team's name with a letter")
