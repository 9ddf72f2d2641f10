"""The kernel's socket table through NETLINK_SOCK_DIAG (``ss``'s source), without pyroute2.

Two requests matter:

* a dump of one (protocol, family) in every state, including request socks
  (``TCP_NEW_SYN_RECV``) and TIME_WAIT entries, which ``/proc/net/tcp`` and psutil show
  poorly or not at all;
* an exact look-up by 4-tuple (``inet_diag_find_one_icsk`` / ``udp_dump_one``), which runs
  the kernel's own receive look-up (established hash, then listeners; for UDP the full
  ``__udp4_lib_lookup``) in about two microseconds — what the refresher does on a demux miss.

Layouts are ``linux/inet_diag.h``: ``inet_diag_req_v2`` (56 bytes) and ``inet_diag_msg``
(72 bytes, then attributes). Ports and addresses are big-endian, everything else host order.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import NamedTuple

from ..model import TCP_STATES, Endpoint, Holder, SocketEntry, is_wildcard
from .netlink import NETLINK_SOCK_DIAG, NLA_HDR, NetlinkChannel, iter_attrs

SOCK_DIAG_BY_FAMILY = 20

INET_DIAG_MARK = 15
INET_DIAG_SKV6ONLY = 11  # u8; sent unasked for AF_INET6 sockets in LISTEN or CLOSE only
INET_DIAG_SOCKOPT = 22  # struct inet_diag_sockopt (Linux 5.10+), full sockets only, unasked
# Its first byte's bit-fields, low bit first: recverr, is_icsk, freebind, hdrincl, mc_loop,
# transparent, mc_all, nodefrag (linux/inet_diag.h; set from inet_test_bit(TRANSPARENT)).
SOCKOPT_TRANSPARENT = 0x20
INET_DIAG_NOCOOKIE = 0xFFFFFFFF

ALL_STATES = 0xFFFFFFFF
TCP_ESTABLISHED = 1
TCP_CLOSE = 7
TCP_LISTEN = 10
TCP_NEW_SYN_RECV = 12

PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

_REQ_HEAD = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states
_PORTS = struct.Struct("!HH")
_TAIL = struct.Struct("=III")  # if, cookie[0], cookie[1]
# family state timer retrans | sport dport (raw) src dst | if cookie0 cookie1 | expires
# rqueue wqueue uid inode
_MSG = struct.Struct("=BBBB2s2s16s16sIIIIIIII")
MSG_SIZE = _MSG.size  # 72
REQ_SIZE = _REQ_HEAD.size + 48  # 56

# Offsets inside an inet_diag_msg, for the refresher's fast path.
OFF_COOKIE = 44
OFF_INODE = 68


class RawSock(NamedTuple):
    """One ``inet_diag_msg`` as the kernel sent it (addresses already in text form).

    A named tuple rather than a frozen dataclass: it is built on every look-up, and a
    17-field frozen dataclass costs three times as much to construct.
    """

    proto: str  # "tcp" | "udp"
    family: int  # socket.AF_INET | socket.AF_INET6: the socket's own family
    state: int  # kernel state number (TCP_STATES); UDP: 7 unconnected, 1 connected
    timer: int
    retrans: int
    sport: int  # local port
    dport: int  # remote port (0 when none)
    src: str  # local address, inet_ntop of the socket's family
    dst: str  # remote address
    ifindex: int  # idiag_if: SO_BINDTODEVICE (0 if none)
    cookie: int  # u64 from cookie[0] | cookie[1] << 32
    expires: int  # ms
    rqueue: int  # LISTEN: accept-queue length; else bytes not yet read
    wqueue: int  # LISTEN: backlog; else bytes not yet acked
    uid: int
    inode: int  # 0: no struct socket (TIME_WAIT, request sock, unaccepted child, orphan)
    v6only: bool | None = None  # None: not reported (AF_INET6 only, LISTEN/CLOSE only)
    transparent: bool = False  # IP_TRANSPARENT (INET_DIAG_SOCKOPT; absent: not a full socket)

    @property
    def state_text(self) -> str:
        return state_text(self.proto, self.state)

    @property
    def remote_is_wildcard(self) -> bool:
        return self.dport == 0 and is_wildcard(self.dst)


def family_af(family: int) -> int:
    """``socket.AF_INET``/``AF_INET6`` from either an AF constant or the model's 4/6."""
    if family in (4, socket.AF_INET):
        return socket.AF_INET
    if family in (6, socket.AF_INET6):
        return socket.AF_INET6
    raise ValueError(f"not an IP family: {family}")


