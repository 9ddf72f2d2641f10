"""Just enough netlink, on the stdlib ``socket`` module, for sock_diag and rtnetlink.

One :class:`NetlinkChannel` is one netlink socket: it sends a request and reads every reply
(multi-part dumps, ``NLMSG_DONE``, ``NLMSG_ERROR``) into a reusable buffer. A channel opened
with ``netns_path`` lives in that network namespace for good: the socket is created by a
short-lived thread that joins the namespace first, so the calling thread never changes
namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH

CLONE_NEWNET = 0x40000000

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_LEN_TYPE_SEQ = struct.Struct("=IH2xI")  # the header's len, type and seq
NLA_HDR = struct.Struct("=HH")  # len, type
_ERRNO = struct.Struct("=i")

T = TypeVar("T")


class NetlinkError(OSError):
    """An ``NLMSG_ERROR`` answer (``errno`` set), or a malformed reply."""


def _setns(fd: int, nstype: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, nstype)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def join_netns(netns_path: str) -> None:
    """Move the calling thread (and threads and programs it starts later) into the network
    namespace at ``netns_path``."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def run_in_netns(netns_path: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn`` in the network namespace ``netns_path`` (a ``/proc/PID/ns/net`` or
    ``/run/netns/NAME`` file) and return its result; ``None`` means the current namespace.

    The namespace is joined by a throw-away thread (``setns`` changes only the calling
    thread), so sockets ``fn`` creates stay in that namespace and nothing else moves.
    """
    if netns_path is None:
        return fn()
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            join_netns(netns_path)
            result.append(fn())
        except BaseException as exc:  # handed back to the caller below
            failure.append(exc)

    thread = threading.Thread(target=body, name="conntui-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


# Set by conntui.privsep once capabilities are gone: opens what needs them (a socket in
# another namespace, a conntrack socket) through the privileged helper.
_privileged_opener: Callable[[int, str | None], socket.socket | None] | None = None


def set_privileged_opener(opener: Callable[[int, str | None], socket.socket | None] | None) -> None:
    """Route :func:`open_netlink` through ``opener`` (it returns None for what conntui may
    open itself); None: open everything here."""
    global _privileged_opener
    _privileged_opener = opener


# Set by conntui.privsep: opens a namespace file this process may not (another process's
# /proc/PID/ns/net, once capabilities are gone)
_privileged_netns_opener: Callable[[str], int] | None = None


def set_privileged_netns_opener(opener: Callable[[str], int] | None) -> None:
    global _privileged_netns_opener
    _privileged_netns_opener = opener


def open_netns(netns_path: str) -> int:
    """A descriptor of the namespace file at ``netns_path`` (O_RDONLY, close-on-exec)."""
    try:
        return os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        opener = _privileged_netns_opener
        if opener is None:
            raise
        return opener(netns_path)


def open_netlink(protocol: int, netns_path: str | None = None) -> socket.socket:
    """A bound netlink socket of ``protocol``, optionally inside another network namespace."""
    opener = _privileged_opener
    if opener is not None:
        sock = opener(protocol, netns_path)
        if sock is not None:
            return sock

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    return run_in_netns(netns_path, make)


def iter_attrs(data: bytes, offset: int, end: int) -> list[tuple[int, bytes]]:
    """The ``(type, payload)`` netlink attributes in ``data[offset:end]`` (4-byte aligned)."""
    attrs: list[tuple[int, bytes]] = []
    while offset + 4 <= end:
        length, kind = NLA_HDR.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            break
        attrs.append((kind & 0x3FFF, data[offset + 4 : offset + length]))  # drop NESTED/BYTEORDER
        offset += (length + 3) & ~3
    return attrs


def split_messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """``(type, flags, seq, payload)`` of every netlink message in one datagram."""
    out: list[tuple[int, int, int, bytes]] = []
    offset, end = 0, len(data)
    while offset + NLMSG_HDR.size <= end:
        length, kind, flags, seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size or offset + length > end:
            raise NetlinkError(errno.EBADMSG, "malformed netlink message")
        out.append((kind, flags, seq, data[offset + NLMSG_HDR.size : offset + length]))
        offset += (length + 3) & ~3
    return out


def error_code(payload: bytes) -> int:
    """The positive errno of an ``NLMSG_ERROR`` payload (0: an acknowledgement)."""
    code: int = _ERRNO.unpack_from(payload, 0)[0]
    return -code


class NetlinkChannel:
    """One netlink socket: ``dump`` (multi-part) and ``query`` (one answer) requests.

    Not thread-safe: give each thread its own channel. After any exception mid-request the
    socket is reopened, so a half-read dump never answers the next request. ``sock`` lets
    tests hand in a fake with ``send`` and ``recv_into``.
    """

    def __init__(
        self,
        protocol: int,
        netns_path: str | None = None,
        bufsize: int = 1 << 20,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        self.protocol = protocol
        self.netns_path = netns_path
        self._buf = bytearray(bufsize)
        self._view = memoryview(self._buf)
        self._seq = 0
        self._sock: socket.socket | None = sock if sock is not None else open_netlink(protocol, netns_path)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NetlinkChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = open_netlink(self.protocol, self.netns_path)
        return self._sock

    def _send(self, msg_type: int, flags: int, payload: bytes) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        header = NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags | NLM_F_REQUEST, self._seq, 0)
        self._socket().send(header + payload)
        return self._seq

    def _recv(self) -> bytes:
        n = self._socket().recv_into(self._buf, 0, socket.MSG_TRUNC)
        if n > len(self._buf):
            raise NetlinkError(errno.EMSGSIZE, f"netlink message of {n} bytes truncated")
        return bytes(self._view[:n])

    def dump(self, msg_type: int, payload: bytes, want_type: int) -> list[bytes]:
        """Send a dump request; return the payload of every ``want_type`` reply, in order."""
        try:
            return self._dump(msg_type, payload, want_type)
        except BaseException:
            self.close()
            raise

    def _dump(self, msg_type: int, payload: bytes, want_type: int) -> list[bytes]:
        seq = self._send(msg_type, NLM_F_DUMP, payload)
        out: list[bytes] = []
        append = out.append
        unpack_hdr = _LEN_TYPE_SEQ.unpack_from
        while True:
            # Hot loop (one pass per socket in the table): split_messages inlined, and the
            # usual message (an answer to this request, well formed) tested at once.
            data = self._recv()
            offset, end = 0, len(data)
            while offset + 16 <= end:
                length, kind, mseq = unpack_hdr(data, offset)
                stop = offset + length
                if kind == want_type and mseq == seq and length >= 16 and stop <= end:
                    append(data[offset + 16 : stop])
                    offset = (stop + 3) & ~3
                    continue
                if length < 16 or stop > end:
                    raise NetlinkError(errno.EBADMSG, "malformed netlink message")
                if mseq == seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        code = error_code(data[offset + 16 : stop])
                        if code:
                            raise NetlinkError(code, os.strerror(code))
                offset = (stop + 3) & ~3

    def query(self, msg_type: int, payload: bytes, want_type: int) -> list[bytes]:
        """Send a non-dump request; its answer, or ``[]`` when the kernel says ENOENT (no such
        socket) or ESTALE (a socket with that tuple, but not the cookie asked for)."""
        try:
            return self._query(msg_type, payload, want_type)
        except BaseException:
            self.close()
            raise

    def _query(self, msg_type: int, payload: bytes, want_type: int) -> list[bytes]:
        seq = self._send(msg_type, 0, payload)
        out: list[bytes] = []
        while True:
            finished = False
            for kind, flags, mseq, body in split_messages(self._recv()):
                if mseq != seq:
                    continue  # a stale answer to an earlier request
                if kind == want_type:
                    out.append(body)
                    finished = not flags & NLM_F_MULTI
                elif kind == NLMSG_DONE:
                    finished = True
                elif kind == NLMSG_ERROR:
                    code = error_code(body)
                    if code in (0, errno.ENOENT, errno.ESTALE):  # ESTALE: the cookie differs
                        return out
                    raise NetlinkError(code, os.strerror(code))
            if finished:
                return out
