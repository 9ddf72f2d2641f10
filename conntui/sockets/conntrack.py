"""NAT through conntrack: from a captured tuple to the tuple the local socket really has.

An AF_PACKET tap sees ingress frames before PREROUTING (before DNAT/REDIRECT) and egress
frames after POSTROUTING (after SNAT and after the reverse translation of a DNAT'd reply), so
with NAT the captured addresses are not the socket's (``KERNEL-DEMUX.md`` §0, §6). The
conntrack entry has both views: :meth:`Conntrack.lookup` asks ctnetlink for it
(``IPCTNL_MSG_CT_GET``, one request and one answer, stdlib ``socket``/``struct`` only) and
:func:`local_socket_tuple` derives the local socket's tuple from it.

Direction rules (verified against the kernel, see ``tests/e2e/test_conntrack_e2e.py``)
--------------------------------------------------------------------------------------
A conntrack entry holds two tuples: ``ORIG`` (the first packet as the initiator sent it) and
``REPLY`` (the answer as the responder sends it). DNAT/REDIRECT rewrite ``REPLY.src``, SNAT
rewrites ``REPLY.dst``. A tap sees each segment either untranslated or fully translated:

* **ingress** (a frame arriving from a device; the tap runs before PREROUTING): nothing is
  translated yet. An original-direction segment is ``ORIG``, a reply-direction one ``REPLY``.
* **egress** (a frame leaving; the tap runs after OUTPUT and POSTROUTING): everything is
  translated. An original-direction segment is ``REPLY⁻¹`` (REPLY reversed), a
  reply-direction one ``ORIG⁻¹``.
* **loopback**: both copies on ``lo`` (the ``PACKET_OUTGOING`` clone and the ``PACKET_HOST``
  one looped back) carry the *egress* form: OUTPUT/POSTROUTING already rewrote the frame,
  and PREROUTING does not rewrite it again. So on ``lo`` the pkttype does not tell which.

Examples. Opened **from outside** to a daemon behind ``REDIRECT --to-ports 9000``: ORIG =
``C:c → V:8081``, REPLY = ``L:9000 → C:c`` (L: the ingress interface's first address,
usually V); the tap sees ``C:c → V:8081`` coming in (ORIG) and
``V:8081 → C:c`` going out (ORIG⁻¹), never port 9000; the socket is ``REPLY.src:sport``
(local) ↔ ``REPLY.dst:dport``. Opened **locally** and SNAT'd: ORIG = ``L:l → R:r``, REPLY =
``R:r → S:s``; the tap sees ``S:s → R:r`` going out (REPLY⁻¹) and ``R:r → S:s`` coming in
(REPLY); the socket is ``ORIG.src:sport`` ↔ ``ORIG.dst:dport``. OUTPUT ``REDIRECT`` on
``lo`` (``127.0.0.1:c`` dialling :8082, redirected to :9001): the tap sees ``c → 9001``
(REPLY⁻¹) and ``8082 → c`` (ORIG⁻¹).

The conntrack hash holds every entry under both its ORIG and its REPLY tuple, and
``ctnetlink_get_conntrack`` hashes whatever tuple it is given (``CTA_TUPLE_ORIG`` or
``CTA_TUPLE_REPLY`` only picks the zone direction), so one GET of the captured tuple finds
every ingress capture, and "retrying as CTA_TUPLE_REPLY" would ask the same question again.
An egress capture is found by GETting the *reversed* tuple. :meth:`Conntrack.lookup` sends
the captured tuple and, on ENOENT, its reverse (reverse first with ``outgoing=True``: an egress
or loopback capture). ``SO_ORIGINAL_DST`` is the same hash look-up done by the kernel with the
socket's (local, peer) tuple, i.e. REPLY for an accepted connection, and returns
``ORIG.dst``.

Failure is quiet: no nfnetlink, no ``nf_conntrack_netlink``, no CAP_NET_ADMIN (EPERM), no
entry (ENOENT; conntrack only tracks namespaces where some rule or user needs it) all give
``None`` from :meth:`Conntrack.lookup`, with the reason in :attr:`Conntrack.last_error`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import NamedTuple

from ..model import FlowKey, unmap
from .netlink import NLA_HDR, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HDR, open_netlink

__all__ = [
    "CTA_TUPLE_ORIG",
    "CTA_TUPLE_REPLY",
    "IPS_DST_NAT",
    "IPS_SRC_NAT",
    "Conntrack",
    "NatMapping",
    "build_get_request",
    "local_socket_tuple",
    "parse_ct_message",
]

NETLINK_NETFILTER = 12

# linux/netfilter/nfnetlink.h
NFNL_SUBSYS_CTNETLINK = 1
NFNETLINK_V0 = 0
# linux/netfilter/nfnetlink_conntrack.h: enum cntl_msg_types
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW  # the type a GET is answered with

# enum ctattr_type
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_ID = 12
CTA_ZONE = 18
# enum ctattr_tuple
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_TUPLE_ZONE = 3
# enum ctattr_ip
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
# enum ctattr_l4proto
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3

NLA_F_NESTED = 0x8000

# linux/netfilter/nf_conntrack_common.h: enum ip_conntrack_status
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
IPS_SRC_NAT = 1 << 4
IPS_DST_NAT = 1 << 5
IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT

PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
PROTO_NAMES = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "udplite"}

# Errors that mean "conntrack cannot answer here", not "no such entry". No CAP_NET_ADMIN in
# the socket's user namespace (EPERM) will not change: the channel closes for good. nfnetlink
# without the ctnetlink subsystem answers EINVAL after a failed request_module()
# ("nfnetlink-subsys-1", ``nfnetlink_rcv_msg``): that may change once the module is loaded,
# but each try spawns modprobe, so the channel then rests for ``retry_after`` seconds.
_DENIED = frozenset((errno.EPERM, errno.EACCES, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT))
_MISSING = frozenset((errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS))

_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big-endian, left 0)
_PORT = struct.Struct("!H")
_U32_BE = struct.Struct("!I")
_ERRNO = struct.Struct("=i")
_RECV_TIMEOUT = 1.0  # the kernel answers in the sender's context; this is only a guard
_MAX_DATAGRAMS = 64  # stale answers skipped before giving up on one request


class NatMapping(NamedTuple):
    """One conntrack entry: both directions of a connection.

    ``original`` is the first packet as the initiator sent it; ``reply`` is the answer as the
    responder sends it (before any reverse translation). For a connection opened from
    outside, the local socket is ``reply.src:reply.sport`` with peer
    ``reply.dst:reply.dport``; for one opened locally, ``original.src`` ↔ ``original.dst``.
    """

    proto: str  # "tcp" | "udp" (other conntrack protocols by name or "proto-N")
    original: FlowKey
    reply: FlowKey
    status: int = 0  # CTA_STATUS bits (IPS_*); 0 when unknown

    @property
    def nat(self) -> bool:
        """Whether any address or port was translated: the NAT status bits, or a reply
        tuple that is not the inverse of the original one."""
        return bool(self.status & IPS_NAT_MASK) or not _same(self.reply, self.original.reversed())

    @property
    def dst_nat(self) -> bool:
        """DNAT/REDIRECT: the responder's address or port differs from the one dialled."""
        if self.status & IPS_NAT_MASK:
            return bool(self.status & IPS_DST_NAT)
        o, r = self.original, self.reply
        return not (_same_addr(o.dst, r.src) and o.dport == r.sport)

    @property
    def src_nat(self) -> bool:
        """SNAT/MASQUERADE: the responder sees another source than the initiator's."""
        if self.status & IPS_NAT_MASK:
            return bool(self.status & IPS_SRC_NAT)
        o, r = self.original, self.reply
        return not (_same_addr(o.src, r.dst) and o.sport == r.dport)


