"""The ladder of one connection: its segments as a sequence diagram, in text and in SVG.

Lanes are what the segments went between, as the kernel chose it:

- a socket a process holds, ``process[pid]`` over ``fd N`` over what made it: ``connect()``,
  ``listen()`` (the listener that takes the SYNs), ``accept()`` (the connection's own socket);
- the ``accept queue``: a connection the handshake completed that no accept() has taken
  yet (segments that reach it have no fd to go to);
- ``TIME_WAIT``: what the kernel keeps of a closed connection;
- the ``kernel``: no socket took the segment; the kernel answers a TCP segment with a RST (its
  RSTs come from this lane) and a UDP datagram with ICMP port unreachable;
- ``NAT``: when conntrack rewrote the connection (a REDIRECT, a published container port),
  the rewrite, between the namespaces of the two ends; arrows it rewrote cross it at ``◇``;
- ``-``: no local socket (a remote host, or a socket gone before conntui saw it).

A connection conntrack rewrote is one ladder across its 4-tuples (as dialled, as
translated: ``-i any`` sees a published port's segments before DNAT and after it), learnt
from the rows that say what conntrack did (``LadderBuilder``). One socket is one lane, also
when a later one reuses its 4-tuple (a stale client, a new connection from the same port):
sockets are told apart by their cookie. When the lanes live in several network namespaces
each says which. The end that sent the first segment shown is on the left.

Arrows are the segments in capture order, with flags and payload length; after the rails,
conntui's match (its prediction from the socket table, or the kernel's word where they
differed) and the kernel's own verdict: ``✓`` when it agrees, ``≠`` when it does not. A
segment the kernel drops ends in ``✕``. Bounded: a flow of more than ``limit`` segments
keeps its last ones and says how many it left out, in constant memory however long the
flow (``LadderBuilder``). No Textual here (the screen is ``screens/ladder.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple
from xml.sax.saxutils import escape

from ..model import Attribution, Match, Record, Segment, SocketEntry
from .feed import socket_key
from .row_text import cut
from .text import clock, endpoint, holder_text, safe

COPY_NOTE = "the segment of record #"  # crossns.copy_note: a later copy of one segment
MAX_ARROWS = 5000
MAX_SVG_ARROWS = 2000  # an SVG taller than this is no picture anyone reads
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
    label: str  # on one line: ``curl[5151] fd 5``, ``accept queue``, ``kernel (no socket)``
    left: bool  # the end that sent the flow's first segment shown
    kind: str = "socket"  # socket | queue | time_wait | kernel | nat | none
    lines: tuple[str, ...] = ()  # the label as the head shows it (3 or 4 lines)

    @property
    def held(self) -> bool:
        """Named by a process's fd (not by what the kernel keeps)."""
        return "[" in self.label and " fd " in self.label


class Arrow(NamedTuple):
    """One segment (a NamedTuple: a ladder makes thousands, a frozen dataclass costs ~1 µs a
    field to build)."""

    seq: int
    ts: float
    src: int  # lane indices
    dst: int
    what: str  # "S 0", "PA 35"
    match: str
    note: str = ""  # what later segments proved or the kernel will do (the first note)
    verdict: str = ""  # "kernel: delivered ✓", "kernel: dropped NO_SOCKET ≠", "" (none published)
    dropped: bool = False  # the kernel drops it (its own word, or what later segments proved)
    nat: bool = False  # conntrack rewrote it on its way (it crosses the NAT lane)


@dataclass
class Ladder:
    title: str
    lanes: list[Lane] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)
    elided: int = 0  # older segments of the flow left out (the limit)
    caveat: str = ""  # what else the ladder may lack (e.g. rows before a look-back)


def lane_label(sock: SocketEntry | None) -> str:
    """``process[pid] fd N`` for a socket a process holds, else what the kernel keeps."""
    if sock is None:
        return "- (no socket)"
    if sock.holders:
        more = f" +{len(sock.holders) - 1}" if len(sock.holders) > 1 else ""
        return holder_text(sock.holders[0]) + more
    if sock.state == "TIME_WAIT":
        return "TIME_WAIT (kernel)"
    if sock.former_holders:
        return holder_text(sock.former_holders[0]) + " (closed)"
    if sock.state in ("SYN_RECV", "NEW_SYN_RECV"):
        return "request sock (kernel)"
    if sock.state == "ESTABLISHED" and not sock.inode:
        return "accept queue (no fd yet)"
    return f"kernel ({sock.state})"


