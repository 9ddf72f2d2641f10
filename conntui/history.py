"""What capture order has shown about each TCP 4-tuple: its FINs, its RSTs, and an old
connection a SYN ran into.

The socket table is read after the fact (a refresh a second later, or an exact look-up a
few hundred microseconds later): by then a connection may be closed, reset or replaced by a
new one on the same 4-tuple. The order of the segments themselves settles what the kernel
saw when each one arrived; this is the engine's memory of it. Every book is bounded.
"""

from __future__ import annotations

from typing import NamedTuple

from .model import Segment, SocketEntry

LATE_AFTER_CLOSE = 0.2  # seconds after the second FIN: later segments are "late", not the close
LIMIT = 50_000  # 4-tuples per book; cleared whole when full (a scan or flood, not real flows)

Pair = tuple[str, int, str, int]

# what ``_fins`` records of a 4-tuple's close
_FIN_LOWER = 1  # the lower endpoint (as ``pair`` orders them) sent its FIN
_FIN_UPPER = 2
_BOTH_FINS = _FIN_LOWER | _FIN_UPPER
_UPPER_FIRST = 4  # the upper endpoint's FIN came first (it closed first)
_LAST_ACK = 8  # the first closer acknowledged the other FIN: the close is over


def pair(seg: Segment) -> Pair:
    """The segment's 4-tuple, the same in both directions (lower endpoint first)."""
    src, sport, dst, dport = seg.src, seg.sport, seg.dst, seg.dport
    if (src, sport) <= (dst, dport):
        return (src, sport, dst, dport)
    return (dst, dport, src, sport)


class Seen(NamedTuple):
    """What capture order had shown of a segment's 4-tuple when it came (``observe``)."""

    closed: bool  # the connection was over before it (``note_close``)
    old_conn: SocketEntry | None  # the old connection a SYN ran into, still the one on the tuple
    reset_before: bool  # a SYN after a RST on its 4-tuple: the old connection is gone
    syn_after_close: bool  # a SYN after both FINs of the connection before it


_NOTHING = Seen(False, None, False, False)  # (not TCP: no book)


class FlowHistory:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._fins: dict[Pair, tuple[int, float]] = {}  # (the bits above), when the last FIN came
        self._resets: dict[Pair, float] = {}  # last RST seen
        self._old_conns: dict[Pair, SocketEntry] = {}  # a connection a later SYN ran into
        # whether the last SYN seen came after both FINs of the connection before it
        self.syn_after_close = False

    # The C fast path (fastpath.py) reads these two books in place: a segment whose 4-tuple
    # is in either goes the Python way. Never replaced, only cleared.
    @property
    def fins(self) -> dict[Pair, tuple[int, float]]:
        """4-tuples with a FIN seen (what of their close, and when the last FIN came)."""
        return self._fins

    @property
    def old_conns(self) -> dict[Pair, SocketEntry]:
        """4-tuples a SYN found an old connection on, until its RST."""
        return self._old_conns

    def observe(self, seg: Segment) -> Seen:
        """Book one captured segment (FINs, RSTs, an old connection's RST) and say what
        its 4-tuple had shown before it: the one call the attributor makes per segment."""
        if seg.proto != "tcp":
            return _NOTHING
        closed = self.note_close(seg)
        old_conn = self.old_connection(seg)
        reset_before = False
        if "R" in seg.flags:
            if old_conn is not None:
                self.drop_old_connection(seg)  # its RST: from now on the table's view stands
            self.note_reset(seg)
        elif seg.is_syn:
            reset_before = self.reset_before(seg)
        return Seen(closed, old_conn, reset_before, seg.is_syn and self.syn_after_close)

    def note_close(self, seg: Segment) -> bool:
        """Record FINs; True for a segment after the connection is over, whatever a socket
        table read later still shows: after the close's last ACK (the first closer
        acknowledging the other FIN: the other end's socket is gone then), or well after both
        FINs. (The last ACK of the close itself still reached a live socket.)"""
        key = pair(seg)
        flags = seg.flags
        if "S" in flags and "A" not in flags:
            # a new connection on the same 4-tuple; remember whether the old one had closed
            self.syn_after_close = self._fins.pop(key, (0, 0.0))[0] & _BOTH_FINS == _BOTH_FINS
            return False
        seen, done_at = self._fins.get(key, (0, 0.0))
        if seen & _LAST_ACK:
            return True
        lower = key[0] == seg.src and key[1] == seg.sport
        if "F" in flags:
            bit = _FIN_LOWER if lower else _FIN_UPPER
            if not seen & bit:
                if len(self._fins) > self.limit:
                    self._fins.clear()
                first = _UPPER_FIRST if not seen & _BOTH_FINS and not lower else 0
                self._fins[key] = (seen | bit | first, seg.ts)
        both = seen & _BOTH_FINS == _BOTH_FINS
        if both and flags == "A" and seg.payload_len == 0 and lower != bool(seen & _UPPER_FIRST):
            self._fins[key] = (seen | _LAST_ACK, done_at)
        # data after both FINs is late whenever it comes (nobody sends data after its FIN)
        return both and (seg.payload_len > 0 or seg.ts - done_at > LATE_AFTER_CLOSE)

    def note_reset(self, seg: Segment) -> None:
        if len(self._resets) > self.limit:
            self._resets.clear()
        self._resets[pair(seg)] = seg.ts

    def reset_before(self, seg: Segment) -> bool:
        """Whether a RST on this 4-tuple was seen before ``seg``."""
        reset_at = self._resets.get(pair(seg))
        return reset_at is not None and reset_at <= seg.ts

    def old_connection(self, seg: Segment) -> SocketEntry | None:
        """The old connection a SYN on this 4-tuple ran into, until its RST is seen."""
        if not self._old_conns:
            return None
        return self._old_conns.get(pair(seg))

    def keep_old_connection(self, seg: Segment, entry: SocketEntry) -> None:
        if len(self._old_conns) > self.limit:
            self._old_conns.clear()
        self._old_conns[pair(seg)] = entry

    def drop_old_connection(self, seg: Segment) -> None:
        self._old_conns.pop(pair(seg), None)