# --- wire format -------------------------------------------------------------------------


def _family_af(family: int) -> int:
    if family in (4, socket.AF_INET):
        return socket.AF_INET
    if family in (6, socket.AF_INET6):
        return socket.AF_INET6
    raise ValueError(f"not an IP family: {family}")


def _attr(kind: int, payload: bytes) -> bytes:
    length = NLA_HDR.size + len(payload)
    return NLA_HDR.pack(length, kind) + payload + b"\0" * (-length & 3)


def _nested(kind: int, *children: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(children))


def build_get_request(key: FlowKey, family: int, attr: int = CTA_TUPLE_ORIG) -> bytes:
    """The ``nfgenmsg`` and attributes of an ``IPCTNL_MSG_CT_GET`` for the tuple ``key``
    (without the netlink header). ``attr`` is ``CTA_TUPLE_ORIG`` or ``CTA_TUPLE_REPLY``."""
    af = _family_af(family)
    src, dst = key.src, key.dst
    if af == socket.AF_INET6 and "." in src and ":" not in src:
        src, dst = "::ffff:" + src, "::ffff:" + dst  # an IPv4 key asked as IPv6
    if af == socket.AF_INET:
        ip = _attr(CTA_IP_V4_SRC, socket.inet_pton(af, src)) + _attr(CTA_IP_V4_DST, socket.inet_pton(af, dst))
    else:
        ip = _attr(CTA_IP_V6_SRC, socket.inet_pton(af, src)) + _attr(CTA_IP_V6_DST, socket.inet_pton(af, dst))
    proto = PROTO_NUMBERS.get(key.proto)
    if proto is None:
        raise ValueError(f"not a conntrack port protocol: {key.proto!r}")
    l4 = (
        _attr(CTA_PROTO_NUM, bytes((proto,)))
        + _attr(CTA_PROTO_SRC_PORT, _PORT.pack(key.sport))
        + _attr(CTA_PROTO_DST_PORT, _PORT.pack(key.dport))
    )
    tuple_attr = _nested(attr, _nested(CTA_TUPLE_IP, ip), _nested(CTA_TUPLE_PROTO, l4))
    return _NFGENMSG.pack(af, NFNETLINK_V0, 0) + tuple_attr


