"""Conntrack over ctnetlink without a kernel: hand-packed messages, a scripted socket, and
the captured-tuple → local-socket rules for REDIRECT, DNAT, SNAT and loopback."""

from __future__ import annotations

import errno
import random
import socket
import struct
from collections.abc import Callable

import pytest

from conntui.model import FlowKey
from conntui.sockets import conntrack as ct_mod
from conntui.sockets.conntrack import (
    CTA_TUPLE_ORIG,
    CTA_TUPLE_REPLY,
    IPS_DST_NAT,
    IPS_SRC_NAT,
    Conntrack,
    NatMapping,
    build_get_request,
    local_socket_tuple,
    parse_ct_message,
    sending_socket_tuple,
)

AF4, AF6 = socket.AF_INET, socket.AF_INET6
# A typical status: SEEN_REPLY | ASSURED | CONFIRMED | SRC_NAT_DONE | DST_NAT_DONE.
BASE = 0x2 | 0x4 | 0x8 | 0x80 | 0x100

# -- hand-packed kernel messages (independent of the module's own packers) ------------------

NESTED = 0x8000


def nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nest(kind: int, *children: bytes) -> bytes:
    return nla(kind | NESTED, b"".join(children))


def tuple_attr(key: FlowKey, *, zone: int | None = None, proto_first: bool = False) -> bytes:
    af = AF6 if ":" in key.src else AF4
    src_t, dst_t = (3, 4) if af == AF6 else (1, 2)
    ip = nest(1, nla(src_t, socket.inet_pton(af, key.src)), nla(dst_t, socket.inet_pton(af, key.dst)))
    num = {"tcp": 6, "udp": 17}[key.proto]
    l4 = nest(
        2,
        nla(1, bytes([num])),
        nla(2, struct.pack("!H", key.sport)),
        nla(3, struct.pack("!H", key.dport)),
    )
    parts = [l4, ip] if proto_first else [ip, l4]
    if zone is not None:
        parts.append(nla(3, struct.pack("!H", zone)))  # CTA_TUPLE_ZONE
    return b"".join(parts)


def ct_message(
    orig: FlowKey | None,
    reply: FlowKey | None,
    status: int | None = BASE,
    *,
    family: int = AF4,
    zone: int | None = None,
    status_first: bool = False,
    proto_first: bool = False,
    extras: bool = True,
) -> bytes:
    """A conntrack message as ``ctnetlink_fill_info`` lays it out (nfgenmsg + attributes)."""
    attrs: list[bytes] = []
    if orig is not None:
        attrs.append(nla(1 | NESTED, tuple_attr(orig, zone=zone, proto_first=proto_first)))
    if reply is not None:
        attrs.append(nla(2 | NESTED, tuple_attr(reply, zone=zone, proto_first=proto_first)))
    if zone is not None:
        attrs.append(nla(18, struct.pack("!H", zone)))  # CTA_ZONE
    if status is not None:
        st = nla(3, struct.pack("!I", status))
        if status_first:
            attrs.insert(0, st)
        else:
            attrs.append(st)
    if extras:
        attrs.append(nla(8, struct.pack("!I", 0)))  # CTA_MARK
        attrs.append(nla(12, struct.pack("!I", 0xDEADBEEF)))  # CTA_ID
        attrs.append(nla(7, struct.pack("!I", 431999)))  # CTA_TIMEOUT
        attrs.append(nest(4, nest(1, nla(1, b"\x03"))))  # CTA_PROTOINFO { TCP { STATE } }
    return struct.pack("=BBH", family, 0, 0) + b"".join(attrs)


