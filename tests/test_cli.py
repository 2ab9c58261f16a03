"""The CLI frame: version, usage errors, and the one-line error contract."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer
from typer.testing import CliRunner

from lorasel import __version__
from lorasel.cli import app
from lorasel.cli.app import LoraselApp, _root
from lorasel.errors import CheckpointError, LoraselError, NoCandidateError

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"lorasel {__version__}"


def test_unknown_command_prints_usage_and_exits_2():
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2
    assert "Usage:" in result.output
    assert "No such command" in result.output


def test_unknown_option_exits_2():
    result = runner.invoke(app, ["--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.output


def _failing_app(exc: Exception) -> LoraselApp:
    """An app built like the real one, with one command that raises ``exc``."""
    test_app = LoraselApp(add_completion=False, pretty_exceptions_enable=False)
    test_app.callback()(_root)

    @test_app.command()
    def fail(what: Annotated[str, typer.Argument()] = "x") -> None:
        raise exc

    return test_app


def test_lorasel_error_is_one_line_on_stderr_with_exit_2():
    err = CheckpointError("model.ckpt is a pickle file", hint="convert it to .safetensors")
    result = runner.invoke(_failing_app(err), ["fail"])
    assert result.exit_code == 2
    assert result.stderr == "error: model.ckpt is a pickle file (hint: convert it to .safetensors)\n"
    assert "Traceback" not in result.output


def test_multiline_message_is_folded_to_one_line():
    err = LoraselError("bad\nthing\n\nhere", hint="fix\nit")
    result = runner.invoke(_failing_app(err), ["fail"])
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: bad thing here (hint: fix it)")


def test_debug_shows_traceback():
    err = LoraselError("boom", hint="none")
    result = runner.invoke(_failing_app(err), ["--debug", "fail"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().endswith("error: boom (hint: none)")


def test_error_subclass_exit_code():
    result = runner.invoke(_failing_app(NoCandidateError("nothing fits")), ["fail"])
    assert result.exit_code == 3


def test_console_script_runs_as_module():
    out = subprocess.run(
        [sys.executable, "-m", "lorasel", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"lorasel {__version__}"
