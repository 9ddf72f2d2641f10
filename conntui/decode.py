"""Raw frame bytes → ``Segment``: the capture thread's hot path.

Stdlib only and no scapy objects: every packet passes through here, so the parsers are
precompiled ``struct.Struct``s reading in place, and the only object built per packet is the
``Segment`` itself. The functions are total: malformed, truncated or foreign input (ARP,
ICMP, ESP, non-first fragments, …) gives ``None``, never an exception.

Link layers: Ethernet (with stacked 802.1Q/802.1ad tags), Linux cooked SLL and SLL2, raw IP
(what the live AF_PACKET ``SOCK_DGRAM`` socket yields), LINKTYPE_IPV4/IPV6 and BSD loopback
(NULL/LOOP). Network layers: IPv4 with options, IPv6 with extension headers.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple, TypeAlias

from conntui.model import PACKET_HOST, FlowKey, Frame, Proto, Segment, tcp_flags_text

LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # network header first; version nibble says v4 or v6
LINKTYPE_LOOP = 108  # as NULL, address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_BSD_LOOPBACK = frozenset((LINKTYPE_NULL, LINKTYPE_LOOP))

PREVIEW_LEN = 64  # payload bytes kept in Segment.payload_preview
MAX_VLAN_TAGS = 8
MAX_IPV6_EXT_HEADERS = 16

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))

# BSD address families seen in NULL/LOOP headers: AF_INET is 2 everywhere; AF_INET6 is 24
# (NetBSD/OpenBSD), 28 (FreeBSD) or 30 (macOS).
_BSD_AF_INET = 2
_BSD_AF_INET6 = frozenset((24, 28, 30))

_TCP = Proto.TCP.value
_UDP = Proto.UDP.value
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_TRANSPORT = frozenset((_IPPROTO_TCP, _IPPROTO_UDP))

# IPv6 extension headers we walk through; ESP (50), no-next-header (59) and the rest end it.
_V6_HOPOPTS = 0
_V6_ROUTING = 43
_V6_FRAGMENT = 44
_V6_AH = 51
_V6_DSTOPTS = 60
_V6_OPTIONS_LIKE = frozenset((_V6_HOPOPTS, _V6_ROUTING, _V6_DSTOPTS))  # (n + 1) * 8 bytes

_U16 = struct.Struct("!H")
_U32_BE = struct.Struct("!I")
_U32_LE = struct.Struct("<I")
_SLL = struct.Struct("!H12xH")  # pkttype, (hatype, addr len, addr), protocol
_SLL2 = struct.Struct("!H2xI2xB9x")  # protocol, (reserved), ifindex, (hatype), pkttype, (addr)
# version/IHL, (tos), total length, (id), flags/fragment offset, (ttl), protocol, (csum)
_IPV4 = struct.Struct("!BxHxxHxB2x")
_IPV6 = struct.Struct("!BxxxHB")  # version/class, (class/flow), payload length, next header
_IPV6_EXT = struct.Struct("!BB")  # next header, length
_IPV6_FRAG = struct.Struct("!BxH")  # next header, (reserved), offset/flags
# ports, seq, ack, data offset, flags, window
_TCP_HDR = struct.Struct("!HHIIBBH")
_UDP_HDR = struct.Struct("!HHH")  # ports, length

_FLAGS_TEXT = tuple(tcp_flags_text(bits) for bits in range(256))

_ntop = socket.inet_ntop
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6

# Memory and time per row: every segment of a flow carries the same two address strings and
# port numbers, so decoding hands out shared objects instead of new ones (a text address is
# ~58 bytes, an int above 256 is 28: together ~260 bytes a row, 50 MB in a 200k-row window).
_ADDR_CACHE_MAX = 65536
_addr_text: dict[bytes, str] = {}
_U16_VALUES = tuple(range(65536))  # canonical int objects for ports and windows


def _addr(family: int, packed: bytes) -> str:
    """The text form of a packed address, shared across segments."""
    text = _addr_text.get(packed)
    if text is None:
        if len(_addr_text) >= _ADDR_CACHE_MAX:
            _addr_text.clear()
        text = _addr_text[packed] = _ntop(family, packed)
    return text


def shared_tables() -> dict[str, object]:
    """The decoder's shared objects, for its C twin (``fastpath.py``): the address-text cache
    and its filler, the canonical port ints, the flags texts and the protocol names. The C
    decoder hands out these very objects, so both paths build identical segments."""
    return {
        "addr_cache": _addr_text,
        "addr_fn": _addr,
        "u16": _U16_VALUES,
        "flags_text": _FLAGS_TEXT,
        "tcp": _TCP,
        "udp": _UDP,
    }


# Everything a truncated or nonsensical buffer can make the parsers raise.
_BAD_INPUT = (struct.error, IndexError, ValueError, OSError)

Buffer: TypeAlias = bytes | bytearray | memoryview


def decode_frame(frame: Frame) -> Segment | None:
    """Decode a captured ``Frame`` (its link type, time, interface and packet type)."""
    return decode(
        frame.data,
        frame.linktype,
        ts=frame.ts,
        iface=frame.iface,
        ifindex=frame.ifindex,
        pkttype=frame.pkttype,
        wire_len=frame.wire_len,
        protocol=frame.protocol,
    )


def decode(
    data: Buffer,
    linktype: int,
    *,
    ts: float = 0.0,
    iface: str = "",
    ifindex: int = 0,
    pkttype: int = PACKET_HOST,
    wire_len: int = 0,
    protocol: int = 0,
) -> Segment | None:
    """Decode one frame of ``linktype`` into a TCP/UDP ``Segment``, or ``None``.

    ``pkttype`` -1 means unknown: cooked (SLL/SLL2) headers then supply it, as SLL2 supplies
    ``ifindex`` when it is 0. ``protocol`` is the ethertype a cooked packet socket reports
    for raw frames (0 if unknown). ``wire_len`` 0 means ``len(data)``.
    """
    try:
        link = _link(data, linktype, pkttype, ifindex, protocol)
        if link is None:
            return None
        off, version, pkttype, ifindex = link
        return _ip(data, off, version, ts, iface, ifindex, pkttype, wire_len or len(data))
    except _BAD_INPUT:
        return None


def _link(
    data: Buffer, linktype: int, pkttype: int, ifindex: int, protocol: int
) -> tuple[int, int, int, int] | None:
    """(network header offset, IP version or 0 for "read the nibble", pkttype, ifindex)."""
    if linktype == LINKTYPE_RAW:
        off = 0
        version = 0
        if protocol:
            if protocol == ETH_P_IP:
                version = 4
            elif protocol == ETH_P_IPV6:
                version = 6
            else:
                return None
    elif linktype == LINKTYPE_ETHERNET:
        off, version = _after_ethertype(data, 14, _U16.unpack_from(data, 12)[0])
    elif linktype == LINKTYPE_LINUX_SLL:
        sll_pkttype, etype = _SLL.unpack_from(data, 0)
        if pkttype == -1:
            pkttype = sll_pkttype
        off, version = _after_ethertype(data, 16, etype)
    elif linktype == LINKTYPE_LINUX_SLL2:
        etype, sll_ifindex, sll_pkttype = _SLL2.unpack_from(data, 0)
        if pkttype == -1:
            pkttype = sll_pkttype
        if not ifindex:
            ifindex = sll_ifindex
        off, version = _after_ethertype(data, 20, etype)
    elif linktype == LINKTYPE_IPV4:
        off, version = 0, 4
    elif linktype == LINKTYPE_IPV6:
        off, version = 0, 6
    elif linktype in _BSD_LOOPBACK:
        if linktype == LINKTYPE_LOOP:
            af = _U32_BE.unpack_from(data, 0)[0]
        else:
            af = _U32_LE.unpack_from(data, 0)[0]
            if af > 0xFFFF:  # written by a host of the other byte order
                af = _U32_BE.unpack_from(data, 0)[0]
        if af == _BSD_AF_INET:
            off, version = 4, 4
        elif af in _BSD_AF_INET6:
            off, version = 4, 6
        else:
            return None
    else:
        return None
    if off < 0:
        return None
    return off, version, pkttype, ifindex


class IcmpError(NamedTuple):
    """An ICMP "destination unreachable" quoting the datagram that caused it."""

    ts: float
    family: int
    src: str  # the host that sent the ICMP error
    dst: str
    code: int  # ICMP code (v4: 3 = port unreachable; v6: 4 = port unreachable)
    quoted: FlowKey  # the offending datagram's 5-tuple, as it was sent

    @property
    def port_unreachable(self) -> bool:
        return self.code == (3 if self.family == 4 else 4)


_ICMP4_UNREACH = 3
_ICMP6_UNREACH = 1


def decode_icmp_error(frame: Frame) -> IcmpError | None:
    """The ICMP/ICMPv6 destination-unreachable in ``frame`` (quoting a TCP/UDP datagram),
    or None. Used to check "no socket" predictions against what the kernel then sent."""
    try:
        link = _link(frame.data, frame.linktype, frame.pkttype, frame.ifindex, frame.protocol)
        if link is None:
            return None
        data, off, version = frame.data, link[0], link[1]
        version = version or data[off] >> 4
        if version == 4:
            ihl = (data[off] & 0x0F) * 4
            if data[off + 9] != 1 or ihl < 20:
                return None
            src, dst = _ntop(_AF_INET, data[off + 12 : off + 16]), _ntop(_AF_INET, data[off + 16 : off + 20])
            icmp = off + ihl
            if data[icmp] != _ICMP4_UNREACH:
                return None
            code = data[icmp + 1]
            inner = decode_ip(data[icmp + 8 :], 0)
        elif version == 6:
            if data[off + 6] != 58:  # ICMPv6 right after the fixed header only
                return None
            src, dst = _ntop(_AF_INET6, data[off + 8 : off + 24]), _ntop(_AF_INET6, data[off + 24 : off + 40])
            icmp = off + 40
            if data[icmp] != _ICMP6_UNREACH:
                return None
            code = data[icmp + 1]
            inner = decode_ip(data[icmp + 8 :], 0)
        else:
            return None
        if inner is None:
            return None
        return IcmpError(frame.ts, version, src, dst, code, inner.key)
    except _BAD_INPUT:
        return None


def decode_ip(
    data: Buffer,
    offset: int,
    *,
    ts: float = 0.0,
    iface: str = "",
    ifindex: int = 0,
    pkttype: int = PACKET_HOST,
    wire_len: int = 0,
) -> Segment | None:
    """Decode the IPv4 or IPv6 packet starting at ``offset`` (chosen by its version nibble)."""
    if offset < 0:
        return None
    try:
        return _ip(data, offset, 0, ts, iface, ifindex, pkttype, wire_len or len(data))
    except _BAD_INPUT:
        return None


def _after_ethertype(data: Buffer, off: int, etype: int) -> tuple[int, int]:
    """Skip VLAN tags; (offset of the IP header, 4 | 6), or (-1, 0) for anything but IP."""
    tags = 0
    while etype in _VLAN_TPIDS:
        tags += 1
        if tags > MAX_VLAN_TAGS:
            return -1, 0
        etype = _U16.unpack_from(data, off + 2)[0]
        off += 4
    if etype == ETH_P_IP:
        return off, 4
    if etype == ETH_P_IPV6:
        return off, 6
    return -1, 0


def _ip(
    data: Buffer,
    off: int,
    version: int,
    ts: float,
    iface: str,
    ifindex: int,
    pkttype: int,
    wire_len: int,
) -> Segment | None:
    """The network layer at ``off``; ``version`` 0 lets the version nibble decide."""
    n = len(data)
    first = data[off] >> 4
    if version and first != version:
        return None
    if first == 4:
        ver_ihl, total_len, frag, proto = _IPV4.unpack_from(data, off)
        hl = (ver_ihl & 0x0F) * 4
        if hl < 20 or frag & 0x1FFF:  # bad IHL, or not the first fragment
            return None
        if proto not in _TRANSPORT:
            return None
        # Total length 0 is what TSO/GSO (and IPv4 BIG TCP) super-packets carry: use the data.
        end = off + total_len if total_len else n
        p = off + hl
        if end < p or p > n:
            return None
        src = _addr(_AF_INET, bytes(data[off + 12 : off + 16]))
        dst = _addr(_AF_INET, bytes(data[off + 16 : off + 20]))
        family = 4
    elif first == 6:
        _, plen, nh = _IPV6.unpack_from(data, off)
        p = off + 40
        if p > n:
            return None
        # Payload length 0: a jumbogram or an IPv6 BIG TCP super-packet; use the data.
        end = p + plen if plen else n
        for _ in range(MAX_IPV6_EXT_HEADERS + 1):
            if nh in _TRANSPORT:
                break
            if nh in _V6_OPTIONS_LIKE:
                nh, ext_len = _IPV6_EXT.unpack_from(data, p)
                p += (ext_len + 1) * 8
            elif nh == _V6_FRAGMENT:
                nh, frag = _IPV6_FRAG.unpack_from(data, p)
                if frag & 0xFFF8:  # not the first fragment
                    return None
                p += 8
            elif nh == _V6_AH:
                nh, ext_len = _IPV6_EXT.unpack_from(data, p)
                p += (ext_len + 2) * 4
            else:
                return None
        else:
            return None
        if p > end or p > n:
            return None
        proto = nh
        src = _addr(_AF_INET6, bytes(data[off + 8 : off + 24]))
        dst = _addr(_AF_INET6, bytes(data[off + 24 : off + 40]))
        family = 6
    else:
        return None

    # [p, end) is the transport segment the IP header declares; [p, avail) is what we hold.
    avail = end if end < n else n
    ip_payload = end - p
    if proto == _IPPROTO_TCP:
        if p + 20 > avail:
            return None
        sport, dport, seq, ack, doff, bits, window = _TCP_HDR.unpack_from(data, p)
        thl = (doff >> 4) * 4
        if thl < 20 or thl > ip_payload or p + thl > avail:
            return None
        start = p + thl
        stop = start + PREVIEW_LEN
        u16 = _U16_VALUES
        return Segment(  # positional: a third cheaper than keywords on the hot path
            ts,
            iface,
            _TCP,
            family,
            src,
            u16[sport],
            dst,
            u16[dport],
            _FLAGS_TEXT[bits],
            ip_payload - thl,
            seq,
            ack,
            u16[window],
            pkttype,
            ifindex,
            wire_len,
            bytes(data[start : stop if stop < avail else avail]),
        )

    if p + 8 > avail or ip_payload < 8:
        return None
    sport, dport, ulen = _UDP_HDR.unpack_from(data, p)
    if 8 <= ulen <= ip_payload:
        payload_len = ulen - 8
        udp_end = p + ulen
        if udp_end < avail:
            avail = udp_end
    else:  # inconsistent (or 0, as in jumbograms): trust the IP header
        payload_len = ip_payload - 8
    start = p + 8
    stop = start + PREVIEW_LEN
    u16 = _U16_VALUES
    return Segment(
        ts,
        iface,
        _UDP,
        family,
        src,
        u16[sport],
        dst,
        u16[dport],
        "",
        payload_len,
        0,
        0,
        0,
        pkttype,
        ifindex,
        wire_len,
        bytes(data[start : stop if stop < avail else avail]),
    )
