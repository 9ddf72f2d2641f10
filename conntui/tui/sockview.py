"""The socket table grouped the way the kernel demultiplexes (no Textual here).

TCP: each listener with the connections it spawned under it (its accepted children, the
ones still in its accept queue, request socks, TIME_WAIT remains), then client sockets by
process. UDP: sockets by process. The display filter applies to a socket as it would to a
segment delivered to that socket, so ``8080``, ``pid:``, ``proc:``, ``ctr:``, ``netns:``,
``host:`` and ``match:`` all mean the same thing in both panes.

Sockets live in network namespaces: a container's listener on port 80 and the host's are two
listeners, and a connection is only ever spawned by a listener of its own namespace. When the
sockets come from more than one namespace, the view groups them by namespace first (conntui's
own first, then the others, each named by the containers its holders run in, else by its
inode); with one namespace the view is exactly what it was without that level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..filters import DisplayFilter
from ..model import Attribution, Container, Match, Proto, Segment, SocketEntry, is_wildcard
from .feed import SocketKey, socket_key

SECTION_LISTEN = "tcp-listen"
SECTION_TCP = "tcp-conn"
SECTION_UDP = "udp"
SECTION_TITLES = {
    SECTION_LISTEN: "TCP listening ports",
    SECTION_TCP: "TCP connections (client side and orphans), by process",
    SECTION_UDP: "UDP sockets, by process",
}
_STATE_ORDER = {"LISTEN": 0, "SYN_RECV": 1, "NEW_SYN_RECV": 1, "ESTABLISHED": 2, "UNCONN": 2}


def state_match(sock: SocketEntry) -> Match:
    """The match a segment delivered to this socket would get."""
    if sock.proto == Proto.UDP:
        return Match.UDP_CONNECTED if sock.remote is not None and sock.remote.port else Match.UDP_UNCONNECTED
    if sock.state == "LISTEN":
        return Match.LISTENER
    if sock.state in ("SYN_RECV", "NEW_SYN_RECV"):
        return Match.SYN_RECV
    if sock.state == "TIME_WAIT":
        return Match.TIME_WAIT
    if not sock.holders and sock.inode == 0 and sock.state == "ESTABLISHED":
        return Match.ACCEPT_QUEUE
    return Match.ESTABLISHED


def socket_passes(sock: SocketEntry, flt: DisplayFilter | None) -> bool:
    """Whether a segment the kernel delivers to ``sock`` would pass ``flt``."""
    if flt is None or not flt:
        return True
    r = sock.remote
    seg = Segment(
        ts=0.0,
        iface="",
        proto=sock.proto,
        family=sock.family,
        src=r.key_addr if r else "",
        sport=r.port if r else 0,
        dst=sock.local.key_addr,
        dport=sock.local.port,
    )
    return flt(seg, Attribution(match=state_match(sock), receiver=sock))


@dataclass
class SocketGroup:
    """A listener and its connections, or the sockets of one process."""

    key: str
    section: str
    listener: SocketEntry | None = None  # SECTION_LISTEN groups
    pid: int | None = None  # process groups (None: kernel-owned sockets)
    process: str = ""
    rows: list[SocketEntry] = field(default_factory=list)
    hidden: int = 0  # rows left out to keep the view bounded
    dimmed: bool = False  # shown only as the parent of rows that pass the filter
    netns: int = 0  # the network namespace of its sockets (0: not read)


@dataclass(frozen=True)
class NetnsGroup:
    """One network namespace of the view: what names it (shown only when the view has
    sockets of more than one namespace)."""

    inode: int  # 0: sockets whose namespace was not read
    primary: bool  # conntui's own namespace (the one it captures in)
    containers: tuple[Container, ...] = ()  # the containers its sockets' holders run in
    note: str = ""  # what else names it (``ip netns`` name, how old its table is)

    @property
    def title(self) -> str:
        """``ctr web (podman)  netns:4026532246``, ``conntui's namespace  netns:4026531840``,
        ``netns:4026532300``: the containers, else whose namespace it is, and always the
        inode a ``netns:`` filter takes."""
        parts: list[str] = []
        if self.containers:
            names = (f"{c.label} ({c.runtime})" if c.runtime else c.label for c in self.containers)
            parts.append("ctr " + ", ".join(names))
        elif self.primary:
            parts.append("conntui's namespace")
        parts.append(f"netns:{self.inode}" if self.inode else "namespace not read")
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)


@dataclass
class SocketView:
    groups: list[SocketGroup]
    hidden_groups: int = 0
    total: int = 0  # sockets that pass the filter
    # the namespaces, in order, when sockets of more than one are in the table; else empty
    namespaces: list[NetnsGroup] = field(default_factory=list)

    def signature(self) -> tuple[object, ...]:
        """Changes exactly when the tree's shape changes (not its counters)."""
        shape = [(g.key, g.hidden > 0, tuple(socket_key(s) for s in g.rows)) for g in self.groups]
        spaces = [(n.inode, n.title) for n in self.namespaces]
        return (*shape, self.hidden_groups, *spaces)

    def by_section(self, section: str, netns: int | None = None) -> list[SocketGroup]:
        """The groups of ``section`` (of namespace ``netns`` when given)."""
        return [g for g in self.groups if g.section == section and (netns is None or g.netns == netns)]


