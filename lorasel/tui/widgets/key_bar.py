"""The footer: every key the current screen answers to, wrapped onto as many lines as the
terminal needs (Textual's Footer scrolls sideways instead, hiding keys at 80 columns)."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class KeyBar(Widget):
    """Shows the screen's active bindings that have ``show=True`` and are enabled, one entry per
    action; with ``screen_only``, only those the screen itself defines (not the app's)."""

    DEFAULT_CSS = """
    KeyBar { height: auto; background: $panel; padding: 0 1; }
    """

    def __init__(self, *, screen_only: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self._screen_only = screen_only

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, _screen) -> None:
        self.refresh(layout=True)

    def entries(self) -> list[tuple[str, str]]:
        seen: set[str] = set()
        out = []
        for node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or not enabled or binding.action in seen:
                continue
            if self._screen_only and node is not self.screen:
                continue
            seen.add(binding.action)
            out.append((binding.key_display or self.app.get_key_display(binding), binding.description))
        return out

    def _lines(self, width: int) -> list[Text]:
        lines: list[Text] = []
        line = Text()
        for key, description in self.entries():
            item_len = len(key) + 1 + len(description)
            if line.cell_len and line.cell_len + 1 + item_len > width:
                lines.append(line)
                line = Text()
            if line.cell_len:
                line.append(" ")
            line.append(f"{key}", style="bold reverse")
            line.append(" " + description)
        if line.cell_len or not lines:
            lines.append(line)
        return lines

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._lines(max(1, width)))

    def render(self) -> Text:
        return Text("\n").join(self._lines(max(1, self.content_size.width)))
