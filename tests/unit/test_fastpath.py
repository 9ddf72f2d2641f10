"""The C fast path (conntui/_fastpath.c) against the Python path it stands in for.

The same frames, laid out in a TPACKET_V3 ring image exactly as the kernel fills it, go
through the same engine twice: once the pure-Python way (``CONNTUI_PURE=1``: ``_Ring.take``
then ``Engine.process`` per frame) and once through ``_fastpath.FastPath.take``. Every row
(frame, segment, attribution, seq), every counter, the rows spooled out of the window, and
every byte of the written pcapng must be the same, and most rows must have taken the fast
path (or the comparison would prove nothing).
"""

from __future__ import annotations

import gc
import io
import random
import struct
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.packet import Raw

from conntui import fastpath
from conntui.capfile.reader import read_capture
from conntui.capfile.spool import PcapngSpool
from conntui.capfile.writers import open_writer
from conntui.capture import _Ring
from conntui.engine import Engine, StaticTables
from conntui.model import (
    PACKET_HOST,
    PACKET_OUTGOING,
    Attribution,
    Endpoint,
    Frame,
    Holder,
    Match,
    Record,
    SocketEntry,
    SocketTable,
)
from conntui.session import Session
from tests.ringimage import RingSource

T0 = 1_764_100_000.0


def test_the_accelerator_is_built() -> None:
    """The test command installs gcc and the Python headers: the module must be there (a
    missing build would silently leave only the Python path under test)."""
    assert fastpath.built(), fastpath.status()
    assert fastpath.status() == "capture path: C accelerator"


def held(pid: int, fd: int, name: str) -> tuple[Holder, ...]:
    return (Holder(pid, fd, name),)


def conn(
    local: tuple[str, int], remote: tuple[str, int], cookie: int, holders: tuple[Holder, ...] = ()
) -> SocketEntry:
    fam = 6 if ":" in local[0] else 4
    return SocketEntry(
        "tcp",
        fam,
        "ESTABLISHED",
        Endpoint(*local),
        Endpoint(*remote),
        inode=cookie if holders else 0,
        holders=holders,
        cookie=cookie,
    )


def table() -> SocketTable:
    lo, v6 = "127.0.0.1", "::1"
    entries = [
        SocketEntry(
            "tcp",
            4,
            "LISTEN",
            Endpoint("0.0.0.0", 8080),
            None,
            inode=1,
            holders=held(100, 5, "srv"),
            cookie=1,
            tx_queue=128,
        ),
        conn((lo, 8080), (lo, 40001), 2, held(100, 7, "srv")),
        conn((lo, 40001), (lo, 8080), 3, held(200, 3, "cli")),
        conn((lo, 8080), (lo, 40003), 4),  # in the accept queue: no holder yet
        conn((lo, 40003), (lo, 8080), 5, held(201, 3, "cli2")),
        conn((v6, 9090), (v6, 40002), 6, held(110, 4, "srv6")),
        conn((v6, 40002), (v6, 9090), 7, held(210, 3, "cli6")),
        SocketEntry(
            "udp", 4, "UNCONN", Endpoint(lo, 5353), None, inode=8, holders=held(300, 4, "dns"), cookie=8
        ),
        SocketEntry(
            "udp",
            4,
            "ESTABLISHED",
            Endpoint(lo, 40004),
            Endpoint(lo, 5353),
            inode=9,
            holders=held(301, 3, "dig"),
            cookie=9,
        ),
    ]
    return SocketTable(entries, local_addrs=(lo, v6), ifnames={1: "lo", 2: "eth9"})


