"""The requests the unprivileged side may send the helper, and how they are checked.

Every request is one ``SOCK_SEQPACKET`` datagram: a 4-byte header ``op, 0`` (two ``u16``)
and a body of fixed layout, at most :data:`MAX_REQUEST` bytes, with at most one file
descriptor (``SCM_RIGHTS``) where the operation takes one (a network namespace). Nothing
else is accepted: :func:`parse_request` refuses an unknown op, a wrong length, a value out
of range, a missing or unexpected descriptor, with :class:`Refused` (its ``errno`` says which).
The helper never parses packet bytes; the one netlink message it forwards (a conntrack
``GET``) is checked field by field against the only shape conntui sends.

A reply is a header ``status, length`` (``i32``, ``u32``) and ``length`` bytes of body, in
datagrams of at most :data:`CHUNK` bytes; ``status`` 0 is success, else an errno and the
body a one-line reason. Bodies are bounded by :data:`MAX_REPLY`.

Pure functions: tested in ``tests/unit/test_privsep_protocol.py``.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

__all__ = [
    "CHUNK",
    "HEADER",
    "MAX_REPLY",
    "MAX_REQUEST",
    "Refused",
    "Request",
    "parse_request",
]

HEADER = struct.Struct("=HH")
REPLY_HEADER = struct.Struct("=iI")
MAX_REQUEST = 4096
MAX_REPLY = 16 << 20  # 16 MiB: a million fds
CHUNK = 60000  # bytes of reply per datagram (below the socket buffer's default)
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit
FD_MAX = (1 << 31) - 1
MAX_FDS_PER_REQUEST = (MAX_REQUEST - HEADER.size - 4) // 4  # 1022
MAX_CT_CHANNELS = 16

OP_PING = 1
OP_FDS = 2  # the fd numbers of a process, as /proc/PID/fd lists them
OP_INODES = 3  # the socket inode behind each of some fds of a process (0: not a socket)
OP_ACCESS = 4  # whether /proc/PID/fd can be read
OP_NETLINK = 5  # a netlink socket (route, sock_diag) inside the namespace of the fd sent
OP_CONNTRACK = 6  # a channel for conntrack GETs (in the namespace of the fd sent, or ours)
OP_RULES = 7  # iptables-save / ip6tables-save / nft output (in the namespace of the fd sent)
OP_SK_LOOKUP = 8  # the sk_lookup BPF programs attached to a namespace
OP_NETNS_LIST = 9  # (pid, network namespace inode) of every process
OP_OPEN_NETNS = 10  # /proc/PID/ns/net, open, handed back
OP_BYE = 11  # the session ended normally: the helper exits without a word
OP_FDS_MANY = 12  # OP_FDS for many processes at once

OPS = {
    OP_PING: "ping",
    OP_FDS: "fds",
    OP_INODES: "inodes",
    OP_ACCESS: "access",
    OP_NETLINK: "netlink",
    OP_CONNTRACK: "conntrack",
    OP_RULES: "rules",
    OP_SK_LOOKUP: "sk_lookup",
    OP_NETNS_LIST: "netns_list",
    OP_OPEN_NETNS: "open_netns",
    OP_BYE: "bye",
    OP_FDS_MANY: "fds_many",
}

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
NETLINK_PROTOCOLS = frozenset((NETLINK_ROUTE, NETLINK_SOCK_DIAG))

RULES_IPTABLES = 0
RULES_IP6TABLES = 1
RULES_NFT = 2
RULES_ARGV: dict[int, tuple[str, ...]] = {
    RULES_IPTABLES: ("iptables-save", "-t", "mangle"),
    RULES_IP6TABLES: ("ip6tables-save", "-t", "mangle"),
    RULES_NFT: ("nft", "-j", "list", "ruleset"),
}

# which ops take a namespace's file descriptor: True (required), None (optional), False (none)
_TAKES_FD = {
    OP_PING: False,
    OP_FDS: False,
    OP_INODES: False,
    OP_ACCESS: False,
    OP_NETLINK: True,
    OP_CONNTRACK: None,
    OP_RULES: None,
    OP_SK_LOOKUP: False,
    OP_NETNS_LIST: False,
    OP_OPEN_NETNS: False,
    OP_BYE: False,
    OP_FDS_MANY: False,
}

_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")

# conntrack: nlmsghdr (len, type, flags, seq, pid), then nfgenmsg (family, version, res_id)
NLMSG = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("=BBH")
CT_GET = (1 << 8) | 1  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET
NLM_F_REQUEST = 1
NLM_F_DUMP = 0x300
CT_MIN, CT_MAX = NLMSG.size + NFGENMSG.size + 4, 512


class Refused(Exception):
    """A request the helper does not serve: ``errno`` says why (EINVAL malformed, E2BIG
    oversized, ERANGE out of range, EBADF a wrong descriptor, EPERM not allowed)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.errno = code


