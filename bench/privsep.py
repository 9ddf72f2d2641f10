#!/usr/bin/env python3
"""Holder look-ups through the privileged helper vs. direct ``/proc`` reads (issue 17).

A process (``_sockhelper.py``) holds N loopback TCP sockets; for each of K new connections
it opens after the table's snapshot, ``SocketTableSource.resolve(segment)`` finds the new
sockets and their holders, as the capture thread does on a demux miss. Run twice, each in
a forked process:

* **direct**: conntui as root reads ``/proc/PID/fd`` itself (the default, ``--no-privsep``);
* **helper**: the helper is forked, the snapshot taken, then the process confines itself
  (no capabilities, seccomp, Landlock) and every ``/proc/PID/fd`` read is a round trip to
  the helper, as in a live capture with ``--privsep``.

Reported: the holder search of each resolve() (``resolve_stats["holders"]``: the part the
helper changes) and the whole resolve(), p50/p95/p99 in µs; the right-holder count (must be
K in both); and one bare round trip (``inodes`` of one fd). Goal (issue 17): holder
look-ups through the helper p95 ≤ 1 ms.

    sudo python bench/privsep.py            # N = 5000, K = 300
    sudo python bench/privsep.py --smoke    # N = 500, K = 40
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import banner, percentile, require_root, table  # noqa: E402
from sockets import Helper, misses  # noqa: E402

from conntui import privsep  # noqa: E402
from conntui.sockets import SocketTableSource  # noqa: E402


def run(mode: str, holder: Helper, k: int) -> dict[str, Any]:
    """One mode, measured in this (forked) process."""
    priv = privsep.start() if mode == "helper" else None
    src = SocketTableSource()
    src.refresh()
    trips: list[float] = []
    if priv is not None:
        priv.drop([])
        fd = holder_fd(holder.pid, priv)
        for _ in range(200):
            t0 = time.perf_counter()
            priv.client.inodes(holder.pid, [fd])
            trips.append((time.perf_counter() - t0) * 1e6)
    refreshes = []
    for _ in range(5):  # what the refresher thread pays each second
        t0 = time.perf_counter()
        src.refresh()
        refreshes.append((time.perf_counter() - t0) * 1e6)
    stages: dict[str, list[float]] = {}
    times, right, _exact = misses(src, holder, k, stages)
    if priv is not None:
        priv.close()  # the goodbye: the helper leaves quietly
    return {
        "resolve": times,
        "holders": [s * 1e6 for s in stages.get("holders", [])],
        "links": stages.get("links", []),
        "listed": stages.get("listed", []),
        "passes": {key[5:]: len(v) for key, v in stages.items() if key.startswith("pass:")},
        "right": right,
        "trip": trips,
        "refresh": refreshes,
    }


def holder_fd(pid: int, priv: privsep.Privsep) -> int:
    fds = priv.client.fds(pid)
    return fds[-1] if fds else 0


def in_child(mode: str, holder: Helper, k: int) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = run(mode, holder, k)
        except BaseException as exc:  # reported by the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    got: dict[str, Any] = json.loads(data)
    if "error" in got:
        raise SystemExit(f"bench/privsep.py: {mode}: {got['error']}")
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="N = 500, K = 40 (CI)")
    ap.add_argument("--sockets", type=int, default=5000)
    ap.add_argument("--misses", type=int, default=300)
    args = ap.parse_args(argv)
    require_root()
    n, k = (500, 40) if args.smoke else (args.sockets, args.misses)
    banner(f"holder look-ups through the privileged helper: {n} sockets, {k} new connections")
    holder = Helper(n, max(1, min(20, n // 500)), 600)
    try:
        results = {mode: in_child(mode, holder, k) for mode in ("direct", "helper")}
    finally:
        holder.close()
    rows = []
    for mode, got in results.items():
        for what in ("holders", "resolve", "refresh"):
            v = got[what]
            rows.append(
                [
                    mode,
                    {"holders": "holder search", "resolve": "whole resolve()", "refresh": "table refresh"}[
                        what
                    ],
                    f"{percentile(v, 50):.0f}",
                    f"{percentile(v, 95):.0f}",
                    f"{percentile(v, 99):.0f}",
                    f"{got['right']}/{k}" if what != "refresh" else "",
                ]
            )
    for mode, got in results.items():
        print(
            f"{mode}: links read per search p50 {percentile(got['links'], 50):.0f} "
            f"max {max(got['links'], default=0):.0f}; fd directories listed max "
            f"{max(got['listed'], default=0):.0f}; passes that found them: {got['passes']}"
        )
    trip = results["helper"]["trip"]
    rows.append(["helper", "one round trip", f"{percentile(trip, 50):.0f}", f"{percentile(trip, 95):.0f}",
                 f"{percentile(trip, 99):.0f}", ""])  # fmt: skip
    print(table(["mode", "µs", "p50", "p95", "p99", "right holders"], rows))
    p95 = percentile(results["helper"]["holders"], 95)
    print(f"\nholder search through the helper: p95 {p95 / 1000:.2f} ms (goal ≤ 1 ms)")
    for mode, got in results.items():
        if got["right"] != k:
            print(f"bench/privsep.py: {mode}: only {got['right']} of {k} resolved to the right holders")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
