"""Words for counts in what lorasel prints."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular for one: "1 checkpoint", "3 checkpoints", "0 seeds"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
