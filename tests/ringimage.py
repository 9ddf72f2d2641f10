"""A TPACKET_V3 receive ring laid out in memory, as the kernel fills it (tests, benchmarks).

``RingSource`` is a frame source that looks live to the engine: its "kernel" packs frames
into every block the reader has handed back and marks it ready, so the capture loop runs
``_Ring.take`` (the Python path) or ``FastPath.take`` (fastpath.py) on the same bytes, with
the ring wrapping around as it does on a real socket.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

from conntui.capture import _Ring

Spec = tuple[float, bytes, int, int, int]  # (time, raw IP bytes, ifindex, pkttype, ethertype)


class RingSource:
    """A live-looking source over a ring image in memory: the "kernel" (``_fill``) packs
    frames into every block the reader has handed back, and marks it ready."""

    live = True
    description = "test ring"

    def __init__(self, frames: Iterable[Spec], block: int = 4096, blocks: int = 4) -> None:
        """``frames`` may be a generator: it is read as blocks are filled."""
        self.block, self.blocks = block, blocks
        self.map = bytearray(block * blocks)
        ring = _Ring.__new__(_Ring)
        ring.map, ring.block_size, ring.blocks, ring.current = self.map, block, blocks, 0  # type: ignore[assignment]
        self.ring = ring
        self.names: dict[int, str] = {1: "lo", 2: "eth9"}
        self._frames: Iterator[Spec] = iter(frames)
        self._next: Spec | None = next(self._frames, None)
        self._fill_at = 0
        self._fill()

    def _fill(self) -> None:
        while self._next is not None:
            base = self._fill_at * self.block
            if struct.unpack_from("@I", self.map, base + 8)[0] & 1:
                return  # the reader has not handed it back yet
            pos, count, prev = base + 48, 0, -1
            while self._next is not None:
                ts, data, ifindex, pkttype, proto = self._next
                size = (80 + len(data) + 15) & ~15
                if pos + size > base + self.block:
                    break
                self._next = next(self._frames, None)
                sec = int(ts)
                nsec = round((ts - sec) * 1e9)
                struct.pack_into("@IIIIIIHH", self.map, pos, 0, sec, nsec, len(data), len(data), 0, 80, 80)
                struct.pack_into(
                    "@HHiHBB",
                    self.map,
                    pos + 48,
                    17,
                    struct.unpack("!H", struct.pack("@H", proto))[0],
                    ifindex,
                    772,
                    pkttype,
                    0,
                )
                self.map[pos + 80 : pos + 80 + len(data)] = data
                if prev >= 0:
                    struct.pack_into("@I", self.map, prev, pos - prev)
                prev, pos, count = pos, pos + size, count + 1
            struct.pack_into("@III", self.map, base + 8, 1, count, 48)
            self._fill_at = (self._fill_at + 1) % self.blocks

    @property
    def ended(self) -> bool:
        return self._next is None and not self.ring.ready()

    def read(self, timeout: float) -> list[Any]:
        frames = self.ring.take(self.names, 4096)
        self._fill()
        return frames

    def fast_names(self) -> dict[int, str]:
        return self.names

    def pump(self, fast: Any, timeout: float, budget: int) -> tuple[int, int]:
        if not self.ring.ready():
            return 0, 0
        frames, stored = fast.take(self.ring, 4096, budget)
        self._fill()
        return frames, stored

    def kernel_drops(self) -> int:
        return 0

    def close(self) -> None:
        pass
