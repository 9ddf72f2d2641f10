"""Every network namespace on the host, each with its own socket table.

A container's sockets live in its own network namespace: its httpd's listener, its
connections, its addresses. A table read in the host's namespace alone does not hold them,
so a segment to a container would be looked up among the host's sockets (where podman's
``conmon`` holds the published port and never receives a packet). :class:`NamespaceTables`
keeps one :class:`~conntui.sockets.source.SocketTableSource` per namespace, found live:

* the ``ns/net`` link of every process (``/proc/PID/ns/net``: the inode names the namespace),
* bind-mounted ones that may hold no process (``/run/netns/*`` from ``ip netns``,
  ``/run/docker/netns/*``),

refreshed beside the primary one (the namespace conntui runs in), and an index from each
namespace's own addresses to the namespace, which says where a segment is delivered: the
namespace that owns its destination address receives it (``ip_route_input`` there finds a
``RTN_LOCAL`` route), the one that owns its source sent it. Loopback addresses belong to
every namespace and never leave one: they stay with the capturing (primary) namespace.

A namespace that disappears mid-look-up (its last process exits, its mount is removed) is
dropped at the next refresh; until then its last table answers, and the pinned file
descriptor keeps the namespace itself readable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..model import Segment, SocketTable, unmap
from ..tablesource import NamespaceTable
from .source import SocketTableSource

__all__ = ["NamespaceInfo", "NamespaceTables", "discover_namespaces"]

# A namespace no segment went to for this long has only its addresses read each refresh.
ACTIVE_FOR = 30.0
# ... and those addresses are read again this often (a new namespace's at once).
ADDRESSES_EVERY = 5.0

# An address no namespace owns makes conntui look for new namespaces at most this often (a
# container started since the last refresh: its first segments would be called another host's).
REDISCOVER_EVERY = 0.5

# Directories where runtimes bind-mount namespaces that may hold no process.
NETNS_DIRS = ("/run/netns", "/run/docker/netns", "/var/run/netns")


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """One network namespace: its inode, a path that opens it, and what names it."""

    inode: int
    path: str  # /run/netns/NAME or /proc/PID/ns/net
    name: str = ""  # the ``ip netns`` (or runtime) name, when bind-mounted
    pid: int = 0  # a process in it (the first found), 0 if none


# Set by conntui.privsep once capabilities are gone (another process's ns/net may then not
# be read): pid → network namespace inode, for every process, from the helper
_privileged_netns_list: Callable[[], dict[int, int]] | None = None


def set_privileged_netns_list(read: Callable[[], dict[int, int]] | None) -> None:
    global _privileged_netns_list
    _privileged_netns_list = read


def _ns_inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def discover_namespaces(
    proc_root: str = "/proc", dirs: tuple[str, ...] = NETNS_DIRS
) -> dict[int, NamespaceInfo]:
    """inode → namespace, for every namespace a process is in or a mount pins.

    A bind-mounted path is preferred to a process's link (it outlives the process)."""
    found: dict[int, NamespaceInfo] = {}
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            ino = _ns_inode(path)
            if ino and ino not in found:
                found[ino] = NamespaceInfo(ino, path, name=name)
    privileged = _privileged_netns_list if proc_root == "/proc" else None
    inodes: dict[int, int] | None = None
    if privileged is not None:
        try:
            inodes = privileged()
        except OSError:
            inodes = {}
        pids = list(inodes)
    else:
        try:
            pids = [int(p) for p in os.listdir(proc_root) if p.isdigit()]
        except OSError:
            pids = []
    for pid in sorted(pids):
        path = f"{proc_root}/{pid}/ns/net"
        ino = inodes[pid] if inodes is not None else _ns_inode(path)
        if not ino:
            continue
        known = found.get(ino)
        if known is None:
            found[ino] = NamespaceInfo(ino, path, pid=pid)
        elif not known.pid:
            found[ino] = NamespaceInfo(ino, known.path, name=known.name, pid=pid)
    return found


