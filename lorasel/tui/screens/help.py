"""`?`: every key, what the columns and marks mean, and where the numbers come from."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from lorasel.tui.widgets.key_bar import KeyBar

#: What each action of the main screen does, by action name.
ACTION_HELP = {
    "next_sort": "sort by the next column (rank, epoch, strength, metrics, P(best), loss); "
    "clicking a column header sorts by it",
    "reverse_sort": "reverse the sort order",
    "next_weight": "select the next weight of the composite score (highlighted in the weights line)",
    "weight(1)": "raise (+ or =) or lower (-) the selected weight by 0.25: the table re-ranks at once",
    "reset_weights": "back to the starting weights",
    "filter_strength": "show one evaluated strength at a time, or all (re-ranks among those shown)",
    "toggle_loss": "order by training loss: what picking the lowest loss would give (↓)",
    "compare": "mark the row under the cursor for comparison (◆); again to unmark",
    "unit(1)": "next (]) or previous ([) prompt and seed in the images pane",
    "toggle_pane": "switch the lower pane between the detail and the renders",
    "zoom": "the lower pane alone on screen (and back)",
    "export": "write report/scores.csv and report/report.html",
    "open_report": "open report.html (all renders, plots) in the system viewer, writing it first",
    "evaluate": "start or continue the evaluation in the background (again: stop it); "
    "the table fills in as each strength finishes",
    "print_pick": "quit and print the pick as `lorasel pick --json` would, for these weights",
    "help": "this screen",
    "quit": "quit (with --print-pick, printing the pick)",
}

COLUMNS_HELP = (
    ("#", "rank by composite score; ★ the pick, = tied with it (could be the best: in the 95% "
     "confidence set for the best), ↓ what lowest loss picks (loss mode), ◆ marked for comparison"),
    ("ep, str", "training epoch of the checkpoint, LoRA strength (multiplier)"),
    ("fid", "fidelity: CLIP image cosine to the training images"),
    ("flex", "flexibility: CLIP text cosine to out-of-domain prompts (trigger -> class word)"),
    ("adh", "adherence: CLIP text cosine to in-domain prompts (trigger -> class word)"),
    ("div", "diversity: Vendi score of a prompt's renders over seeds"),
    ("pres", "preservation: cosine to the base model on prompts without the trigger"),
    ("score", "weighted mean of the metrics, each scaled 0-1 within the run"),
    ("Pbest", "share of bootstrap rounds over (prompt, seed) units in which the row is best"),
    ("loss", "mean training loss of the epoch ending at the checkpoint"),
)  # fmt: skip


class HelpScreen(Screen[None]):
    """Keys and column meanings; escape, ? or q closes it."""

    DEFAULT_CSS = """
    HelpScreen > VerticalScroll { padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close"),
        Binding("question_mark", "close", "close", show=False),
        Binding("q", "close", "close", show=False),
    ]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        """``keys``: (key as shown, action name) of the main screen."""
        super().__init__()
        self._keys = keys

    def compose(self):
        keys = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column(ratio=1)
        for key, action in self._keys:
            keys.add_row(Text(key), Text(ACTION_HELP.get(action, action)))
        columns = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
        columns.add_column(style="bold", no_wrap=True)
        columns.add_column(ratio=1)
        for name, meaning in COLUMNS_HELP:
            columns.add_row(Text(name), Text(meaning))
        with VerticalScroll():
            yield Static(Text("lorasel: which checkpoint, at which strength", style="bold"))
            yield Static(
                Text(
                    "Rows are (checkpoint, strength) pairs; the base model is the last row, the "
                    "reference, never picked. Changing a weight or the strength filter re-ranks at "
                    "once, with the same 1000 bootstrap rounds as `lorasel pick`."
                )
            )
            yield Static(Text("\nKeys", style="bold underline"))
            yield Static(keys)
            yield Static(Text("\nColumns", style="bold underline"))
            yield Static(columns)
        yield KeyBar(screen_only=True)

    def action_close(self) -> None:
        self.dismiss()
