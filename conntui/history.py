"""What capture order has shown about each TCP 4-tuple: its FINs, its RSTs, and an old
connection a SYN ran into.

The socket table is read after the fact (a refresh a second later, or an exact look-up a
few hundred microseconds later): by then a connection may be closed, reset or replaced by a
new one on the same 4-tuple. The order of the segments themselves settles what the kernel
saw when each one arrived; this is the engine's memory of it. Every book is bounded.
"""

from __future__ import annotations

from .model import Segment, SocketEntry

LATE_AFTER_CLOSE = 0.2  # seconds after the second FIN: later segments are "late", not the close
LIMIT = 50_000  # 4-tuples per book; cleared whole when full (a scan or flood, not real flows)

Pair = tuple[str, int, str, int]


def pair(seg: Segment) -> Pair:
    """The segment's 4-tuple, the same in both directions (lower endpoint first)."""
    src, sport, dst, dport = seg.src, seg.sport, seg.dst, seg.dport
    if (src, sport) <= (dst, dport):
        return (src, sport, dst, dport)
    return (dst, dport, src, sport)


class FlowHistory:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._fins: dict[Pair, tuple[int, float]] = {}  # (bit 1: lower end's FIN, bit 2: upper's), when both
        self._resets: dict[Pair, float] = {}  # last RST seen
        self._old_conns: dict[Pair, SocketEntry] = {}  # a connection a later SYN ran into
        # whether the last SYN seen came after both FINs of the connection before it
        self.syn_after_close = False

    def note_close(self, seg: Segment) -> bool:
        """Record FINs; True for a segment well after both ends sent theirs: the connection
        is over, whatever a socket table read later still shows. (The last ACK of the close
        itself comes within a round trip and still reached a live socket.)"""
        key = pair(seg)
        flags = seg.flags
        if "S" in flags and "A" not in flags:
            # a new connection on the same 4-tuple; remember whether the old one had closed
            self.syn_after_close = self._fins.pop(key, (0, 0.0))[0] == 3
            return False
        seen, done_at = self._fins.get(key, (0, 0.0))
        if "F" in flags:
            bit = 1 if key[0] == seg.src and key[1] == seg.sport else 2
            if not seen & bit:
                if len(self._fins) > self.limit:
                    self._fins.clear()
                self._fins[key] = (seen | bit, seg.ts)
        # data after both FINs is late whenever it comes (nobody sends data after its FIN)
        return seen == 3 and (seg.payload_len > 0 or seg.ts - done_at > LATE_AFTER_CLOSE)

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
