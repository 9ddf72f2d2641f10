"""The ceiling for a pure-Python capture loop (bench/hotpath.py --ceiling), not conntui code.

    python _ceiling.py PORT SECONDS OUT.pcapng

AF_PACKET ``recv_into`` a reused buffer on ``lo`` (outgoing copies ignored), the raw 5-tuple
sliced as a bytes key, a per-flow cached 60-byte comment option, the pcapng EPB appended to
a bytearray and written in 1 MiB chunks; no per-packet object but the key. The port test is
done in Python (no kernel filter). Prints ``got N packets P drops D cpu S``.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time

SOL_PACKET, PACKET_STATISTICS, PACKET_IGNORE_OUTGOING, SO_RCVBUFFORCE, ETH_P_ALL = 263, 6, 23, 33, 3


def main() -> None:
    port = int(sys.argv[1])
    duration = min(float(sys.argv[2]), 120.0)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.bind(("lo", ETH_P_ALL))
    s.setblocking(False)
    buf = bytearray(65536)
    mv = memoryview(buf)
    epb = struct.Struct("<IIIIIII").pack
    tail = struct.Struct("<I").pack
    comment = b"\x01\x00" + struct.pack("<H", 60) + b"c" * 60 + b"\x00\x00\x00\x00"
    cache: dict[bytes, bytes] = {}
    out = bytearray()
    recv_into = s.recv_into
    now_us = time.time_ns
    n = 0
    deadline = time.monotonic() + duration
    with open(sys.argv[3], "wb") as f:
        while time.monotonic() < deadline:
            select.select([s], [], [], 0.1)
            for _ in range(4096):
                try:
                    k = recv_into(buf)
                except BlockingIOError:
                    break
                ihl = (buf[0] & 15) * 4
                sport = buf[ihl] << 8 | buf[ihl + 1]
                dport = buf[ihl + 2] << 8 | buf[ihl + 3]
                if sport != port and dport != port:
                    continue
                key = bytes(mv[9:10]) + bytes(mv[12:20]) + bytes(mv[ihl : ihl + 4])
                opt = cache.get(key)
                if opt is None:
                    opt = cache[key] = comment
                t = now_us() // 1000
                pad = -k & 3
                total = 32 + k + pad + len(opt)
                out += epb(6, total, 0, t >> 32, t & 0xFFFFFFFF, k, k)
                out += mv[:k]
                out += b"\0" * pad
                out += opt
                out += tail(total)
                n += 1
            if len(out) > 1 << 20:
                f.write(out)
                out.clear()
        f.write(out)
    packets, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    print(f"got {n} packets {packets} drops {drops} cpu {time.process_time():.3f}", flush=True)


if __name__ == "__main__":
    main()
