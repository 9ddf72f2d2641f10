"""The privileged helper: a small process that keeps root's capabilities for conntui.

Forked by :func:`conntui.privsep.client.start_helper` before conntui sets anything up (one
thread, nothing open but the socket pair), it closes every other descriptor, points its
standard streams at ``/dev/null`` (keeping a copy of stderr for one last line), leaves the
terminal's process group and serves the requests of :mod:`.protocol`, one at a time:

* ``/proc/PID/fd`` listings and the socket inode behind given fds (numbers only: a link
  that is not a socket reads as 0, so no path of another process leaves the helper);
* whether ``/proc/PID/fd`` may be read;
* a route or sock_diag netlink socket made inside the network namespace whose file
  descriptor came with the request (``setns`` in a throw-away thread), handed back;
* a conntrack channel: a socket pair whose other end the helper serves, forwarding only
  checked conntrack GETs to its own ctnetlink socket and the kernel's answers back;
* the output of ``iptables-save``/``ip6tables-save -t mangle`` or ``nft -j list ruleset``
  (fixed command lines, run with ``nsenter --net`` in the namespace sent), bounded;
* the sk_lookup programs attached to a namespace (``bpf(2)``).

It never receives packet bytes. A request that does not parse is refused with an errno and
a reason; the helper goes on. It exits when the other end closes: quietly after a goodbye
(the session ended), else saying in one line that conntui ended abruptly (it crashed or was
killed, and cannot say so itself).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

from ..sockets.netlink import _setns
from . import protocol as P

PR_SET_NAME = 15
NS_GET_NSTYPE = 0xB703
CLONE_NEWNET = 0x40000000
NETLINK_NETFILTER = 12
HELPER_NAME = b"conntui-priv"
HELPER_NICE_BOOST = 10
_RULES_TIMEOUT = 3.0
_CT_TIMEOUT = 1.0
_SOCKET_INODE = "socket:["


def _socket_inode(target: str) -> int:
    if target.startswith(_SOCKET_INODE) and target.endswith("]"):
        try:
            return int(target[8:-1])
        except ValueError:
            return 0
    return 0


def _is_netns(fd: int) -> bool:
    import fcntl

    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def _in_netns(ns_fd: int | None, make: object) -> socket.socket:
    """``make()`` run in a thread that joined the namespace ``ns_fd`` (ours when None)."""
    assert callable(make)
    if ns_fd is None:
        return make()  # type: ignore[no-any-return]
    out: list[socket.socket] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            _setns(ns_fd, CLONE_NEWNET)
            out.append(make())
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=body, name="conntui-priv-ns", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


class _CtChannel:
    """One conntrack channel: the helper's end of the pair and its ctnetlink socket."""

    def __init__(self, end: socket.socket, nl: socket.socket) -> None:
        self.end = end
        self.nl = nl

    def serve(self) -> bool:
        """Forward one request; False when the other end has closed."""
        try:
            data = self.end.recv(P.MAX_REQUEST + 1)
        except OSError:
            return False
        if not data:
            return False
        try:
            P.check_conntrack(data)
        except P.Refused as exc:
            self._error(data, exc.errno)
            return True
        seq = P.NLMSG.unpack_from(data)[3]
        try:
            self.nl.send(data)
        except OSError as exc:
            self._error(data, exc.errno or errno.EIO)
            return True
        deadline = time.monotonic() + _CT_TIMEOUT
        for _ in range(64):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.nl], [], [], left)[0]:
                break
            try:
                reply = self.nl.recv(1 << 16)
            except OSError as exc:
                self._error(data, exc.errno or errno.EIO)
                return True
            with contextlib.suppress(OSError):
                self.end.send(reply)
            if len(reply) >= P.NLMSG.size and P.NLMSG.unpack_from(reply)[3] == seq:
                return True
        return True

    def _error(self, request: bytes, code: int) -> None:
        """An NLMSG_ERROR for ``request``'s sequence number, as the kernel would send it."""
        seq = P.NLMSG.unpack_from(request)[3] if len(request) >= P.NLMSG.size else 0
        body = struct.pack("=i", -code) + request[: P.NLMSG.size].ljust(P.NLMSG.size, b"\0")
        with contextlib.suppress(OSError):
            self.end.send(P.NLMSG.pack(P.NLMSG.size + len(body), 2, 0, seq, 0) + body)

    def close(self) -> None:
        self.end.close()
        self.nl.close()