@dataclass(frozen=True)
class Request:
    op: int
    pid: int = 0
    fds: tuple[int, ...] = ()
    protocol: int = 0
    kind: int = 0
    inode: int = 0
    message: bytes = b""
    has_fd: bool = False


def encode(op: int, body: bytes = b"") -> bytes:
    return HEADER.pack(op, 0) + body


def fds_request(pid: int) -> bytes:
    return encode(OP_FDS, _U32.pack(pid))


def inodes_request(pid: int, fds: list[int]) -> bytes:
    return encode(OP_INODES, _U32.pack(pid) + struct.pack(f"={len(fds)}I", *fds))


def fds_many_request(pids: list[int]) -> bytes:
    return encode(OP_FDS_MANY, struct.pack(f"={len(pids)}I", *pids))


def open_netns_request(pid: int) -> bytes:
    return encode(OP_OPEN_NETNS, _U32.pack(pid))


def access_request(pid: int) -> bytes:
    return encode(OP_ACCESS, _U32.pack(pid))


def netlink_request(protocol: int) -> bytes:
    return encode(OP_NETLINK, _U32.pack(protocol))


def rules_request(kind: int) -> bytes:
    return encode(OP_RULES, _U32.pack(kind))


def sk_lookup_request(inode: int) -> bytes:
    return encode(OP_SK_LOOKUP, _U64.pack(inode))


def _pid(body: bytes) -> int:
    pid: int = _U32.unpack_from(body)[0]
    if not 1 <= pid < PID_MAX:
        raise Refused(errno.ERANGE, f"pid {pid} out of range")
    return pid


def _exact(body: bytes, size: int, what: str) -> None:
    if len(body) != size:
        raise Refused(errno.EINVAL, f"{what}: body of {len(body)} bytes, expected {size}")


def check_conntrack(msg: bytes) -> None:
    """The only netlink message the helper forwards: one conntrack GET for one tuple."""
    if not CT_MIN <= len(msg) <= CT_MAX:
        code = errno.E2BIG if len(msg) > CT_MAX else errno.EINVAL
        raise Refused(code, f"conntrack message of {len(msg)} bytes")
    length, kind, flags, _seq, _port = NLMSG.unpack_from(msg)
    if length != len(msg):
        raise Refused(errno.EINVAL, f"conntrack message says {length} bytes, holds {len(msg)}")
    if kind != CT_GET:
        raise Refused(errno.EPERM, f"conntrack message type {kind:#x} is not a GET")
    if flags & NLM_F_DUMP or not flags & NLM_F_REQUEST or flags & ~0xFF:
        raise Refused(errno.EPERM, f"conntrack flags {flags:#x}: one GET, no dump")
    family, version, _res = NFGENMSG.unpack_from(msg, NLMSG.size)
    if family not in (2, 10) or version != 0:
        raise Refused(errno.EINVAL, f"conntrack family {family} version {version}")


