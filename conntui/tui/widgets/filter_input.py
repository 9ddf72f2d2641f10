"""The ``/`` filter line: hidden until asked for; Enter applies, Esc clears."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input

PLACEHOLDER = "filter: 8080  80,443  8000-8100  pid:1234  proc:nginx  match:none  tcp  host:10.0.0.1"


class FilterInput(Input):
    """Drawn over the bottom of the panes, just above the status bar (the screen puts it on
    its ``overlay`` layer): opening and closing it repaints its three lines and what they
    cover, never the layout of every pane (a docked input shrinks them all)."""

    DEFAULT_CSS = """
    FilterInput { layer: overlay; dock: bottom; offset-y: -2; display: none; border: tall $accent; }
    FilterInput.-open { display: block; }
    """

    BINDINGS = [Binding("escape", "cancel", "Clear filter", show=False)]

    @dataclass
    class Cancelled(Message):
        filter_input: FilterInput

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder=PLACEHOLDER, id=id, select_on_focus=False)

    def open(self, current: str) -> None:
        self.value = current
        self.cursor_position = len(current)
        self.add_class("-open")
        self.focus()

    def close(self) -> None:
        self.remove_class("-open")

    @property
    def is_open(self) -> bool:
        return self.has_class("-open")

    def action_cancel(self) -> None:
        self.post_message(self.Cancelled(self))
