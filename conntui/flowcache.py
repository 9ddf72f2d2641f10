"""The engine's per-flow attribution cache, kept across socket-table changes.

Most segments are data and ACKs of flows already seen: against the same table the demux
would answer exactly as before, so the engine reuses that answer. The table changes often
on a busy host (every miss derives a new one, ~200 a second at 200 new flows/s), and
clearing the cache on each change meant that with a thousand live flows almost every
segment went through the full demux again. A derived table says which 4-tuples and ports
it changed (``SocketTable.lineage``); only the answers that read those keys are dropped.
A table of unknown descent (a full refresh) clears everything.
"""

from __future__ import annotations

from collections.abc import Callable

from .model import Attribution, Match, Segment, SocketTable, TupleKey, unmap

CacheKey = tuple[str, str, int, str, int, str, int, int]
Dep = TupleKey | tuple[str, int]


def _by_tuple_alone(att: Attribution) -> bool:
    """An answer the demux found in the established hash by the 4-tuple, with both ends
    connection sockets of that tuple: no listener or other socket on either port can change
    it (the established look-up comes first), so it depends on its two tuples only. Without
    this, every new connection to a server port dropped the answers of all its live flows."""
    if att.match is not Match.ESTABLISHED or att.listener is not None:
        return False
    return all(
        s is None or (s.proto == "tcp" and s.remote is not None and s.remote.port != 0)
        for s in (att.receiver, att.sender)
    )


def cache_key(seg: Segment) -> CacheKey:
    """What the demux reads of a non-SYN/FIN/RST segment: addresses, ports, flags, packet
    type and interface."""
    return (seg.proto, seg.src, seg.sport, seg.dst, seg.dport, seg.flags, seg.pkttype, seg.ifindex)


class FlowCache:
    def __init__(self, limit: int = 65536, final: Callable[[Attribution], bool] | None = None) -> None:
        """``final``: which answers need nothing more from the engine than the row itself
        (no question for the verifier, no socket to look up again); those are also kept in
        ``fast``, which the C fast path (``fastpath.py``) reads in place."""
        self.limit = limit
        self._answers: dict[CacheKey, Attribution] = {}
        self.fast: dict[CacheKey, Attribution] = {}  # ⊆ _answers; the same object, never replaced
        self._final = final
        self._readers: dict[Dep, list[CacheKey]] = {}  # table key → cached answers that read it
        self._table: SocketTable | None = None  # held: its id is what lineages refer to
        self.cleared = 0  # whole-cache clears (unknown tables, full cache)
        self.dropped = 0  # answers dropped because their keys changed

    def __len__(self) -> int:
        return len(self._answers)

    def follow(self, table: SocketTable) -> None:
        """Make the cache valid for ``table``."""
        old = self._table
        if table is old:
            return
        lineage = table.lineage
        if old is not None and lineage is not None and lineage.parent == id(old):
            answers, readers = self._answers, self._readers
            deps: list[Dep] = [*lineage.tuples, *lineage.ports]
            fast = self.fast
            for dep in deps:
                for key in readers.pop(dep, ()):
                    if answers.pop(key, None) is not None:
                        self.dropped += 1
                        fast.pop(key, None)
        else:
            self._clear()
        self._table = table

    def get(self, table: SocketTable, key: CacheKey) -> Attribution | None:
        if table is not self._table:
            self.follow(table)
        return self._answers.get(key)

    def put(self, table: SocketTable, key: CacheKey, att: Attribution) -> None:
        """Remember ``att`` (computed against ``table``) for ``key``."""
        if table is not self._table:
            self.follow(table)
        if len(self._answers) >= self.limit:
            self._clear()
        self._answers[key] = att
        if self._final is not None:
            if self._final(att):
                self.fast[key] = att
            else:
                self.fast.pop(key, None)
        proto, src, sport, dst, dport = key[0], unmap(key[1]), key[2], unmap(key[3]), key[4]
        readers = self._readers
        deps: tuple[Dep, ...] = (
            (proto, dst, dport, src, sport),  # the receiver's connection
            (proto, src, sport, dst, dport),  # the sender's connection
        )
        if not _by_tuple_alone(att):
            deps += ((proto, dport), (proto, sport))  # listeners and UDP sockets on either port
        for dep in deps:
            lst = readers.get(dep)
            if lst is None:
                readers[dep] = [key]
            else:
                lst.append(key)

    def _clear(self) -> None:
        if self._answers:
            self.cleared += 1
        self._answers.clear()
        self._readers.clear()
        self.fast.clear()
