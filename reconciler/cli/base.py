"""The `tuneops` command line's shared parts: the group, its one error handler, and the option
helpers every command uses. Commands live beside it, one module per family; each is thin:
parse, call the project façade, print, exit code.

Every import beyond click happens inside the command that needs it, so `tuneops --help` and
`tuneops validate` stay fast and never load the training or cluster libraries.

Exit codes: 0 success, 1 invalid specs or a failed command, 2 a usage error.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from reconciler import __version__
from reconciler.errors import EXIT_ERROR, TuneopsError

if TYPE_CHECKING:
    from reconciler.project import Project, ProjectInvalid
    from reconciler.specs.base import ResourceId
    from reconciler.specs.policy import Approval

EXIT_INVALID = EXIT_ERROR


class UserError(TuneopsError, click.ClickException):
    """A mistake the user can fix: printed as one line, no traceback, exit 1."""

    def show(self, file: IO[Any] | None = None) -> None:  # click's signature
        _say_error(self)


def _say_error(error: TuneopsError) -> None:
    from reconciler.redaction import redact

    click.echo(f"error: {redact(error.one_line())}", err=True)


class _Reported(click.ClickException):
    """A TuneopsError on its way out through click: one line (and its hint), its exit code."""

    def __init__(self, error: TuneopsError):
        super().__init__(str(error))
        self.error, self.exit_code = error, error.exit_code

    def show(self, file: IO[Any] | None = None) -> None:  # click's signature
        _say_error(self.error)


class _Commands(click.Group):
    """The one place that turns any TuneopsError a command raises into what the user sees."""

    def invoke(self, ctx: click.Context) -> object:  # whatever the command returns
        try:
            return super().invoke(ctx)
        except TuneopsError as error:
            from reconciler.project import ProjectInvalid

            if isinstance(error, ProjectInvalid):  # found past loading (a plan fetching a config)
                exit_invalid(ctx, error, "planned")
            raise _Reported(error) from None


_short_lived = False


def short_lived() -> None:
    """For read-only commands that finish in about a second: no cyclic garbage collection (they
    allocate much and free nothing), and `main` skips tearing the heap down at exit, as mypy
    does. Never for commands that log to MLflow, run jobs or serve: they need atexit hooks.
    pydantic's plugin discovery (a scan of every installed package's entry points, for
    observability hooks) is skipped unless the user set PYDANTIC_DISABLE_PLUGINS themselves."""
    global _short_lived
    _short_lived = True
    gc.disable()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def short_lived_run() -> bool:
    """Whether the command that ran asked to skip tearing the heap down at exit (`main`)."""
    return _short_lived


def use_color(ctx: click.Context) -> bool:
    if ctx.color is not None:
        return ctx.color
    if os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


SPEC_PATH = click.Path(exists=True, path_type=Path)
FORMAT_HELP = "Output format."


@click.group(cls=_Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tuneops")
@click.option("--color/--no-color", default=None,
              help="Force colored output on or off (default: on for a terminal; NO_COLOR is honoured).")
@click.pass_context
def cli(ctx: click.Context, color: bool | None) -> None:
    """GitOps for LLM fine-tuning: specs in Git, a plan you can review, lineage in MLflow.

    Specs for datasets, base models, fine-tunes, evaluations and deployments live in YAML
    files. Start with `tuneops init`, check with `tuneops validate`.
    """
    ctx.color = color


def resource_id(value: str) -> ResourceId:
    from reconciler.specs.base import ResourceId
    from reconciler.specs.kinds import KINDS

    kind, sep, name = value.partition("/")
    if not sep or not name:
        raise click.BadParameter(f"'{value}' is not KIND/NAME, e.g. FineTune/support-sft")
    matches = [k for k in KINDS if k.lower() == kind.lower()]
    if not matches:
        raise click.BadParameter(f"unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    return ResourceId(matches[0], name)



def targets_of(values: tuple[str, ...]) -> frozenset[ResourceId] | None:
    return frozenset(resource_id(v) for v in values) or None



def load_project(ctx: click.Context, path: Path, approval: Approval | None = None) -> Project:
    """The validated project, or the validation report and exit 1: invalid specs are never
    planned or applied. `approval` lets through violations of the policies it names."""
    from reconciler.project import Project, ProjectInvalid

    try:
        project = Project.load(path, approval=approval)
    except ProjectInvalid as invalid:
        refuse_unknown_approvals(approval, invalid.result.specs)
        exit_invalid(ctx, invalid, "planned")
    refuse_unknown_approvals(approval, project.specs)
    return project


def refuse_unknown_approvals(approval: Approval | None, specs: Any) -> None:
    """A usage error for `--approve` of a policy that is not defined (a typo approves nothing)."""
    from reconciler.specs.rules.policies import approvable
    from reconciler.specs.schema_errors import suggest

    if approval is None:
        return
    defined = sorted(approvable(specs))
    for name in sorted(approval.policies - set(defined)):
        known = suggest(name, defined) or (
            f"policies: {', '.join(defined)}" if defined else "no Policy is defined")
        raise click.UsageError(f"--approve {name}: no Policy named {name!r} ({known})")


APPROVE_HELP = ("Let violations of this Policy through (repeatable), as a pull-request label would; "
                "needs --reason. Shown in the plan, and recorded in MLflow when applied.")
REASON_HELP = "Why the --approve'd violations are acceptable: recorded with who approved them."


def approval_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--approve POLICY` (repeatable) and `--reason TEXT`, for validate, plan and apply."""
    command = click.option("--reason", "approval_reason", metavar="TEXT", help=REASON_HELP)(command)
    return click.option("--approve", "approved", multiple=True, metavar="POLICY", help=APPROVE_HELP)(command)


def approval_of(approved: tuple[str, ...], reason: str | None) -> Approval | None:
    """The command line's approval; a usage error when it does not say why."""
    from reconciler.actor import who_applies
    from reconciler.specs.policy import Approval

    if not approved:
        if reason:
            raise click.UsageError("--reason explains an --approve: name the Policy it approves")
        return None
    if any(not name.strip() for name in approved):
        raise click.UsageError("--approve takes a Policy's name")
    if not (reason or "").strip():
        raise click.UsageError("--approve needs --reason: say why the violation is acceptable "
                               "(it is recorded with who approved it)")
    return Approval(frozenset(name.strip() for name in approved), " ".join((reason or "").split()),
                    f"{who_applies()} (--approve)")



def exit_invalid(ctx: click.Context, invalid: ProjectInvalid, what: str) -> NoReturn:
    from reconciler.specs.report import validation_text

    click.echo(validation_text(invalid.result, color=use_color(ctx)), err=True)
    click.echo(f"error: the specs are invalid: nothing was {what}", err=True)
    ctx.exit(EXIT_INVALID)



TARGET_HELP = "Only this resource and what it depends on (KIND/NAME; repeatable)."


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)



def confirm(question: str) -> bool:
    """Ask on the terminal. Without one (CI, a pipe that ends), say what to pass instead of
    click's bare "Aborted!"."""
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        if sys.stdin.isatty():
            raise  # Ctrl-C or Ctrl-D at the prompt: the person's own answer
        click.echo("", err=True)
        raise UserError(f"no answer to '{question.strip()}': there is no terminal to ask on "
                        "(pass --yes to apply without asking)") from None

