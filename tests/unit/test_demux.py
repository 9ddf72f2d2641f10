"""The demux as a pure function over hand-built socket tables: every ``Match``, and the rules
of KERNEL-DEMUX.md that decide between sockets (exact vs wildcard, dual-stack, device,
reuseport, accept queue, TIME_WAIT, challenge ACK, UDP scoring, multicast)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conntui.demux import attribute
from conntui.model import (
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    Attribution,
    Endpoint,
    Holder,
    Match,
    Segment,
    SocketEntry,
    SocketTable,
)

LOCAL_ADDRS = ("127.0.0.1", "10.0.0.1", "::1", "2001:db8::1")
IFNAMES = {1: "lo", 2: "eth0"}


# --------------------------------------------------------------------------- builders


def _endpoint(text: str) -> Endpoint:
    addr, port = text.rsplit(":", 1)
    return Endpoint(addr.strip("[]"), int(port))


def sock(
    local: str,
    remote: str | None = None,
    state: str = "ESTABLISHED",
    *,
    proto: str = "tcp",
    held: tuple[str, int, int] | None = None,
    inode: int | None = None,
    **kw: object,
) -> SocketEntry:
    """``sock("127.0.0.1:8080", state="LISTEN", held=("node", 12, 20))``."""
    loc = _endpoint(local)
    holders = (Holder(held[1], held[2], held[0]),) if held else ()
    return SocketEntry(
        proto=proto,
        family=6 if ":" in loc.addr else 4,
        state=state,
        local=loc,
        remote=_endpoint(remote) if remote else None,
        inode=(1000 + sum(map(ord, local + (remote or ""))) if held else 0) if inode is None else inode,
        holders=holders,
        **kw,  # type: ignore[arg-type]
    )


def seg(
    src: str, dst: str, flags: str = "A", *, proto: str = "tcp", ts: float = 100.0, **kw: object
) -> Segment:
    s, d = _endpoint(src), _endpoint(dst)
    return Segment(
        ts=ts,
        iface="lo",
        proto=proto,
        family=6 if ":" in s.addr else 4,
        src=s.addr,
        sport=s.port,
        dst=d.addr,
        dport=d.port,
        flags=flags if proto == "tcp" else "",
        **kw,  # type: ignore[arg-type]
    )


def table(*entries: SocketEntry, taken_at: float = 0.0) -> SocketTable:
    return SocketTable(entries, taken_at=taken_at, local_addrs=LOCAL_ADDRS, ifnames=IFNAMES)


# --------------------------------------------------------------------------- sockets

LST_ANY = sock("0.0.0.0:8080", state="LISTEN", held=("node", 12, 20), rx_queue=3, tx_queue=128)
LST_LO = sock("127.0.0.1:8080", state="LISTEN", held=("nginx", 30, 6))
LST_V6ANY = sock("[::]:8080", state="LISTEN", held=("py6", 40, 3))
LST_V6ONLY = sock("[::]:8080", state="LISTEN", held=("py6only", 41, 3), v6only=True)
LST_MAPPED = sock("[::ffff:127.0.0.1]:8080", state="LISTEN", held=("mapped", 42, 3))
LST_DEV = sock("0.0.0.0:8080", state="LISTEN", held=("devd", 50, 4), bound_ifindex=1)
RP = tuple(sock("0.0.0.0:8080", state="LISTEN", held=("worker", 60 + i, 5)) for i in range(3))

EST_SRV = sock("127.0.0.1:8080", "127.0.0.1:51234", held=("python3", 4242, 7))
EST_CLI = sock("127.0.0.1:51234", "127.0.0.1:8080", held=("curl", 99, 5))
EST_OLD = sock("127.0.0.1:8080", "127.0.0.1:51234", held=("python3", 4242, 7), first_seen=50.0)
CHILD = sock("127.0.0.1:8080", "127.0.0.1:51234")  # inode 0: not yet accept()ed
CHILD_NEW = sock("127.0.0.1:8080", "127.0.0.1:51234", first_seen=100.5)
REQ = sock("127.0.0.1:8080", "127.0.0.1:51234", "SYN_RECV")
REQ_OLD = sock("127.0.0.1:8080", "127.0.0.1:51234", "SYN_RECV", first_seen=99.0)
TW = sock("127.0.0.1:8080", "127.0.0.1:51234", "TIME_WAIT")
ORPHAN = sock("127.0.0.1:8080", "127.0.0.1:51234", "FIN_WAIT2", former_holders=(Holder(12, 7, "nginx"),))
SYN_SENT = sock("127.0.0.1:51234", "127.0.0.1:8080", "SYN_SENT", held=("curl", 99, 5))
DUAL_EST = sock("[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:51234", held=("py6", 40, 9))
V6_EST = sock("[::1]:8080", "[::1]:40000", held=("py6", 40, 8))
OUT_CLI = sock("10.0.0.1:40000", "93.184.216.34:443", held=("curl", 77, 3))
LST_443 = sock("0.0.0.0:443", state="LISTEN", held=("caddy", 80, 9))

U_ANY = sock("0.0.0.0:53", state="UNCONN", proto="udp", held=("dnsd", 70, 3))
U_LO = sock("127.0.0.1:53", state="UNCONN", proto="udp", held=("dnslo", 71, 3))
U_V6ANY = sock("[::]:53", state="UNCONN", proto="udp", held=("dns6", 72, 3))
U_V6ONLY = sock("[::]:53", state="UNCONN", proto="udp", held=("dns6only", 73, 3), v6only=True)
U_DEV = sock("0.0.0.0:53", state="UNCONN", proto="udp", held=("dnsdev", 74, 3), bound_ifindex=1)
U_CONN = sock("127.0.0.1:53", "127.0.0.1:40000", proto="udp", held=("udpc", 75, 4))
U_CONN_ELSE = sock("127.0.0.1:53", "127.0.0.1:1111", proto="udp", held=("udpx", 76, 4))
M_ANY = sock("0.0.0.0:5353", state="UNCONN", proto="udp", held=("avahi", 90, 12))
M_GRP = sock("224.0.0.251:5353", state="UNCONN", proto="udp", held=("chrome", 91, 40))
M_V6 = sock("[::]:5353", state="UNCONN", proto="udp", held=("mdns6", 92, 7))
M_UNI = sock("10.0.0.1:5353", state="UNCONN", proto="udp", held=("uni", 93, 8))

CLIENT = "127.0.0.1:51234"
SERVER = "127.0.0.1:8080"


@dataclass
class Case:
    id: str
    entries: tuple[SocketEntry, ...]
    segment: Segment
    match: Match
    receiver: SocketEntry | None
    says: tuple[str, ...] = ()
    listener: SocketEntry | None = None
    candidates: tuple[SocketEntry, ...] = ()
    taken_at: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


CASES = [
    # ---- TCP: established hash
    Case(
        "established-server",
        (LST_ANY, EST_SRV, EST_CLI),
        seg(CLIENT, SERVER, "PA"),
        Match.ESTABLISHED,
        EST_SRV,
        ("Established 4-tuple 127.0.0.1:51234 → 127.0.0.1:8080", "python3[4242] fd 7", "accept() returned"),
    ),
    Case(
        "established-client",
        (LST_ANY, EST_SRV, EST_CLI),
        seg(SERVER, CLIENT, "PA"),
        Match.ESTABLISHED,
        EST_CLI,
        ("curl[99] fd 5", "connect()ed to 127.0.0.1:8080"),
    ),
    Case(
        "established-dual-stack-v4-mapped",
        (LST_V6ANY, DUAL_EST),
        seg(CLIENT, SERVER, "PA"),
        Match.ESTABLISHED,
        DUAL_EST,
        ("py6[40] fd 9",),
    ),
    Case("established-ipv6", (V6_EST,), seg("[::1]:40000", "[::1]:8080"), Match.ESTABLISHED, V6_EST),
    Case(
        "accept-queue",
        (LST_ANY, CHILD),
        seg(CLIENT, SERVER, "PA"),
        Match.ACCEPT_QUEUE,
        CHILD,
        ("accept queue", "node[12] fd 20", "0.0.0.0:8080", "3 queued", "backlog 128"),
        listener=LST_ANY,
    ),
    Case(
        "syn-recv-final-ack",
        (LST_ANY, REQ),
        seg(CLIENT, SERVER, "A"),
        Match.SYN_RECV,
        REQ,
        ("request sock", "node[12] fd 20"),
        listener=LST_ANY,
    ),
    Case(
        "time-wait",
        (LST_ANY, TW),
        seg(CLIENT, SERVER, "A"),
        Match.TIME_WAIT,
        TW,
        ("TIME_WAIT", "kernel"),
    ),
    Case(
        "data-to-a-connection-that-closed-before-the-look-up",
        (LST_ANY, TW),
        seg(CLIENT, SERVER, "PA", payload_len=10),
        Match.ESTABLISHED,
        TW,
        ("while the connection was open", "TIME_WAIT"),
    ),
    Case(
        "fin-that-moved-a-closing-socket-into-time-wait",
        (LST_ANY, TW),
        seg(CLIENT, SERVER, "FA"),
        Match.ESTABLISHED,
        TW,
        ("FIN_WAIT2", "TIME_WAIT"),
    ),
    Case(
        "syn-to-time-wait",
        (LST_ANY, TW),
        seg(CLIENT, SERVER, "S"),
        Match.TIME_WAIT,
        TW,
        ("TIME_WAIT", "newer", "node[12] fd 20"),
        listener=LST_ANY,
    ),
    Case(
        "orphan-after-close",
        (LST_ANY, ORPHAN),
        seg(CLIENT, SERVER, "FA"),
        Match.ESTABLISHED,
        ORPHAN,
        ("closed by nginx[12] (was fd 7)", "kernel alone finishes the close", "FIN_WAIT2"),
    ),
    Case(
        "syn-to-old-established-challenge-ack",
        (LST_ANY, EST_OLD),
        seg(CLIENT, SERVER, "S"),
        Match.ESTABLISHED,
        EST_OLD,
        ("challenge ACK", "RFC 5961", "listener never sees"),
    ),
    Case(
        "syn-to-established-known-from-old-table",
        (LST_ANY, EST_SRV),
        seg(CLIENT, SERVER, "S"),
        Match.ESTABLISHED,
        EST_SRV,
        ("challenge ACK",),
        taken_at=90.0,
    ),
    Case(
        "syn-whose-child-appeared-after",
        (LST_ANY, CHILD_NEW),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_ANY,
        ("listener on 0.0.0.0:8080", "node[12] fd 20", "accept queue"),
    ),
    Case(
        "syn-whose-request-sock-age-unknown",
        (LST_ANY, REQ),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_ANY,
        ("request sock",),
    ),
    Case(
        "syn-whose-connection-was-accepted-before-the-table-was-read",
        (LST_ANY, EST_SRV),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_ANY,
        ("accepted as python3[4242] fd 7",),
    ),
    Case(
        "syn-whose-listener-has-closed-since",
        (CHILD_NEW,),
        seg(CLIENT, SERVER, "S"),
        Match.ESTABLISHED,
        CHILD_NEW,
        ("has since closed",),
    ),
    Case(
        "kernel-held-socket-without-listener",
        (CHILD,),
        seg(CLIENT, SERVER, "A"),
        Match.ESTABLISHED,
        CHILD,
        ("no listener owns",),
    ),
    Case(
        "syn-retransmitted-to-request-sock",
        (LST_ANY, REQ_OLD),
        seg(CLIENT, SERVER, "S"),
        Match.SYN_RECV,
        REQ_OLD,
        ("Retransmitted SYN", "SYN-ACK again"),
        listener=LST_ANY,
    ),
    Case(
        "syn-simultaneous-open",
        (SYN_SENT,),
        seg(SERVER, CLIENT, "S"),
        Match.ESTABLISHED,
        SYN_SENT,
        ("simultaneous open",),
    ),
    # ---- TCP: listeners
    Case(
        "syn-wildcard-listener",
        (LST_ANY,),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_ANY,
        (
            "SYN to port 8080: no established connection, the listener on 0.0.0.0:8080 (node[12] fd 20)",
            "bound to exactly 127.0.0.1 would have won",
        ),
    ),
    Case(
        "syn-exact-beats-wildcard",
        (LST_ANY, LST_LO),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_LO,
        ("nginx[30] fd 6", "exact address beats the wildcard"),
    ),
    Case(
        "syn-exact-beats-wildcard-even-when-device-bound",
        (LST_DEV, LST_LO),
        seg(CLIENT, SERVER, "S", ifindex=1),
        Match.LISTENER,
        LST_LO,
    ),
    Case(
        "syn-other-exact-address-falls-to-wildcard",
        (sock("127.0.0.2:8080", state="LISTEN", held=("other", 1, 3)), LST_ANY),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_ANY,
    ),
    Case(
        "syn-dual-stack-takes-ipv4",
        (LST_V6ANY,),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_V6ANY,
        ("IPv6 socket that also accepts IPv4", "::ffff:127.0.0.1"),
    ),
    Case("syn-v6only-refuses-ipv4", (LST_V6ONLY,), seg(CLIENT, SERVER, "S"), Match.NONE, None, ("RST",)),
    Case(
        "syn-v4-mapped-listener-is-exact",
        (LST_ANY, LST_MAPPED),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_MAPPED,
    ),
    Case(
        "syn-af-inet-beats-dual-stack",
        # both need SO_REUSEPORT to coexist; the kernel keeps AF_INET6 reuseport ones at the tail
        (LST_ANY, LST_V6ANY),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        LST_ANY,
    ),
    Case(
        "syn-v4-listener-never-takes-ipv6",
        (LST_ANY,),
        seg("[::1]:40000", "[::1]:8080", "S"),
        Match.NONE,
        None,
        ("RST",),
    ),
    Case(
        "syn-ipv6-to-v6only-wildcard",
        (LST_ANY, LST_V6ONLY),
        seg("[::1]:40000", "[::1]:8080", "S"),
        Match.LISTENER,
        LST_V6ONLY,
    ),
    Case(
        "syn-bindtodevice-scores-higher",
        (LST_DEV, LST_ANY),  # the device-bound one listened last: head of the bucket
        seg(CLIENT, SERVER, "S", ifindex=1),
        Match.LISTENER,
        LST_DEV,
        ("SO_BINDTODEVICE", "lo"),
    ),
    Case(
        "syn-reuseport-short-circuit-first-in-bucket-wins",
        (LST_ANY, LST_DEV),  # the unbound one is first: its group ends the scan at once
        seg(CLIENT, SERVER, "S", ifindex=1),
        Match.LISTENER,
        LST_ANY,
    ),
    Case(
        "syn-bindtodevice-other-device-rejected",
        (LST_DEV, LST_ANY),
        seg(CLIENT, SERVER, "S", ifindex=2),
        Match.LISTENER,
        LST_ANY,
    ),
    Case(
        "syn-reuseport-group",
        RP,
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        RP[0],
        ("one of 3 SO_REUSEPORT listeners", "hashes the 4-tuple", "worker[61] fd 5"),
        candidates=RP,
    ),
    Case(
        "syn-accept-queue-full",
        (sock("0.0.0.0:8080", state="LISTEN", held=("slow", 5, 3), rx_queue=129, tx_queue=128),),
        seg(CLIENT, SERVER, "S"),
        Match.LISTENER,
        None,
        ("looks full", "may drop"),
        extra={"receiver_is_listener": True},
    ),
    # ---- TCP: misses
    Case(
        "ack-with-only-a-listener-is-unknown",
        (LST_ANY,),
        seg(CLIENT, SERVER, "PA"),
        Match.UNKNOWN,
        None,
        ("older than this connection", "node[12] fd 20"),
    ),
    Case(
        "synack-with-no-socket-is-unknown",
        (),
        seg(SERVER, CLIENT, "SA"),
        Match.UNKNOWN,
        None,
        ("SYN-ACK",),
    ),
    Case("syn-closed-port", (LST_ANY,), seg(CLIENT, "127.0.0.1:9", "S"), Match.NONE, None, ("RST",)),
    Case(
        "ack-closed-port",
        (),
        seg(CLIENT, "127.0.0.1:9", "PA"),
        Match.NONE,
        None,
        ("nothing listens on port 9", "RST"),
    ),
    Case(
        "rst-closed-port-never-answered",
        (),
        seg(CLIENT, "127.0.0.1:9", "R"),
        Match.NONE,
        None,
        ("never answered",),
    ),
    Case(
        "not-local-never-blames-wildcard",
        (LST_443,),
        seg("192.0.2.7:40000", "93.184.216.34:443", "S"),
        Match.NOT_LOCAL,
        None,
        ("not an address of this host",),
    ),
    Case(
        "not-local-names-sender",
        (LST_443, OUT_CLI),
        seg("10.0.0.1:40000", "93.184.216.34:443", "S"),
        Match.NOT_LOCAL,
        None,
        ("curl[77] fd 3",),
    ),
    Case(
        "otherhost-frame-is-not-local",
        (LST_ANY,),
        seg(CLIENT, SERVER, "S", pkttype=PACKET_OTHERHOST),
        Match.NOT_LOCAL,
        None,
        ("another machine",),
    ),
    # ---- UDP
    Case(
        "udp-connected-beats-unconnected",
        (U_ANY, U_LO, U_CONN),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"),
        Match.UDP_CONNECTED,
        U_CONN,
        ("udpc[75] fd 4", "connect()ed to exactly this peer"),
    ),
    Case(
        "udp-unconnected-wildcard",
        (U_ANY,),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"),
        Match.UDP_UNCONNECTED,
        U_ANY,
        ("dnsd[70] fd 3", "0.0.0.0:53"),
    ),
    Case(
        "udp-exact-beats-wildcard",
        (U_ANY, U_LO),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"),
        Match.UDP_UNCONNECTED,
        U_LO,
        ("exact address beats the wildcard",),
    ),
    Case(
        "udp-connected-elsewhere-rejected",
        (U_CONN_ELSE, U_ANY),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"),
        Match.UDP_UNCONNECTED,
        U_ANY,
    ),
    Case(
        "udp-af-inet-beats-dual-stack",
        (U_V6ANY, U_ANY),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"),
        Match.UDP_UNCONNECTED,
        U_ANY,
    ),
    Case(
        "udp-dual-stack-takes-ipv4",
        (U_V6ANY,),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"),
        Match.UDP_UNCONNECTED,
        U_V6ANY,
        ("also takes IPv4",),
    ),
    Case(
        "udp-v6only-refuses-ipv4",
        (U_V6ONLY,),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"),
        Match.NONE,
        None,
        ("ICMP port unreachable",),
    ),
    Case(
        "udp-device-bound-wins",
        (U_ANY, U_DEV),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp", ifindex=1),
        Match.UDP_UNCONNECTED,
        U_DEV,
    ),
    Case(
        "udp-ipv6",
        (U_ANY, U_V6ONLY),
        seg("[::1]:40000", "[::1]:53", proto="udp"),
        Match.UDP_UNCONNECTED,
        U_V6ONLY,
    ),
    Case(
        "udp-tie-reports-every-socket",
        (U_ANY, sock("0.0.0.0:53", state="UNCONN", proto="udp", held=("dnsd2", 80, 3))),
        seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"),
        Match.UDP_UNCONNECTED,
        U_ANY,
        ("one of 2 sockets",),
        extra={"n_candidates": 2},
    ),
    Case(
        "udp-none",
        (U_ANY,),
        seg("127.0.0.1:40000", "127.0.0.1:9", proto="udp"),
        Match.NONE,
        None,
        ("ICMP port unreachable",),
    ),
    Case(
        "udp-multicast-copy-to-all",
        (M_ANY, M_UNI, M_GRP, M_V6),
        seg("10.0.0.7:5353", "224.0.0.251:5353", proto="udp", pkttype=PACKET_MULTICAST),
        Match.UDP_UNCONNECTED,
        M_GRP,
        ("own copy", "3 sockets", "avahi[90] fd 12", "chrome[91] fd 40"),
        candidates=(M_GRP, M_ANY, M_V6),
    ),
    Case(
        "udp-broadcast-by-address",
        (M_ANY,),
        seg("10.0.0.7:5353", "255.255.255.255:5353", proto="udp"),
        Match.UDP_UNCONNECTED,
        M_ANY,
        ("broadcast",),
        candidates=(M_ANY,),
    ),
    Case(
        "udp-multicast-nobody",
        (U_ANY,),
        seg("10.0.0.7:5353", "224.0.0.251:5353", proto="udp"),
        Match.NONE,
        None,
        ("no ICMP",),
    ),
    Case(
        "udp-not-local",
        (U_ANY,),
        seg("192.0.2.7:40000", "198.51.100.1:53", proto="udp"),
        Match.NOT_LOCAL,
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_receiver(case: Case) -> None:
    a = attribute(case.segment, table(*case.entries, taken_at=case.taken_at))
    assert a.match is case.match, a.explain
    if case.extra.get("receiver_is_listener"):
        assert a.receiver is not None and a.receiver.is_listener
    else:
        assert a.receiver == case.receiver, a.explain
    for text in case.says:
        assert text in a.explain, a.explain
    if case.listener is not None:
        assert a.listener == case.listener
    if case.candidates:
        assert a.candidates == case.candidates
    if "n_candidates" in case.extra:
        assert len(a.candidates) == case.extra["n_candidates"]
    assert a.steps, "every attribution lists the lookups it tried"


def test_every_match_value_is_covered() -> None:
    assert {c.match for c in CASES} == set(Match)


# --------------------------------------------------------------------------- steps


def test_steps_name_each_lookup_in_order() -> None:
    a = attribute(seg(CLIENT, SERVER, "S"), table(LST_ANY))
    whats = [s.what for s in a.steps]
    assert whats[:3] == [
        "established hash 127.0.0.1:8080 ← 127.0.0.1:51234",
        "listeners on 127.0.0.1:8080 (exact address)",
        "listeners on 0.0.0.0:8080 / [::]:8080 (wildcard)",
    ]
    assert [s.result for s in a.steps[:2]] == ["miss", "none"]
    assert a.steps[2].result.startswith("hit: node[12] fd 20 on 0.0.0.0:8080 (score 2)")


def test_steps_say_why_a_listener_was_rejected() -> None:
    a = attribute(seg(CLIENT, SERVER, "S"), table(LST_V6ONLY))
    assert "IPV6_V6ONLY" in a.steps[-2].result or "IPV6_V6ONLY" in a.steps[-1].result


def test_device_score_is_reported() -> None:
    a = attribute(seg(CLIENT, SERVER, "S", ifindex=1), table(LST_ANY, LST_DEV))
    wildcard = next(s for s in a.steps if "(wildcard)" in s.what)
    assert "(score 3)" in wildcard.result and "(score 2)" in wildcard.result


# --------------------------------------------------------------------------- sender


def test_rst_from_the_kernel_has_no_sender() -> None:
    a = attribute(seg("127.0.0.1:9", CLIENT, "RA"), table(sock(CLIENT, "127.0.0.1:9", "SYN_SENT")))
    assert a.sender is None
    assert a.sender_explain == "sent by the kernel itself (no socket)"


def test_synack_sender_is_the_listener() -> None:
    a = attribute(seg(SERVER, CLIENT, "SA"), table(LST_ANY, SYN_SENT))
    assert a.match is Match.ESTABLISHED and a.receiver == SYN_SENT
    assert a.sender == LST_ANY
    assert "during the handshake" in a.sender_explain and "node[12] fd 20" in a.sender_explain


def test_synack_sender_is_the_request_sock_when_listed() -> None:
    a = attribute(seg(SERVER, CLIENT, "SA"), table(LST_ANY, REQ, SYN_SENT))
    assert a.sender == REQ
    assert "node[12] fd 20" in a.sender_explain


def test_synack_sender_is_the_listener_even_after_accept() -> None:
    a = attribute(seg(SERVER, CLIENT, "SA"), table(LST_ANY, EST_SRV, EST_CLI))
    assert a.sender == LST_ANY


def test_established_sender_and_receiver() -> None:
    a = attribute(seg(SERVER, CLIENT, "PA"), table(LST_ANY, EST_SRV, EST_CLI))
    assert a.receiver == EST_CLI and a.sender == EST_SRV
    assert a.sender_explain == "sent by python3[4242] fd 7"


def test_time_wait_sender_is_the_kernel() -> None:
    a = attribute(seg(SERVER, CLIENT, "A"), table(TW))
    assert a.sender == TW and "TIME_WAIT" in a.sender_explain


def test_remote_source_has_no_sender() -> None:
    a = attribute(seg("192.0.2.7:40000", SERVER, "S"), table(LST_ANY))
    assert a.sender is None and "another host" in a.sender_explain
    assert all("sender" not in s.what for s in a.steps)


def test_udp_unconnected_sender() -> None:
    a = attribute(seg("127.0.0.1:53", "127.0.0.1:40000", proto="udp"), table(U_ANY))
    assert a.sender == U_ANY and "sendto()" in a.sender_explain
    assert a.match is Match.NONE  # nothing on port 40000


def test_udp_connected_sender() -> None:
    client = sock("127.0.0.1:40000", "127.0.0.1:53", proto="udp", held=("dig", 5, 6))
    a = attribute(seg("127.0.0.1:40000", "127.0.0.1:53", proto="udp"), table(U_ANY, client))
    assert a.sender == client and a.receiver == U_ANY


def test_non_tcp_udp_is_harmless() -> None:
    s = Segment(
        ts=1.0, iface="lo", proto="sctp", family=4, src="127.0.0.1", sport=1, dst="127.0.0.1", dport=2
    )
    assert attribute(s, table()).match is Match.NONE


# --------------------------------------------------------------------------- property


ADDRS = [
    "127.0.0.1",
    "127.0.0.2",
    "10.0.0.1",
    "192.0.2.7",
    "0.0.0.0",
    "224.0.0.251",
    "255.255.255.255",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "2001:db8::1",
    "ff02::fb",
]
PORTS = [0, 53, 8080, 51234]
STATES = ["LISTEN", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "TIME_WAIT", "FIN_WAIT2", "CLOSE_WAIT", "UNCONN"]

endpoints = st.builds(Endpoint, st.sampled_from(ADDRS), st.sampled_from(PORTS))
holders = st.lists(
    st.builds(Holder, st.integers(1, 5), st.integers(0, 9), st.sampled_from(["a", "b"])), max_size=2
)
entries = st.builds(
    SocketEntry,
    proto=st.sampled_from(["tcp", "udp"]),
    family=st.sampled_from([4, 6]),
    state=st.sampled_from(STATES),
    local=endpoints,
    remote=st.none() | endpoints,
    inode=st.sampled_from([0, 0, 7, 8]),
    holders=holders.map(tuple),
    rx_queue=st.integers(0, 3),
    tx_queue=st.integers(0, 3),
    bound_ifindex=st.sampled_from([0, 0, 1, 2]),
    v6only=st.booleans(),
    former_holders=holders.map(tuple),
    first_seen=st.sampled_from([0.0, 50.0, 100.0, 150.0]),
)
segments = st.builds(
    Segment,
    ts=st.sampled_from([0.0, 100.0]),
    iface=st.sampled_from(["", "lo", "eth0", "x"]),
    proto=st.sampled_from(["tcp", "udp"]),
    family=st.sampled_from([4, 6]),
    src=st.sampled_from(ADDRS),
    sport=st.sampled_from(PORTS),
    dst=st.sampled_from(ADDRS),
    dport=st.sampled_from(PORTS),
    flags=st.sampled_from(["", "S", "SA", "A", "PA", "FA", "R", "RA", "SR"]),
    pkttype=st.sampled_from([PACKET_HOST, 1, PACKET_MULTICAST, PACKET_OTHERHOST, 4, -1]),
    ifindex=st.sampled_from([0, 1, 2]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(entries, max_size=12), segments, st.sampled_from([0.0, 50.0, 150.0]))
def test_random_segments_never_raise(es: list[SocketEntry], s: Segment, taken_at: float) -> None:
    t = table(*es, taken_at=taken_at)
    a = attribute(s, t)
    assert isinstance(a, Attribution)
    assert isinstance(a.match, Match)
    assert a.explain
    ids = {id(e) for e in t.entries}
    for e in (a.receiver, a.sender, a.listener, *a.candidates):
        assert e is None or id(e) in ids
    if a.match in (Match.NONE, Match.NOT_LOCAL, Match.UNKNOWN):
        assert a.receiver is None
    else:
        assert a.receiver is not None
    if a.match is Match.NOT_LOCAL:
        assert s.pkttype == PACKET_OTHERHOST or not t.is_local(s.dst)


def test_data_from_a_queued_connection_means_it_was_accepted_since() -> None:
    """Seen in the listen lab: Node's response came from a connection the table still showed
    unaccepted; the sender was called "the kernel". Data is never sent for a queued child."""
    lst = sock("0.0.0.0:8080", state="LISTEN", held=("node", 12, 18))
    child = sock("10.0.0.1:8080", "10.0.0.2:5000", inode=0)
    att = attribute(
        seg("10.0.0.1:8080", "10.0.0.2:5000", "PA", payload_len=100, pkttype=4), table(lst, child)
    )
    assert att.sender is None and "accepted since" in att.sender_explain
    ack = attribute(seg("10.0.0.1:8080", "10.0.0.2:5000", "A", pkttype=4), table(lst, child))
    assert ack.sender is child


def test_reuseport_group_names_loaded_sk_reuseport_programs_and_never_claims_the_hash() -> None:
    """A BPF program attached to the group picks the member; its attachment is invisible, so
    the hash is never stated as the chooser: loaded sk_reuseport programs are named."""
    from conntui.model import SkLookup

    plain = attribute(seg(CLIENT, SERVER, "S"), table(*RP))
    assert "unless a classic or eBPF program attached to the group picks it" in plain.explain
    t = table(*RP)
    t.sk_lookup = SkLookup(reuseport=("sk_reuseport program id 7 'steer'",))
    att = attribute(seg(CLIENT, SERVER, "S"), t)
    assert att.match is Match.LISTENER and set(att.candidates) == set(RP)
    assert "sk_reuseport program id 7 'steer' is loaded on this host" in att.explain
    udp = tuple(sock("0.0.0.0:5353", proto="udp", state="UNCONN", held=("mdns", 70 + i, 4)) for i in range(2))
    u = attribute(seg(CLIENT, "127.0.0.1:5353", proto="udp"), table(*udp))
    assert "unless a classic or eBPF program" in u.explain
