"""The ladder of one connection: its segments as a sequence diagram, in plain text.

Lanes are the sockets the segments went between, as the kernel chose them: the client's
fd, the listener, the accepted fd, a connection waiting in the accept queue, a TIME_WAIT
remain, and ``-`` where no local socket sent or received a segment (a remote host, or the
kernel answering for a closed port). The sockets of the end that sent the first segment
are on the left. Arrows are the segments in capture order, with flags, length and the
match. Bounded: a flow with more than ``MAX_ARROWS`` segments shows its last ones and
says how many it left out. No Textual here (the screen is ``screens/ladder.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..model import Record, Segment, SocketEntry
from .feed import socket_key
from .row_text import cut
from .text import clock, endpoint, holder_text, safe

MAX_ARROWS = 5000
LANE_WIDTH = 26
TIME_WIDTH = 15
NOTE_WIDTH = 90  # a note is cut here (the detail pane has it whole)

FlowKey = tuple[str, tuple[str, int], tuple[str, int]]


def flow_key(seg: Segment) -> FlowKey:
    """The same for both directions of one 4-tuple."""
    a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
    return (seg.proto, min(a, b), max(a, b))


@dataclass(frozen=True)
class Lane:
    key: object
    label: str
    left: bool  # the end that sent the flow's first segment shown

    @property
    def held(self) -> bool:
        """Named by a process's fd (not by what the kernel keeps)."""
        return "[" in self.label and " fd " in self.label


@dataclass(frozen=True)
class Arrow:
    seq: int
    ts: float
    src: int  # lane indices
    dst: int
    what: str  # "S 0", "PA 35"
    match: str
    note: str = ""  # what later segments proved or the kernel will do (the first note)


@dataclass
class Ladder:
    title: str
    lanes: list[Lane] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)
    elided: int = 0  # older segments of the flow left out (MAX_ARROWS)


def lane_label(sock: SocketEntry | None) -> str:
    """``process[pid] fd N`` for a socket a process holds, else what the kernel keeps."""
    if sock is None:
        return "- (no socket)"
    if sock.holders:
        more = f" +{len(sock.holders) - 1}" if len(sock.holders) > 1 else ""
        return holder_text(sock.holders[0]) + more
    if sock.state == "TIME_WAIT":
        return "TIME_WAIT (kernel)"
    if sock.state in ("SYN_RECV", "NEW_SYN_RECV"):
        return "request sock (kernel)"
    if sock.state == "ESTABLISHED" and not sock.inode:
        return "accept queue (no fd yet)"
    return f"kernel ({sock.state})"


def ladder_for(records: Iterable[Record], selected: Record, limit: int = MAX_ARROWS) -> Ladder:
    """The ladder of ``selected``'s 4-tuple over ``records`` (in capture order)."""
    sel = selected.segment
    ports = {sel.sport, sel.dport}
    a, b = (sel.src, sel.sport), (sel.dst, sel.dport)
    flow = [
        r
        for r in records
        # the ports first: one set lookup each rules out nearly every other segment
        if (s := r.segment).sport in ports
        and s.dport in ports
        and s.proto == sel.proto
        and (
            ((s.src, s.sport) == a and (s.dst, s.dport) == b)
            or ((s.src, s.sport) == b and (s.dst, s.dport) == a)
        )
    ]
    elided = max(0, len(flow) - limit)
    flow = flow[elided:]
    seg0 = flow[0].segment if flow else selected.segment
    left_end = (seg0.src, seg0.sport)
    title = f"{seg0.proto} {endpoint(seg0.src, seg0.sport)} ⇄ {endpoint(seg0.dst, seg0.dport)}"
    ladder = Ladder(title, elided=elided)
    index: dict[object, int] = {}

    def lane(sock: SocketEntry | None, left: bool) -> int:
        k: object = ("none", left) if sock is None else socket_key(sock)
        i = index.get(k)
        if i is None:
            i = index[k] = len(ladder.lanes)
            ladder.lanes.append(Lane(k, lane_label(sock), left))
        elif sock is not None and sock.holders and not ladder.lanes[i].held:
            # a connection first seen in the accept queue, accept()ed since: named by its fd
            ladder.lanes[i] = Lane(k, lane_label(sock), ladder.lanes[i].left)
        return i

    for rec in flow:
        seg, att = rec.segment, rec.attribution
        from_left = (seg.src, seg.sport) == left_end
        src = lane(att.sender, from_left)
        dst = lane(att.receiver, not from_left)
        what = f"{seg.flags or '-'} {seg.payload_len}" if seg.proto == "tcp" else f"udp {seg.payload_len}"
        note = safe(att.notes[0]) if att.notes else ""
        ladder.arrows.append(Arrow(rec.seq, seg.ts, src, dst, what, str(att.match), note))
    # left lanes first, then right ones, each in order of first appearance
    order = sorted(range(len(ladder.lanes)), key=lambda i: (not ladder.lanes[i].left, i))
    where = {old: new for new, old in enumerate(order)}
    ladder.lanes = [ladder.lanes[i] for i in order]
    ladder.arrows = [replace(a, src=where[a.src], dst=where[a.dst]) for a in ladder.arrows]
    return ladder


