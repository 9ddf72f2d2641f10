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
class Container:
    """The container a process runs in, as its cgroup path and the runtime's own state
    files tell (``sockets/containers.py``). Every text is shown literally, never as markup.
    """

    id: str  # the runtime's container id from the cgroup path ("" when only a pod is known)
    name: str = ""  # from the runtime's state file; "" when unknown (not readable, no entry)
    runtime: str = ""  # "docker", "podman", "cri-o", "containerd"; "" when no known one
    pod: str = ""  # the Kubernetes pod uid (or podman pod id) the cgroup path names, or ""

    @property
    def label(self) -> str:
        """What a row shows: the name, else the short id (12 characters, as docker and
        podman print it), else the pod."""
        if self.name:
            return self.name
        if self.id:
            return self.id[:12]
        return f"pod {self.pod}" if self.pod else "?"


@dataclass(frozen=True, slots=True)
class Holder:
    """A process holding a socket through one of its file descriptors."""

    pid: int
    fd: int
    process: str  # the process name (comm), shown literally, never as markup
    container: Container | None = None  # None: not in a container conntui recognises


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
    # a process holds it whose /proc/PID/fd conntui may not read (pids, by the socket's uid)
    unreadable: tuple[int, ...] = ()
    netns: int = 0  # the network namespace's inode (``/proc/PID/ns/net``); 0 when not read
    # IP_TRANSPARENT (sock_diag's INET_DIAG_SOCKOPT): may take segments for non-local
    # addresses that a TPROXY rule steers to it. False when not reported (TIME_WAIT, requests).
    transparent: bool = False

    @property
    def is_listener(self) -> bool:
        return self.state == "LISTEN"

    @property
    def kernel_owned(self) -> bool:
        return not self.holders

    def describe(self) -> str:
        """``nginx[1234] fd 6`` (first holder), or ``kernel`` when no process holds it."""
        if not self.holders:
            return _unreadable_text(self.unreadable) if self.unreadable else "kernel"
        first = self.holders[0]
        more = f" (+{len(self.holders) - 1})" if len(self.holders) > 1 else ""
        return f"{first.process}[{first.pid}] fd {first.fd}{more}"


def _unreadable_text(pids: tuple[int, ...]) -> str:
    """Who may hold a socket conntui could not see held: never "kernel"."""
    who = ", ".join(map(str, pids[:3])) + (", ..." if len(pids) > 3 else "")
    return f"holder could not be read (/proc/PID/fd denied: pid {who})"


@functools.lru_cache(maxsize=4096)
def _is_loopback(addr: str) -> bool:
    if addr.startswith("127.") or addr == "::1":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _port_in(spec: str, port: int) -> bool:
    """``80``, ``80:90``, ``80-90`` or ``53,80`` contains ``port``."""
    for part in spec.split(","):
        lo, _, hi = part.replace("-", ":").partition(":")
        if lo.isdigit() and (int(lo) <= port <= int(hi) if hi.isdigit() else int(lo) == port):
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _addr_in(spec: str, addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr) in ipaddress.ip_network(spec, strict=False)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class TproxyRule:
    """One TPROXY rule as read from the ruleset (``sockets.tproxy``).

    ``proto``, ``dst`` and ``dports`` are the rule's own matches ("" for any; a leading "!"
    negates); ``other`` is set when the rule has conditions conntui does not evaluate.
    """

    family: int  # 4 | 6
    proto: str  # "tcp" | "udp" | ""
    dst: str  # "203.0.113.0/24" | ""
    dports: str  # "53" | "1000:2000" | ""
    on_port: int  # 0: the segment's own destination port
    on_ip: str  # "" or "0.0.0.0": the receiving device's primary address
    mark: str  # "0x1/0xffffffff" ("" when none)
    source: str  # "iptables" | "ip6tables" | "nft"
    text: str  # the rule as read, for the explanation
    other: bool = False

    def applies(self, seg: Segment) -> bool:
        """Whether this rule's understood matches take ``seg`` (``other`` ones are not checked)."""
        if seg.family != self.family:
            return False
        for spec, test in (
            (self.proto, lambda v: v == seg.proto),
            (self.dst, lambda v: _addr_in(v, unmap(seg.dst))),
            (self.dports, lambda v: _port_in(v, seg.dport)),
        ):
            if spec:
                neg = spec.startswith("!")
                if test(spec[1:] if neg else spec) == neg:
                    return False
        return True

    def port_for(self, seg: Segment) -> int:
        return self.on_port or seg.dport

    def describe(self) -> str:
        on_ip = f" --on-ip {self.on_ip}" if self.on_ip and not is_wildcard(self.on_ip) else ""
        mark = f" --tproxy-mark {self.mark}" if self.mark else ""
        cond = "; it has conditions conntui does not check, so it may not apply" if self.other else ""
        port = self.on_port or "(same port)"
        return f"TPROXY --on-port {port}{on_ip}{mark} ({self.source}: {self.text}){cond}"


