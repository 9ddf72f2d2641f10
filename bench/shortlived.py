#!/usr/bin/env python3
"""Short-lived flows: is each one attributed to the right pid and fd? conntui vs psutil vs nethogs.

Processes whose pids and fds the benchmark knows (ground truth): one server (TCP on PORT,
UDP on PORT+1) and two clients opening ``--rate`` flows/s in total for ``--seconds``: TCP and
UDP alternately, each sending 1 KB; half close at once (the client socket lives well under a
millisecond), half hold it 20-50 ms. In the same run:

* ``conntui --headless --json -i lo -p PORT-PORT+1`` (default options: its kernel tracer
  on; ``--no-trace`` runs it without): for each flow, its 1 KB data segment
  (client → server): is the receiver the server's (pid, fd) and the sender the client's?
  (a socket's ``holders`` or, once closed, its remembered ``former_holders``);
* a psutil poll every 100 ms (``net_connections``): was the flow's socket ever seen with the
  right (pid, fd)? (for UDP the server side is the server's one bound socket);
* nethogs (if installed) in trace mode with a port filter: the share of the flows' bytes it
  credits to the benchmark's processes rather than "unknown" (it has no per-flow view).

    sudo python bench/shortlived.py               # 200 flows/s for 20 s
    sudo python bench/shortlived.py --smoke       # 2 s; exits 1 if a flow is missed or misnamed
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402
    Checks,
    banner,
    conntui_cmd,
    env_with_repo,
    free_port_range,
    have,
    parse_counters,
    pct,
    require_root,
    stop,
    table,
    wait_for_text,
    wait_idle,
)

FLOWS = str(HERE / "_flows.py")


@dataclass
class Flow:
    proto: str
    client_port: int
    client_pid: int
    client_fd: int
    t: float
    life: float
    hold: bool
    server_pid: int = 0
    server_fd: int = -1

    @property
    def kind(self) -> str:
        return f"{self.proto} {'20-50 ms' if self.hold else '<1 ms'}"


@dataclass
class Score:
    n: int = 0
    seen: int = 0  # the flow's data segment was captured (conntui only)
    s_pid: int = 0
    s_fd: int = 0
    c_pid: int = 0
    c_fd: int = 0
    by_former: int = 0  # right only thanks to remembered former holders
    misses: list[str] = field(default_factory=list)
    why: Counter[str] = field(default_factory=Counter)  # wrong pid: (side, match, socket state)


def _holders(sock: dict | None) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:  # type: ignore[type-arg]
    if not sock:
        return set(), set()
    now = {(h["pid"], h["fd"]) for h in sock.get("holders") or []}
    former = {(h["pid"], h["fd"]) for h in sock.get("former_holders") or []}
    return now, former


def score_conntui(flows: list[Flow], path: Path, port: int) -> tuple[dict[str, Score], int]:
    data: dict[tuple[str, int], list[tuple[float, dict, dict]]] = defaultdict(list)  # type: ignore[type-arg]
    lines = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        lines += 1
        sp = port if rec["proto"] == "tcp" else port + 1
        if rec.get("payload_len", 0) > 0 and rec["dport"] == sp:
            data[(rec["proto"], rec["sport"])].append(
                (rec["ts"], rec.get("receiver"), rec.get("sender"), rec.get("match"))
            )
    scores: dict[str, Score] = defaultdict(Score)
    for f in flows:
        sc = scores[f.kind]
        sc.n += 1
        cands = [c for c in data.get((f.proto, f.client_port), []) if abs(c[0] - f.t) < 1.0]
        if not cands:
            sc.misses.append(f"{f.proto}:{f.client_port} not captured")
            continue
        sc.seen += 1
        _, rx, tx, match = min(cands, key=lambda c: abs(c[0] - f.t))
        rx_now, rx_former = _holders(rx)
        tx_now, tx_former = _holders(tx)
        former = False
        for now, old, pid, fd, side in (
            (rx_now, rx_former, f.server_pid, f.server_fd, "s"),
            (tx_now, tx_former, f.client_pid, f.client_fd, "c"),
        ):
            both = now | old
            if any(p == pid for p, _ in both):
                setattr(sc, f"{side}_pid", getattr(sc, f"{side}_pid") + 1)
                if not any(p == pid for p, _ in now):
                    former = True
            else:
                sock = rx if side == "s" else tx
                state = sock.get("state") if sock else None
                sc.misses.append(f"{f.proto}:{f.client_port} {side}: want pid {pid}, got {sorted(both)}")
                sc.why[
                    f"{'server' if side == 's' else 'client'}: match {match}, socket {state or 'none'}"
                ] += 1
            if (pid, fd) in both:
                setattr(sc, f"{side}_fd", getattr(sc, f"{side}_fd") + 1)
        sc.by_former += former
    return scores, lines


def score_psutil(flows: list[Flow], obs: dict) -> dict[str, Score]:  # type: ignore[type-arg]
    seen = {(o["proto"], o["client_port"], o["side"]): {tuple(h) for h in o["holders"]} for o in obs["seen"]}
    udp_server = {tuple(h) for h in obs["udp_server"]}
    scores: dict[str, Score] = defaultdict(Score)
    for f in flows:
        sc = scores[f.kind]
        sc.n += 1
        server = udp_server if f.proto == "udp" else seen.get((f.proto, f.client_port, "server"), set())
        client = seen.get((f.proto, f.client_port, "client"), set())
        sc.s_pid += any(p == f.server_pid for p, _ in server)
        sc.s_fd += (f.server_pid, f.server_fd) in server
        sc.c_pid += any(p == f.client_pid for p, _ in client)
        sc.c_fd += (f.client_pid, f.client_fd) in client
    return scores


def parse_nethogs(text: str, ours: set[int]) -> tuple[float, float, str]:
    """Bytes (sent+received) credited to our pids and to everything else, in the last refresh."""
    blocks = text.split("Refreshing:")
    last = blocks[-1] if len(blocks) > 1 else ""
    mine = other = 0.0
    unknown = []
    for line in last.strip().splitlines():
        parts = line.rsplit("\t", 2)
        if len(parts) != 3:
            continue
        name, sent, recv = parts
        try:
            b = float(sent) + float(recv)
        except ValueError:
            continue
        bits = name.rsplit("/", 2)
        pid = int(bits[-2]) if len(bits) >= 3 and bits[-2].isdigit() else 0
        if pid in ours:
            mine += b
        else:
            other += b
            unknown.append(f"{name} {b:,.0f} B")
    return mine, other, "; ".join(unknown[:3])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="2 s (CI)")
    ap.add_argument("--rate", type=float, default=200.0, help="new flows per second (all clients)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--poll", type=float, default=0.1, help="psutil poll interval (s)")
    ap.add_argument("--no-nethogs", action="store_true")
    ap.add_argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        help="run conntui with --no-trace (without its default bpftrace socket tracer)",
    )
    ap.add_argument("--trace", dest="trace", action="store_true", help=argparse.SUPPRESS)  # the default now
    ap.set_defaults(trace=True)
    ap.add_argument("--show-misses", type=int, default=5, help="print up to this many conntui misses")
    args = ap.parse_args(argv)
    require_root()
    if args.smoke:
        args.seconds = 2.0
    args.seconds = min(args.seconds, 300.0)
    rate, secs = args.rate, args.seconds
    banner(
        f"short-lived flows: {rate:g} new flows/s for {secs:g} s "
        "(TCP+UDP, 1 KB each, half <1 ms, half 20-50 ms)"
    )
    port = free_port_range(2)
    env = env_with_repo()
    checks = Checks("shortlived", smoke=args.smoke)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="conntui-bench-sl-") as d:
        tmp = Path(d)
        server = subprocess.Popen(
            [sys.executable, FLOWS, "server", str(port), str(secs + 120)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        procs.append(server)
        try:
            assert server.stdout is not None and server.stdin is not None
            info = json.loads(server.stdout.readline())
            cerr, cout = tmp / "conntui.err", tmp / "conntui.jsonl"
            conntui = subprocess.Popen(
                conntui_cmd(
                    "--headless",
                    "--json",
                    "-i",
                    "lo",
                    "-p",
                    f"{port}-{port + 1}",
                    *([] if args.trace else ["--no-trace"]),
                ),
                stdout=cout.open("wb"),
                stderr=cerr.open("wb"),
                env=env,
            )
            procs.append(conntui)
            if not wait_for_text(cerr, "listening on", conntui, 60):
                last = cerr.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                checks.expect(False, f"conntui did not start: {last[0]}", always=True)
                return checks.exit_code()
            poller = subprocess.Popen(
                [sys.executable, FLOWS, "poll", str(port), str(secs + 1.5), str(args.poll)],
                stdout=subprocess.PIPE,
                env=env,
            )
            procs.append(poller)
            assert poller.stdout is not None
            poller.stdout.readline()
            nethogs = None
            nout = tmp / "nethogs.out"
            if have("nethogs") and not args.no_nethogs:
                nethogs = subprocess.Popen(
                    [
                        "nethogs",
                        "-t",
                        "-a",
                        "-C",
                        "-v",
                        "2",
                        "-d",
                        "1",
                        "-c",
                        str(int(secs + 4)),
                        "-f",
                        f"port {port} or port {port + 1}",
                        "lo",
                    ],
                    stdout=nout.open("wb"),
                    stderr=subprocess.DEVNULL,
                )
                procs.append(nethogs)
            time.sleep(1.0)
            clients = [
                subprocess.Popen(
                    [sys.executable, FLOWS, "client", str(port), str(rate / 2), str(secs), str(seed)],
                    stdout=subprocess.PIPE,
                    env=env,
                )
                for seed in (1, 2)
            ]
            procs += clients
            truth: list[dict] = []  # type: ignore[type-arg]
            for c in clients:
                out, _ = c.communicate(timeout=secs + 60)
                truth += [json.loads(x) for x in out.splitlines() if x.strip()]
            time.sleep(0.5)
            out, _ = server.communicate(b"", timeout=30)
            srv = [json.loads(x) for x in out.splitlines() if x.strip()]
            pout, _ = poller.communicate(timeout=secs + 30)
            obs = json.loads(pout.splitlines()[-1])
            wait_idle(conntui.pid, max_wait=10)
            stop(conntui, signal.SIGTERM)
            counters = parse_counters(cerr.read_text(errors="replace"))
            nethogs_text = ""
            if nethogs is not None:
                try:
                    nethogs.wait(timeout=6)
                except subprocess.TimeoutExpired:
                    stop(nethogs, signal.SIGTERM)
                nethogs_text = nout.read_text(errors="replace")

            # ground truth: client records joined with the server's by (proto, client port, time)
            by_key: dict[tuple[str, int], list[dict]] = defaultdict(list)  # type: ignore[type-arg]
            for r in srv:
                by_key[(r["proto"], r["client_port"])].append(r)
            flows: list[Flow] = []
            errors = sum(1 for r in truth if "error" in r)
            unmatched = 0
            for r in truth:
                if "error" in r:
                    continue
                cands = [
                    s for s in by_key.get((r["proto"], r["client_port"]), []) if abs(s["t"] - r["t"]) < 2.0
                ]
                if not cands:
                    unmatched += 1
                    continue
                s = min(cands, key=lambda s: abs(s["t"] - r["t"]))
                flows.append(
                    Flow(
                        r["proto"],
                        r["client_port"],
                        r["client_pid"],
                        r["client_fd"],
                        r["t"],
                        r["life"],
                        r["hold"],
                        s["server_pid"],
                        s["server_fd"],
                    )
                )
            ct, lines = score_conntui(flows, cout, port)
            ps = score_psutil(flows, obs)
            rows = []
            kinds = sorted({f.kind for f in flows})
            for name, scores in (("conntui", ct), (f"psutil poll {args.poll * 1000:g} ms", ps)):
                for kind in [*kinds, "all"]:
                    if kind == "all":
                        sc = Score()
                        for k in kinds:
                            s = scores[k]
                            for a in ("n", "seen", "s_pid", "s_fd", "c_pid", "c_fd", "by_former"):
                                setattr(sc, a, getattr(sc, a) + getattr(s, a))
                    else:
                        sc = scores[kind]
                    rows.append(
                        [
                            name,
                            kind,
                            sc.n,
                            pct(sc.seen, sc.n) if name == "conntui" else "",
                            pct(sc.s_pid, sc.n),
                            pct(sc.s_fd, sc.n),
                            pct(sc.c_pid, sc.n),
                            pct(sc.c_fd, sc.n),
                        ]
                    )
            print(
                table(
                    ["tool", "flows", "n", "captured", "server pid", "server fd", "client pid", "client fd"],
                    rows,
                )
            )
            ours = {info["pid"], *(f.client_pid for f in flows)}
            if nethogs is not None:
                mine, other, unknown = parse_nethogs(nethogs_text, ours)
                print(
                    f"   nethogs -t -C (port filter): {pct(mine, mine + other)} of {mine + other:,.0f} bytes "
                    "credited to the benchmark's processes (no per-flow view)"
                    + (f"; rest: {unknown}" if unknown else "")
                )
            else:
                print("   nethogs: not installed (apt-get install nethogs) or --no-nethogs")
            allc = ct.values()
            print(
                f"   conntui: {lines:,} JSON lines; kernel drops {counters.get('drops', '?')}; "
                f"{sum(s.by_former for s in allc):,} flows right only through remembered former holders"
            )
            print(
                f"   psutil: {obs['polls']} polls; flows: {len(flows):,} "
                f"({errors} client errors, {unmatched} without a server record)"
            )
            why: Counter[str] = Counter()
            for sc in allc:
                why.update(sc.why)
            if why:
                print(
                    "   conntui wrong/missing pid, by what the data segment's record says: "
                    + "; ".join(f"{k} x{v}" for k, v in why.most_common(8))
                )
            misses = [m for s in allc for m in s.misses]
            for m in misses[: args.show_misses]:
                print(f"   conntui miss: {m}")
            verdict(checks, flows, ct, errors, unmatched, args.trace)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    stop(p, signal.SIGTERM, timeout=5)
    return checks.exit_code()


def verdict(
    checks: Checks, flows: list[Flow], ct: dict[str, Score], errors: int, unmatched: int, trace: bool
) -> None:
    """Smoke: flows happened and were whole, conntui captured every data segment, and (with its
    tracer, the default) named the right pid and fd on both sides of ≥ 99 % of flows (the goal
    of issue 18; it had 100 % in every full run with the tracer)."""
    checks.expect(bool(flows), "no flow completed (the clients or the server logged nothing)")
    checks.expect(
        errors == 0 and unmatched == 0, f"{errors} client errors, {unmatched} flows the server missed"
    )
    n = sum(s.n for s in ct.values())
    seen = sum(s.seen for s in ct.values())
    checks.expect(seen == n, f"conntui printed the data segment of {seen:,} of {n:,} flows")
    if trace and n:
        for side, what in (
            ("s_pid", "server pid"),
            ("s_fd", "server fd"),
            ("c_pid", "client pid"),
            ("c_fd", "client fd"),
        ):
            right = sum(getattr(s, side) for s in ct.values())
            checks.expect(right >= 0.99 * n, f"conntui named the right {what} in {right:,} of {n:,} flows")


if __name__ == "__main__":
    sys.exit(main())
