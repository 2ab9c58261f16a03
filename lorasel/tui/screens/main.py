"""The main screen: the ranked table, the weights and pick lines, and the detail/images pane.

Its keys change only what is seen (sorting, weights, filter, loss mode, compare mark, pane);
each makes a new :class:`ViewState` that the app adopts (re-ranking when the weights or the
filter changed). The app tells the screen what to show: :meth:`MainScreen.show_ranking`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Static

from lorasel.errors import ConfigError
from lorasel.rank import Ranking
from lorasel.results import BASE
from lorasel.text import counted
from lorasel.tui import jobs
from lorasel.tui import messages as msg
from lorasel.tui.session import SORT_KEYS, WEIGHT_STEP, CandidateKey, ViewState
from lorasel.tui.text import clean
from lorasel.tui.widgets.detail_pane import DetailPane
from lorasel.tui.widgets.eval_progress import EvalProgress
from lorasel.tui.widgets.images_pane import ImagesPane
from lorasel.tui.widgets.key_bar import KeyBar
from lorasel.tui.widgets.pick_bar import PickBar
from lorasel.tui.widgets.ranking_table import RankingTable
from lorasel.tui.widgets.weights_bar import WeightsBar

if TYPE_CHECKING:
    from lorasel.tui.app import LoraselTUI


class MainScreen(Screen[None]):
    """Table above (or, in wide terminals, beside) the pane; keys in the footer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "next_sort", "sort"),
        Binding("r", "reverse_sort", "reverse"),
        Binding("w", "next_weight", "weight"),
        Binding("plus", "weight(1)", "adjust", key_display="+/-"),
        Binding("equals_sign", "weight(1)", "adjust", show=False),
        Binding("minus", "weight(-1)", "adjust", show=False),
        Binding("0", "reset_weights", "reset"),
        Binding("f", "filter_strength", "strength"),
        Binding("l", "toggle_loss", "loss"),
        Binding("c", "compare", "compare"),
        Binding("right_square_bracket", "unit(1)", "prompt", key_display="[/]"),
        Binding("left_square_bracket", "unit(-1)", "prompt", show=False),
        Binding("i", "toggle_pane", "images"),
        Binding("z", "zoom", "zoom"),
    ]

    def __init__(self, title: str, graphics: str) -> None:
        super().__init__()
        self._title, self._graphics = title, graphics
        self._unit = 0
        self._pane_shows: tuple | None = None
        self._pending_images: tuple | None = None
        self.images_shown: object = None  # the selection whose renders are on screen

    @property
    def tui(self) -> LoraselTUI:
        return self.app  # type: ignore[return-value]

    def compose(self):
        yield Static(Text(f"lorasel  {clean(self._title, 40)}", style="bold"), id="title")
        yield WeightsBar(id="weights")
        yield PickBar(id="pick")
        with Container(id="body"):
            yield RankingTable(id="table")
            with Container(id="pane"):
                yield Static(id="pane-title")
                with ContentSwitcher(initial="detail", id="switcher"):
                    yield DetailPane(id="detail")
                    yield ImagesPane(self._graphics, id="images")
        yield EvalProgress(id="progress")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(WeightsBar).show(self.tui.state)
        # Until the first ranking (or the news that there is none): a worker may have answered
        # already, so ask the app rather than assume.
        self.query_one(RankingTable).loading = self.tui.waiting
        self._update_pane_title()

    # ------------------------------------------------------------------ what the app shows here

    def show_state(self, state: ViewState) -> None:
        self.query_one(WeightsBar).show(state)

    def show_ranking(self, ranking: Ranking, state: ViewState) -> None:
        """A new ranking: every line, the table (cursor kept on its row) and the pane."""
        table = self.query_one(RankingTable)
        if table.loading:
            table.loading = False
            table.focus()
        self.query_one(WeightsBar).show(state)
        self.show_order(ranking, state)
        contest = ranking.table[ranking.table["checkpoint"] != BASE]
        title = Text()
        title.append(f"lorasel  {clean(self._title, 40)}", style="bold")
        title.append(
            f"   {counted(contest['checkpoint'].nunique(), 'checkpoint')} × "
            f"{counted(contest['strength'].nunique(), 'strength')}"
            f" × {sum(ranking.units.values())} (prompt, seed) units"
        )
        self.query_one("#title", Static).update(title)

    def show_order(self, ranking: Ranking, state: ViewState) -> None:
        """The same ranking in another order or with other marks (sort, loss mode, compare)."""
        self.query_one(PickBar).show(ranking, state.by_loss)
        self.query_one(RankingTable).show(ranking, state)
        self.refresh_selection()

    def stop_loading(self) -> None:
        if self.is_mounted:
            self.query_one(RankingTable).loading = False

    @property
    def progress(self) -> EvalProgress:
        return self.query_one(EvalProgress)

    # ------------------------------------------------------------------ selection and pane

    @property
    def selected(self) -> CandidateKey | None:
        return self.query_one(RankingTable).selected

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_selection()

    @on(DataTable.HeaderSelected)
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_key.value in SORT_KEYS:
            self.tui.set_state(self.tui.state.sorted_by(str(event.column_key.value)))

    def refresh_selection(self, *, force: bool = False) -> None:
        """The pane for the row under the cursor (skipped when nothing it shows changed)."""
        tui = self.tui
        pane = self.query_one(ContentSwitcher).current
        shown = (pane, self.selected, id(tui.ranking), tui.state.compare, self._unit)
        if shown == self._pane_shows and not force:
            return
        self._pane_shows = shown
        if pane == "detail":
            self.query_one(DetailPane).show(self.selected, tui.ranked, tui.index)
        else:
            self._show_images()

    def _show_images(self) -> None:
        tui = self.tui
        index = tui.index
        units = index.units if index is not None else []
        self._unit = min(self._unit, max(0, len(units) - 1))
        unit = units[self._unit] if units else None
        self.query_one(ImagesPane).show_unit(unit, self._unit, len(units))
        has_base = tui.results is not None and bool((tui.results.renders["checkpoint"] == BASE).any())
        slots = {
            "selected": self.selected,
            "compare": tui.state.compare,
            "base": (BASE, 0.0) if has_base else None,
        }
        labels = {}
        if tui.ranking is not None:
            label_of = dict(zip(tui.ranking.table["checkpoint"], tui.ranking.table["label"], strict=True))
            labels = {
                slot: str(label_of.get(key[0], key[0])) for slot, key in slots.items() if key is not None
            }
        paths = {
            slot: index.image(key, unit)
            if key is not None and unit is not None and index is not None
            else None
            for slot, key in slots.items()
        }
        token = (tuple(slots.items()), unit)
        self._pending_images = (token, slots, labels, unit)
        self.run_worker(
            lambda: jobs.decode_renders(tui.renders, token, paths, self.post_message),
            thread=True, exclusive=True, group="images", exit_on_error=False,
        )  # fmt: skip

    def on_images_ready(self, message: msg.ImagesReady) -> None:
        pending = self._pending_images
        if pending is None or pending[0] != message.key:
            return  # the selection moved on while these were decoded
        _, slots, labels, unit = pending
        self.query_one(ImagesPane).show(slots, labels, unit, self.tui.index, message.images)
        self.images_shown = message.key

    def _update_pane_title(self) -> None:
        current = self.query_one(ContentSwitcher).current
        text = Text("detail" if current == "detail" else "images", style="bold")
        text.append("   i: " + ("images" if current == "detail" else "detail") + "   z: zoom", style="dim")
        self.query_one("#pane-title", Static).update(text)

    # ------------------------------------------------------------------ actions

    def action_next_sort(self) -> None:
        self.tui.set_state(self.tui.state.next_sort())

    def action_reverse_sort(self) -> None:
        state = self.tui.state
        if not state.by_loss:
            self.tui.set_state(state.sorted_by(state.sort))

    def action_next_weight(self) -> None:
        self.tui.set_state(self.tui.state.next_weight())

    def action_weight(self, direction: int) -> None:
        try:
            state = self.tui.state.adjust_weight(direction * WEIGHT_STEP)
        except ConfigError as exc:
            self.notify(f"{exc.message} ({exc.hint})", severity="warning", markup=False)
            return
        self.tui.set_state(state)

    def action_reset_weights(self) -> None:
        self.tui.set_state(self.tui.state.reset_weights(self.tui.default_weights))

    def action_filter_strength(self) -> None:
        if self.tui.results is not None:
            self.tui.set_state(self.tui.state.cycle_strength(self.tui.strengths()))

    def action_toggle_loss(self) -> None:
        tui = self.tui
        if tui.ranking is not None and tui.ranking.lowest_loss is None and not tui.state.by_loss:
            self.notify(
                "no training loss log found (logs/loss.csv or TensorBoard events)", severity="warning"
            )
            return
        tui.set_state(replace(tui.state, by_loss=not tui.state.by_loss))

    def action_compare(self) -> None:
        self.tui.set_state(self.tui.state.toggle_compare(self.selected))

    def action_unit(self, step: int) -> None:
        index = self.tui.index
        if index is None or not index.units:
            return
        self._unit = (self._unit + step) % len(index.units)
        switcher = self.query_one(ContentSwitcher)
        if switcher.current != "images":
            switcher.current = "images"
            self._update_pane_title()
        self.refresh_selection()

    def action_toggle_pane(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "images" if switcher.current == "detail" else "detail"
        self._update_pane_title()
        self.refresh_selection()

    def action_zoom(self) -> None:
        self.toggle_class("-zoom")

    def unit_index(self) -> int:
        return self._unit

    def keys(self) -> list[tuple[str, Any]]:
        """(key as shown, action) of every key shown in the footer, for the help screen."""
        seen, out = set(), []
        for binding in [*self.BINDINGS, *self.app.BINDINGS]:
            if isinstance(binding, Binding) and binding.show and binding.action not in seen:
                seen.add(binding.action)
                out.append((binding.key_display or self.app.get_key_display(binding), binding.action))
        return out