def state_text(proto: str, state: int) -> str:
    """The model's state name: request socks show as SYN_RECV, UDP as UNCONN/ESTABLISHED."""
    if proto == "udp":
        if state == TCP_CLOSE:
            return "UNCONN"
        if state == TCP_ESTABLISHED:
            return "ESTABLISHED"
    if state == TCP_NEW_SYN_RECV:
        return "SYN_RECV"
    return TCP_STATES.get(state, f"STATE_{state}")


def build_request(
    proto: str,
    family: int,
    *,
    states: int = ALL_STATES,
    src: str | None = None,
    sport: int = 0,
    dst: str | None = None,
    dport: int = 0,
    ifindex: int = 0,
    cookie: int | None = None,
    ext: int = 0,
) -> bytes:
    """An ``inet_diag_req_v2``: a dump filter (no addresses) or an exact look-up id."""
    af = family_af(family)
    src_b = socket.inet_pton(af, src).ljust(16, b"\0") if src else bytes(16)
    dst_b = socket.inet_pton(af, dst).ljust(16, b"\0") if dst else bytes(16)
    if cookie is None:
        c0 = c1 = INET_DIAG_NOCOOKIE if src or dst else 0
    else:
        c0, c1 = cookie & 0xFFFFFFFF, cookie >> 32
    return (
        _REQ_HEAD.pack(af, PROTOCOLS[proto], ext, states)
        + _PORTS.pack(sport, dport)
        + src_b
        + dst_b
        + _TAIL.pack(ifindex, c0, c1)
    )


_ntop_cache: dict[tuple[int, bytes], str] = {}


def _ntop(af: int, raw: bytes) -> str:
    key = (af, raw)
    text = _ntop_cache.get(key)
    if text is None:
        text = socket.inet_ntop(af, raw if af == socket.AF_INET6 else raw[:4])
        if len(_ntop_cache) > 8192:
            _ntop_cache.clear()
        _ntop_cache[key] = text
    return text


def parse_msg(proto: str, msg: bytes) -> RawSock:
    """An ``inet_diag_msg`` (with its attributes) as a :class:`RawSock`."""
    if len(msg) < MSG_SIZE:
        raise ValueError(f"inet_diag_msg too short: {len(msg)} bytes")
    (
        af,
        state,
        timer,
        retrans,
        sport_b,
        dport_b,
        src_b,
        dst_b,
        ifindex,
        c0,
        c1,
        expires,
        rqueue,
        wqueue,
        uid,
        inode,
    ) = _MSG.unpack_from(msg, 0)
    v6only: bool | None = None
    transparent = False
    if len(msg) > MSG_SIZE:
        for kind, value in iter_attrs(msg, MSG_SIZE, len(msg)):
            if kind == INET_DIAG_SOCKOPT and value:
                transparent = bool(value[0] & SOCKOPT_TRANSPARENT)
            elif kind == INET_DIAG_SKV6ONLY and value and af == socket.AF_INET6:
                v6only = bool(value[0])
    return RawSock(
        proto=proto,
        family=af,
        state=state,
        timer=timer,
        retrans=retrans,
        sport=int.from_bytes(sport_b, "big"),
        dport=int.from_bytes(dport_b, "big"),
        src=_ntop(af, src_b),
        dst=_ntop(af, dst_b),
        ifindex=ifindex,
        cookie=c0 | (c1 << 32),
        expires=expires,
        rqueue=rqueue,
        wqueue=wqueue,
        uid=uid,
        inode=inode,
        v6only=v6only,
        transparent=transparent,
    )


