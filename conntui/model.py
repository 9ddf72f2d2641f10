"""Plain data shared by every stage: segments, sockets, the socket table and attributions.

Everything here is frozen (or read-only after construction) so the capture thread, the
refresher and the UI can share references without locks. Stdlib only.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

# Linux packet types (linux/if_packet.h), as reported by AF_PACKET for each frame.
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4
PACKET_UNKNOWN = -1  # not recorded (e.g. a classic pcap without SLL headers)

TCP_FLAG_LETTERS = "FSRPAUEC"  # bit 0 (FIN) .. bit 7 (CWR); printed in this order


def tcp_flags_text(bits: int) -> str:
    """TCP flag bits as letters in the fixed order FSRPAUEC ("S", "SA", "PA", "FA", "R")."""
    return "".join(letter for i, letter in enumerate(TCP_FLAG_LETTERS) if bits & (1 << i))


def unmap(addr: str) -> str:
    """The address a v4-mapped IPv6 address stands for (``::ffff:1.2.3.4`` → ``1.2.3.4``).

    Dual-stack sockets show IPv4 peers this way; the kernel matches them against plain IPv4
    segments, so every index key uses the unmapped form.
    """
    if addr.startswith("::ffff:") and "." in addr:
        return addr[7:]
    return addr


def is_wildcard(addr: str) -> bool:
    return addr in ("0.0.0.0", "::")


class Proto(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


class Match(enum.StrEnum):
    """How the kernel found (or failed to find) the socket that receives a segment."""

    ESTABLISHED = "established"  # 4-tuple hit in the established hash, a process holds it
    LISTENER = "listener"  # SYN handed to a listening socket
    ACCEPT_QUEUE = "accept_queue"  # child socket, connected but not yet accept()ed: no fd
    SYN_RECV = "syn_recv"  # request sock (handshake half done), owned by the listener
    TIME_WAIT = "time_wait"  # kernel-owned remains of a closed connection
    UDP_CONNECTED = "udp_connected"  # UDP socket connect()ed to exactly this peer
    UDP_UNCONNECTED = "udp_unconnected"  # UDP socket bound to the port, any peer
    NONE = "none"  # no socket: the kernel answers RST (TCP) or ICMP port unreachable (UDP)
    NOT_LOCAL = "not_local"  # the destination is not an address of this host
    UNKNOWN = "unknown"  # should have matched, but the table had nothing


# TCP states as the kernel numbers them (include/net/tcp_states.h).
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}


def endpoint_text(addr: str, port: int) -> str:
    """``1.2.3.4:80``, ``[::1]:80``: an address and port as people write them."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address and port; ``addr`` is the compressed text form (``::1``, ``127.0.0.1``)."""

    addr: str
    port: int

    def __str__(self) -> str:
        return endpoint_text(self.addr, self.port)

    @property
    def key_addr(self) -> str:
        """The address as indexes use it (v4-mapped IPv6 unmapped)."""
        return unmap(self.addr)