# The whole GET request (netlink header included) for one tuple, packed in one call: the
# kernel's own layout, nests and attribute order of ``build_get_request``. Addresses and
# ports go in as big-endian bytes; everything else is host order.
#   nlmsghdr | nfgenmsg | tuple nest | IP nest | src | dst | proto nest | num | sport | dport
_REQ4 = struct.Struct("=IHHII BBH HH HH HH4s HH4s HH HHB3x HH2s2x HH2s2x")
_REQ6 = struct.Struct("=IHHII BBH HH HH HH16s HH16s HH HHB3x HH2s2x HH2s2x")


def _request(key: FlowKey, af: int, proto: int, attr: int, seq: int) -> bytes:
    """``build_get_request`` with its netlink header, in one ``struct`` call (hot path)."""
    sport, dport = key.sport.to_bytes(2, "big"), key.dport.to_bytes(2, "big")
    if af == socket.AF_INET:
        req, alen = _REQ4, 8
    else:
        req, alen = _REQ6, 20
    src, dst = socket.inet_pton(af, key.src), socket.inet_pton(af, key.dst)
    ip_len = 4 + 2 * alen
    tuple_len = 4 + ip_len + 28
    return req.pack(
        req.size, CT_GET, NLM_F_REQUEST, seq, 0,
        af, NFNETLINK_V0, 0,
        tuple_len, attr | NLA_F_NESTED,
        ip_len, CTA_TUPLE_IP | NLA_F_NESTED,
        alen, CTA_IP_V4_SRC if alen == 8 else CTA_IP_V6_SRC, src,
        alen, CTA_IP_V4_DST if alen == 8 else CTA_IP_V6_DST, dst,
        28, CTA_TUPLE_PROTO | NLA_F_NESTED,
        5, CTA_PROTO_NUM, proto,
        6, CTA_PROTO_SRC_PORT, sport,
        6, CTA_PROTO_DST_PORT, dport,
    )  # fmt: skip