def _kernel_sent(seg: Segment, att: Attribution) -> bool:
    """A RST no socket sent: the kernel answering for a port nothing listens on."""
    return att.sender is None and "R" in seg.flags


def _dropped(att: Attribution) -> bool:
    k = att.kernel
    if k is not None and k.verdict == "dropped":
        return True
    return any("drops this" in n or n.startswith("dropped") for n in att.notes)


_TAGS = (
    ("challenge ACK", " challenge ACK"),
    ("the kernel answered with a challenge ACK", " → challenge ACK"),
    ("a retransmission", " retransmitted"),
    ("the accept queue is full", " queue full"),
)


def _tag(att: Attribution) -> str:
    """A word on the arrow for what later segments proved (the note says it whole)."""
    for note in att.notes:
        for start, tag in _TAGS:
            if note.startswith(start):
                return tag
    return ""


def _verdict(att: Attribution) -> str:
    k = att.kernel
    if k is None:
        return ""
    reason = f" {k.reason}" if k.reason else ""
    mark = {True: " ✓", False: " ≠"}.get(att.agrees, "") if att.agrees is not None else ""
    return safe(f"kernel: {k.verdict}{reason}{mark}")


def _nat_step(att: Attribution) -> tuple[str, str, str] | None:
    """The NAT lane's label from the conntrack step of a rewritten segment: (``NAT
    REDIRECT``, ``:8081 → :9000``, ``(conntrack)``) or (``NAT DNAT+SNAT``, ``127.0.0.1:18082
    →``, ``10.88.0.6:80``)."""
    for step in att.steps:
        if not step.what.startswith("conntrack:"):
            continue
        kind = step.what.rpartition("(")[2].rstrip(")") or "NAT"
        dialled, _, rest = step.result.removeprefix("dialled ").partition("; the receiving socket is ")
        here = rest.partition(" ↔ ")[0]
        d_addr, _, d_port = dialled.rpartition(":")
        h_addr, _, h_port = here.rpartition(":")
        if kind == "DNAT" and d_addr == h_addr and d_addr:
            return "NAT REDIRECT", f":{d_port} → :{h_port}", "(conntrack)"  # to the host's own address
        return f"NAT {kind}", f"{dialled} →", here
    return None


End = tuple[str, int]


def _end(text: str) -> End | None:
    """``1.2.3.4:80`` or ``[::1]:80`` (``endpoint_text``) as (address, port)."""
    addr, _, port = text.strip().rpartition(":")
    if not addr or not port.isdigit():
        return None
    return addr.removeprefix("[").removesuffix("]"), int(port)


def nat_ends(seg: Segment, att: Attribution) -> dict[End, End] | None:
    """What a row's conntrack step says of its connection's ends (None: the row says
    nothing of NAT): each end as the capture, the socket and the client's dial name it,
    mapped to the dialled connection's end on the same side (the client, what it dialled).
    The step comes first when there is one (``crossns.compose``, ``natviews.through_nat``):
    ``conntrack: A → B (KIND)`` over ``dialled D; the receiving socket is H ↔ P`` or ``the
    local socket is L ↔ R``."""
    steps = att.steps
    if not steps or not steps[0].what.startswith("conntrack:"):
        return None
    step = steps[0]
    captured = step.what.removeprefix("conntrack:").rpartition(" (")[0]
    a_text, _, b_text = captured.partition(" → ")
    h_text, _, p_text = step.result.rpartition("socket is ")[2].partition(" ↔ ")
    a, b, h, p = _end(a_text), _end(b_text), _end(h_text), _end(p_text)
    if a is None or b is None or h is None or p is None:
        return None
    dialled = b
    if step.result.startswith("dialled "):
        dialled = _end(step.result.removeprefix("dialled ").partition(";")[0]) or b
    if h == a or p == b:  # the socket's own end is the sender's (an outgoing rewrite)
        h, p = p, h
    return {a: a, p: a, b: dialled, h: dialled, dialled: dialled}