def nlmsg(kind: int, seq: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body + b"\0" * (-len(body) % 4)


def nlerror(seq: int, code: int) -> bytes:
    return nlmsg(2, seq, struct.pack("=i", -code) + bytes(16))


# Connection fixtures -----------------------------------------------------------------------

C, V, L = "203.0.113.7", "192.0.2.1", "192.0.2.1"  # client, dialled address, REDIRECT target
# REDIRECT :8081 → :9000 (PREROUTING): ORIG as the client sent it, REPLY as the daemon answers.
REDIRECT = NatMapping(
    "tcp",
    FlowKey("tcp", C, 40000, V, 8081),
    FlowKey("tcp", L, 9000, C, 40000),
    BASE | IPS_DST_NAT,
)
# DNAT to another local address and port.
DNAT = NatMapping(
    "tcp",
    FlowKey("tcp", C, 40001, V, 80),
    FlowKey("tcp", "10.0.0.5", 8080, C, 40001),
    BASE | IPS_DST_NAT,
)
# Opened here from 10.0.0.5:51000, MASQUERADEd to 192.0.2.1:61000 on the way out.
SNAT = NatMapping(
    "tcp",
    FlowKey("tcp", "10.0.0.5", 51000, "198.51.100.9", 443),
    FlowKey("tcp", "198.51.100.9", 443, V, 61000),
    BASE | IPS_SRC_NAT,
)
# OUTPUT REDIRECT on lo: 127.0.0.1:45000 dials :8082, the daemon listens on :9001.
LOOP = NatMapping(
    "tcp",
    FlowKey("tcp", "127.0.0.1", 45000, "127.0.0.1", 8082),
    FlowKey("tcp", "127.0.0.1", 9001, "127.0.0.1", 45000),
    BASE | IPS_DST_NAT,
)
PLAIN = NatMapping(
    "udp",
    FlowKey("udp", C, 5353, V, 53),
    FlowKey("udp", V, 53, C, 5353),
    BASE,
)


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "m", [REDIRECT, DNAT, SNAT, LOOP, PLAIN], ids=["redirect", "dnat", "snat", "loop", "plain"]
)
def test_parse_kernel_layout(m: NatMapping) -> None:
    assert parse_ct_message(ct_message(m.original, m.reply, m.status)) == m


def test_parse_redirect_fields() -> None:
    m = parse_ct_message(ct_message(REDIRECT.original, REDIRECT.reply, BASE | IPS_DST_NAT))
    assert m is not None
    assert m.proto == "tcp"
    assert m.original == FlowKey("tcp", C, 40000, V, 8081)
    assert m.reply == FlowKey("tcp", L, 9000, C, 40000)
    assert m.nat and m.dst_nat and not m.src_nat


@pytest.mark.parametrize(
    "kw",
    [{"zone": 7}, {"status_first": True}, {"proto_first": True}, {"extras": False}],
    ids=["zones", "status-first", "proto-first", "bare"],
)
def test_parse_other_layouts_take_the_generic_path(kw: dict[str, object]) -> None:
    msg = ct_message(SNAT.original, SNAT.reply, SNAT.status, **kw)  # type: ignore[arg-type]
    assert parse_ct_message(msg) == SNAT


def test_parse_ipv6_and_mapped() -> None:
    orig = FlowKey("tcp", "2001:db8::7", 40000, "2001:db8::1", 8081)
    reply = FlowKey("tcp", "2001:db8::1", 9000, "2001:db8::7", 40000)
    m = parse_ct_message(ct_message(orig, reply, BASE | IPS_DST_NAT, family=AF6))
    assert m == NatMapping("tcp", orig, reply, BASE | IPS_DST_NAT)
    # v4-mapped addresses come back unmapped, as every FlowKey in conntui is
    mapped = FlowKey("udp", "::ffff:10.0.0.1", 1, "::ffff:10.0.0.2", 2)
    m = parse_ct_message(ct_message(mapped, mapped.reversed(), family=AF6))
    assert m is not None and m.original == FlowKey("udp", "10.0.0.1", 1, "10.0.0.2", 2)


def test_parse_without_status_judges_nat_by_tuples() -> None:
    m = parse_ct_message(ct_message(REDIRECT.original, REDIRECT.reply, None))
    assert m is not None and m.status == 0
    assert m.nat and m.dst_nat and not m.src_nat
    m = parse_ct_message(ct_message(SNAT.original, SNAT.reply, None))
    assert m is not None and m.nat and m.src_nat and not m.dst_nat
    m = parse_ct_message(ct_message(PLAIN.original, PLAIN.reply, None))
    assert m is not None and not m.nat


def test_nat_status_bits() -> None:
    assert REDIRECT.status & IPS_DST_NAT and REDIRECT.nat
    assert SNAT.status & IPS_SRC_NAT and SNAT.nat
    assert not PLAIN.nat and not PLAIN.dst_nat and not PLAIN.src_nat
    # NAT_DONE bits alone (a null binding) are not a translation
    assert not NatMapping("udp", PLAIN.original, PLAIN.reply, 0x180).nat


def test_parse_incomplete_is_none() -> None:
    assert parse_ct_message(b"") is None
    assert parse_ct_message(ct_message(REDIRECT.original, None)) is None
    assert parse_ct_message(ct_message(None, REDIRECT.reply)) is None


