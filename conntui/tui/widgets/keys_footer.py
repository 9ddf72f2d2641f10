"""Textual's ``Footer``, rebuilt only when the keys it shows change.

A stock ``Footer`` recomposes (removes and mounts all its key widgets) on every focus
change: Tab, ``/``, Enter, Esc... Here the keys shown hardly ever differ between panes,
and under load that rebuild was one of the costs between a key press and its frame.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


def shown_keys(screen: Screen[object]) -> tuple[object, ...]:
    """What a footer on ``screen`` would show: the bindings it draws and their state."""
    palette = screen.app.COMMAND_PALETTE_BINDING
    return tuple(
        (key, binding, enabled, tooltip)
        for key, (_node, binding, enabled, tooltip) in screen.active_bindings.items()
        if binding.show or key == palette
    )


class KeysFooter(Footer):
    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[object, ...] | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        # the same conditions under which Footer recomposes: only then is _shown what shows
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            keys = shown_keys(screen)
            if keys == self._shown:
                return
            self._shown = keys
        super().bindings_changed(screen)
