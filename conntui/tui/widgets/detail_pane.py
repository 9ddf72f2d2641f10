"""The detail pane: why the kernel routed the selected segment where it did.

The attribution part is drawn at once; scapy's dissection arrives later from a thread
worker (``Dissected``) and is used only if the same record is still selected. The pane is
a Line API ``ScrollView`` over the wrapped text: a new selection repaints this pane only,
never the whole screen's layout (as a ``Static.update`` would, on every cursor move).
"""

from __future__ import annotations

import re
import time

from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual import events, work
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import get_current_worker

from ...model import Record
from ..detail_text import detail_text
from ..dissect import dissect
from ..messages import Dissected
from .scrolling import set_virtual_size

DISSECT_AFTER = 0.05  # seconds
# a line's wrapped part starts under the text after its indent and its label ("why: ",
# "1. "), or two cells further in than the line when it has none
_HANG = re.compile(r"( *)((?:[A-Za-z][A-Za-z ]{0,14}:|\d+\.) )?")


def hang(line: str) -> int:
    """Cells each wrapped part of ``line`` is indented by."""
    m = _HANG.match(line)
    if m is None:  # pragma: no cover - the pattern matches every string
        return 2
    indent, label = m.group(1), m.group(2)
    return len(indent) + (len(label) if label else 2)


def wrap(console: Console, text: Text, width: int) -> list[Strip]:
    """``text`` wrapped to ``width`` cells (the last left blank), each wrapped part
    indented under its line's text (``hang``)."""
    room = max(1, width - 1)
    strips: list[Strip] = []
    for line in text.split("\n", allow_blank=True):
        if line.cell_len <= room:
            strips.append(Strip(line.render(console), line.cell_len).simplify())
            continue
        indent = min(hang(line.plain), room // 2)
        first, *rest = line.wrap(console, room, overflow="fold")
        strips.append(Strip(first.render(console), first.cell_len).simplify())
        if rest:
            tail = Text(" ").join(rest) if len(rest) > 1 else rest[0]
            for part in tail.wrap(console, room - indent, overflow="fold"):
                part.pad_left(indent)
                strips.append(Strip(part.render(console), part.cell_len).simplify())
    return strips


PLACEHOLDER = "select a segment (↑/↓ in the list) to see how the kernel routed it"


class DetailPane(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    DetailPane { background: $surface; padding: 0 1; overflow-x: hidden; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.record: Record | None = None
        self.text = Text(PLACEHOLDER, style="dim")
        self._dissection: tuple[int, list[str]] | None = None
        self.live = False  # a live capture: the holders' processes may be asked about (procinfo)
        self._lines: list[Strip] = []
        self._wrapped_for = -1
        self._shown_attribution = 0
        self._pass: tuple[int, Style] | None = None

    # -- content -----------------------------------------------------------------------

    def show(self, rec: Record | None) -> None:
        """Show ``rec`` (None: nothing selected) and dissect it in the background."""
        same = rec is not None and self.record is not None and rec.seq == self.record.seq
        self.record = rec
        if rec is None:
            self._set_text(Text("nothing selected", style="dim"))
            return
        if not same:
            self.scroll_to(y=0, animate=False, immediate=True)
        self._render_record()
        if self._dissection is None or self._dissection[0] != rec.seq:
            self._dissect(rec)

    def refresh_if_reattributed(self) -> None:
        """Redraw if the session replaced the record's attribution (a late match)."""
        if self.record is not None and id(self.record.attribution) != self._shown_attribution:
            self._render_record()

    def _render_record(self) -> None:
        rec = self.record
        if rec is None:
            return
        lines = self._dissection[1] if self._dissection and self._dissection[0] == rec.seq else None
        self._shown_attribution = id(rec.attribution)
        self._set_text(detail_text(rec, lines, live=self.live))

    def _set_text(self, text: Text) -> None:
        self.text = text
        self._wrap()

    def _wrap(self) -> None:
        width = self.scrollable_content_region.width
        if width <= 0:
            self._lines = []
            self._wrapped_for = -1
            return
        self._lines = wrap(self.app.console, self.text, width)
        self._wrapped_for = width
        set_virtual_size(self, Size(width, len(self._lines)))
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        if self.scrollable_content_region.width != self._wrapped_for:
            self._wrap()

    # -- dissection --------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="dissect", exit_on_error=False)
    def _dissect(self, rec: Record) -> None:
        # scapy is pure Python: started at once, it would compete for the interpreter with
        # the frame that shows the new selection. A newer selection cancels this one.
        time.sleep(DISSECT_AFTER)
        if get_current_worker().is_cancelled:
            return
        self.post_message(Dissected(rec.seq, dissect(rec.frame)))

    def on_dissected(self, message: Dissected) -> None:
        message.stop()
        self._dissection = (message.seq, message.lines)
        if self.record is not None and self.record.seq == message.seq:
            self._render_record()

    # -- rendering ---------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # looked up once per pass, not per line (``rich_style`` walks the DOM)
        self._pass = (self.scrollable_content_region.width, self.rich_style)
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def render_line(self, y: int) -> Strip:
        width, base = self._pass or (self.scrollable_content_region.width, self.rich_style)
        if self._wrapped_for != width and width > 0:
            self.call_after_refresh(self._wrap)
        index = round(self.scroll_y) + y
        if 0 <= index < len(self._lines):
            return self._lines[index].crop_extend(0, width, base).apply_style(base)
        return Strip.blank(width, base)
