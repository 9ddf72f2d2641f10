"""decode.py: frames built with scapy (as bytes) → Segment, and bad bytes → None, never a raise."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from conntui import decode as d
from conntui.model import PACKET_HOST, PACKET_OUTGOING, Frame, Segment

PAYLOAD = bytes(range(100))
V4_SRC, V4_DST = "192.0.2.1", "198.51.100.7"
V6_SRC, V6_DST = "2001:db8::1", "2001:db8::2"


def ether(**kw: Any) -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **kw)


def tcp_hdr(flags: str = "PA") -> TCP:
    return TCP(sport=40000, dport=8080, seq=1000, ack=2000, flags=flags, window=512)


def tcp4(flags: str = "PA", payload: bytes = PAYLOAD) -> Packet:
    return IP(src=V4_SRC, dst=V4_DST) / tcp_hdr(flags) / Raw(payload)


def udp6(payload: bytes = b"dns?" * 5) -> Packet:
    return IPv6(src=V6_SRC, dst=V6_DST) / UDP(sport=5353, dport=53) / Raw(payload)


# What tcp4() and udp6() decode to (link-layer details filled in per test).
TCP4 = Segment(
    ts=0.0,
    iface="",
    proto="tcp",
    family=4,
    src=V4_SRC,
    sport=40000,
    dst=V4_DST,
    dport=8080,
    flags="PA",
    payload_len=100,
    seq=1000,
    ack=2000,
    window=512,
    payload_preview=PAYLOAD[:64],
)
UDP6 = Segment(
    ts=0.0,
    iface="",
    proto="udp",
    family=6,
    src=V6_SRC,
    sport=5353,
    dst=V6_DST,
    dport=53,
    payload_len=20,
    payload_preview=b"dns?" * 5,
)


def expect(base: Segment, data: bytes, **changes: object) -> Segment:
    changes.setdefault("wire_len", len(data))
    return base._replace(**changes)


def vlan_stack(tags: int, inner_type: int | None = None) -> Packet:
    pkt: Packet = ether()
    for vid in range(1, tags + 1):
        pkt = pkt / Dot1Q(vlan=vid)
    if inner_type is not None:
        inner = pkt.getlayer(Dot1Q, tags)
        assert inner is not None
        inner.type = inner_type
    return pkt


def null_hdr(af: int, fmt: str) -> bytes:
    return struct.pack(fmt, af)


V4, V6 = bytes(tcp4()), bytes(udp6())


@dataclasses.dataclass(frozen=True)
class Case:
    """A frame, how to decode it, and the segment it must give."""

    name: str
    data: bytes
    linktype: int
    want: Segment
    kw: dict[str, Any]
    headers_end: int  # where the transport header ends: any shorter prefix decodes to None


def case(
    name: str, link: bytes, ip: bytes, linktype: int, kw: dict[str, Any] | None = None, **changes: int
) -> Case:
    base = TCP4 if ip is V4 else UDP6
    data = link + ip
    l4_start = len(link) + (20 if base.family == 4 else 40)
    headers_end = l4_start + (20 if base.proto == "tcp" else 8)
    return Case(name, data, linktype, expect(base, data, **changes), kw or {}, headers_end)


UNKNOWN = {"pkttype": -1}
CASES = [
    case("v4-raw", b"", V4, d.LINKTYPE_RAW),
    case("v4-raw-protocol", b"", V4, d.LINKTYPE_RAW, {"protocol": 0x0800}),
    case("v4-ipv4", b"", V4, d.LINKTYPE_IPV4),
    case("v4-ether", bytes(ether(type=0x0800)), V4, d.LINKTYPE_ETHERNET),
    case("v4-dot1q", bytes(ether() / Dot1Q(vlan=7, type=0x0800)), V4, d.LINKTYPE_ETHERNET),
    case("v4-qinq", bytes(ether() / Dot1AD(vlan=5) / Dot1Q(vlan=6, type=0x0800)), V4, d.LINKTYPE_ETHERNET),
    case("v4-8-tags", bytes(vlan_stack(d.MAX_VLAN_TAGS, 0x0800)), V4, d.LINKTYPE_ETHERNET),
    case("v4-sll", bytes(CookedLinux(pkttype=4, proto=0x0800)), V4, d.LINKTYPE_LINUX_SLL, UNKNOWN, pkttype=4),
    case(
        "v4-sll-vlan",
        bytes(CookedLinux(pkttype=4) / Dot1Q(vlan=9, type=0x0800)),
        V4,
        d.LINKTYPE_LINUX_SLL,
        UNKNOWN,
        pkttype=4,
    ),
    case(
        "v4-sll2",
        bytes(CookedLinuxV2(pkttype=4, ifindex=7, proto=0x0800)),
        V4,
        d.LINKTYPE_LINUX_SLL2,
        UNKNOWN,
        pkttype=4,
        ifindex=7,
    ),
    case("v4-null-le", null_hdr(2, "<I"), V4, d.LINKTYPE_NULL),
    case("v4-null-be", null_hdr(2, ">I"), V4, d.LINKTYPE_NULL),
    case("v4-loop", null_hdr(2, ">I"), V4, d.LINKTYPE_LOOP),
    case("v6-raw", b"", V6, d.LINKTYPE_RAW),
    case("v6-raw-protocol", b"", V6, d.LINKTYPE_RAW, {"protocol": 0x86DD}),
    case("v6-ipv6", b"", V6, d.LINKTYPE_IPV6),
    case("v6-ether", bytes(ether(type=0x86DD)), V6, d.LINKTYPE_ETHERNET),
    case("v6-dot1q", bytes(ether() / Dot1Q(vlan=7, type=0x86DD)), V6, d.LINKTYPE_ETHERNET),
    case("v6-sll", bytes(CookedLinux(pkttype=0, proto=0x86DD)), V6, d.LINKTYPE_LINUX_SLL, UNKNOWN),
    case(
        "v6-sll2",
        bytes(CookedLinuxV2(pkttype=2, ifindex=3, proto=0x86DD)),
        V6,
        d.LINKTYPE_LINUX_SLL2,
        UNKNOWN,
        pkttype=2,
        ifindex=3,
    ),
    *[case(f"v6-null-{af}", null_hdr(af, "<I"), V6, d.LINKTYPE_NULL) for af in (24, 28, 30)],
    case("v6-null-be-30", null_hdr(30, ">I"), V6, d.LINKTYPE_NULL),
    case("v6-loop-28", null_hdr(28, ">I"), V6, d.LINKTYPE_LOOP),
]
LINKTYPES = [
    d.LINKTYPE_NULL,
    d.LINKTYPE_ETHERNET,
    d.LINKTYPE_RAW,
    d.LINKTYPE_LOOP,
    d.LINKTYPE_LINUX_SLL,
    d.LINKTYPE_IPV4,
    d.LINKTYPE_IPV6,
    d.LINKTYPE_LINUX_SLL2,
]


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_link_layers(c: Case) -> None:
    assert d.decode(c.data, c.linktype, **c.kw) == c.want


def test_caller_metadata_passes_through() -> None:
    data = bytes(tcp4())
    seg = d.decode(
        data, d.LINKTYPE_RAW, ts=12.5, iface="eth0", ifindex=4, pkttype=PACKET_OUTGOING, wire_len=9000
    )
    assert seg == expect(TCP4, data, ts=12.5, iface="eth0", ifindex=4, pkttype=PACKET_OUTGOING, wire_len=9000)


def test_decode_frame() -> None:
    data = bytes(ether() / tcp4())
    frame = Frame(ts=3.0, data=data, linktype=d.LINKTYPE_ETHERNET, iface="lo", ifindex=1, pkttype=PACKET_HOST)
    assert d.decode_frame(frame) == expect(TCP4, data, ts=3.0, iface="lo", ifindex=1)
    frame = frame._replace(linktype=d.LINKTYPE_RAW, data=bytes(tcp4()), protocol=0x0800)
    assert d.decode_frame(frame) == expect(TCP4, frame.data, ts=3.0, iface="lo", ifindex=1)


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ({"pkttype": -1, "ifindex": 0}, {"pkttype": PACKET_OUTGOING, "ifindex": 7}),
        ({"pkttype": PACKET_HOST, "ifindex": 0}, {"pkttype": PACKET_HOST, "ifindex": 7}),
        ({"pkttype": 3, "ifindex": 2}, {"pkttype": 3, "ifindex": 2}),
    ],
)
def test_cooked_header_fills_only_unknowns(caller: dict[str, Any], expected: dict[str, Any]) -> None:
    data = bytes(CookedLinuxV2(pkttype=PACKET_OUTGOING, ifindex=7) / tcp4())
    seg = d.decode(data, d.LINKTYPE_LINUX_SLL2, **caller)
    assert seg is not None
    assert (seg.pkttype, seg.ifindex) == (expected["pkttype"], expected["ifindex"])


def test_unknown_pkttype_stays_unknown_without_cooked_header() -> None:
    seg = d.decode(bytes(tcp4()), d.LINKTYPE_RAW, pkttype=-1)
    assert seg is not None
    assert seg.pkttype == -1


@pytest.mark.parametrize(
    ("data", "linktype", "protocol"),
    [
        pytest.param(bytes(udp6()), d.LINKTYPE_RAW, 0x0800, id="v6-bytes-said-v4"),
        pytest.param(bytes(tcp4()), d.LINKTYPE_RAW, 0x86DD, id="v4-bytes-said-v6"),
        pytest.param(bytes(tcp4()), d.LINKTYPE_RAW, 0x0806, id="arp-protocol"),
        pytest.param(bytes(udp6()), d.LINKTYPE_IPV4, 0, id="v6-in-ipv4-linktype"),
        pytest.param(bytes(tcp4()), d.LINKTYPE_IPV6, 0, id="v4-in-ipv6-linktype"),
        pytest.param(null_hdr(24, "<I") + bytes(tcp4()), d.LINKTYPE_NULL, 0, id="null-af-mismatch"),
        pytest.param(null_hdr(7, "<I") + bytes(tcp4()), d.LINKTYPE_NULL, 0, id="null-unknown-af"),
        pytest.param(null_hdr(2, "<I") + bytes(tcp4()), d.LINKTYPE_LOOP, 0, id="loop-wrong-order"),
        pytest.param(bytes(tcp4()), 147, 0, id="unknown-linktype"),
    ],
)
def test_link_layer_mismatches(data: bytes, linktype: int, protocol: int) -> None:
    assert d.decode(data, linktype, protocol=protocol) is None


@pytest.mark.parametrize(
    ("flags", "text"),
    [("S", "S"), ("SA", "SA"), ("PA", "PA"), ("FA", "FA"), ("R", "R"), ("FSRPAUEC", "FSRPAUEC"), ("", "")],
)
def test_tcp_flags(flags: str, text: str) -> None:
    seg = d.decode(bytes(tcp4(flags=flags, payload=b"")), d.LINKTYPE_RAW)
    assert seg is not None
    assert seg.flags == text
    assert seg.payload_len == 0
    assert seg.payload_preview == b""


def test_tcp_ns_bit_is_not_a_flag_letter() -> None:
    data = bytearray(bytes(tcp4(flags="S")))
    data[20 + 12] |= 0x01  # NS lives in the data-offset byte
    seg = d.decode(bytes(data), d.LINKTYPE_RAW)
    assert seg is not None
    assert seg.flags == "S"


def test_ip_and_tcp_options_are_skipped() -> None:
    pkt = (
        IP(src=V4_SRC, dst=V4_DST, options=[IPOption_NOP(), IPOption_RR(routers=["10.0.0.1", "10.0.0.2"])])
        / tcp_hdr()
        / Raw(PAYLOAD)
    )
    pkt[TCP].options = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("Timestamp", (1, 2))]
    data = bytes(pkt)
    assert data[0] & 0x0F > 5 and data[(data[0] & 0x0F) * 4 + 12] >> 4 > 5
    assert d.decode(data, d.LINKTYPE_RAW) == expect(TCP4, data)


V6_EXT_CHAINS = {
    "hop-by-hop": [IPv6ExtHdrHopByHop()],
    "routing": [IPv6ExtHdrRouting(addresses=["2001:db8::3"], segleft=0)],
    "dest-opt": [IPv6ExtHdrDestOpt()],
    "fragment-first": [IPv6ExtHdrFragment(offset=0, m=1, id=9)],
    "all": [
        IPv6ExtHdrHopByHop(),
        IPv6ExtHdrDestOpt(),
        IPv6ExtHdrRouting(addresses=["2001:db8::3", "2001:db8::4"], segleft=0),
        IPv6ExtHdrFragment(offset=0, m=0, id=9),
        IPv6ExtHdrDestOpt(),
    ],
}


def with_ext(chain: list[Packet], l4: Packet) -> Packet:
    pkt: Packet = IPv6(src=V6_SRC, dst=V6_DST)
    for hdr in chain:
        pkt = pkt / hdr.copy()
    return pkt / l4


@pytest.mark.parametrize("chain", V6_EXT_CHAINS.values(), ids=V6_EXT_CHAINS.keys())
@pytest.mark.parametrize(
    ("l4", "base"),
    [
        pytest.param(tcp_hdr() / Raw(PAYLOAD), TCP4._replace(family=6, src=V6_SRC, dst=V6_DST), id="tcp"),
        pytest.param(UDP(sport=5353, dport=53) / Raw(b"dns?" * 5), UDP6, id="udp"),
    ],
)
def test_ipv6_extension_headers(chain: list[Packet], l4: Packet, base: Segment) -> None:
    data = bytes(with_ext(chain, l4))
    assert d.decode(data, d.LINKTYPE_RAW) == expect(base, data)


def authentication_header(next_header: int, icv_len: int = 12) -> bytes:
    words = (12 + icv_len) // 4
    return struct.pack("!BBHII", next_header, words - 2, 0, 0x1234, 1) + b"\xaa" * icv_len


@pytest.mark.parametrize("icv_len", [12, 16])
def test_ipv6_authentication_header(icv_len: int) -> None:
    l4 = bytes(UDP(sport=5353, dport=53, len=28, chksum=0) / Raw(b"dns?" * 5))
    body = authentication_header(17, icv_len) + l4
    data = bytes(IPv6(src=V6_SRC, dst=V6_DST, nh=51, plen=len(body))) + body
    assert d.decode(data, d.LINKTYPE_RAW) == expect(UDP6, data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytes(IP(frag=1, flags="MF") / Raw(bytes(tcp4())[20:])), id="v4-middle-fragment"),
        pytest.param(bytes(IP(frag=185) / Raw(b"tail")), id="v4-last-fragment"),
        pytest.param(bytes(with_ext([IPv6ExtHdrFragment(offset=1, m=1)], Raw(b"x" * 16))), id="v6-fragment"),
        pytest.param(bytes(IP() / ICMP()), id="icmp"),
        pytest.param(bytes(IPv6() / ICMPv6EchoRequest()), id="icmpv6"),
        pytest.param(bytes(IPv6(nh=50) / Raw(b"\x00" * 32)), id="v6-esp"),
        pytest.param(bytes(IPv6(nh=59)), id="v6-no-next-header"),
        pytest.param(bytes(IP(proto=50) / Raw(b"\x00" * 32)), id="v4-esp"),
        pytest.param(bytes(with_ext([IPv6ExtHdrDestOpt()] * 17, UDP())), id="v6-too-many-ext-headers"),
        pytest.param(bytes(IPv6(nh=135) / Raw(b"\x00" * 32)), id="v6-mobility"),
    ],
)
def test_not_a_first_tcp_udp_segment(data: bytes) -> None:
    assert d.decode(data, d.LINKTYPE_RAW) is None


def test_sixteen_extension_headers_are_still_walked() -> None:
    data = bytes(with_ext([IPv6ExtHdrDestOpt()] * 16, UDP(sport=1, dport=2)))
    seg = d.decode(data, d.LINKTYPE_RAW)
    assert seg is not None
    assert (seg.sport, seg.dport, seg.payload_len) == (1, 2, 0)


def test_v4_first_fragment_is_decoded() -> None:
    datagram = UDP(sport=5353, dport=53) / Raw(b"z" * 100)
    data = bytes(IP(src=V4_SRC, dst=V4_DST, flags="MF", proto=17) / Raw(bytes(datagram)[:48]))
    seg = d.decode(data, d.LINKTYPE_RAW)
    assert seg is not None
    # The UDP length covers the whole datagram; this fragment carries only 40 payload bytes.
    assert (seg.proto, seg.sport, seg.dport, seg.payload_len) == ("udp", 5353, 53, 40)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytes(ether(type=0x0806) / ARP()), id="arp"),
        pytest.param(bytes(Ether(dst="ff:ff:ff:ff:ff:ff", type=60) / Raw(b"\x00" * 60)), id="802.3-length"),
        pytest.param(bytes(ether(type=0x88CC) / Raw(b"\x00" * 60)), id="lldp"),
        pytest.param(bytes(vlan_stack(d.MAX_VLAN_TAGS + 1) / tcp4()), id="too-many-vlan-tags"),
    ],
)
def test_ethernet_non_ip(data: bytes) -> None:
    assert d.decode(data, d.LINKTYPE_ETHERNET) is None


@pytest.mark.parametrize(
    ("l4", "base"),
    [
        pytest.param(tcp_hdr(), TCP4, id="tcp"),
        pytest.param(UDP(sport=5353, dport=53), UDP6._replace(family=4), id="udp"),
    ],
)
def test_ethernet_padding_is_trimmed(l4: Packet, base: Segment) -> None:
    frame = bytes(ether() / IP(src=V4_SRC, dst=V4_DST) / l4 / Raw(b"hi"))
    assert len(frame) < 60
    padded = frame + b"\xee" * (60 - len(frame))
    want = expect(base, padded, src=V4_SRC, dst=V4_DST, payload_len=2, payload_preview=b"hi")
    assert d.decode(padded, d.LINKTYPE_ETHERNET) == want


@pytest.mark.parametrize(
    ("udp_len", "payload_len", "preview"),
    [
        pytest.param(12, 4, b"abcd", id="shorter-than-ip-payload"),
        pytest.param(18, 10, b"abcdefghij", id="consistent"),
        pytest.param(500, 10, b"abcdefghij", id="longer-than-ip-payload"),
        pytest.param(3, 10, b"abcdefghij", id="below-header-size"),
        pytest.param(0, 10, b"abcdefghij", id="zero"),
    ],
)
def test_udp_length(udp_len: int, payload_len: int, preview: bytes) -> None:
    data = bytes(IP(src=V4_SRC, dst=V4_DST) / UDP(sport=7, dport=9, len=udp_len) / Raw(b"abcdefghij"))
    seg = d.decode(data, d.LINKTYPE_RAW)
    assert seg is not None
    assert (seg.payload_len, seg.payload_preview) == (payload_len, preview)


def test_snapped_frame_reports_the_length_the_headers_declare() -> None:
    data = bytes(ether() / tcp4())
    snapped = data[: 14 + 20 + 20 + 10]
    seg = d.decode(snapped, d.LINKTYPE_ETHERNET, wire_len=len(data))
    assert seg == expect(TCP4, data, payload_preview=PAYLOAD[:10])


@pytest.mark.parametrize("linktype", [d.LINKTYPE_RAW, d.LINKTYPE_IPV4])
def test_v4_total_length_zero_means_whole_buffer(linktype: int) -> None:
    """TSO/GSO and IPv4 BIG TCP super-packets carry total length 0."""
    data = bytearray(bytes(tcp4()))
    data[2:4] = b"\x00\x00"
    assert d.decode(bytes(data), linktype) == expect(TCP4, bytes(data))


def test_v6_payload_length_zero_means_whole_buffer() -> None:
    data = bytearray(bytes(udp6()))
    data[4:6] = b"\x00\x00"
    assert d.decode(bytes(data), d.LINKTYPE_RAW) == expect(UDP6, bytes(data))


@pytest.mark.parametrize(
    ("src", "dst"),
    [("::1", "::1"), ("::ffff:127.0.0.1", "::ffff:127.0.0.2"), ("fe80::1:2", "ff02::fb")],
)
def test_v6_addresses_are_compressed(src: str, dst: str) -> None:
    seg = d.decode(bytes(IPv6(src=src, dst=dst) / UDP()), d.LINKTYPE_RAW)
    assert seg is not None
    assert (seg.src, seg.dst, seg.family) == (src, dst, 6)


def corrupt(data: bytes, index: int, value: int) -> bytes:
    b = bytearray(data)
    b[index] = value
    return bytes(b)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(corrupt(V4, 0, 0x44), id="ihl-4"),
        pytest.param(corrupt(V4, 0, 0x4F)[:40], id="ihl-beyond-data"),
        pytest.param(corrupt(V4, 0, 0x55), id="version-5"),
        pytest.param(corrupt(corrupt(V4, 2, 0), 3, 19), id="total-length-below-header"),
        pytest.param(corrupt(corrupt(V4, 2, 0), 3, 39), id="total-length-cuts-tcp-header"),
        pytest.param(corrupt(V4, 32, 0x40), id="tcp-data-offset-4"),
        pytest.param(corrupt(V4, 32, 0x00), id="tcp-data-offset-0"),
        pytest.param(
            corrupt(bytes(tcp4(payload=b"x" * 10)), 32, 0xF0), id="tcp-data-offset-beyond-ip-length"
        ),
        pytest.param(corrupt(V4, 32, 0xF0)[:60], id="tcp-data-offset-beyond-snapped-data"),
        pytest.param(corrupt(corrupt(V6, 4, 0), 5, 4), id="v6-payload-length-cuts-udp-header"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x45", id="one-byte"),
        pytest.param(b"\x60" + b"\x00" * 38, id="v6-header-short"),
    ],
)
def test_malformed(data: bytes) -> None:
    assert d.decode(data, d.LINKTYPE_RAW) is None


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_truncated_at_every_offset(c: Case) -> None:
    """Each prefix is None until the transport header is complete, then the declared segment."""
    for cut in range(len(c.data) + 1):
        seg = d.decode(c.data[:cut], c.linktype, wire_len=len(c.data), **c.kw)
        if cut < c.headers_end:
            assert seg is None, cut
        else:
            preview = c.want.payload_preview[: cut - c.headers_end]
            assert seg == c.want._replace(payload_preview=preview), cut


@pytest.mark.parametrize("offset", [0, 14, 37])
def test_decode_ip_at_offset(offset: int) -> None:
    data = b"\xff" * offset + V4 + b"trailer"
    assert d.decode_ip(data, offset, iface="x") == expect(TCP4, data, iface="x")
    assert d.decode_ip(memoryview(data), offset, wire_len=7) == expect(TCP4, data, wire_len=7)


@pytest.mark.parametrize("offset", [-1, -40, 10_000])
def test_decode_ip_bad_offset(offset: int) -> None:
    assert d.decode_ip(V4 + V4, offset) is None


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([*LINKTYPES, 12, 999]), st.sampled_from([0, 0x0800, 0x86DD]))
def test_garbage_never_raises(data: bytes, linktype: int, protocol: int) -> None:
    seg = d.decode(data, linktype, protocol=protocol, pkttype=-1)
    assert seg is None or isinstance(seg, Segment)


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(CASES),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    st.integers(min_value=0),
)
def test_corrupted_frames_never_raise(c: Case, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(c.data)
    for index, value in edits:
        data[index % len(data)] = value
    seg = d.decode(bytes(data[: cut % (len(data) + 1)]), c.linktype, pkttype=-1)
    if seg is not None:
        assert seg.proto in ("tcp", "udp")
        assert seg.payload_len >= 0
        assert len(seg.payload_preview) <= 64
        assert 0 <= seg.sport < 65536 and 0 <= seg.dport < 65536


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.integers(-5, 130))
def test_decode_ip_garbage_never_raises(data: bytes, offset: int) -> None:
    seg = d.decode_ip(data, offset)
    assert seg is None or isinstance(seg, Segment)
