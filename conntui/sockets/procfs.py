"""Who holds a socket: every (pid, fd) whose ``/proc/PID/fd/N`` link reads ``socket:[INODE]``.

psutil.net_connections keeps one (pid, fd) per socket; a socket shared across fork() or
passed over a unix socket has several holders, and all of them are reported here. The proc
root is a parameter so the logic runs on a fake tree in tests.

``readlink`` of every fd is the cost (a few µs each, 20k sockets → tens of ms), so a scan
given the kernel's current set of socket inodes only reads the links that may have changed:
fds that are new in a process's listing, and fds whose socket is gone from the kernel table.
Anything left unexplained (a live inode with no holder found) falls back to reading every
link, as does a scan without that set.

Process names are cached per (pid, start time): a reused pid gets its own name, never the
previous owner's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..model import Holder

_SOCKET_PREFIX = "socket:["
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_COMM_LEN = 15  # TASK_COMM_LEN - 1: longer names are cut in comm and stat

Holders = tuple[Holder, ...]


def read_stat(proc_root: str, pid: int) -> tuple[str, int] | None:
    """``(comm, starttime)`` from ``/proc/PID/stat``; ``None`` if the process is gone."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: it ends at the last ")".
    head, sep, rest = data.rpartition(b")")
    if not sep:
        return None
    comm = head.partition(b"(")[2].decode("utf-8", "replace")
    fields = rest.split()
    try:
        starttime = int(fields[19])  # field 22 of stat; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None
    return comm, starttime


_MAX_NAME = 256


def _full_name(proc_root: str, pid: int, comm: str) -> str:
    """``comm``, or the longer program name from cmdline when comm was cut at 15 bytes."""
    if len(comm.encode()) < _COMM_LEN:
        return comm
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
            argv0 = f.read(4096).split(b"\0", 1)[0]
    except OSError:
        return comm
    base = os.path.basename(argv0.decode("utf-8", "replace").split(" ", 1)[0])
    # any user sets argv[0]: a name, not a novel (the cap keeps rows and memory sane)
    return base[:_MAX_NAME] if base.startswith(comm) else comm


class ProcessNames:
    """pid → process name, cached per (pid, start time) so a reused pid is looked up anew."""

    def __init__(self, proc_root: str = "/proc", max_size: int = 8192) -> None:
        self.proc_root = proc_root
        self.max_size = max_size
        self._cache: dict[tuple[int, int], str] = {}

    def name(self, pid: int) -> str | None:
        """The name of the process ``pid`` now is; ``None`` if it is gone."""
        stat = read_stat(self.proc_root, pid)
        if stat is None:
            return None
        return self.name_for(pid, *stat)

    def name_for(self, pid: int, comm: str, starttime: int) -> str:
        """The name of (pid, starttime), whose stat said ``comm``."""
        key = (pid, starttime)
        name = self._cache.get(key)
        if name is None:
            name = _full_name(self.proc_root, pid, comm)
            if len(self._cache) >= self.max_size:
                self._cache.clear()
            self._cache[key] = name
        return name

    def __len__(self) -> int:
        return len(self._cache)


def list_pids(proc_root: str = "/proc") -> list[int]:
    """The process ids under ``proc_root`` (thread-group leaders: threads share their fds)."""
    try:
        names = os.listdir(proc_root)
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


def _socket_inode(target: str) -> int:
    """The inode in a ``socket:[N]`` link target; 0 for anything else."""
    if target.startswith(_SOCKET_PREFIX):
        try:
            return int(target[8:-1])
        except ValueError:
            return 0
    return 0


