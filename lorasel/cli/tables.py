"""Rich tables on the command line."""

from __future__ import annotations


def print_table(console, table) -> None:
    """``table`` at its full width when the output is piped (one row per line, for grep and
    diff), not folded into the 80 columns Rich assumes without a terminal."""
    if not console.is_terminal:
        from rich.measure import Measurement

        wide = Measurement.get(console, console.options.update(max_width=2000), table).maximum
        console.width = max(console.width, wide)
    console.print(table)
