#!/usr/bin/env python3
"""Many-flow TCP on ``lo``: conntui (headless and with its TUI) and tcpdump on the same traffic.

A C generator (``tcpgen.c``, compiled at run time) runs a server and a client process on one
loopback port: ``--persist`` connections held for the run exchanging ``--size``-byte
messages (``--msg-rate`` a second in all, each echoed back), and ``--new-rate`` new
connections a second (handshake, one request, its echo, close). It logs, per connection,
the client port, each side's fd and when it opened and closed, and its processes' pids: the
truth of who held each segment.

At the same time, on the same packets (one generator run):

* ``conntui --headless -q -i lo -p PORT -w A.pcapng`` (default options: the tracer on);
* the same with its TUI, in a 160x48 tmux pane (``--no-tui`` skips it);
* ``tcpdump -i lo -w B.pcap -n tcp port PORT``.

Offered is the kernel's own count: an nftables ``counter`` on the output hook for
``tcp sport/dport PORT`` (on ``lo`` every packet passes it once). Reported per tool: packets
in its file / offered, its own captured and kernel-drop counters; for conntui's ``-w`` file
(read back by an independent reader, bench/_common.py) the share of packets with the
attribution comment, and of the data segments (payload > 0, both directions) the share
whose receiver *and* sender name the right pid and fd (``holders`` or ``former_holders``),
judged against the generator's log.

    sudo python bench/manyflow.py                       # 1,000 conns, 2,000 new/s, 10 s
    sudo python bench/manyflow.py --msg-rate 30000 --new-rate 200 --seconds 5
    sudo python bench/manyflow.py --smoke               # 3 s, small; exits 1 on a failed check
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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
import _gen  # noqa: E402
from _common import (  # noqa: E402
    Checks,
    FileCount,
    banner,
    conntui_cmd,
    count_capture,
    cpu_seconds,
    env_with_repo,
    free_port,
    have,
    parse_counters,
    pcapng_packets,
    pct,
    require_root,
    stop,
    table,
    wait_for_text,
    wait_idle,
)
from capture import TuiProcess, _status_count  # noqa: E402

# -- the kernel's count ---------------------------------------------------------------------


class NftCounter:
    """An nftables table counting the packets of one TCP port on the output hook."""

    def __init__(self, port: int) -> None:
        self.name = f"conntui_bench_{port}"
        rules = (
            f"table inet {self.name} {{\n chain out {{\n"
            "  type filter hook output priority 0; policy accept;\n"
            f"  tcp dport {port} counter\n  tcp sport {port} counter\n }}\n}}\n"
        )
        r = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"nft: {r.stderr.strip()}")

    def packets(self) -> int:
        out = subprocess.run(
            ["nft", "-j", "list", "table", "inet", self.name], capture_output=True, text=True, check=True
        ).stdout
        total = 0
        for item in json.loads(out)["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
        return total

    def close(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.name], capture_output=True, check=False)


def lo_packets() -> int:
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[1])
    return 0


# -- the truth ------------------------------------------------------------------------------


@dataclass
class Conn:
    port: int  # the client's port
    fd: int
    t0: float
    t1: float


@dataclass
class Truth:
    client_pid: int = 0
    server_pid: int = 0
    listen_fd: int = -1
    client: dict[int, list[Conn]] = field(default_factory=lambda: defaultdict(list))
    server: dict[int, list[Conn]] = field(default_factory=lambda: defaultdict(list))
    totals: dict[str, float] = field(default_factory=dict)

    def fd(self, side: dict[int, list[Conn]], port: int, ts: float) -> int | None:
        """The fd that held ``port``'s connection at ``ts`` (the closest when in doubt)."""
        best, gap = None, 0.05
        for c in side.get(port, ()):
            g = 0.0 if c.t0 <= ts <= c.t1 else min(abs(ts - c.t0), abs(ts - c.t1))
            if g <= gap:
                best, gap = c.fd, g
        return best


