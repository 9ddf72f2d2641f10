"""Segments between network namespaces (crossns.py) and the namespace registry
(sockets/namespaces.py), on the forms a host capture really shows for a podman published
port: a client on the host dialled 127.0.0.1:18081, DNAT'd to the container's
10.88.0.8:80 and masqueraded to 10.88.0.1 (addresses and ports as tcpdump showed them)."""

from __future__ import annotations

from conntui.crossns import NatIndex, SegmentCopies, mapping_ends, nat_kind
from conntui.model import Attribution, FlowKey, Match, Segment, SocketTable
from conntui.sockets.conntrack import IPS_DST_NAT, IPS_SRC_NAT, NatMapping
from conntui.sockets.namespaces import NamespaceInfo, NamespaceTables
from conntui.tablesource import ManyNamespaces

ORIG = FlowKey("tcp", "127.0.0.1", 33324, "127.0.0.1", 18081)
REPLY = FlowKey("tcp", "10.88.0.8", 80, "10.88.0.1", 33324)
PUBLISHED = NatMapping("tcp", ORIG, REPLY, IPS_DST_NAT | IPS_SRC_NAT)
CLIENT = ("127.0.0.1", 33324, "127.0.0.1", 18081)  # the client's socket, on the host
SERVER = ("10.88.0.8", 80, "10.88.0.1", 33324)  # httpd's connection, in the container


def seg(
    src: str, sport: int, dst: str, dport: int, flags: str = "A", iface: str = "podman0", **kw: int
) -> Segment:
    return Segment(1.0, iface, "tcp", 4, src, sport, dst, dport, flags, **kw)


def test_every_form_the_tap_shows_finds_both_sockets():
    out = seg("10.88.0.1", 33324, "10.88.0.8", 80, "S")  # podman0/veth Out: translated
    back = seg("10.88.0.8", 80, "10.88.0.1", 33324, "SA")  # veth In: not yet
    half = seg("10.88.0.8", 80, "127.0.0.1", 33324, "SA")  # podman0 In: dst de-SNAT'd, src not
    assert mapping_ends(PUBLISHED, out) == (CLIENT, SERVER)
    assert mapping_ends(PUBLISHED, back) == (SERVER, CLIENT)
    assert mapping_ends(PUBLISHED, half) == (SERVER, CLIENT)
    assert mapping_ends(PUBLISHED, seg("127.0.0.1", 33324, "127.0.0.1", 18081)) == (CLIENT, SERVER)
    assert mapping_ends(PUBLISHED, seg("10.88.0.9", 80, "10.88.0.1", 33324)) is None  # another server
    assert mapping_ends(PUBLISHED, seg("10.88.0.8", 80, "10.88.0.1", 40000)) is None  # another client
    assert nat_kind(PUBLISHED) == "DNAT+SNAT"


def test_a_half_translated_copy_is_found_by_an_endpoint_seen_before():
    index = NatIndex()
    half = seg("10.88.0.8", 80, "127.0.0.1", 33324, "SA")
    assert index.find(half) is None
    index.add(PUBLISHED)
    assert index.find(half) is PUBLISHED
    other = NatMapping(
        "tcp", ORIG._replace(sport=40000), REPLY._replace(dport=40000), IPS_DST_NAT | IPS_SRC_NAT
    )
    index.add(other)  # the server's endpoint now points at the newer connection ...
    assert index.find(half) is PUBLISHED  # ... the client's still finds the right one


def test_copies_are_one_segment_a_retransmission_is_not():
    copies: SegmentCopies[str] = SegmentCopies()
    att = Attribution(Match.LISTENER, explain="x")
    first = seg("10.88.0.1", 33324, "10.88.0.8", 80, "S", seq=7, window=65495)
    copies.add(first, 0, att, "first")
    on_veth = first._replace(iface="veth0", ts=first.ts + 0.00002)
    assert copies.first(on_veth) == (0, att, "first")
    assert copies.first(first._replace(ts=first.ts + 0.00002)) is None  # same device: not a copy
    assert copies.first(on_veth._replace(ts=first.ts + 1.0)) is None  # an RTO later: a retransmission
    assert copies.first(on_veth._replace(seq=8)) is None  # another segment


class FakeSource:
    def __init__(self, inode: int, addrs: list[str]) -> None:
        self.netns_inode = inode
        self.table = SocketTable([], local_addrs=addrs)
        self.refreshed = 0
        self.closed = False

    def current(self) -> SocketTable:
        return self.table

    def refresh(self) -> SocketTable:
        self.refreshed += 1
        return self.table

    def addresses(self) -> set[str]:
        return set(self.table.local_addrs)

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None:
        return None

    def close(self) -> None:
        self.closed = True


