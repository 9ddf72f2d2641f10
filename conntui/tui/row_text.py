"""One segment as one line of the live list (a ``rich.text.Text``, never markup).

The columns fit the list's width: their widths come from the rows seen (``Widths``) and
the width on screen (``fit``). As the list narrows, the other columns go first (the
interface, the direction, the length, the full time, the addresses) and the sender →
receiver column last; every cell too long for its column ends in an ellipsis. Below
``WHO_MIN`` columns for sender → receiver, the header says how wide the list must be.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text

from ..model import Attribution, Record, SocketEntry
from .text import MATCH_STYLE, ROW_TINT, clock, direction, endpoint, safe

MIN_ENDPOINT = 11  # "source" / "destination" (the header's words)
MAX_ENDPOINT = 47  # "[ffff:...:ffff]:65535"
MATCH_WIDTH = 15  # "udp_unconnected"
NAME_WIDTH = 20  # process names are cut here in the list (the detail pane has them whole)
CTR_WIDTH = 16  # and container names here
WHO_WANT = 40  # sender → receiver never asks for more (longer names are cut)
WHO_MIN = 20  # below this, the header says the list is too narrow

DIM = Style(dim=True)
KERNEL = Style(color="bright_black", italic=True)
HEADER = Style(bold=True, underline=True)
NOTE = Style(color="yellow", bold=True)

# short names for the narrow layouts (same colours)
SHORT_MATCH = {
    "established": "estab",
    "accept_queue": "accept_q",
    "udp_connected": "udp_conn",
    "udp_unconnected": "udp_unconn",
    "time_wait": "time_wait",
    "not_local": "not_local",
}
SHORT_MATCH_WIDTH = 10


def kernel_mark(att: Attribution) -> str:
    """A mark after the match: ``!`` where the kernel's record disagreed with the table's
    prediction (Details says how), ``✗`` where the kernel dropped the segment."""
    if att.agrees is False:
        return "!"
    if att.kernel is not None and att.kernel.verdict == "dropped":
        return "✗"
    return ""


def cut(s: str, width: int) -> str:
    """``s`` in at most ``width`` cells, its end replaced by ``…`` if it had to be cut."""
    if len(s) <= width:
        return s
    return s[: width - 1] + "…" if width > 0 else ""


@dataclass(frozen=True, slots=True)
class Widths:
    """What the rows seen so far need (each at least its header's width)."""

    iface: int = 5  # "iface"
    endpoint: int = MIN_ENDPOINT
    flags: int = 5  # "flags"
    length: int = 3  # "len"
    match: int = 5  # "match"
    who: int = 17  # "sender → receiver"

    def grow(self, rec: Record) -> Widths:
        seg = rec.segment
        ep = max(len(endpoint(seg.src, seg.sport)), len(endpoint(seg.dst, seg.dport)))
        iface = min(10, len(safe(seg.iface) or "?"))
        flags = min(8, len(seg.flags)) if seg.proto == "tcp" else 3
        length = len(str(seg.payload_len))
        match = len(str(rec.attribution.match)) + len(kernel_mark(rec.attribution))
        who = min(WHO_WANT, who_width(rec))
        if (
            ep <= self.endpoint
            and iface <= self.iface
            and flags <= self.flags
            and length <= self.length
            and match <= self.match
            and who <= self.who
        ):
            return self
        return Widths(
            max(self.iface, iface),
            max(self.endpoint, min(MAX_ENDPOINT, ep)),
            max(self.flags, flags),
            max(self.length, length),
            max(self.match, match),
            max(self.who, who),
        )


# The layouts, richest first: each drops or narrows a column of the one before.
@dataclass(frozen=True, slots=True)
class Shape:
    time: str  # "full" (HH:MM:SS.ffffff), "short" (HH:MM:SS) or "" (none)
    iface: bool
    dir: bool
    proto: bool  # a column of its own (else "udp" shows in the flags column)
    ends: str  # "addresses", "ports" (sport→dport) or ""
    length: bool
    short_match: bool
    flags: bool = True


SHAPES = (
    Shape("full", True, True, True, "addresses", True, False),
    Shape("full", False, True, True, "addresses", True, False),
    Shape("full", False, False, True, "addresses", True, False),
    Shape("full", False, False, False, "addresses", True, False),
    Shape("short", False, False, False, "ports", True, False),
    Shape("short", False, False, False, "ports", False, True),
    Shape("", False, False, False, "ports", False, True),
    Shape("", False, False, False, "", False, True),
    Shape("", False, False, False, "", False, True, flags=False),
)


@dataclass(frozen=True, slots=True)
class Layout:
    """A shape with its column widths, for one width of the list."""

    shape: Shape = SHAPES[0]
    widths: Widths = Widths()
    who: int = WHO_WANT  # cells for sender → receiver
    note: str = ""  # what the header says instead of the column names (too narrow)
    room: int = 1 << 16  # cells a line may take (on a very narrow list, the match is cut too)

    @property
    def match_width(self) -> int:
        return SHORT_MATCH_WIDTH if self.shape.short_match else max(self.widths.match, 5)

    @property
    def flags_width(self) -> int:
        return self.widths.flags if self.shape.proto else max(self.widths.flags, 3)


def _fixed(shape: Shape, w: Widths) -> int:
    """Cells the columns before sender → receiver take, with one space after each."""
    n = 0
    if shape.time:
        n += (15 if shape.time == "full" else 8) + 1
    if shape.iface:
        n += w.iface + 1
    if shape.dir:
        n += 4
    if shape.proto:
        n += 6  # "proto"
    if shape.ends == "addresses":
        n += 2 * w.endpoint + 3 + 1
    elif shape.ends:
        n += 11 + 1  # "sport→dport"
    if shape.flags:
        n += w.flags + 1
    if shape.length:
        n += max(w.length, 3) + 1
    n += (SHORT_MATCH_WIDTH if shape.short_match else max(w.match, 5)) + 1
    return n


def fit(width: int, widths: Widths) -> Layout:
    """The richest layout whose sender → receiver column gets all it wants in ``width``
    cells (the last one left blank: a line never runs into the pane's edge); else the
    leanest, with what is left for it."""
    room = width - 1
    for shape in SHAPES:
        left = room - _fixed(shape, widths)
        if left >= widths.who:
            return Layout(shape, widths, left, room=room)
    shape = SHAPES[-1]
    left = room - _fixed(shape, widths)
    if left >= WHO_MIN:
        return Layout(shape, widths, left, room=room)
    need = _fixed(shape, widths) + WHO_MIN + 1 + (width - room)
    notes = (
        f"too narrow: sender → receiver needs {need} columns",
        f"too narrow: {need}+ columns",
        "too narrow",
    )
    note = next((n for n in notes if len(n) <= room), cut(notes[-1], room))
    return Layout(shape, widths, max(0, left), note=note, room=room)


def header_text(layout: Layout) -> Text:
    t = Text(style=HEADER, no_wrap=True, end="")
    if layout.note:
        t.append(layout.note, style=NOTE)
        return t
    shape, w = layout.shape, layout.widths
    if shape.time:
        t.append("time".ljust(15 if shape.time == "full" else 8) + " ")
    if shape.iface:
        t.append("iface".ljust(w.iface) + " ")
    if shape.dir:
        t.append("dir ")
    if shape.proto:
        t.append("proto ")
    if shape.ends == "addresses":
        t.append("source".rjust(w.endpoint) + "   " + "destination".ljust(w.endpoint) + " ")
    elif shape.ends:
        t.append("sport→dport ")
    if shape.flags:
        t.append("flags".ljust(layout.flags_width) + " ")
    if shape.length:
        t.append("len".rjust(max(w.length, 3)) + " ")
    t.append("match".ljust(layout.match_width) + " ")
    t.append(cut("sender → receiver", layout.who))
    if t.cell_len > layout.room:
        t.truncate(layout.room, overflow="ellipsis")
    return t


def _holder_parts(sock: SocketEntry | None) -> tuple[str, str, str]:
    """(name, "[pid]", " fd N +k"), or a word alone: "kernel" / "-"."""
    if sock is None:
        return ("-", "", "")
    if not sock.holders:
        return ("unreadable" if sock.unreadable else "kernel", "", "")
    h = sock.holders[0]
    more = f" +{len(sock.holders) - 1}" if len(sock.holders) > 1 else ""
    ctr = f" (ctr {cut(safe(h.container.label), CTR_WIDTH)})" if h.container is not None else ""
    return (safe(h.process), f"[{h.pid}]", f" fd {h.fd}{ctr}{more}")


def who_width(rec: Record) -> int:
    """Cells sender → receiver takes with names cut at ``NAME_WIDTH``."""
    att = rec.attribution
    n = 3
    for sock in (att.sender, att.receiver):
        name, pid, fd = _holder_parts(sock)
        n += min(len(name), NAME_WIDTH) + len(pid) + len(fd)
    return n


def _side(t: Text, parts: tuple[str, str, str], name_width: int, pids: bool) -> None:
    name, pid, fd = parts
    if not pid:
        t.append(name, style=KERNEL if name == "kernel" else DIM)
        return
    t.append(cut(name, name_width))
    if pids:
        t.append(pid, style=DIM)
    t.append(fd)


def who_text(rec: Record, width: int) -> Text:
    """``sender → receiver`` in at most ``width`` cells. What goes first: the end of
    long names (down to 6 cells), then the pids, then the names down to one letter and
    ``…``, and last the end of the line."""
    att = rec.attribution
    sides = (_holder_parts(att.sender), _holder_parts(att.receiver))
    fixed = 3 + sum(len(p[0]) for p in sides if not p[1]) + sum(len(p[2]) for p in sides)
    pid_cells = sum(len(p[1]) for p in sides)
    names = [min(len(p[0]), NAME_WIDTH) if p[1] else 0 for p in sides]

    def shrink(over: int, floor: int) -> int:
        while over > 0 and max(names) > floor:  # the longer name loses a cell at a time
            i = 0 if names[0] >= names[1] else 1
            names[i] -= 1
            over -= 1
        return over

    pids = True
    over = shrink(fixed + pid_cells + sum(names) - width, 6)
    if over > 0:
        pids = False
        over -= pid_cells
        shrink(over, 2)
    t = Text(no_wrap=True, end="")
    _side(t, sides[0], names[0], pids)
    t.append(" → ", style=DIM)
    _side(t, sides[1], names[1], pids)
    if t.cell_len > width:
        t.truncate(width, overflow="ellipsis")
    return t


def _cell(t: Text, value: str, width: int, style: Style | None = None, *, right: bool = False) -> None:
    v = cut(value, width)
    t.append(v.rjust(width) if right else v.ljust(width), style=style)
    t.append(" ")


def row_text(rec: Record, layout: Layout) -> Text:
    seg = rec.segment
    att = rec.attribution
    shape, w = layout.shape, layout.widths
    t = Text(no_wrap=True, end="")
    if shape.time == "full":
        t.append(clock(seg.ts) + " ", style=DIM)
    elif shape.time:
        t.append(clock(seg.ts)[:8] + " ", style=DIM)
    if shape.iface:
        _cell(t, safe(seg.iface) or "?", w.iface)
    if shape.dir:
        _cell(t, direction(seg.pkttype), 3)
    if shape.proto:
        _cell(t, seg.proto, 5)
    if shape.ends == "addresses":
        t.append(cut(endpoint(seg.src, seg.sport), w.endpoint).rjust(w.endpoint))
        t.append(" → ", style=DIM)
        _cell(t, endpoint(seg.dst, seg.dport), w.endpoint)
    elif shape.ends:
        t.append(f"{seg.sport:>5}", style=DIM)
        t.append("→", style=DIM)
        t.append(f"{seg.dport:<5} ")
    if shape.flags:
        flags = seg.flags if seg.proto == "tcp" else ("-" if shape.proto else "udp")
        _cell(t, flags, layout.flags_width)
    if shape.length:
        _cell(t, str(seg.payload_len), max(w.length, 3), right=True)
    match = att.match
    name = SHORT_MATCH.get(match, str(match)) if shape.short_match else str(match)
    _cell(t, name + kernel_mark(att), layout.match_width, MATCH_STYLE.get(match, Style()))
    if layout.who > 0:
        t.append_text(who_text(rec, layout.who))
    if t.cell_len > layout.room:
        t.truncate(layout.room, overflow="ellipsis")
    tint = ROW_TINT.get(match)
    if tint is not None:
        t.style = tint  # under the spans: the match cell keeps its own colours
    return t