def frames(seed: int) -> list[tuple[float, bytes, int, int, int]]:
    """Interleaved flows: established TCP (v4 and v6) with data both ways and a close, a
    connection still in the accept queue, UDP both ways, a SYN to a closed port and its RST,
    and frames the C decoder leaves to Python (ICMP, garbage, an IPv6 extension header)."""
    rnd = random.Random(seed)
    lo, v6 = "127.0.0.1", "::1"
    flows: list[list[tuple[bytes, int, int, int]]] = []

    def tcp(src: str, sport: int, dst: str, dport: int, flags: str, n: int = 0) -> bytes:
        ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
        return bytes(
            ip / TCP(sport=sport, dport=dport, flags=flags, seq=1000 + n, ack=5000 + n) / Raw(b"x" * (n % 40))
        )

    est = []
    for i in range(150):
        est.append((tcp(lo, 40001, lo, 8080, "PA", i), 1, PACKET_HOST, 0x0800))
        est.append((tcp(lo, 8080, lo, 40001, "A" if i % 3 else "PA", i), 1, PACKET_HOST, 0x0800))
    est += [
        (tcp(lo, 40001, lo, 8080, "FA"), 1, PACKET_HOST, 0x0800),
        (tcp(lo, 8080, lo, 40001, "FA"), 1, PACKET_HOST, 0x0800),
        (tcp(lo, 40001, lo, 8080, "A"), 1, PACKET_HOST, 0x0800),
        (tcp(lo, 40001, lo, 8080, "PA", 7), 1, PACKET_HOST, 0x0800),  # data after both FINs
    ]
    flows.append(est)
    flows.append([(tcp(lo, 40003, lo, 8080, "PA", i), 1, PACKET_HOST, 0x0800) for i in range(30)])
    six = []
    for i in range(100):
        six.append((tcp(v6, 40002, v6, 9090, "PA", i), 1, PACKET_HOST, 0x86DD))
        six.append((tcp(v6, 9090, v6, 40002, "A", i), 1, PACKET_HOST, 0x86DD))
    hop = IPv6(src=v6, dst=v6) / IPv6ExtHdrHopByHop() / TCP(sport=40002, dport=9090, flags="A")
    six += [(bytes(hop), 1, PACKET_HOST, 0x86DD)] * 5
    flows.append(six)
    udp = []
    for i in range(150):
        udp.append(
            (
                bytes(IP(src=lo, dst=lo) / UDP(sport=40004, dport=5353) / Raw(b"q" * (i % 30))),
                1,
                PACKET_HOST,
                0x0800,
            )
        )
        udp.append(
            (
                bytes(IP(src=lo, dst=lo) / UDP(sport=5353, dport=40004) / Raw(b"a" * 70)),
                2,
                PACKET_OUTGOING,
                0x0800,
            )
        )
    flows.append(udp)
    flows.append(
        [
            (tcp(lo, 40005, lo, 7, "S"), 1, PACKET_HOST, 0x0800),
            (tcp(lo, 7, lo, 40005, "RA"), 1, PACKET_HOST, 0x0800),
            (bytes(IP(src=lo, dst=lo) / ICMP()), 1, PACKET_HOST, 0x0800),
            (b"\x45\x00garbage", 1, PACKET_HOST, 0x0800),
            (bytes(IP(src=lo, dst=lo) / UDP(sport=1, dport=2))[:25], 1, PACKET_HOST, 0x0800),
        ]
    )
    out: list[tuple[float, bytes, int, int, int]] = []
    ts = T0
    while any(flows):
        flow = rnd.choice([f for f in flows if f])
        data, ifindex, pkttype, proto = flow.pop(0)
        ts += rnd.choice((0.000001, 0.0001, 0.05))
        out.append((ts, data, ifindex, pkttype, proto))
    return out


