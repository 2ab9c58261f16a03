"""Command-line interface: `lorasel <command>`.

Each command is a module of this package that registers itself on ``app``.
"""

from __future__ import annotations

from lorasel.cli import (  # noqa: F401  (commands register themselves)
    demo_cmd,
    eval_cmd,
    inspect_cmd,
    pick_cmd,
    rank_cmd,
    report_cmd,
    train_cmd,
    tui_cmd,
)
from lorasel.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lorasel")


__all__ = ["app", "main"]
