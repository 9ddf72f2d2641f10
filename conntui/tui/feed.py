"""What the UI keeps of the session: the filtered rows it shows and per-socket activity.

Nothing here touches Textual. The UI calls ``Feed.drain`` on a timer; each call reads at
most ``limit`` new records from the session, so the work per frame is bounded whatever
the packet rate, and nothing is ever posted per packet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from ..filters import DisplayFilter
from ..model import Record, SocketEntry
from ..session import Session

SocketKey = tuple[str, str, int, str, int]
# a socket key, and its network namespace's inode when known (two namespaces may each have
# a listener on 0.0.0.0:80: the same tuple, two sockets)
ActivityKey = SocketKey | tuple[str, str, int, str, int, int]


def socket_key(sock: SocketEntry) -> SocketKey:
    """One connection or bound socket, whatever its holders or state (addresses unmapped)."""
    r = sock.remote
    return (sock.proto, sock.local.key_addr, sock.local.port, r.key_addr if r else "", r.port if r else 0)


def activity_key(sock: SocketEntry) -> ActivityKey:
    """:func:`socket_key`, and the socket's namespace when it is known."""
    key = socket_key(sock)
    return (*key, sock.netns) if sock.netns else key


class RowBuffer:
    """A fixed-capacity ring of records with O(1) indexing (a deque indexes in O(n)).

    ``dropped`` counts rows pushed out at the front, so in a buffer that only grows at
    the end (``Feed.all``) ``dropped + index`` names a row for as long as it stays. Rows
    are in seq order: newer ones come at the end, and a filtered buffer also gets older
    ones at the front (``prepend``, while a new filter goes through the rows before it);
    indexes shift by the counts, and the list moves its cursor with them.
    """

    __slots__ = ("_len", "_rows", "_start", "capacity", "dropped")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._rows: list[Record | None] = [None] * self.capacity
        self._start = 0
        self._len = 0
        self.dropped = 0

    @classmethod
    def of(cls, rows: list[Record], capacity: int) -> RowBuffer:
        """A buffer holding the newest ``capacity`` of ``rows``, which it takes over (the
        caller must not change the list afterwards). No ``append`` per row and, for a
        window that fits, no copy at all: each copy of 200,000 references touches every
        record's reference count, a few milliseconds each."""
        buf = cls.__new__(cls)
        buf.capacity = cap = max(1, capacity)
        keep: list[Record | None] = rows[-cap:] if len(rows) > cap else rows  # type: ignore[assignment]
        buf._len = len(keep)
        if len(keep) < cap:
            keep.extend([None] * (cap - len(keep)))
        buf._rows = keep
        buf._start = 0
        buf.dropped = len(rows) - buf._len
        return buf

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Record:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        rec = self._rows[(self._start + index) % self.capacity]
        assert rec is not None
        return rec

    def append(self, rec: Record) -> int:
        """Add at the end; returns how many rows fell out of the front (0 or 1)."""
        if self._len < self.capacity:
            self._rows[(self._start + self._len) % self.capacity] = rec
            self._len += 1
            return 0
        self._rows[self._start] = rec
        self._start = (self._start + 1) % self.capacity
        self.dropped += 1
        return 1

    def _put(self, at: int, recs: Sequence[Record]) -> None:
        """Write ``recs`` (at most ``capacity``) into the ring from slot ``at`` on, wrapping."""
        cap = self.capacity
        first = min(len(recs), cap - at)
        self._rows[at : at + first] = recs[:first]
        if first < len(recs):
            self._rows[: len(recs) - first] = recs[first:]

    def extend(self, recs: Iterable[Record]) -> int:
        """Add at the end; returns how many rows fell out of the front."""
        batch = recs if isinstance(recs, list) else list(recs)
        n = len(batch)
        if not n:
            return 0
        cap = self.capacity
        if n >= cap:
            evicted = self._len + n - cap
            self._rows = list(batch[-cap:])
            self._start = 0
            self._len = cap
            self.dropped += evicted
            return evicted
        self._put((self._start + self._len) % cap, batch)
        evicted = max(0, self._len + n - cap)
        self._len += n - evicted
        self._start = (self._start + evicted) % cap
        self.dropped += evicted
        return evicted

    def prepend(self, recs: Sequence[Record]) -> int:
        """Add rows older than the first at the front: the newest of them that fit (a full
        buffer takes none). Returns how many; every index grows by that much."""
        n = min(len(recs), self.capacity - self._len)
        if n <= 0:
            return 0
        start = (self._start - n) % self.capacity
        self._put(start, recs[len(recs) - n :])
        self._start = start
        self._len += n
        return n

    def slice(self, start: int, stop: int) -> list[Record]:
        """Rows ``start`` to ``stop`` (0 <= start <= stop <= len), by at most two list copies."""
        cap = self.capacity
        a = (self._start + start) % cap
        n = stop - start
        rows = self._rows[a : a + n] if a + n <= cap else self._rows[a:] + self._rows[: a + n - cap]
        return rows  # type: ignore[return-value]  # slots within the length hold records

    def index_of_seq(self, seq: int) -> int | None:
        """The index of the row with this session seq (rows are in seq order), or None."""
        lo, hi = 0, self._len
        while lo < hi:
            mid = (lo + hi) // 2
            if self[mid].seq < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self._len and self[lo].seq == seq else None

    def nearest_index(self, seq: int) -> int:
        """The index of the last row whose seq is <= ``seq`` (0 when none is)."""
        lo, hi = 0, self._len
        while lo < hi:
            mid = (lo + hi) // 2
            if self[mid].seq <= seq:
                lo = mid + 1
            else:
                hi = mid
        return max(0, lo - 1)