def _key_of(proto: str, x: End, y: End) -> FlowKey:
    return (proto, min(x, y), max(x, y))


class LadderBuilder:
    """The segments of one connection, fed in capture order; keeps the last ``limit`` of
    them (constant memory however long the flow) and counts the rest.

    A connection is its 4-tuple, and, when conntrack rewrote it (a published port, a
    REDIRECT), every 4-tuple a row's conntrack step gives it: as dialled, as captured, as
    its socket has it. ``-i any`` sees such a segment before the rewrite on one device and
    after it on another; both copies, and both directions, are one ladder (the later copy
    of a segment is drawn once, as the first)."""

    def __init__(
        self, selected: Segment, limit: int = MAX_ARROWS, attribution: Attribution | None = None
    ) -> None:
        self.proto = selected.proto
        self.ports = {selected.sport, selected.dport}
        self.keys: set[FlowKey] = {flow_key(selected)}
        self.ends: dict[End, End] = {}  # each end of a rewritten connection: its dialled name
        self.selected = selected
        self.flow: deque[Record] = deque(maxlen=max(1, limit))
        self.total = 0
        self.caveat = ""
        if attribution is not None:
            self._learn(selected, attribution, True)

    def _learn(self, seg: Segment, att: Attribution, ours: bool) -> bool:
        """Takes the 4-tuples of a row's conntrack step when they are this connection's
        (``ours``: the row's own 4-tuple is); True if they are."""
        ends = nat_ends(seg, att)
        if ends is None:
            return ours
        proto = seg.proto
        tuples = {_key_of(proto, x, y) for x, cx in ends.items() for y, cy in ends.items() if cx != cy}
        if not ours and not tuples & self.keys:
            return False
        self.keys |= tuples
        self.ends.update(ends)
        for _, x, y in tuples:
            self.ports.update((x[1], y[1]))
        return True

    def takes(self, rec: Record) -> bool:
        """``rec`` is a segment of this connection (learning its other 4-tuples from it)."""
        seg = rec.segment
        ports = self.ports
        if seg.proto != self.proto or (seg.sport not in ports and seg.dport not in ports):
            return False
        ours = seg.sport in ports and seg.dport in ports and flow_key(seg) in self.keys
        steps = rec.attribution.steps
        if steps and steps[0].what.startswith("conntrack:"):
            return self._learn(seg, rec.attribution, ours)
        return ours

    def add(self, rec: Record) -> None:
        if self.takes(rec):
            self.flow.append(rec)
            self.total += 1

    def add_all(self, records: Iterable[Record]) -> None:
        """``add`` of each record, in one loop (the TUI scans a window of 150,000 rows)."""
        ports, proto = self.ports, self.proto
        flow = self.flow
        takes = self.takes
        n = 0
        for rec in records:
            seg = rec.segment
            # the ports first: one set lookup each rules out nearly every other segment
            has_s, has_d = seg.sport in ports, seg.dport in ports
            if not (has_s or has_d) or seg.proto != proto:
                continue
            if not (has_s and has_d):
                # one port shared (another client of the same server port): this
                # connection's only if its conntrack step says so (``takes``); rows without
                # one are left out here, before the 4-tuple is built
                steps = rec.attribution.steps
                if not steps or not steps[0].what.startswith("conntrack:"):
                    continue
            if takes(rec):
                flow.append(rec)
                n += 1
        self.total += n

    def build(self) -> Ladder:
        return _build(list(self.flow), self.total - len(self.flow), self.selected, self.caveat, self.ends)


def ladder_for(records: Iterable[Record], selected: Record, limit: int = MAX_ARROWS) -> Ladder:
    """The ladder of ``selected``'s connection over ``records`` (in capture order)."""
    builder = LadderBuilder(selected.segment, limit, selected.attribution)
    builder.add_all(records)
    return builder.build()


