"""After a connection's close, a socket table read during it must not name its sockets.

A refresh that runs while a process calls close() can see the closing socket (LAST_ACK) with
its inode still set, and so with the holder the last scan found. The capture order says
better: once the first closer has acknowledged the other FIN, the other end's socket is
gone, and a segment after that (the TIME_WAIT re-ACK of a late segment) reaches no socket.
The engine then asks the kernel again instead of trusting the table.
"""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from conntui.capture import ListSource
from conntui.engine import Engine
from conntui.model import Endpoint, Frame, Holder, Match, Segment, SocketEntry, SocketTable
from conntui.session import Session

LO = "127.0.0.1"
SRV, CLI = 24500, 26500
T0 = 1_764_100_000.0


class LiveList(ListSource):
    live = True


class Tables:
    """The racy snapshot as the current table; the kernel (``resolve``) knows better."""

    def __init__(self) -> None:
        tw = SocketEntry("tcp", 4, "TIME_WAIT", Endpoint(LO, SRV), Endpoint(LO, CLI), cookie=7)
        closing = SocketEntry(
            "tcp",
            4,
            "LAST_ACK",
            Endpoint(LO, CLI),
            Endpoint(LO, SRV),
            inode=99,
            cookie=8,
            holders=(Holder(4242, 3, "client"),),
        )
        self.stale = SocketTable((tw, closing), local_addrs=(LO,))
        self.kernel = SocketTable((tw,), local_addrs=(LO,))
        self.resolved = 0

    def current(self) -> SocketTable:
        return self.stale

    def refresh(self) -> SocketTable:
        return self.stale

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None:
        self.resolved += 1
        return self.kernel if prune else None


def frame(i: int, src: int, dst: int, flags: str, data: bytes = b"") -> Frame:
    raw = bytes(IP(src=LO, dst=LO) / TCP(sport=src, dport=dst, flags=flags, seq=100 + i) / Raw(data))
    return Frame(T0 + i * 1e-4, raw, 101, "lo", 1, 0, 0x0800, len(raw))


def test_the_re_ack_after_the_close_reaches_no_socket() -> None:
    frames = [
        frame(0, SRV, CLI, "FA"),  # the server closes first
        frame(1, CLI, SRV, "A"),
        frame(2, CLI, SRV, "FA"),  # the client's FIN
        frame(3, SRV, CLI, "A"),  # the close's last ACK: the client's socket is gone
        frame(4, CLI, SRV, "PA", b"late segment"),  # injected, the old 4-tuple
        frame(5, SRV, CLI, "A"),  # the TIME_WAIT re-ACKs it
    ]
    tables = Tables()
    session = Session()
    engine = Engine(LiveList(frames), tables, session, settle=0.01)  # type: ignore[arg-type]
    engine.run(duration=5, poll=0.001)
    rows = session.window()
    last_ack, reack = rows[3].attribution, rows[5].attribution
    assert last_ack.receiver is not None and last_ack.receiver.state == "LAST_ACK"  # still there then
    assert reack.receiver is None and reack.match == Match.NONE, reack
    assert reack.sender is not None and reack.sender.state == "TIME_WAIT"
    assert tables.resolved >= 1