_unpack_nla = NLA_HDR.unpack_from
_unpack_port = _PORT.unpack_from
_ntop = socket.inet_ntop


def _tuple_layout(alen: int) -> tuple[struct.Struct, tuple[int, ...]]:
    """The kernel's usual CTA_TUPLE_* payload (``ctnetlink_dump_tuples``) read big-endian in
    one call, and the header fields it must show (lengths and types as big-endian reads)."""
    layout = struct.Struct(f"!HH HH{alen}s HH{alen}s HH HHB3x HHH2x HHH2x")

    def be(v: int) -> int:
        return int.from_bytes(v.to_bytes(2, "little"), "big")

    ip_len = 4 + 2 * (4 + alen)
    src_t, dst_t = (CTA_IP_V4_SRC, CTA_IP_V4_DST) if alen == 4 else (CTA_IP_V6_SRC, CTA_IP_V6_DST)
    headers = (
        *(ip_len, CTA_TUPLE_IP | NLA_F_NESTED, 4 + alen, src_t, 4 + alen, dst_t),
        *(28, CTA_TUPLE_PROTO | NLA_F_NESTED, 5, CTA_PROTO_NUM),
        *(6, CTA_PROTO_SRC_PORT, 6, CTA_PROTO_DST_PORT),
    )
    return layout, tuple(be(v) for v in headers)


_TUPLE4, _TUPLE4_HDRS = _tuple_layout(4)
_TUPLE6, _TUPLE6_HDRS = _tuple_layout(16)


def _parse_tuple(data: bytes | bytearray, off: int, end: int) -> FlowKey | None:
    """The FlowKey in the CTA_TUPLE_ORIG/REPLY payload ``data[off:end]``."""
    size = end - off
    if size == _TUPLE4.size or size == _TUPLE6.size:  # fast path: the kernel's own layout
        v4 = size == _TUPLE4.size
        f = (_TUPLE4 if v4 else _TUPLE6).unpack_from(data, off)
        if (f[0], f[1], f[2], f[3], f[5], f[6], f[8], f[9], f[10], f[11], f[13], f[14], f[16], f[17]) == (
            _TUPLE4_HDRS if v4 else _TUPLE6_HDRS
        ):
            name = PROTO_NAMES.get(f[12]) or f"proto-{f[12]}"
            if v4:
                return FlowKey(name, _ntop(socket.AF_INET, f[4]), f[15], _ntop(socket.AF_INET, f[7]), f[18])
            src6, dst6 = unmap(_ntop(socket.AF_INET6, f[4])), unmap(_ntop(socket.AF_INET6, f[7]))
            return FlowKey(name, src6, f[15], dst6, f[18])
    src = dst = ""
    proto = -1
    sport = dport = 0
    while off + 4 <= end:
        length, kind = _unpack_nla(data, off)
        if length < 4 or off + length > end:
            break
        kind &= 0x3FFF
        if kind == CTA_TUPLE_IP:
            o, e = off + 4, off + length
            while o + 4 <= e:
                ilen, ikind = _unpack_nla(data, o)
                if ilen < 4 or o + ilen > e:
                    break
                ikind &= 0x3FFF
                if ilen == 8 and ikind in (CTA_IP_V4_SRC, CTA_IP_V4_DST):
                    text = _ntop(socket.AF_INET, data[o + 4 : o + 8])
                elif ilen == 20 and ikind in (CTA_IP_V6_SRC, CTA_IP_V6_DST):
                    text = unmap(_ntop(socket.AF_INET6, data[o + 4 : o + 20]))
                else:
                    text = ""
                if ikind in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = text
                elif ikind in (CTA_IP_V4_DST, CTA_IP_V6_DST):
                    dst = text
                o += (ilen + 3) & ~3
        elif kind == CTA_TUPLE_PROTO:
            o, e = off + 4, off + length
            while o + 4 <= e:
                plen, pkind = _unpack_nla(data, o)
                if plen < 4 or o + plen > e:
                    break
                pkind &= 0x3FFF
                if pkind == CTA_PROTO_NUM and plen >= 5:
                    proto = data[o + 4]
                elif pkind == CTA_PROTO_SRC_PORT and plen >= 6:
                    sport = _unpack_port(data, o + 4)[0]
                elif pkind == CTA_PROTO_DST_PORT and plen >= 6:
                    dport = _unpack_port(data, o + 4)[0]
                o += (plen + 3) & ~3
        off += (length + 3) & ~3
    if not src or not dst or proto < 0:
        return None
    name = PROTO_NAMES.get(proto) or f"proto-{proto}"
    return FlowKey(name, src, sport, dst, dport)


