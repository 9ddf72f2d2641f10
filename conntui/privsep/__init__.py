"""Privilege separation: conntui parses the network with no privileges; a small helper
keeps what the socket table needs.

``start()`` forks the helper (:mod:`.helper`) first thing, while conntui has one thread;
conntui then sets up as root (packet ring, netlink sockets, the tracer's bpftrace, the
``-w`` file, the spool); ``Privsep.drop()`` routes the privileged reads through the
helper and confines this process for good (:mod:`.sandbox`: no capabilities,
no_new_privs, seccomp, Landlock). See SECURITY.md, "Privilege separation".
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence

from . import protocol as P
from .client import HelperClient, HelperGone, start_helper
from .sandbox import Confinement, confine

__all__ = ["HelperGone", "Privsep", "start"]

# A test hook, honoured only when set to this exact value: once confined, conntui tries to
# open an INET socket and to run a program, and prints what the kernel said (test_privsep).
PROBE_ENV = "CONNTUI_TEST_PROBE_SANDBOX"
PROBE_VALUE = "report-to-stderr"
# listings read ahead for a scan are used for this long (the scan reads them right away)
LISTING_TTL = 0.5
_PROC_NETNS = re.compile(r"/proc/([1-9][0-9]{0,6})/ns/net")


class _HelperFdDir:
    """``procfs.FdDir`` read through the helper: one round trip lists, one reads a batch."""

    batch = 256

    def __init__(self, client: HelperClient, pid: int, listing: list[int] | int | None = None) -> None:
        self.client = client
        self.pid = pid
        self._read: dict[int, int] = {}  # fd → what prefetch() read (inode, or -errno)
        self._listing = listing  # what prefetch_listings() read: fds, or an errno

    def names(self) -> list[str]:
        listing, self._listing = self._listing, None
        if isinstance(listing, int):
            raise OSError(listing, os.strerror(listing))
        if listing is None:
            listing = self.client.fds(self.pid)
        return [str(fd) for fd in listing]

    def prefetch(self, fds: Iterable[int]) -> None:
        wanted = list(dict.fromkeys(fds))
        if wanted:
            # the helper gone (its watcher ends the session): nothing read ahead
            with contextlib.suppress(OSError):
                self._read.update(zip(wanted, self.client.inodes(self.pid, wanted), strict=True))

    def inode(self, name: str) -> int:
        fd = int(name)
        got = self._read.pop(fd, None)
        if got is None:
            got = self.client.inodes(self.pid, [fd])[0]
        if got < 0:
            raise OSError(-got, os.strerror(-got))
        return got

    def inodes(self, names: Sequence[str]) -> list[int | None]:
        """As ``procfs.FdDir.inodes``: never raises (an unanswered link reads as closed)."""
        if not names:
            return []
        try:
            got = self.client.inodes(self.pid, [int(n) for n in names])
        except OSError:  # the helper is gone (its watcher ends the session)
            return [None] * len(names)
        return [i if i >= 0 else None for i in got]

    def close(self) -> None:
        pass


def _fd_reader(client: HelperClient) -> object:
    from ..sockets import procfs

    class HelperFdReader(procfs.FdReader):
        """``/proc/PID/fd`` through the helper (the fake trees of tests: directly)."""

        def __init__(self) -> None:
            self._listings: dict[int, list[int] | int] = {}
            self._listed_at = 0.0

        def open(self, proc_root: str, pid: int) -> procfs.FdDir:
            if proc_root != "/proc":
                return super().open(proc_root, pid)
            listing = self._listings.pop(pid, None)
            if listing is not None and time.monotonic() - self._listed_at > LISTING_TTL:
                listing = None  # a scan long over: its pid may have been reused since
            if listing == errno.EACCES or listing == errno.EPERM:
                raise PermissionError(listing, os.strerror(listing))
            return _HelperFdDir(client, pid, listing)  # type: ignore[return-value]

        def prefetch_listings(self, proc_root: str, pids: Sequence[int]) -> None:
            if proc_root != "/proc":
                return
            try:
                self._listed_at = time.monotonic()
                self._listings = client.fds_many(list(pids))
            except OSError:
                self._listings = {}  # one at a time, then

        def link_inode(self, proc_root: str, pid: int, fd: int) -> int:
            if proc_root != "/proc":
                return super().link_inode(proc_root, pid, fd)
            got = client.inodes(pid, [fd])[0]
            if got < 0:
                raise OSError(-got, os.strerror(-got))
            return got

        def check(self, proc_root: str, pid: int) -> None:
            if proc_root != "/proc":
                super().check(proc_root, pid)
                return
            client.access(pid)

    return HelperFdReader()


def _ns_fd(netns_path: str) -> int:
    from ..sockets.netlink import open_netns

    return open_netns(netns_path)


class Privsep:
    """The helper, and the hooks that route privileged reads through it."""

    def __init__(self, client: HelperClient) -> None:
        self.client = client
        self.confinement: Confinement | None = None

    @property
    def helper_pid(self) -> int:
        return self.client.pid

    def install(self) -> None:
        """Route every privileged read of the socket table through the helper."""
        from ..sockets import bpf, namespaces, netlink, procfs, tproxy
        from ..sockets.conntrack import NETLINK_NETFILTER

        client = self.client
        procfs.set_fd_reader(_fd_reader(client))  # type: ignore[arg-type]

        def opener(protocol: int, netns_path: str | None) -> object:
            if protocol == NETLINK_NETFILTER:
                if netns_path is None:
                    return client.conntrack()
                fd = _ns_fd(netns_path)
                try:
                    return client.conntrack(fd)
                finally:
                    os.close(fd)
            if netns_path is None:
                return None  # route and sock_diag need no privilege in our own namespace
            fd = _ns_fd(netns_path)
            try:
                return client.netlink(protocol, fd)
            finally:
                os.close(fd)

        netlink.set_privileged_opener(opener)  # type: ignore[arg-type]

        def open_netns(path: str) -> int:
            m = _PROC_NETNS.fullmatch(path)
            if m is None:
                raise PermissionError(errno.EACCES, f"{path}: not readable without privileges")
            return client.open_netns(int(m.group(1)))

        netlink.set_privileged_netns_opener(open_netns)
        namespaces.set_privileged_netns_list(client.netns_list)

        kinds = {argv: kind for kind, argv in P.RULES_ARGV.items()}

        def run(argv: list[str], netns_path: str | None) -> str:
            kind = kinds.get(tuple(argv))
            if kind is None:
                raise OSError(f"{argv[0]} may not be run by conntui once it has dropped its privileges")
            if netns_path is None:
                return client.rules(kind)
            fd = _ns_fd(netns_path)
            try:
                return client.rules(kind, fd)
            finally:
                os.close(fd)

        tproxy.set_privileged_run(run)

        def sk_lookup(inode: int) -> object:
            from ..model import SkLookup

            try:
                error, progs = client.sk_lookup(inode)
            except OSError as exc:
                return SkLookup((), f"BPF links could not be listed: {exc.strerror or exc}")
            return SkLookup(progs, error)

        bpf.set_privileged_read(sk_lookup)  # type: ignore[arg-type]

    @staticmethod
    def uninstall() -> None:
        from ..sockets import bpf, namespaces, netlink, procfs, tproxy

        procfs.set_fd_reader(None)
        netlink.set_privileged_opener(None)
        netlink.set_privileged_netns_opener(None)
        namespaces.set_privileged_netns_list(None)
        tproxy.set_privileged_run(None)
        bpf.set_privileged_read(None)

    def drop(self, writable: Iterable[str], on_lost: Callable[[str], None] | None = None) -> Confinement:
        """Install the hooks, then confine this process (one thread, for good)."""
        self.install()
        self.confinement = confine(writable)
        self.client.on_lost = on_lost
        self.client.watch()
        if os.environ.get(PROBE_ENV) == PROBE_VALUE:
            probe_sandbox()
        return self.confinement

    def close(self) -> None:
        self.client.close()


def start() -> Privsep:
    """Fork the helper (call first, with one thread)."""
    return Privsep(start_helper())


def probe_sandbox() -> None:
    """The test hook: try what the sandbox forbids, and say on stderr what the kernel said."""
    import socket
    import subprocess
    import sys

    for family, name in ((socket.AF_INET, "AF_INET"), (socket.AF_INET6, "AF_INET6")):
        try:
            socket.socket(family, socket.SOCK_STREAM).close()
            sys.stderr.write(f"conntui-probe: socket {name}: allowed\n")
        except OSError as exc:
            sys.stderr.write(f"conntui-probe: socket {name}: {exc.strerror}\n")
    try:
        subprocess.run(["/bin/true"], check=False)
        sys.stderr.write("conntui-probe: exec: allowed\n")
    except OSError as exc:
        sys.stderr.write(f"conntui-probe: exec: {exc.strerror}\n")
    try:
        with open("/tmp/conntui-probe-write", "w") as f:
            f.write("x")
        sys.stderr.write("conntui-probe: write: allowed\n")
    except OSError as exc:
        sys.stderr.write(f"conntui-probe: write: {exc.strerror}\n")
    sys.stderr.flush()
