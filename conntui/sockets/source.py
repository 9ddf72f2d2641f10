"""The refresher's engine: full snapshots of the socket table, and fast fixes on a demux miss.

``refresh()`` dumps TCP and UDP of both families, scans ``/proc/*/fd`` for holders and
builds a new :class:`SocketTable`; ``resolve(segment)`` asks the kernel about one segment's
tuple (a few microseconds per look-up) and, when that finds something the table lacks,
swaps in ``current().with_entries(found)``. Both swap one reference: readers call
``current()`` and never lock.

A refresh reads only the ``/proc/PID/fd`` links that may have changed (see
:class:`~.procfs.HolderScanner`), plus a slice of the others so that each is read again
at least once every ``full_scan_interval`` seconds. Python code runs only for the kernel
messages that changed (a message seen byte for byte last time stands for the same entry,
unless its socket's holders changed), and the new table is the last one patched
(``SocketTable.with_entries``) when that answers every look-up as a fresh build would:
a refresh then costs the dump and the listings, not the table's 20,000 Python objects.
A full build happens whenever a patch could order sockets differently than the kernel
where the order matters (sockets sharing a port).

Between refreshes, ``resolve()`` finds the holders of a new socket where it most likely
is (:meth:`~.procfs.HolderScanner.find_holders`): the fd numbers the kernel hands out
next, in the process holding the listener or the other end, a few links in all.

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

import itertools
import operator
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from .. import gcpolicy
from ..model import Endpoint, Holder, Segment, SocketEntry, SocketTable, TproxyRules, is_wildcard
from . import bpf, tproxy
from .diag import TCP_LISTEN, DiagSocket, RawSock, entry_from_msg, state_text, to_entry
from .netlink import open_netns
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
_INODE = struct.Struct("=68xI")

# Stands for "no entry from the last refresh" where None would need Python to test
_NO_ENTRY = SocketEntry("", 0, "", Endpoint("", 0), None, inode=-1)
_inode_of_entry = operator.attrgetter("inode")
# (proto, af, messages, last refresh's entry for each or _NO_ENTRY, whether it was missing)
_Batch = tuple[str, int, list[bytes], list[SocketEntry], list[bool]]

Holders = tuple[Holder, ...]


def _memory_key(udp: bool, cookie: int) -> int:
    """One int per (protocol, cookie): cheaper to hash and store than a tuple."""
    return (cookie << 1) | udp


def _same_order(before: list[int], now: list[int]) -> bool:
    """Whether the sockets in both lists come in the same relative order."""
    if before == now:
        return True
    kept, seen = set(now), set(before)
    return [k for k in before if k in kept] == [k for k in now if k in seen]


def _netns_inode(fd: int | None) -> int:
    """The inode of the network namespace ``fd`` pins (ours when None); 0 if unreadable."""
    try:
        return os.fstat(fd).st_ino if fd is not None else os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


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
        shared_scan: bool = False,
    ) -> None:
        self.netns_path = netns_path
        # ``scanner`` is walked by another source each refresh cycle (see NamespaceTables)
        self.shared_scan = shared_scan
        # Pin the namespace: a /proc/PID/ns/net path dies with its process, and channels
        # reopen after errors. /proc/self/fd/N names the same namespace for as long as we live.
        self._netns_fd: int | None = None
        if netns_path is not None:
            self._netns_fd = open_netns(netns_path)
            netns_path = f"/proc/self/fd/{self._netns_fd}"
        # the namespace's identity (what ``ls -l /proc/PID/ns/net`` shows), on every entry
        self.netns_inode = _netns_inode(self._netns_fd)
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
        # ... of the last resolve() that changed the table: kernel look-ups, holder search,
        # the new table (SocketTable.with_entries)
        self.resolve_stats: dict[str, float] = {}
        self._unheld_retry: dict[int, tuple[float, float]] = {}  # inode → (next look, backoff)

        # refresh() and resolve() never wait for each other: each has its own lock, and
        # they share only the brief swap of the current table.
        self._refresh_lock = threading.Lock()
        self._resolve_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._current = SocketTable()
        self._holders: dict[int, Holders] = {}  # inode → holders (last scan + targeted finds)
        self._last_scan = float("-inf")  # monotonic time of the last walk over all of /proc
        self._last_refresh = float("-inf")  # ... of the last refresh
        # (proto, af) → inet_diag_msg bytes minus timer/retrans/expires → entry built from it
        # (for messages not seen byte for byte at the last refresh)
        self._entries: dict[tuple[str, int], dict[bytes, SocketEntry]] = {}
        # (proto, af) → the whole message → its entry, at the last refresh
        self._same: dict[tuple[str, int], dict[bytes, SocketEntry]] = {}
        # (proto, af) → messages whose entry shows former holders (checked every refresh)
        self._former_msgs: dict[tuple[str, int], set[bytes]] = {}
        self._scan_generation = -1  # scanner.generation when the last refresh scanned
        self._refreshed: SocketTable | None = None  # the last refresh's table
        self._port_order: list[int] = []  # its sockets reached by port, in dump order
        self.derived = False  # whether the last refresh patched the table before it
        # Memories keyed by _memory_key(proto, cookie):
        self._first_seen: dict[int, float] = {}
        self._held: dict[int, Holders] = {}  # holders of each socket held when last seen
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

    def addresses(self) -> set[str]:
        """The namespace's own addresses now (one rtnetlink dump; no socket is read)."""
        with self._refresh_lock:
            return self.route.local_addresses()

    def current(self) -> SocketTable:
        """The latest table (an immutable snapshot; safe to read from any thread)."""
        return self._current

    # -- full snapshot ---------------------------------------------------------------------

    def refresh(self) -> SocketTable:
        """A full snapshot: four sock_diag dumps, one /proc scan, addresses; swapped in."""
        with self._refresh_lock:
            try:
                if self._refreshed is None:
                    # the first makes one entry per socket (20,000 objects and more): the
                    # collector's passes over them were a third of its time (issue 18)
                    with gcpolicy.paused():
                        return self._refresh()
                return self._refresh()
            except BaseException:
                # half-updated memories would pass stale entries off as current: start afresh
                self._same.clear()
                self._former_msgs.clear()
                self._refreshed = None
                raise

    def _refresh(self) -> SocketTable:
        t0 = time.perf_counter()
        # the first refresh: the TPROXY rules (three tools run) are read meanwhile
        reading_rules = tproxy.prefetch(self._netns_self_path()) if self._refreshed is None else None
        # A message identical byte for byte to one of the last refresh stands for the same
        # entry (most sockets, most of the time: no timer running). The per-message work
        # runs in C (map, compress); Python code runs only for the messages that changed.
        batches: list[_Batch] = []
        alive: set[int] = set()
        for proto, af in DUMPS:
            msgs = self.diag.dump_msgs(proto, af)
            same = self._same.get((proto, af))
            if same:
                hits = list(map(same.get, msgs, itertools.repeat(_NO_ENTRY, len(msgs))))
                missed = list(map(operator.is_, hits, itertools.repeat(_NO_ENTRY)))
                alive.update(map(_inode_of_entry, hits))
                alive.update([_INODE.unpack_from(m)[0] for m in itertools.compress(msgs, missed)])
            else:
                hits = [_NO_ENTRY] * len(msgs)
                missed = [True] * len(msgs)
                alive.update([_INODE.unpack_from(m)[0] for m in msgs])
            batches.append((proto, af, msgs, hits, missed))
        alive.discard(0)
        alive.discard(_NO_ENTRY.inode)
        # after the dumps: a socket first seen now existed by then (one made during the dump
        # must not look older than its own SYN)
        now = self.clock()
        t1 = time.perf_counter()
        mono = self.monotonic()
        scanner = self.scanner
        # Every link is read again once per full_scan_interval, a slice per refresh.
        share = (mono - self._last_refresh) / self.full_scan_interval if self.full_scan_interval > 0 else 1.0
        self._last_refresh = mono
        if self.shared_scan:
            # another source (the primary namespace's) walks /proc each cycle for every
            # namespace's sockets: its map holds ours; only sockets newer than it are looked for
            holders = scanner.latest
            missing = alive.difference(holders)
            if missing:
                found = scanner.find_holders(missing, deep=False)
                if found:
                    holders = {**holders, **found}
        else:
            holders = scanner.scan(alive, verify=share, recheck=lambda gone: self._recheck(batches, gone))
        # Inodes whose holders may differ from those the last refresh's entries show (None: any)
        changed = scanner.last_changed if scanner.generation == self._scan_generation + 1 else None
        self._scan_generation = scanner.generation
        self._holders = dict(holders)
        self._last_scan = mono
        t2 = time.perf_counter()
        before = (self._local_addrs, self._ifnames)
        self._local_addrs = frozenset(self.route.local_addresses())
        self._ifnames = self.route.interface_names()
        t3 = time.perf_counter()

        entries: list[SocketEntry] = []
        # What differs from the last refresh's table: new entries (new sockets, newer views),
        # and last time's entries for messages no longer seen (removed, unless reused).
        extras: list[SocketEntry] = []
        reused: set[int] = set()
        dropped: list[SocketEntry] = []
        port_order: list[int] = []
        first_seen = self._first_seen
        held = self._held
        former_mem = self._former
        unpack_key = _COOKIE_INODE.unpack_from
        for proto, af, msgs, hits, missed in batches:
            udp = proto == "udp"
            n = len(msgs)
            # What needs Python: new or changed messages, sockets whose holders changed, and
            # sockets showing former holders (their memory's "last seen" moves on).
            todo: Iterable[int]
            if changed is None:
                todo = range(n)
            else:
                flags = missed
                if changed:
                    flags = list(
                        map(operator.or_, flags, map(changed.__contains__, map(_inode_of_entry, hits)))
                    )
                former_msgs = self._former_msgs.get((proto, af))
                if former_msgs:
                    flags = list(map(operator.or_, flags, map(former_msgs.__contains__, msgs)))
                todo = list(itertools.compress(range(n), flags))
            old_cache = self._entries.get((proto, af), {})
            cache: dict[bytes, SocketEntry] = {}
            with_former: set[bytes] = set()
            out = hits  # reused: every _NO_ENTRY place is in todo
            for i in todo:
                msg = msgs[i]
                hit = hits[i]
                c0, c1, inode = unpack_key(msg)
                mkey = _memory_key(udp, c0 | (c1 << 32))
                hs: Holders = holders.get(inode, ()) if inode else ()
                former: Holders = ()
                if hs:
                    held[mkey] = hs
                else:
                    former = held.pop(mkey, ())
                    if former:
                        former_mem[mkey] = (former, now)
                    else:
                        remembered = former_mem.get(mkey)
                        if remembered is not None:
                            former = remembered[0]
                            former_mem[mkey] = (former, now)
                    if former:
                        with_former.add(msg)
                # The message minus timer, retransmits and expiry: unchanged → same entry.
                key = msg[:2] + msg[4:52] + msg[56:]
                entry = hit if hit is not _NO_ENTRY else old_cache.get(key)
                if entry is None or entry.holders != hs or entry.former_holders != former:
                    seen = first_seen.setdefault(mkey, now)
                    entry = entry_from_msg(
                        proto, msg, hs, former_holders=former, first_seen=seen, netns=self.netns_inode
                    )
                    extras.append(entry)
                elif hit is _NO_ENTRY:
                    reused.add(id(entry))  # last time's entry, under a message that changed
                cache[key] = entry
                out[i] = entry
            self._entries[(proto, af)] = cache
            self._former_msgs[(proto, af)] = with_former
            # Sockets reached by their port (listeners, UDP), in the kernel's order: the one
            # order a patched table could get wrong (see _derive).
            if udp:
                port_order += [_memory_key(True, c0 | (c1 << 32)) for c0, c1, _ in map(unpack_key, msgs)]
            else:
                port_order += [
                    _memory_key(False, c0 | (c1 << 32))
                    for c0, c1, _ in map(unpack_key, (m for m in msgs if m[6] == 0 and m[7] == 0))
                ]
            same = dict(zip(msgs, out, strict=True))
            old_same = self._same.get((proto, af))
            if old_same:
                dropped += [old_same[m] for m in old_same.keys() - same.keys()]
            self._same[(proto, af)] = same
            entries += out
        if len(first_seen) + len(held) > 3 * len(entries) + 1024:
            live = {_memory_key(e.proto == "udp", e.cookie) for e in entries}
            # list(): resolve() on the capture thread may add to these meanwhile
            self._first_seen = {k: t for k, t in list(first_seen.items()) if k in live}
            self._held = {k: h for k, h in list(held.items()) if k in live}
        self._prune_former(now)
        t4 = time.perf_counter()

        table = None
        last = self._refreshed
        if (
            last is not None
            and changed is not None
            and before == (self._local_addrs, self._ifnames)
            and _same_order(self._port_order, port_order)
        ):
            table = self._derive(last, entries, extras, dropped, reused, now)
        self.derived = table is not None
        if table is None:
            table = SocketTable(entries, taken_at=now, local_addrs=self._local_addrs, ifnames=self._ifnames)
        if reading_rules is not None:
            reading_rules.join()
        table.tproxy = self._tproxy_rules(table)
        table.sk_lookup = bpf.sk_lookup_for(self._netns_self_path())
        self._refreshed = table
        self._port_order = port_order
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
            "links_read": float(scanner.last_reads),
            "full_scan": float(scanner.last_full),
            "derived": float(self.derived),
        }
        return table

    def _netns_self_path(self) -> str | None:
        """The pinned namespace as a path a child process can open too (None: ours)."""
        return f"/proc/{os.getpid()}/fd/{self._netns_fd}" if self._netns_fd is not None else None

    def _tproxy_rules(self, table: SocketTable) -> TproxyRules | None:
        """The namespace's TPROXY rules (``sockets.tproxy``): every ``tproxy.TTL`` seconds
        while a transparent socket exists, else every ``tproxy.IDLE_TTL`` (a rule without a
        transparent socket still decides what the kernel drops)."""
        return tproxy.rules_for(
            self._netns_self_path(), busy=lambda: any(e.transparent for e in table.entries)
        )

    def _derive(
        self,
        last: SocketTable,
        entries: list[SocketEntry],
        extras: list[SocketEntry],
        dropped: list[SocketEntry],
        reused: set[int],
        now: float,
    ) -> SocketTable | None:
        """This refresh's table as the last refresh's patched (``with_entries``), when that
        answers every look-up as a fresh build of ``entries`` would; ``None`` otherwise.

        The patch costs what changed, where a build costs the whole table (20 ms at 20,000
        sockets) and leaves tens of thousands of new objects for the garbage collector. A
        patch keeps the last table's order and puts new sockets first, where a build takes
        the kernel's; the order matters only among sockets sharing a key (the demux's ties),
        so a new socket whose port (listeners, UDP) or 4-tuple already has one makes a
        build, as does a change in the kernel's order of the sockets reached by port
        (checked by the caller). So do many changes. Only ``entries`` (the socket view's
        raw material, which it sorts) may then list sockets in another order.
        """
        if len(extras) + len(dropped) > max(256, len(entries) // 8):
            return None
        newer = {(e.proto, e.cookie) for e in extras if e.cookie}
        # newer views of a socket are swapped in place, not removed and added
        removed = [e for e in dropped if id(e) not in reused and (e.proto, e.cookie) not in newer]
        gone = {id(e) for e in removed}
        ports: set[tuple[str, int]] = set()
        for e in extras:
            if e.cookie and last.by_cookie(e.proto, e.cookie) is not None:
                continue  # a newer view: keeps its place
            remote = e.remote
            if remote is None or remote.port == 0 or e.proto == "udp":  # reached by its port
                pkey = (e.proto, e.local.port)
                if pkey in ports or any(id(x) not in gone for x in last.on_port(*pkey)):
                    return None
                ports.add(pkey)
            if remote is not None and remote.port and e.proto == "tcp":
                same = last.connected("tcp", e.local.addr, e.local.port, remote.addr, remote.port)
                if any(id(x) not in gone for x in same):
                    return None
        return last.with_entries(extras, removed=removed, taken_at=now)

    def _recheck(self, batches: list[_Batch], missing: set[int]) -> set[int]:
        """Which of ``missing`` (inodes the scan found no holder for) the kernel still has
        with that inode: a socket closed since the dump needs no full /proc scan."""
        if len(missing) > 256:
            return missing  # many at once: a full scan is cheaper than asking one by one
        inode_at = _INODE.unpack_from
        still: set[int] = set()
        for proto, _af, msgs, _hits, _missed in batches:
            for msg in msgs:
                inode = inode_at(msg)[0]
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
        t0 = time.perf_counter()
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
        ports = {seg.dport}
        if table.tproxy is not None and not table.is_local(seg.dst):
            # TPROXY (nf_tproxy_get_sock_v4, NF_TPROXY_LOOKUP_LISTENER): a segment for a
            # non-local address that a rule steers goes to the socket on the rule's on-port,
            # which may have been bound since the table was read (a SYN too, though the
            # connection it made is already found on its own tuple).
            for rule in table.tproxy.matching(seg):
                on_ip = rule.on_ip if rule.on_ip and not is_wildcard(rule.on_ip) else seg.dst
                ports.add(rule.port_for(seg))
                look(on_ip, rule.port_for(seg), seg.src, seg.sport)
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
                    if raw.sport in ports:
                        found.setdefault(raw.cookie, raw)
                        alive.add(raw.cookie)
                gone += [
                    e
                    for port in ports
                    for e in table.on_port(proto, port)
                    if e.state == "LISTEN" and e.family == fam and e.cookie not in alive
                ]

        fresh = [raw for raw in found.values() if self._differs(table, raw)]
        if not fresh and not gone:
            return None
        # Sockets seen to close since the table was made: their holders' fd numbers are the
        # ones the kernel hands out next, so the search for a new socket reads them first.
        for e in gone:
            if e.holders:
                self.scanner.note_closed(e.holders)
        for raw in fresh:
            if not raw.inode:
                was = table.by_cookie(raw.proto, raw.cookie)
                if was is not None and was.holders:
                    self.scanner.note_closed(was.holders)
        t1 = time.perf_counter()
        self._find_missing_holders(table, fresh)
        t2 = time.perf_counter()
        now = self.clock()
        entries = [self._entry(raw, now) for raw in fresh]
        new_table = table.with_entries(entries, removed=gone)
        with self._swap_lock:
            if self._current is not table:  # a refresh swapped in a newer table meanwhile
                current = self._current
                still = [c for e in gone if (c := current.by_cookie(e.proto, e.cookie)) is not None]
                new_table = current.with_entries(entries, removed=still)
            self._current = new_table
        t3 = time.perf_counter()
        self.resolve_stats = {"lookup": t1 - t0, "holders": t2 - t1, "table": t3 - t2, "total": t3 - t0}
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
                # the search is cheap first (predicted fds); its full walk is rate-limited
                return self._retry_unheld(raw.inode)
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
        uids: set[int] = set()
        for raw in fresh:
            if not raw.inode or raw.inode not in need:
                continue
            uids.add(raw.uid)
            # A new connection is most likely in the process holding the listener (accepted
            # there), or, on loopback, in the one holding the other end.
            for entry in table.on_port(raw.proto, raw.sport):
                hints.extend(h.pid for h in entry.holders)
            if raw.dport:
                for entry in table.connected(raw.proto, raw.dst, raw.dport, raw.src, raw.sport):
                    hints.extend(h.pid for h in entry.holders)
                for entry in table.on_port(raw.proto, raw.dport):
                    hints.extend(h.pid for h in entry.holders)
        found = self.scanner.find_holders(need, hints, deep=self._may_walk(), uids=uids)
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
        entry = to_entry(raw, hs, former_holders=former, first_seen=first, netns=self.netns_inode)
        if not hs and raw.inode:
            # A socket with an inode has a holder; if conntui may not read some process's fds,
            # say which may hold it (same uid) rather than calling it the kernel's.
            pids = tuple(pid for pid, uid in self.scanner.denied.items() if uid == raw.uid)
            pids = pids or self.scanner.denied_for(raw.uid)
            if pids:
                entry = replace(entry, unreadable=pids)
        return entry