class FlowKey(NamedTuple):
    """A directed 5-tuple (what a segment carries); a NamedTuple: built per packet."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int

    def reversed(self) -> FlowKey:
        return FlowKey(self.proto, self.dst, self.dport, self.src, self.sport)


class Segment(NamedTuple):
    """One decoded TCP or UDP segment, as seen on one interface.

    A NamedTuple rather than a frozen dataclass: it is built once per packet on the hot path
    and a tuple is about five times cheaper to construct, with the same immutability.
    """

    ts: float  # capture time, epoch seconds
    iface: str  # interface name ("lo"), or "" when unknown (e.g. a classic pcap)
    proto: str  # "tcp" | "udp"
    family: int  # 4 | 6
    src: str  # compressed text form
    sport: int
    dst: str
    dport: int
    flags: str = ""  # TCP flags as letters in FSRPAUEC order; "" for UDP
    payload_len: int = 0
    seq: int = 0
    ack: int = 0
    window: int = 0
    pkttype: int = PACKET_HOST  # PACKET_HOST, PACKET_OUTGOING, ... (-1 when unknown)
    ifindex: int = 0
    wire_len: int = 0  # length of the whole frame on the wire
    payload_preview: bytes = b""  # the first bytes of the payload (at most 64)

    @property
    def key(self) -> FlowKey:
        return FlowKey(self.proto, self.src, self.sport, self.dst, self.dport)

    @property
    def is_syn(self) -> bool:
        """A connection request: SYN without ACK."""
        return "S" in self.flags and "A" not in self.flags


@dataclass(frozen=True, slots=True)
class Holder:
    """A process holding a socket through one of its file descriptors."""

    pid: int
    fd: int
    process: str  # the process name (comm), shown literally, never as markup


@dataclass(frozen=True, slots=True)
class SocketEntry:
    """One kernel socket (full socket, request sock or TIME_WAIT entry) and its holders."""

    proto: str  # "tcp" | "udp"
    family: int  # 4 | 6: the socket's own family (a dual-stack [::] socket is 6)
    state: str  # "LISTEN", "ESTABLISHED", "SYN_RECV", "TIME_WAIT", ... ; UDP: "UNCONN"/"ESTABLISHED"
    local: Endpoint  # as the kernel shows it (``::ffff:127.0.0.1`` on dual-stack sockets)
    remote: Endpoint | None  # None for listeners and unconnected UDP sockets
    inode: int = 0  # 0: no struct socket (TIME_WAIT, request sock, unaccepted child, orphan)
    holders: tuple[Holder, ...] = ()
    uid: int = 0
    cookie: int = 0  # sock_diag cookie: stable for the life of the socket (also in TIME_WAIT)
    rx_queue: int = 0  # LISTEN: accept-queue length; else bytes not yet read
    tx_queue: int = 0  # LISTEN: backlog (min(backlog, somaxconn)); else bytes not yet acked
    bound_ifindex: int = 0  # SO_BINDTODEVICE, 0 if none
    v6only: bool = False  # IPV6_V6ONLY (AF_INET6 sockets only)
    former_holders: tuple[Holder, ...] = ()  # who held it before close() (remembered)
    first_seen: float = 0.0  # when the refresher first saw this socket (epoch seconds)

    @property
    def is_listener(self) -> bool:
        return self.state == "LISTEN"

    @property
    def kernel_owned(self) -> bool:
        return not self.holders

    def describe(self) -> str:
        """``nginx[1234] fd 6`` (first holder), or ``kernel`` when no process holds it."""
        if not self.holders:
            return "kernel"
        first = self.holders[0]
        more = f" (+{len(self.holders) - 1})" if len(self.holders) > 1 else ""
        return f"{first.process}[{first.pid}] fd {first.fd}{more}"


@functools.lru_cache(maxsize=4096)
def _is_loopback(addr: str) -> bool:
    if addr.startswith("127.") or addr == "::1":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Lookup:
    """One step of the emulated kernel lookup, for the explanation pane."""

    what: str  # e.g. "established hash (127.0.0.1:8080 ← 127.0.0.1:51234)"
    result: str  # e.g. "hit: ESTABLISHED, nginx[12] fd 7" or "miss"


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who sends and who receives one segment, and why the kernel chose the receiver."""

    match: Match
    receiver: SocketEntry | None = None
    sender: SocketEntry | None = None
    explain: str = ""
    steps: tuple[Lookup, ...] = ()
    listener: SocketEntry | None = None  # the parent listener (accept_queue, syn_recv)
    candidates: tuple[SocketEntry, ...] = ()  # e.g. every member of a SO_REUSEPORT group
    sender_explain: str = ""
    # What the kernel then did, seen in later segments (verify.py): "answered by the kernel's
    # RST (#12)", "dropped: accept queue full", ... and the records those notes point at.
    notes: tuple[str, ...] = ()
    related: tuple[int, ...] = ()


TupleKey = tuple[str, str, int, str, int]


def _tuple_key(e: SocketEntry) -> TupleKey | None:
    """(proto, local addr, local port, remote addr, remote port) with addresses unmapped."""
    r = e.remote
    if r is None or r.port == 0:
        return None
    la, ra = e.local.addr, r.addr
    if la.startswith("::ffff:"):
        la = unmap(la)
    if ra.startswith("::ffff:"):
        ra = unmap(ra)
    return (e.proto, la, e.local.port, ra, r.port)


def _on_port(e: SocketEntry) -> bool:
    return e.remote is None or e.remote.port == 0 or e.proto == "udp"


