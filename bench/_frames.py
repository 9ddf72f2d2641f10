"""Synthetic traffic for the in-process benchmarks (memory, UI): frames and a socket table.

``FLOWS`` loopback TCP connections, each with a client and an accepted server socket held by
made-up processes, plus their listener; frames are raw IPv4 TCP segments (what the live
``AF_PACKET`` source yields) in both directions, each a distinct ``bytes`` object as in a
real capture.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from conntui.model import Endpoint, Frame, Holder, SocketEntry, SocketTable

LINKTYPE_RAW = 101
SERVER_PORT = 8080
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_LO = bytes([127, 0, 0, 1])


def socket_table(flows: int) -> SocketTable:
    entries = [
        SocketEntry(
            "tcp",
            4,
            "LISTEN",
            Endpoint("127.0.0.1", SERVER_PORT),
            None,
            inode=1,
            holders=(Holder(4000, 3, "server"),),
            cookie=1,
        )
    ]
    for i in range(flows):
        cport = 40000 + i
        entries.append(
            SocketEntry(
                "tcp",
                4,
                "ESTABLISHED",
                Endpoint("127.0.0.1", cport),
                Endpoint("127.0.0.1", SERVER_PORT),
                inode=10 + 2 * i,
                holders=(Holder(5000 + i % 50, 3 + i // 50, f"client{i % 50}"),),
                cookie=10 + 2 * i,
            )
        )
        entries.append(
            SocketEntry(
                "tcp",
                4,
                "ESTABLISHED",
                Endpoint("127.0.0.1", SERVER_PORT),
                Endpoint("127.0.0.1", cport),
                inode=11 + 2 * i,
                holders=(Holder(4000, 4 + i, "server"),),
                cookie=11 + 2 * i,
            )
        )
    return SocketTable(entries, taken_at=time.time(), local_addrs=["127.0.0.1"], ifnames={1: "lo"})


def frame_factory(flows: int, payload: int = 64) -> Callable[[int, float], Frame]:
    """``make(i, ts)``: the i-th segment (flow i % flows, alternating direction)."""
    body = b"d" * payload
    buf = bytearray(20 + 20 + payload)
    buf[40:] = body
    total = len(buf)

    def make(i: int, ts: float) -> Frame:
        flow = i % flows
        cport = 40000 + flow
        if (i // flows) % 2 == 0:
            sport, dport = cport, SERVER_PORT
        else:
            sport, dport = SERVER_PORT, cport
        _IP.pack_into(buf, 0, 0x45, 0, total, i & 0xFFFF, 0x4000, 64, 6, 0, _LO, _LO)
        _TCP.pack_into(buf, 20, sport, dport, i & 0xFFFFFFFF, 1, 5 << 4, 0x18, 65535, 0, 0)
        return Frame(
            ts=ts, data=bytes(buf), linktype=LINKTYPE_RAW, iface="lo", ifindex=1, pkttype=0, wire_len=total
        )

    return make


class GeneratedSource:
    """A ``FrameSource`` that makes ``total`` frames on demand in batches, at ``rate`` per
    second (0: as fast as the engine reads), calling ``on_batch(done)`` after each batch."""

    live = False
    description = "generated frames"

    def __init__(
        self,
        total: int,
        flows: int = 200,
        *,
        batch: int = 4096,
        rate: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        stop_after: float | None = None,
    ) -> None:
        self.total = total
        self.batch = batch
        self.rate = rate
        self.make = frame_factory(flows)
        self.on_batch = on_batch
        self.done = 0
        self.t0 = time.monotonic()
        self.stop_at = None if stop_after is None else self.t0 + stop_after
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def read(self, timeout: float) -> list[object]:
        if self._ended:
            return []
        if self.done >= self.total or (self.stop_at is not None and time.monotonic() >= self.stop_at):
            self._ended = True
            return []
        n = min(self.batch, self.total - self.done)
        if self.rate > 0:
            due = self.t0 + (self.done + n) / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout if timeout > 0 else wait))
            n = min(n, max(1, int((time.monotonic() - self.t0) * self.rate) - self.done))
        now = time.time()
        make = self.make
        start = self.done
        frames = [make(start + k, now) for k in range(n)]
        self.done += n
        if self.on_batch is not None:
            self.on_batch(self.done)
        return frames  # type: ignore[return-value]

    def kernel_drops(self) -> int:
        return 0

    def close(self) -> None:
        self._ended = True
