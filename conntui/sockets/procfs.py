"""Who holds a socket: every (pid, fd) whose ``/proc/PID/fd/N`` link reads ``socket:[INODE]``.

psutil.net_connections keeps one (pid, fd) per socket; a socket shared across fork() or
passed over a unix socket has several holders, and all of them are reported here. The proc
root is a parameter so the logic runs on a fake tree in tests.

``readlink`` of every fd is the cost (a few µs each, 20k sockets → tens of ms), so a scan
given the kernel's current set of socket inodes only reads the links that may have changed:
fds that are new in a process's listing, and fds whose socket is gone from the kernel table.
Anything left unexplained (a live inode with no holder found) falls back to reading every
link, as does a scan without that set.

Between scans, a socket the table lacks (a demux miss) is searched for where it most likely
is, cheapest first (:meth:`HolderScanner.find_holders`): the kernel gives a process the
lowest free fd number, so in a likely process (the listener's holder, say) only the numbers
that were free at the last scan, and those whose socket closed since, are read — a few
``readlink`` calls, where listing a 10,000-fd process costs milliseconds. A process created
since the last scan is read in full; listing every process is the last resort. Holders are
only ever what a link read says, never inferred from a prediction.

Process names are cached per (pid, start time): a reused pid gets its own name, never the
previous owner's. So is the container a holder runs in (``containers.py``: one read of
``/proc/PID/cgroup`` per process that holds a socket).
"""

from __future__ import annotations

import bisect
import itertools
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..model import Container, Holder
from .containers import ContainerLookup, shared_lookup

_SOCKET_PREFIX = "socket:["
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_COMM_LEN = 15  # TASK_COMM_LEN - 1: longer names are cut in comm and stat

Holders = tuple[Holder, ...]
_HolderKey = tuple[int, int, str, Container | None]  # (pid, fd, name, container)


def read_stat(proc_root: str, pid: int) -> tuple[str, int] | None:
    """``(comm, starttime)`` from ``/proc/PID/stat``; ``None`` if the process is gone."""
    got = read_stat_ppid(proc_root, pid)
    return None if got is None else (got[0], got[2])


def read_stat_ppid(proc_root: str, pid: int) -> tuple[str, int, int] | None:
    """``(comm, ppid, starttime)`` from ``/proc/PID/stat``; ``None`` if the process is gone."""
    try:
        fd = os.open(f"{proc_root}/{pid}/stat", _FILE_FLAGS)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # one read: the kernel formats the whole line at once
    except OSError:
        return None
    finally:
        os.close(fd)
    # comm may hold spaces and parentheses: it ends at the last ")".
    head, sep, rest = data.rpartition(b")")
    if not sep:
        return None
    comm = head.partition(b"(")[2].decode("utf-8", "replace")
    fields = rest.split()
    try:
        ppid = int(fields[1])  # field 4
        starttime = int(fields[19])  # field 22 of stat; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None
    return comm, ppid, starttime


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


class _Traced(Protocol):
    """What :class:`TracedContainers` needs of a tracer record (``tracer.TraceRecord``)."""

    @property
    def pid(self) -> int: ...

    @property
    def t(self) -> float: ...