class Helper:
    """The server: ``serve_forever`` until the unprivileged side goes away."""

    def __init__(self, sock: socket.socket, proc_root: str = "/proc") -> None:
        self.sock = sock
        self.proc_root = proc_root
        self.refused = 0
        self.bye = False  # the other side said goodbye (else its end closed: it died)
        self._channels: dict[int, _CtChannel] = {}

    # -- transport -------------------------------------------------------------------------

    def _receive(self) -> tuple[bytes, list[int], int] | None:
        """One datagram, the descriptors that came with it, and recvmsg's flags; None at EOF."""
        fds: list[int] = []
        data, anc, flags, _ = self.sock.recvmsg(P.MAX_REQUEST + 1, socket.CMSG_SPACE(4 * 4))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                n = len(payload) // 4
                fds.extend(struct.unpack(f"={n}i", payload[: 4 * n]))
        if not data and not fds and not flags:
            return None
        return data, fds, flags

    def _reply(self, status: int, body: bytes = b"", fd: int | None = None) -> None:
        chunks = P.reply_chunks(status, body)
        if fd is not None:
            self.sock.sendmsg([chunks[0]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("=i", fd))])
        else:
            self.sock.send(chunks[0])
        for c in chunks[1:]:
            self.sock.send(c)

    def _error(self, code: int, why: str) -> None:
        self._reply(code or errno.EIO, why.encode("utf-8", "replace")[:200])

    # -- the loop --------------------------------------------------------------------------

    def serve_forever(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, None)
        while True:
            for key, _ in sel.select():
                ch = key.data
                if ch is not None:
                    if not ch.serve():
                        sel.unregister(ch.end)
                        self._channels.pop(ch.end.fileno(), None)
                        ch.close()
                    continue
                if not self._serve_one(sel):
                    return

    def _serve_one(self, sel: selectors.BaseSelector) -> bool:
        try:
            got = self._receive()
        except OSError:
            return False
        if got is None:
            return False
        data, fds, flags = got
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > P.MAX_REQUEST:
                raise P.Refused(errno.E2BIG, "oversized request or too many descriptors")
            if len(fds) > 1:
                raise P.Refused(errno.EBADF, f"{len(fds)} descriptors sent, at most one")
            req = P.parse_request(data, bool(fds))
            if req.has_fd and fds and not _is_netns(fds[0]):
                raise P.Refused(errno.EBADF, "the descriptor sent is not a network namespace")
            self._dispatch(req, fds[0] if fds else None, sel)
        except P.Refused as exc:
            self.refused += 1
            self._error(exc.errno, str(exc))
        except OSError as exc:
            self._error(exc.errno or errno.EIO, exc.strerror or str(exc))
        except Exception as exc:  # a bug here must not leave the other side waiting
            self._error(errno.EIO, f"{type(exc).__name__}: {exc}")
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _dispatch(self, req: P.Request, ns_fd: int | None, sel: selectors.BaseSelector) -> None:
        op = req.op
        if op == P.OP_PING:
            self._reply(0, b"pong")
        elif op == P.OP_BYE:
            self.bye = True
            self._reply(0)
        elif op == P.OP_FDS:
            names = os.listdir(f"{self.proc_root}/{req.pid}/fd")
            fds = [int(n) for n in names if n.isdigit()]
            self._reply(0, struct.pack(f"={len(fds)}I", *fds))
        elif op == P.OP_FDS_MANY:
            self._reply(0, self._fds_many(req.fds))
        elif op == P.OP_INODES:
            self._reply(0, self._inodes(req.pid, req.fds))
        elif op == P.OP_ACCESS:
            os.close(os.open(f"{self.proc_root}/{req.pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            self._reply(0)
        elif op == P.OP_NETLINK:
            proto = req.protocol

            def make() -> socket.socket:
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
                try:
                    s.bind((0, 0))
                except BaseException:
                    s.close()
                    raise
                return s

            sock = _in_netns(ns_fd, make)
            try:
                self._reply(0, fd=sock.fileno())
            finally:
                sock.close()
        elif op == P.OP_CONNTRACK:
            self._conntrack(ns_fd, sel)
        elif op == P.OP_RULES:
            self._reply(0, self._rules(req.kind, ns_fd))
        elif op == P.OP_NETNS_LIST:
            self._reply(0, self._netns_list())
        elif op == P.OP_OPEN_NETNS:
            fd = os.open(f"{self.proc_root}/{req.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if not _is_netns(fd):
                    raise OSError(errno.EBADF, "not a network namespace")
                self._reply(0, fd=fd)
            finally:
                os.close(fd)
        elif op == P.OP_SK_LOOKUP:
            from ..sockets.bpf import read_sk_lookup

            found = read_sk_lookup(req.inode)
            text = found.error + "\0" + "\n".join(found.programs)
            self._reply(0, text.encode("utf-8", "replace")[: 1 << 16])

    def _fds_many(self, pids: tuple[int, ...]) -> bytes:
        """For each pid: (pid, count or -errno), then its fd numbers."""
        out = bytearray()
        for pid in pids:
            try:
                fds = [int(n) for n in os.listdir(f"{self.proc_root}/{pid}/fd") if n.isdigit()]
            except OSError as exc:
                out += struct.pack("=Ii", pid, -(exc.errno or errno.EIO))
                continue
            out += struct.pack(f"=Ii{len(fds)}I", pid, len(fds), *fds)
            if len(out) > P.MAX_REPLY:
                raise OSError(errno.E2BIG, "listings larger than a reply")
        return bytes(out)

    def _netns_list(self) -> bytes:
        out = bytearray()
        for name in os.listdir(self.proc_root):
            if not name.isdigit():
                continue
            try:
                ino = os.stat(f"{self.proc_root}/{name}/ns/net").st_ino
            except OSError:
                continue
            out += struct.pack("=II", int(name), ino & 0xFFFFFFFF)
            if len(out) >= P.MAX_REPLY:
                raise OSError(errno.E2BIG, "too many processes")
        return bytes(out)

    def _inodes(self, pid: int, fds: tuple[int, ...]) -> bytes:
        out: list[int] = []
        if len(fds) == 1:  # the common probe: one link, no directory to open
            try:
                out.append(_socket_inode(os.readlink(f"{self.proc_root}/{pid}/fd/{fds[0]}")))
            except OSError as exc:
                out.append(-(exc.errno or errno.EIO))
            return struct.pack("=q", out[0])
        try:
            dfd = os.open(f"{self.proc_root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return struct.pack(f"={len(fds)}q", *([-(exc.errno or errno.EIO)] * len(fds)))
        try:
            for fd in fds:
                try:
                    out.append(_socket_inode(os.readlink(str(fd), dir_fd=dfd)))
                except OSError as exc:
                    out.append(-(exc.errno or errno.EIO))
        finally:
            os.close(dfd)
        return struct.pack(f"={len(out)}q", *out)

    def _conntrack(self, ns_fd: int | None, sel: selectors.BaseSelector) -> None:
        if len(self._channels) >= P.MAX_CT_CHANNELS:
            raise P.Refused(errno.EMFILE, f"at most {P.MAX_CT_CHANNELS} conntrack channels")

        def make() -> socket.socket:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
            try:
                s.bind((0, 0))
            except BaseException:
                s.close()
                raise
            return s

        nl = _in_netns(ns_fd, make)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ch = _CtChannel(mine, nl)
        self._channels[mine.fileno()] = ch
        sel.register(mine, selectors.EVENT_READ, ch)
        try:
            self._reply(0, fd=theirs.fileno())
        finally:
            theirs.close()

    def _rules(self, kind: int, ns_fd: int | None) -> bytes:
        argv = list(P.RULES_ARGV[kind])
        if shutil.which(argv[0]) is None:
            raise OSError(errno.ENOENT, f"{argv[0]} is not installed")
        pass_fds: tuple[int, ...] = ()
        if ns_fd is not None:
            if shutil.which("nsenter") is None:
                raise OSError(errno.ENOENT, "nsenter is not installed")
            argv = ["nsenter", f"--net=/proc/self/fd/{ns_fd}", *argv]
            pass_fds = (ns_fd,)
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=_RULES_TIMEOUT, check=False, pass_fds=pass_fds
            )
        except subprocess.TimeoutExpired:
            raise OSError(errno.ETIMEDOUT, f"{argv[0]} timed out") from None
        if done.returncode != 0:
            text = done.stderr.decode("utf-8", "replace").strip()
            first = (text.splitlines() or [f"exit status {done.returncode}"])[0]
            raise OSError(errno.EIO, f"{' '.join(argv)}: {first}")
        if len(done.stdout) > P.MAX_REPLY:
            raise OSError(errno.E2BIG, f"{argv[0]} printed more than {P.MAX_REPLY} bytes")
        return done.stdout


def run_helper(sock: socket.socket, parent: int) -> None:
    """The helper's life after fork: nothing inherited but ``sock``; exits with the parent."""
    # Everything conntui had imported came along with fork(): keep the garbage collector off
    # it (it would walk, and copy page by page, the whole inherited heap at every full pass).
    gc.freeze()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(HELPER_NAME), 0, 0, 0)
    # Ctrl-C, a closed terminal, job control: conntui's to handle (it ends the session and
    # then closes the helper); the helper leaves the terminal's process group for that.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # Answers are on the capture thread's path (a demux miss waits for them), and the
    # helper runs only when asked: let the scheduler wake it ahead of busy neighbours.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, max(-20, os.getpriority(os.PRIO_PROCESS, 0) - HELPER_NICE_BOOST))
    # Everything inherited is closed but the socket and a copy of stderr (to say, if
    # conntui dies, that it did: conntui is gone and cannot). The standard streams point
    # at /dev/null: nothing the helper does reaches the TUI's screen.
    keep = sock.fileno()
    err = os.dup(2)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    for fd in _open_fds():
        if fd > 2 and fd not in (keep, err):
            with contextlib.suppress(OSError):
                os.close(fd)
    helper = Helper(sock)
    code = 0
    try:
        helper.serve_forever()
    except BaseException:  # the other side sees the socket close
        code = 1
    if not helper.bye:  # conntui's end closed without a goodbye: it died
        line = (
            f"conntui: the capture process (pid {parent}) ended abruptly; the session is over "
            "(the file, if any, holds every block written before)\n"
        )
        with contextlib.suppress(OSError):
            os.write(err, line.encode())
    os._exit(code)


def _open_fds() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))
