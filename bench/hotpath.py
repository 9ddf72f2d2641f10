#!/usr/bin/env python3
"""Where the capture pipeline's time goes: per-stage costs, and a profile of the real thing.

1. ``--stages`` (default): µs per packet of each stage, in process, on the kind of frames
   the live socket yields (raw IPv4, 16-byte UDP datagrams to an unconnected socket, and TCP
   segments of established connections): receive (``LiveCapture.read`` on ``lo`` while the
   generator sends), ``decode_frame``, ``attribute``, ``Session.append``, the pcapng
   writer, and ``Engine.process`` (all of them).
2. ``--live``: finds the highest rate at which ``conntui --headless -q -i lo -p PORT -w
   x.pcapng`` loses nothing (kernel drops 0 and every datagram in the file), then records it
   at that rate with py-spy (``--format raw``; cProfile of the main thread when py-spy is
   missing) and prints the top functions by own time and by inclusive time.
3. ``--gc RATE``: conntui at RATE with the garbage collector timed (``_gcwrap.py``), as is,
   frozen every second, and disabled: how much of the CPU goes to collections.
4. ``--ceiling``: the same load through ``_ceiling.py``, a minimal pure-Python loop (no
   scapy, no per-packet objects, per-flow cached comments): what a redesign can reach.

    sudo python bench/hotpath.py                 # stages
    sudo python bench/hotpath.py --live          # stages + search + py-spy
    sudo python bench/hotpath.py --ceiling       # stages + the pure-Python ceiling
    sudo python bench/hotpath.py --gc 40000      # stages + GC share (as is / frozen / off)
    sudo python bench/hotpath.py --smoke
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from itertools import count
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))  # tests.ringimage (after the installed conntui)
import _gen  # noqa: E402
from _common import (  # noqa: E402
    Checks,
    banner,
    conntui_cmd,
    count_capture,
    env_with_repo,
    parse_counters,
    require_root,
    stop,
    table,
    wait_for_text,
)
from _frames import frame_factory, socket_table  # noqa: E402

from conntui.capfile.comments import comment_text  # noqa: E402
from conntui.capfile.writers import open_writer  # noqa: E402
from conntui.decode import decode_frame  # noqa: E402
from conntui.demux import attribute  # noqa: E402
from conntui.engine import Engine, StaticTables  # noqa: E402
from conntui.flowcache import FlowCache  # noqa: E402
from conntui.model import Endpoint, Frame, Holder, SocketEntry, SocketTable  # noqa: E402
from conntui.session import Session  # noqa: E402


def per_op(fn, items, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Best-of-``repeat`` µs per item of ``fn(item)`` over ``items``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, (time.perf_counter() - t0) / len(items))
    return best * 1e6


def _star(fn, args):  # type: ignore[no-untyped-def]
    return fn(*args)


def udp_frames(n: int, port: int) -> tuple[list[Frame], SocketTable]:
    import struct

    data = bytearray(20 + 8 + 16)
    struct.pack_into(
        "!BBHHHBBH4s4s", data, 0, 0x45, 0, len(data), 1, 0x4000, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    struct.pack_into("!HHHH", data, 20, 45000, port, 24, 0)
    ts = time.time()
    frames = [Frame(ts + i * 1e-6, bytes(data), 101, "lo", 1, 0, 0x0800, len(data)) for i in range(n)]
    entries = [
        SocketEntry(
            "udp",
            4,
            "UNCONN",
            Endpoint("127.0.0.1", port),
            None,
            inode=7,
            holders=(Holder(999, 5, "sink"),),
            cookie=7,
        ),
        SocketEntry(
            "udp",
            4,
            "ESTABLISHED",
            Endpoint("127.0.0.1", 45000),
            Endpoint("127.0.0.1", port),
            inode=8,
            holders=(Holder(998, 3, "udpgen"),),
            cookie=8,
        ),
    ]
    return frames, SocketTable(entries, taken_at=ts - 1, local_addrs=["127.0.0.1"], ifnames={1: "lo"})


def recv_cost(seconds: float) -> tuple[float, float, int]:
    """LiveCapture.read on lo while the C generator sends: (wall µs/frame, CPU µs/frame, frames)."""
    from conntui.capture import LiveCapture, compile_bpf

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        try:
            bpf = compile_bpf(f"udp port {port}")
        except Exception:
            bpf = None
        cap = LiveCapture("lo", bpf)
        gen = _gen.Generator(30_000, seconds, port)
        n = 0
        busy = 0.0
        cpu0 = time.process_time()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            frames = cap.read(0.05)
            if frames:
                busy += time.perf_counter() - t0
                n += len(frames)
        cpu = time.process_time() - cpu0
        gen.wait()
        cap.close()
    return (busy / n * 1e6 if n else float("nan")), (cpu / n * 1e6 if n else float("nan")), n


def ring_cost(frames: list[Frame], tab: SocketTable, pure: bool, checks: Checks | None = None) -> float:
    """µs a packet for the capture loop from a ring image (tests/ringimage.py) to rows in the
    session and blocks in a pcapng: the C fast path, or the Python one (``pure``)."""
    from conntui import fastpath
    from tests.ringimage import RingSource

    was = os.environ.get("CONNTUI_PURE")
    os.environ["CONNTUI_PURE"] = "1" if pure else "0"
    try:
        if not pure and not fastpath.available():
            return float("nan")
        specs = [(f.ts, f.data, f.ifindex, f.pkttype, f.protocol) for f in frames]
        src = RingSource(specs, block=1 << 20, blocks=8)
        eng = Engine(
            src,  # type: ignore[arg-type]
            StaticTables(tab),
            Session(window=len(frames) + 10),
            writer=open_writer(io.BytesIO(), "pcapng"),
            settle=0.05,
        )
        t0 = time.perf_counter()
        eng.run(duration=60, poll=0.001)
        cost = (time.perf_counter() - t0) * 1e6 / len(frames)
        if checks is not None:
            path = "Python" if pure else "C fast path"
            stored = eng.session.counters.segments
            checks.expect(stored == len(frames), f"ring → rows ({path}): {stored:,} of {len(frames):,} rows")
        return cost
    finally:
        if was is None:
            os.environ.pop("CONNTUI_PURE", None)
        else:
            os.environ["CONNTUI_PURE"] = was


def stages(n: int, live: bool, checks: Checks, recv_seconds: float = 2.0) -> None:
    rows: list[list[object]] = []
    port = 9999
    uframes, utable = udp_frames(n, port)
    make = frame_factory(200)
    tframes = [make(i, time.time()) for i in range(n)]
    ttable = socket_table(200)
    for label, frames, tab in (
        ("UDP 16 B → unconnected socket", uframes, utable),
        ("TCP established (200 flows)", tframes, ttable),
    ):
        segs = [decode_frame(f) for f in frames]
        atts = [attribute(s, tab) for s in segs]  # type: ignore[arg-type]
        d = per_op(decode_frame, frames)
        a = per_op(partial(attribute, table=tab), segs)
        sess = Session(window=len(frames) + 10)
        triples = list(zip(frames, segs, atts, strict=True))
        s_cost = per_op(partial(_star, sess.append), triples, repeat=1)
        w = open_writer(io.BytesIO(), "pcapng")
        w_cost = per_op(partial(_star, w.write), triples)
        c_cost = per_op(comment_text, atts[:2000])
        eng = Engine(
            _NullSource(),
            StaticTables(tab),
            Session(window=len(frames) + 10),
            writer=open_writer(io.BytesIO(), "pcapng"),
        )
        e_cost = per_op(eng.process, frames, repeat=1)
        eng_nw = Engine(_NullSource(), StaticTables(tab), Session(window=len(frames) + 10))
        e2_cost = per_op(eng_nw.process, frames, repeat=1)
        ring_py = ring_cost(frames, tab, pure=True, checks=checks)
        ring_c = ring_cost(frames, tab, pure=False, checks=checks)
        checks.expect(ring_c == ring_c, "the C fast path is not available (ring → rows not measured)")
        rows.append(
            [
                label,
                f"{d:.2f}",
                f"{a:.2f}",
                f"{s_cost:.2f}",
                f"{w_cost:.2f}",
                f"{c_cost:.1f}",
                f"{e2_cost:.2f}",
                f"{e_cost:.2f}",
                f"{ring_py:.2f}",
                f"{ring_c:.2f}",
                f"{1e6 / ring_c:,.0f}",
            ]
        )
    print(
        table(
            [
                "frames",
                "decode µs",
                "attribute µs",
                "append µs",
                "pcapng write µs",
                "comment (miss) µs",
                "process µs",
                "process + -w µs",
                "ring → rows + -w, Python µs",
                "… C fast path µs",
                "max seg/s (C)",
            ],
            rows,
        )
    )
    if live and os.geteuid() == 0:
        wall, cpu, k = recv_cost(recv_seconds)
        checks.expect(k > 0, "LiveCapture.read on lo received nothing while the generator sent")
        print(
            f"   receive: LiveCapture.read on lo at 30k pkt/s: {wall:.2f} µs/frame in read() (wall), "
            f"{cpu:.2f} µs/frame of process CPU ({k:,} frames)"
        )


class _ChurnTables(StaticTables):
    """A table that changes every ``every`` segments, as on a busy host where misses keep
    deriving new tables (``with_entries``): a new connection nobody here talks on."""

    def __init__(self, table: SocketTable, every: int) -> None:
        super().__init__(table)
        self.every = every
        self.calls = 0
        self._port = count(20_000)

    def current(self) -> SocketTable:
        self.calls += 1
        if self.calls % self.every == 0:
            port = next(self._port)
            new = SocketEntry(
                "tcp", 4, "ESTABLISHED", Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.9", port), cookie=port
            )
            self._table = self._table.with_entries((new,))
        return self._table


class _ClearingCache(FlowCache):
    """The cache as it was: emptied whenever the table object changes."""

    def follow(self, table: SocketTable) -> None:
        if table is not self._table:
            self._clear()
            self._table = table


def churn(n: int, flows: int = 1000, every: int = 100) -> None:
    """Engine.process on TCP data of ``flows`` connections while the table changes every
    ``every`` segments (200 changes a second at 20k seg/s): the flow cache that follows the
    table's lineage vs one cleared on each change."""
    make = frame_factory(flows)
    frames = [make(i, time.time()) for i in range(n)]
    rows = []
    for label, cache in (
        ("kept across changes (lineage)", FlowCache()),
        ("cleared on each change", _ClearingCache()),
    ):
        eng = Engine(_NullSource(), _ChurnTables(socket_table(flows), every), Session(window=n + 10))
        eng.flow_cache = cache
        cost = per_op(eng.process, frames, repeat=1)
        rows.append([label, f"{cost:.2f}", f"{1e6 / cost:,.0f}", f"{cache.cleared:,}", f"{cache.dropped:,}"])
    print(f"   flow cache under table churn: {flows:,} TCP flows, the table changes every {every} segments")
    print(table(["flow cache", "process µs", "max seg/s", "whole clears", "answers dropped"], rows))