def parse_request(data: bytes, has_fd: bool) -> Request:
    """The request in one datagram (``has_fd``: a descriptor came with it), or Refused."""
    if len(data) > MAX_REQUEST:
        raise Refused(errno.E2BIG, f"request of {len(data)} bytes (at most {MAX_REQUEST})")
    if len(data) < HEADER.size:
        raise Refused(errno.EINVAL, f"request of {len(data)} bytes: no header")
    op, reserved = HEADER.unpack_from(data)
    body = data[HEADER.size :]
    if op not in OPS:
        raise Refused(errno.EINVAL, f"unknown operation {op}")
    if reserved:
        raise Refused(errno.EINVAL, "reserved header field not zero")
    takes = _TAKES_FD[op]
    if has_fd and takes is False:
        raise Refused(errno.EBADF, f"{OPS[op]} takes no file descriptor")
    if not has_fd and takes is True:
        raise Refused(errno.EBADF, f"{OPS[op]} needs a namespace's file descriptor")
    name = OPS[op]
    if op == OP_PING:
        _exact(body, 0, name)
        return Request(op)
    if op in (OP_NETNS_LIST, OP_BYE):
        _exact(body, 0, name)
        return Request(op)
    if op in (OP_FDS, OP_ACCESS, OP_OPEN_NETNS):
        _exact(body, 4, name)
        return Request(op, pid=_pid(body))
    if op == OP_FDS_MANY:
        if not body or len(body) % 4:
            raise Refused(errno.EINVAL, f"{name}: body of {len(body)} bytes")
        pids = struct.unpack(f"={len(body) // 4}I", body)
        if any(not 1 <= p < PID_MAX for p in pids):
            raise Refused(errno.ERANGE, f"{name}: pid out of range")
        return Request(op, fds=pids)
    if op == OP_INODES:
        if len(body) < 8 or len(body) % 4:
            raise Refused(errno.EINVAL, f"{name}: body of {len(body)} bytes")
        pid = _pid(body)
        fds = struct.unpack_from(f"={len(body) // 4 - 1}I", body, 4)
        if any(fd > FD_MAX for fd in fds):
            raise Refused(errno.ERANGE, f"{name}: fd out of range")
        return Request(op, pid=pid, fds=fds)
    if op == OP_NETLINK:
        _exact(body, 4, name)
        (protocol,) = _U32.unpack_from(body)
        if protocol not in NETLINK_PROTOCOLS:
            raise Refused(errno.EPERM, f"netlink protocol {protocol} not served")
        return Request(op, protocol=protocol, has_fd=True)
    if op == OP_CONNTRACK:
        _exact(body, 0, name)
        return Request(op, has_fd=has_fd)
    if op == OP_RULES:
        _exact(body, 4, name)
        (kind,) = _U32.unpack_from(body)
        if kind not in RULES_ARGV:
            raise Refused(errno.ERANGE, f"rules kind {kind} out of range")
        return Request(op, kind=kind, has_fd=has_fd)
    _exact(body, 8, name)  # OP_SK_LOOKUP
    (inode,) = _U64.unpack_from(body)
    if not 0 < inode < 1 << 32:
        raise Refused(errno.ERANGE, f"namespace inode {inode} out of range")
    return Request(op, inode=inode)


def reply_chunks(status: int, body: bytes) -> list[bytes]:
    """A reply as datagrams: the header with the first chunk, then the rest."""
    if len(body) > MAX_REPLY:
        status, body = errno.E2BIG, f"reply of {len(body)} bytes (at most {MAX_REPLY})".encode()
    first = REPLY_HEADER.pack(status, len(body)) + body[: CHUNK - REPLY_HEADER.size]
    rest = body[CHUNK - REPLY_HEADER.size :]
    return [first] + [rest[i : i + CHUNK] for i in range(0, len(rest), CHUNK)]
