"""The live segment list: a virtual view over the feed's ring of records (Line API).

Only the visible lines are rendered, each from one record in O(1), so the list costs the
same with ten rows or a hundred thousand. It follows the newest row (the bottom) until the
user moves the cursor up, and follows again on ``end``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip

from ...model import Record
from ..feed import Drained, RowBuffer
from ..row_text import Layout, Widths, fit, header_text, row_text
from .scrolling import QuietScrollView, changing_bars, set_virtual_size


class _Pass(NamedTuple):
    """What every line of one render pass shares."""

    scroll_x: int
    scroll_y: int
    width: int
    base: Style
    focused: bool


class SegmentList(QuietScrollView, can_focus=True):
    """Rows of ``buffer`` (oldest at the top), a sticky header line and a cursor."""

    COMPONENT_CLASSES = {
        "segment-list--cursor",
        "segment-list--cursor-blurred",
        "segment-list--header",
        "segment-list--empty",
    }

    DEFAULT_CSS = """
    SegmentList { background: $surface; overflow-x: hidden; }
    SegmentList > .segment-list--cursor { background: $accent 60%; text-style: bold; }
    SegmentList > .segment-list--cursor-blurred { background: $accent 25%; }
    SegmentList > .segment-list--header { background: $panel; color: $text; }
    SegmentList > .segment-list--empty { color: $text-muted; text-style: italic; }
    """

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Follow", show=False),
    ]

    @dataclass
    class Selected(Message):
        """The cursor moved to another record (or to none: ``seq`` None)."""

        segment_list: SegmentList
        seq: int | None
        user: bool = True  # False when the cursor only followed new rows

        @property
        def control(self) -> SegmentList:
            return self.segment_list

    following: reactive[bool] = reactive(True)
    empty_text: reactive[str] = reactive("waiting for segments…")

    def __init__(self, buffer: RowBuffer, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.buffer = buffer
        self.cursor = -1  # index into buffer, -1 when empty
        self._selected: int | None = None
        self._widths = Widths()
        self._layout = Layout()
        self._layout_for = -1  # the width the layout was fitted to
        self._cache: LRUCache[tuple[int, int, bool, bool, int, int], Strip] = LRUCache(1024)
        self._pass: _Pass | None = None
        self._header: tuple[object, Strip] | None = None
        # while a new filter fills in older rows: the seq the cursor should end up near
        self._pending_seq: int | None = None
        # each line on screen: the record drawn there and the attribution it had then
        self._drawn: dict[int, tuple[Record, int]] = {}

    # -- data --------------------------------------------------------------------------

    @property
    def selected_record(self) -> Record | None:
        if 0 <= self.cursor < len(self.buffer):
            return self.buffer[self.cursor]
        return None

    @changing_bars
    def set_buffer(self, buffer: RowBuffer, keep_seq: int | None = None, *, partial: bool = False) -> None:
        """Show another buffer (a new filter); keep the cursor near ``keep_seq``.

        ``partial``: older rows will still be prepended (``rows_prepended``); if
        ``keep_seq`` is older than what the buffer holds yet, the cursor goes to it then.
        """
        self.buffer = buffer  # (the line cache is keyed by record: rows shown before stay)
        self._pending_seq = None
        if not len(buffer):
            self.cursor = -1
        elif self.following or keep_seq is None:
            self.cursor = len(buffer) - 1
        else:
            self.cursor = buffer.nearest_index(keep_seq)
            if partial and keep_seq < buffer[0].seq:
                self._pending_seq = keep_seq
        if partial and not self.following and keep_seq is not None and not len(buffer):
            self._pending_seq = keep_seq
        self._widen(max(0, len(buffer) - self._widen_rows), len(buffer))
        self._update_size()
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self._scroll_to_cursor(center=True)
        self.refresh()
        self._post_selection()

    @changing_bars
    def rows_changed(self, drained: Drained) -> None:
        """Rows were added to (and maybe pushed out of) the buffer by the feed."""
        if not drained.added:
            return
        if drained.evicted and not self.following:
            self.cursor = max(0, self.cursor - drained.evicted)
            self.scroll_to(y=max(0, self.scroll_y - drained.evicted), animate=False, immediate=True)
        n = len(self.buffer)
        # the endpoint column fits the rows a screen can show (not 2,000 new rows a tick)
        self._widen(max(0, n - min(drained.added, self._widen_rows)), n)
        self._update_size()
        if self.following or self.cursor < 0:
            self.cursor = len(self.buffer) - 1
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh(self.scrolling_region())
        self._post_selection(user=False)

    @changing_bars
    def rows_prepended(self, added: int, *, done: bool) -> None:
        """Older rows were put at the front of the buffer (a new filter filling in). The
        view stays on the rows it showed; ``done``: no more will come."""
        pending = self._pending_seq
        if done:
            self._pending_seq = None
        if not added:
            return
        self._widen(0, min(added, self._widen_rows))
        self._update_size()
        if self.following:
            self.cursor = len(self.buffer) - 1
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        elif pending is not None:  # still on its way to the row selected before the filter
            self.cursor = self.buffer.nearest_index(pending)
            if self.buffer[0].seq <= pending:
                self._pending_seq = None
            self._scroll_to_cursor(center=True)
        elif self.cursor >= 0:
            self.cursor += added
            self.scroll_to(y=self.scroll_y + added, animate=False, immediate=True)
        else:
            self.cursor = len(self.buffer) - 1
            self._scroll_to_cursor()
        self.refresh()
        self._post_selection(user=False)

    def refresh_if_reattributed(self) -> None:
        """Redraw if a row on screen got a new attribution (``Session.reattribute``, a
        late match, replaces it in place)."""
        if any(id(rec.attribution) != att for rec, att in self._drawn.values()):
            self.refresh()

    def scrolling_region(self) -> Region:
        # the rows, not the sticky header line above them (nor the border around): new
        # rows and a scroll leave those as they were
        return Region(0, 1, self.size.width, max(0, self.size.height - 1))

    def _widen(self, start: int, stop: int) -> None:
        widths = self._widths
        buffer = self.buffer
        for i in range(start, stop):
            widths = widths.grow(buffer[i])
        if widths != self._widths:
            self._widths = widths
            self._layout_for = -1  # fitted again at the next render

    def _fit(self, width: int) -> None:
        """The columns for ``width`` cells (see ``row_text.fit``)."""
        if width == self._layout_for:
            return
        layout = fit(width, self._widths)
        self._layout_for = width
        if layout != self._layout:
            self._layout = layout
            self._cache.clear()

    def _update_size(self) -> None:
        # the rows fit the width: nothing to scroll sideways
        size = Size(self.scrollable_content_region.width, len(self.buffer) + 1)
        if size != self.virtual_size:
            set_virtual_size(self, size)
            if self.following:  # a new scrollbar may have taken a line: stay at the bottom
                self.call_after_refresh(self.scroll_end, animate=False, immediate=True, x_axis=False)

    def on_resize(self, event: events.Resize) -> None:
        self._update_size()
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self._scroll_to_cursor()

    # -- selection ---------------------------------------------------------------------

    def _post_selection(self, user: bool = True) -> None:
        rec = self.selected_record
        seq = None if rec is None else rec.seq
        if seq != self._selected:
            self._selected = seq
            self.post_message(self.Selected(self, seq, user))

    @property
    def _widen_rows(self) -> int:
        return max(100, 2 * self.size.height)

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_to_cursor(self, center: bool = False) -> None:
        if self.cursor < 0:
            return
        page = self._page
        top = round(self.scroll_y)
        if center:
            self.scroll_to(y=max(0, self.cursor - page // 2), animate=False, immediate=True)
        elif self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + page:
            self.scroll_to(y=self.cursor - page + 1, animate=False, immediate=True)

    @changing_bars
    def move_cursor(self, index: int) -> None:
        self._pending_seq = None  # a person moved: the list goes where they say
        n = len(self.buffer)
        if not n:
            return
        index = max(0, min(n - 1, index))
        if index != self.cursor:
            self.cursor = index
            self.refresh()
        self.following = index == n - 1
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self._scroll_to_cursor()
        self._post_selection()

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self.cursor - self._page)

    def action_page_down(self) -> None:
        self.move_cursor(self.cursor + self._page)

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self.buffer) - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        self.move_cursor(round(self.scroll_y) + offset.y - 1)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.following = False
        self._pending_seq = None

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # -- rendering ---------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # what every line of this pass needs, looked up once (``rich_style`` alone walks
        # the DOM: tens of microseconds, for each of some 30 lines, every tick)
        self._pass = self._pass_context()
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def _pass_context(self) -> _Pass:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        return _Pass(scroll_x, scroll_y, width, self.rich_style, self.has_focus)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y, width, base, focused = self._pass or self._pass_context()
        self._fit(width)
        if y == 0:
            hkey = (self._layout, width, scroll_x, base)
            if self._header is None or self._header[0] != hkey:
                header = header_text(self._layout)
                style = self.get_component_rich_style("segment-list--header")
                strip = Strip(header.render(self.app.console), header.cell_len)
                strip = strip.apply_style(style).crop_extend(scroll_x, scroll_x + width, base + style)
                self._header = (hkey, strip)
            return self._header[1]
        index = scroll_y + y - 1
        n = len(self.buffer)
        if index >= n or index < 0:
            if n == 0 and y == 1:
                style = self.get_component_rich_style("segment-list--empty")
                return self._message_strip(self.empty_text, style, width)
            return Strip.blank(width, base)
        rec = self.buffer[index]
        self._drawn[y] = (rec, id(rec.attribution))
        is_cursor = index == self.cursor
        # The final (cropped, styled) line is cached: scrolling by one row, as a live list
        # does every tick, re-renders no row but the new ones.
        key = (rec.seq, id(rec.attribution), is_cursor and focused, is_cursor, width, scroll_x)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        text = row_text(rec, self._layout)
        if is_cursor:
            text.style = ""  # a row's tint (none, unknown) would hide the cursor's background
        strip = Strip(text.render(self.app.console), text.cell_len)
        if is_cursor:
            name = "segment-list--cursor" if focused else "segment-list--cursor-blurred"
            strip = strip.extend_cell_length(scroll_x + width).apply_style(
                self.get_component_rich_style(name)
            )
        strip = strip.crop_extend(scroll_x, scroll_x + width, base).apply_style(base)
        self._cache[key] = strip
        return strip

    def _message_strip(self, message: str, style: Style, width: int) -> Strip:
        text = Text(message, style=style, no_wrap=True, end="")
        return Strip(text.render(self.app.console), text.cell_len).crop_extend(0, width, self.rich_style)

    def watch_empty_text(self) -> None:
        self.refresh()
