"""One line: the composite weights (the one being adjusted highlighted), the strength filter,
and whether the table is ranked by score or by training loss."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lorasel.results import METRIC_SHORT
from lorasel.tui.session import WEIGHT_NAMES, ViewState
from lorasel.tui.text import strength_text


def weights_text(state: ViewState) -> Text:
    text = Text()
    text.append("weights ", style="bold")
    values = state.weights.as_dict()
    for i, name in enumerate(WEIGHT_NAMES):
        item = f"{METRIC_SHORT[name]} {values[name]:g}"
        text.append(item, style="reverse bold" if i == state.weight_index else "")
        text.append("  ")
    text.append("│ strength ", style="bold")
    text.append("all" if state.strength is None else strength_text(state.strength))
    text.append(" │ ", style="bold")
    if state.by_loss:
        text.append("by LOSS", style="bold yellow")
    else:
        text.append(f"by {state.sort}" + (" (reversed)" if state.reverse else ""))
    return text


class WeightsBar(Static):
    """Shows a :class:`ViewState`'s weights, filter and mode."""

    DEFAULT_CSS = """
    WeightsBar { height: 1; padding: 0 1; background: $boost; }
    """

    def show(self, state: ViewState) -> None:
        self.update(weights_text(state))
