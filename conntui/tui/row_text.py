"""One segment as one line of the live list (a ``rich.text.Text``, never markup)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text

from ..model import Record, SocketEntry
from .text import MATCH_STYLE, ROW_TINT, clock, direction, endpoint, safe

MIN_ENDPOINT = 21  # "255.255.255.255:65535"
MAX_ENDPOINT = 47  # "[ffff:...:ffff]:65535"
MATCH_WIDTH = 15  # "udp_unconnected"
NAME_WIDTH = 20  # process names are cut here in the list (the detail pane has them whole)

DIM = Style(dim=True)
KERNEL = Style(color="bright_black", italic=True)
HEADER = Style(bold=True, underline=True)


@dataclass(frozen=True, slots=True)
class Layout:
    """Column widths. ``narrow`` (under ~120 columns) keeps what matters most: the time,
    flags, ports, the match and who sends and receives; the detail pane has the rest."""

    narrow: bool = False
    endpoint_width: int = MIN_ENDPOINT


# short names for the narrow layout (same colours)
SHORT_MATCH = {
    "established": "estab",
    "accept_queue": "accept_q",
    "udp_connected": "udp_conn",
    "udp_unconnected": "udp_unconn",
}
NARROW_MATCH_WIDTH = 10


def _cut(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 1] + "…"


def _socket(sock: SocketEntry | None) -> Text:
    if sock is None:
        return Text("-", style=DIM)
    if not sock.holders:
        return Text("kernel", style=KERNEL)
    h = sock.holders[0]
    t = Text(_cut(safe(h.process), NAME_WIDTH))
    t.append(f"[{h.pid}]", style=DIM)
    t.append(f" fd {h.fd}")
    if len(sock.holders) > 1:
        t.append(f" +{len(sock.holders) - 1}", style=DIM)
    return t


def header_text(layout: Layout) -> Text:
    t = Text(style=HEADER, no_wrap=True, end="")
    if layout.narrow:
        t.append("time     flg  sport→dport ")
        t.append("match".ljust(NARROW_MATCH_WIDTH))
        t.append(" sender → receiver")
        return t
    ew = layout.endpoint_width
    t.append("time           ")
    t.append(" iface ")
    t.append(" dir")
    t.append(" pro ")
    t.append("source".rjust(ew) + "   " + "destination".ljust(ew))
    t.append(" flag  len  ")
    t.append("match".ljust(MATCH_WIDTH))
    t.append("  sender → receiver")
    return t


def _narrow_row(rec: Record) -> Text:
    seg = rec.segment
    att = rec.attribution
    t = Text(no_wrap=True, end="")
    t.append(clock(seg.ts)[:8], style=DIM)
    t.append(" " + (seg.flags if seg.proto == "tcp" else "udp").ljust(3)[:3])
    t.append(f" {seg.sport:>5}", style=DIM)
    t.append("→", style=DIM)
    t.append(f"{seg.dport:<5} ")
    match = att.match
    t.append(
        SHORT_MATCH.get(match, str(match)).ljust(NARROW_MATCH_WIDTH), style=MATCH_STYLE.get(match, Style())
    )
    t.append(" ")
    t.append_text(_socket(att.sender))
    t.append(" → ", style=DIM)
    t.append_text(_socket(att.receiver))
    return t


def row_text(rec: Record, layout: Layout) -> Text:
    if layout.narrow:
        t = _narrow_row(rec)
        tint = ROW_TINT.get(rec.attribution.match)
        if tint is not None:
            t.style = tint
        return t
    seg = rec.segment
    att = rec.attribution
    ew = layout.endpoint_width
    t = Text(no_wrap=True, end="")
    t.append(clock(seg.ts), style=DIM)
    t.append(" " + _cut(safe(seg.iface) or "?", 6).ljust(6))
    t.append(" " + direction(seg.pkttype).ljust(3))
    t.append(" " + seg.proto + " ")
    t.append(endpoint(seg.src, seg.sport).rjust(ew))
    t.append(" → ", style=DIM)
    t.append(endpoint(seg.dst, seg.dport).ljust(ew))
    t.append(" " + (seg.flags if seg.proto == "tcp" else "-").ljust(4))
    t.append(f"{seg.payload_len:>5}  ")
    match = att.match
    t.append(str(match).ljust(MATCH_WIDTH), style=MATCH_STYLE.get(match, Style()))
    t.append("  ")
    t.append_text(_socket(att.sender))
    t.append(" → ", style=DIM)
    t.append_text(_socket(att.receiver))
    tint = ROW_TINT.get(match)
    if tint is not None:
        t.style = tint  # under the spans: the match cell keeps its own colours
    return t


def endpoint_width(rec: Record) -> int:
    seg = rec.segment
    n = max(len(endpoint(seg.src, seg.sport)), len(endpoint(seg.dst, seg.dport)))
    return min(MAX_ENDPOINT, max(MIN_ENDPOINT, n))