def _boot_time(proc_root: str) -> float | None:
    """When the system booted (``btime`` of ``/proc/stat``, whole seconds)."""
    try:
        with open(f"{proc_root}/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class TracedContainers:
    """The container of a process the kernel tracer saw at a time (its connect(), accept(),
    bind() records name a pid, an fd and a comm, not a container).

    Looked up from ``/proc`` now, so only while the process still runs, and only if it is
    the same process: one started after the record (the pid reused) gets None, as does one
    that is gone. ``btime`` has whole seconds, so a pid reused within about a second of the
    record is not told apart. Cached per pid for records up to a second after the last look-up."""

    _SLACK = 1.0  # seconds: btime's precision

    def __init__(
        self,
        proc_root: str = "/proc",
        lookup: ContainerLookup | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.proc_root = proc_root
        self.lookup = lookup if lookup is not None else shared_lookup(proc_root)
        self.clock = clock
        self._clk = float(os.sysconf("SC_CLK_TCK"))
        self._boot: float | None = None
        # pid → (started, seen running at, container): valid for records between the two (the
        # process ran all that time, so the pid was its own)
        self._cache: dict[int, tuple[float, float, Container | None]] = {}

    def note(self, rec: _Traced) -> None:
        """Look up the container of a tracer record's process now (it most likely runs),
        so that :meth:`at` knows it after the process exits."""
        self.at(rec.pid, rec.t)

    def at(self, pid: int, t: float) -> Container | None:
        """The container of the process that was ``pid`` at ``t`` (epoch seconds), if it runs."""
        hit = self._cache.get(pid)
        if hit is not None and hit[0] <= t + self._SLACK and t <= hit[1] + self._SLACK:
            # a record up to a second after the process was seen running: the pid is its
            # own (a reuse within the second is not told apart, as with btime above); each
            # of a busy process's records once read /proc/PID/stat again
            return hit[2]
        if self._boot is None:
            self._boot = _boot_time(self.proc_root)
        stat = read_stat(self.proc_root, pid)
        if stat is None or self._boot is None:
            return None
        comm, starttime = stat
        started = self._boot + starttime / self._clk
        if started > t + self._SLACK:
            return None  # another process has the pid now
        found = self.lookup.of(pid, starttime, comm)
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[pid] = (started, self.clock(), found)
        return found


class ProcessNames:
    """pid → process name, cached per (pid, start time) so a reused pid is looked up anew."""

    def __init__(self, proc_root: str = "/proc", max_size: int = 8192) -> None:
        self.proc_root = proc_root
        self.max_size = max_size
        self._cache: dict[tuple[int, int, str], str] = {}

    def name(self, pid: int) -> str | None:
        """The name of the process ``pid`` now is; ``None`` if it is gone."""
        stat = read_stat(self.proc_root, pid)
        if stat is None:
            return None
        return self.name_for(pid, *stat)

    def name_for(self, pid: int, comm: str, starttime: int) -> str:
        """The name of (pid, starttime), whose stat said ``comm``."""
        key = (pid, starttime, comm)  # comm: an exec keeps the pid and start time
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


class FdDir:
    """One process's ``/proc/PID/fd``, open: its fd names, and the socket behind each."""

    __slots__ = ("dfd",)
    batch = 1  # links worth reading per call (a round trip through the helper reads many)

    def __init__(self, proc_root: str, pid: int) -> None:
        self.dfd = os.open(f"{proc_root}/{pid}/fd", _DIR_FLAGS)

    def names(self) -> list[str]:
        return os.listdir(self.dfd)

    def inode(self, name: str) -> int:
        """The socket inode ``name`` links to (0: not a socket); OSError when closed."""
        return _socket_inode(os.readlink(name, dir_fd=self.dfd))

    def inodes(self, names: Sequence[str]) -> list[int | None]:
        """:meth:`inode` of each name, None for those closed meanwhile."""
        readlink, dfd = os.readlink, self.dfd
        out: list[int | None] = []
        for name in names:
            try:
                out.append(_socket_inode(readlink(name, dir_fd=dfd)))
            except OSError:
                out.append(None)
        return out

    def prefetch(self, fds: Iterable[int]) -> None:
        """Read these links now, in one go, where that is cheaper than one at a time
        (through the helper); :meth:`inode` then answers from what was read."""

    def close(self) -> None:
        os.close(self.dfd)


class FdReader:
    """How ``/proc/PID/fd`` is read: directly here; through the privileged helper once
    conntui has dropped its capabilities (``conntui.privsep``: :func:`set_fd_reader`)."""

    def open(self, proc_root: str, pid: int) -> FdDir:
        """OSError (PermissionError: may not be read) as ``open(2)`` says."""
        return FdDir(proc_root, pid)

    def link_inode(self, proc_root: str, pid: int, fd: int) -> int:
        return _socket_inode(os.readlink(f"{proc_root}/{pid}/fd/{fd}"))

    def check(self, proc_root: str, pid: int) -> None:
        """Returns when ``/proc/PID/fd`` can be read; PermissionError when it may not."""
        os.close(os.open(f"{proc_root}/{pid}/fd", _DIR_FLAGS))

    def prefetch_listings(self, proc_root: str, pids: Sequence[int]) -> None:
        """A scan is about to list these processes' fds: list them all now where that is
        cheaper in one go (through the helper); the next :meth:`open` of each uses it."""


_DIRECT = FdReader()
_reader = _DIRECT


def set_fd_reader(reader: FdReader | None) -> None:
    """Read every ``/proc/PID/fd`` through ``reader`` from now on (None: directly)."""
    global _reader
    _reader = reader if reader is not None else _DIRECT


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
    got = _list_fds(proc_root, pid, previous, alive, previous_sockets)
    if got is None or got is _DENIED:
        return None
    if got is _UNCHANGED:
        assert previous is not None
        return previous, 0
    return got.fds, got.reads


@dataclass(slots=True)
class _Listing:
    """One process's fds as :func:`_list_fds` read them."""

    fds: dict[str, int]  # fd name → socket inode, 0 for other files
    order: list[str]  # the names in ``fds`` as the kernel listed them (ascending on /proc)
    reads: int  # links read
    removed: list[tuple[str, int]]  # (fd name, socket inode) no longer there
    added: list[tuple[str, int]]  # (fd name, socket inode) new


_UNCHANGED = _Listing({}, [], 0, [], [])
_DENIED = _Listing({}, [], 0, [], [])  # the fd directory exists but may not be read


def _list_fds(
    proc_root: str,
    pid: int,
    previous: dict[str, int] | None,
    alive: set[int] | frozenset[int] | None,
    previous_sockets: frozenset[int] = frozenset(),
    previous_order: list[str] | None = None,
    gone: set[int] | frozenset[int] | None = None,
) -> _Listing | None:
    """:func:`read_fds` with what changed: ``_UNCHANGED`` when nothing may have.

    Set operations (in C) find the names to read, so a process with thousands of fds and
    a few new ones costs its listing and those few links. ``previous_order`` (the last
    listing) makes the common "same names" case one list comparison; ``gone`` (a superset
    of the sockets closed since, small) spares checking every socket against ``alive``."""
    try:
        fdir = _reader.open(proc_root, pid)
    except PermissionError:
        return _DENIED
    except OSError:
        return None
    try:
        try:
            names = fdir.names()
        except OSError:
            return None
        removed: list[tuple[str, int]] = []
        added: list[tuple[str, int]] = []
        reads = 0
        vanished = False  # a listed fd closed before its link was read
        if previous is None or alive is None:
            out: dict[str, int] = {}
            for name, got in zip(names, fdir.inodes(names), strict=True):
                if got is None:
                    vanished = True
                    continue
                reads += 1
                inode = out[name] = got
                if inode:
                    added.append((name, inode))
            return _Listing(out, [n for n in names if n in out] if vanished else names, reads, removed, added)
        if previous_order is not None and names == previous_order:
            same_names = True
            name_set: set[str] | None = None
        else:
            name_set = set(names)
            same_names = len(names) == len(previous) and previous.keys() == name_set
        # sockets closed since: their fds may have been reused
        dead = previous_sockets.intersection(gone) if gone is not None else previous_sockets.difference(alive)
        if same_names and not dead:
            return _UNCHANGED
        if name_set is None:
            name_set = set(names)
        out = dict(previous)
        to_read: list[str] = []
        if not same_names:
            for name in previous.keys() - name_set:
                inode = out.pop(name)
                if inode:
                    removed.append((name, inode))
            to_read += name_set - previous.keys()
        if dead:
            to_read += [n for n, i in previous.items() if i in dead and n in name_set]
        for name, got in zip(to_read, fdir.inodes(to_read), strict=True):
            old = out.get(name)
            if got is None:  # closed meanwhile
                vanished = True
                if old is not None:
                    del out[name]
                    if old:
                        removed.append((name, old))
                continue
            reads += 1
            inode = got
            if inode != old:
                if old:
                    removed.append((name, old))
                if inode:
                    added.append((name, inode))
            out[name] = inode
        return _Listing(out, [n for n in names if n in out] if vanished else names, reads, removed, added)
    finally:
        fdir.close()


def _owner(proc_root: str, pid: int) -> int:
    try:
        return os.stat(f"{proc_root}/{pid}").st_uid
    except OSError:
        return -1


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
    order: list[str] = field(default_factory=list)  # fd names as listed (ascending on /proc)
    # Filled on first use by a targeted search (most processes are never searched):
    free: tuple[int, ...] = ()  # the lowest fd numbers below ``top`` that were free
    top: int = -1  # highest open fd + 1 (-1: not computed yet)
    uid: int = -1  # owner of /proc/PID (the process's euid); -1: not read yet
    comm: str = ""  # the comm the name was read with (an exec changes it)


_HOLES = 16  # free fd numbers remembered per process, lowest first
_PROBE_GAP = 3  # consecutive free numbers after which a process is taken to have no newer fd
_PROBE_MAX = 32  # links one process's probe reads at most
_PROBE_PIDS = 64  # processes beyond the hinted and recent ones that are probed at most
_RECENT = 16  # processes where searches found sockets lately, tried right after the hints
_HINT_READ_ALL = 1024  # a hinted process with at most this many fds has all its links read
_RECENT_READ_ALL = 2  # and so have the processes where searches found sockets last


def free_slots(
    fds: Collection[str], order: Sequence[str] = (), limit: int = _HOLES
) -> tuple[tuple[int, ...], int]:
    """The lowest ``limit`` fd numbers missing from ``fds`` below its highest one, and that
    highest + 1: where the kernel puts the next fds (it gives the lowest free number).

    ``order`` is how ``/proc/PID/fd`` listed them: in ascending order, which a large table
    is trusted to be in (a binary search costs microseconds where sorting 10,000 names
    costs 1.5 ms); the answer is checked, and a table in any other order is sorted. A wrong
    answer would only make a search read the wrong links first: holders come from what the
    links say.
    """
    n = len(order)
    if n > 256 and n == len(fds):
        try:
            top = int(order[-1]) + 1
            holes = top - n
            if holes == 0 and order[0] == "0":
                return (), top
            if holes > 0:

                def below(i: int) -> int:  # free numbers below order[i] (order ascending)
                    return int(order[i]) - i

                found = [k + bisect.bisect_right(range(n), k, key=below) for k in range(min(holes, limit))]
                if all(a < b for a, b in itertools.pairwise(found)) and not any(str(h) in fds for h in found):
                    return tuple(found), top
        except ValueError:
            pass
    nums = sorted(int(x) for x in fds if x.isdigit())
    if not nums:
        return (), 0
    free: list[int] = []
    expect = 0
    for v in nums:
        while expect < v and len(free) < limit:
            free.append(expect)
            expect += 1
        if len(free) >= limit:
            break
        expect = v + 1
    return tuple(free), nums[-1] + 1


class HolderScanner:
    """Scans ``/proc/*/fd`` for socket holders: incrementally, fully, or likely pids first.

    An incremental scan patches the previous inode → holders map with what changed, and
    returns that very map when nothing did, so a steady table costs one ``listdir`` per
    process and allocates next to nothing.
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        names: ProcessNames | None = None,
        containers: ContainerLookup | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.names = names if names is not None else ProcessNames(proc_root)
        if containers is None:
            containers = shared_lookup(proc_root) if proc_root == "/proc" else ContainerLookup(proc_root)
        self.containers = containers
        self.last_reads = 0  # links read by the last scan (for tests and stats)
        self.last_full = False  # whether the last scan read every link
        self.generation = 0  # scans so far
        self._links = 0  # fd links the last scan knew of
        self._verify_at = (0, 0)  # (pid, index in its listing) where re-reading resumes
        # inodes whose holders the last scan changed from the one before (None: any may have)
        self.last_changed: frozenset[int] | None = None
        self.last_find_deep = False  # whether the last find_holders read every link
        self.last_find_reads = 0  # links the last find_holders read
        self.last_find_listed = 0  # /proc/PID/fd directories it listed
        self.last_find_pass = ""  # the pass that found its first holder ("" if none): see find_holders
        self._pids: dict[int, _PidState] = {}
        # pid → uid of the processes whose /proc/PID/fd the last scan may not read (a socket
        # of theirs has no holder conntui can see: it is not the kernel's)
        self.denied: dict[int, int] = {}
        self._denied_cache: dict[int, tuple[float, tuple[int, ...]]] = {}
        self._by_inode: dict[int, Holders] = {}
        self._unheld: frozenset[int] = frozenset()  # live inodes a full scan found no holder for
        self._holder_cache: dict[_HolderKey, Holder] = {}
        # What searches learnt since the last scan (each scan starts them afresh; a search on
        # another thread may write to the old ones meanwhile, which only loses hints):
        self._opened: dict[int, dict[int, int]] = {}  # pid → {fd: inode} of links read
        self._read_inodes: dict[int, list[tuple[int, int]]] = {}  # the same, inode → (pid, fd)
        self._freed: dict[int, set[int]] = {}  # pid → fds whose socket was seen to close
        # (ns_last_pid, pids not in the scan, the scan's states): see new_pids()
        self._new: tuple[int | None, list[int], dict[int, _PidState]] | None = None
        self._recent: dict[int, None] = {}  # pids where searches found sockets, latest last

    @property
    def latest(self) -> dict[int, Holders]:
        """inode → holders as the last scan left them (read-only; every socket in /proc,
        whatever its network namespace)."""
        return self._by_inode

    def denied_for(self, uid: int) -> tuple[int, ...]:
        """Pids of ``uid`` whose ``/proc/PID/fd`` may not be read now (e.g. conntui runs
        without CAP_SYS_PTRACE): one of them may hold a socket no scan can name. Looked up at
        most twice a second per uid, for sockets with an inode and no holder."""
        now = time.monotonic()
        hit = self._denied_cache.get(uid)
        if hit is not None and now - hit[0] < 0.5:
            return hit[1]
        pids: list[int] = []
        for pid in list_pids(self.proc_root):
            if _owner(self.proc_root, pid) != uid:
                continue
            try:
                _reader.check(self.proc_root, pid)
            except PermissionError:
                pids.append(pid)
            except OSError:
                pass
        if len(self._denied_cache) > 64:
            self._denied_cache.clear()
        self._denied_cache[uid] = (now, tuple(pids))
        return tuple(pids)

    @property
    def unheld(self) -> frozenset[int]:
        """Live socket inodes the last full scan found no holder for."""
        return self._unheld

    @property
    def socket_pids(self) -> list[int]:
        """Pids that held sockets at the last scan."""
        return [pid for pid, st in self._pids.items() if st.sockets]

    def _holder(
        self, pid: int, fd: int, name: str, cache: dict[_HolderKey, Holder], container: Container | None
    ) -> Holder:
        """The holder (pid, fd), named ``name``, in ``container`` (``self.containers.of``:
        looked up once per process and call, not per fd)."""
        key = (pid, fd, name, container)
        holder = self._holder_cache.get(key)
        if holder is None:
            holder = Holder(pid, fd, name, container)
        cache[key] = holder
        return holder

    def scan(
        self,
        alive: set[int] | frozenset[int] | None = None,
        *,
        full: bool = False,
        recheck: Callable[[set[int]], set[int]] | None = None,
        verify: float = 0.0,
    ) -> dict[int, Holders]:
        """inode → every holder, sorted by (pid, fd), over all of ``/proc``.

        ``alive`` is the set of socket inodes the kernel reports now; with it (and not
        ``full``) only links that may have changed since the last scan are read. If a live
        inode is then left without a holder that an earlier full scan did not also miss,
        every link is read again; ``recheck`` first narrows those down to the inodes the
        kernel still has (a socket closed between the dump and the scan needs no search).

        A listing cannot show an fd closed and opened again under the same number while its
        old socket lives on elsewhere (a dup2(), a shared socket): ``verify`` is the share of
        all links to read again anyway, round-robin, so that a caller passing (time since
        the last scan) / T has every link re-read at least once every T seconds, a slice per
        scan, instead of all of them at once.
        Treat the result as read-only: it may be the same object as the last scan's.
        """
        self.generation += 1
        before = self._by_inode
        incremental = alive is not None and not full and bool(self._pids)
        result = self._scan(alive if incremental else None, verify if incremental else 0.0)
        if incremental and alive is not None:
            missing = set(alive.difference(result, self._unheld))
            if missing and recheck is not None:
                missing = recheck(missing)
            if missing:
                # Most often a file's fd number taken by a new socket (a listing shows the
                # same name, and files' links are not read again): read those first.
                result = self._reread_files()
                missing.difference_update(result)
            if missing:
                result = self._scan(None)
                incremental = False
        if not incremental and alive is not None:
            self._unheld = frozenset(alive.difference(result))
        elif alive is not None and self._unheld:
            self._unheld = self._unheld.intersection(alive)
        if self.last_changed is None and before:
            # A full read rebuilt the map: tell the caller what actually changed.
            self.last_changed = frozenset(
                k for k in before.keys() | result.keys() if before.get(k) != result.get(k)
            )
        self.last_full = not incremental
        return result

    def _scan(self, alive: set[int] | frozenset[int] | None, verify: float = 0.0) -> dict[int, Holders]:
        root = self.proc_root
        last_pid = self._last_pid()  # before listing: a process started after it changes it
        prev_states = self._pids if alive is not None else {}
        # links to read again whatever the listing says, from where the last scan stopped
        budget = int(self._links * min(verify, 1.0)) + 1 if verify > 0 else 0
        cursor_pid, cursor_at = self._verify_at
        links = 0
        # Every socket any process held at the last scan and the kernel no longer has: each
        # process's own share of it is then a small intersection, not a pass over its sockets.
        gone = self._by_inode.keys() - alive if alive is not None and prev_states else None
        states: dict[int, _PidState] = {}
        denied: dict[int, int] = {}  # pid → uid of processes whose fds may not be read
        removed: list[tuple[int, int, int]] = []  # (inode, pid, fd)
        added: list[tuple[int, Holder]] = []
        reads = 0
        pids = list_pids(root)
        _reader.prefetch_listings(root, pids)
        for pid in pids:
            stat = read_stat(root, pid)
            if stat is None:
                continue
            comm, starttime = stat
            prev = prev_states.get(pid)
            if prev is not None and (prev.starttime != starttime or prev.comm != comm):
                # pid reused, or the process exec'd another program (its name changed): the
                # old holders count as gone (below) and its sockets are named anew
                prev = None
            got = _list_fds(
                root,
                pid,
                prev.fds if prev is not None else None,
                alive,
                prev.sockets if prev is not None else frozenset(),
                prev.order if prev is not None else None,
                gone,
            )
            if got is _DENIED:
                denied[pid] = _owner(root, pid)
                continue
            if got is None:
                continue
            if got is _UNCHANGED and prev is not None:
                st = prev
            else:
                reads += got.reads
                fds = got.fds
                name = prev.name if prev is not None else self.names.name_for(pid, comm, starttime)
                if prev is not None and not got.removed:
                    sockets = (
                        prev.sockets.union(inode for _, inode in got.added) if got.added else prev.sockets
                    )
                else:
                    sockets = frozenset(filter(None, fds.values()))
                st = _PidState(starttime, name, fds, sockets, got.order, comm=comm)
                if alive is not None:
                    removed.extend((inode, pid, int(fd_name)) for fd_name, inode in got.removed)
                    if got.added:
                        ctr = self.containers.of(pid, starttime, comm)
                        for fd_name, inode in got.added:
                            holder = self._holder(pid, int(fd_name), name, self._holder_cache, ctr)
                            added.append((inode, holder))
            if budget > 0 and pid >= cursor_pid:
                start = cursor_at if pid == cursor_pid else 0
                st, n = self._verify(pid, st, st.order[start : start + budget], removed, added)
                reads += n
                budget -= n
                if budget <= 0:
                    self._verify_at = (pid, start + n)
            states[pid] = st
            links += len(st.fds)
        if budget > 0:
            self._verify_at = (0, 0)  # every process done: start over next time
        self._links = links
        self.last_reads = reads
        if alive is None:
            result = self._build(states)
            self.last_changed = None
        else:
            for pid, st in prev_states.items():
                now = states.get(pid)
                if now is None or now.starttime != st.starttime or now.comm != st.comm:
                    removed.extend((inode, pid, int(fd)) for fd, inode in st.fds.items() if inode)
            result = self._patch(removed, added)
        self._pids = states
        self.denied = denied
        self._by_inode = result
        self._opened, self._read_inodes, self._freed = {}, {}, {}
        self._new = (last_pid, [], states)
        return result

    def _verify(
        self,
        pid: int,
        st: _PidState,
        names: list[str],
        removed: list[tuple[int, int, int]],
        added: list[tuple[int, Holder]],
    ) -> tuple[_PidState, int]:
        """Read these links of ``pid`` again; the state patched where they differ from
        what it says (holder changes go to ``removed`` and ``added``), and how many were
        read."""
        if not names:
            return st, 0
        try:
            fdir = _reader.open(self.proc_root, pid)
        except OSError:
            return st, 0
        fds = st.fds
        changes: dict[str, int | None] = {}
        try:
            for name, inode in zip(names, fdir.inodes(names), strict=True):  # None: closed since the listing
                if inode != fds.get(name):
                    changes[name] = inode
        except OSError:
            return st, 0
        finally:
            fdir.close()
        if not changes:
            return st, len(names)
        fds = dict(fds)
        for fd_name, inode in changes.items():
            old = fds.get(fd_name)
            if old:
                removed.append((old, pid, int(fd_name)))
            if inode is None:
                fds.pop(fd_name, None)
                continue
            fds[fd_name] = inode
            if inode:
                ctr = self.containers.of(pid, st.starttime, st.comm)
                added.append((inode, self._holder(pid, int(fd_name), st.name, self._holder_cache, ctr)))
        order = [n for n in st.order if n in fds] if len(fds) != len(st.fds) else st.order
        sockets = frozenset(filter(None, fds.values()))
        return _PidState(st.starttime, st.name, fds, sockets, order, comm=st.comm), len(names)

    def _reread_files(self) -> dict[int, Holders]:
        """Read again every link that was not a socket at the last scan, and patch."""
        states = dict(self._pids)
        removed: list[tuple[int, int, int]] = []
        added: list[tuple[int, Holder]] = []
        reads = 0
        for pid, st in self._pids.items():
            files = [n for n, inode in st.fds.items() if not inode]
            new, n = self._verify(pid, st, files, removed, added)
            reads += n
            if new is not st:
                states[pid] = new
        changed = self.last_changed
        result = self._patch(removed, added)
        if changed is not None and self.last_changed is not None:
            self.last_changed = changed | self.last_changed
        if self._new is not None and self._new[2] is self._pids:
            self._new = (self._new[0], self._new[1], states)
        self._pids = states
        self._by_inode = result
        self.last_reads += reads
        return result

    def _build(self, states: dict[int, _PidState]) -> dict[int, Holders]:
        by_inode: dict[int, list[Holder]] = {}
        cache: dict[_HolderKey, Holder] = {}
        old = self._holder_cache
        for pid, st in states.items():
            if not st.sockets:
                continue
            ctr = self.containers.of(pid, st.starttime, st.comm)
            name = st.name
            for fd_name, inode in st.fds.items():
                if not inode:
                    continue
                # self._holder, inlined: a full scan makes one per socket fd (20,000 here)
                fd = int(fd_name)
                key = (pid, fd, name, ctr)
                holder = old.get(key)
                if holder is None:
                    holder = Holder(pid, fd, name, ctr)
                cache[key] = holder
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
            self.last_changed = frozenset()
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
        self.last_changed = frozenset(touched)
        return result

    def _last_pid(self) -> int | None:
        """The last pid the kernel handed out (``ns_last_pid``); ``None`` if unreadable."""
        try:
            fd = os.open(f"{self.proc_root}/sys/kernel/ns_last_pid", _FILE_FLAGS)
        except OSError:
            return None
        try:
            return int(os.read(fd, 32))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    def new_pids(self) -> list[int]:
        """Processes started since the last scan, newest first.

        Listing ``/proc`` costs a fraction of a millisecond; when ``ns_last_pid`` has not
        moved since the last listing, no process (or thread) was created, and the last
        answer stands.
        """
        states = self._pids
        last = self._last_pid()
        cached = self._new
        if cached is not None and last is not None and cached[0] == last and cached[2] is states:
            return cached[1]
        new = sorted((p for p in list_pids(self.proc_root) if p not in states), reverse=True)
        self._new = (last, new, states)
        return new

    def note_closed(self, holders: Iterable[Holder]) -> None:
        """These holders' socket is gone (so, most likely, their fds): the numbers the
        kernel hands out first again, so a search reads them first."""
        freed = self._freed
        for h in holders:
            fds = freed.get(h.pid)
            if fds is None:
                fds = freed[h.pid] = set()
            fds.add(h.fd)

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
        uids: Iterable[int] = (),
    ) -> dict[int, Holders]:
        """Holders of ``inodes`` (sockets the last scan did not see), cheapest places first;
        each pass runs only while some inode has no holder yet:

        1. ``probe``: links read since the last scan that showed one of them; then, in the
           hinted pids and those where searches found sockets lately, the fd numbers the
           kernel hands out first: those free at the last scan, lowest first, and those
           whose socket was seen to close (:meth:`note_closed`) — a few ``readlink`` calls;
           then ``hinted``: every link of a hinted process (or one of the last two where
           searches found sockets) with at most ``_HINT_READ_ALL`` fds (numbers reused
           since the last scan);
        2. ``new``: every fd of each process started since the last scan;
        3. ``probe``: as 1, in other processes holding sockets (owner in ``uids`` first);
        4. ``list``: every fd each process did not have at the last scan (one listing of
           each ``/proc/PID/fd``);
        5. ``deep`` (only if ``deep``): the fds that were not sockets at the last scan (a
           file's number taken by the socket), then every fd.

        Once an inode is found, the processes started since the last scan, and the parent
        of a holder that is one of them, are checked at the same fd: a socket shared across
        fork() lists all its holders. A socket passed to a process that existed at the
        last scan (SCM_RIGHTS) is seen by the next scan. Every holder is a link read now.
        """
        wanted = {i for i in inodes if i}
        self.last_find_deep = False
        self.last_find_reads = self.last_find_listed = 0
        self.last_find_pass = ""
        if not wanted:
            return {}
        f = _Find(wanted)
        states = self._pids
        try:
            self._confirm_read(f)
            hints = list(dict.fromkeys(hint_pids))
            first = [*hints, *(p for p in reversed(self._recent) if p not in hints)]
            for pid in first:
                if not f.missing:
                    break
                st = states.get(pid)
                if st is not None:
                    self._probe(f, pid, st)
            # A busy server reuses fd numbers at once (a connection closed, the next accept()
            # takes its number): neither free at the last scan nor new in a listing. Read every
            # link of a hinted process that is small enough (about 1 µs a link).
            lately = [p for p in reversed(self._recent) if p not in hints][:_RECENT_READ_ALL]
            for pid in (*hints, *lately):
                if not f.missing:
                    break
                st = states.get(pid)
                if st is not None and pid not in f.full and len(st.fds) <= _HINT_READ_ALL:
                    self._read_pid(f, pid, st, "all", "hinted")
            if f.missing:
                new = self.new_pids()
                hinted_new = [p for p in hints if p not in states]
                for pid in dict.fromkeys([*hinted_new, *new]):
                    if not f.missing:
                        break
                    self._read_pid(f, pid, None, "all", "new")
            if f.missing:
                done = set(first)
                rest = [p for p, st in states.items() if st.sockets and p not in done]
                rest.sort(reverse=True)
                uid_set = set(uids)
                if uid_set:
                    rest.sort(key=lambda p: self._uid(p, states[p]) not in uid_set)
                for pid in rest[:_PROBE_PIDS]:
                    if not f.missing:
                        break
                    self._probe(f, pid, states[pid])
            passes = [("list", "new"), *([("deep", "files"), ("deep", "all")] if deep else [])]
            for how, which in passes:
                if not f.missing:
                    break
                self.last_find_deep = how == "deep"
                for pid in self.scan_order(hints):
                    if not f.missing:
                        break
                    st = states.get(pid)
                    if pid not in f.full and (st is not None or which != "files"):
                        self._read_pid(f, pid, st, which, how)
            self._co_holders(f)
        finally:
            self.last_find_reads = f.reads
            self.last_find_listed = f.listed
        recent = self._recent
        for pid in f.at:
            recent.pop(pid, None)
            recent[pid] = None
        while len(recent) > _RECENT:
            del recent[next(iter(recent))]
        self.last_find_pass = f.how
        return {inode: _sorted(hs) for inode, hs in f.found.items()}

    def _uid(self, pid: int, st: _PidState) -> int:
        if st.uid == -1:
            try:
                st.uid = os.stat(f"{self.proc_root}/{pid}").st_uid
            except OSError:
                st.uid = -2
        return st.uid

    def _take(self, f: _Find, pid: int, hits: list[tuple[int, int]], how: str) -> None:
        """Record holders found in ``pid`` (named from its stat, read now)."""
        hits = [(fd, inode) for fd, inode in hits if (pid, fd) not in f.seen]
        if not hits:
            return
        stat = read_stat_ppid(self.proc_root, pid)
        if stat is None:
            return
        comm, ppid, starttime = stat
        name = self.names.name_for(pid, comm, starttime)
        f.ppids[pid] = ppid
        at = f.at.setdefault(pid, [])
        ctr = self.containers.of(pid, starttime, comm)
        for fd, inode in hits:
            f.seen.add((pid, fd))
            f.found.setdefault(inode, []).append(self._holder(pid, fd, name, f.cache, ctr))
            f.missing.discard(inode)
            at.append((fd, inode))
        if not f.how:
            f.how = how

    def _learn(self, pid: int, fd: int, inode: int) -> None:
        opened = self._opened.get(pid)
        if opened is None:
            opened = self._opened[pid] = {}
        opened[fd] = inode
        if inode:
            self._read_inodes.setdefault(inode, []).append((pid, fd))

    def _links_to(self, f: _Find, pid: int, fd: int, inode: int) -> bool:
        """Whether ``pid``'s ``fd`` is, right now, the socket ``inode`` (one link read)."""
        f.reads += 1
        try:
            return _reader.link_inode(self.proc_root, pid, fd) == inode
        except OSError:
            return False

    def _confirm_read(self, f: _Find) -> None:
        """Links read since the last scan that showed a wanted inode: read them again."""
        read_inodes = self._read_inodes
        for inode in list(f.missing):
            for pid, fd in read_inodes.get(inode, ()):
                if self._links_to(f, pid, fd, inode):
                    self._take(f, pid, [(fd, inode)], "probe")

    def _probe(self, f: _Find, pid: int, st: _PidState) -> None:
        """Read the fd numbers of ``pid`` the kernel most likely gave out since the last
        scan: those whose socket was seen to close, then those free at the scan (lowest
        first, then above the highest), each run stopped after a few free ones in a row."""
        if st.top < 0:
            st.free, st.top = free_slots(st.fds, st.order)
        opened = self._opened.get(pid, {})
        freed = self._freed.get(pid, ())
        try:
            fdir = _reader.open(self.proc_root, pid)
        except OSError:
            return
        hits: list[tuple[int, int]] = []
        left = set(f.missing)
        reads = 0
        if fdir.batch > 1:  # the likely numbers in one round trip, not one each
            likely = itertools.chain(
                sorted(freed), st.free[:_PROBE_MAX], range(st.top, st.top + _PROBE_GAP + len(left))
            )
            fdir.prefetch(
                list(itertools.islice((n for n in likely if n not in opened or n in freed), _PROBE_MAX))
            )
        try:
            regions: tuple[tuple[Iterable[int], int], ...] = (
                (sorted(freed), len(freed)),
                (st.free, _PROBE_GAP),
                (itertools.count(st.top), _PROBE_GAP),
            )
            for region, patience in regions:
                gap = 0
                for fd in region:
                    if fd in opened and fd not in freed:
                        continue  # read since the scan (and not wanted then or now)
                    if reads >= _PROBE_MAX or not left:
                        return
                    reads += 1
                    try:
                        inode = fdir.inode(str(fd))
                    except OSError:
                        gap += 1
                        if gap >= patience:
                            break
                        continue
                    gap = 0
                    self._learn(pid, fd, inode)
                    if inode in f.wanted:
                        hits.append((fd, inode))
                        left.discard(inode)
        finally:
            fdir.close()
            f.reads += reads
            self._take(f, pid, hits, "probe")

    def _read_pid(self, f: _Find, pid: int, st: _PidState | None, which: str, how: str) -> None:
        """Read links of ``pid``: ``which`` is ``new`` (those its listing shows and the last
        scan did not), ``files`` (those that were not sockets at the last scan: no listing)
        or ``all`` (new ones first, then files, then sockets). Stops once every inode has a
        holder."""
        try:
            fdir = _reader.open(self.proc_root, pid)
        except OSError:
            return
        hits: list[tuple[int, int]] = []
        try:
            known = st.fds if st is not None else None
            if which == "files" and known is not None:
                names = [n for n, inode in known.items() if not inode]
            else:
                try:
                    names = fdir.names()
                except OSError:
                    return
                f.listed += 1
                if known is not None:
                    if which == "new":
                        names = [n for n in names if n not in known]
                    else:
                        names.sort(key=lambda n: (n in known, known.get(n, 0) != 0, -int(n)))
            left = set(f.missing)
            wanted = f.wanted
            step = fdir.batch
            done = False
            for at in range(0, len(names), step):
                part = names[at : at + step]
                got = fdir.inodes(part) if step > 1 else [_inode_or_none(fdir, part[0])]
                for name, inode in zip(part, got, strict=True):
                    f.reads += 1
                    if inode is not None and inode in wanted:
                        hits.append((int(name), inode))
                        left.discard(inode)
                        if not left:
                            done = True  # every inode has a holder: stop reading links
                            break
                if done:
                    break
            else:
                if known is None or which == "all":
                    f.full.add(pid)
        finally:
            fdir.close()
            self._take(f, pid, hits, how)

    def _co_holders(self, f: _Find) -> None:
        """Other holders of what was found, where fork() puts them: the same fd in each
        process started since the last scan, and in the parent of a holder that is one."""
        if not f.at:
            return
        states = self._pids
        targets = list(dict.fromkeys(x for hits in f.at.values() for x in hits))
        candidates = [p for p in self.new_pids() if p not in f.at and p not in f.full]
        candidates += [pp for p, pp in list(f.ppids.items()) if p not in states and pp > 0 and pp not in f.at]
        for pid in dict.fromkeys(candidates):
            hits = []
            for fd, inode in targets:
                if self._links_to(f, pid, fd, inode):
                    hits.append((fd, inode))
            self._take(f, pid, hits, f.how)


def _inode_or_none(fdir: FdDir, name: str) -> int | None:
    try:
        return fdir.inode(name)
    except OSError:
        return None


@dataclass(slots=True)
class _Find:
    """One find_holders call's progress."""

    wanted: set[int]
    missing: set[int] = field(default_factory=set)
    found: dict[int, list[Holder]] = field(default_factory=dict)  # inode → holders
    at: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # pid → (fd, inode) found
    ppids: dict[int, int] = field(default_factory=dict)  # holder pid → its parent
    seen: set[tuple[int, int]] = field(default_factory=set)  # (pid, fd) recorded
    full: set[int] = field(default_factory=set)  # pids whose every link was read
    cache: dict[_HolderKey, Holder] = field(default_factory=dict)
    reads: int = 0
    listed: int = 0
    how: str = ""

    def __post_init__(self) -> None:
        self.missing = set(self.wanted)


def _sorted(holders: list[Holder]) -> tuple[Holder, ...]:
    if len(holders) > 1:
        holders.sort(key=_pid_fd)
    return tuple(holders)


def _pid_fd(h: Holder) -> tuple[int, int]:
    return (h.pid, h.fd)


def scan_holders(proc_root: str = "/proc") -> dict[int, Holders]:
    """inode → every (pid, fd, process) holding it, from one full ``/proc`` scan."""
    return HolderScanner(proc_root).scan()


def find_holders(
    inodes: set[int], hint_pids: Iterable[int] = (), proc_root: str = "/proc"
) -> dict[int, Holders]:
    """Holders of ``inodes`` only, likely pids first, stopping once all are found."""
    return HolderScanner(proc_root).find_holders(inodes, hint_pids)
