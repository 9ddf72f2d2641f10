#!/usr/bin/env python3
"""Resident memory after N segments through the whole pipeline, writing the session with -w.

``Engine(RingSource(frames), StaticTables(table), Session(), writer=open_writer(FILE))``:
a TPACKET_V3 ring image filled on demand (``tests/ringimage.py``) stands in for the live
socket, so the capture loop runs as on a live capture: the C fast path, or with ``--pure``
the Python one (raw IPv4 TCP segments of 200 loopback connections, attributed against a
socket table that knows every socket; rows settle 0.5 s before they are written, as live).
Frames come at ``--rate`` (250k/s: the rate the capture is built for; unpaced, the 0.5 s of
rows waiting to settle would outgrow the window and hold more rows than a live capture).
RSS is sampled after each batch; the written file is then counted (packets, attribution
comments) to check the export still holds every packet. The peer: ``tshark -r FILE -q``
reading the same file (its peak RSS; capped at 1 M packets).

    python bench/memory.py             # N = 5,000,000
    python bench/memory.py --smoke     # N = 200,000
    python bench/memory.py --pure      # the pure-Python capture path (CONNTUI_PURE=1)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))  # tests.ringimage (after the installed conntui)
from _common import Checks, banner, count_capture, have, pct, rss_mb, table  # noqa: E402
from _frames import GeneratedSource, socket_table  # noqa: E402

from conntui import fastpath  # noqa: E402
from conntui.capfile.writers import open_writer  # noqa: E402
from conntui.engine import Engine, StaticTables  # noqa: E402
from conntui.session import Session  # noqa: E402
from tests.ringimage import RingSource, Spec  # noqa: E402


def peak_rss_of(cmd: list[str]) -> float:
    """Peak RSS (kB) of a command: GNU time's %M, else VmHWM polled while it runs."""
    if Path("/usr/bin/time").exists():
        r = subprocess.run(
            ["/usr/bin/time", "-f", "%M", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        last = r.stderr.strip().splitlines()[-1:] or ["0"]
        try:
            return float(last[0])
        except ValueError:
            pass
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mb(proc.pid, "VmHWM") * 1024 or 0.0)
        time.sleep(0.02)
    return peak


class TooBig(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="N = 200,000 (CI)")
    ap.add_argument("-n", "--segments", type=float, default=5e6)
    ap.add_argument("--format", choices=["pcapng", "pcap"], default="pcapng")
    ap.add_argument("--keep", metavar="FILE", help="write here and keep the file (default: a temp file)")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--pure", action="store_true", help="the pure-Python capture path")
    ap.add_argument("--rate", type=float, default=250_000, help="segments/s offered (0: unpaced)")
    ap.add_argument("--max-rss", type=float, default=4096, help="stop early above this RSS (MB); reported")
    args = ap.parse_args(argv)
    n = int(2e5 if args.smoke else args.segments)
    n = min(n, 50_000_000)
    if args.pure:
        os.environ["CONNTUI_PURE"] = "1"
    path_name = "C fast path" if fastpath.available() else "pure-Python path"
    banner(f"memory: RSS after {n:,} segments through Engine(...) with -w x.{args.format} ({path_name})")
    with tempfile.TemporaryDirectory(prefix="conntui-bench-mem-") as d:
        path = Path(args.keep) if args.keep else Path(d) / f"session.{args.format}"
        samples: list[tuple[int, float, float]] = []
        t0 = time.monotonic()
        base = rss_mb()
        next_sample = [0]
        step = max(n // 20, 4096)
        aborted: list[int] = []

        def on_batch(done: int) -> None:
            if done >= next_sample[0] or done >= n:
                rss = rss_mb()
                samples.append((done, time.monotonic() - t0, rss))
                next_sample[0] = done + step
                if rss > args.max_rss:
                    aborted.append(done)
                    gen.close()

        gen = GeneratedSource(n, on_batch=on_batch, rate=args.rate)

        def specs() -> Iterator[Spec]:
            while True:
                batch = gen.read(0.0)
                if not batch:
                    return
                for f in batch:
                    yield (f.ts, f.data, f.ifindex, f.pkttype, f.protocol)  # type: ignore[attr-defined]

        source = RingSource(specs(), block=1 << 17, blocks=256)
        engine = Engine(source, StaticTables(socket_table(200)), Session(), writer=open_writer(str(path)))  # type: ignore[arg-type]
        t0 = time.monotonic()
        engine.run()
        elapsed = time.monotonic() - t0
        rss_end = rss_mb()
        if aborted:
            print(
                f"   STOPPED EARLY: RSS passed --max-rss {args.max_rss:.0f} MB after {aborted[0]:,} segments"
            )
            n = gen.done
        engine.close()
        counters = engine.session.counters
        peak = rss_mb(field="VmHWM")
        size = path.stat().st_size if path.exists() else 0
        fc = count_capture(path)
        rows = [
            [f"{done:,}", f"{t:.1f} s", f"{rss:.0f} MB"]
            for done, t, rss in samples[:: max(1, len(samples) // 10)]
        ]
        if samples and rows[-1][0] != f"{samples[-1][0]:,}":
            done, t, rss = samples[-1]
            rows.append([f"{done:,}", f"{t:.1f} s", f"{rss:.0f} MB"])
        print(table(["segments", "elapsed", "RSS"], rows))
        print()
        summary = [
            [
                f"conntui Engine + Session() + writer ({path_name})",
                f"{n:,}",
                f"{base:.0f} MB",
                f"{rss_end:.0f} MB",
                f"{peak:.0f} MB",
                f"{n / elapsed:,.0f}/s",
                f"{fc.packets:,} ({pct(fc.packets, n)})",
                f"{fc.commented:,}",
                f"{size / max(fc.packets, 1):,.0f} B",
            ],
        ]
        if have("tshark") and not args.no_tshark and fc.packets:
            cap = min(fc.packets, 1_000_000)
            t1 = time.monotonic()
            peak_kb = peak_rss_of(["tshark", "-r", str(path), "-q", "-c", str(cap)])
            tt = time.monotonic() - t1
            summary.append(
                [
                    "tshark -r FILE -q (peer)",
                    f"{cap:,}",
                    "",
                    "",
                    f"{peak_kb / 1024:.0f} MB",
                    f"{cap / tt:,.0f}/s",
                    "",
                    "",
                    "",
                ]
            )
        print(
            table(
                [
                    "what",
                    "segments",
                    "RSS before",
                    "RSS after",
                    "peak RSS",
                    "throughput",
                    "in file",
                    "commented",
                    "file B/pkt",
                ],
                summary,
            )
        )
        print(
            f"   session: {counters.segments:,} segments stored, "
            f"{len(engine.session.window()):,} in the in-memory window; "
            f"by match: {dict(counters.by_match)}"
        )
        if engine.writer_error:
            print(f"   writer error: {engine.writer_error}")
        if args.keep:
            print(f"   file kept: {path} ({size / 1e6:,.0f} MB)")
        checks = Checks("memory", smoke=args.smoke)
        checks.expect(not aborted, f"RSS passed --max-rss {args.max_rss:.0f} MB", always=True)
        checks.expect(not engine.writer_error, f"writer error: {engine.writer_error}", always=True)
        checks.expect(not fc.error, f"the file is not readable: {fc.error}", always=True)
        checks.expect(fc.packets == n, f"{fc.packets:,} packets in the file, {n:,} generated")
        checks.expect(
            fc.commented == fc.packets, f"{fc.commented:,} of {fc.packets:,} packets carry the comment"
        )
        checks.expect(counters.segments == n, f"the session stored {counters.segments:,} of {n:,} segments")
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