def read_truth(logdir: Path, stdout: str) -> Truth:
    t = Truth()
    for name, side in (("client.log", t.client), ("server.log", t.server)):
        lines = (logdir / name).read_text().splitlines()
        head = lines[0].split()
        if name == "client.log":
            t.client_pid = int(head[1])
        else:
            t.server_pid, t.listen_fd = int(head[1]), int(head[3])
        for line in lines[1:]:
            _, port, fd, t0, t1, _ = line.split()
            side[int(port)].append(Conn(int(port), int(fd), float(t0), float(t1)))
    parts = stdout.split()
    t.totals = {parts[i]: float(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
    return t


# -- conntui's file, judged -----------------------------------------------------------------


@dataclass
class Judged:
    data_rows: int = 0
    right: int = 0
    no_json: int = 0
    no_truth: int = 0
    why: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)


def _pairs(sock: dict | None) -> set[tuple[int, int]]:  # type: ignore[type-arg]
    if not sock:
        return set()
    return {(h["pid"], h["fd"]) for key in ("holders", "former_holders") for h in sock.get(key) or []}


def _tcp(data: bytes, linktype: int) -> tuple[int, int, int] | None:
    """(sport, dport, payload length) of an IPv4 TCP frame, else None."""
    off = {1: 14, 113: 16, 276: 20, 0: 4, 101: 0, 228: 0}.get(linktype)
    if off is None or len(data) < off + 20 or data[off] >> 4 != 4 or data[off + 9] != 6:
        return None
    ihl = (data[off] & 0xF) * 4
    total = int.from_bytes(data[off + 2 : off + 4], "big")
    t = off + ihl
    if len(data) < t + 14:
        return None
    sport, dport = int.from_bytes(data[t : t + 2], "big"), int.from_bytes(data[t + 2 : t + 4], "big")
    return sport, dport, total - ihl - (data[t + 12] >> 4) * 4


def judge(path: Path, truth: Truth, port: int) -> tuple[Judged, FileCount]:
    """Every data segment of the file: do its receiver and sender name the right pid and fd?"""
    j = Judged()
    fc = FileCount()
    parsed: dict[bytes, dict] = {}  # type: ignore[type-arg]
    with open(path, "rb") as f:
        for pkt in pcapng_packets(f, fc):
            fc.commented += pkt.json is not None
            tcp = _tcp(pkt.data, pkt.linktype)
            if tcp is None:
                continue
            sport, dport, plen = tcp
            if plen <= 0:
                continue
            j.data_rows += 1
            if pkt.json is None:
                j.no_json += 1
                j.why["no attribution comment"] += 1
                continue
            att = parsed.get(pkt.json)
            if att is None:
                if len(parsed) > 50_000:
                    parsed.clear()
                att = parsed[pkt.json] = json.loads(pkt.json)
            to_server = dport == port
            cport = sport if to_server else dport
            cfd = truth.fd(truth.client, cport, pkt.ts)
            sfd = truth.fd(truth.server, cport, pkt.ts)
            if cfd is None or sfd is None:
                j.no_truth += 1
                j.why["no log record for that port and time"] += 1
                continue
            client, server = (truth.client_pid, cfd), (truth.server_pid, sfd)
            want_rx, want_tx = (server, client) if to_server else (client, server)
            rx, tx = _pairs(att.get("receiver")), _pairs(att.get("sender"))
            if want_rx in rx and want_tx in tx:
                j.right += 1
                continue
            side = "receiver" if want_rx not in rx else "sender"
            sock = att.get(side) or {}
            j.why[f"{side} wrong: match {att.get('match')}, socket {sock.get('state', 'none')}"] += 1
            if len(j.examples) < 5:
                j.examples.append(
                    f"{sport}→{dport} {plen} B at {pkt.ts:.6f}: want rx {want_rx} tx {want_tx}, "
                    f"got rx {sorted(rx)} tx {sorted(tx)} ({att.get('match')})"
                )
    return j, fc


# -- one run --------------------------------------------------------------------------------


@dataclass
class ToolResult:
    tool: str
    in_file: int = 0
    captured: int | None = None
    drops: int | None = None
    commented: int | None = None
    cpu: float = 0.0
    error: str = ""
    judged: Judged | None = None
    drain: float = 0.0  # seconds it stayed busy after the traffic (30: stopped while still busy)


def start_headless(port: int, out: Path, errf: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        conntui_cmd("--headless", "-q", "-i", "lo", "-p", str(port), "-w", str(out), *extra),
        stdout=subprocess.DEVNULL,
        stderr=errf.open("wb"),
        env=env_with_repo(),
    )
    if not wait_for_text(errf, "listening on", proc, 60):
        stop(proc, signal.SIGKILL)
        last = errf.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"conntui did not start: {last[0]}")
    return proc