def _family_fits(listener: SocketEntry, sock: SocketEntry) -> bool:
    if listener.family == sock.family:
        return True
    return listener.family == 6 and not listener.v6only and "." in sock.local.key_addr


def _parent(
    sock: SocketEntry, netns: int, listeners: dict[tuple[int, int], list[SocketEntry]]
) -> SocketEntry | None:
    """The listener that spawned ``sock``: one of its own namespace (the kernel looks a SYN
    up in the namespace that receives it), on its port, of a family that fits."""
    best: SocketEntry | None = None
    for lst in listeners.get((netns, sock.local.port), ()):
        if not _family_fits(lst, sock):
            continue
        if lst.local.key_addr == sock.local.key_addr:
            return lst
        if best is None and is_wildcard(lst.local.key_addr):
            best = lst
    return best


def _sort_key(sock: SocketEntry) -> tuple[object, ...]:
    r = sock.remote
    return (
        _STATE_ORDER.get(sock.state, 3),
        sock.local.port,
        sock.local.addr,
        r.addr if r else "",
        r.port if r else 0,
    )


def _containers(socks: Iterable[SocketEntry]) -> tuple[Container, ...]:
    """The containers the holders of ``socks`` run in, each once, in order of first sight."""
    seen: dict[Container, None] = {}
    for s in socks:
        for h in (*s.holders, *s.former_holders):
            if h.container is not None:
                seen.setdefault(h.container, None)
    return tuple(seen)