class NamespaceTables:
    """The primary namespace's table source (what ``current()`` and ``resolve()`` answer
    from, as a plain :class:`SocketTableSource` does) plus one per other namespace.

    ``refresh()`` (the refresher thread) rediscovers namespaces, opens sources for new ones,
    closes those of vanished ones and refreshes them all; the capture thread reads
    :meth:`owner`, :meth:`table` and :meth:`source` of immutable snapshots swapped in whole.
    """

    def __init__(
        self,
        primary: SocketTableSource,
        *,
        discover: Callable[[], dict[int, NamespaceInfo]] = discover_namespaces,
        make_source: Callable[[NamespaceInfo], SocketTableSource] | None = None,
    ) -> None:
        self.primary = primary
        self.primary_inode = primary.netns_inode
        self._discover = discover
        # one walk over /proc a cycle (the primary's) serves every namespace: socket inodes
        # are unique across namespaces, and a holder may be in any of them
        self._make = make_source or (
            lambda info: SocketTableSource(netns_path=info.path, scanner=primary.scanner, shared_scan=True)
        )
        self._lock = threading.Lock()
        self._others: dict[int, SocketTableSource] = {}
        self.infos: dict[int, NamespaceInfo] = {}
        self.errors: dict[int, str] = {}  # inode → why its table could not be read
        self._owners: dict[str, tuple[int, ...]] = {}  # address → namespaces owning it
        self._used: dict[int, float] = {}  # namespace → when a segment was last looked up there
        self._addrs: dict[int, tuple[float, set[str]]] = {}  # namespace → (read when, addresses)
        self._rediscovered = float("-inf")

    # -- TableSource ---------------------------------------------------------------------

    def current(self) -> SocketTable:
        return self.primary.current()

    def refresh(self) -> SocketTable:
        table = self.primary.refresh()
        with self._lock:
            self._refresh_others()
        return table

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None:
        return self.primary.resolve(seg, prune=prune)

    def close(self) -> None:
        with self._lock:
            for src in self._others.values():
                src.close()
            self._others = {}
        self.primary.close()

    # -- the others ----------------------------------------------------------------------

    def _refresh_others(self) -> None:
        infos = self._discover()
        infos.pop(self.primary_inode, None)
        others = dict(self._others)
        errors: dict[int, str] = {}
        owners: dict[str, list[int]] = {}
        for ino in [i for i in others if i not in infos]:
            others.pop(ino).close()  # gone: its last process exited, its mount was removed
            self._used.pop(ino, None)
            self._addrs.pop(ino, None)
        now = time.monotonic()
        for ino, info in infos.items():
            src = others.get(ino)
            try:
                if src is None:
                    src = self._make(info)
                    if src.netns_inode != ino:
                        # /proc/PID/ns/net names the namespace PID is in when opened: it
                        # moved (`ip netns exec` joins one, then runs the program) since
                        # discovery, so this source reads another namespace
                        src.close()
                        raise OSError(errno.EAGAIN, f"pid {info.pid} left the namespace before it was opened")
                    others[ino] = src
                # Every namespace's addresses (cheap: one rtnetlink dump) say where segments
                # go; its sockets are dumped only while segments go there (a sock_diag dump
                # walks the kernel's hash tables, which all namespaces share).
                active = now - self._used.get(ino, float("-inf")) <= ACTIVE_FOR
                if active:
                    addrs = set(src.refresh().local_addrs)
                elif (
                    ino not in self._addrs
                    or now - self._addrs[ino][0] >= ADDRESSES_EVERY
                    or all(map(_loopback, self._addrs[ino][1]))  # being set up (podman: netns first)
                ):
                    addrs = src.addresses()
                else:
                    addrs = self._addrs[ino][1]
                self._addrs[ino] = (now, addrs)
            except OSError as exc:
                # vanished between discovery and reading, or not readable: say so, go on
                errors[ino] = f"{info.path}: {exc.strerror or exc}"
                continue
            for addr in addrs:
                if not _loopback(addr):
                    owners.setdefault(unmap(addr), []).append(ino)
        self._others = others
        self.infos = infos
        self.errors = errors
        self._owners = {a: tuple(v) for a, v in owners.items()}

    def owner(self, addr: str) -> int | None:
        """The namespace that owns ``addr`` (so receives what is sent to it): the primary
        for its own and loopback addresses, another when exactly one other owns it, None
        when none does (another host) or several do (ambiguous: not guessed)."""
        a = unmap(addr)
        if self.primary.current().is_local(a):
            return self.primary_inode
        owners = self._owners.get(a, ())
        if not owners and not _loopback(a) and self._rediscover():
            owners = self._owners.get(a, ())
        return owners[0] if len(owners) == 1 else None

    def _rediscover(self) -> bool:
        """Look for namespaces made since the last refresh and read their addresses (the
        capture thread, on an address nobody owns; at most every ``REDISCOVER_EVERY`` s, and
        never waiting for a refresh in progress). True when one was found."""
        now = time.monotonic()
        if now - self._rediscovered < REDISCOVER_EVERY or not self._lock.acquire(blocking=False):
            return False
        self._rediscovered = now
        try:
            infos = self._discover()
            infos.pop(self.primary_inode, None)
            new = {ino: info for ino, info in infos.items() if ino not in self._others}
            if not new:
                return False
            others, errors = dict(self._others), dict(self.errors)
            owners = {a: list(v) for a, v in self._owners.items()}
            for ino, info in new.items():
                try:
                    src = others[ino] = self._make(info)
                    addrs = src.addresses()
                except OSError as exc:
                    errors[ino] = f"{info.path}: {exc.strerror or exc}"
                    continue
                self._addrs[ino] = (now, addrs)
                for addr in addrs:
                    if not _loopback(addr):
                        owners.setdefault(unmap(addr), []).append(ino)
            self._others, self.errors = others, errors
            self.infos = {**self.infos, **new}
            self._owners = {a: tuple(v) for a, v in owners.items()}
            return True
        finally:
            self._lock.release()

    def owners(self, addr: str) -> tuple[int, ...]:
        """Every other namespace owning ``addr`` (several: the same private address twice)."""
        return self._owners.get(unmap(addr), ())

    def source(self, inode: int) -> SocketTableSource | None:
        """The source of namespace ``inode``; one not read since segments last went there
        is read now (the capture thread waits for that one dump, once)."""
        if inode == self.primary_inode:
            return self.primary
        src = self._others.get(inode)
        if src is None:
            return None
        now = time.monotonic()
        if now - self._used.get(inode, float("-inf")) > ACTIVE_FOR:
            with contextlib.suppress(OSError):  # gone meanwhile: its last table answers
                src.refresh()
        self._used[inode] = now
        return src

    def table(self, inode: int) -> SocketTable | None:
        src = self.source(inode)
        return src.current() if src is not None else None

    def namespace_tables(self) -> list[NamespaceTable]:
        """Each namespace's latest table, to show: the primary's, then every other one whose
        sockets were read (a namespace no segment went to is read when one goes there: until
        then its table is the last one read, ``taken_at`` says when)."""
        out = [NamespaceTable(self.primary_inode, self.primary.current())]
        infos = self.infos
        for ino, src in list(self._others.items()):
            table = src.current()
            if table.taken_at:
                info = infos.get(ino)
                out.append(NamespaceTable(ino, table, info.name if info is not None else ""))
        return out

    def __iter__(self) -> Iterator[SocketTableSource]:
        yield self.primary
        yield from list(self._others.values())

    def __len__(self) -> int:
        return 1 + len(self._others)


def _loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"
