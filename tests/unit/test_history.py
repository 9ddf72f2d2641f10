"""FlowHistory: capture order per 4-tuple (FINs, RSTs, an old connection a SYN hit)."""

from __future__ import annotations

import pytest

from conntui.history import LATE_AFTER_CLOSE, FlowHistory, pair
from conntui.model import Endpoint, Segment, SocketEntry


def seg(src: str, sport: int, dst: str, dport: int, flags: str = "A", ts: float = 1.0, n: int = 0) -> Segment:
    return Segment(ts, "lo", "tcp", 6 if ":" in src else 4, src, sport, dst, dport, flags, n)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("127.0.0.1", 40000), ("127.0.0.2", 80)),
        (("127.0.0.9", 5000), ("127.0.0.1", 5000)),  # equal ports: the addresses decide
        (("::1", 1), ("::1", 2)),
    ],
)
def test_pair_is_the_same_both_ways(a: tuple[str, int], b: tuple[str, int]) -> None:
    there = pair(seg(*a, *b))
    back = pair(seg(*b, *a))
    assert there == back
    assert {(there[0], there[1]), (there[2], there[3])} == {a, b}


def test_reset_is_seen_from_either_direction_even_with_equal_ports() -> None:
    h = FlowHistory()
    h.note_reset(seg("127.0.0.9", 5000, "127.0.0.1", 5000, "R", ts=2.0))
    syn = seg("127.0.0.1", 5000, "127.0.0.9", 5000, "S", ts=3.0)
    assert h.reset_before(syn)
    assert not h.reset_before(syn._replace(ts=1.0))  # a SYN before the RST
    assert not h.reset_before(seg("127.0.0.1", 5001, "127.0.0.9", 5000, "S", ts=3.0))


def test_segments_after_both_fins_are_late() -> None:
    h = FlowHistory()
    c, s = ("127.0.0.1", 40000), ("127.0.0.1", 80)
    assert not h.note_close(seg(*c, *s, "FA", ts=1.0))
    assert not h.note_close(seg(*c, *s, "FA", ts=1.001))  # a retransmitted FIN is not the other end's
    assert not h.note_close(seg(*s, *c, "FA", ts=1.002))  # both FINs now
    assert not h.note_close(seg(*c, *s, "A", ts=1.003))  # the last ACK of the close is not late
    assert h.note_close(seg(*c, *s, "A", ts=1.002 + LATE_AFTER_CLOSE + 0.01))
    assert h.note_close(seg(*s, *c, "PA", ts=1.004, n=10))  # data after both FINs: late at once


def test_a_syn_after_close_is_remembered_and_starts_afresh() -> None:
    h = FlowHistory()
    c, s = ("127.0.0.1", 40000), ("127.0.0.1", 80)
    h.note_close(seg(*c, *s, "FA"))
    h.note_close(seg(*s, *c, "FA"))
    assert not h.note_close(seg(*c, *s, "S", ts=2.0))
    assert h.syn_after_close
    assert not h.note_close(seg(*c, *s, "PA", ts=3.0, n=5))  # the new connection is open
    h.note_close(seg(*c, *s, "S", ts=4.0))
    assert not h.syn_after_close


def test_old_connection_is_kept_until_dropped() -> None:
    h = FlowHistory()
    syn = seg("127.0.0.1", 40000, "127.0.0.1", 80, "S")
    assert h.old_connection(syn) is None
    old = SocketEntry("tcp", 4, "ESTABLISHED", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 40000))
    h.keep_old_connection(syn, old)
    rst = seg("127.0.0.1", 80, "127.0.0.1", 40000, "R")
    assert h.old_connection(rst) is old
    h.drop_old_connection(rst)
    assert h.old_connection(syn) is None


def test_books_are_bounded() -> None:
    h = FlowHistory(limit=10)
    for port in range(1000):
        h.note_reset(seg("127.0.0.1", port, "127.0.0.2", 80, "R"))
    assert len(h._resets) <= 11


def test_after_the_close_s_last_ack_everything_is_late_at_once() -> None:
    """Once the first closer has acknowledged the other FIN, the other end's socket is gone:
    a segment on the 4-tuple is late however soon it comes (a table read during the close
    may still show that socket, even with its process)."""
    h = FlowHistory()
    c, s = ("127.0.0.1", 40000), ("127.0.0.1", 80)
    assert not h.note_close(seg(*s, *c, "FA", ts=1.0))  # the server closes first
    assert not h.note_close(seg(*c, *s, "A", ts=1.0001))  # the client's ACK of it: not the last
    assert not h.note_close(seg(*c, *s, "FA", ts=1.0002))  # the client's FIN: both now
    assert not h.note_close(seg(*c, *s, "A", ts=1.0003))  # not from the first closer: open still
    assert not h.note_close(seg(*s, *c, "A", ts=1.0004))  # the last ACK itself reached a socket
    assert h.note_close(seg(*s, *c, "A", ts=1.0005))  # a re-ACK right after: late
    assert h.note_close(seg(*c, *s, "R", ts=1.0006))
    assert not h.note_close(seg(*c, *s, "S", ts=2.0))  # a new connection starts afresh
    assert h.syn_after_close
    assert not h.note_close(seg(*c, *s, "A", ts=2.0001))
