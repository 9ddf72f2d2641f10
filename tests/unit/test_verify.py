"""The verifier links the kernel's answers (RST, ICMP, challenge ACK) to their questions."""

from __future__ import annotations

from conntui.decode import IcmpError
from conntui.model import Attribution, Endpoint, FlowKey, Frame, Holder, Match, Record, Segment, SocketEntry
from conntui.verify import Verifier

FRAME = Frame(0.0, b"", 101)


def rec(
    seq: int,
    ts: float,
    sport: int,
    dport: int,
    flags: str = "",
    proto: str = "tcp",
    tcp_seq: int = 1,
    match: Match = Match.NONE,
    receiver: SocketEntry | None = None,
) -> Record:
    seg = Segment(ts, "lo", proto, 4, "127.0.0.1", sport, "127.0.0.1", dport, flags, seq=tcp_seq)
    return Record(seq, FRAME, seg, Attribution(match, receiver=receiver))


def listener(rx: int, tx: int) -> SocketEntry:
    return SocketEntry(
        "tcp",
        4,
        "LISTEN",
        Endpoint("0.0.0.0", 80),
        None,
        inode=5,
        holders=(Holder(1, 3, "srv"),),
        rx_queue=rx,
        tx_queue=tx,
    )


def test_rst_answers_a_syn_to_a_closed_port():
    v = Verifier()
    assert v.on_record(rec(0, 1.0, 5000, 9, "S")) == []
    notes = v.on_record(rec(1, 1.001, 9, 5000, "RA"))
    assert {(n[0], n[2]) for n in notes} == {(0, 1), (1, 0)}
    assert any("answered with a RST" in n[1] for n in notes)
    assert v.expire(10.0) == []  # nothing left waiting


def test_missing_rst_is_reported_after_the_window():
    v = Verifier(window=0.5)
    v.on_record(rec(0, 1.0, 5000, 9, "S"))
    assert v.expire(1.2) == []
    notes = v.expire(1.6)
    assert len(notes) == 1 and notes[0][0] == 0 and "no RST came back" in notes[0][1]


def test_a_rst_is_never_a_question():
    v = Verifier()
    v.on_record(rec(0, 1.0, 5000, 9, "R"))
    assert v.expire(100.0) == []


def test_icmp_port_unreachable_answers_a_udp_datagram():
    v = Verifier()
    v.on_record(rec(0, 1.0, 5000, 9, proto="udp"))
    err = IcmpError(1.001, 4, "127.0.0.1", "127.0.0.1", 3, FlowKey("udp", "127.0.0.1", 5000, "127.0.0.1", 9))
    notes = v.on_icmp(err)
    assert len(notes) == 1 and notes[0][0] == 0 and "ICMP port unreachable" in notes[0][1]
    assert v.on_icmp(err) == []  # answered once


def test_udp_without_icmp_is_reported():
    v = Verifier(window=0.5)
    v.on_record(rec(0, 1.0, 5000, 9, proto="udp"))
    notes = v.expire(2.0)
    assert len(notes) == 1 and "no ICMP port unreachable" in notes[0][1]


def test_challenge_ack_answers_a_syn_to_an_established_connection():
    v = Verifier()
    est = SocketEntry(
        "tcp", 4, "ESTABLISHED", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000), inode=9
    )
    v.on_record(rec(0, 1.0, 5000, 80, "S", match=Match.ESTABLISHED, receiver=est))
    assert v.on_record(rec(1, 1.0001, 80, 5000, "PA")) == []  # data is not the challenge ACK
    notes = v.on_record(rec(2, 1.0002, 80, 5000, "A"))
    assert {(n[0], n[2]) for n in notes} == {(0, 2), (2, 0)}
    assert any("challenge ACK" in n[1] for n in notes)


def test_retransmitted_syn_and_full_accept_queue_are_marked():
    v = Verifier()
    full = listener(rx=3, tx=2)
    notes = v.on_record(rec(0, 1.0, 5000, 80, "S", tcp_seq=77, match=Match.LISTENER, receiver=full))
    assert any("accept queue is full (3 waiting, backlog 2)" in n[1] for n in notes)
    again = v.on_record(rec(1, 2.0, 5000, 80, "S", tcp_seq=77, match=Match.LISTENER, receiver=listener(1, 2)))
    assert [(n[0], n[2]) for n in again] == [(1, 0)]
    assert "retransmission" in again[0][1]
    assert (
        v.on_record(rec(2, 2.5, 5001, 80, "S", tcp_seq=77, match=Match.LISTENER, receiver=listener(0, 2)))
        == []
    )


