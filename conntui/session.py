"""The session store: every captured segment with its attribution, in arrival order.

The capture thread appends; readers (the TUI, the headless printer, exports) ask for what is
new with ``since(seq)``. The in-memory window is bounded; rows that fall out of it stay
available to exports through the spool (when one is configured) so memory stays flat.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .model import Attribution, Frame, Record, Segment


@dataclass(slots=True)
class Counters:
    """tcpdump-style counters, plus how well attribution went."""

    frames: int = 0  # frames handed to us by the capture source
    segments: int = 0  # TCP/UDP segments decoded and stored
    undecodable: int = 0  # frames that were not TCP/UDP or were malformed
    duplicates: int = 0  # loopback outgoing copies dropped (seen again as incoming)
    filtered: int = 0  # decoded but dropped by the port/filter predicate
    kernel_drops: int = 0  # dropped by the kernel before we could read them
    unread: int = 0  # put in the capture socket by the kernel, not read before the capture ended
    icmp_errors: int = 0  # ICMP destination unreachable messages (linked to their datagrams)
    by_match: dict[str, int] = field(default_factory=dict)
    unnamed: int = 0  # rows naming no socket at all (``- → -``)

    @property
    def attributed(self) -> int:
        """Segments that name a process or a kernel-owned socket (receiver or sender)."""
        return self.segments - self.unnamed

    def attributed_pct(self) -> float:
        return 100.0 * self.attributed / self.segments if self.segments else 100.0


def _unnamed(att: Attribution) -> int:
    return 1 if att.receiver is None and att.sender is None else 0


class Spool(Protocol):
    """Where rows that leave the in-memory window go (``capfile.spool.PcapngSpool``: a private
    temporary pcapng), so an export still holds every row while memory stays flat."""

    def add(self, rec: Record) -> None: ...

    def add_many(self, recs: list[Record]) -> None: ...

    def records(self, count: int, first_seq: int) -> Iterator[Record]: ...

    def close(self) -> None: ...


# Rows kept in memory (the TUI's list; older rows go to the spool). About 800 bytes a row
# (two tuples, a record, the frame's bytes, a payload preview, sequence numbers), so 150k
# rows are ~120 MB; with the capture ring (32 MiB) and the rows waiting to settle, a
# session stays under 200 MB resident however many segments it sees (bench/memory.py).
WINDOW = 150_000


class Session:
    """Thread-safe append-only store with a bounded in-memory window."""

    def __init__(self, window: int = WINDOW, *, spool: Spool | None = None) -> None:
        """Rows that leave the window go to ``spool``, or are dropped when there is none
        (headless mode and tests, where nothing reads old rows back): memory stays flat
        however long the capture runs."""
        self._rows: deque[Record] = deque(maxlen=window)
        self.window_size = window
        self._lock = threading.Lock()
        self._next_seq = 0
        self.counters = Counters()
        self._spool = spool
        self._spooled = 0  # rows handed to the spool (seqs 0 .. _spooled - 1)

    @property
    def last_seq(self) -> int:
        """The seq of the newest row, -1 when empty."""
        return self._next_seq - 1

    def append(self, frame: Frame, segment: Segment, attribution: Attribution) -> Record:
        with self._lock:
            rec = Record(self._next_seq, frame, segment, attribution)
            self._next_seq += 1
            if len(self._rows) == self._rows.maxlen and self._spool is not None:
                self._spool.add(self._rows[0])
                self._spooled += 1
            self._rows.append(rec)
            c = self.counters
            c.segments += 1
            c.by_match[attribution.match] = c.by_match.get(attribution.match, 0) + 1
            c.unnamed += _unnamed(attribution)
            return rec

    def extend(self, recs: list[Record], counts: dict[str, int]) -> None:
        """Store rows made elsewhere (the C fast path), numbered from ``last_seq + 1`` on;
        ``counts``: how many of them there are of each match."""
        with self._lock:
            if recs[0].seq != self._next_seq:
                raise ValueError(f"rows numbered from {recs[0].seq}, expected {self._next_seq}")
            rows = self._rows
            over = len(rows) + len(recs) - self.window_size
            if over > 0 and self._spool is not None:
                out = list(itertools.islice(itertools.chain(rows, recs), over))
                self._spool.add_many(out)
                self._spooled += len(out)
            rows.extend(recs)
            self._next_seq += len(recs)
            c = self.counters
            c.segments += len(recs)
            by_match = c.by_match
            for match, n in counts.items():
                by_match[match] = by_match.get(match, 0) + n

    def reattribute(self, seq: int, attribution: Attribution) -> bool:
        """Replace a row's attribution (a late match); False if the row is gone."""
        with self._lock:
            rec = self._find(seq)
            if rec is None:
                return False
            c = self.counters
            c.by_match[rec.attribution.match] -= 1
            c.by_match[attribution.match] = c.by_match.get(attribution.match, 0) + 1
            c.unnamed += _unnamed(attribution) - _unnamed(rec.attribution)
            rec.attribution = attribution
            return True

    def _find(self, seq: int) -> Record | None:
        if not self._rows:
            return None
        first = self._rows[0].seq
        i = seq - first
        if 0 <= i < len(self._rows):
            return self._rows[i]
        return None

    def get(self, seq: int) -> Record | None:
        with self._lock:
            return self._find(seq)

    def since(self, seq: int, limit: int | None = None) -> list[Record]:
        """Rows newer than ``seq`` still in the window (at most ``limit``, oldest first)."""
        with self._lock:
            if not self._rows:
                return []
            first = self._rows[0].seq
            start = max(0, seq + 1 - first)
            stop = len(self._rows) if limit is None else min(len(self._rows), start + limit)
            return [self._rows[i] for i in range(start, stop)]

    def window(self) -> list[Record]:
        """Every row in the in-memory window, oldest first."""
        with self._lock:
            return list(self._rows)

    def __len__(self) -> int:
        return self._next_seq

    def all_records(self, keep: Callable[[Record], bool] | None = None) -> Iterator[Record]:
        """Every row of the session still held (spooled ones first), for export."""
        with self._lock:
            rows = list(self._rows)
            spooled = self._spooled
        if self._spool is not None and spooled:
            first = rows[0].seq - spooled if rows else 0
            for rec in self._spool.records(spooled, first):
                if keep is None or keep(rec):
                    yield rec
        for rec in rows:
            if keep is None or keep(rec):
                yield rec

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