def _parse_at(data: bytes | bytearray, off: int, end: int) -> NatMapping | None:
    orig = reply = None
    status = 0
    off += _NFGENMSG.size
    while off + 4 <= end:
        length, kind = _unpack_nla(data, off)
        if length < 4 or off + length > end:
            break
        kind &= 0x3FFF
        if kind == CTA_TUPLE_ORIG:
            orig = _parse_tuple(data, off + 4, off + length)
        elif kind == CTA_TUPLE_REPLY:
            reply = _parse_tuple(data, off + 4, off + length)
        elif kind == CTA_STATUS and length >= 8:
            status = _U32_BE.unpack_from(data, off + 4)[0]
            if orig is not None and reply is not None:
                break  # the kernel's order: nothing needed follows CTA_STATUS
        off += (length + 3) & ~3
    if orig is None or reply is None:
        return None
    return NatMapping(orig.proto, orig, reply, status)


def parse_ct_message(payload: bytes) -> NatMapping | None:
    """A ctnetlink conntrack message (``nfgenmsg`` + attributes, no netlink header) as a
    :class:`NatMapping`; ``None`` if it lacks either tuple. ``CTA_ZONE``, ``CTA_TUPLE_ZONE``
    and every other attribute may be present or not; unknown ones are skipped."""
    if len(payload) < _NFGENMSG.size:
        return None
    return _parse_at(payload, 0, len(payload))


# --- the channel -------------------------------------------------------------------------


