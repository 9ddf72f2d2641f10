"""A Line API view's virtual size and scroll position, changed without needless repaints.

Textual lays the whole screen out again when a widget's virtual size changes, and repaints
a scrollbar whenever its numbers change. The segment list grows and scrolls on every tick
and the detail pane changes length with each selection; neither moves anything else on the
screen, and the scrollbar's thumb, drawn in eighths of a cell, mostly stays where it was.
Each needless scrollbar repaint also leaves a screenful of strips (Textual's lines, which
refer to themselves) for the garbage collector's rare full pass: it was most of what the
UI left there (``conntui.gcpolicy``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import update_wrapper
from math import ceil
from typing import Concatenate, ParamSpec, TypeVar

from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.widget import Widget


def thumb(bar: ScrollBar) -> tuple[object, ...]:
    """What ``bar`` draws, as ``ScrollBarRender.render_bar`` works it out: its length and
    the thumb's ends in eighths of a cell (a bar drawn some other way: all its numbers)."""
    if type(bar) is not ScrollBar or bar.renderer is not ScrollBarRender:
        return (bar.window_virtual_size, bar.window_size, bar.position, bar.size)
    virtual = ceil(bar.window_virtual_size)
    window = ceil(bar.window_size) if bar.window_size < bar.window_virtual_size else 0
    size = bar.size.height if bar.vertical else bar.size.width
    if not (window and size and virtual and size != virtual):
        return (size,)
    length = max(1, window / (virtual / size))
    start = int((size - length) * (bar.position / (virtual - window)) * 8)
    return (size, start, start + ceil(length * 8))


def update_bar(bar: ScrollBar, **values: float) -> None:
    """Set ``bar``'s reactives (``window_virtual_size``, ``window_size``, ``position``);
    repaint it only if what it draws changes (at the end of ``QuietScrollView.changing``
    if one is under way)."""
    before = thumb(bar)
    for name, value in values.items():
        bar.set_reactive(getattr(ScrollBar, name), value)
    view = bar.parent
    if isinstance(view, QuietScrollView) and view._changing:
        return
    if thumb(bar) != before:
        bar.refresh()


def set_virtual_size(view: ScrollView, size: Size) -> None:
    """Give ``view`` a new virtual (scrollable) size: what ``Widget._scroll_update`` does
    after a layout, without the layout, and with the scrollbars repainted only if they
    change (one that appears or goes asks for the layout itself, through
    ``show_*_scrollbar``). The caller repaints what changed in the view."""
    if size == view.virtual_size:
        return
    if not view.is_mounted or not view.container_size:
        view.virtual_size = size  # not laid out yet: the first layout does it all
        return
    view.set_reactive(Widget.virtual_size, size)
    view._refresh_scrollbars()
    width, height = view.container_size
    if view.show_vertical_scrollbar and view.styles.scrollbar_size_vertical:
        update_bar(
            view.vertical_scrollbar,
            window_virtual_size=size.height,
            window_size=height - view.scrollbar_size_horizontal,
        )
    if view.show_horizontal_scrollbar and view.styles.scrollbar_size_horizontal:
        update_bar(
            view.horizontal_scrollbar,
            window_virtual_size=size.width,
            window_size=width - view.scrollbar_size_vertical,
        )
    view.scroll_x = view.validate_scroll_x(view.scroll_x)
    view.scroll_y = view.validate_scroll_y(view.scroll_y)


class QuietScrollView(ScrollView):
    """A ``ScrollView`` whose scrollbars are repainted only when their thumbs move."""

    _changing = False

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Several changes (rows added, the virtual size, the scroll position): the bars
        are compared with what they drew before them all, once, at the end (in between,
        the new size with the old position would move the thumb there and back)."""
        if self._changing:
            yield
            return
        bars = [bar for bar in (self._vertical_scrollbar, self._horizontal_scrollbar) if bar is not None]
        drawn = [thumb(bar) for bar in bars]
        self._changing = True
        try:
            yield
        finally:
            self._changing = False
            for bar, before in zip(bars, drawn, strict=True):
                if thumb(bar) != before:
                    bar.refresh()

    def scrolling_region(self) -> Region:
        """What a vertical scroll repaints (the lines that move)."""
        return self.size.region

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        if self.show_vertical_scrollbar:
            bar = self.vertical_scrollbar
            update_bar(bar, position=bar.validate_position(new_value))
        if round(old_value) != round(new_value):
            self.refresh(self.scrolling_region())


P = ParamSpec("P")
R = TypeVar("R")
V = TypeVar("V", bound=QuietScrollView)


def changing_bars(method: Callable[Concatenate[V, P], R]) -> Callable[Concatenate[V, P], R]:
    """A method of a ``QuietScrollView`` that runs inside ``changing``."""

    def changing(self: V, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.changing():
            return method(self, *args, **kwargs)

    update_wrapper(changing, method)
    return changing