def to_entry(
    raw: RawSock,
    holders: tuple[Holder, ...] = (),
    *,
    former_holders: tuple[Holder, ...] = (),
    first_seen: float = 0.0,
    netns: int = 0,
) -> SocketEntry:
    """The model's :class:`SocketEntry` for one kernel socket."""
    v6only = raw.v6only
    if v6only is None:
        # Only LISTEN/CLOSE sockets report it; a connection to a v4-mapped peer proves "no".
        v6only = False
    remote = None if raw.remote_is_wildcard else Endpoint(raw.dst, raw.dport)
    return SocketEntry(
        proto=raw.proto,
        family=4 if raw.family == socket.AF_INET else 6,
        state=state_text(raw.proto, raw.state),
        local=Endpoint(raw.src, raw.sport),
        remote=remote,
        inode=raw.inode,
        holders=holders,
        uid=raw.uid,
        cookie=raw.cookie,
        rx_queue=raw.rqueue,
        tx_queue=raw.wqueue,
        bound_ifindex=raw.ifindex,
        v6only=v6only,
        former_holders=former_holders,
        first_seen=first_seen,
        netns=netns,
        transparent=raw.transparent,
    )


_NLA = NLA_HDR
_STATE_TEXTS: dict[tuple[str, int], str] = {}


def entry_from_msg(
    proto: str,
    msg: bytes,
    holders: tuple[Holder, ...] = (),
    *,
    former_holders: tuple[Holder, ...] = (),
    first_seen: float = 0.0,
    netns: int = 0,
) -> SocketEntry:
    """``to_entry(parse_msg(proto, msg), ...)`` in one step: a cold table makes one entry for
    every socket (20,000 here), and the :class:`RawSock` in between and the attribute list
    were a third of that work. ``tests/unit/test_sockets.py`` checks that both agree."""
    if len(msg) < MSG_SIZE:
        raise ValueError(f"inet_diag_msg too short: {len(msg)} bytes")
    af, state, _t, _r, sport_b, dport_b, src_b, dst_b, ifindex, c0, c1, _e, rq, wq, uid, inode = (
        _MSG.unpack_from(msg, 0)
    )
    v6only = transparent = False
    offset, end = MSG_SIZE, len(msg)
    while offset + 4 <= end:  # the attributes, read in place (netlink.iter_attrs' rules)
        length, kind = _NLA.unpack_from(msg, offset)
        if length < 4 or offset + length > end:
            break
        kind &= 0x3FFF
        if length > 4:
            if kind == INET_DIAG_SOCKOPT:
                transparent = bool(msg[offset + 4] & SOCKOPT_TRANSPARENT)
            elif kind == INET_DIAG_SKV6ONLY and af == socket.AF_INET6:
                v6only = bool(msg[offset + 4])
        offset += (length + 3) & ~3
    dport = int.from_bytes(dport_b, "big")
    dst = _ntop(af, dst_b)
    text = _STATE_TEXTS.get((proto, state))
    if text is None:
        text = _STATE_TEXTS[(proto, state)] = state_text(proto, state)
    return SocketEntry(
        proto,
        4 if af == socket.AF_INET else 6,
        text,
        Endpoint(_ntop(af, src_b), int.from_bytes(sport_b, "big")),
        None if dport == 0 and is_wildcard(dst) else Endpoint(dst, dport),
        inode,
        holders,
        uid,
        c0 | (c1 << 32),
        rq,
        wq,
        ifindex,
        v6only,
        former_holders,
        first_seen,
        (),
        netns,
        transparent,
    )


