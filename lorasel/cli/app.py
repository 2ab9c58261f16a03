"""The typer application and the one place where errors meet a person.

Commands live one per module in this package and register themselves on
``app``; they parse options, call the library and print. Heavy imports (torch,
diffusers) happen inside the command functions so `lorasel --help` is instant.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from lorasel import __version__
from lorasel.errors import LoraselError


class _State:
    debug: bool = bool(os.environ.get("LORASEL_DEBUG"))


state = _State()


class LoraselGroup(TyperGroup):
    """The command group: turns any LoraselError into one line and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LoraselError as exc:
            report_error(exc)
            ctx.exit(exc.exit_code)


class LoraselApp(typer.Typer):
    """A Typer app whose group reports LoraselError as ``error: ... (hint: ...)``."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("cls", LoraselGroup)
        super().__init__(**kwargs)


def report_error(exc: LoraselError) -> None:
    if state.debug:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(exc.one_line(), err=True)


app = LoraselApp(
    name="lorasel",
    help="Train LoRAs and pick the best (checkpoint, strength) by measurement, not by loss.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lorasel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors (also LORASEL_DEBUG=1).")
    ] = False,
) -> None:
    """Train LoRAs and pick the best (checkpoint, strength) by measurement, not by loss."""
    state.debug = debug or bool(os.environ.get("LORASEL_DEBUG"))