@dataclass(frozen=True, slots=True)
class TproxyRules:
    """The namespace's TPROXY rules and why some could not be read (readers that failed)."""

    rules: tuple[TproxyRule, ...] = ()
    errors: tuple[str, ...] = ()

    def matching(self, seg: Segment) -> tuple[TproxyRule, ...]:
        return tuple(r for r in self.rules if r.applies(seg))


@dataclass(frozen=True, slots=True)
class SkLookup:
    """BPF sk_lookup programs attached to the namespace (``sockets.bpf``); ``error``: why
    they could not be listed."""

    programs: tuple[str, ...] = ()
    error: str = ""
    # BPF_PROG_TYPE_SK_REUSEPORT programs loaded on the host (any namespace): one may be
    # attached to a SO_REUSEPORT group and pick its member instead of the hash
    reuseport: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lookup:
    """One step of the emulated kernel lookup, for the explanation pane."""

    what: str  # e.g. "established hash (127.0.0.1:8080 ← 127.0.0.1:51234)"
    result: str  # e.g. "hit: ESTABLISHED, nginx[12] fd 7" or "miss"


@dataclass(frozen=True, slots=True)
class KernelVerdict:
    """The kernel's own word on one segment (its tracepoints), beside conntui's prediction."""

    verdict: str  # "dropped" | "reset" | "delivered" | "sent"
    source: str  # the tracepoint that said so ("skb:kfree_skb", "sock:inet_sock_set_state", ...)
    reason: str = ""  # the kernel's reason (skb_drop_reason / sk_rst_reason names)
    socket: str = ""  # the socket the kernel had then, as "STATE local ↔ remote" ("" for none)

    def text(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        where = f", socket {self.socket}" if self.socket else ""
        return f"{self.verdict}{why}{where} [{self.source}]"


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
    # The kernel's own record of this segment (None: it published nothing conntui saw), and
    # whether it agrees with the prediction made from the socket table (None: nothing to compare).
    kernel: KernelVerdict | None = None
    agrees: bool | None = None


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

    ``with_entries`` runs on the capture thread for every miss, so its cost must not grow
    with the table (at 20,000 sockets, rebuilding the entry tuple and copying the indexes
    took ~4 ms). A derived table shares its parent's big indexes and keeps only the keys
    it changed in small overlays; its ``entries`` are a recipe over the last materialised
    tuple (new sockets in front, removed ones, newer views), built when first read. Both are
    folded back in once the changes pile up (``_FOLD_AT``), so look-ups stay two dict reads
    at most and no chain of old tables is kept alive.
    """

    __slots__ = (
        "_cookie_base",
        "_cookie_over",
        "_entries",
        "_local",
        "_recipe",
        "_transparent",
        "_tuple_base",
        "_tuple_over",
        "ifnames",
        "lineage",
        "local_addrs",
        "sk_lookup",
        "taken_at",
        "tproxy",
    )

    _FOLD_AT = 2048  # overlay keys / recipe changes before they are folded in

    def __init__(
        self,
        entries: Iterable[SocketEntry] = (),
        *,
        taken_at: float = 0.0,
        local_addrs: Iterable[str] = (),
        ifnames: dict[int, str] | None = None,
    ) -> None:
        self._entries: tuple[SocketEntry, ...] | None = tuple(entries)
        self._recipe: _Recipe | None = None
        self.taken_at = taken_at
        self.local_addrs: frozenset[str] = frozenset(unmap(a) for a in local_addrs)
        self.ifnames: dict[int, str] = dict(ifnames or {})
        # The namespace's TPROXY rules (set by the source after a refresh); None: not read.
        self.tproxy: TproxyRules | None = None
        # BPF sk_lookup programs on the namespace (set by the source); None: not looked at.
        self.sk_lookup: SkLookup | None = None
        self._transparent: tuple[SocketEntry, ...] | None = None
        # (proto, local addr, local port, remote addr, remote port) → sockets, in table order
        by_tuple: dict[TupleKey, list[SocketEntry]] = {}
        # (proto, local port) → sockets with no remote end (listeners, unconnected UDP),
        # plus connected UDP sockets (they are also reached through the port).
        by_local: dict[tuple[str, int], list[SocketEntry]] = {}
        by_cookie: dict[tuple[str, int], SocketEntry | None] = {}
        for e in self._entries:
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
        self._tuple_base = by_tuple
        self._tuple_over: dict[TupleKey, list[SocketEntry]] = {}  # [] = key removed
        self._local = by_local
        self._cookie_base = by_cookie
        self._cookie_over: dict[tuple[str, int], SocketEntry | None] = {}  # None = removed
        self.lineage: Lineage | None = None  # a full snapshot: related to no other table

    # -- look-ups (the demux's hot path) -----------------------------------------------------

    def _tuple(self, key: TupleKey) -> list[SocketEntry]:
        hit = self._tuple_over.get(key)
        if hit is None:
            return self._tuple_base.get(key, _NONE)
        return hit

    def _cookie(self, key: tuple[str, int]) -> SocketEntry | None:
        over = self._cookie_over
        if key in over:
            return over[key]
        return self._cookie_base.get(key)

    def connected(self, proto: str, laddr: str, lport: int, raddr: str, rport: int) -> list[SocketEntry]:
        """Sockets whose (local, remote) is exactly this 4-tuple (addresses unmapped)."""
        return self._tuple((proto, unmap(laddr), lport, unmap(raddr), rport))

    def on_port(self, proto: str, lport: int) -> list[SocketEntry]:
        """Listeners and UDP sockets bound to a local port, in table order."""
        return self._local.get((proto, lport), _NONE)

    def by_cookie(self, proto: str, cookie: int) -> SocketEntry | None:
        return self._cookie((proto, cookie))

    def is_local(self, addr: str) -> bool:
        """Whether ``addr`` is an address of this host (every loopback address is)."""
        a = unmap(addr)
        return a in self.local_addrs or _is_loopback(a)

    def transparent(self) -> tuple[SocketEntry, ...]:
        """Every IP_TRANSPARENT listener and unconnected UDP socket (computed once per table:
        only segments for non-local addresses ask)."""
        found = self._transparent
        if found is None:
            found = self._transparent = tuple(
                e for e in self.entries if e.transparent and (e.state == "LISTEN" or e.proto == "udp")
            )
        return found

    def ifname(self, ifindex: int) -> str:
        return self.ifnames.get(ifindex, str(ifindex) if ifindex else "")

    # -- every socket ------------------------------------------------------------------------

    @property
    def entries(self) -> tuple[SocketEntry, ...]:
        """Every socket, in table order (the kernel's bucket order within a port)."""
        entries = self._entries
        if entries is None:
            recipe = self._recipe
            if recipe is None:  # built meanwhile on another thread (it sets _entries first)
                built = self._entries
                assert built is not None
                return built
            entries = self._entries = recipe.build()
            self._recipe = None
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def _by_tuple(self) -> dict[TupleKey, list[SocketEntry]]:
        """The whole 4-tuple index as one dict (tests and debugging; look-ups use ``_tuple``)."""
        merged = {**self._tuple_base, **self._tuple_over}
        return {k: v for k, v in merged.items() if v}

    @property
    def _by_local(self) -> dict[tuple[str, int], list[SocketEntry]]:
        return dict(self._local)

    @property
    def _by_cookie(self) -> dict[tuple[str, int], SocketEntry]:
        merged = {**self._cookie_base, **self._cookie_over}
        return {k: v for k, v in merged.items() if v is not None}

    # -- a patched copy ----------------------------------------------------------------------

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

        Runs on the capture thread on a miss: the cost grows with the few keys touched and
        the changes since the last fold, not with the table.
        """
        # one view per socket (the last one given wins)
        extra = tuple({(e.proto, e.cookie) if e.cookie else id(e): e for e in extra}.values())
        gone: dict[int, SocketEntry] = {id(e): e for e in removed}
        swap: dict[int, SocketEntry] = {}  # id(old view) → new view of the same socket
        swapped: list[SocketEntry] = []  # the old views
        front: list[SocketEntry] = []
        for e in extra:
            old = self._cookie((e.proto, e.cookie)) if e.cookie else None
            if old is not None and id(old) not in gone:
                swap[id(old)] = e  # keeps its place: table order is the kernel's bucket order
                swapped.append(old)
            else:
                front.append(e)
        for e in extra:
            key = _tuple_key(e) if e.proto == "tcp" else None
            if key is not None:
                for o in self._tuple(key):
                    if o.cookie != e.cookie and id(o) not in swap:
                        gone[id(o)] = o  # another TCP connection on this 4-tuple: superseded
        new = SocketTable.__new__(SocketTable)
        new.taken_at = self.taken_at if taken_at is None else taken_at
        new.local_addrs = self.local_addrs
        new.ifnames = self.ifnames
        new.tproxy = self.tproxy
        new.sk_lookup = self.sk_lookup
        new._transparent = None
        new._recipe = _Recipe.derive(self, front, gone, swap)
        new._entries = None
        tuple_over = dict(self._tuple_over)
        cookie_over = dict(self._cookie_over)
        by_local = dict(self._local)

        def read_tuple(key: TupleKey) -> list[SocketEntry]:
            hit = tuple_over.get(key)
            return self._tuple_base.get(key, _NONE) if hit is None else hit

        def patched(
            current: list[SocketEntry], key: Any, keyfn: Callable[[SocketEntry], Any]
        ) -> list[SocketEntry]:
            kept: list[SocketEntry] = []
            for x in current:
                if id(x) in gone:
                    continue
                y = swap.get(id(x))
                if y is None:
                    kept.append(x)
                elif keyfn(y) == key:
                    kept.append(y)  # the same socket's newer view, in the same place
            return kept

        touched_t: set[TupleKey] = set()
        touched_p: set[tuple[str, int]] = set()
        for old in (*gone.values(), *swapped):
            key = _tuple_key(old)
            if key is not None and read_tuple(key):
                touched_t.add(key)
            if _on_port(old) and (old.proto, old.local.port) in by_local:
                touched_p.add((old.proto, old.local.port))
            if old.cookie and self._cookie((old.proto, old.cookie)) is old:
                cookie_over[(old.proto, old.cookie)] = None
        for key in touched_t:
            tuple_over[key] = patched(read_tuple(key), key, _tuple_key)
        for pkey in touched_p:
            kept = patched(by_local[pkey], pkey, lambda e: (e.proto, e.local.port) if _on_port(e) else None)
            if kept:
                by_local[pkey] = kept
            else:
                del by_local[pkey]
        moved_t: set[TupleKey] = set()
        moved_p: set[tuple[str, int]] = set()
        for e in swap.values():  # a new view whose keys changed (e.g. a UDP socket connect()ed)
            key = _tuple_key(e)
            if key is not None and not any(x is e for x in read_tuple(key)):
                moved_t.add(key)
            pkey = (e.proto, e.local.port)
            if _on_port(e) and not any(x is e for x in by_local.get(pkey, ())):
                moved_p.add(pkey)
            cookie_over[(e.proto, e.cookie)] = e
        for e in reversed(front):  # new sockets go first, in their own order
            key = _tuple_key(e)
            if key is not None:
                tuple_over[key] = [e, *read_tuple(key)]
            if _on_port(e):
                pkey = (e.proto, e.local.port)
                by_local[pkey] = [e, *by_local.get(pkey, ())]
            if e.cookie:
                cookie_over[(e.proto, e.cookie)] = e
        if moved_t or moved_p:  # rare: rebuild just those keys, in table order
            entries = new.entries
            for key in moved_t:
                tuple_over[key] = [x for x in entries if _tuple_key(x) == key]
            for pkey in moved_p:
                by_local[pkey] = [x for x in entries if _on_port(x) and (x.proto, x.local.port) == pkey]
        new._local = by_local
        changed_t: set[TupleKey] = set()
        changed_p: set[tuple[str, int]] = set()
        for e in (*extra, *gone.values(), *swapped):
            key = _tuple_key(e)
            if key is not None:
                changed_t.add(key)
            if _on_port(e):
                changed_p.add((e.proto, e.local.port))
        new.lineage = Lineage(id(self), frozenset(changed_t), frozenset(changed_p))
        if len(tuple_over) > self._FOLD_AT:
            merged = {**self._tuple_base, **tuple_over}
            new._tuple_base, new._tuple_over = {k: v for k, v in merged.items() if v}, {}
        else:
            new._tuple_base, new._tuple_over = self._tuple_base, tuple_over
        if len(cookie_over) > self._FOLD_AT:
            cmerged = {**self._cookie_base, **cookie_over}
            new._cookie_base, new._cookie_over = {k: v for k, v in cmerged.items() if v is not None}, {}
        else:
            new._cookie_base, new._cookie_over = self._cookie_base, cookie_over
        return new


_NONE: list[SocketEntry] = []  # the empty answer (never mutated)


class Lineage(NamedTuple):
    """How a table derived by ``with_entries`` differs from its parent: a look-up for any
    other 4-tuple or port answers as the parent's did (so answers cached against the parent
    stay true, except those that read these keys)."""

    parent: int  # id() of the parent table (meaningful only while the parent is alive)
    tuples: frozenset[TupleKey]  # (proto, local addr, local port, remote addr, remote port)
    ports: frozenset[tuple[str, int]]  # (proto, local port) of listeners and UDP sockets


class _Recipe:
    """A table's entries as changes over the last materialised tuple ``root``: ``front``
    first, then ``root`` without ``gone`` and with ``swap``'s newer views in place."""

    __slots__ = ("front", "gone", "rev", "root", "swap")

    def __init__(
        self,
        root: tuple[SocketEntry, ...],
        front: tuple[SocketEntry, ...],
        gone: set[int],
        swap: dict[int, SocketEntry],
        rev: dict[int, int],
    ) -> None:
        self.root = root  # holds every root entry, so the ids in ``gone`` and ``swap`` stay theirs
        self.front = front
        self.gone = gone  # ids of root entries left out
        self.swap = swap  # id(root entry) → its newer view
        self.rev = rev  # id(newer view) → id(root entry)

    @staticmethod
    def derive(
        parent: SocketTable,
        front: list[SocketEntry],
        gone: dict[int, SocketEntry],
        swap: dict[int, SocketEntry],
    ) -> _Recipe:
        """``parent``'s entries with new ``front`` sockets, ``gone`` ones left out and
        ``swap``'s newer views in place (ids are of ``parent``'s entries)."""
        p = parent._recipe
        if p is None:
            return _Recipe(
                parent.entries, tuple(front), set(gone), dict(swap), {id(v): k for k, v in swap.items()}
            )
        in_front = {id(y) for y in p.front}
        nfront = (*front, *(swap.get(id(y), y) for y in p.front if id(y) not in gone))
        ngone, nswap, nrev = set(p.gone), dict(p.swap), dict(p.rev)
        for idy in gone:
            if idy in in_front:
                continue
            idx = nrev.pop(idy, idy)  # the root entry this visible one stands for
            nswap.pop(idx, None)
            ngone.add(idx)
        for idy, view in swap.items():
            if idy in in_front:
                continue
            idx = nrev.pop(idy, idy)
            nswap[idx] = view
            nrev[id(view)] = idx
        recipe = _Recipe(p.root, nfront, ngone, nswap, nrev)
        if len(nfront) + len(ngone) + len(nswap) > SocketTable._FOLD_AT:
            return _Recipe(recipe.build(), (), set(), {}, {})
        return recipe

    def build(self) -> tuple[SocketEntry, ...]:
        gone, swap = self.gone, self.swap
        if not gone and not swap:
            return (*self.front, *self.root)
        return (*self.front, *(swap.get(id(x), x) for x in self.root if id(x) not in gone))


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