def start_tcpdump(port: int, out: Path, errf: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-w", str(out), "-n", "tcp", "port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=errf.open("wb"),
    )
    if not wait_for_text(errf, "listening on", proc, 30):
        stop(proc, signal.SIGKILL)
        raise RuntimeError(f"tcpdump did not start: {errf.read_text(errors='replace').strip()[-200:]}")
    return proc


def run(args: argparse.Namespace, tmp: Path, checks: Checks) -> None:
    exe = _gen.compile_c("tcpgen")
    if exe is None:
        checks.expect(False, "cannot build bench/tcpgen.c (gcc)", always=True)
        return
    port = free_port(kind=1)  # SOCK_STREAM
    nft = NftCounter(port)
    extra = shlex.split(args.conntui_args)
    procs: dict[str, object] = {}
    results: dict[str, ToolResult] = {}
    try:
        files = {
            "conntui": tmp / "conntui.pcapng",
            "conntui-tui": tmp / "conntui-tui.pcapng",
            "tcpdump": tmp / "tcpdump.pcap",
        }
        tools = [t for t in args.tools if not (t == "conntui-tui" and (args.no_tui or not have("tmux")))]
        for tool in tools:
            res = results[tool] = ToolResult(tool)
            errf = tmp / f"{tool}.err"
            try:
                if tool == "conntui":
                    procs[tool] = start_headless(port, files[tool], errf, extra)
                elif tool == "tcpdump":
                    procs[tool] = start_tcpdump(port, files[tool], errf)
                else:
                    tui = TuiProcess(port, files[tool], tuple(extra))
                    if not tui.wait_ready(60):
                        tui.quit(5)
                        raise RuntimeError(f"the TUI did not start: {' '.join(tui.screen().split())[-200:]}")
                    procs[tool] = tui
            except RuntimeError as exc:
                res.error = str(exc)
        time.sleep(1.0)  # the TUI's and the headless one's first socket-table refresh
        cpu0 = {t: cpu_seconds(p.pid) for t, p in procs.items()}  # type: ignore[attr-defined]
        nft0, lo0, load0 = nft.packets(), lo_packets(), os.getloadavg()[0]
        logdir = tmp / "gen"
        logdir.mkdir()
        t0 = time.monotonic()
        gen = subprocess.run(
            [
                exe,
                str(port),
                str(args.persist),
                str(args.msg_rate),
                str(args.new_rate),
                str(args.seconds),
                str(args.size),
                str(logdir),
            ],
            capture_output=True,
            text=True,
            timeout=args.seconds + 60,
            check=False,
        )
        took = time.monotonic() - t0
        load1 = os.getloadavg()[0]
        if gen.returncode != 0:
            checks.expect(
                False, f"tcpgen failed (exit {gen.returncode}): {gen.stderr.strip()[-200:]}", always=True
            )
            return
        truth = read_truth(logdir, gen.stdout)
        # drain: each conntui until idle, tcpdump's ring block timeout
        for tool, p in procs.items():
            busy = 0.25 if tool == "conntui-tui" else 0.05
            results[tool].drain = wait_idle(p.pid, busy=busy, max_wait=30)  # type: ignore[attr-defined]
        time.sleep(1.3)
        offered = nft.packets() - nft0
        lo_delta = lo_packets() - lo0
        for tool, p in procs.items():
            res = results[tool]
            res.cpu = cpu_seconds(p.pid) - cpu0[tool]  # type: ignore[attr-defined]
            if isinstance(p, TuiProcess):
                time.sleep(1.5)  # the status bar's next tick
                bar = p.screen()
                rc = p.quit()
                res.captured, res.drops = _status_count(bar, "segments"), _status_count(bar, "dropped")
                text = ""
            else:
                rc = stop(p, signal.SIGTERM)  # type: ignore[arg-type]
                text = (tmp / f"{tool}.err").read_text(errors="replace")
                c = parse_counters(text)
                res.captured, res.drops = c.get("captured"), c.get("drops")
            if rc not in (0, -signal.SIGTERM, 143):
                res.error = f"exit {rc}: {text.strip().splitlines()[-1] if text.strip() else ''}"
        procs.clear()
        for tool, res in results.items():
            if res.error and not files[tool].exists():  # did not start (a killed one's file is read)
                continue
            if tool.startswith("conntui"):
                res.judged, fc = judge(files[tool], truth, port)
                res.commented = fc.commented
            else:
                fc = count_capture(files[tool])
            res.in_file = fc.packets
            if fc.error:
                res.error = (res.error + "; " if res.error else "") + f"file: {fc.error}"
        report(args, port, truth, results, offered, lo_delta, took, load0, load1)
        verdict(checks, args, truth, results, offered)
    finally:
        for p in procs.values():
            if isinstance(p, TuiProcess):
                p.quit(5)
            else:
                stop(p, signal.SIGTERM, timeout=10)  # type: ignore[arg-type]
        nft.close()