def read_fds(
    proc_root: str,
    pid: int,
    previous: dict[str, int] | None = None,
    alive: set[int] | frozenset[int] | None = None,
    previous_sockets: frozenset[int] = frozenset(),
) -> tuple[dict[str, int], int] | None:
    """fd name → socket inode (0: not a socket) for ``pid``, and how many links were read.

    With ``previous`` (this pid's last answer) and ``alive`` (the kernel's socket inodes),
    only links that may have changed are read: fds not listed before, and fds whose socket
    is gone from ``alive``. When nothing may have changed, ``previous`` itself is returned.
    ``None`` when the process is gone or its fds cannot be read.
    """
    try:
        dfd = os.open(f"{proc_root}/{pid}/fd", _DIR_FLAGS)
    except OSError:
        return None
    try:
        try:
            names = os.listdir(dfd)
        except OSError:
            return None
        if previous is not None and alive is not None:
            if len(names) == len(previous) and previous.keys() == set(names) and previous_sockets <= alive:
                return previous, 0
        else:
            previous = None
        readlink = os.readlink
        out: dict[str, int] = {}
        reads = 0
        for name in names:
            if previous is not None and alive is not None:
                inode = previous.get(name)
                if inode is not None and (inode == 0 or inode in alive):
                    out[name] = inode
                    continue
            try:
                target = readlink(name, dir_fd=dfd)
            except OSError:
                continue  # closed meanwhile
            reads += 1
            out[name] = _socket_inode(target)
        return out, reads
    finally:
        os.close(dfd)


def socket_fds(proc_root: str, pid: int) -> list[tuple[int, int]]:
    """``(fd, inode)`` for every socket ``pid`` holds; ``[]`` if gone or not readable."""
    got = read_fds(proc_root, pid)
    if got is None:
        return []
    return [(int(name), inode) for name, inode in got[0].items() if inode]


@dataclass(slots=True)
class _PidState:
    starttime: int
    name: str
    fds: dict[str, int]  # fd name → socket inode, 0 for other files
    sockets: frozenset[int]  # the socket inodes among them


