"""The session store: ordering, bounded window, late re-attribution, counters."""

from __future__ import annotations

import os
import threading

import pytest

from conntui.model import Attribution, Endpoint, Frame, Match, Record, Segment, SocketEntry
from conntui.session import Session


def frame(i: int) -> Frame:
    return Frame(ts=float(i), data=b"x", linktype=101)


def seg(i: int) -> Segment:
    return Segment(
        ts=float(i), iface="lo", proto="tcp", family=4, src="127.0.0.1", sport=i, dst="127.0.0.1", dport=80
    )


def test_since_returns_new_rows_in_order():
    s = Session()
    for i in range(5):
        s.append(frame(i), seg(i), Attribution(Match.ESTABLISHED))
    assert [r.seq for r in s.since(-1)] == [0, 1, 2, 3, 4]
    assert [r.seq for r in s.since(2)] == [3, 4]
    assert [r.seq for r in s.since(0, limit=2)] == [1, 2]
    assert s.since(4) == []
    assert s.last_seq == 4 and len(s) == 5


def test_window_is_bounded_and_without_a_spool_old_rows_are_dropped():
    s = Session(window=3)
    for i in range(10):
        s.append(frame(i), seg(i), Attribution(Match.ESTABLISHED))
    assert [r.seq for r in s.window()] == [7, 8, 9]
    assert [r.seq for r in s.since(-1)] == [7, 8, 9]
    assert s.get(2) is None and s.get(8) is not None
    assert [r.seq for r in s.all_records()] == [7, 8, 9]
    assert len(s) == 10


def real_frame(i: int) -> Frame:
    from scapy.layers.inet import IP, TCP

    data = bytes(
        IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=1000 + i, dport=80, flags="PA") / (b"x" * i)
    )
    return Frame(ts=1.0 + i, data=data, linktype=101, iface="lo", ifindex=1, wire_len=len(data))


def test_rows_leaving_the_window_are_spooled_to_disk_and_come_back_for_export(tmp_path):
    from conntui.capfile.spool import PcapngSpool
    from conntui.decode import decode_frame
    from conntui.model import Endpoint, Holder, SocketEntry

    spool = PcapngSpool(str(tmp_path))
    s = Session(window=3, spool=spool)
    sock = SocketEntry(
        "tcp",
        4,
        "ESTABLISHED",
        Endpoint("127.0.0.1", 80),
        Endpoint("127.0.0.1", 1000),
        inode=5,
        holders=(Holder(42, 7, "srv"),),
    )
    for i in range(10):
        f = real_frame(i)
        s.append(f, decode_frame(f), Attribution(Match.ESTABLISHED, receiver=sock, explain=f"row {i}"))
    assert spool.count == 7 and [r.seq for r in s.window()] == [7, 8, 9]
    back = list(s.all_records())
    assert [r.seq for r in back] == list(range(10))
    assert [r.segment.sport for r in back] == [1000 + i for i in range(10)]
    assert [r.attribution.explain for r in back] == [f"row {i}" for i in range(10)]
    assert back[0].attribution.receiver.holders == (Holder(42, 7, "srv"),)
    assert [r.seq for r in s.all_records(lambda r: r.seq % 3 == 0)] == [0, 3, 6, 9]
    assert oct(os.stat(spool.path).st_mode & 0o777) == "0o600"
    s.close()
    assert not os.path.exists(spool.path)


def test_reattribute_moves_counters():
    s = Session()
    s.append(frame(0), seg(0), Attribution(Match.UNKNOWN))
    assert s.counters.by_match[Match.UNKNOWN] == 1
    assert s.counters.attributed == 0
    # a row counts as attributed once it names a socket (a process's or the kernel's)
    assert s.reattribute(0, Attribution(Match.ESTABLISHED))
    assert s.counters.by_match[Match.UNKNOWN] == 0
    assert s.counters.attributed == 0
    sock = SocketEntry("tcp", 4, "ESTABLISHED", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000))
    assert s.reattribute(0, Attribution(Match.ESTABLISHED, receiver=sock))
    assert s.counters.attributed == 1 and s.counters.attributed_pct() == 100.0
    assert s.get(0).attribution.match == Match.ESTABLISHED
    assert not s.reattribute(99, Attribution(Match.NONE))


def test_concurrent_appends_keep_unique_sequence_numbers():
    s = Session()

    def writer():
        for i in range(2000):
            s.append(frame(i), seg(i), Attribution(Match.ESTABLISHED))

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [r.seq for r in s.all_records()]
    assert seqs == list(range(8000))


def test_extend_takes_rows_numbered_next_and_counts_them() -> None:
    s = Session(window=3)
    seg = Segment(1.0, "lo", "udp", 4, "127.0.0.1", 1, "127.0.0.1", 2)
    frame = Frame(1.0, b"", 101)
    att = Attribution(Match.UDP_UNCONNECTED)
    s.append(frame, seg, att)
    s.extend([Record(i, frame, seg, att) for i in (1, 2, 3)], {Match.UDP_UNCONNECTED: 3})
    assert [r.seq for r in s.window()] == [1, 2, 3] and s.last_seq == 3
    assert s.counters.segments == 4 and s.counters.by_match == {Match.UDP_UNCONNECTED: 4}
    with pytest.raises(ValueError, match="numbered from 9, expected 4"):
        s.extend([Record(9, frame, seg, att)], {})