def test_a_retransmitted_syn_says_a_challenge_ack_came_back():
    """The stale client: its SYN hit the server's old connection, which answered with a
    challenge ACK; the client's RST ended that connection and it sent the SYN again. The
    retransmission's note names the challenge ACK that came, not a SYN-ACK that did not."""
    v = Verifier()
    est = SocketEntry(
        "tcp", 4, "ESTABLISHED", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000), inode=9
    )
    v.on_record(rec(0, 1.0, 5000, 80, "S", tcp_seq=77, match=Match.ESTABLISHED, receiver=est))
    v.on_record(rec(1, 1.0001, 80, 5000, "A", tcp_seq=500))  # the challenge ACK
    v.on_record(rec(2, 1.0002, 5000, 80, "R", tcp_seq=501, match=Match.ESTABLISHED, receiver=est))
    again = v.on_record(
        rec(3, 1.004, 5000, 80, "S", tcp_seq=77, match=Match.LISTENER, receiver=listener(0, 2))
    )
    assert [(n[0], n[2]) for n in again] == [(3, 0)]
    text = again[0][1]
    assert "retransmission of the SYN of record #0" in text
    assert "challenge ACK (record #1)" in text
    assert "no SYN-ACK" not in text and "dropped" not in text and "nothing came back" not in text


def test_a_retransmitted_syn_says_nothing_came_back_only_when_nothing_did():
    v = Verifier()
    v.on_record(rec(0, 1.0, 5000, 80, "S", tcp_seq=77, match=Match.LISTENER, receiver=listener(0, 2)))
    v.on_record(rec(1, 1.5, 5001, 80, "S", tcp_seq=9, match=Match.LISTENER, receiver=listener(0, 2)))
    v.on_record(rec(2, 1.5001, 80, 5001, "SA", tcp_seq=30))  # another connection's answer
    again = v.on_record(rec(3, 2.0, 5000, 80, "S", tcp_seq=77, match=Match.LISTENER, receiver=listener(0, 2)))
    assert [(n[0], n[2]) for n in again] == [(3, 0)]
    assert "nothing came back" in again[0][1] and "which got" not in again[0][1]


def reuseport_member(pid: int) -> SocketEntry:
    return SocketEntry(
        "tcp", 4, "LISTEN", Endpoint("0.0.0.0", 80), None, inode=pid, holders=(Holder(pid, 3, f"s{pid}"),)
    )


def test_reuseport_syn_is_resolved_to_the_member_whose_process_accepted():
    v = Verifier()
    a, b = reuseport_member(100), reuseport_member(200)
    syn = rec(0, 1.0, 5000, 80, "S", match=Match.LISTENER, receiver=a)
    syn.attribution = Attribution(Match.LISTENER, receiver=a, candidates=(a, b))
    v.on_record(syn)
    child = SocketEntry(
        "tcp",
        4,
        "ESTABLISHED",
        Endpoint("127.0.0.1", 80),
        Endpoint("127.0.0.1", 5000),
        inode=9,
        holders=(Holder(200, 7, "s200"),),
    )
    notes = v.on_record(rec(1, 1.01, 5000, 80, "PA", match=Match.ESTABLISHED, receiver=child))
    assert len(notes) == 1 and notes[0].seq == 0 and notes[0].receiver is b
    assert "s200[200] fd 3" in notes[0].text and notes[0].related == 1


def test_reuseport_syn_is_resolved_from_the_table_when_no_segment_follows():
    from conntui.model import SocketTable

    v = Verifier()
    a, b = reuseport_member(100), reuseport_member(200)
    syn = rec(0, 1.0, 5000, 80, "S", match=Match.LISTENER, receiver=a)
    syn.attribution = Attribution(Match.LISTENER, receiver=a, candidates=(a, b))
    v.on_record(syn)
    unaccepted = SocketEntry("tcp", 4, "ESTABLISHED", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000))
    assert v.recheck(SocketTable([a, b, unaccepted])) == []
    accepted = SocketEntry(
        "tcp",
        4,
        "ESTABLISHED",
        Endpoint("127.0.0.1", 80),
        Endpoint("127.0.0.1", 5000),
        inode=9,
        holders=(Holder(100, 5, "s100"),),
    )
    notes = v.recheck(SocketTable([a, b, accepted]))
    assert [n.receiver for n in notes] == [a]
    assert not v.waiting_reuseport
