"""The unprivileged side's end of the helper: start it, ask it, notice when it dies.

:func:`start_helper` forks the helper (:mod:`.helper`) while conntui still has one thread
and its capabilities; :meth:`HelperClient.install` then routes the privileged reads of the
socket table through it (``procfs.set_fd_reader``, ``netlink.set_privileged_opener``,
``tproxy``/``bpf`` hooks), and :func:`~.sandbox.confine` drops everything else.

Requests are serialised by a lock (the capture thread's holder searches and the
refresher's scans share one helper); each is one round trip over a ``SOCK_SEQPACKET``
pair. When the helper is gone, every request raises :class:`HelperGone` (an ``OSError``:
callers already treat an unreadable ``/proc`` as such) and ``on_lost`` is called once,
with one line that says what happened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable

from . import protocol as P

__all__ = ["HelperClient", "HelperGone", "start_helper"]

SPIN = 0.0003  # seconds a request polls for its answer before it sleeps


class HelperGone(OSError):
    """The privileged helper has exited: nothing privileged can be done any more."""


class HelperClient:
    def __init__(self, sock: socket.socket, pid: int, timeout: float = 10.0) -> None:
        self.sock = sock
        # a helper that does not answer within this is taken for dead (HelperGone)
        sock.settimeout(timeout)
        self.pid = pid
        self.on_lost: Callable[[str], None] | None = None
        self.lost: str = ""
        self._lock = threading.Lock()
        self._closing = False
        self._watcher: threading.Thread | None = None
        self._status: int | None = None

    # -- round trips -----------------------------------------------------------------------

    def request(self, data: bytes, fd: int | None = None) -> tuple[bytes, int | None]:
        """Send one request; its body and the descriptor that came back (if any). OSError
        with the helper's errno when it refused or failed; HelperGone when it is gone."""
        with self._lock:
            if self.lost:
                raise HelperGone(errno.EPIPE, self.lost)
            try:
                if fd is not None:
                    rights = struct.pack("=i", fd)
                    self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
                else:
                    self.sock.send(data)
                first, anc = self._first_reply()
            except OSError as exc:
                self._gone(f"the privileged helper (pid {self.pid}) stopped answering: {exc.strerror or exc}")
                raise HelperGone(errno.EPIPE, self.lost) from None
            got_fd: int | None = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(payload) >= 4:
                    got_fd = struct.unpack_from("=i", payload)[0]
            if len(first) < P.REPLY_HEADER.size:
                self._gone(f"the privileged helper (pid {self.pid}) exited")
                raise HelperGone(errno.EPIPE, self.lost)
            status, length = P.REPLY_HEADER.unpack_from(first)
            if length > P.MAX_REPLY:
                self._gone(f"the privileged helper (pid {self.pid}) sent a reply of {length} bytes")
                raise HelperGone(errno.EPIPE, self.lost)
            parts = [first[P.REPLY_HEADER.size :]]
            have = len(parts[0])
            while have < length:
                try:
                    more = self.sock.recv(P.CHUNK)
                except OSError as exc:
                    self._gone(
                        f"the privileged helper (pid {self.pid}) stopped answering: {exc.strerror or exc}"
                    )
                    raise HelperGone(errno.EPIPE, self.lost) from None
                if not more:
                    self._gone(f"the privileged helper (pid {self.pid}) exited mid-reply")
                    raise HelperGone(errno.EPIPE, self.lost)
                parts.append(more)
                have += len(more)
        body = b"".join(parts)
        if status:
            if got_fd is not None:
                os.close(got_fd)
            raise OSError(status, body.decode("utf-8", "replace") or os.strerror(status))
        return body, got_fd

    def _first_reply(self) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        """The reply's first datagram. Polled for a moment before sleeping: the helper
        answers in tens of µs, and a process that sleeps for that long on a busy machine
        may wait a scheduler slice (milliseconds) to run again."""
        deadline = time.perf_counter() + SPIN
        while time.perf_counter() < deadline:
            try:
                first, anc, _flags, _ = self.sock.recvmsg(P.CHUNK, socket.CMSG_SPACE(4), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            return first, anc
        first, anc, _flags, _ = self.sock.recvmsg(P.CHUNK, socket.CMSG_SPACE(4))
        return first, anc

    def ping(self) -> bool:
        return self.request(P.encode(P.OP_PING))[0] == b"pong"

    def fds(self, pid: int) -> list[int]:
        """``/proc/PID/fd``'s numbers in the kernel's order (OSError: gone, unreadable)."""
        body, _ = self.request(P.fds_request(pid))
        return list(struct.unpack(f"={len(body) // 4}I", body))

    def fds_many(self, pids: list[int]) -> dict[int, list[int] | int]:
        """pid → its fd numbers (as :meth:`fds`), or an errno, for many processes."""
        out: dict[int, list[int] | int] = {}
        step = P.MAX_FDS_PER_REQUEST
        for i in range(0, len(pids), step):
            body, _ = self.request(P.fds_many_request(pids[i : i + step]))
            at = 0
            while at + 8 <= len(body):
                pid, n = struct.unpack_from("=Ii", body, at)
                at += 8
                if n < 0:
                    out[pid] = -n
                    continue
                out[pid] = list(struct.unpack_from(f"={n}I", body, at))
                at += 4 * n
        return out

    def inodes(self, pid: int, fds: list[int]) -> list[int]:
        """The socket inode behind each fd (0: not a socket, -errno: unreadable)."""
        out: list[int] = []
        step = P.MAX_FDS_PER_REQUEST
        for i in range(0, len(fds), step):
            part = fds[i : i + step]
            body, _ = self.request(P.inodes_request(pid, part))
            out.extend(struct.unpack(f"={len(body) // 8}q", body))
        return out

    def access(self, pid: int) -> None:
        """Returns when ``/proc/PID/fd`` can be read; OSError otherwise."""
        self.request(P.access_request(pid))

    def netns_list(self) -> dict[int, int]:
        """pid → the inode of its network namespace, for every process."""
        body, _ = self.request(P.encode(P.OP_NETNS_LIST))
        return dict(struct.iter_unpack("=II", body))

    def open_netns(self, pid: int) -> int:
        """A descriptor of ``/proc/PID/ns/net`` (the helper checked it is one)."""
        _, fd = self.request(P.open_netns_request(pid))
        if fd is None:
            raise OSError(errno.EBADMSG, "the helper sent no namespace")
        return fd

    def netlink(self, protocol: int, ns_fd: int) -> socket.socket:
        """A bound netlink socket made inside the namespace open on ``ns_fd``."""
        _, fd = self.request(P.netlink_request(protocol), ns_fd)
        if fd is None:
            raise OSError(errno.EBADMSG, "the helper sent no socket")
        return socket.socket(fileno=fd)

    def conntrack(self, ns_fd: int | None = None) -> socket.socket:
        """A socket that behaves as a ctnetlink socket for GETs (the helper forwards them)."""
        _, fd = self.request(P.encode(P.OP_CONNTRACK), ns_fd)
        if fd is None:
            raise OSError(errno.EBADMSG, "the helper sent no channel")
        return socket.socket(fileno=fd)

    def rules(self, kind: int, ns_fd: int | None = None) -> str:
        body, _ = self.request(P.rules_request(kind), ns_fd)
        return body.decode("utf-8", "replace")

    def sk_lookup(self, inode: int) -> tuple[str, tuple[str, ...]]:
        body, _ = self.request(P.sk_lookup_request(inode))
        error, _, progs = body.decode("utf-8", "replace").partition("\0")
        return error, tuple(p for p in progs.split("\n") if p)

    # -- life ------------------------------------------------------------------------------

    def _gone(self, why: str) -> None:
        if self.lost or self._closing:
            self.lost = self.lost or why
            return
        self.lost = why
        callback = self.on_lost
        if callback is not None:
            callback(why)

    def watch(self) -> None:
        """Notice the helper's death at once (a thread waiting for it), not only at the
        next request. Start it after :func:`~.sandbox.confine` (which wants one thread)."""
        if self._watcher is not None:
            return

        def wait() -> None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                return
            self._status = status
            if self._closing:
                return
            if os.WIFSIGNALED(status):
                how = f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
            else:
                how = f"exited with status {os.WEXITSTATUS(status)}"
            self._gone(f"the privileged helper (pid {self.pid}) {how}")

        self._watcher = threading.Thread(target=wait, name="conntui-priv-watch", daemon=True)
        self._watcher.start()

    def close(self, timeout: float = 2.0) -> None:
        """End the helper: close our end (it exits on EOF), reap it, kill it if it lingers."""
        if not self.lost:
            with contextlib.suppress(OSError):
                self.request(P.encode(P.OP_BYE))
        self._closing = True
        self.sock.close()
        if self._watcher is not None:
            self._watcher.join(timeout)
            if self._watcher.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
                self._watcher.join(timeout)
            return
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)


def start_helper() -> HelperClient:
    """Fork the helper. Call with one thread and the capabilities it is to keep."""
    from .helper import run_helper

    parent = os.getpid()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the helper
        try:
            mine.close()
            run_helper(theirs, parent)
        finally:
            os._exit(1)
    theirs.close()
    mine.set_inheritable(False)
    return HelperClient(mine, pid)
