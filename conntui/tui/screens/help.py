"""The ``?`` screen: keys, the filter language, and what each match kind means."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..text import MATCH_HELP, MATCH_STYLE

KEYS = [
    ("/", "filter the list and the socket view (Enter applies, Esc clears)"),
    ("Esc", "clear the filter"),
    ("space", "pause / resume the display (capture goes on)"),
    ("↑ ↓ PgUp PgDn Home", "move the cursor in the list (it stops following)"),
    ("End", "jump to the newest segment and follow again"),
    ("Enter", "focus the detail pane of the selected segment"),
    ("Tab / Shift+Tab", "switch between the list, the sockets and the details"),
    ("w", "export to pcapng/pcap (all, or only what the filter shows)"),
    ("l", "the selected segment's connection as a ladder (Esc closes)"),
    ("n", "conntui lab: show or fold what to watch"),
    ("Ctrl+P", "command palette: the same actions by name"),
    ("?", "this help"),
    ("q", "quit (a -w file is finished properly)"),
]

FILTERS = [
    ("8080  80,443  8000-8100", "a source or destination port"),
    ("pid:1234", "the sender or receiver is held by this pid"),
    ("proc:nginx", "... by a process whose name contains this"),
    ("ctr:web", "... by a process in a container whose name contains this (or id starts so)"),
    ("netns:4026531840", "the sender or receiver socket is in this network namespace"),
    ("match:none", "the match kind (below)"),
    ("tcp  udp", "the protocol"),
    ("host:127.0.0.1", "a source or destination address"),
]


def help_text() -> Text:
    head = Style(bold=True, underline=True)
    key = Style(bold=True, color="cyan")
    t = Text()
    t.append("conntui", style=Style(bold=True))
    t.append(" shows, for every TCP/UDP segment, which process and file descriptor the kernel\n")
    t.append("delivers it to (the receiver), which one sent it, and the lookup steps that decided it.\n\n")
    t.append("Keys\n", style=head)
    for k, what in KEYS:
        t.append(f"  {k:<20}", style=key)
        t.append(what + "\n")
    t.append("\nFilter terms (all must hold)\n", style=head)
    for k, what in FILTERS:
        t.append(f"  {k:<24}", style=key)
        t.append(what + "\n")
    t.append("\nMatch kinds\n", style=head)
    for m, what in MATCH_HELP.items():
        t.append("  ")
        t.append(f"{m:<16}", style=MATCH_STYLE[m])
        t.append("  " + what + "\n")
    t.append("\nIn the list, a socket is ")
    t.append("process[pid] fd N", style=Style(bold=True))
    t.append("; ")
    t.append("kernel", style=Style(italic=True, color="bright_black"))
    t.append(" means no process holds it; - means no socket.\n")
    t.append("Press Esc, q or ? to close.", style=Style(dim=True))
    return t


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 96; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 1 2;
    }
    """

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(help_text())

    def action_close(self) -> None:
        self.dismiss(None)