def _build(
    flow: list[Record], elided: int, selected: Segment, caveat: str = "", ends: dict[End, End] | None = None
) -> Ladder:
    seg0 = flow[0].segment if flow else selected
    names = ends or {}
    left_end = names.get((seg0.src, seg0.sport), (seg0.src, seg0.sport))
    title = f"{seg0.proto} {endpoint(seg0.src, seg0.sport)} ⇄ {endpoint(seg0.dst, seg0.dport)}"
    ladder = Ladder(title, elided=elided, caveat=caveat)
    index: dict[object, int] = {}
    by_tuple: dict[object, list[object]] = {}  # a 4-tuple's socket lanes (keys), oldest first
    socks: dict[object, SocketEntry] = {}
    nat: tuple[str, str, str] | None = None
    raw: list[tuple[int, float, int, int, str, str, str, str, bool]] = []  # the arrows, lanes not yet ordered
    told: dict[int, tuple[str, str, str, str, bool]] = {}
    keep: list[Attribution] = []

    def add_lane(k: object, label: str, left: bool, kind: str) -> int:
        i = index.get(k)
        if i is None:
            i = index[k] = len(ladder.lanes)
            ladder.lanes.append(Lane(k, label, left, kind))
        return i

    memo: dict[tuple[int, bool], int] = {}  # id(SocketEntry): rows share the table's entries

    def sock_lane(sock: SocketEntry, left: bool) -> int:
        i = memo.get((id(sock), left))
        if i is None:
            i = memo[(id(sock), left)] = new_sock_lane(sock, left)
        return i

    def new_sock_lane(sock: SocketEntry, left: bool) -> int:
        tup = socket_key(sock)
        if sock.state == "TIME_WAIT" and not sock.holders:
            return add_lane(("time_wait", tup), lane_label(sock), left, "time_wait")
        keys = by_tuple.setdefault(tup, [])
        k: object = ("sock", tup, sock.cookie)
        if k not in index and keys:
            # one socket seen with and without its cookie (a file without it, a tracer's
            # record): the same lane; a different cookie is another socket on the tuple
            if not sock.cookie:
                k = keys[-1]
            elif ("sock", tup, 0) in index:
                k = ("sock", tup, 0)
        if k not in index:
            keys.append(k)
        i = add_lane(k, lane_label(sock), left, "socket")
        lane = ladder.lanes[i]
        if sock.holders and not lane.held:
            # first seen without an fd (a request sock, closed), named by its fd since
            ladder.lanes[i] = Lane(k, lane_label(sock), lane.left, "socket")
        socks.setdefault(k, sock)
        if sock.holders:
            socks[k] = sock
        return i

    copies = 0
    for rec in flow:
        seg, att = rec.segment, rec.attribution
        if att.notes and att.notes[-1].startswith(COPY_NOTE):
            copies += 1  # one segment seen on a second device (a bridge and its port): one arrow
            continue
        src_end = (seg.src, seg.sport)
        from_left = (names.get(src_end, src_end) if names else src_end) == left_end
        if _kernel_sent(seg, att):
            src = add_lane(("kernel", from_left), "kernel (no socket)", from_left, "kernel")
        elif att.sender is None:
            src = add_lane(("none", from_left), "- (no socket)", from_left, "none")
        else:
            src = sock_lane(att.sender, from_left)
        to_left = not from_left
        if att.match in (Match.ACCEPT_QUEUE, Match.SYN_RECV):
            dst = add_lane(("queue", to_left), "accept queue (no fd yet)", to_left, "queue")
        elif att.receiver is not None:
            dst = sock_lane(att.receiver, to_left)
        elif att.match == Match.NONE and "R" not in seg.flags:
            # nothing takes it: the kernel does, and answers (a RST to nothing is only dropped)
            dst = add_lane(("kernel", to_left), "kernel (no socket)", to_left, "kernel")
        else:
            dst = add_lane(("none", to_left), "- (no socket)", to_left, "none")
        if nat is None and att.steps:
            nat = _nat_step(att)
        # what an attribution says on an arrow, made once for each (rows share them)
        said = told.get(id(att))
        if said is None:
            note = safe(att.notes[0]) if att.notes else ""
            said = told[id(att)] = (_tag(att), str(att.match), note, _verdict(att), _dropped(att))
            keep.append(att)  # (alive until the end: its id is not reused meanwhile)
        tag, match, note, verdict, dropped = said
        what = (
            f"{seg.flags or '-'} {seg.payload_len}{tag}" if seg.proto == "tcp" else f"udp {seg.payload_len}"
        )
        raw.append((rec.seq, seg.ts, src, dst, what, match, note, verdict, dropped))
    if nat is not None:
        # conntrack rewrites every segment of the connection (both ways), not only those
        # whose look-up had to go through it
        ladder.lanes.append(Lane(("nat",), " ".join(nat), False, "nat"))
    if copies:
        some = (
            f"{copies:,} segments seen again on another device are"
            if copies > 1
            else "1 segment seen again on another device is"
        )
        folded = f"{some} drawn once (one arrow each)"
        ladder.caveat = f"{ladder.caveat}; {folded}" if ladder.caveat else folded
    syn = any(r[4].startswith("S ") for r in raw)
    _name_lanes(ladder, socks, nat, syn)
    # left lanes, the NAT rewrite, right lanes, each side in order of first appearance
    n = len(ladder.lanes)
    order = sorted(
        range(n), key=lambda i: (0 if ladder.lanes[i].left else 1 if ladder.lanes[i].kind == "nat" else 2, i)
    )
    where = [0] * n
    for new, old in enumerate(order):
        where[old] = new
    ladder.lanes = [ladder.lanes[i] for i in order]
    crossed = nat is not None
    ladder.arrows = [
        Arrow(q, ts, where[src], where[dst], what, match, note, verdict, dropped, crossed)
        for q, ts, src, dst, what, match, note, verdict, dropped in raw
    ]
    return ladder