def run(
    tmp_path: Path, name: str, pure: bool, seed: int, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> dict[str, Any]:
    monkeypatch.setenv("CONNTUI_PURE", "1" if pure else "0")
    spool = PcapngSpool(str(tmp_path))
    session = Session(window=kw.pop("window", 200), spool=spool)
    fmt = kw.pop("fmt", "pcapng")
    writer = open_writer(tmp_path / f"{name}.{fmt}", fmt)
    if "ref_window" in kw:
        writer._ref_window = kw.pop("ref_window")  # type: ignore[attr-defined]
    fast_rows = 0
    extend = session.extend

    def counting(recs: list[Record], counts: dict[str, int]) -> None:
        nonlocal fast_rows
        fast_rows += len(recs)
        extend(recs, counts)

    session.extend = counting  # type: ignore[method-assign]
    # Every row is handed on at the end (the settle time is longer than the run), after
    # the verifier has closed its last questions: with rows handed on during the run,
    # whether a note ("no ICMP came back") lands before its row is written would depend on
    # how fast each path went, which is the point of one of them.
    engine = Engine(
        RingSource(frames(seed)), StaticTables(table()), session, writer=writer, settle=kw.pop("settle", 60)
    )
    # The ring looks live, so the verifier closes its questions (answers awaited, SYNs kept
    # to spot retransmissions) against the wall clock, at most every 50 ms of it, and these
    # frames are stamped long ago: what was closed before the next block came would depend
    # on how fast each path ran (it did under the sanitizers, scripts/sanitize.sh, and on a
    # loaded machine). Here they close at the end only, on both paths alike.
    expire = engine.verifier.expire
    engine.verifier.expire = lambda now: expire(now) if now == float("inf") else []  # type: ignore[method-assign]
    engine.run(duration=20, poll=0.001, count=kw.pop("count", None))
    rows = [r for r in session.all_records()]
    counters = session.counters
    result = {
        "rows": [(r.seq, r.frame._replace(data=bytes(r.frame.data)), r.segment, r.attribution) for r in rows],
        "counters": (
            counters.frames,
            counters.segments,
            counters.undecodable,
            counters.icmp_errors,
            counters.by_match,
        ),
        "fast_rows": fast_rows,
    }
    engine.close()
    result["file"] = (tmp_path / f"{name}.{fmt}").read_bytes()
    return result


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_path_gives_the_same_rows_counters_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    py = run(tmp_path, "py", True, seed, monkeypatch)
    c = run(tmp_path, "c", False, seed, monkeypatch)
    assert py["fast_rows"] == 0
    total = len(frames(seed))
    assert c["fast_rows"] > total * 0.8, "most rows should take the fast path"
    assert c["counters"] == py["counters"]
    assert len(c["rows"]) == len(py["rows"]) > 200  # spooled rows came back too
    for a, b in zip(py["rows"], c["rows"], strict=True):
        assert a == b
    assert c["file"] == py["file"]


def test_rows_handed_on_during_the_capture_are_written_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settled rows leave through the C emit while capture goes on (these flows leave the
    verifier no question open, so the timing cannot change a row)."""
    py = run(tmp_path, "py", True, 6, monkeypatch, settle=0.001)
    c = run(tmp_path, "c", False, 6, monkeypatch, settle=0.001)
    assert c["rows"] == py["rows"]
    assert c["file"] == py["file"]


def test_a_classic_pcap_file_is_written_the_python_way_and_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    py = run(tmp_path, "py", True, 7, monkeypatch, fmt="pcap", settle=0.001)
    c = run(tmp_path, "c", False, 7, monkeypatch, fmt="pcap", settle=0.001)
    assert c["fast_rows"] > 0 and c["rows"] == py["rows"]
    assert c["file"] == py["file"] and len(c["file"]) > 10_000


def test_a_small_reference_window_writes_the_json_again_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    py = run(tmp_path, "py", True, 4, monkeypatch, ref_window=7)
    c = run(tmp_path, "c", False, 4, monkeypatch, ref_window=7)
    assert c["file"] == py["file"]
    assert c["file"].count(b"conntui-json: {") > 40  # every 7 packets of a flow, in full again
    back = list(read_capture(tmp_path / "c.pcapng"))
    assert all("\nconntui-json: {" in f.comment for f in back if f.comment)


def test_the_row_budget_stops_both_paths_at_the_same_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    py = run(tmp_path, "py", True, 5, monkeypatch, count=333)
    c = run(tmp_path, "c", False, 5, monkeypatch, count=333)
    assert len(py["rows"]) == len(c["rows"]) == 333
    assert c["rows"] == py["rows"]
    assert c["file"] == py["file"]


def mangled(seed: int) -> list[tuple[float, bytes, int, int, int]]:
    """Segments of two cached flows with their length fields, header lengths and sizes
    mangled: the C decoder must bound every read and decode exactly as decode._ip does
    (or leave the frame to it)."""
    rnd = random.Random(seed)
    lo = "127.0.0.1"
    bases = [
        bytes(IP(src=lo, dst=lo) / UDP(sport=40004, dport=5353) / Raw(b"q" * 90)),
        bytes(IP(src=lo, dst=lo) / TCP(sport=40001, dport=8080, flags="PA") / Raw(b"d" * 90)),
        bytes(IPv6(src="::1", dst="::1") / TCP(sport=40002, dport=9090, flags="A") / Raw(b"s" * 90)),
    ]
    out: list[tuple[float, bytes, int, int, int]] = []
    ts = T0
    for i in range(600):
        data = bytearray(rnd.choice(bases))
        v6 = data[0] >> 4 == 6
        if i >= 30:  # the first ones stay whole: they put the flows in the cache
            for _ in range(rnd.randint(1, 3)):
                what = rnd.randrange(6)
                if len(data) < 60:
                    continue  # already cut short: nothing left to mangle there
                if what == 0:  # IP total / payload length
                    struct.pack_into("!H", data, 4 if v6 else 2, rnd.randrange(0, 200))
                elif what == 1 and not v6:  # IHL, and the flags/fragment word
                    data[0] = 0x40 | rnd.randrange(16)
                    if rnd.random() < 0.2:
                        struct.pack_into("!H", data, 6, rnd.randrange(0x10000))
                elif what == 2:  # TCP data offset or UDP length
                    at = 40 if v6 else 20
                    if data[9 if not v6 else 6] == 17:
                        struct.pack_into("!H", data, at + 4, rnd.randrange(0, 200))
                    else:
                        data[at + 12] = rnd.randrange(256)
                elif what == 3:  # cut short
                    del data[rnd.randrange(0, len(data)) :]
                elif what == 4:  # a version nibble that disagrees with the ethertype
                    data[0] = (rnd.randrange(16) << 4) | (data[0] & 0x0F) if data else 0
                else:  # payload bytes
                    if len(data) > 60:
                        data[rnd.randrange(48, len(data))] = rnd.randrange(256)
        ts += 0.0001
        out.append((ts, bytes(data), 1, PACKET_HOST, 0x86DD if v6 else 0x0800))
    return out


def fuzzed(seed: int) -> list[tuple[float, bytes, int, int, int]]:
    """Bytes flipped anywhere (the addresses and ports of cached flows mostly kept, so the
    fast path sees them), cut short or random, on assorted interfaces, packet types and
    ethertypes. (The same generator ran 180k frames under AddressSanitizer and UBSan.)"""
    rnd = random.Random(seed)
    out = []
    for ts, data, _ifindex, _pkttype, _proto in mangled(seed):
        b = bytearray(data)
        kind = rnd.randrange(4)
        if kind == 0 and b:
            for _ in range(rnd.randint(1, 8)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
        elif kind == 1:
            b = bytearray(rnd.randbytes(rnd.randrange(0, 200)))
        elif kind == 2 and len(b) > 60:
            v6 = b[0] >> 4 == 6
            keep = set(range(8, 40)) if v6 else set(range(12, 20))
            at = 40 if v6 else 20
            keep |= {at, at + 1, at + 2, at + 3}
            for j in range(at + 20):
                if j not in keep and rnd.random() < 0.3:
                    b[j] = rnd.randrange(256)
        proto = rnd.choice((0x0800, 0x86DD, 0, 0x0806)) if rnd.random() < 0.2 else _proto
        out.append((ts, bytes(b), rnd.choice((1, 1, 2, 7)), rnd.choice((0, 0, 4, 1, 3)), proto))
    return out


@pytest.mark.parametrize(
    ("make", "seed", "least"),
    [(mangled, seed, 100) for seed in range(8)] + [(fuzzed, seed, 20) for seed in range(4)],
    ids=[f"mangled-{seed}" for seed in range(8)] + [f"fuzzed-{seed}" for seed in range(4)],
)
def test_hostile_frames_give_the_same_rows_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Any, seed: int, least: int
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "frames", lambda _seed: make(seed))
    py = run(tmp_path, "py", True, seed, monkeypatch, window=100_000)
    c = run(tmp_path, "c", False, seed, monkeypatch, window=100_000)
    assert c["fast_rows"] > least  # the C path did see them
    assert c["counters"] == py["counters"]
    assert c["rows"] == py["rows"]
    assert c["file"] == py["file"]


@pytest.mark.parametrize("pure", [True, False])
def test_rows_waiting_to_settle_never_outnumber_the_window(
    monkeypatch: pytest.MonkeyPatch, pure: bool
) -> None:
    """A backlog drained faster than rows settle (after a burst) hands on the rows that left
    the window at once: the queue, and so memory, stays bounded by the window."""
    monkeypatch.setenv("CONNTUI_PURE", "1" if pure else "0")
    engine = Engine(RingSource(frames(1)), StaticTables(table()), Session(window=100), settle=60)
    seen: list[int] = []
    emit = engine.emit

    def watched(final: bool = False) -> None:
        emit(final)
        if not final:
            seen.append(len(engine._pending))

    engine.emit = watched  # type: ignore[method-assign]
    engine.run(duration=20, poll=0.001)
    assert len(engine.session) > 800
    assert seen and max(seen) <= 100
    assert max(seen) >= 50  # it did fill up to about the window


def test_a_table_swapped_while_the_capture_waits_is_followed_before_the_next_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refresher swaps the socket table while the capture thread sits in select(): the
    next rows must see the new holder on both paths (the C path once used its cached
    answers for the old table until the next frame it could not take)."""
    old = table()
    entries = [replace(e, holders=held(999, 9, "newproc")) if e.cookie == 2 else e for e in old.entries]
    new = SocketTable(entries, local_addrs=("127.0.0.1", "::1"), ifnames={1: "lo", 2: "eth9"})

    class Swapping(RingSource):
        calls = 0

        def _swap(self) -> None:
            self.calls += 1
            if self.calls == 3:  # as the refresher does, between two reads of the ring
                tables._table = new

        def read(self, timeout: float) -> list[Any]:
            self._swap()
            return super().read(timeout)

        def pump(self, fast: Any, timeout: float, budget: int) -> tuple[int, int]:
            self._swap()
            return super().pump(fast, timeout, budget)

    rows = []
    for pure in (True, False):
        monkeypatch.setenv("CONNTUI_PURE", "1" if pure else "0")
        tables = StaticTables(old)
        session = Session(window=100_000)
        Engine(Swapping(frames(1)), tables, session, settle=60).run(duration=20, poll=0.001)
        rows.append([(r.seq, r.attribution) for r in session.window()])
    assert rows[0] == rows[1]
    assert any(a.receiver is not None and a.receiver.holders == held(999, 9, "newproc") for _, a in rows[1])


def test_a_comment_is_never_another_sockets_after_the_caches_turn_over() -> None:
    """The writer's comment cache is keyed by the sockets' ids: its entries keep their
    attribution (and so the sockets) alive, so a new socket can never take a freed one's
    id and its comment."""
    w = open_writer(io.BytesIO(), "pcapng")
    f0 = Frame(1.0, bytes(40), 101, "lo", 1, 0, 0x0800, 40)
    first = SocketEntry(
        "tcp",
        4,
        "ESTABLISHED",
        Endpoint("127.0.0.1", 80),
        Endpoint("127.0.0.1", 5000),
        holders=held(111, 3, "old"),
    )
    att = Attribution(Match.ESTABLISHED, receiver=first, explain="x")
    w.write(f0, None, att)
    w._by_att.clear()  # type: ignore[attr-defined]
    w._sock_json._cache.clear()  # type: ignore[attr-defined]
    del att, first
    gc.collect()
    kept = [e[4] for e in w._comments.values()]  # type: ignore[attr-defined]
    assert [a.receiver.holders for a in kept] == [held(111, 3, "old")]  # alive: its id stays its own


# -- malformed ring images: the C reader's bounds ----------------------------------------
#
# The kernel writes the ring, but its block and packet headers are offsets and lengths the
# C reader follows with raw pointers: a corrupt block (or a reader bug) must cost the rest
# of that block, never a read outside it. Each image below is the last block of the ring,
# so a read past the block is a read past the buffer (ASan's redzone when
# scripts/sanitize.sh runs these tests against an ASan/UBSan build). The reference is the
# rule take() documents: frames in the chain, in order, until one whose header or data would
# not lie inside the block, or whose ``tp_next`` is 0.

BLOCK = 4096
_BLK_STATUS, _BLK_COUNT, _BLK_FIRST = 8, 12, 16  # tpacket_block_desc.hdr.bh1 fields
_PKT_NEXT, _PKT_SNAPLEN, _PKT_LEN, _PKT_MAC = 0, 12, 16, 24  # tpacket3_hdr fields


def datagrams(n: int = 5) -> list[bytes]:
    """UDP datagrams of one flow of table() (the first goes through Python, the rest through
    C once its answer is cached), of different lengths."""
    lo = "127.0.0.1"
    return [bytes(IP(src=lo, dst=lo) / UDP(sport=40004, dport=5353) / Raw(b"q" * (7 * i))) for i in range(n)]


def laid_out(datas: list[bytes], size: int = BLOCK) -> tuple[bytearray, list[int]]:
    """One ready block holding ``datas`` as the kernel lays them out (as RingSource does),
    and where each packet header starts."""
    source = RingSource(
        [(T0 + i, d, 1, PACKET_HOST, 0x0800) for i, d in enumerate(datas)], block=size, blocks=1
    )
    block = bytearray(source.map)
    at, pos = [], struct.unpack_from("@I", block, _BLK_FIRST)[0]
    for _ in datas:
        at.append(pos)
        pos += struct.unpack_from("@I", block, pos + _PKT_NEXT)[0]
    assert struct.unpack_from("@II", block, _BLK_STATUS) == (1, len(datas))
    return block, at


def expected(block: bytes) -> list[bytes]:
    """The frames take() may read from ``block``: a Python model of its bounds rule."""
    size = len(block)
    count, pos = struct.unpack_from("@II", block, _BLK_COUNT)
    out: list[bytes] = []
    for _ in range(min(count, size)):
        if pos + 48 + 20 > size:
            break
        nxt, snaplen, mac = (
            struct.unpack_from(f, block, pos + o)[0]
            for f, o in (("@I", _PKT_NEXT), ("@I", _PKT_SNAPLEN), ("@H", _PKT_MAC))
        )
        if mac + snaplen + pos > size:
            break
        out.append(bytes(block[pos + mac : pos + mac + snaplen]))
        if nxt == 0:
            break
        pos += nxt
    return out


def put(fmt: str, offset: int, value: int) -> Any:
    def edit(block: bytearray, at: list[int]) -> bytearray:
        struct.pack_into(fmt, block, offset if offset >= 0 else at[-offset - 1], value)
        return block

    return edit


def in_packet(i: int, field: int, fmt: str, value: int) -> Any:
    def edit(block: bytearray, at: list[int]) -> bytearray:
        struct.pack_into(fmt, block, at[i] + field, value)
        return block

    return edit


def truncated(keep: int) -> Any:
    """The block ends ``keep`` bytes into the last packet's data (a block shorter than the
    packets its header announces)."""

    def edit(block: bytearray, at: list[int]) -> bytearray:
        mac = struct.unpack_from("@H", block, at[-1] + _PKT_MAC)[0]
        return block[: at[-1] + mac + keep]

    return edit


MALFORMED = {
    "intact": (lambda b, at: b, 5),
    "first packet past the block": (put("@I", _BLK_FIRST, BLOCK), 0),
    "first packet at 2**32-1": (put("@I", _BLK_FIRST, 0xFFFFFFFF), 0),
    "first header cut by the block's end": (put("@I", _BLK_FIRST, BLOCK - 48 - 19), 0),
    "first packet over the block header": (put("@I", _BLK_FIRST, 0), 0),
    "count 0": (put("@I", _BLK_COUNT, 0), 0),
    "count 2**32-1": (put("@I", _BLK_COUNT, 0xFFFFFFFF), 5),
    "count beyond the chain": (put("@I", _BLK_COUNT, 9), 5),
    "snaplen past the block's end": (in_packet(3, _PKT_SNAPLEN, "@I", BLOCK), 3),
    "snaplen 2**32-1": (in_packet(0, _PKT_SNAPLEN, "@I", 0xFFFFFFFF), 0),
    "snaplen one byte too long": (truncated(0), 4),
    "mac offset 0xffff": (in_packet(2, _PKT_MAC, "@H", 0xFFFF), 2),
    "mac offset 0": (in_packet(1, _PKT_MAC, "@H", 0), 5),
    "next past the block": (in_packet(1, _PKT_NEXT, "@I", BLOCK), 2),
    "next 2**32-1": (in_packet(1, _PKT_NEXT, "@I", 0xFFFFFFFF), 2),
    "next into the middle of a packet": (in_packet(0, _PKT_NEXT, "@I", 16), 1),
    "next 0 before the last": (in_packet(1, _PKT_NEXT, "@I", 0), 2),
    "wire length 2**32-1": (in_packet(4, _PKT_LEN, "@I", 0xFFFFFFFF), 5),
    "truncated in the last packet's data": (truncated(20), 4),
    "truncated in the last packet's header": (lambda b, at: b[: at[-1] + 30], 4),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_block_costs_the_rest_of_it_and_no_read_outside_it(
    monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    edit, least = MALFORMED[case]
    block, at = laid_out(datagrams())
    block = edit(block, at)
    want = expected(block)
    assert len(want) >= least  # the image does what its name says
    monkeypatch.setenv("CONNTUI_PURE", "0")
    session = Session(window=1000)
    engine = Engine(RingSource([]), StaticTables(table()), session, settle=60)
    fast = fastpath.make(engine, {1: "lo", 2: "eth9"})
    assert fast is not None
    # a ring of two blocks whose second (last) is this one, the reader at it
    ring = _Ring.__new__(_Ring)
    ring.map, ring.block_size, ring.blocks, ring.current = bytearray(len(block)) + block, len(block), 2, 1  # type: ignore[assignment]
    taken, stored = fast.take(ring, 4096, -1)
    assert taken == len(want)
    assert session.counters.frames == len(want)
    rows = [d for d in want if d in datagrams()]  # (a header read as a packet is no datagram)
    assert [bytes(r.frame.data) for r in session.all_records()] == rows
    assert stored == len(rows)
    assert ring.current == 0 and struct.unpack_from("@I", ring.map, len(block) + _BLK_STATUS)[0] == 0
    assert fast.take(ring, 4096, -1) == (0, 0)  # the block was handed back, the next is not ready
    engine.close()


def test_a_ring_whose_geometry_does_not_fit_its_buffer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNTUI_PURE", "0")
    engine = Engine(RingSource([]), StaticTables(table()), Session(window=10), settle=60)
    fast = fastpath.make(engine, {1: "lo"})
    block, _ = laid_out(datagrams(2))
    for size, blocks, current, buf in [
        (BLOCK, 2, 0, block),  # two blocks announced, one in the buffer
        (BLOCK, 1, 1, block),  # the reader past the last block
        (BLOCK, 1, -1, block),
        (32, 1, 0, block[:32]),  # a block smaller than its header
        (BLOCK, 0, 0, block),
    ]:
        ring = _Ring.__new__(_Ring)
        ring.map, ring.block_size, ring.blocks, ring.current = buf, size, blocks, current  # type: ignore[assignment]
        with pytest.raises(ValueError, match="geometry"):
            fast.take(ring, 4096, -1)
        assert buf[_BLK_STATUS] == 1  # nothing was read or handed back
    engine.close()
