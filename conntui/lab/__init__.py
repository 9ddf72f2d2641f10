"""``conntui lab``: teaching scenarios built in private network namespaces.

Each scenario creates its own namespaces (``conntui-lab-<pid>-*``), runs bounded traffic
with real programs (Python sockets; Node's ``net`` where ``node`` is on PATH), opens
conntui on that namespace (the TUI, or ``--headless --json`` for tests and scripts), checks
what conntui showed against what the programs reported, and tears everything down.

Kept light: ``python -m conntui.lab.actor`` imports this package inside every namespace.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """Entry point for ``conntui lab ...`` (``argv`` without the word ``lab``)."""
    from .command import main as command_main

    return command_main(list(argv))


__all__ = ["main"]
