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

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..model import Segment, SocketTable, unmap
from .source import SocketTableSource

__all__ = ["NamespaceInfo", "NamespaceTables", "discover_namespaces"]

# Directories where runtimes bind-mount namespaces that may hold no process.
NETNS_DIRS = ("/run/netns", "/run/docker/netns", "/var/run/netns")


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """One network namespace: its inode, a path that opens it, and what names it."""

    inode: int
    path: str  # /run/netns/NAME or /proc/PID/ns/net
    name: str = ""  # the ``ip netns`` (or runtime) name, when bind-mounted
    pid: int = 0  # a process in it (the first found), 0 if none


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
    try:
        pids = [int(p) for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        pids = []
    for pid in sorted(pids):
        path = f"{proc_root}/{pid}/ns/net"
        ino = _ns_inode(path)
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
        self._make = make_source or (lambda info: SocketTableSource(netns_path=info.path))
        self._lock = threading.Lock()
        self._others: dict[int, SocketTableSource] = {}
        self.infos: dict[int, NamespaceInfo] = {}
        self.errors: dict[int, str] = {}  # inode → why its table could not be read
        self._owners: dict[str, tuple[int, ...]] = {}  # address → namespaces owning it

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
        for ino in [i for i in others if i not in infos]:
            others.pop(ino).close()  # gone: its last process exited, its mount was removed
        for ino, info in infos.items():
            src = others.get(ino)
            try:
                if src is None:
                    src = self._make(info)
                    try:
                        src.refresh()
                    except BaseException:
                        src.close()
                        raise
                    others[ino] = src
                else:
                    src.refresh()  # on failure its last table keeps answering
            except OSError as exc:
                # vanished between discovery and reading, or not readable: say so, go on
                errors[ino] = f"{info.path}: {exc.strerror or exc}"
        owners: dict[str, list[int]] = {}
        for ino, src in others.items():
            for addr in src.current().local_addrs:
                if not _loopback(addr):
                    owners.setdefault(addr, []).append(ino)
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
        return owners[0] if len(owners) == 1 else None

    def owners(self, addr: str) -> tuple[int, ...]:
        """Every other namespace owning ``addr`` (several: the same private address twice)."""
        return self._owners.get(unmap(addr), ())

    def source(self, inode: int) -> SocketTableSource | None:
        if inode == self.primary_inode:
            return self.primary
        return self._others.get(inode)

    def table(self, inode: int) -> SocketTable | None:
        src = self.source(inode)
        return src.current() if src is not None else None

    def __iter__(self) -> Iterator[SocketTableSource]:
        yield self.primary
        yield from list(self._others.values())

    def __len__(self) -> int:
        return 1 + len(self._others)


def _loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"