def test_parse_never_raises_on_garbage() -> None:
    rng = random.Random(7)
    good = ct_message(REDIRECT.original, REDIRECT.reply, zone=3)
    for cut in range(len(good)):
        parse_ct_message(good[:cut])
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        parse_ct_message(bytes(data))


# -- the request -----------------------------------------------------------------------------


def walk(data: bytes, off: int, end: int) -> list[tuple[int, bytes]]:
    out = []
    while off + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, off)
        assert length >= 4 and off + length <= end
        out.append((kind, data[off + 4 : off + length]))
        off += (length + 3) & ~3
    assert off == end or (off - end) < 4
    return out


@pytest.mark.parametrize("attr", [CTA_TUPLE_ORIG, CTA_TUPLE_REPLY])
def test_get_request_layout_v4(attr: int) -> None:
    req = build_get_request(FlowKey("tcp", C, 40000, V, 8081), 4, attr)
    assert req[:4] == struct.pack("=BBH", AF4, 0, 0)  # nfgenmsg: AF_INET, NFNETLINK_V0
    ((kind, body),) = walk(req, 4, len(req))
    assert kind == attr | NESTED
    (ip_kind, ip), (l4_kind, l4) = walk(body, 0, len(body))
    assert ip_kind == 1 | NESTED and l4_kind == 2 | NESTED
    assert walk(ip, 0, len(ip)) == [(1, socket.inet_aton(C)), (2, socket.inet_aton(V))]
    assert walk(l4, 0, len(l4)) == [(1, b"\x06"), (2, struct.pack("!H", 40000)), (3, struct.pack("!H", 8081))]


def test_get_request_layout_v6_and_mapped() -> None:
    req = build_get_request(FlowKey("udp", "2001:db8::7", 53, "2001:db8::1", 5353), 6)
    assert req[0] == AF6
    ((_, body),) = walk(req, 4, len(req))
    (_, ip), (_, l4) = walk(body, 0, len(body))
    assert [k for k, _ in walk(ip, 0, len(ip))] == [3, 4]
    assert walk(l4, 0, len(l4))[0] == (1, b"\x11")
    # an IPv4 key asked in the IPv6 table goes as v4-mapped
    req = build_get_request(FlowKey("tcp", "10.0.0.1", 1, "10.0.0.2", 2), AF6)
    ((_, body),) = walk(req, 4, len(req))
    (_, ip), _ = walk(body, 0, len(body))
    assert walk(ip, 0, len(ip))[0] == (3, socket.inet_pton(AF6, "::ffff:10.0.0.1"))


@pytest.mark.parametrize(
    ("key", "af"),
    [
        (FlowKey("tcp", C, 40000, V, 8081), AF4),
        (FlowKey("udp", "2001:db8::7", 0, "fe80::1", 65535), AF6),
    ],
)
@pytest.mark.parametrize("attr", [CTA_TUPLE_ORIG, CTA_TUPLE_REPLY])
def test_fast_request_matches_generic(key: FlowKey, af: int, attr: int) -> None:
    body = build_get_request(key, af, attr)
    full = struct.pack("=IHHII", 16 + len(body), ct_mod.CT_GET, 1, 42, 0) + body
    assert ct_mod._request(key, af, ct_mod.PROTO_NUMBERS[key.proto], attr, 42) == full


def test_get_request_rejects_other_protocols() -> None:
    with pytest.raises(ValueError):
        build_get_request(FlowKey("icmp", C, 0, V, 0), 4)


def test_message_type_constants() -> None:
    # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET; answers come back as IPCTNL_MSG_CT_NEW
    assert ct_mod.CT_GET == 0x101 and ct_mod.CT_NEW == 0x100
    assert ct_mod.NETLINK_NETFILTER == 12


# -- the channel, on a scripted socket ---------------------------------------------------------

Script = Callable[[FlowKey, int, int], bytes]  # (asked tuple, attr, seq) -> answer datagram