def _name_lanes(
    ladder: Ladder, socks: dict[object, SocketEntry], nat: tuple[str, str, str] | None, syn: bool
) -> None:
    """Each lane's label as the head shows it: who, which fd, what made it, and where: the
    container (when a lane is in one) and the network namespace (when they differ)."""
    spaces = {s.netns for s in socks.values() if s.netns}
    several = len(spaces) > 1
    listener_side = {ln.left for ln in ladder.lanes if ln.kind == "queue" or _is_listener(ln, socks)}
    named: list[tuple[list[str], str, str]] = []  # (who, fd, what made it), container, netns
    for ln in ladder.lanes:
        sock = socks.get(ln.key)
        ctr = space = ""
        if ln.kind == "socket" and sock is not None:
            head, tail = split_label(ln.label)
            tail, found, rest = tail.partition(" (ctr ")
            if found:
                ctr = "ctr " + rest.removesuffix(")")
            if sock.state == "LISTEN":
                role = "listen()"
            elif sock.proto == "udp":
                role = "bind()" if sock.remote is None or not sock.remote.port else "connect()"
            elif not syn and not listener_side:
                role = ""
            elif ln.left not in listener_side:
                role = "connect()"
            else:
                role = "accept()"
            lines = [head, tail, role]
            space = f"net:[{sock.netns}]" if sock.netns and several else ""
        elif ln.kind == "queue":
            lines = ["accept queue", "(no fd yet)", "SYN_RECV → accept()"]
        elif ln.kind == "time_wait":
            lines = ["TIME_WAIT", "(kernel)", "after close()"]
        elif ln.kind == "kernel":
            lines = ["kernel", "(no socket)", "RST / ICMP"]
        elif ln.kind == "nat" and nat is not None:
            lines = list(nat)
        else:
            lines = ["-", "(no socket)", "remote or gone"]
        named.append((lines, ctr, space))
    any_ctr = any(ctr for _, ctr, _ in named)
    for i, (lines, ctr, space) in enumerate(named):
        if any_ctr:
            lines.append(ctr)
        if several:
            lines.append(space)
        ln = ladder.lanes[i]
        ladder.lanes[i] = Lane(ln.key, ln.label, ln.left, ln.kind, tuple(lines))