def test_namespaces_come_and_go_and_each_address_has_its_owner():
    host = FakeSource(1, ["192.0.2.2", "10.88.0.1"])
    found = {1: NamespaceInfo(1, "/proc/1/ns/net", pid=1), 2: NamespaceInfo(2, "/run/netns/a", "a")}
    made: dict[int, FakeSource] = {}
    addrs = {2: ["10.88.0.8"], 3: ["10.88.0.9"], 4: ["10.88.0.9"]}

    def make(info: NamespaceInfo) -> FakeSource:
        if info.inode == 5:
            raise PermissionError(13, "Permission denied")
        made[info.inode] = FakeSource(info.inode, addrs.get(info.inode, []))
        return made[info.inode]

    spaces = NamespaceTables(host, discover=lambda: dict(found), make_source=make)  # type: ignore[arg-type]
    spaces.refresh()
    assert len(spaces) == 2 and spaces.owner("10.88.0.8") == 2
    assert spaces.owner("127.0.0.1") == 1 and spaces.owner("10.88.0.1") == 1  # loopback stays home
    assert spaces.owner("198.51.100.7") is None  # another host
    found[3] = NamespaceInfo(3, "/proc/300/ns/net", pid=300)
    found[4] = NamespaceInfo(4, "/proc/400/ns/net", pid=400)
    found[5] = NamespaceInfo(5, "/proc/500/ns/net", pid=500)
    del found[2]
    spaces.refresh()
    assert made[2].closed and spaces.owner("10.88.0.8") is None  # gone with its namespace
    assert spaces.owner("10.88.0.9") is None and spaces.owners("10.88.0.9") == (3, 4)  # not guessed
    assert 5 in spaces.errors and "Permission denied" in spaces.errors[5]  # said, and the rest goes on
    # sockets are dumped only in namespaces segments go to (addresses are read in all)
    assert made[3].refreshed == 0
    assert spaces.table(3) is made[3].table and made[3].refreshed == 1
    spaces.refresh()
    assert made[3].refreshed == 2 and made[4].refreshed == 0


def test_a_namespace_made_since_the_refresh_is_found_on_its_first_segment(monkeypatch):
    """A container started after the last refresh: its address is owned by nobody yet, so the
    first segment to it looks for new namespaces (at most every REDISCOVER_EVERY s) instead
    of calling it another host's."""
    from conntui.sockets import namespaces

    host = FakeSource(1, ["192.0.2.2"])
    found = {1: NamespaceInfo(1, "/proc/1/ns/net", pid=1)}
    calls = []

    def discover() -> dict[int, NamespaceInfo]:
        calls.append(1)
        return dict(found)

    made: dict[int, FakeSource] = {}

    def make(info: NamespaceInfo) -> FakeSource:
        made[info.inode] = FakeSource(info.inode, ["10.88.0.20"])
        return made[info.inode]

    clock = [100.0]
    monkeypatch.setattr(namespaces.time, "monotonic", lambda: clock[0])
    spaces = NamespaceTables(host, discover=discover, make_source=make)  # type: ignore[arg-type]
    spaces.refresh()
    found[7] = NamespaceInfo(7, "/proc/700/ns/net", pid=700)  # podman run, just now
    assert spaces.owner("10.88.0.20") == 7 and spaces.table(7) is made[7].table
    n = len(calls)
    assert spaces.owner("198.51.100.7") is None  # another host: looked for at most every 0.5 s
    assert spaces.owner("198.51.100.8") is None and len(calls) == n
    clock[0] += namespaces.REDISCOVER_EVERY
    assert spaces.owner("198.51.100.7") is None and len(calls) == n + 1


def test_namespace_tables_are_the_primary_and_every_other_one_read():
    """What the TUI's socket view shows: conntui's own namespace first, then each other
    namespace whose sockets were read (one never read has no table to show), with its name."""
    host = FakeSource(1, ["192.0.2.2"])
    host.table = SocketTable([], taken_at=10.0, local_addrs=["192.0.2.2"])
    found = {2: NamespaceInfo(2, "/run/netns/web", "web"), 3: NamespaceInfo(3, "/proc/300/ns/net", pid=300)}
    made: dict[int, FakeSource] = {}

    def make(info: NamespaceInfo) -> FakeSource:
        made[info.inode] = FakeSource(info.inode, [f"10.241.0.{info.inode}"])
        return made[info.inode]

    spaces = NamespaceTables(host, discover=lambda: dict(found), make_source=make)  # type: ignore[arg-type]
    spaces.refresh()
    assert isinstance(spaces, ManyNamespaces)
    assert [t.inode for t in spaces.namespace_tables()] == [1]  # the others' sockets not read yet
    made[2].table = SocketTable([], taken_at=9.0, local_addrs=["10.241.0.2"])
    made[3].table = SocketTable([], taken_at=9.5, local_addrs=["10.241.0.3"])
    assert [(t.inode, t.name) for t in spaces.namespace_tables()] == [(1, ""), (2, "web"), (3, "")]
    assert spaces.namespace_tables()[1].table is made[2].table
