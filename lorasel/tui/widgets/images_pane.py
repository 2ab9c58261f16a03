"""The selected row's render beside the row marked for comparison and the base model's, for
one (prompt, seed) at a time: the same noise for all three, so differences are the LoRA's."""

from __future__ import annotations

from PIL import Image
from rich.text import Text
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from lorasel.results import METRIC_SHORT
from lorasel.tui.session import CandidateKey
from lorasel.tui.text import clean, num, strength_text
from lorasel.tui.views import KIND_METRIC, ResultsIndex, Unit
from lorasel.tui.widgets.render_view import RenderView

SLOTS = ("selected", "compare", "base")
TITLES = {"selected": "selected", "compare": "compare", "base": "base model"}


class ImagesPane(Vertical):
    """Three :class:`RenderView` side by side and a line naming the prompt and seed."""

    DEFAULT_CSS = """
    ImagesPane { height: 1fr; padding: 0 1; }
    ImagesPane > #unit { height: 1; }
    ImagesPane > Horizontal { height: 1fr; }
    """

    def __init__(self, graphics: str = "auto", **kwargs) -> None:
        super().__init__(**kwargs)
        self._graphics = graphics

    def compose(self):
        yield Static("", id="unit")
        with Horizontal():
            for slot in SLOTS:
                yield RenderView(self._graphics, id=f"render-{slot}")

    def show_unit(self, unit: Unit | None, position: int, count: int) -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        if unit is None:
            line.append("no renders", style="dim")
        else:
            line.append(f"[{position + 1}/{count}] ", style="bold")
            line.append(f"{clean(unit.prompt_id)} seed {unit.seed_index}: ", style="bold")
            line.append(clean(unit.prompt))
        self.query_one("#unit", Static).update(line)

    def show(
        self,
        slots: dict[str, CandidateKey | None],
        labels: dict[str, str],
        unit: Unit | None,
        index: ResultsIndex | None,
        images: dict[str, Image.Image | None],
    ) -> None:
        """Captions from ``slots`` (selected, compare, base) and their decoded ``images``."""
        for slot in SLOTS:
            view = self.query_one(f"#render-{slot}", RenderView)
            key = slots.get(slot)
            caption = Text(no_wrap=True, overflow="ellipsis")
            caption.append(TITLES[slot], style="bold")
            if key is None:
                hint = "press c on a row to mark it for comparison" if slot == "compare" else "-"
                view.show(caption, None, hint)
                continue
            if unit is not None and index is not None and unit.kind in KIND_METRIC:
                value = index.prompt_value(key, unit.prompt_id)
                caption.append(f"  {METRIC_SHORT[KIND_METRIC[unit.kind]]} {num(value, 2)}")
            caption.append("\n")
            caption.append(clean(labels.get(slot, key[0]), 28))
            if slot != "base":
                caption.append(f" @ {strength_text(key[1])}")
            image = images.get(slot)
            view.show(caption, image, "no render for this prompt" if image is None else "")
