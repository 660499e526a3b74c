"""Conventions shared by the Verticore command lines (``verticore`` and each app's own command).

Each CLI builds its root ``typer.Typer(cls=VerticoreGroup, ...)`` and its console entry point calls
:func:`run_app`. That gives every command the same contract:

========  ==========================================================================================
exit      meaning
========  ==========================================================================================
0         success
1         unexpected failure (a bug: the traceback is shown) or an aborted prompt
2         usage error: unknown option, missing or invalid argument, bad choice (click's convention)
3         data error: unreadable or mis-encoded input, missing column, corrupt artifact, unknown key,
          unavailable model or device (any :class:`~verticore.errors.VerticoreError`); one
          ``error: <message>`` line on stderr, no traceback
130       interrupted with Ctrl-C (no traceback)
========  ==========================================================================================

It also provides ``--version`` (:func:`add_version_option`) and the options with fixed choices:
``--device`` (:func:`device_option`), ``--backend`` (:func:`backend_option`, checked against the
inference backend registry) and fine-tuning ``--method`` (:func:`method_option`, checked against
the fine-tuning method registry), so entries added by plugins are accepted.
"""
from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterable, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from .errors import VerticoreError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_INTERRUPTED = 130

DISTRIBUTION = "verticore"


def package_version() -> str:
    """The installed ``verticore`` distribution's version ("unknown" when run from an uninstalled tree)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def _print_version(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        typer.echo(f"{ctx.info_name or DISTRIBUTION} {package_version()}")
        raise typer.Exit(EXIT_OK)


def version_option() -> Any:
    """The eager ``--version`` option; put it in the app's ``@app.callback()`` (see :func:`add_version_option`)."""
    return typer.Option(False, "--version", callback=_print_version, is_eager=True,
                        help="Print the Verticore version and exit.")


def add_version_option(app: typer.Typer) -> None:
    """Give a root app without its own callback a ``--version`` option (the app's help text is kept)."""

    def _root(show_version: bool = version_option()) -> None:  # the eager callback does the work
        pass

    app.callback()(_root)


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with the data-error code (3)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_DATA) from None


class VerticoreGroup(TyperGroup):
    """Root command group of a Verticore CLI (``typer.Typer(cls=VerticoreGroup)``): maps a
    :class:`~verticore.errors.VerticoreError` to exit code 3 and Ctrl-C to 130, both without a traceback.

    The mapping lives in :meth:`invoke`, so it holds for the console scripts and for
    ``typer.testing.CliRunner().invoke(app, ...)`` alike.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VerticoreError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None


def run_app(typer_app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a Verticore typer app as a console script; exits with the documented code.

    Errors raised outside a command (while parsing, in an option callback) are mapped here too.
    """
    try:
        typer_app(args=argv, standalone_mode=True)
    except VerticoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_DATA)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


# -- fixed choices ----------------------------------------------------------------------------------
# The names are shown in --help; the registries are only read (imported) when a value is checked, so
# starting a CLI stays fast. Plugins' entries are accepted too; tests keep the built-in lists in sync.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
BUILTIN_BACKENDS = ("auto", "torch", "torch-int8", "onnx", "onnx-int8")
BUILTIN_METHODS = ("full", "lora")
_CUDA_INDEX = re.compile(r"cuda:\d+")


def _metavar(names: Iterable[str]) -> str:
    return "[" + "|".join(names) + "]"


def parse_device(value: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (what ``verticore.models.resolve_device`` accepts)."""
    device = str(value).strip().lower()
    if device in {"auto", "cpu", "cuda", "mps"} or _CUDA_INDEX.fullmatch(device):
        return device
    raise typer.BadParameter(f"{value!r} is not one of {', '.join(DEVICE_CHOICES)}")


def _registry_parser(kind: str, names: Callable[[], Iterable[str]]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        known = sorted(names())
        if value not in known:
            raise typer.BadParameter(f"{value!r} is not a registered {kind}; choose one of {', '.join(known)}")
        return value

    return parse


def _backend_names() -> list[str]:
    from .inference.backends import available_backends

    return available_backends()


def _method_names() -> list[str]:
    from .finetune.methods import available_methods

    return available_methods()


parse_backend = _registry_parser("backend", _backend_names)
parse_method = _registry_parser("fine-tuning method", _method_names)


def device_option(default: str = "auto", help: str = "torch device; auto picks cuda, then mps, then cpu") -> Any:
    """A ``--device`` option restricted to :data:`DEVICE_CHOICES`."""
    return typer.Option(default, "--device", parser=parse_device, metavar=_metavar(DEVICE_CHOICES), help=help)


def backend_option(default: str = "torch", help: str = "inference backend (all of them: `verticore info`)") -> Any:
    """A ``--backend`` option checked against the inference backend registry."""
    return typer.Option(default, "--backend", parser=parse_backend, metavar=_metavar(BUILTIN_BACKENDS), help=help)


def method_option(default: str = "full", help: str = "fine-tuning method") -> Any:
    """A ``--method`` option checked against the fine-tuning method registry."""
    return typer.Option(default, "--method", parser=parse_method, metavar=_metavar(BUILTIN_METHODS), help=help)


#: built-in metavar -> the registry names that replace it when help is shown
_REGISTRY_METAVARS: dict[str, Callable[[], Iterable[str]]] = {
    _metavar(BUILTIN_METHODS): _method_names, _metavar(BUILTIN_BACKENDS): _backend_names}


class RegistryChoicesCommand(TyperCommand):
    """A command (``@app.command(cls=RegistryChoicesCommand)``) whose ``--help`` lists every registered
    ``--method`` / ``--backend`` name, plugins included; the registry is read only when help is shown."""

    def get_params(self, ctx: typer.Context) -> list:
        params = super().get_params(ctx)
        for param in params:
            names = _REGISTRY_METAVARS.get(getattr(param, "metavar", None) or "")
            if names is not None:
                param.metavar = _metavar(list(names()))
        return params


def choice_option(default: str, choices: Iterable[str], *param_decls: str, help: str) -> Any:
    """An option restricted to a fixed tuple of strings, shown as ``[a|b|c]`` in ``--help``."""
    allowed = tuple(choices)

    def parse(value: str) -> str:
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return typer.Option(default, *param_decls, parser=parse, metavar=_metavar(allowed), help=help)
