"""The Textual TUI (`lorasel tui PATH`): rank and compare checkpoints live.

Only the CLI imports this package; the core never does (tests/test_layering.py).
"""

from __future__ import annotations

from lorasel.tui.app import LoraselTUI, make_app

__all__ = ["LoraselTUI", "make_app"]
