"""Text from strangers, made safe to show: never markup, never terminal control sequences.

Checkpoint metadata, file names and prompts come from files people download. Rich and Textual
interpret ``[bold]``, ``[@click=app.quit]`` and ``[link=...]`` in plain ``str`` content, and a
terminal obeys escape sequences, so every piece of such text reaches the screen through
:func:`safe`: a :class:`rich.text.Text` (never parsed as markup) whose control characters are
spelled out (``\\x1b`` stays visible as the four characters ``\\x1b``).
"""

from __future__ import annotations

import math
from typing import Any

from rich.style import Style
from rich.text import Text


def clean(value: object, limit: int | None = None) -> str:
    """``value`` as one printable line: control characters spelled out, cut to ``limit`` chars."""
    out = []
    for ch in str(value):
        if ch.isprintable():
            out.append(ch)
        elif ch in "\n\t":
            out.append(" ")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    text = "".join(out)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def safe(value: object, style: str | Style = "", limit: int | None = None) -> Text:
    """A Text showing ``value`` literally (see :func:`clean`); markup is never interpreted."""
    return Text(clean(value, limit), style=style, no_wrap=False)


def num(value: Any, digits: int = 3) -> str:
    """A number for a table cell; ``-`` for missing (None, NA, NaN)."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(number):
        return "-"
    return f"{number:.{digits}f}"


def strength_text(value: float) -> str:
    return f"{float(value):g}"
