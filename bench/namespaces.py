#!/usr/bin/env python3
"""How long a refresh of every network namespace's socket table takes (issue 12's scale goal:
50 namespaces x 400 sockets in ≤ 150 ms).

    sudo python bench/namespaces.py            # 50 namespaces x 400 sockets, 10 refreshes
    sudo python bench/namespaces.py --smoke    # 5 x 100, 3 refreshes (CI: asserts it ran)

Namespaces are made with ``ip netns add`` (named ``cbench<N>``, removed at the end, also on
failure); one helper process per namespace holds the sockets there (half TCP listeners on
127.0.0.1, half unconnected UDP sockets), so each namespace has its own holder too. The
figure is ``NamespaceTables.refresh()`` (the refresher thread's work each second: the
primary table, discovery, each other namespace's dumps and holder scan), median and max
over the refreshes after the first (the first builds every entry). A peer for comparison:
``ss -tuanp`` run once in each namespace (``ip netns exec``), which is what a person would do.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conntui.sockets import SocketTableSource
from conntui.sockets.namespaces import NamespaceTables

HOLDER = r"""
import socket, sys, time
n = int(sys.argv[1])
held = []
for i in range(n // 2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); held.append(s)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); held.append(u)
print("ready", flush=True)
time.sleep(600)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--namespaces", type=int, default=50)
    ap.add_argument("--sockets", type=int, default=400)
    ap.add_argument("--refreshes", type=int, default=10)
    a = ap.parse_args(argv)
    if a.smoke:
        a.namespaces, a.sockets, a.refreshes = 5, 100, 3
    if os.geteuid() != 0:
        print("bench/namespaces.py: needs root (ip netns add)", file=sys.stderr)
        return 2
    names = [f"cbench{i}" for i in range(a.namespaces)]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))  # a timeout still cleans up
    procs: list[subprocess.Popen[str]] = []
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            p = subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-c", HOLDER, str(a.sockets)],
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(p)
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                print("a socket holder did not start", file=sys.stderr)
                return 1
        tables = NamespaceTables(SocketTableSource())
        t0 = time.perf_counter()
        tables.refresh()
        first = time.perf_counter() - t0
        times = []
        for _ in range(a.refreshes):
            t0 = time.perf_counter()
            tables.refresh()
            times.append(time.perf_counter() - t0)
        # every namespace with traffic: its sockets are dumped at each refresh too
        for ino in list(tables.infos):
            tables.source(ino)
        active = []
        for _ in range(a.refreshes):
            t0 = time.perf_counter()
            tables.refresh()
            active.append(time.perf_counter() - t0)
        scan = tables.primary.stats.get("scan", 0.0)
        counted = sum(len(src.current()) for src in tables)
        t0 = time.perf_counter()
        for name in names:
            subprocess.run(["ip", "netns", "exec", name, "ss", "-tuanp"], capture_output=True, check=True)
        peer = time.perf_counter() - t0
        tables.close()
        seen = len(tables.infos) + 1
        print(f"{a.namespaces} namespaces x {a.sockets} sockets ({seen} namespaces seen, {counted} sockets)")
        print(f"  first refresh        {first * 1000:8.1f} ms")
        med, top = statistics.median(times) * 1000, max(times) * 1000
        print(f"  refresh, no traffic (median/max)       {med:8.1f} / {top:.1f} ms (addresses only)")
        med, top = statistics.median(active) * 1000, max(active) * 1000
        print(f"  refresh, traffic in all (median/max)   {med:8.1f} / {top:.1f} ms (goal <= 150 ms)")
        print(f"  of which the one /proc walk for all holders (last): {scan * 1000:.1f} ms")
        print(f"  peer: ss -tuanp in each namespace, once: {peer * 1000:.1f} ms")
        if counted < a.namespaces * a.sockets:
            print(f"expected at least {a.namespaces * a.sockets} sockets, saw {counted}", file=sys.stderr)
            return 1
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


if __name__ == "__main__":
    sys.exit(main())