def _is_listener(ln: Lane, socks: dict[object, SocketEntry]) -> bool:
    sock = socks.get(ln.key)
    return sock is not None and sock.state == "LISTEN"


# -- text -------------------------------------------------------------------------------


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


def head_notes(ladder: Ladder) -> list[str]:
    out = []
    if ladder.elided:
        out.append(
            f"(the first {ladder.elided:,} segments of this flow are left out; "
            f"the last {len(ladder.arrows):,} follow)"
        )
    if ladder.caveat:
        out.append(f"({ladder.caveat})")
    return out


def lane_lines(lane: Lane) -> tuple[str, ...]:
    return lane.lines or (*split_label(lane.label), "")


def ladder_head(ladder: Ladder, lane_width: int = LANE_WIDTH) -> list[str]:
    """The lines above the arrows: the title, (what is left out), the lane labels on three
    lines (and one for containers, one for network namespaces when they differ), the rails."""
    n = len(ladder.lanes)
    width = TIME_WIDTH + 1 + n * lane_width
    out = [ladder.title, *head_notes(ladder)]
    rows = max((len(lane_lines(ln)) for ln in ladder.lanes), default=2)
    for part in range(rows):
        head = [" "] * width
        for i, ln in enumerate(ladder.lanes):
            parts = lane_lines(ln)
            label = cut(parts[part] if part < len(parts) else "", lane_width - 1)
            _put(head, _center(i, lane_width) - len(label) // 2, label)
        out.append("".join(head).rstrip())
    out.append("".join(_rail(ladder, lane_width)).rstrip())
    return out


def _rail(ladder: Ladder, lane_width: int) -> list[str]:
    rail = [" "] * (TIME_WIDTH + 1 + len(ladder.lanes) * lane_width)
    for i, ln in enumerate(ladder.lanes):
        rail[_center(i, lane_width)] = "┊" if ln.kind == "nat" else "│"
    return rail


def arrow_tail(a: Arrow) -> str:
    """What follows the rails: the match, the kernel's verdict, the first note."""
    verdict = f" · {a.verdict}" if a.verdict else ""
    note = f"  ⚠ {cut(a.note, NOTE_WIDTH)}" if a.note else ""
    return a.match + verdict + note


def widest_gap(rails: list[float], lo: float, hi: float) -> tuple[float, float]:
    """The widest stretch between ``lo`` and ``hi`` that no rail crosses (for an arrow's
    label: over a rail it would hide the rail, or the rail a letter)."""
    cuts = [lo, *sorted(x for x in rails if lo < x < hi), hi]
    return max(pairwise(cuts), key=lambda g: g[1] - g[0])


def arrow_line(ladder: Ladder, a: Arrow, lane_width: int = LANE_WIDTH) -> str:
    """One segment: its time, an arrow from the sender's lane to the receiver's, the match."""
    line = _rail(ladder, lane_width)
    _put(line, 0, clock(a.ts))
    x0, x1 = _center(a.src, lane_width), _center(a.dst, lane_width)
    if x0 == x1:  # a segment from a socket to itself (or from nowhere to nowhere)
        _put(line, x0 + 1, f" ↺ {a.what}")
    else:
        lo, hi = min(x0, x1), max(x0, x1)
        for x in range(lo + 1, hi):
            line[x] = "─"
        if a.nat:
            for i, ln in enumerate(ladder.lanes):
                if ln.kind == "nat" and lo < _center(i, lane_width) < hi:
                    line[_center(i, lane_width)] = "◇"
        head = "✕" if a.dropped else "▶" if x1 > x0 else "◀"
        line[hi - 1 if x1 > x0 else lo + 1] = head
        label = f" {a.what} "
        gap = widest_gap([_center(i, lane_width) for i in range(len(ladder.lanes))], lo, hi)
        lo_gap, hi_gap = int(gap[0]), int(gap[1])
        if len(label) <= hi_gap - lo_gap - 3:
            _put(line, lo_gap + 1 + (hi_gap - lo_gap - 1 - len(label)) // 2, label)
        elif len(label) <= hi - lo - 3:  # over a rail rather than not at all
            _put(line, lo + 1 + (hi - lo - 1 - len(label)) // 2, label)
    return "".join(line).rstrip() + "   " + arrow_tail(a)


def ladder_lines(ladder: Ladder, lane_width: int = LANE_WIDTH) -> list[str]:
    """The whole ladder as plain lines (``ladder_head``, then one ``arrow_line`` each)."""
    return ladder_head(ladder, lane_width) + [arrow_line(ladder, a, lane_width) for a in ladder.arrows]


# -- SVG --------------------------------------------------------------------------------

_LANE_PX = 180
_TIME_PX = 118
_ROW_PX = 22
_CHAR_PX = 7.2  # the width of one character of the 12 px monospace font
_KIND_COLOUR = {
    "socket": "#1f4e79",
    "queue": "#8a5a00",
    "time_wait": "#6b6b6b",
    "kernel": "#b00020",
    "nat": "#c05800",
    "none": "#6b6b6b",
}


def _xml(s: str) -> str:
    """Text for an SVG element: escaped, and without what XML 1.0 cannot hold."""
    s = "".join(
        ch
        for ch in s
        if ch in "\t\n" or (ch >= " " and ch not in "\ufffe\uffff" and not "\ud800" <= ch <= "\udfff")
    )
    return escape(s, {'"': "&quot;"})


def ladder_svg(ladder: Ladder, limit: int = MAX_SVG_ARROWS) -> str:
    """The ladder as a picture: one rail per lane, one arrow per segment (its last
    ``limit``, saying how many more it leaves out); every text literal (escaped)."""
    return ladders_svg([ladder], limit)


def ladders_svg(ladders: list[Ladder], limit: int = MAX_SVG_ARROWS) -> str:
    """Several ladders one under the other in one SVG."""
    parts: list[str] = []
    y = 10.0
    width = 400.0
    for ladder in ladders:
        y, w = _draw(ladder, limit, parts, y)
        width = max(width, w)
        y += 24
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{y:.0f}" '
        f'viewBox="0 0 {width:.0f} {y:.0f}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        'font-size="12">\n<title>conntui ladder</title>\n'
        "<defs>"
        '<marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker>'
        "</defs>\n"
        f'<rect width="{width:.0f}" height="{y:.0f}" fill="#ffffff"/>\n'
    )
    return head + "".join(parts) + "</svg>\n"


def _draw(ladder: Ladder, limit: int, out: list[str], y: float) -> tuple[float, float]:
    arrows = ladder.arrows[-limit:] if limit > 0 else []
    more = len(ladder.arrows) - len(arrows)
    n = len(ladder.lanes)
    x_of = [_TIME_PX + 20 + i * _LANE_PX + _LANE_PX / 2 for i in range(n)]
    right = _TIME_PX + 20 + n * _LANE_PX + 10
    y += 16
    out.append(f'<text x="10" y="{y:.0f}" font-weight="bold" font-size="14">{_xml(ladder.title)}</text>\n')
    elided = ladder.elided + more
    notes = head_notes(Ladder(ladder.title, elided=elided, caveat=ladder.caveat, arrows=arrows))
    for note in notes:
        y += 16
        out.append(f'<text x="10" y="{y:.0f}" fill="#b00020">{_xml(note)}</text>\n')
    y += 10
    rows = max((len(lane_lines(ln)) for ln in ladder.lanes), default=2)
    box_h = 8 + 15 * rows
    for x, ln in zip(x_of, ladder.lanes, strict=True):
        colour = _KIND_COLOUR.get(ln.kind, "#333333")
        dash = ' stroke-dasharray="6 3"' if ln.kind in ("nat", "kernel", "queue", "time_wait", "none") else ""
        out.append(
            f'<rect x="{x - _LANE_PX / 2 + 6:.0f}" y="{y:.0f}" width="{_LANE_PX - 12}" height="{box_h}" '
            f'rx="5" fill="#f4f6f8" stroke="{colour}"{dash}/>\n'
        )
        for j, text in enumerate(lane_lines(ln)):
            weight = ' font-weight="bold"' if j == 0 else ""
            fill = colour if j < 2 else "#555555"
            text = cut(text, int((_LANE_PX - 16) / _CHAR_PX))
            out.append(
                f'<text x="{x:.0f}" y="{y + 16 + 15 * j:.0f}" text-anchor="middle" fill="{fill}"{weight}>'
                f"{_xml(text)}</text>\n"
            )
    top = y + box_h
    bottom = top + 10 + _ROW_PX * max(1, len(arrows))
    for x, ln in zip(x_of, ladder.lanes, strict=True):
        colour = _KIND_COLOUR.get(ln.kind, "#333333")
        dash = ' stroke-dasharray="4 4"' if ln.kind != "socket" else ""
        out.append(
            f'<line x1="{x:.0f}" y1="{top:.0f}" x2="{x:.0f}" y2="{bottom:.0f}" stroke="{colour}" '
            f'stroke-width="1.5"{dash}/>\n'
        )
    width = right + _CHAR_PX * (NOTE_WIDTH + 45)
    ay = top + 10
    nat_x = [x for x, ln in zip(x_of, ladder.lanes, strict=True) if ln.kind == "nat"]
    for a in arrows:
        ay += _ROW_PX
        line_y = ay - 4
        out.append(f'<text x="10" y="{ay:.0f}" fill="#555555">{_xml(clock(a.ts))}</text>\n')
        x0, x1 = x_of[a.src], x_of[a.dst]
        colour = "#b00020" if a.dropped or ladder.lanes[a.dst].kind == "kernel" else "#222222"
        if a.match in ("accept_queue", "syn_recv"):
            colour = "#8a5a00"
        if x0 == x1:
            out.append(
                f'<path d="M{x0:.0f},{line_y - 6:.0f} h24 v10 h-22" fill="none" stroke="{colour}" '
                f'marker-end="url(#head)"/>\n'
                f'<text x="{x0 + 30:.0f}" y="{line_y:.0f}" fill="{colour}">{_xml(a.what)}</text>\n'
            )
        else:
            step = 4 if x1 > x0 else -4
            end = x1 - step * (3 if a.dropped else 1)
            marker = "" if a.dropped else ' marker-end="url(#head)"'
            out.append(
                f'<line x1="{x0 + step:.0f}" y1="{line_y:.0f}" x2="{end:.0f}" y2="{line_y:.0f}" '
                f'stroke="{colour}" stroke-width="1.5"{marker}/>\n'
            )
            if a.dropped:
                out.append(
                    f'<text x="{end:.0f}" y="{line_y + 5:.0f}" text-anchor="middle" font-size="15" '
                    f'font-weight="bold" fill="#b00020">✕</text>\n'
                )
            if a.nat:
                for nx in nat_x:
                    if min(x0, x1) < nx < max(x0, x1):
                        out.append(
                            f'<path d="M{nx - 6:.0f},{line_y:.0f} l6,-6 l6,6 l-6,6 z" fill="#ffffff" '
                            f'stroke="{_KIND_COLOUR["nat"]}" stroke-width="1.5"/>\n'
                        )
            gap = widest_gap(x_of, min(x0, x1), max(x0, x1))
            out.append(
                f'<text x="{(gap[0] + gap[1]) / 2:.0f}" y="{line_y - 4:.0f}" text-anchor="middle" '
                f'fill="{colour}" stroke="#ffffff" stroke-width="3" paint-order="stroke">'
                f"{_xml(a.what)}</text>\n"
            )
        tail = f'<tspan fill="#1f4e79">{_xml(a.match)}</tspan>'
        if a.verdict:
            good = a.verdict.endswith("✓")
            tail += f' · <tspan fill="{"#2e7d32" if good else "#b00020"}">{_xml(a.verdict)}</tspan>'
        if a.note:
            tail += f'  <tspan fill="#8a5a00">⚠ {_xml(cut(a.note, NOTE_WIDTH))}</tspan>'
        out.append(f'<text x="{right:.0f}" y="{ay:.0f}">{tail}</text>\n')
    return bottom + 6, width