class ScriptedSocket:
    """Answers each GET as the kernel would (synchronously), through a real datagram socket
    pair so that ``recv_into`` and ``select`` behave as on a netlink socket."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.asked: list[tuple[FlowKey, int]] = []
        self.mine, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.closed = False

    def send(self, data: bytes) -> int:
        _len, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data)
        assert kind == 0x101 and flags == 1  # IPCTNL_MSG_CT_GET, NLM_F_REQUEST, not a dump
        ((attr, body),) = walk(data, 20, len(data))
        (_, ip), (_, l4) = walk(body, 0, len(body))
        af = AF6 if data[16] == AF6 else AF4
        (_, src), (_, dst) = walk(ip, 0, len(ip))
        (_, num), (_, sp), (_, dp) = walk(l4, 0, len(l4))
        key = FlowKey(
            {6: "tcp", 17: "udp"}[num[0]],
            socket.inet_ntop(af, src),
            struct.unpack("!H", sp)[0],
            socket.inet_ntop(af, dst),
            struct.unpack("!H", dp)[0],
        )
        self.asked.append((key, attr & 0x3FFF))
        answer = self.script(key, attr & 0x3FFF, seq)
        if answer:
            self.theirs.send(answer)
        return len(data)

    def recv_into(self, buf: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        return self.mine.recv_into(buf, nbytes, flags)

    def fileno(self) -> int:
        return self.mine.fileno()

    def close(self) -> None:
        self.closed = True
        self.mine.close()
        self.theirs.close()


def kernel(*entries: NatMapping) -> Script:
    """A conntrack table: a GET finds an entry by its ORIG or REPLY tuple, whichever
    attribute carried the question (``ctnetlink_get_conntrack`` → ``nf_conntrack_find_get``)."""

    def answer(key: FlowKey, attr: int, seq: int) -> bytes:
        for m in entries:
            if key in (m.original, m.reply):
                return nlmsg(0x100, seq, ct_message(m.original, m.reply, m.status), flags=2)
        return nlerror(seq, errno.ENOENT)

    return answer


def channel(script: Script, **kw: float) -> tuple[Conntrack, ScriptedSocket]:
    sock = ScriptedSocket(script)
    return Conntrack(sock=sock, **kw), sock  # type: ignore[arg-type]


def test_lookup_ingress_capture_hits_first() -> None:
    ct, sock = channel(kernel(REDIRECT))
    assert ct.lookup(REDIRECT.original, 4) == REDIRECT
    assert sock.asked == [(REDIRECT.original, CTA_TUPLE_ORIG)]
    assert ct.last_error is None


def test_lookup_egress_capture_needs_the_reverse() -> None:
    wire_reply = REDIRECT.original.reversed()  # V:8081 → C:40000, after de-NAT
    ct, sock = channel(kernel(REDIRECT))
    assert ct.lookup(wire_reply, 4) == REDIRECT
    assert sock.asked == [(wire_reply, CTA_TUPLE_ORIG), (REDIRECT.original, CTA_TUPLE_ORIG)]
    sock.asked.clear()
    assert ct.lookup(wire_reply, 4, outgoing=True) == REDIRECT
    assert sock.asked == [(REDIRECT.original, CTA_TUPLE_ORIG)]


def test_lookup_snat_both_directions() -> None:
    ct, _ = channel(kernel(SNAT))
    assert ct.lookup(SNAT.reply, 4) == SNAT  # incoming: REPLY as is
    assert ct.lookup(SNAT.reply.reversed(), 4, outgoing=True) == SNAT  # outgoing: REPLY⁻¹


def test_get_with_either_attribute() -> None:
    ct, sock = channel(kernel(DNAT))
    assert ct.get(DNAT.reply, 4, CTA_TUPLE_REPLY) == DNAT
    assert ct.get(DNAT.reply, 4, CTA_TUPLE_ORIG) == DNAT
    assert sock.asked[0][1] == CTA_TUPLE_REPLY


def test_miss_is_none_with_enoent() -> None:
    ct, sock = channel(kernel(REDIRECT))
    assert ct.lookup(FlowKey("tcp", C, 1, V, 2), 4) is None
    assert len(sock.asked) == 2
    assert ct.last_error is not None and ct.last_error.errno == errno.ENOENT
    assert ct.available and not sock.closed


def test_stale_answers_are_skipped() -> None:
    def script(key: FlowKey, attr: int, seq: int) -> bytes:
        stale = nlmsg(0x100, seq - 1, ct_message(SNAT.original, SNAT.reply), flags=2)
        return stale + nlmsg(
            0x100, seq, ct_message(REDIRECT.original, REDIRECT.reply, REDIRECT.status), flags=2
        )

    ct, _ = channel(script)
    assert ct.lookup(REDIRECT.original, 4) == REDIRECT


def test_eperm_stops_asking() -> None:
    ct, sock = channel(lambda k, a, seq: nlerror(seq, errno.EPERM))
    assert ct.lookup(REDIRECT.original, 4) is None
    assert ct.last_error is not None and ct.last_error.errno == errno.EPERM
    assert not ct.available and sock.closed
    assert ct.lookup(REDIRECT.original, 4) is None
    assert len(sock.asked) == 1


def test_missing_ctnetlink_rests_then_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [errno.EINVAL]  # nfnetlink without nf_conntrack_netlink

    def script(key: FlowKey, attr: int, seq: int) -> bytes:
        if answers:
            return nlerror(seq, answers.pop())
        return kernel(REDIRECT)(key, attr, seq)

    now = [1000.0]
    monkeypatch.setattr("conntui.sockets.conntrack.time.monotonic", lambda: now[0])
    ct, sock = channel(script, retry_after=30.0)
    assert ct.lookup(REDIRECT.original, 4) is None
    assert len(sock.asked) == 1  # no second (reversed) try after EINVAL
    assert not ct.available
    now[0] += 10
    assert ct.lookup(REDIRECT.original, 4) is None
    assert len(sock.asked) == 1  # resting: nothing sent
    now[0] += 25
    assert ct.available
    assert ct.lookup(REDIRECT.original, 4) == REDIRECT


def test_no_answer_times_out_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ct_mod, "_RECV_TIMEOUT", 0.01)
    monkeypatch.setattr(ct_mod, "open_netlink", lambda proto, ns=None: ScriptedSocket(kernel(REDIRECT)))
    ct, sock = channel(lambda k, a, seq: b"")
    assert ct.lookup(REDIRECT.original, 4) is None
    assert ct.last_error is not None and ct.last_error.errno == errno.ETIMEDOUT
    assert sock.closed  # dropped, so a late answer cannot be mistaken for the next one
    assert ct.lookup(REDIRECT.original, 4) == REDIRECT  # a fresh socket next time


def test_malformed_answer_does_not_raise() -> None:
    ct, _ = channel(lambda k, a, seq: struct.pack("=IHHII", 200, 0x100, 0, seq, 0))
    assert ct.lookup(REDIRECT.original, 4) is None
    assert ct.last_error is not None and ct.last_error.errno == errno.EBADMSG


def test_bad_keys_do_not_raise() -> None:
    ct, sock = channel(kernel(REDIRECT))
    assert ct.lookup(FlowKey("icmp", C, 0, V, 0), 4) is None
    assert ct.lookup(FlowKey("tcp", "2001:db8::1", 1, "2001:db8::2", 2), 4) is None
    assert ct.lookup(FlowKey("tcp", C, 70000, V, 1), 4) is None
    assert ct.get(REDIRECT.original, 5) is None
    assert sock.asked == []


def test_no_nfnetlink_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(proto: int, ns: str | None = None) -> socket.socket:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    monkeypatch.setattr(ct_mod, "open_netlink", refuse)
    ct = Conntrack()
    assert not ct.available
    assert ct.lookup(REDIRECT.original, 4) is None
    assert ct.last_error is not None and ct.last_error.errno == errno.EPROTONOSUPPORT


def test_closed_channel_answers_none() -> None:
    ct, sock = channel(kernel(REDIRECT))
    with ct:
        pass
    assert sock.closed and not ct.available
    assert ct.lookup(REDIRECT.original, 4) is None


# -- which local socket ------------------------------------------------------------------------


def test_redirect_both_directions() -> None:
    want = (L, 9000, C, 40000)
    assert local_socket_tuple(REDIRECT, REDIRECT.original) == want  # ingress: ORIG
    assert local_socket_tuple(REDIRECT, REDIRECT.original.reversed()) == want  # egress: ORIG⁻¹
    local = {L}.__contains__
    assert local_socket_tuple(REDIRECT, REDIRECT.original, is_local=local) == want
    assert local_socket_tuple(REDIRECT, REDIRECT.original.reversed(), is_local=local) == want


def test_dnat_to_another_local_address() -> None:
    want = ("10.0.0.5", 8080, C, 40001)
    assert local_socket_tuple(DNAT, FlowKey("tcp", C, 40001, V, 80)) == want
    assert local_socket_tuple(DNAT, FlowKey("tcp", V, 80, C, 40001)) == want
    local = {V, "10.0.0.5"}.__contains__
    assert local_socket_tuple(DNAT, DNAT.original, is_local=local) == want


def test_forwarded_dnat_is_not_local() -> None:
    # a router port-forwarding to a backend: only the dialled address is ours
    assert local_socket_tuple(DNAT, DNAT.original, is_local={V}.__contains__) is None


def test_locally_opened_snat() -> None:
    want = ("10.0.0.5", 51000, "198.51.100.9", 443)
    outgoing = FlowKey("tcp", V, 61000, "198.51.100.9", 443)  # on the wire, after SNAT
    assert outgoing == SNAT.reply.reversed()
    assert local_socket_tuple(SNAT, outgoing) == want
    assert local_socket_tuple(SNAT, SNAT.reply) == want  # the answer, before de-NAT
    local = {V, "10.0.0.5"}.__contains__
    assert local_socket_tuple(SNAT, outgoing, is_local=local) == want
    assert local_socket_tuple(SNAT, SNAT.reply, is_local=local) == want


def test_masquerading_router_is_not_local() -> None:
    assert local_socket_tuple(SNAT, SNAT.reply, is_local={V}.__contains__) is None


def test_loopback_maps_each_segment_to_its_receiver() -> None:
    daemon = ("127.0.0.1", 9001, "127.0.0.1", 45000)
    client = ("127.0.0.1", 45000, "127.0.0.1", 8082)
    to_daemon = LOOP.reply.reversed()  # what lo shows: c → 9001
    to_client = LOOP.original.reversed()  # and 8082 → c
    assert local_socket_tuple(LOOP, to_daemon) == daemon
    assert local_socket_tuple(LOOP, to_client) == client
    # the untranslated forms, had a tap seen them, map the same way
    assert local_socket_tuple(LOOP, LOOP.original) == daemon
    assert local_socket_tuple(LOOP, LOOP.reply) == client


def test_loopback_maps_each_segment_to_its_sender() -> None:
    """The other end of the same segments: the socket that sent each one (the client's
    SYN_SENT socket holds the dialled port; its SYN shows the daemon's)."""
    daemon = ("127.0.0.1", 9001, "127.0.0.1", 45000)
    client = ("127.0.0.1", 45000, "127.0.0.1", 8082)
    to_daemon = LOOP.reply.reversed()
    to_client = LOOP.original.reversed()
    assert sending_socket_tuple(LOOP, to_daemon) == client
    assert sending_socket_tuple(LOOP, to_client) == daemon
    assert sending_socket_tuple(LOOP, to_daemon, is_local={"127.0.0.1"}.__contains__) == client
    # an end that is not on this host sends nothing from here
    assert sending_socket_tuple(REDIRECT, REDIRECT.original, is_local={V}.__contains__) is None
    assert sending_socket_tuple(LOOP, FlowKey("tcp", "127.0.0.1", 1, "127.0.0.1", 2)) is None


def test_no_nat() -> None:
    # without NAT the socket is the captured tuple itself, oriented by who is local
    incoming = PLAIN.original
    assert local_socket_tuple(PLAIN, incoming, is_local={V}.__contains__) == (V, 53, C, 5353)
    assert local_socket_tuple(PLAIN, incoming.reversed(), is_local={V}.__contains__) == (V, 53, C, 5353)
    assert local_socket_tuple(PLAIN, incoming, is_local={C}.__contains__) == (C, 5353, V, 53)
    # with no hint, an un-NATed connection is taken as incoming
    assert local_socket_tuple(PLAIN, incoming) == (V, 53, C, 5353)


def test_unrelated_tuple_is_none() -> None:
    assert local_socket_tuple(REDIRECT, FlowKey("tcp", C, 40000, V, 9999)) is None
    assert local_socket_tuple(REDIRECT, FlowKey("tcp", C, 40002, V, 8081)) is None
    assert local_socket_tuple(REDIRECT, FlowKey("udp", C, 40000, V, 8081)) is None
    # C:40000 → V:9000 is not unrelated: it is REPLY⁻¹, the post-REDIRECT form
    assert local_socket_tuple(REDIRECT, FlowKey("tcp", C, 40000, V, 9000)) == (L, 9000, C, 40000)


def test_ipv6_text_forms_compare_by_address() -> None:
    m = NatMapping(
        "tcp",
        FlowKey("tcp", "2001:db8::7", 40000, "2001:db8::1", 8081),
        FlowKey("tcp", "2001:db8::1", 9000, "2001:db8::7", 40000),
        BASE | IPS_DST_NAT,
    )
    captured = FlowKey("tcp", "2001:DB8:0:0::7", 40000, "2001:0db8::0001", 8081)
    assert local_socket_tuple(m, captured) == ("2001:db8::1", 9000, "2001:db8::7", 40000)