def report(
    args: argparse.Namespace,
    port: int,
    truth: Truth,
    results: dict[str, ToolResult],
    offered: int,
    lo_delta: int,
    took: float,
    load0: float,
    load1: float,
) -> None:
    tt = truth.totals
    el = tt.get("elapsed", took) or took
    print(
        f"   traffic: {args.persist:,} persistent connections, {tt.get('msgs', 0):,.0f} messages of "
        f"{args.size} B ({tt.get('msgs', 0) / el:,.0f}/s asked {args.msg_rate:,.0f}/s, each echoed), "
        f"{tt.get('new', 0):,.0f} new connections ({tt.get('new', 0) / el:,.0f}/s "
        f"asked {args.new_rate:,.0f}/s; "
        f"{tt.get('done', 0):,.0f} completed, {tt.get('failed', 0):,.0f} failed, "
        f"{tt.get('not_opened', 0):,.0f} not opened: at most 4,000 open at once), {el:.1f} s"
    )
    print(
        f"   offered (nft counter on tcp port {port}): {offered:,} packets = {offered / el:,.0f} pkt/s; "
        f"all of lo: {lo_delta:,} (other traffic included); load {load0:.2f} → {load1:.2f}"
    )
    rows = []
    for tool, r in results.items():
        jd = r.judged
        rows.append(
            [
                tool,
                offered,
                r.in_file,
                pct(r.in_file, offered) if r.in_file or not r.error else "—",
                r.captured,
                r.drops,
                "" if r.commented is None else pct(r.commented, r.in_file),
                "" if jd is None else f"{jd.right:,} / {jd.data_rows:,} = {pct(jd.right, jd.data_rows)}",
                f"{1e6 * r.cpu / r.in_file:.2f}" if r.in_file else "—",
                f"{r.drain:.1f} s",
                r.error[:70],
            ]
        )
    print(
        table(
            [
                "tool",
                "offered",
                "in file",
                "in file/offered",
                "captured",
                "kernel drops",
                "commented",
                "data rows right pid+fd",
                "CPU µs/pkt",
                "busy after",
                "error",
            ],
            rows,
        )
    )
    for tool, r in results.items():
        if r.judged and r.judged.why:
            print(
                f"   {tool} data rows not right: "
                + "; ".join(f"{k} x{v}" for k, v in r.judged.why.most_common(6))
            )
            for ex in r.judged.examples[:3]:
                print(f"     e.g. {ex}")