def build_view(
    entries: Iterable[SocketEntry],
    flt: DisplayFilter | None = None,
    *,
    max_rows_per_group: int = 40,
    max_rows: int = 600,
    primary_netns: int = 0,
    netns_notes: Mapping[int, str] | None = None,
) -> SocketView:
    """The view of ``entries`` passing ``flt``. ``primary_netns``: conntui's own namespace
    (shown first; a socket whose namespace was not read, 0, is taken to be in it);
    ``netns_notes``: more text naming a namespace (its ``ip netns`` name, its table's age)."""
    entries = list(entries)

    def ns_of(e: SocketEntry) -> int:
        return e.netns or primary_netns

    by_ns: dict[int, list[SocketEntry]] = {}
    for e in entries:
        by_ns.setdefault(ns_of(e), []).append(e)
    several = len(by_ns) > 1
    listeners: dict[tuple[int, int], list[SocketEntry]] = {}
    for e in entries:
        if e.proto == Proto.TCP and e.state == "LISTEN":
            listeners.setdefault((ns_of(e), e.local.port), []).append(e)
    groups: dict[str, SocketGroup] = {}
    shown_listeners: set[str] = set()

    def prefix(ns: int) -> str:
        # one namespace: the keys the view always had (the tree remembers folds by key)
        return f"{ns}/" if several else ""

    def listener_key(lst: SocketEntry) -> str:
        ns = ns_of(lst)
        return f"{prefix(ns)}L:{lst.family}:{lst.local.addr}:{lst.local.port}:{lst.cookie or lst.inode}"

    for (ns, _port), lst_list in listeners.items():
        for lst in lst_list:
            key = listener_key(lst)
            groups[key] = SocketGroup(key, SECTION_LISTEN, listener=lst, netns=ns)
            if socket_passes(lst, flt):
                shown_listeners.add(key)

    total = len(shown_listeners)
    for e in entries:
        if e.proto == Proto.TCP and e.state == "LISTEN":
            continue
        if not socket_passes(e, flt):
            continue
        total += 1
        ns = ns_of(e)
        parent = _parent(e, ns, listeners) if e.proto == Proto.TCP else None
        if parent is not None:
            groups[listener_key(parent)].rows.append(e)
            continue
        section = SECTION_UDP if e.proto == Proto.UDP else SECTION_TCP
        holder = e.holders[0] if e.holders else None
        key = f"{prefix(ns)}{section}:{holder.pid if holder else 'kernel'}"
        group = groups.get(key)
        if group is None:
            group = groups[key] = SocketGroup(
                key,
                section,
                pid=holder.pid if holder else None,
                process=holder.process if holder else "",
                netns=ns,
            )
        group.rows.append(e)

    ordered: list[SocketGroup] = []
    for key, g in groups.items():
        if g.section == SECTION_LISTEN:
            if key not in shown_listeners and not g.rows:
                continue
            g.dimmed = key not in shown_listeners
        ordered.append(g)

    spaces: dict[int, NetnsGroup] = {}
    rank: dict[int, tuple[object, ...]] = {}
    if several:
        notes = netns_notes or {}
        for ns, socks in by_ns.items():
            spaces[ns] = NetnsGroup(ns, ns == primary_netns, _containers(socks), notes.get(ns, ""))
        # conntui's own namespace first, then sockets whose holders run in no container,
        # then by name (the same order every refresh)
        for ns, n in spaces.items():
            rank[ns] = (not n.primary, bool(n.containers), n.title.lower(), ns)

    def group_order(g: SocketGroup) -> tuple[object, ...]:
        section = (SECTION_LISTEN, SECTION_TCP, SECTION_UDP).index(g.section)
        where = rank.get(g.netns, ())
        if g.listener is not None:
            return (*where, section, g.listener.local.port, g.listener.family, g.listener.local.addr)
        return (*where, section, g.pid is None, (g.process or "").lower(), g.pid or 0)

    ordered.sort(key=group_order)
    budget = max_rows
    out: list[SocketGroup] = []
    hidden_groups = 0
    for g in ordered:
        if budget <= 0:
            hidden_groups += 1
            continue
        g.rows.sort(key=_sort_key)
        cap = min(max_rows_per_group, budget)
        if len(g.rows) > cap:
            g.hidden = len(g.rows) - cap
            g.rows = g.rows[:cap]
        budget -= len(g.rows) + 1
        out.append(g)
    shown_spaces = {g.netns for g in out}
    namespaces = sorted((n for ns, n in spaces.items() if ns in shown_spaces), key=lambda n: rank[n.inode])
    return SocketView(out, hidden_groups, total, namespaces)


def child_kind(sock: SocketEntry) -> str:
    """How a socket under a listener stands: accepted, in the accept queue, half open, ..."""
    m = state_match(sock)
    if m == Match.ACCEPT_QUEUE:
        return "in accept queue"
    if m == Match.SYN_RECV:
        return "handshake"
    if sock.state == "TIME_WAIT":
        return "time-wait"
    if not sock.holders:
        return "kernel"
    return "accepted"


def key_of(sock: SocketEntry) -> SocketKey:
    return socket_key(sock)
