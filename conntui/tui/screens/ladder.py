"""The ladder of the selected segment's connection, full screen (``l``; Esc closes).

A Line API view over the ladder's lines: only the lines on screen are drawn, so a flow
of thousands of segments opens as fast as a short one. It scrolls both ways (a ladder
of many lanes is wider than the screen). The last segment is shown first.
"""

from __future__ import annotations

import os
import time

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..ladder import (
    LANE_WIDTH,
    TIME_WIDTH,
    Ladder,
    arrow_line,
    arrow_tail,
    ladder_head,
    ladder_lines,
    ladder_svg,
)
from ..widgets.keys_footer import KeysFooter


class LadderView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    LadderView { background: $surface; border: round $accent; }
    """

    def __init__(self, ladder: Ladder) -> None:
        super().__init__()
        self.ladder = ladder
        # (what is left out), lane labels, rails: the lines that stay at the top
        self.head = len(ladder_head(ladder)) - 1
        self.border_title = f"Ladder of {ladder.title}"
        self.head_lines: list[str] = []
        self._drawn: dict[int, str] = {}  # arrow lines made so far (only those shown)
        self._lane_width = 0
        self._lay_out(LANE_WIDTH)

    def _lay_out(self, lane_width: int) -> None:
        if lane_width == self._lane_width:
            return
        self._lane_width = lane_width
        self._drawn.clear()
        self.head_lines = ladder_head(self.ladder, lane_width)[1:]  # (the title is the border's)
        match = max((len(arrow_tail(a)) for a in self.ladder.arrows), default=0)
        width = max(len(line) for line in self.head_lines) + 3 + match + 1
        self.virtual_size = Size(width, len(self.head_lines) + len(self.ladder.arrows))
        self.refresh()

    def line(self, index: int) -> str | None:
        """Line ``index`` of the ladder (the head's, then the arrows'), made when first shown."""
        if index < len(self.head_lines):
            return self.head_lines[index]
        i = index - len(self.head_lines)
        if i >= len(self.ladder.arrows):
            return None
        text = self._drawn.get(i)
        if text is None:
            text = self._drawn[i] = arrow_line(self.ladder, self.ladder.arrows[i], self._lane_width)
        return text

    def on_resize(self, event: events.Resize) -> None:
        # lanes share the width (the match names need 16 cells after them); a ladder of
        # many lanes scrolls sideways
        room = self.scrollable_content_region.width - TIME_WIDTH - 2 - 16
        self._lay_out(max(14, min(LANE_WIDTH, room // max(1, len(self.ladder.lanes)))))

    def on_mount(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if y < self.head:
            index = y
            style = Style(bold=True) if y != self.head - 1 else Style(dim=True)
        else:
            index = scroll_y + y
            style = Style()
        line = self.line(index)
        if line is None:
            return Strip.blank(width, base)
        text = Text(line, style=style, no_wrap=True, end="")
        strip = Strip(text.render(self.app.console), text.cell_len)
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_style(base)


class LadderScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,q,l", "close", "Close"),
        Binding("w", "save", "Save .txt and .svg"),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    def __init__(self, ladder: Ladder) -> None:
        super().__init__()
        self.view = LadderView(ladder)

    def compose(self) -> ComposeResult:
        yield self.view
        yield KeysFooter()

    def on_mount(self) -> None:
        self.view.focus()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        """The ladder as text and as an SVG picture, in the current directory (never over
        an existing file)."""
        stem = time.strftime("conntui-ladder-%Y%m%d-%H%M%S")
        ladder = self.view.ladder
        text = "\n".join(ladder_lines(ladder)) + "\n"
        for n in range(100):
            name = stem if not n else f"{stem}-{n}"
            try:
                with open(f"{name}.txt", "x", encoding="utf-8") as f:
                    f.write(text)
            except FileExistsError:
                continue
            except OSError as exc:
                self.notify(f"cannot save the ladder: {exc}", severity="error", markup=False)
                return
            try:
                with open(f"{name}.svg", "x", encoding="utf-8") as f:
                    f.write(ladder_svg(ladder))
            except OSError as exc:
                self.notify(f"saved {name}.txt; not the SVG: {exc}", severity="error", markup=False)
                return
            where = os.path.abspath(name)
            self.notify(f"saved {where}.txt and .svg", title="ladder", markup=False)
            return

    def action_first(self) -> None:
        self.view.scroll_home(animate=False, immediate=True)

    def action_last(self) -> None:
        self.view.scroll_end(animate=False, immediate=True, x_axis=False)