class DiagSocket:
    """A NETLINK_SOCK_DIAG channel (one thread at a time), optionally in another netns."""

    def __init__(self, netns_path: str | None = None, *, channel: NetlinkChannel | None = None) -> None:
        self.netns_path = netns_path
        self._channel = channel if channel is not None else NetlinkChannel(NETLINK_SOCK_DIAG, netns_path)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DiagSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump_msgs(self, proto: str, family: int, states: int = ALL_STATES) -> list[bytes]:
        """Every socket of (proto, family) in ``states``, as raw ``inet_diag_msg`` bytes."""
        return self._channel.dump(
            SOCK_DIAG_BY_FAMILY, build_request(proto, family, states=states), SOCK_DIAG_BY_FAMILY
        )

    def dump(self, proto: str, family: int, states: int = ALL_STATES) -> list[RawSock]:
        return [parse_msg(proto, m) for m in self.dump_msgs(proto, family, states)]

    def lookup_exact(
        self,
        proto: str,
        family: int,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        *,
        ifindex: int = 0,
    ) -> list[RawSock]:
        """The socket the kernel's own look-up picks for local ``src:sport``, remote
        ``dst:dport`` (the socket's view, as a dump shows it); ``[]`` when none.

        TCP runs ``inet_lookup``: the established hash (full sockets, unaccepted children,
        request socks, TIME_WAIT), then the listeners, so a remote of ``0.0.0.0:0`` finds
        the listener. UDP runs ``__udp4_lib_lookup`` / ``__udp6_lib_lookup`` (connected and
        unconnected sockets); its request takes the tuple the other way round ("src and
        dst are swapped for historical reasons", ``udp_diag.c``), which is done here.

        An IPv4 tuple needs no extra AF_INET6 try: both requests end in the same IPv4
        look-up (``inet_diag_find_one_icsk`` sends v4-mapped tuples to ``inet_lookup``),
        and that look-up finds dual-stack AF_INET6 sockets, as real IPv4 packets do.
        """
        if proto == "udp":
            req = build_request(
                proto, family, states=ALL_STATES, src=dst, sport=dport, dst=src, dport=sport, ifindex=ifindex
            )
        else:
            req = build_request(
                proto, family, states=ALL_STATES, src=src, sport=sport, dst=dst, dport=dport, ifindex=ifindex
            )
        msgs = self._channel.query(SOCK_DIAG_BY_FAMILY, req, SOCK_DIAG_BY_FAMILY)
        return [parse_msg(proto, m) for m in msgs]

    def lookup_msg(self, proto: str, msg: bytes) -> RawSock | None:
        """The socket a dumped ``inet_diag_msg`` describes, as the kernel has it now (same
        tuple and cookie); ``None`` once it is gone."""
        af, sport, dport = msg[0], int.from_bytes(msg[4:6], "big"), int.from_bytes(msg[6:8], "big")
        src, dst = msg[8:24], msg[24:40]
        if proto == "udp":  # udp_dump_one reads the id the other way round
            src, dst, sport, dport = dst, src, dport, sport
        req = (
            _REQ_HEAD.pack(af, PROTOCOLS[proto], 0, ALL_STATES)
            + _PORTS.pack(sport, dport)
            + src
            + dst
            + msg[40:52]
        )
        found = self._channel.query(SOCK_DIAG_BY_FAMILY, req, SOCK_DIAG_BY_FAMILY)
        return parse_msg(proto, found[0]) if found else None


_local = threading.local()


def _default_socket() -> DiagSocket:
    sock: DiagSocket | None = getattr(_local, "diag", None)
    if sock is None:
        sock = DiagSocket()
        _local.diag = sock
    return sock


def dump(proto: str, family: int) -> list[RawSock]:
    """Every ``proto`` socket of ``family`` (AF_* or 4/6) in the current namespace, all states."""
    return _default_socket().dump(proto, family)


def lookup_exact(proto: str, family: int, src: str, sport: int, dst: str, dport: int) -> list[RawSock]:
    """:meth:`DiagSocket.lookup_exact` on this thread's own sock_diag socket."""
    return _default_socket().lookup_exact(proto, family, src, sport, dst, dport)
