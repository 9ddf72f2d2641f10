"""Issue 11, "say only what happened": the reproduced false statements that live in pure code
(the verifier, the socket table's clock), each as a regression test with its own truth."""

from __future__ import annotations

import socket
from pathlib import Path

from conntui.model import Endpoint, Match, SocketEntry
from conntui.verify import Verifier
from tests.unit.test_sockets import Clock, FakeDiag, FakeProc, make_source, pack_diag_msg
from tests.unit.test_verify import rec

AF4 = socket.AF_INET


def test_syn_ack_refutes_a_challenge_ack_prediction() -> None:
    """A SYN predicted to hit an established connection (→ challenge ACK) is answered by a
    SYN-ACK: the SYN made a new connection, no challenge ACK came. A later ordinary bare ACK
    in the reverse direction must not be taken as the challenge ACK."""
    v = Verifier()
    est = SocketEntry(
        "tcp", 4, "ESTABLISHED", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000), inode=9
    )
    v.on_record(rec(0, 1.0, 5000, 80, "S", tcp_seq=100, match=Match.ESTABLISHED, receiver=est))
    v.on_record(rec(1, 1.0001, 80, 5000, "SA", tcp_seq=7000))  # the handshake goes on
    v.on_record(rec(2, 1.0002, 5000, 80, "A", tcp_seq=101, match=Match.ESTABLISHED, receiver=est))
    v.on_record(rec(3, 1.0003, 5000, 80, "PA", tcp_seq=101, match=Match.ESTABLISHED, receiver=est))
    notes = v.on_record(rec(4, 1.0004, 80, 5000, "A", tcp_seq=7001))  # ACK of that data
    claimed = [n.text for n in notes if "challenge ACK" in n.text]
    assert not claimed, f"an ordinary ACK after the SYN-ACK 'verifies' the challenge ACK: {claimed}"


def test_first_seen_of_a_socket_born_during_the_dump_is_not_older_than_its_syn(tmp_path: Path) -> None:
    """The dump takes time; a connection made while it runs shows up in it. Its first_seen
    must not be the time the dump started (before the connection's own SYN): the demux
    would take it for a connection that existed before the SYN."""
    proc = FakeProc(tmp_path / "proc")
    proc.process(100, "srv")
    proc.sock(100, 3, 555)
    proc.sock(100, 4, 556)
    listen = pack_diag_msg(state=10, sport=80, inode=555, cookie=1, wqueue=128)
    conn = pack_diag_msg(state=1, sport=80, dst="127.0.0.1", dport=40000, inode=556, cookie=2)
    clock = Clock()  # 1000.0 when the refresh starts
    syn_ts = 1000.3  # the connection's SYN, captured while the dump runs

    class SlowDump(FakeDiag):
        def dump_msgs(self, proto: str, family: int) -> list[bytes]:
            if (proto, family) == ("tcp", AF4):
                clock.now = 1000.5  # the kernel walked its hash; the connection was made meanwhile
                return [listen, conn]
            return []

    src = make_source(proc, SlowDump(), clock)
    (entry,) = src.refresh().connected("tcp", "127.0.0.1", 80, "127.0.0.1", 40000)
    assert entry.first_seen >= syn_ts, (
        f"first_seen {entry.first_seen} is older than the connection's SYN at {syn_ts}"
    )