class _NullSource:
    live = False
    description = "none"
    ended = True

    def read(self, timeout: float) -> list[Frame]:
        return []

    def kernel_drops(self) -> int:
        return 0

    def close(self) -> None:
        pass


# -- live -------------------------------------------------------------------------------


def lossless(rate: float, seconds: float, tmp: Path) -> tuple[bool, int, int, int]:
    """(lossless?, offered, in file, kernel drops) for conntui alone at ``rate``."""
    import capture as capbench

    res = capbench.measure(rate, seconds, ["conntui"], False, 1, tmp)[0]
    ok = res.offered > 0 and res.in_file == res.offered and (res.drops or 0) == 0 and not res.error
    return ok, res.offered, res.in_file, res.drops or 0


def find_rate(lo: float, hi: float, seconds: float, tmp: Path, steps: int) -> float:
    best = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok, offered, got, drops = lossless(mid, seconds, tmp)
        print(
            f"   {mid:>9,.0f}/s: {got:,}/{offered:,} in file, {drops:,} kernel drops"
            f" → {'lossless' if ok else 'loss'}",
            flush=True,
        )
        if ok:
            best, lo = mid, mid
        else:
            hi = mid
    return best


def profile_live(rate: float, seconds: float, tmp: Path, top: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        out, errf, prof = tmp / "p.pcapng", tmp / "p.err", tmp / "p.prof"
        args = [
            "--headless",
            "-q",
            "-i",
            "lo",
            "-p",
            str(port),
            "-w",
            str(out),
            "--duration",
            str(seconds + 4),
        ]
        pyspy = shutil.which("py-spy") or (
            str(Path(sys.executable).parent / "py-spy")
            if (Path(sys.executable).parent / "py-spy").exists()
            else None
        )
        if pyspy:
            cmd = [
                pyspy,
                "record",
                "--format",
                "raw",
                "-r",
                "500",
                "-o",
                str(prof),
                "--",
                *conntui_cmd(*args),
            ]
            tool = "py-spy (raw, 500 Hz, non-idle samples, all threads)"
        else:
            cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "conntui", *args]
            tool = "cProfile (main thread)"
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf.open("wb"), env=env_with_repo())
        if not wait_for_text(errf, "listening on", proc, 60):
            stop(proc, signal.SIGKILL)
            print("   conntui did not start under the profiler: " + errf.read_text(errors="replace")[-300:])
            return
        time.sleep(0.5)
        sent = _gen.run(rate, seconds, port)
        proc.wait(timeout=seconds + 60)
        counters = parse_counters(errf.read_text(errors="replace"))
        fc = count_capture(out)
    print(
        f"   profiled at {rate:,.0f}/s with {tool}: offered {sent.packets:,}, in file {fc.packets:,}, "
        f"kernel drops {counters.get('drops', '?')}"
    )
    if pyspy:
        print_raw(prof, top)
    else:
        st = pstats.Stats(str(prof))
        st.sort_stats("tottime").print_stats(top)
        st.sort_stats("cumulative").print_stats(top)


