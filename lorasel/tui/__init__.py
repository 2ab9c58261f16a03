"""The Textual TUI (`lorasel tui PATH`): rank and compare checkpoints live.

Only the CLI imports this package; the core never does (tests/test_layering.py). Importing the
package itself loads nothing: Textual and textual-image come with :mod:`lorasel.tui.app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorasel.tui.app import LoraselTUI

__all__ = ["LoraselTUI", "make_app"]


def make_app(*args: Any, **kwargs: Any) -> LoraselTUI:
    """:func:`lorasel.tui.app.make_app` (see there)."""
    from lorasel.tui.app import make_app as _make_app

    return _make_app(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "LoraselTUI":
        from lorasel.tui.app import LoraselTUI

        return LoraselTUI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