SPARK_SECONDS = 12


@dataclass(slots=True)
class Activity:
    """Traffic one socket saw: totals, when it was last hit, segments per second."""

    segments: int = 0
    bytes: int = 0
    last_hit: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)  # int(segment ts) → segments

    def add(self, ts: float, nbytes: int, now: float) -> None:
        self.segments += 1
        self.bytes += nbytes
        self.last_hit = now
        sec = int(ts)
        b = self.buckets
        b[sec] = b.get(sec, 0) + 1
        if len(b) > SPARK_SECONDS * 2:
            for old in sorted(b)[:-SPARK_SECONDS]:
                del b[old]

    def merge(self, segments: int, nbytes: int, buckets: dict[int, int], now: float) -> None:
        self.segments += segments
        self.bytes += nbytes
        self.last_hit = now
        b = self.buckets
        for sec, n in buckets.items():
            b[sec] = b.get(sec, 0) + n
        if len(b) > SPARK_SECONDS * 2:
            for old in sorted(b)[:-SPARK_SECONDS]:
                del b[old]

    def series(self, newest: int) -> list[int]:
        """Segments per second for the ``SPARK_SECONDS`` seconds up to ``newest``."""
        return [self.buckets.get(s, 0) for s in range(newest - SPARK_SECONDS + 1, newest + 1)]