def print_raw(path: Path, top: int) -> None:
    """Collapsed stacks ("a;b;c N") → own and inclusive sample shares per function."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if (frames and frames[0].startswith("thread ")) or (frames and frames[0].startswith("process ")):
            frames = [f for f in frames if not (f.startswith("thread ") or f.startswith("process "))]
        if not frames:
            continue
        total += n
        own[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            incl[f] += n
    if not total:
        print("   no samples")
        return
    print(
        table(
            ["own %", "function (own time)"], [[f"{100 * c / total:.1f}", f] for f, c in own.most_common(top)]
        )
    )
    print(
        table(
            ["incl %", "function (inclusive)"],
            [[f"{100 * c / total:.1f}", f] for f, c in incl.most_common(top)],
        )
    )
    print(f"   {total:,} samples")


def _short(frame: str) -> str:
    # "decode (conntui/decode.py:123)" → "decode (conntui/decode.py)": one row per function
    import re

    frame = re.sub(r":\d+\)$", ")", frame)
    frame = frame.replace(str(HERE.parent) + "/", "")
    for marker in ("site-packages/", "lib/python3"):
        i = frame.find(marker)
        if i >= 0:
            j = frame.rfind("(", 0, i)
            frame = frame[: j + 1] + frame[i + len(marker) :] if j >= 0 else frame
    return frame


def gc_share(rate: float, seconds: float, tmp: Path) -> None:
    """conntui at ``rate`` with the collector as is, frozen every second, and off."""
    import re

    rows = []
    for mode in ("default", "freeze", "off"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
            sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            sink.bind(("127.0.0.1", 0))
            port = sink.getsockname()[1]
            out, errf = tmp / "g.pcapng", tmp / "g.err"
            cmd = [
                sys.executable,
                str(HERE / "_gcwrap.py"),
                mode,
                "--headless",
                "-q",
                "-i",
                "lo",
                "-p",
                str(port),
                "-w",
                str(out),
                "--duration",
                str(seconds + 3),
            ]
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=errf.open("wb"), env=env_with_repo()
            )
            if not wait_for_text(errf, "listening on", proc, 60):
                stop(proc)
                print(f"   {mode}: conntui did not start: {errf.read_text(errors='replace')[-300:]}")
                continue
            time.sleep(0.3)
            sent = _gen.run(rate, seconds, port)
            proc.wait(timeout=seconds + 60)
            text = errf.read_text(errors="replace")
        m = re.search(r"GCSTATS \S+ collections (\d+) seconds ([\d.]+) cpu ([\d.]+)", text)
        drops = parse_counters(text).get("drops")
        got = count_capture(out).packets
        out.unlink(missing_ok=True)
        if m:
            n, t, cpu = int(m.group(1)), float(m.group(2)), float(m.group(3))
            rows.append(
                [
                    mode,
                    f"{rate:,.0f}",
                    sent.packets,
                    got,
                    f"{100 * got / max(sent.packets, 1):.1f}%",
                    drops,
                    n,
                    f"{t:.2f} s",
                    f"{100 * t / cpu:.0f}%" if cpu else "?",
                ]
            )
    print(
        table(
            [
                "gc",
                "offered/s",
                "offered",
                "in file",
                "recv/offered",
                "kernel drops",
                "collections",
                "GC time",
                "GC / CPU",
            ],
            rows,
        )
    )


def ceiling(rates: list[float], seconds: float) -> None:
    """The minimal pure-Python loop (``_ceiling.py``) at each rate: what a redesign can reach."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="conntui-bench-ceil-") as d:
        for rate in rates:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
                sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
                sink.bind(("127.0.0.1", 0))
                port = sink.getsockname()[1]
                p = subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "_ceiling.py"),
                        str(port),
                        str(seconds + 1.5),
                        os.path.join(d, "c.pcapng"),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(0.5)
                sent = _gen.run(rate, seconds, port)
                out, _ = p.communicate(timeout=seconds + 30)
            parts = out.split()
            got = int(parts[1]) if len(parts) > 1 else 0
            cpu = float(parts[-1]) if parts else 0.0
            rows.append(
                [
                    f"{rate:,.0f}",
                    f"{sent.rate:,.0f}",
                    sent.packets,
                    got,
                    f"{100 * got / max(sent.packets, 1):.1f}%",
                    parts[5] if len(parts) > 5 else "?",
                    f"{1e6 * cpu / max(got, 1):.2f}",
                ]
            )
    print(
        table(
            ["target/s", "offered/s", "offered", "written", "recv/offered", "kernel drops", "CPU µs/pkt"],
            rows,
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--live", action="store_true", help="search the highest lossless rate and profile there")
    ap.add_argument("--rate", type=float, help="profile at this rate (skip the search)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("-n", type=int, default=50_000, help="frames per stage measurement")
    ap.add_argument("--ceiling", action="store_true", help="the minimal pure-Python loop at 100k/250k pkt/s")
    ap.add_argument(
        "--gc", type=float, metavar="RATE", help="conntui at RATE with the collector as is / frozen / off"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.seconds = 5_000, 1.0
    banner("profile: per-stage costs of the capture pipeline")
    checks = Checks("hotpath", smoke=args.smoke)
    stages(args.n, live=os.geteuid() == 0, checks=checks, recv_seconds=1.0 if args.smoke else 2.0)
    churn(args.n)
    if args.ceiling:
        require_root()
        print(
            "   ceiling: a minimal pure-Python loop "
            "(bench/_ceiling.py: recv_into, raw-key flow cache, EPB append)"
        )
        ceiling([20_000] if args.smoke else [100_000, 250_000], args.seconds if not args.smoke else 1.0)
    if args.gc:
        require_root()
        print(
            f"   garbage collector: conntui at {args.gc:,.0f}/s for {args.seconds:g} s, "
            "run through bench/_gcwrap.py"
        )
        with tempfile.TemporaryDirectory(prefix="conntui-bench-gc-") as d:
            gc_share(args.gc, args.seconds, Path(d))
    if args.live or args.rate:
        require_root()
        with tempfile.TemporaryDirectory(prefix="conntui-bench-prof-") as d:
            rate = args.rate
            if not rate:
                print("   searching the highest lossless rate (conntui alone, 3 s per try):")
                rate = find_rate(2_000, 100_000, 3.0, Path(d), 6 if not args.smoke else 1) or 2_000
            profile_live(rate, args.seconds, Path(d), args.top)
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
