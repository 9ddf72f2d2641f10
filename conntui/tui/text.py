"""Plain-text pieces of the UI: holders, endpoints, clock, match colours.

Everything that came from outside (process names, interface names, explanations, payload)
goes through ``safe`` and ends up in a ``rich.text.Text`` built from plain strings, never
in a markup string, so ``[red]x[/red]`` or an escape sequence shows as those characters.
"""

from __future__ import annotations

import time

from rich.style import Style
from rich.text import Text

from ..jsonout import holder_summary, safe_text
from ..model import PACKET_OUTGOING, Container, Holder, Match, SocketEntry


def safe(s: str) -> str:
    """``s`` with control, bidi and other non-printable characters as visible escapes."""
    return safe_text(s)


def holder_text(h: Holder) -> str:
    """``httpd[1234] fd 3``, and `` (ctr web)`` when the process runs in a container."""
    return holder_summary(h)


def container_text(c: Container) -> str:
    """Everything known about a container, for Details: ``web (podman, id 5f6dc9ff6ca2…)``."""
    bits = [c.runtime or "runtime unknown"]
    if c.id:
        bits.append(f"id {c.id}")
    if c.pod:
        bits.append(f"pod {c.pod}")
    name = c.name or "name unknown"
    return safe(f"{name} ({', '.join(bits)})")


def socket_brief(sock: SocketEntry | None) -> str:
    """``nginx[12] fd 7`` (``+N`` more holders), ``kernel`` for no holder, ``-`` for none."""
    if sock is None:
        return "-"
    if not sock.holders:
        return "kernel"
    more = f" +{len(sock.holders) - 1}" if len(sock.holders) > 1 else ""
    return holder_text(sock.holders[0]) + more


def endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def direction(pkttype: int) -> str:
    if pkttype < 0:
        return "?"
    return "out" if pkttype == PACKET_OUTGOING else "in"


_clock_cache: list[object] = [-1, ""]


def clock(ts: float) -> str:
    """Local wall-clock ``HH:MM:SS.ffffff`` (as tcpdump prints it)."""
    sec = int(ts)
    usec = round((ts - sec) * 1_000_000)
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    if _clock_cache[0] != sec:
        _clock_cache[0] = sec
        _clock_cache[1] = time.strftime("%H:%M:%S", time.localtime(sec))
    return f"{_clock_cache[1]}.{usec:06d}"


def count(n: float) -> str:
    """``1,234`` / ``12.3k`` / ``4.5M``: short enough for a status bar."""
    if n < 10_000:
        return f"{n:,.0f}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


# How each match kind looks. none and unknown are meant to jump out of a scrolling list.
MATCH_STYLE: dict[str, Style] = {
    Match.ESTABLISHED: Style(color="green"),
    Match.LISTENER: Style(color="cyan", bold=True),
    Match.ACCEPT_QUEUE: Style(color="yellow", bold=True),
    Match.SYN_RECV: Style(color="yellow"),
    Match.TIME_WAIT: Style(color="magenta"),
    Match.UDP_CONNECTED: Style(color="bright_blue"),
    Match.UDP_UNCONNECTED: Style(color="blue", bold=True),
    Match.NONE: Style(color="bright_white", bgcolor="red", bold=True),
    Match.NOT_LOCAL: Style(color="bright_black"),
    Match.UNKNOWN: Style(color="black", bgcolor="yellow", bold=True),
}
ALERT_MATCHES = frozenset((Match.NONE, Match.UNKNOWN))
# a faint tint over the whole row of a segment nobody receives
ROW_TINT: dict[str, Style] = {
    Match.NONE: Style(bgcolor="#3a1010"),
    Match.UNKNOWN: Style(bgcolor="#3a3410"),
}

MATCH_HELP: dict[str, str] = {
    Match.ESTABLISHED: "4-tuple hit: a connected socket a process holds",
    Match.LISTENER: "a SYN handed to a listening socket",
    Match.ACCEPT_QUEUE: "a connected child not yet accept()ed: no fd yet",
    Match.SYN_RECV: "handshake half done: a request sock of the listener",
    Match.TIME_WAIT: "kernel-owned remains of a closed connection",
    Match.UDP_CONNECTED: "a UDP socket connect()ed to this peer",
    Match.UDP_UNCONNECTED: "a UDP socket bound to the port, any peer",
    Match.NONE: "no socket: the kernel answers RST / ICMP unreachable",
    Match.NOT_LOCAL: "the destination is not this host",
    Match.UNKNOWN: "should have matched, the socket table had nothing",
}


def match_text(match: str) -> Text:
    return Text(str(match), style=MATCH_STYLE.get(match, Style()))