class HolderScanner:
    """Scans ``/proc/*/fd`` for socket holders: incrementally, fully, or likely pids first.

    An incremental scan patches the previous inode → holders map with what changed, and
    returns that very map when nothing did, so a steady table costs one ``listdir`` per
    process and allocates next to nothing.
    """

    def __init__(self, proc_root: str = "/proc", names: ProcessNames | None = None) -> None:
        self.proc_root = proc_root
        self.names = names if names is not None else ProcessNames(proc_root)
        self.last_reads = 0  # links read by the last scan (for tests and stats)
        self.last_full = False  # whether the last scan read every link
        self.last_find_deep = False  # whether the last find_holders read every link
        self._pids: dict[int, _PidState] = {}
        self._by_inode: dict[int, Holders] = {}
        self._unheld: frozenset[int] = frozenset()  # live inodes a full scan found no holder for
        self._holder_cache: dict[tuple[int, int, str], Holder] = {}

    @property
    def unheld(self) -> frozenset[int]:
        """Live socket inodes the last full scan found no holder for."""
        return self._unheld

    @property
    def socket_pids(self) -> list[int]:
        """Pids that held sockets at the last scan."""
        return [pid for pid, st in self._pids.items() if st.sockets]

    def _holder(self, pid: int, fd: int, name: str, cache: dict[tuple[int, int, str], Holder]) -> Holder:
        key = (pid, fd, name)
        holder = self._holder_cache.get(key)
        if holder is None:
            holder = Holder(pid, fd, name)
        cache[key] = holder
        return holder

    def scan(
        self,
        alive: set[int] | frozenset[int] | None = None,
        *,
        full: bool = False,
        recheck: Callable[[set[int]], set[int]] | None = None,
    ) -> dict[int, Holders]:
        """inode → every holder, sorted by (pid, fd), over all of ``/proc``.

        ``alive`` is the set of socket inodes the kernel reports now; with it (and not
        ``full``) only links that may have changed since the last scan are read. If a live
        inode is then left without a holder that an earlier full scan did not also miss,
        every link is read again; ``recheck`` first narrows those down to the inodes the
        kernel still has (a socket closed between the dump and the scan needs no search).
        Treat the result as read-only: it may be the same object as the last scan's.
        """
        incremental = alive is not None and not full and bool(self._pids)
        result = self._scan(alive if incremental else None)
        if incremental and alive is not None:
            missing = set(alive.difference(result, self._unheld))
            if missing and recheck is not None:
                missing = recheck(missing)
            if missing:
                result = self._scan(None)
                incremental = False
        if not incremental and alive is not None:
            self._unheld = frozenset(alive.difference(result))
        self.last_full = not incremental
        return result

    def _scan(self, alive: set[int] | frozenset[int] | None) -> dict[int, Holders]:
        root = self.proc_root
        prev_states = self._pids if alive is not None else {}
        states: dict[int, _PidState] = {}
        removed: list[tuple[int, int, int]] = []  # (inode, pid, fd)
        added: list[tuple[int, Holder]] = []
        reads = 0
        for pid in list_pids(root):
            stat = read_stat(root, pid)
            if stat is None:
                continue
            comm, starttime = stat
            prev = prev_states.get(pid)
            if prev is not None and prev.starttime != starttime:
                prev = None  # pid reused: the old process counts as gone (below)
            got = read_fds(
                root,
                pid,
                prev.fds if prev is not None else None,
                alive,
                prev.sockets if prev is not None else frozenset(),
            )
            if got is None:
                continue
            fds, n = got
            reads += n
            if prev is not None and fds is prev.fds:
                states[pid] = prev
                continue
            name = prev.name if prev is not None else self.names.name_for(pid, comm, starttime)
            states[pid] = _PidState(starttime, name, fds, frozenset(i for i in fds.values() if i))
            if alive is None:
                continue
            old = prev.fds if prev is not None else {}
            for fd_name, inode in old.items():
                if inode and fds.get(fd_name) != inode:
                    removed.append((inode, pid, int(fd_name)))
            for fd_name, inode in fds.items():
                if inode and old.get(fd_name) != inode:
                    added.append((inode, self._holder(pid, int(fd_name), name, self._holder_cache)))
        self.last_reads = reads
        if alive is None:
            result = self._build(states)
        else:
            for pid, st in prev_states.items():
                now = states.get(pid)
                if now is None or now.starttime != st.starttime:
                    removed.extend((inode, pid, int(fd)) for fd, inode in st.fds.items() if inode)
            result = self._patch(removed, added)
        self._pids = states
        self._by_inode = result
        return result

    def _build(self, states: dict[int, _PidState]) -> dict[int, Holders]:
        by_inode: dict[int, list[Holder]] = {}
        cache: dict[tuple[int, int, str], Holder] = {}
        for pid, st in states.items():
            for fd_name, inode in st.fds.items():
                if not inode:
                    continue
                holder = self._holder(pid, int(fd_name), st.name, cache)
                lst = by_inode.get(inode)
                if lst is None:
                    by_inode[inode] = [holder]
                else:
                    lst.append(holder)
        # Keep Holder objects that still exist, so unchanged holder tuples compare by identity.
        self._holder_cache = cache
        return {inode: _sorted(hs) for inode, hs in by_inode.items()}

    def _patch(
        self, removed: list[tuple[int, int, int]], added: list[tuple[int, Holder]]
    ) -> dict[int, Holders]:
        if not removed and not added:
            return self._by_inode
        result = dict(self._by_inode)
        touched: dict[int, list[Holder]] = {}
        for inode, pid, fd in removed:
            lst = touched.get(inode)
            if lst is None:
                lst = touched[inode] = list(result.get(inode, ()))
            lst[:] = [h for h in lst if h.pid != pid or h.fd != fd]
        for inode, holder in added:
            lst = touched.get(inode)
            if lst is None:
                lst = touched[inode] = list(result.get(inode, ()))
            lst.append(holder)
        for inode, lst in touched.items():
            if lst:
                result[inode] = _sorted(lst)
            else:
                result.pop(inode, None)
        return result

    def scan_order(self, hint_pids: Iterable[int] = ()) -> list[int]:
        """Hinted pids, then pids that held sockets last time, then the rest newest first."""
        order: list[int] = []
        seen: set[int] = set()
        for pid in hint_pids:
            if pid not in seen:
                seen.add(pid)
                order.append(pid)
        known = [p for p in self.socket_pids if p not in seen]
        seen.update(known)
        rest = sorted((p for p in list_pids(self.proc_root) if p not in seen), reverse=True)
        # Sockets just created are most likely in a process that already has sockets, or in
        # a process just started (pids grow until they wrap).
        return [*order, *sorted(known, reverse=True), *rest]

    def find_holders(
        self,
        inodes: Iterable[int],
        hint_pids: Iterable[int] = (),
        *,
        deep: bool = True,
    ) -> dict[int, Holders]:
        """Holders of ``inodes``: hinted pids first, then pids that held sockets, then the
        rest newest first; stops once every inode has a holder (a second holder in a later
        pid may then be missed, and the next scan finds it).

        First pass: only the fds each process did not have at the last scan (cheap, and
        where a new socket almost always is). Second pass, if ``deep``: every fd.
        """
        wanted = {i for i in inodes if i}
        if not wanted:
            return {}
        order = self.scan_order(hint_pids)
        found: dict[int, list[Holder]] = {}
        seen: set[tuple[int, int]] = set()
        cache: dict[tuple[int, int, str], Holder] = {}
        missing = set(wanted)
        self.last_find_deep = False
        for new_only in (True, False) if deep else (True,):
            self.last_find_deep = not new_only
            for pid in order:
                hits = [
                    h for h in self._find_in_pid(pid, wanted, missing, new_only) if (pid, h[0]) not in seen
                ]
                if not hits:
                    continue
                stat = read_stat(self.proc_root, pid)
                if stat is None:
                    continue
                name = self.names.name_for(pid, *stat)
                for fd, inode in hits:
                    seen.add((pid, fd))
                    found.setdefault(inode, []).append(self._holder(pid, fd, name, cache))
                    missing.discard(inode)
                if not missing:
                    return {inode: _sorted(hs) for inode, hs in found.items()}
        return {inode: _sorted(hs) for inode, hs in found.items()}

    def _find_in_pid(
        self, pid: int, wanted: set[int], missing: set[int], new_only: bool
    ) -> list[tuple[int, int]]:
        try:
            dfd = os.open(f"{self.proc_root}/{pid}/fd", _DIR_FLAGS)
        except OSError:
            return []
        try:
            try:
                names = os.listdir(dfd)
            except OSError:
                return []
            prev = self._pids.get(pid)
            if prev is not None:
                known = prev.fds
                if new_only:
                    names = [n for n in names if n not in known]
                else:
                    names.sort(key=lambda n: (n in known, -int(n)))
            hits: list[tuple[int, int]] = []
            left = set(missing)
            for name in names:
                try:
                    inode = _socket_inode(os.readlink(name, dir_fd=dfd))
                except OSError:
                    continue
                if inode in wanted:
                    hits.append((int(name), inode))
                    left.discard(inode)
                    if not left:
                        break  # every inode has a holder: stop reading links
            return hits
        finally:
            os.close(dfd)


def _sorted(holders: list[Holder]) -> tuple[Holder, ...]:
    if len(holders) > 1:
        holders.sort(key=lambda h: (h.pid, h.fd))
    return tuple(holders)


def scan_holders(proc_root: str = "/proc") -> dict[int, Holders]:
    """inode → every (pid, fd, process) holding it, from one full ``/proc`` scan."""
    return HolderScanner(proc_root).scan()


def find_holders(
    inodes: set[int], hint_pids: Iterable[int] = (), proc_root: str = "/proc"
) -> dict[int, Holders]:
    """Holders of ``inodes`` only, likely pids first, stopping once all are found."""
    return HolderScanner(proc_root).find_holders(inodes, hint_pids)