def _put(line: list[str], x: int, text: str) -> None:
    """``text`` written into ``line`` from cell ``x`` on, as far as the line goes."""
    for i, ch in enumerate(text):
        if 0 <= x + i < len(line):
            line[x + i] = ch


def _center(i: int, lane_width: int) -> int:
    return TIME_WIDTH + 1 + i * lane_width + lane_width // 2


def split_label(label: str) -> tuple[str, str]:
    """A lane's label on two lines: ``name[pid]`` over ``fd N``, or a word over its
    parenthesis (``accept queue`` over ``(no fd yet)``)."""
    for sep, keep in ((" fd ", "fd "), (" (", "(")):
        head, found, tail = label.rpartition(sep)
        if found and head:
            return head, keep + tail
    return label, ""


def ladder_head(ladder: Ladder, lane_width: int = LANE_WIDTH) -> list[str]:
    """The lines above the arrows: the title, (what is left out), the lane labels on two
    lines, the rails."""
    n = len(ladder.lanes)
    width = TIME_WIDTH + 1 + n * lane_width
    out = [ladder.title]
    if ladder.elided:
        out.append(
            f"(the first {ladder.elided:,} segments of this flow are left out; "
            f"the last {len(ladder.arrows):,} follow)"
        )
    for part in (0, 1):
        head = [" "] * width
        for i, ln in enumerate(ladder.lanes):
            label = cut(split_label(ln.label)[part], lane_width - 1)
            _put(head, _center(i, lane_width) - len(label) // 2, label)
        out.append("".join(head).rstrip())
    out.append("".join(_rail(n, lane_width)).rstrip())
    return out


def _rail(n: int, lane_width: int) -> list[str]:
    rail = [" "] * (TIME_WIDTH + 1 + n * lane_width)
    for i in range(n):
        rail[_center(i, lane_width)] = "│"
    return rail


def arrow_line(ladder: Ladder, a: Arrow, lane_width: int = LANE_WIDTH) -> str:
    """One segment: its time, an arrow from the sender's lane to the receiver's, the match."""
    line = _rail(len(ladder.lanes), lane_width)
    _put(line, 0, clock(a.ts))
    x0, x1 = _center(a.src, lane_width), _center(a.dst, lane_width)
    if x0 == x1:  # a segment from a socket to itself (or from nowhere to nowhere)
        _put(line, x0 + 1, f" ↺ {a.what}")
    else:
        lo, hi = min(x0, x1), max(x0, x1)
        for x in range(lo + 1, hi):
            line[x] = "─"
        line[hi - 1 if x1 > x0 else lo + 1] = "▶" if x1 > x0 else "◀"
        label = f" {a.what} "
        if len(label) <= hi - lo - 3:
            _put(line, lo + 1 + (hi - lo - 1 - len(label)) // 2, label)
    note = f"  ⚠ {cut(a.note, NOTE_WIDTH)}" if a.note else ""
    return "".join(line).rstrip() + "   " + a.match + note


def ladder_lines(ladder: Ladder, lane_width: int = LANE_WIDTH) -> list[str]:
    """The whole ladder as plain lines (``ladder_head``, then one ``arrow_line`` each)."""
    return ladder_head(ladder, lane_width) + [arrow_line(ladder, a, lane_width) for a in ladder.arrows]


def ladder_svg(ladder: Ladder, lane_width: int = LANE_WIDTH) -> str:
    """The ladder as an SVG picture of its text (rich's terminal export)."""
    import io

    from rich.console import Console
    from rich.text import Text

    lines = ladder_lines(ladder, lane_width)
    width = max(40, max(len(line) for line in lines) + 1)
    console = Console(record=True, width=width, file=io.StringIO(), color_system="truecolor")
    for line in lines:
        console.print(Text(line, no_wrap=True, end=""), overflow="ignore", crop=False)
    return console.export_svg(title="conntui ladder")