class Conntrack:
    """A NETLINK_NETFILTER socket for conntrack look-ups, optionally in another namespace
    (conntrack tables are per namespace: use the one whose device received the frame).

    Not thread-safe: one per thread. Never raises for a kernel without conntrack or without
    permission: :meth:`lookup` returns ``None`` and :attr:`last_error` says why.
    """

    def __init__(
        self,
        netns_path: str | None = None,
        *,
        retry_after: float = 30.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.netns_path = netns_path
        self.retry_after = retry_after
        self.last_error: OSError | None = None
        self._seq = 0
        self._buf = bytearray(1 << 15)
        self._denied = False
        self._closed = False
        self._resting_until = 0.0
        self._sock: socket.socket | None = sock
        if sock is None:
            self._open()

    def _open(self) -> None:
        try:
            self._sock = open_netlink(NETLINK_NETFILTER, self.netns_path)
        except OSError as exc:
            if exc.errno not in _DENIED:
                raise  # e.g. a netns path that does not exist: the caller's mistake
            self.last_error = exc
            self._denied = True

    @property
    def available(self) -> bool:
        """False when the kernel refused to talk (no nfnetlink, no CAP_NET_ADMIN), or while
        resting after it said ctnetlink is missing."""
        return not (self._denied or self._closed) and time.monotonic() >= self._resting_until

    def close(self) -> None:
        """Close the socket; later look-ups return ``None``."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Conntrack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, seg_key: FlowKey, family: int, *, outgoing: bool = False) -> NatMapping | None:
        """The conntrack entry for a captured TCP/UDP tuple, in either direction.

        Sends the tuple as captured, then (on ENOENT) reversed: an ingress capture is ORIG or
        REPLY (found by the first GET), an egress one ORIG⁻¹ or REPLY⁻¹ (found by the
        second). ``outgoing=True`` (``PACKET_OUTGOING``, or any frame on ``lo``) tries the
        reverse first. Without NAT both orders find the entry. ``None`` when there is no
        entry or conntrack cannot be asked.
        """
        if seg_key.proto not in PROTO_NUMBERS:
            return None
        first, second = (seg_key.reversed(), seg_key) if outgoing else (seg_key, seg_key.reversed())
        found = self.get(first, family)
        if found is None and self.last_error is not None and self.last_error.errno == errno.ENOENT:
            found = self.get(second, family)
        return found

    def get(self, key: FlowKey, family: int, attr: int = CTA_TUPLE_ORIG) -> NatMapping | None:
        """One ``IPCTNL_MSG_CT_GET``: the entry that has ``key`` as its ORIG or its REPLY
        tuple, whichever of the two attributes ``attr`` names carries it; ``None`` if none
        (``last_error`` ENOENT) or conntrack cannot be asked."""
        if self._denied or self._closed or (self._resting_until and time.monotonic() < self._resting_until):
            return None
        self._resting_until = 0.0
        if self._sock is None:
            try:
                self._open()
            except OSError as exc:  # the namespace went away
                self.last_error = exc
                return None
        sock = self._sock
        if sock is None:
            return None
        proto = PROTO_NUMBERS.get(key.proto)
        try:
            af = _family_af(family)
            if proto is None:
                raise ValueError(f"not a conntrack port protocol: {key.proto!r}")
            if af == socket.AF_INET6 and ":" not in key.src:
                key = FlowKey(key.proto, "::ffff:" + key.src, key.sport, "::ffff:" + key.dst, key.dport)
            self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
            msg = _request(key, af, proto, attr, self._seq)
        except (ValueError, OverflowError, OSError, struct.error) as exc:  # a bad address or port
            self.last_error = OSError(errno.EINVAL, str(exc))
            return None
        seq = self._seq
        try:
            sock.send(msg)
            found = self._answer(sock, seq)
        except OSError as exc:
            self.last_error = exc
            if exc.errno in _DENIED:
                self._denied = True
                self._drop()
            elif exc.errno in _MISSING:
                self._resting_until = time.monotonic() + self.retry_after
            elif exc.errno != errno.ENOENT:
                # Unexpected (a timeout, ENOBUFS): start afresh next time, so that a late
                # answer cannot be taken for the next request's.
                self._drop()
            return None
        self.last_error = None
        return found

    def _answer(self, sock: socket.socket, seq: int) -> NatMapping | None:
        buf = self._buf
        for _ in range(_MAX_DATAGRAMS):
            try:
                n = sock.recv_into(buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                # Not seen in practice: the kernel queues the answer before send() returns.
                ready, _, _ = select.select([sock], [], [], _RECV_TIMEOUT)
                if not ready:
                    break
                continue
            offset = 0
            while offset + NLMSG_HDR.size <= n:
                length, kind, _flags, mseq, _pid = NLMSG_HDR.unpack_from(buf, offset)
                if length < NLMSG_HDR.size or offset + length > n:
                    raise OSError(errno.EBADMSG, "malformed netlink message")
                body, offset = offset + NLMSG_HDR.size, offset + ((length + 3) & ~3)
                if mseq != seq:
                    continue  # a stale answer to an earlier request
                if kind == NLMSG_ERROR:
                    if body + _ERRNO.size > offset:
                        raise OSError(errno.EBADMSG, "truncated netlink error")
                    code = -_ERRNO.unpack_from(buf, body)[0]
                    if code == 0:
                        return None
                    raise OSError(code, os.strerror(code))
                if kind >> 8 == NFNL_SUBSYS_CTNETLINK and body + _NFGENMSG.size <= offset:
                    return _parse_at(buf, body, body + length - NLMSG_HDR.size)
        raise TimeoutError(errno.ETIMEDOUT, "ctnetlink did not answer")


# --- which local socket --------------------------------------------------------------------

_LOOPBACK_V4 = "127."


def _norm(addr: str) -> str:
    if ":" in addr:
        try:
            return unmap(ipaddress.IPv6Address(addr.split("%", 1)[0]).compressed)
        except ValueError:
            return addr
    return addr


def _same_addr(a: str, b: str) -> bool:
    return a == b or _norm(a) == _norm(b)


def _same(a: FlowKey, b: FlowKey) -> bool:
    return a.sport == b.sport and a.dport == b.dport and _same_addr(a.src, b.src) and _same_addr(a.dst, b.dst)


def _is_loopback(addr: str) -> bool:
    return addr.startswith(_LOOPBACK_V4) or _norm(addr) == "::1"


def _forward(m: NatMapping, captured: FlowKey) -> bool | None:
    """Whether ``captured`` goes the connection's original way (initiator → responder), the
    reply way (False), or is none of its four tuples (None)."""
    o, r = m.original, m.reply
    if captured.proto != o.proto:
        return None
    if _same(captured, o) or _same(captured, r.reversed()):
        return True
    if _same(captured, r) or _same(captured, o.reversed()):
        return False
    return None


def local_socket_tuple(
    m: NatMapping,
    captured: FlowKey,
    *,
    is_local: Callable[[str], bool] | None = None,
) -> tuple[str, int, str, int] | None:
    """``(local addr, local port, remote addr, remote port)`` of the local socket a captured
    segment of this connection belongs to, in either direction; ``None`` when ``captured``
    is not one of the connection's four tuples or no end of it is local.

    The responder's socket is ``reply.src:sport ↔ reply.dst:dport`` (an incoming
    connection, after DNAT/REDIRECT); the initiator's is ``original.src:sport ↔
    original.dst:dport`` (a connection opened here, before SNAT).

    Which end is on this host: with ``is_local`` (e.g. ``SocketTable.is_local``), the
    responder if ``reply.src`` is local, the initiator if ``original.src`` is. Without it,
    from the entry alone: loopback addresses are local; otherwise DNAT/REDIRECT means the
    responder is here (the daemon behind the rule), SNAT alone means the initiator is, and
    no NAT at all is taken as an incoming connection. When both ends are local (loopback,
    OUTPUT REDIRECT), the socket that *receives* the segment is returned: the responder's
    for the original direction (ORIG, REPLY⁻¹), the initiator's for the reply direction.
    """
    o, r = m.original, m.reply
    forward = _forward(m, captured)
    if forward is None:
        return None
    if is_local is not None:
        responder_local = is_local(r.src)
        initiator_local = is_local(o.src)
    else:
        responder_local = _is_loopback(r.src)
        initiator_local = _is_loopback(o.src)
        if not (responder_local or initiator_local):
            responder_local = m.dst_nat or not m.src_nat
            initiator_local = not responder_local
    if responder_local and (forward or not initiator_local):
        return (r.src, r.sport, r.dst, r.dport)
    if initiator_local:
        return (o.src, o.sport, o.dst, o.dport)
    return None


def sending_socket_tuple(
    m: NatMapping,
    captured: FlowKey,
    *,
    is_local: Callable[[str], bool] | None = None,
) -> tuple[str, int, str, int] | None:
    """``(local addr, local port, remote addr, remote port)`` of the local socket that *sent*
    a captured segment of this connection: the initiator's (``original``) for the original
    direction, the responder's (``reply``) for the reply direction; ``None`` when that end
    is not on this host or ``captured`` is not one of the connection's tuples.

    With both ends local (loopback, an OUTPUT REDIRECT), :func:`local_socket_tuple` names
    the receiving socket; this names the other end, whose tuple the captured segment does
    not carry (the client's socket holds the dialled port, its SYN the rewritten one).
    """
    o, r = m.original, m.reply
    forward = _forward(m, captured)
    if forward is None:
        return None
    local = is_local if is_local is not None else _is_loopback
    if forward:
        return (o.src, o.sport, o.dst, o.dport) if local(o.src) else None
    return (r.src, r.sport, r.dst, r.dport) if local(r.src) else None