class SocketTable:
    """An immutable snapshot of the socket table with the indexes the demux needs.

    Built by ``sockets``; read by ``demux``. Never mutated after construction: the refresher
    builds a new one (``refresh``, or ``with_entries`` on a miss) and swaps the reference.
    """

    __slots__ = (
        "_by_cookie",
        "_by_local",
        "_by_tuple",
        "entries",
        "ifnames",
        "local_addrs",
        "taken_at",
    )

    def __init__(
        self,
        entries: Iterable[SocketEntry] = (),
        *,
        taken_at: float = 0.0,
        local_addrs: Iterable[str] = (),
        ifnames: dict[int, str] | None = None,
    ) -> None:
        self.entries: tuple[SocketEntry, ...] = tuple(entries)
        self.taken_at = taken_at
        self.local_addrs: frozenset[str] = frozenset(unmap(a) for a in local_addrs)
        self.ifnames: dict[int, str] = dict(ifnames or {})
        # (proto, local addr, local port, remote addr, remote port) → sockets, in table order
        self._by_tuple: dict[TupleKey, list[SocketEntry]] = {}
        # (proto, local port) → sockets with no remote end (listeners, unconnected UDP),
        # plus connected UDP sockets (they are also reached through the port).
        self._by_local: dict[tuple[str, int], list[SocketEntry]] = {}
        self._by_cookie: dict[tuple[str, int], SocketEntry] = {}
        by_tuple, by_local, by_cookie = self._by_tuple, self._by_local, self._by_cookie
        for e in self.entries:
            key = _tuple_key(e)
            if key is not None:
                lst = by_tuple.get(key)
                if lst is None:
                    by_tuple[key] = [e]
                else:
                    lst.append(e)
            if _on_port(e):
                pkey = (e.proto, e.local.port)
                plst = by_local.get(pkey)
                if plst is None:
                    by_local[pkey] = [e]
                else:
                    plst.append(e)
            if e.cookie:
                by_cookie[(e.proto, e.cookie)] = e

    def connected(self, proto: str, laddr: str, lport: int, raddr: str, rport: int) -> list[SocketEntry]:
        """Sockets whose (local, remote) is exactly this 4-tuple (addresses unmapped)."""
        return self._by_tuple.get((proto, unmap(laddr), lport, unmap(raddr), rport), [])

    def on_port(self, proto: str, lport: int) -> list[SocketEntry]:
        """Listeners and UDP sockets bound to a local port, in table order."""
        return self._by_local.get((proto, lport), [])

    def by_cookie(self, proto: str, cookie: int) -> SocketEntry | None:
        return self._by_cookie.get((proto, cookie))

    def is_local(self, addr: str) -> bool:
        """Whether ``addr`` is an address of this host (every loopback address is)."""
        a = unmap(addr)
        return a in self.local_addrs or _is_loopback(a)

    def ifname(self, ifindex: int) -> str:
        return self.ifnames.get(ifindex, str(ifindex) if ifindex else "")

    def with_entries(
        self,
        extra: Iterable[SocketEntry],
        *,
        removed: Iterable[SocketEntry] = (),
        taken_at: float | None = None,
    ) -> SocketTable:
        """A new table with ``extra`` sockets put first, replacing any older view of the same
        socket (same cookie) or of the same connection (same 4-tuple), and without the
        ``removed`` sockets (ones the kernel no longer has).

        Runs on the capture thread on a miss, so it patches the indexes instead of
        rebuilding them: the cost grows with the few keys touched, not the table.
        """
        # one view per socket (the last one given wins)
        extra = tuple({(e.proto, e.cookie) if e.cookie else id(e): e for e in extra}.values())
        gone: dict[int, SocketEntry] = {id(e): e for e in removed}
        swap: dict[int, SocketEntry] = {}  # id(old view) → new view of the same socket
        front: list[SocketEntry] = []
        for e in extra:
            old = self._by_cookie.get((e.proto, e.cookie)) if e.cookie else None
            if old is not None and id(old) not in gone:
                swap[id(old)] = e  # keeps its place: table order is the kernel's bucket order
            else:
                front.append(e)
        for e in extra:
            key = _tuple_key(e) if e.proto == "tcp" else None
            if key is not None:
                for o in self._by_tuple.get(key, ()):
                    if o.cookie != e.cookie and id(o) not in swap:
                        gone[id(o)] = o  # another TCP connection on this 4-tuple: superseded
        new = SocketTable.__new__(SocketTable)
        new.taken_at = self.taken_at if taken_at is None else taken_at
        new.local_addrs = self.local_addrs
        new.ifnames = self.ifnames
        new.entries = (*front, *(swap.get(id(x), x) for x in self.entries if id(x) not in gone))
        by_tuple = dict(self._by_tuple)
        by_local = dict(self._by_local)
        by_cookie = dict(self._by_cookie)

        def patch(index: dict[Any, list[SocketEntry]], key: Any, keyfn: Callable[[SocketEntry], Any]) -> None:
            kept: list[SocketEntry] = []
            for x in index[key]:
                if id(x) in gone:
                    continue
                y = swap.get(id(x))
                if y is None:
                    kept.append(x)
                elif keyfn(y) == key:
                    kept.append(y)  # the same socket's newer view, in the same place
            if kept:
                index[key] = kept
            else:
                del index[key]

        touched_t: set[TupleKey] = set()
        touched_p: set[tuple[str, int]] = set()
        for old in (*gone.values(), *(x for x in self.entries if id(x) in swap)):
            key = _tuple_key(old)
            if key is not None and key in by_tuple:
                touched_t.add(key)
            if _on_port(old) and (old.proto, old.local.port) in by_local:
                touched_p.add((old.proto, old.local.port))
            if old.cookie and by_cookie.get((old.proto, old.cookie)) is old:
                del by_cookie[(old.proto, old.cookie)]
        for key in touched_t:
            patch(by_tuple, key, _tuple_key)
        for pkey in touched_p:
            patch(by_local, pkey, lambda e: (e.proto, e.local.port) if _on_port(e) else None)
        moved_t: set[TupleKey] = set()
        moved_p: set[tuple[str, int]] = set()
        for e in swap.values():  # a new view whose keys changed (e.g. a UDP socket connect()ed)
            key = _tuple_key(e)
            if key is not None and not any(x is e for x in by_tuple.get(key, ())):
                moved_t.add(key)
            pkey = (e.proto, e.local.port)
            if _on_port(e) and not any(x is e for x in by_local.get(pkey, ())):
                moved_p.add(pkey)
            by_cookie[(e.proto, e.cookie)] = e
        for e in reversed(front):  # new sockets go first, in their own order
            key = _tuple_key(e)
            if key is not None:
                by_tuple[key] = [e, *by_tuple.get(key, ())]
            if _on_port(e):
                pkey = (e.proto, e.local.port)
                by_local[pkey] = [e, *by_local.get(pkey, ())]
            if e.cookie:
                by_cookie[(e.proto, e.cookie)] = e
        if moved_t or moved_p:  # rare: rebuild just those keys, in table order
            for key in moved_t:
                by_tuple[key] = [x for x in new.entries if _tuple_key(x) == key]
            for pkey in moved_p:
                by_local[pkey] = [x for x in new.entries if _on_port(x) and (x.proto, x.local.port) == pkey]
        new._by_tuple = by_tuple
        new._by_local = by_local
        new._by_cookie = by_cookie
        return new

    def __len__(self) -> int:
        return len(self.entries)


class Frame(NamedTuple):
    """A captured frame as the capture source hands it on (no decoding yet).

    A NamedTuple, like ``Segment``: one is built for every packet on the capture thread, and
    a frozen dataclass costs about 1.5 µs to build (a ``__setattr__`` call per field)."""

    ts: float
    data: bytes
    linktype: int  # pcap LINKTYPE_* of ``data`` (1 Ethernet, 101 raw IP, 113 SLL, 276 SLL2)
    iface: str = ""
    ifindex: int = 0
    pkttype: int = PACKET_HOST
    protocol: int = 0  # ethertype from the packet socket (cooked capture), 0 if unknown
    wire_len: int = 0
    comment: str = ""  # a pcapng per-packet comment, when read from a file


@dataclass(slots=True)
class Record:
    """One row of the session: the frame, its decoded segment and its attribution."""

    seq: int
    frame: Frame
    segment: Segment
    attribution: Attribution
