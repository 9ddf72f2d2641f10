"""What the UI keeps of the session: the filtered rows it shows and per-socket activity.

Nothing here touches Textual. The UI calls ``Feed.drain`` on a timer; each call reads at
most ``limit`` new records from the session, so the work per frame is bounded whatever
the packet rate, and nothing is ever posted per packet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..filters import DisplayFilter
from ..model import Record, SocketEntry
from ..session import Session

SocketKey = tuple[str, str, int, str, int]


def socket_key(sock: SocketEntry) -> SocketKey:
    """One connection or bound socket, whatever its holders or state (addresses unmapped)."""
    r = sock.remote
    return (sock.proto, sock.local.key_addr, sock.local.port, r.key_addr if r else "", r.port if r else 0)


class RowBuffer:
    """A fixed-capacity ring of records with O(1) indexing (a deque indexes in O(n)).

    ``dropped`` counts rows pushed out at the front, so ``dropped + index`` names a row
    for as long as it stays in the ring.
    """

    __slots__ = ("_len", "_rows", "_start", "capacity", "dropped")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._rows: list[Record | None] = [None] * self.capacity
        self._start = 0
        self._len = 0
        self.dropped = 0

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

    def extend(self, recs: Iterable[Record]) -> int:
        return sum(self.append(r) for r in recs)

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
        self.by_key: dict[SocketKey, Activity] = {}
        self.seen: dict[SocketKey, SocketEntry] = {}  # the latest view of each socket
        self.max_sockets = max_sockets
        self.newest_ts = 0.0

    def add(self, rec: Record, now: float) -> None:
        self.add_batch((rec,), now)

    def add_batch(self, recs: Iterable[Record], now: float) -> None:
        """Count a batch: per record only an ``id()`` and a few dict operations; the
        socket's key is computed once per distinct socket object in the batch."""
        batch: dict[int, tuple[SocketEntry, list[int], dict[int, int]]] = {}
        parents: dict[int, SocketEntry] = {}
        newest = self.newest_ts
        for rec in recs:
            seg = rec.segment
            att = rec.attribution
            ts = seg.ts
            if ts > newest:
                newest = ts
            if att.listener is not None:
                parents[id(att.listener)] = att.listener
            for sock in (att.receiver, att.sender):
                if sock is None:
                    continue
                item = batch.get(id(sock))
                if item is None:
                    item = batch[id(sock)] = (sock, [0, 0], {})
                totals = item[1]
                totals[0] += 1
                totals[1] += seg.payload_len
                buckets = item[2]
                sec = int(ts)
                buckets[sec] = buckets.get(sec, 0) + 1
        self.newest_ts = newest
        for sock, (segments, nbytes), buckets in batch.values():
            key = socket_key(sock)
            act = self.by_key.get(key)
            if act is None:
                if len(self.by_key) >= self.max_sockets:
                    self._prune()
                act = self.by_key[key] = Activity()
            act.merge(segments, nbytes, buckets, now)
            self.seen[key] = sock
        for sock in parents.values():
            self.seen[socket_key(sock)] = sock

    def _prune(self) -> None:
        keep = sorted(self.by_key.items(), key=lambda kv: kv[1].last_hit)[len(self.by_key) // 2 :]
        self.by_key = dict(keep)
        self.seen = {k: v for k, v in self.seen.items() if k in self.by_key}

    def get(self, sock: SocketEntry) -> Activity | None:
        return self.by_key.get(socket_key(sock))


@dataclass(frozen=True, slots=True)
class Drained:
    added: int  # rows added to the buffer (after the filter)
    evicted: int  # rows that fell out of the front of the buffer
    seen: int  # records read from the session


def record_filter(flt: DisplayFilter | None) -> Callable[[Record], bool] | None:
    if flt is None or not flt:
        return None
    return lambda rec: flt(rec.segment, rec.attribution)


class Feed:
    """The rows the segment list shows (filtered) and the socket activity (unfiltered)."""

    def __init__(self, session: Session, capacity: int = 100_000) -> None:
        self.session = session
        self.buffer = RowBuffer(capacity)
        self.activity = SocketActivity()
        self.filter: DisplayFilter | None = None
        self.last_seq = -1  # newest record considered for the buffer
        self.activity_seq = -1  # newest record counted in activity

    def behind(self) -> int:
        return self.session.last_seq - self.last_seq

    def drain(self, limit: int, now: float) -> Drained:
        """Read at most ``limit`` new records; skip ahead if more than a buffer's worth
        is waiting (the newest rows are what a live list shows)."""
        if self.behind() > self.buffer.capacity + limit:
            self.last_seq = self.session.last_seq - self.buffer.capacity
            self.activity_seq = max(self.activity_seq, self.last_seq)
        recs = self.session.since(self.last_seq, limit)
        if not recs:
            return Drained(0, 0, 0)
        keep = record_filter(self.filter)
        activity_seq = self.activity_seq
        if recs[0].seq > activity_seq:
            self.activity.add_batch(recs, now)
        else:
            self.activity.add_batch((r for r in recs if r.seq > activity_seq), now)
        kept = recs if keep is None else [r for r in recs if keep(r)]
        evicted = self.buffer.extend(kept)
        added = len(kept)
        self.last_seq = recs[-1].seq
        self.activity_seq = max(activity_seq, self.last_seq)
        return Drained(added, evicted, len(recs))

    def filtered_window(self, flt: DisplayFilter | None) -> tuple[RowBuffer, int]:
        """A new buffer with the window's rows that pass ``flt``, and the seq it reaches.

        Safe to run in a worker thread: it reads the session (locked copy) and builds a
        new buffer without touching the current one.
        """
        rows = self.session.window()
        keep = record_filter(flt)
        buf = RowBuffer(self.buffer.capacity)
        buf.extend(rows if keep is None else (r for r in rows if keep(r)))
        return buf, rows[-1].seq if rows else self.last_seq

    def install(self, flt: DisplayFilter | None, buffer: RowBuffer, upto_seq: int, now: float) -> None:
        """Switch to a new filter and its buffer (from ``filtered_window``)."""
        self.filter = flt
        self.buffer = buffer
        gap = upto_seq - self.activity_seq
        if 0 < gap <= 50_000:  # rows the old buffer never drained: count them once
            self.activity.add_batch(self.session.since(self.activity_seq, gap), now)
        self.activity_seq = max(self.activity_seq, upto_seq)
        self.last_seq = upto_seq