def verdict(
    checks: Checks, args: argparse.Namespace, truth: Truth, results: dict[str, ToolResult], offered: int
) -> None:
    tt = truth.totals
    checks.expect(offered > 0, "the kernel counted no packet on the port", always=True)
    checks.expect(tt.get("done", 0) > 0, "no short connection completed")
    checks.expect(tt.get("failed", 0) == 0, f"{tt.get('failed', 0):.0f} short connections failed")
    for tool, r in results.items():
        checks.expect(not r.error, f"{tool}: {r.error}", always=True)
        if r.error:
            continue
        checks.expect(
            r.in_file == offered, f"{tool}: {r.in_file:,} packets in its file, the kernel counted {offered:,}"
        )
        if r.captured is not None and r.drops is not None and tool != "conntui-tui":
            checks.expect(
                r.captured + r.drops == offered,
                f"{tool}: captured {r.captured:,} + kernel drops {r.drops:,} != {offered:,} offered",
            )
        if r.commented is not None:
            checks.expect(
                r.commented == r.in_file, f"{tool}: {r.commented:,} of {r.in_file:,} packets commented"
            )
        jd = r.judged
        if jd is not None:
            checks.expect(jd.data_rows > 0, f"{tool}: no data segment in its file")
            checks.expect(
                jd.right == jd.data_rows,
                f"{tool}: {jd.right:,} of {jd.data_rows:,} data rows name the right pid and fd on both sides",
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="3 s, 50 connections, 50 new/s (CI), with checks")
    ap.add_argument("--persist", type=int, default=1000, help="connections held for the run")
    ap.add_argument("--msg-rate", type=float, default=100_000, help="messages/s over them (each echoed)")
    ap.add_argument("--new-rate", type=float, default=2000, help="new connections/s (request, echo, close)")
    ap.add_argument("--size", type=int, default=64, help="message size (bytes)")
    ap.add_argument("--seconds", type=float, default=10.0, help="traffic duration (max 60)")
    ap.add_argument("--no-tui", action="store_true", help="without conntui's TUI (in tmux)")
    ap.add_argument(
        "--tools",
        nargs="*",
        choices=["conntui", "conntui-tui", "tcpdump"],
        default=["conntui", "conntui-tui", "tcpdump"],
        help="which capture together (none: the generator alone, for its own rate)",
    )
    ap.add_argument("--conntui-args", default="", help="extra options for both conntuis (e.g. --no-trace)")
    ap.add_argument("--keep", metavar="DIR", help="keep the capture files and the generator's logs here")
    args = ap.parse_args(argv)
    require_root()
    if args.smoke:
        args.persist, args.msg_rate, args.new_rate, args.seconds = 50, 2000, 50, 3.0
    args.seconds = min(args.seconds, 60.0)
    checks = Checks("manyflow", smoke=args.smoke)
    if not have("nft") or not have("tcpdump"):
        checks.expect(False, "needs nft (the kernel's packet count) and tcpdump", always=True)
        return checks.exit_code()
    banner(
        f"many-flow TCP on lo: {args.persist:,} connections, {args.msg_rate:,.0f} msgs/s of {args.size} B, "
        f"{args.new_rate:,.0f} new conns/s, {args.seconds:g} s; conntui -w, conntui TUI, tcpdump together"
    )
    if args.keep:
        tmp = Path(args.keep)
        tmp.mkdir(parents=True, exist_ok=True)
        run(args, tmp, checks)
    else:
        with tempfile.TemporaryDirectory(prefix="conntui-bench-mf-") as d:
            run(args, Path(d), checks)
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
