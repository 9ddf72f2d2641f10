"""The command palette (Ctrl+P) offers the same actions as the keys."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import ConntuiApp

# (title, help, app action)
ACTIONS: list[tuple[str, str, str]] = [
    ("Filter", "Filter the list and the socket view (/)", "filter"),
    ("Clear filter", "Show every segment again (Esc)", "clear_filter"),
    ("Pause / resume", "Freeze the display; capture goes on (space)", "toggle_pause"),
    ("Show details", "Focus the detail pane of the selected segment (enter)", "details"),
    ("Switch pane", "Move between the list, the sockets and the details (tab)", "switch_pane"),
    ("Follow newest", "Jump to the newest segment and follow (end)", "follow"),
    ("Export", "Write the session to a pcapng/pcap file (w)", "export"),
    ("Help", "Keys, filter terms and match kinds (?)", "help"),
    ("Quit", "Leave conntui, finishing a -w file (q)", "quit"),
]


class ConntuiCommands(Provider):
    """conntui's actions by name."""

    async def _run(self, action: str) -> None:
        app = cast("ConntuiApp", self.app)
        await app.run_action(action)

    async def discover(self) -> Hits:
        for title, help_text, action in ACTIONS:
            yield DiscoveryHit(title, partial(self._run, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in ACTIONS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self._run, action), help=help_text)
