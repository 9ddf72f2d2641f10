"""``python -m conntui`` and the ``conntui`` command.

The command line's own module is imported here, inside :func:`run`: a Ctrl-C while Python
loads it (the TUI's and scapy's imports take a while) ends conntui quietly too.
"""

from __future__ import annotations

import sys


def run() -> int:
    """Run :func:`conntui.cli.main`; a Ctrl-C before it could take over exits 130 quietly."""
    try:
        from .cli import interrupted, main
    except KeyboardInterrupt:
        sys.stderr.write("conntui: interrupted\n")
        return 130
    try:
        return main()
    except KeyboardInterrupt as exc:  # between two of main's own handlers
        return interrupted(exc)


if __name__ == "__main__":
    sys.exit(run())
