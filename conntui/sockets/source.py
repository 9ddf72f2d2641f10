"""The refresher's engine: full snapshots of the socket table, and fast fixes on a demux miss.

``refresh()`` dumps TCP and UDP of both families, scans ``/proc/*/fd`` for holders and
builds a new :class:`SocketTable`; ``resolve(segment)`` asks the kernel about one segment's
tuple (a few microseconds per look-up) and, when that finds something the table lacks,
swaps in ``current().with_entries(found)``. Both swap one reference: readers call
``current()`` and never lock.

A refresh reads only the ``/proc/PID/fd`` links that may have changed (see
:class:`~.procfs.HolderScanner`), re-reads all of them every ``full_scan_interval``
seconds, and rebuilds only the entries whose kernel message changed (timers aside).

Memory across snapshots, keyed by the sock_diag cookie (stable for a socket's whole life,
and copied into its TIME_WAIT entry by ``inet_twsk_alloc``):

* ``first_seen``: when this source first saw the socket;
* ``former_holders``: who held it before close(); an orphan or TIME_WAIT entry has inode 0
  and no holder left, so its last holders are remembered for ``former_ttl`` seconds after
  the socket was last seen. The kernel creates a cookie on first use, so this works for
  sockets that were dumped at least once while open (every refresh dumps them all).

No threads of its own: the refresher thread calls ``refresh`` on a timer, the capture
thread calls ``resolve`` on a miss. They never wait for each other (separate netlink sockets
and locks); only the swap of the current table is serialised.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

from ..model import Holder, Segment, SocketEntry, SocketTable
from .diag import TCP_LISTEN, DiagSocket, RawSock, parse_msg, state_text, to_entry
from .procfs import HolderScanner
from .route import RouteInfo

DUMPS: tuple[tuple[str, int], ...] = (
    ("tcp", socket.AF_INET),
    ("tcp", socket.AF_INET6),
    ("udp", socket.AF_INET),
    ("udp", socket.AF_INET6),
)

# cookie[0], cookie[1] at offset 44 and inode at offset 68 of an inet_diag_msg
_COOKIE_INODE = struct.Struct("=44xII16xI")

Holders = tuple[Holder, ...]


def _memory_key(udp: bool, cookie: int) -> int:
    """One int per (protocol, cookie): cheaper to hash and store than a tuple."""
    return (cookie << 1) | udp


def netns_path(name_or_path: str) -> str:
    """``/run/netns/NAME`` for an ``ip netns`` name; a path is returned as is."""
    return name_or_path if "/" in name_or_path else f"/run/netns/{name_or_path}"


class SocketTableSource:
    """Builds and keeps the current :class:`SocketTable` of one network namespace."""

    def __init__(
        self,
        *,
        netns_path: str | None = None,
        proc_root: str = "/proc",
        diag: DiagSocket | None = None,
        lookup_diag: DiagSocket | None = None,
        route: RouteInfo | None = None,
        scanner: HolderScanner | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        former_ttl: float = 60.0,
        min_scan_interval: float = 0.05,
        full_scan_interval: float = 10.0,
        memory_limit: int = 1 << 17,
    ) -> None:
        self.netns_path = netns_path
        # Pin the namespace: a /proc/PID/ns/net path dies with its process, and channels
        # reopen after errors. /proc/self/fd/N names the same namespace for as long as we live.
        self._netns_fd: int | None = None
        if netns_path is not None:
            self._netns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            netns_path = f"/proc/self/fd/{self._netns_fd}"
        self.diag = diag if diag is not None else DiagSocket(netns_path)
        # resolve() runs on the capture thread while refresh() may be dumping on the
        # refresher's: each gets its own netlink socket (a channel is one thread's at a time).
        if lookup_diag is None:
            lookup_diag = diag if diag is not None else DiagSocket(netns_path)
        self.lookup_diag = lookup_diag
        self.route = route if route is not None else RouteInfo(netns_path)
        self.scanner = scanner if scanner is not None else HolderScanner(proc_root)
        self.clock = clock
        self.monotonic = monotonic
        self.former_ttl = former_ttl
        self.min_scan_interval = min_scan_interval
        self.full_scan_interval = full_scan_interval
        self.memory_limit = memory_limit
        self.stats: dict[str, float] = {}  # durations of the last refresh's phases (seconds)
        self._unheld_retry: dict[int, tuple[float, float]] = {}  # inode → (next look, backoff)

        # refresh() and resolve() never wait for each other: each has its own lock, and
        # they share only the brief swap of the current table.
        self._refresh_lock = threading.Lock()
        self._resolve_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._current = SocketTable()
        self._holders: dict[int, Holders] = {}  # inode → holders (last scan + targeted finds)
        self._last_scan = float("-inf")  # monotonic time of the last walk over all of /proc
        self._last_full_scan = float("-inf")  # ... of the last one that read every fd link
        # (proto, af) → inet_diag_msg bytes minus timer/retrans/expires → entry built from it
        self._entries: dict[tuple[str, int], dict[bytes, SocketEntry]] = {}
        # Memories keyed by _memory_key(proto, cookie):
        self._first_seen: dict[int, float] = {}
        self._held: dict[int, Holders] = {}  # holders seen at the last refresh
        self._former: dict[int, tuple[Holders, float]] = {}  # (holders, last seen)
        self._local_addrs: frozenset[str] = frozenset()
        self._ifnames: dict[int, str] = {}

    @classmethod
    def for_netns(cls, name_or_path: str, **kwargs: object) -> SocketTableSource:
        """A source reading the namespace ``ip netns`` calls ``name`` (or a ns file path)."""
        return cls(netns_path=netns_path(name_or_path), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_pid(cls, pid: int, **kwargs: object) -> SocketTableSource:
        """A source reading the network namespace process ``pid`` lives in."""
        return cls(netns_path=f"/proc/{pid}/ns/net", **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.diag.close()
        if self.lookup_diag is not self.diag:
            self.lookup_diag.close()
        self.route.close()
        if self._netns_fd is not None:
            os.close(self._netns_fd)
            self._netns_fd = None

    def __enter__(self) -> SocketTableSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def current(self) -> SocketTable:
        """The latest table (an immutable snapshot; safe to read from any thread)."""
        return self._current

    # -- full snapshot ---------------------------------------------------------------------

    def refresh(self) -> SocketTable:
        """A full snapshot: four sock_diag dumps, one /proc scan, addresses; swapped in."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> SocketTable:
        t0 = time.perf_counter()
        now = self.clock()
        unpack = _COOKIE_INODE.unpack_from
        # Parallel lists, not tuples: fewer objects for the garbage collector to chase.
        batches: list[tuple[str, int, list[bytes], list[int], list[int]]] = []
        alive: set[int] = set()
        for proto, af in DUMPS:
            msgs = self.diag.dump_msgs(proto, af)
            keys: list[int] = []
            inodes: list[int] = []
            udp = proto == "udp"
            for msg in msgs:
                c0, c1, inode = unpack(msg)
                keys.append(_memory_key(udp, c0 | (c1 << 32)))
                inodes.append(inode)
            alive.update(inodes)
            batches.append((proto, af, msgs, keys, inodes))
        alive.discard(0)
        t1 = time.perf_counter()
        mono = self.monotonic()
        full = mono - self._last_full_scan >= self.full_scan_interval
        holders = self.scanner.scan(alive, full=full, recheck=lambda missing: self._recheck(batches, missing))
        if self.scanner.last_full:
            self._last_full_scan = mono
        self._holders = dict(holders)
        self._last_scan = mono
        t2 = time.perf_counter()
        self._local_addrs = frozenset(self.route.local_addresses())
        self._ifnames = self.route.interface_names()
        t3 = time.perf_counter()

        entries: list[SocketEntry] = []
        first_seen = self._first_seen
        held: dict[int, Holders] = {}
        prev_held = self._held
        former_mem = self._former
        for proto, af, msgs, keys, inodes in batches:
            old_cache = self._entries.get((proto, af), {})
            cache: dict[bytes, SocketEntry] = {}
            for msg, mkey, inode in zip(msgs, keys, inodes, strict=True):
                hs: Holders = holders.get(inode, ()) if inode else ()
                former: Holders = ()
                if hs:
                    held[mkey] = hs
                else:
                    former = prev_held.get(mkey, ())
                    if former:
                        former_mem[mkey] = (former, now)
                    else:
                        remembered = former_mem.get(mkey)
                        if remembered is not None:
                            former = remembered[0]
                            former_mem[mkey] = (former, now)
                # The message minus timer, retransmits and expiry: unchanged → same entry.
                key = msg[:2] + msg[4:52] + msg[56:]
                entry = old_cache.get(key)
                if entry is None or entry.holders != hs or entry.former_holders != former:
                    seen = first_seen.setdefault(mkey, now)
                    entry = to_entry(parse_msg(proto, msg), hs, former_holders=former, first_seen=seen)
                cache[key] = entry
                entries.append(entry)
            self._entries[(proto, af)] = cache
        if len(first_seen) > 2 * len(entries) + 1024:
            live = {k for *_, keys, _ in batches for k in keys}
            self._first_seen = {k: t for k, t in first_seen.items() if k in live}
        self._held = held
        self._prune_former(now)
        t4 = time.perf_counter()

        table = SocketTable(entries, taken_at=now, local_addrs=self._local_addrs, ifnames=self._ifnames)
        with self._swap_lock:
            # Entries a concurrent resolve() added are dropped: this dump is newer, and a
            # socket it missed is looked up again on its next demux miss.
            self._current = table
        t5 = time.perf_counter()
        self.stats = {
            "dump": t1 - t0,
            "scan": t2 - t1,
            "route": t3 - t2,
            "entries": t4 - t3,
            "table": t5 - t4,
            "total": t5 - t0,
            "sockets": float(len(entries)),
            "links_read": float(self.scanner.last_reads),
            "full_scan": float(self.scanner.last_full),
        }
        return table

    def _recheck(
        self, batches: list[tuple[str, int, list[bytes], list[int], list[int]]], missing: set[int]
    ) -> set[int]:
        """Which of ``missing`` (inodes the scan found no holder for) the kernel still has
        with that inode: a socket closed since the dump needs no full /proc scan."""
        if len(missing) > 256:
            return missing  # many at once: a full scan is cheaper than asking one by one
        still: set[int] = set()
        for proto, _af, msgs, _keys, inodes in batches:
            for msg, inode in zip(msgs, inodes, strict=True):
                if inode in missing:
                    try:
                        raw = self.diag.lookup_msg(proto, msg)
                    except OSError:
                        raw = None
                    if raw is not None and raw.inode == inode:
                        still.add(inode)
        return still

    def _prune_former(self, now: float) -> None:
        mem = self._former
        horizon = now - self.former_ttl
        stale = [k for k, (_, seen) in mem.items() if seen < horizon]
        for k in stale:
            del mem[k]
        if len(mem) > self.memory_limit:
            oldest = sorted(mem, key=lambda k: mem[k][1])[: len(mem) - self.memory_limit]
            for k in oldest:
                del mem[k]

    # -- fast path on a demux miss ---------------------------------------------------------

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None:
        """Ask the kernel about ``seg``'s sockets; a new current table if that found any
        socket the table lacks (or shows differently), else ``None``.

        Looks up the receiver (local = destination) and the sender (local = source) by exact
        tuple; for TCP, when the receiver is not a listener, also the listener on the
        destination port (the parent of a request sock or unaccepted child, and who takes a
        SYN that reuses a TIME_WAIT tuple). Holders of new inodes come from the inode cache
        or a targeted /proc walk: the fds that are new since the last scan always, every fd
        at most once per ``min_scan_interval`` seconds.
        """
        with self._resolve_lock:
            return self._resolve(seg, prune)

    def _resolve(self, seg: Segment, prune: bool = False) -> SocketTable | None:
        table = self._current
        proto = seg.proto
        if proto not in ("tcp", "udp"):
            return None
        family = 4 if seg.family == 4 else 6
        found: dict[int, RawSock] = {}

        def look(src: str, sport: int, dst: str, dport: int) -> list[RawSock]:
            try:
                hits = self.lookup_diag.lookup_exact(
                    proto, family, src, sport, dst, dport, ifindex=seg.ifindex
                )
            except (ValueError, OSError):
                return []
            for raw in hits:
                found.setdefault(raw.cookie, raw)
            return hits

        receiver = look(seg.dst, seg.dport, seg.src, seg.sport)
        sender = look(seg.src, seg.sport, seg.dst, seg.dport)
        if proto == "tcp" and receiver and receiver[0].state != TCP_LISTEN:
            look(seg.dst, seg.dport, "0.0.0.0" if family == 4 else "::", 0)
        gone: list[SocketEntry] = []
        if prune:
            # The caller knows the connection ended (both FINs, or a RST, were seen): a view
            # of it the kernel no longer has is stale. (Not by default: the last ACK of a
            # close legitimately reached a socket that is gone by the time we look.)
            for hits, tup in (
                (receiver, (seg.dst, seg.dport, seg.src, seg.sport)),
                (sender, (seg.src, seg.sport, seg.dst, seg.dport)),
            ):
                cookies = {raw.cookie for raw in hits}
                gone += [e for e in table.connected(proto, *tup) if e.cookie and e.cookie not in cookies]
        if proto == "tcp" and seg.is_syn:
            # The exact look-up applies the SO_REUSEPORT choice, so it names one member of a
            # group; a listeners-only dump (cheap: LISTEN sockets only) finds them all, and
            # tells which listeners the table shows that have closed since.
            for fam in (4, 6) if family == 4 else (6,):
                try:
                    listeners = self.lookup_diag.dump(proto, fam, 1 << TCP_LISTEN)
                except OSError:
                    continue
                alive = set()
                for raw in listeners:
                    if raw.sport == seg.dport:
                        found.setdefault(raw.cookie, raw)
                        alive.add(raw.cookie)
                gone += [
                    e
                    for e in table.on_port(proto, seg.dport)
                    if e.state == "LISTEN" and e.family == fam and e.cookie not in alive
                ]

        fresh = [raw for raw in found.values() if self._differs(table, raw)]
        if not fresh and not gone:
            return None
        self._find_missing_holders(table, fresh)
        now = self.clock()
        entries = [self._entry(raw, now) for raw in fresh]
        new_table = table.with_entries(entries, removed=gone)
        with self._swap_lock:
            if self._current is not table:  # a refresh swapped in a newer table meanwhile
                current = self._current
                still = [c for e in gone if (c := current.by_cookie(e.proto, e.cookie)) is not None]
                new_table = current.with_entries(entries, removed=still)
            self._current = new_table
        return new_table

    def _differs(self, table: SocketTable, raw: RawSock) -> bool:
        """Whether the table lacks ``raw`` or shows it in another state / holder set."""
        if raw.remote_is_wildcard:
            candidates = table.on_port(raw.proto, raw.sport)
        else:
            candidates = table.connected(raw.proto, raw.src, raw.sport, raw.dst, raw.dport)
        state = state_text(raw.proto, raw.state)
        for entry in candidates:
            if entry.cookie == raw.cookie and entry.state == state and entry.inode == raw.inode:
                if state == "LISTEN" and (entry.rx_queue, entry.tx_queue) != (raw.rqueue, raw.wqueue):
                    return True  # the accept queue moved: whether a SYN was dropped depends on it
                # Same socket: news only if it may now have holders the table lacks.
                if not raw.inode or entry.holders:
                    return False
                if self._holders.get(raw.inode):
                    return True
                return self._retry_unheld(raw.inode) and self._may_walk()
        return True

    def _retry_unheld(self, inode: int) -> bool:
        """Whether to look again for the holder of a live socket nobody held at the last scan.

        A scan can run between the kernel creating an accepted socket and ``accept()``
        installing its fd, so "unheld" is re-checked, backing off from 50 ms to 5 s for
        sockets that really have no fd (in flight over SCM_RIGHTS, kernel-internal)."""
        if inode not in self.scanner.unheld:
            return True
        now = self.monotonic()
        due, delay = self._unheld_retry.get(inode, (0.0, 0.025))
        if now < due:
            return False
        if len(self._unheld_retry) > 65536:
            self._unheld_retry.clear()
        delay = min(delay * 2, 5.0)
        self._unheld_retry[inode] = (now + delay, delay)
        return True

    def _may_walk(self) -> bool:
        """Whether a walk over all of /proc is allowed now (the rate limit)."""
        return self.monotonic() - self._last_scan >= self.min_scan_interval

    def _find_missing_holders(self, table: SocketTable, fresh: Iterable[RawSock]) -> None:
        fresh = list(fresh)
        need = {raw.inode for raw in fresh if raw.inode and raw.inode not in self._holders}
        if not need:
            return
        hints: list[int] = []
        for raw in fresh:
            # A new connection is most likely in the process holding the listener, or in
            # the one on the other end.
            for entry in table.on_port(raw.proto, raw.sport):
                hints.extend(h.pid for h in entry.holders)
            if raw.dport:
                for entry in table.on_port(raw.proto, raw.dport):
                    hints.extend(h.pid for h in entry.holders)
        found = self.scanner.find_holders(need, hints, deep=self._may_walk())
        if self.scanner.last_find_deep:
            self._last_scan = self.monotonic()
        self._holders.update(found)

    def _entry(self, raw: RawSock, now: float) -> SocketEntry:
        ck = _memory_key(raw.proto == "udp", raw.cookie)
        hs = self._holders.get(raw.inode, ()) if raw.inode else ()
        former: Holders = ()
        if hs:
            self._held[ck] = hs
        else:
            former = self._held.get(ck, ())
            if not former:
                remembered = self._former.get(ck)
                former = remembered[0] if remembered is not None else ()
        first = self._first_seen.setdefault(ck, now)
        return to_entry(raw, hs, former_holders=former, first_seen=first)