class SocketActivity:
    """Per-socket counters fed by every drained record (bounded number of sockets)."""

    def __init__(self, max_sockets: int = 20_000) -> None:
        self.by_key: dict[ActivityKey, Activity] = {}
        self.seen: dict[ActivityKey, SocketEntry] = {}  # the latest view of each socket
        self.max_sockets = max_sockets
        self.newest_ts = 0.0

    def add(self, rec: Record, now: float) -> None:
        self.add_batch((rec,), now)

    def add_batch(self, recs: Iterable[Record], now: float) -> None:
        """Count a batch. Per record only a tuple and a dict operation: records are grouped
        by attribution (the engine hands the same object to every segment of a flow) and
        second; sockets are counted once per group, keyed once per distinct socket."""
        groups: dict[tuple[int, int], list[Any]] = {}  # (id(attribution), second) → [att, n, bytes]
        newest = self.newest_ts
        for rec in recs:
            seg = rec.segment
            ts = seg.ts
            if ts > newest:
                newest = ts
            group = groups.get((id(rec.attribution), int(ts)))
            if group is None:
                groups[(id(rec.attribution), int(ts))] = [rec.attribution, 1, seg.payload_len]
            else:
                group[1] += 1
                group[2] += seg.payload_len
        batch: dict[int, tuple[SocketEntry, list[int], dict[int, int]]] = {}
        parents: dict[int, SocketEntry] = {}
        for (_, sec), (att, n, nbytes) in groups.items():
            if att.listener is not None:
                parents[id(att.listener)] = att.listener
            for sock in (att.receiver, att.sender):
                if sock is None:
                    continue
                item = batch.get(id(sock))
                if item is None:
                    item = batch[id(sock)] = (sock, [0, 0], {})
                totals = item[1]
                totals[0] += n
                totals[1] += nbytes
                buckets = item[2]
                buckets[sec] = buckets.get(sec, 0) + n
        self.newest_ts = newest
        for sock, (segments, nbytes), buckets in batch.values():
            key = activity_key(sock)
            act = self.by_key.get(key)
            if act is None:
                if len(self.by_key) >= self.max_sockets:
                    self._prune()
                act = self.by_key[key] = Activity()
            act.merge(segments, nbytes, buckets, now)
            self.seen[key] = sock
        for sock in parents.values():
            self.seen[activity_key(sock)] = sock

    def _prune(self) -> None:
        keep = sorted(self.by_key.items(), key=lambda kv: kv[1].last_hit)[len(self.by_key) // 2 :]
        self.by_key = dict(keep)
        self.seen = {k: v for k, v in self.seen.items() if k in self.by_key}

    def get(self, sock: SocketEntry) -> Activity | None:
        """The socket's activity: counted on it in its namespace, else on an entry of its
        tuple whose namespace was not said (a socket the kernel tracer's record made)."""
        act = self.by_key.get(activity_key(sock))
        if act is None and sock.netns:
            act = self.by_key.get(socket_key(sock))
        return act


@dataclass(frozen=True, slots=True)
class Drained:
    added: int  # rows added to the buffer (after the filter)
    evicted: int  # rows that fell out of the front of the buffer
    seen: int  # records read from the session


def record_filter(flt: DisplayFilter | None) -> Callable[[Record], bool] | None:
    if flt is None or not flt:
        return None
    return lambda rec: flt(rec.segment, rec.attribution)


RowSelector = Callable[[Sequence[Record]], list[Record]]


def row_selector(flt: DisplayFilter | None) -> RowSelector | None:
    """``select(rows)``: the rows that pass ``flt``, in order (None: no filter).

    ``DisplayFilter.__call__`` is "every term holds"; calling one or two terms inline in
    a comprehension is 3-4x faster over a big window than a predicate per record (the
    test suite checks both agree)."""
    if flt is None or not flt:
        return None
    terms = flt.terms
    if len(terms) == 1:
        (t0,) = terms
        return lambda rows: [r for r in rows if t0(r.segment, r.attribution)]
    if len(terms) == 2:
        t0, t1 = terms
        return lambda rows: [r for r in rows if t0(r.segment, r.attribution) and t1(r.segment, r.attribution)]
    return lambda rows: [r for r in rows if flt(r.segment, r.attribution)]


FILL_CHUNK = 2048  # rows a filter goes through between two looks at the clock


class Backfill:
    """The rows of ``rows`` a new filter has not gone through yet, gone through newest
    first so the screen fills before the old rows are reached; the matches wait in
    ``found`` until ``take``. ``rows`` keeps growing at the end and losing rows at the
    front meanwhile: the position is kept as ``rows.dropped + index``, and rows that leave
    the window before the filter gets to them are not gone through."""

    __slots__ = ("found", "next", "rows", "select", "total")

    def __init__(self, rows: RowBuffer, select: RowSelector) -> None:
        self.rows = rows
        self.select = select
        self.total = len(rows)
        self.next = rows.dropped + len(rows)  # the rows before this (absolute) are to go through
        self.found: list[list[Record]] = []  # newest part first, each part oldest first

    @property
    def pos(self) -> int:
        """How many rows are still to go through."""
        return max(0, self.next - self.rows.dropped)

    @property
    def scanned(self) -> int:
        return self.total - min(self.total, self.pos)

    def scan(self, want: int | None, deadline: float, chunk: int = FILL_CHUNK) -> int:
        """Go back through at least one chunk, until ``want`` rows matched (None: no such
        limit), ``deadline`` (``time.perf_counter``) passed or the start was reached.
        Returns how many rows matched."""
        rows, select, found = self.rows, self.select, self.found
        pos = self.pos
        n = 0
        while pos > 0:
            lo = max(0, pos - chunk)
            part = select(rows.slice(lo, pos))
            pos = lo
            if part:
                found.append(part)
                n += len(part)
            if (want is not None and n >= want) or time.perf_counter() >= deadline:
                break
        self.next = rows.dropped + pos
        return n

    def take(self) -> list[Record]:
        """The matches found since the last ``take``, oldest first."""
        parts = self.found
        self.found = []
        parts.reverse()
        return list(chain.from_iterable(parts))


class Feed:
    """Every drained row (``all``), the rows the segment list shows (``buffer``: ``all``
    itself when there is no filter) and the socket activity (unfiltered)."""

    def __init__(self, session: Session, capacity: int = 100_000) -> None:
        self.session = session
        self.all = RowBuffer(capacity)
        self.buffer = self.all
        self.activity = SocketActivity()
        self._filter: DisplayFilter | None = None
        self.last_seq = -1  # newest record drained
        self.activity_seq = -1  # newest record counted in activity
        self.backfill: Backfill | None = None  # older rows a new filter still has to go through

    @property
    def filter(self) -> DisplayFilter | None:
        return self._filter

    @filter.setter
    def filter(self, flt: DisplayFilter | None) -> None:
        """Filter what drains from now on (``apply_filter`` also goes through the rows
        drained before)."""
        self._filter = flt if flt else None
        self.backfill = None
        if self._filter is None:
            self.buffer = self.all
        elif self.buffer is self.all:
            self.buffer = RowBuffer(self.all.capacity)

    def behind(self) -> int:
        return self.session.last_seq - self.last_seq

    def drain(self, limit: int, now: float) -> Drained:
        """Read at most ``limit`` new records; skip ahead if more than a buffer's worth
        is waiting (the newest rows are what a live list shows)."""
        if self.behind() > self.all.capacity + limit:
            self.last_seq = self.session.last_seq - self.all.capacity
            self.activity_seq = max(self.activity_seq, self.last_seq)
        recs = self.session.since(self.last_seq, limit)
        if not recs:
            return Drained(0, 0, 0)
        activity_seq = self.activity_seq
        if recs[0].seq > activity_seq:
            self.activity.add_batch(recs, now)
        else:
            self.activity.add_batch((r for r in recs if r.seq > activity_seq), now)
        evicted = self.all.extend(recs)
        kept = recs
        if self.buffer is not self.all:
            select = row_selector(self._filter)
            kept = recs if select is None else select(recs)
            evicted = self.buffer.extend(kept)
        self.last_seq = recs[-1].seq
        self.activity_seq = max(activity_seq, self.last_seq)
        return Drained(len(kept), evicted, len(recs))

    def filtered_window(self, flt: DisplayFilter | None) -> tuple[RowBuffer, int]:
        """A new buffer with the session window's rows that pass ``flt``, and the seq it
        reaches: all at once (what ``apply_filter`` and ``fill`` come to in steps)."""
        rows = self.session.window()
        select = row_selector(flt)
        buf = RowBuffer.of(rows if select is None else select(rows), self.all.capacity)
        return buf, rows[-1].seq if rows else self.last_seq

    def apply_filter(
        self, flt: DisplayFilter | None, *, want: int, budget: float, chunk: int = FILL_CHUNK
    ) -> None:
        """Switch to ``flt`` at once, with what a screen needs first.

        No filter is ``all`` itself: nothing to go through. Otherwise the drained rows are
        gone through newest first until ``want`` rows match or ``budget`` seconds have
        passed, and the list starts with those; ``drain`` goes on as before. The older
        rest is ``backfill``: ``fill`` goes through it in bounded steps, ``flush``
        prepends what they found.
        """
        self.backfill = None
        select = row_selector(flt)
        if select is None:
            self._filter = None
            self.buffer = self.all
            return
        fill = Backfill(self.all, select)
        fill.scan(want, time.perf_counter() + budget, chunk)
        first = fill.take()
        cap = self.all.capacity
        room = len(first) < cap
        self._filter = flt
        self.buffer = RowBuffer.of(first, cap)
        if fill.pos and room:
            self.backfill = fill

    def fill(self, budget: float, chunk: int = FILL_CHUNK) -> int:
        """Go on through ``backfill`` for about ``budget`` seconds (at least one chunk);
        the matches wait for ``flush``. Returns how many rows matched."""
        fill = self.backfill
        if fill is None or not fill.pos:
            return 0
        return fill.scan(None, time.perf_counter() + budget, chunk)

    def flush(self) -> tuple[int, bool]:
        """Put the matches ``fill`` found at the front of the buffer, in one go (the list
        then moves once a tick, not once a slice). Returns (rows prepended, done): done
        when the filter has gone through every row, or the buffer is full."""
        fill = self.backfill
        if fill is None:
            return 0, False
        found = fill.take()
        added = self.buffer.prepend(found)
        done = not fill.pos or added < len(found) or len(self.buffer) >= self.buffer.capacity
        if done:
            self.backfill = None  # older rows would not fit, or there are none
        return added, done

    @property
    def filling(self) -> tuple[int, int] | None:
        """(rows gone through, rows there were) while a new filter is being applied."""
        fill = self.backfill
        return None if fill is None else (fill.scanned, fill.total)
