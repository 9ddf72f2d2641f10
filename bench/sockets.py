#!/usr/bin/env python3
"""Socket table refresh time at N sockets: conntui vs psutil vs ss, and one miss resolution.

Helper processes (as many as RLIMIT_NOFILE needs) hold N loopback TCP sockets: a few
listeners, then connections (a client socket and its accepted peer each). Then, in this
process:

* ``SocketTableSource().refresh()``: four sock_diag dumps (TCP/UDP, v4/v6), the
  ``/proc/*/fd`` holder scan, local addresses; a new ``SocketTable`` with holders;
* ``psutil.net_connections("inet")``: the same scope (TCP/UDP, v4/v6, with pids);
* ``ss -tanp`` (TCP with processes) and ``ss -tan`` (TCP, no processes), output discarded;
* a miss: the helper opens one more connection after the snapshot, and
  ``resolve(segment)`` for its first data segment (client → server) is timed, and checked
  against the helper's own pid and fds; plus one bare exact sock_diag look-up. The detail
  splits it: kernel look-ups, the holder search (links read; the pass that found them, see
  ``HolderScanner.find_holders``), and the new table (``SocketTable.with_entries``).

Medians over ``--repeat`` runs (the first, cold, run is reported apart).

    sudo python bench/sockets.py            # N = 1k, 5k, 20k
    sudo python bench/sockets.py --smoke    # N = 500
    sudo python bench/sockets.py --sizes 20000 --steady 30   # + refreshes every 0.5 s
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import Checks, banner, env_with_repo, percentile, require_root, table  # noqa: E402

from conntui.demux import attribute  # noqa: E402
from conntui.model import Segment  # noqa: E402
from conntui.sockets import SocketTableSource  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float, list[float]]:  # type: ignore[no-untyped-def]
    """(cold seconds, median of the warm runs, warm runs)."""
    t0 = time.perf_counter()
    fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), warm


def run_cmd(cmd: list[str]) -> None:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


class Helper:
    """One process holding ``n`` sockets."""

    def __init__(self, n: int, listeners: int, timeout: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_sockhelper.py"), str(n), str(listeners), str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env_with_repo(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("socket helper failed to start")
        info = json.loads(line)
        self.pid: int = info["pid"]
        self.sockets: int = info["sockets"]

    def new_connection(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("new\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_helpers(n: int, timeout: float = 600) -> list[Helper]:
    """Enough helpers to hold ``n`` sockets under this machine's hard RLIMIT_NOFILE."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per = max(100, min(10_000, (hard if hard != resource.RLIM_INFINITY else 1 << 20) - 300))
    helpers: list[Helper] = []
    try:
        left = n
        while left > 0:
            k = min(per, left)
            helpers.append(Helper(k, max(1, min(20, k // 500)), timeout))
            left -= helpers[-1].sockets
            if helpers[-1].sockets == 0:
                break
    except Exception:
        for h in helpers:
            h.close()
        raise
    return helpers


def misses(
    src: SocketTableSource, helper: Helper, k: int, stages: dict[str, list[float]]
) -> tuple[list[float], int, list[float]]:
    """Resolve ``k`` connections the table has not seen; (µs each, right holders, exact µs).
    ``stages`` collects each resolve()'s own split (seconds), the links its holder search
    read and the pass that found them."""
    times, right, exact = [], 0, []
    for i in range(k):
        if i % 5 == 0:
            src.refresh()  # some misses right after a full scan, some later
        conn = helper.new_connection()
        time.sleep(0.002 * (i % 5))
        seg = Segment(
            ts=time.time(),
            iface="lo",
            proto="tcp",
            family=4,
            src="127.0.0.1",
            sport=conn["client_port"],
            dst="127.0.0.1",
            dport=conn["server_port"],
            flags="PA",
            payload_len=1024,
        )
        t0 = time.perf_counter()
        fresh = src.resolve(seg)
        times.append((time.perf_counter() - t0) * 1e6)
        # (assigned after the clock stops: dropping the previous table, right after a refresh
        # the last reference to the old 20k-socket one, takes milliseconds of deallocation)
        table = fresh
        for key, value in getattr(src, "resolve_stats", {}).items():
            stages.setdefault(key, []).append(value)
        scanner = src.scanner
        stages.setdefault("links", []).append(float(getattr(scanner, "last_find_reads", -1)))
        stages.setdefault("listed", []).append(float(getattr(scanner, "last_find_listed", -1)))
        stages.setdefault("pass:" + getattr(scanner, "last_find_pass", "?"), []).append(1.0)
        att = attribute(seg, table if table is not None else src.current())
        rx = att.receiver.holders if att.receiver else ()
        tx = att.sender.holders if att.sender else ()
        if any(h.pid == helper.pid and h.fd == conn["server_fd"] for h in rx) and any(
            h.pid == helper.pid and h.fd == conn["client_fd"] for h in tx
        ):
            right += 1
        t0 = time.perf_counter()
        src.diag.lookup_exact(
            "tcp", 4, "127.0.0.1", conn["server_port"], "127.0.0.1", conn["client_port"], ifindex=0
        )
        exact.append((time.perf_counter() - t0) * 1e6)
    return times, right, exact


COLD = {
    "conntui": (
        "import json, time\n"
        "t0 = time.perf_counter()\n"
        "from conntui.sockets import SocketTableSource\n"
        "t1 = time.perf_counter()\n"
        "src = SocketTableSource()\n"
        "table = src.refresh()\n"
        "t2 = time.perf_counter()\n"
        "print(json.dumps({'import': t1 - t0, 'first': t2 - t1, 'n': len(table), 'stats': src.stats}))\n"
    ),
    "psutil": (
        "import json, time\n"
        "t0 = time.perf_counter()\n"
        "import psutil\n"
        "t1 = time.perf_counter()\n"
        "conns = psutil.net_connections('inet')\n"
        "t2 = time.perf_counter()\n"
        "print(json.dumps({'import': t1 - t0, 'first': t2 - t1, 'n': len(conns), 'stats': {}}))\n"
    ),
}


def cold_firsts(k: int) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    """The first table in a fresh process (the import apart), ``k`` times each, conntui and
    psutil taking turns (whoever goes first pays for the kernel's cold /proc entries)."""
    out: dict[str, list[dict]] = {"conntui": [], "psutil": []}  # type: ignore[type-arg]
    for i in range(k):
        order = ["conntui", "psutil"] if i % 2 == 0 else ["psutil", "conntui"]
        for who in order:
            r = subprocess.run(
                [sys.executable, "-c", COLD[who]],
                capture_output=True,
                text=True,
                env=env_with_repo(),
                check=True,
            )
            out[who].append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def cold_rows(n: int, runs_of: dict[str, list[dict]]) -> list[list[object]]:  # type: ignore[type-arg]
    rows: list[list[object]] = []
    for who, runs in runs_of.items():
        firsts = [r["first"] * 1e3 for r in runs]
        imp = statistics.median([r["import"] for r in runs]) * 1e3
        detail = f"each: {', '.join(f'{x:.0f}' for x in firsts)} ms; import {imp:.0f} ms"
        if who == "conntui":
            st = {
                key: runs[-1]["stats"].get(key, 0) * 1e3
                for key in ("dump", "scan", "route", "entries", "table")
            }
            detail += "; last: " + " + ".join(f"{key} {v:.0f}" for key, v in st.items()) + " ms"
        med = f"{statistics.median(firsts):.1f} ms"
        rows.append([n, runs[-1]["n"], f"{who}: first table, fresh process", med, med, detail])
    return rows


def steady(src: SocketTableSource, helper: Helper, seconds: float, every: float = 0.5) -> list[float]:
    """Refresh every ``every`` seconds for ``seconds`` (one new connection between two), as
    the refresher does: the periodic work (each fd link read again once per
    ``full_scan_interval``, fallbacks) shows up in the tail. Seconds per refresh."""
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(every)
        helper.new_connection()
        t0 = time.perf_counter()
        src.refresh()
        times.append(time.perf_counter() - t0)
    return times


def measure(
    n: int, repeat: int, k: int, checks: Checks, steady_s: float = 0.0, cold_k: int = 0
) -> tuple[list[list[object]], list[str]]:
    import psutil

    helpers = start_helpers(n)
    helper = helpers[0]
    notes = []
    rows: list[list[object]] = []
    try:
        if cold_k:
            rows += cold_rows(n, cold_firsts(cold_k))
        src = SocketTableSource()
        cold, med, _ = timed(src.refresh, repeat)
        total = len(src.current())
        st = src.stats
        rows.append(
            [
                n,
                total,
                "conntui SocketTableSource().refresh()",
                f"{med * 1e3:.1f} ms",
                f"{cold * 1e3:.1f} ms",
                "dump {dump:.0f} + scan {scan:.0f} + route {route:.0f} + entries {entries:.0f} "
                "+ table {table:.0f} ms".format(
                    **{key: st.get(key, 0) * 1e3 for key in ("dump", "scan", "route", "entries", "table")}
                ),
            ]
        )
        held = sum(1 for e in src.current().entries if e.holders)
        mine = {h.pid for h in helpers}
        ours = sum(1 for e in src.current().entries if any(x.pid in mine for x in e.holders))
        checks.expect(
            ours >= sum(h.sockets for h in helpers),
            f"N={n:,}: the table names the helpers as holders of {ours:,} sockets, "
            f"they hold {sum(h.sockets for h in helpers):,}",
        )
        notes.append(
            f"N={n:,}: conntui table has {total:,} sockets, {held:,} with holders "
            f"({len(helpers)} helper process(es) hold {sum(h.sockets for h in helpers):,})"
        )
        cold, med, _ = timed(lambda: psutil.net_connections("inet"), repeat)
        rows.append(
            [
                n,
                len(psutil.net_connections("inet")),
                "psutil.net_connections('inet')",
                f"{med * 1e3:.1f} ms",
                f"{cold * 1e3:.1f} ms",
                "",
            ]
        )
        for cmd in (["ss", "-tanp"], ["ss", "-tan"]):
            cold, med, _ = timed(lambda cmd=cmd: run_cmd(cmd), repeat)
            rows.append(
                [
                    n,
                    "",
                    " ".join(cmd),
                    f"{med * 1e3:.1f} ms",
                    f"{cold * 1e3:.1f} ms",
                    "subprocess, output discarded",
                ]
            )
        stages: dict[str, list[float]] = {}
        times, right, exact = misses(src, helper, k, stages)
        rows.append(
            [
                n,
                "",
                "conntui resolve(segment), new connection",
                f"{statistics.median(times) / 1e3:.2f} ms",
                "",
                f"p95 {percentile(times, 95) / 1e3:.2f} ms, max {max(times) / 1e3:.2f} ms; "
                f"right pid+fd both ends {right}/{k}",
            ]
        )
        if "holders" in stages:
            passes = ", ".join(
                f"{key[5:] or 'none'} {len(v)}" for key, v in stages.items() if key.startswith("pass:")
            )
            rows.append(
                [
                    n,
                    "",
                    "  of which (medians)",
                    "",
                    "",
                    f"look-ups {statistics.median(stages['lookup']) * 1e3:.2f} + holders "
                    f"{statistics.median(stages['holders']) * 1e3:.2f} + table "
                    f"{statistics.median(stages['table']) * 1e3:.2f} ms; links read "
                    f"{statistics.median(stages['links']):.0f}, fd dirs listed "
                    f"{statistics.median(stages['listed']):.0f}; found by: {passes}",
                ]
            )
        checks.expect(right == k, f"N={n:,}: {right} of {k} new connections resolved to the right pid and fd")
        rows.append([n, "", "one exact sock_diag look-up", f"{statistics.median(exact):.1f} µs", "", ""])
        if steady_s > 0:
            st = steady(src, helper, steady_s)
            rows.append(
                [
                    n,
                    "",
                    f"conntui refresh() every 0.5 s for {steady_s:.0f} s",
                    f"{statistics.median(st) * 1e3:.1f} ms",
                    "",
                    f"p90 {percentile(st, 90) * 1e3:.1f} ms, max {max(st) * 1e3:.1f} ms "
                    f"({len(st)} refreshes)",
                ]
            )
    finally:
        for h in helpers:
            h.close()
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="N = 500, few repeats (CI)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--misses", type=int, default=20)
    ap.add_argument(
        "--cold", type=int, default=3, metavar="K", help="first tables in fresh processes, K each (0: none)"
    )
    ap.add_argument(
        "--steady", type=float, default=0.0, metavar="S", help="also refresh every 0.5 s for S s at each N"
    )
    args = ap.parse_args(argv)
    require_root()
    if args.smoke:
        args.sizes, args.repeat, args.misses, args.cold = [500], 2, 5, 1
    banner("socket table: full refresh at N loopback TCP sockets, and one miss")
    rows: list[list[object]] = []
    notes: list[str] = []
    checks = Checks("sockets", smoke=args.smoke)
    for n in args.sizes:
        r, nn = measure(n, args.repeat, args.misses, checks, args.steady, args.cold)
        rows += r
        notes += nn
    print(table(["N", "rows", "what", "median", "cold (1st)", "detail"], rows))
    for note in notes:
        print("   " + note)
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
