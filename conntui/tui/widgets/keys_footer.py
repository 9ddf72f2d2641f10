"""Textual's ``Footer``, rebuilt only when the keys it shows change, and then in place.

A stock ``Footer`` recomposes (removes and mounts all its key widgets) on every focus
change: Tab, ``/``, Enter, Esc... Here the keys shown hardly ever differ between panes,
and under load that rebuild was one of the costs between a key press and its frame. When
they do differ (the socket tree, the filter line), the key widgets already there take the
new keys; those left over are hidden, not removed, for the next time more keys show (a
widget mounted is styled and lays the screen out twice).
"""

from __future__ import annotations

from textual import events
from textual.compose import compose
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


def shown_keys(screen: Screen[object]) -> tuple[object, ...]:
    """What a footer on ``screen`` would show: the bindings it draws and their state."""
    palette = screen.app.COMMAND_PALETTE_BINDING
    return tuple(
        (key, binding, enabled, tooltip)
        for key, (_node, binding, enabled, tooltip) in screen.active_bindings.items()
        if binding.show or key == palette
    )


def _take(old: FooterKey, new: FooterKey) -> None:
    """``old`` shows what ``new`` would (the attributes ``FooterKey.render`` reads)."""
    shows = (new.key, new.key_display, new.description, new.action, new._disabled, new.tooltip)
    if (old.key, old.key_display, old.description, old.action, old._disabled, old.tooltip) == shows:
        return
    old.key = new.key
    old.key_display = new.key_display
    old.description = new.description
    old.action = new.action
    old._disabled = new._disabled
    old.set_class(new._disabled, "-disabled")
    old.tooltip = new.tooltip
    old.refresh(layout=True)


# Which keys stay when the footer is too narrow for all: the first ones here, then the
# others in their order (the command palette's key goes first).
KEEP_FIRST = ("q", "question_mark", "slash", "tab", "escape", "space", "enter")


def _key_width(key: FooterKey) -> int:
    """Cells ``key`` takes in the footer (its text, padding, margins and border)."""
    text = key.render().cell_len
    gutter = key.styles.gutter.width + key.styles.margin.width
    return text + gutter


class KeysFooter(Footer):
    """See the module docstring. Keys that do not fit the width are left out, the least
    needed first (``KEEP_FIRST``): a key is shown whole or not at all."""

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[object, ...] | None = None
        self._hidden: set[FooterKey] = set()  # keys left out for want of room

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self.fit_keys)

    def fit_keys(self) -> None:
        """Show the keys that fit the width, in ``KEEP_FIRST`` order."""
        keys = [w for w in self.children if isinstance(w, FooterKey) and (w.display or w in self._hidden)]
        if not keys:
            return
        room = self.size.width - 1  # a line never runs into the screen's edge

        def rank(k: FooterKey) -> tuple[int, int]:
            if k.has_class("-command-palette"):
                return (len(KEEP_FIRST) + 1, 0)
            first = k.key.split(",")[0]
            return (KEEP_FIRST.index(first) if first in KEEP_FIRST else len(KEEP_FIRST), keys.index(k))

        used = 0
        show: set[FooterKey] = set()
        for k in sorted(keys, key=rank):
            w = _key_width(k)
            if used + w <= room:
                used += w
                show.add(k)
        self._hidden = {k for k in keys if k not in show}
        for k in keys:
            if k.display != (k in show):
                k.display = k in show

    def bindings_changed(self, screen: Screen[object]) -> None:
        # the same conditions under which Footer recomposes: only then is _shown what shows
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            keys = shown_keys(screen)
            if keys == self._shown:
                return
            self._shown = keys
        super().bindings_changed(screen)

    async def recompose(self) -> None:
        if not self.is_attached or self._pruning:
            return
        composed = compose(self)
        children = list(self.children)
        # plain keys (no binding groups) with the command palette's key last, or nothing
        old = [w for w in children if type(w) is FooterKey]
        new = [w for w in composed if type(w) is FooterKey]
        self._hidden.clear()
        if not old or len(old) != len(children) or len(new) != len(composed):
            await super().recompose()
            self.call_after_refresh(self.fit_keys)
            return
        old_keys = [w for w in old if not w.has_class("-command-palette")]
        new_keys = [w for w in new if not w.has_class("-command-palette")]
        old_palette = [w for w in old if w.has_class("-command-palette")]
        new_palette = [w for w in new if w.has_class("-command-palette")]
        if len(old_palette) != len(new_palette):
            await super().recompose()
            self.call_after_refresh(self.fit_keys)
            return
        async with self.batch():
            for o, n in zip(old_keys, new_keys, strict=False):
                _take(o, n)
                o.display = True
            for o in old_keys[len(new_keys) :]:
                o.display = False
            for o, n in zip(old_palette, new_palette, strict=True):
                _take(o, n)
            if len(new_keys) > len(old_keys):
                extra = new_keys[len(old_keys) :]
                if old_palette:
                    await self.mount_all(extra, before=old_palette[0])
                else:
                    await self.mount_all(extra)
        self.call_after_refresh(self.fit_keys)
