"""The main screen: segment list on top, sockets and details below, status and keys.

On a narrow or short terminal (``-narrow``) the lower half shows one pane at a time: the
one Tab last moved to. On a tiny one (``-tiny``) the whole screen shows one pane: the list,
or the lower pane Tab moved to.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen

from ..feed import RowBuffer
from ..widgets.detail_pane import DetailPane
from ..widgets.filter_input import FilterInput
from ..widgets.keys_footer import KeysFooter
from ..widgets.lab_note import LabNote
from ..widgets.segment_list import SegmentList
from ..widgets.socket_tree import SocketTree
from ..widgets.status_bar import StatusBar

NARROW_WIDTH = 120
SHORT_HEIGHT = 30
TINY_HEIGHT = 18
PANES = ("segments", "sockets", "details")


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("slash", "app.filter", "Filter"),
        Binding("escape", "app.clear_filter", "Clear", show=False),
        Binding("space", "app.toggle_pause", "Pause"),
        Binding("enter", "app.details", "Details"),
        Binding("tab", "app.switch_pane", "Pane"),
        Binding("shift+tab", "app.switch_pane(-1)", "Previous pane", show=False),
        Binding("w", "app.export", "Export"),
        Binding("l", "app.ladder", "Ladder"),
        Binding("n", "toggle_note", "Watch"),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, buffer: RowBuffer, note: str = "") -> None:
        super().__init__()
        self.lab_note = LabNote(note, id="note") if note.strip() else None
        self.segment_list = SegmentList(buffer, id="segments")
        self.socket_tree = SocketTree(id="sockets")
        self.detail_pane = DetailPane(id="details")
        self.filter_input = FilterInput(id="filter")
        self.status_bar = StatusBar(id="status")
        self.lower_pane = "details"  # which lower pane a narrow screen shows
        self.upper = True  # a tiny screen shows the list (else the lower pane)

    def compose(self) -> ComposeResult:
        self.segment_list.border_title = "Segments"
        self.socket_tree.border_title = "Sockets"
        self.detail_pane.border_title = "Details"
        if self.lab_note is not None:
            yield self.lab_note
        yield self.segment_list
        with Horizontal(id="lower"):
            yield self.socket_tree
            yield self.detail_pane
        yield self.filter_input
        yield self.status_bar
        yield KeysFooter()

    def on_mount(self) -> None:
        self.segment_list.focus()
        self._apply_size(self.size.width, self.size.height)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_note":
            return self.lab_note is not None  # no key for a note that is not there
        return True

    def action_toggle_note(self) -> None:
        if self.lab_note is not None:
            self.lab_note.toggle()

    def on_resize(self, event: events.Resize) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        self.set_class(width < NARROW_WIDTH or height < SHORT_HEIGHT, "-narrow")
        self.set_class(height < TINY_HEIGHT, "-tiny")
        note = self.lab_note
        room = not self.has_class("-narrow")
        if note is not None and not note.toggled and note.expanded != room:  # (until n says)
            note.expanded = room  # open where there is room
            note.refresh(layout=True)
        self._show_lower()

    def _show_lower(self) -> None:
        self.socket_tree.set_class(self.lower_pane != "sockets", "-hidden-when-narrow")
        self.detail_pane.set_class(self.lower_pane != "details", "-hidden-when-narrow")
        self.segment_list.set_class(not self.upper, "-hidden-when-tiny")
        self.query_one("#lower").set_class(self.upper, "-hidden-when-tiny")

    def focus_pane(self, name: str) -> None:
        widget = {"segments": self.segment_list, "sockets": self.socket_tree, "details": self.detail_pane}[
            name
        ]
        if name != "segments":
            self.lower_pane = name
        self.upper = name == "segments"
        self._show_lower()
        widget.focus()

    def current_pane(self) -> str:
        focused = self.focused
        for name in PANES:
            node = focused
            while node is not None:
                if node.id == name:
                    return name
                node = node.parent  # type: ignore[assignment]
        return "segments"

    def switch_pane(self, step: int = 1) -> None:
        i = PANES.index(self.current_pane())
        self.focus_pane(PANES[(i + step) % len(PANES)])
