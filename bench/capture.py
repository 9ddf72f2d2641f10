#!/usr/bin/env python3
"""Capture throughput: conntui's whole pipeline vs tcpdump at offered UDP rates on ``lo``.

For each offered rate, a paced generator (C ``sendmmsg``, built at run time; Python when no
compiler) sends 16-byte UDP datagrams to one loopback port for ``--seconds``. The same load
is captured by ``conntui --headless -q -i lo -p PORT -w FILE.pcapng``, by the same with its
TUI (in tmux) and by ``tcpdump -i lo -w FILE.pcap udp port PORT``, all at the same time on one
generator run (the peers see the same packets; the ratio conntui/tcpdump divides counts of
that one run). ``--apart`` gives each tool its own generator run instead, one after the
other, so that they never compete for the 2 cores; then there is no ratio, only each tool's
received/offered.
A sink socket bound to the port with a tiny buffer swallows the datagrams (no ICMP).

Reported per tool: received/offered (packets in the written file, counted by an
independent reader), the tool's own "captured" and "dropped by kernel" counters, CPU time
per packet, for conntui how many written packets carry an attribution comment, and the
ratio conntui/tcpdump.

    sudo python bench/capture.py                # 25k, 50k, 100k, 250k pkt/s, 4 s each
    sudo python bench/capture.py --rates 300000 500000 --seconds 3
    sudo python bench/capture.py --smoke        # one 5k pkt/s second (CI)
    sudo python bench/capture.py --pure         # also the pure-Python path (CONNTUI_PURE=1)
    sudo python bench/capture.py --no-trace-too # also conntui --no-trace (the tracer's cost)
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gen
from _common import (
    Checks,
    banner,
    conntui_cmd,
    count_capture,
    cpu_seconds,
    env_with_repo,
    have,
    parse_counters,
    pct,
    require_root,
    stop,
    table,
    wait_for_text,
    wait_idle,
)


@dataclass
class Result:
    tool: str
    rate: float
    offered: int = 0
    offered_rate: float = 0.0
    gen: str = ""
    in_file: int = 0
    commented: int | None = None
    captured: int | None = None
    drops: int | None = None
    cpu: float = 0.0
    error: str = ""
    matches: dict[str, int] = field(default_factory=dict)
    drain: float = 0.0
    run: int = 0  # which generator run it captured (the same number: the same packets)

    @property
    def ratio(self) -> float:
        return self.in_file / self.offered if self.offered else 0.0


class TuiProcess:
    """``conntui -i lo -p PORT -w FILE`` with its TUI, in a detached 160x48 tmux session: the
    capture thread shares the process (and the GIL) with the screen, as a person runs it."""

    def __init__(self, port: int, out: Path, extra: tuple[str, ...] = ()) -> None:
        self.session = f"conntui-bench-{port}"
        env = env_with_repo()
        argv = [
            "env",
            f"PYTHONPATH={env['PYTHONPATH']}",
            *conntui_cmd("-i", "lo", "-p", str(port), "-w", str(out), *extra),
        ]
        # no redirection: Textual draws on stderr (its output is the pane, read by ``screen``)
        shell = f"exec {shlex.join(argv)}"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.session, "-x", "160", "-y", "48", shell], check=True
        )
        out_pid = subprocess.run(
            ["tmux", "display-message", "-p", "-t", self.session, "#{pane_pid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.pid = int(out_pid.strip())

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True, text=True, check=False
        ).stdout

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if "Segments" in self.screen():
                return True
            time.sleep(0.1)
        return False

    def quit(self, timeout: float = 30.0) -> int:
        """``q``, as a person quits (the -w file is finished); 0 if it exited by itself."""
        subprocess.run(["tmux", "send-keys", "-t", self.session, "q"], check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.1)
        rc = 0 if not self.alive() else 1
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True, check=False)
        return rc


def _status_count(bar: str, label: str) -> int | None:
    """A counter off the TUI's status bar: ``5,677 segments``, ``28.6k dropped``, ``1.2M …``
    (rounded there: read it as such)."""
    m = re.search(rf"([\d,.]+)([kM]?) {label}", bar)
    if m is None:
        return None
    return round(float(m.group(1).replace(",", "")) * {"": 1, "k": 1e3, "M": 1e6}[m.group(2)])


def start_tool(
    tool: str, port: int, out: Path, errf: Path, extra: list[str]
) -> subprocess.Popen[bytes] | TuiProcess:
    if tool == "conntui-tui":
        tui = TuiProcess(port, out)
        if not tui.wait_ready():
            tui.quit(5)
            raise RuntimeError(f"the TUI did not start: {' '.join(tui.screen().split())[-300:]}")
        time.sleep(0.5)  # the first socket-table refresh
        return tui
    env = env_with_repo()
    if tool in ("conntui", "conntui-py", "conntui-notrace"):
        if tool == "conntui-notrace":  # the same without the kernel tracer (bpftrace)
            extra = [*extra, "--no-trace"]
        cmd = conntui_cmd("--headless", "-q", "-i", "lo", "-p", str(port), "-w", str(out), *extra)
        ready = "listening on"
        if tool == "conntui-py":  # the pure-Python path, without the C accelerator
            env["CONNTUI_PURE"] = "1"
    else:
        cmd = ["tcpdump", "-i", "lo", "-w", str(out), "-n", *extra, "udp", "port", str(port)]
        ready = "listening on"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf.open("wb"), env=env)
    if not wait_for_text(errf, ready, proc, 30):
        stop(proc, signal.SIGKILL)
        raise RuntimeError(f"{tool} did not start: {errf.read_text(errors='replace')[-500:]}")
    time.sleep(0.2)  # let the filter be attached and the first socket-table refresh settle
    return proc


def finish(
    res: Result, proc: subprocess.Popen[bytes] | TuiProcess, cpu0: float, out: Path, errf: Path
) -> None:
    # the TUI keeps redrawing: "idle" is a few percent of a core, not nothing
    res.drain = wait_idle(proc.pid, busy=0.25 if isinstance(proc, TuiProcess) else 0.02)
    if res.tool == "tcpdump":
        # libpcap's TPACKET_V3 ring hands over a block when it fills or after its 1 s timeout
        time.sleep(max(0.0, 1.3 - res.drain))
    res.cpu = cpu_seconds(proc.pid) - cpu0
    if isinstance(proc, TuiProcess):
        # the TUI's status bar: "… │ 200,000 segments │ 0 dropped │ …"
        time.sleep(1.5)  # its next tick
        bar = proc.screen()
        rc = proc.quit()
        text = ""
        res.captured = _status_count(bar, "segments")
        res.drops = _status_count(bar, "dropped")
    else:
        rc = stop(proc, signal.SIGTERM)
        text = errf.read_text(errors="replace")
        counters = parse_counters(text)
        res.captured = counters.get("captured")
        res.drops = counters.get("drops")
    if rc not in (0, -signal.SIGTERM, -signal.SIGINT, 130, 143):
        res.error = f"exit {rc}: {text.strip().splitlines()[-1] if text.strip() else ''}"
    fc = count_capture(out)
    res.in_file = fc.packets
    res.matches = fc.matches
    if res.tool.startswith("conntui"):
        res.commented = fc.commented
    if fc.error:
        res.error = (res.error + "; " if res.error else "") + f"file: {fc.error}"


def measure(
    rate: float, seconds: float, tools: list[str], together: bool, procs: int, tmp: Path
) -> list[Result]:
    port = _free_udp_port()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # never read: the kernel drops, no ICMP
    sink.bind(("127.0.0.1", port))
    results: list[Result] = []
    try:
        groups = [tools] if together else [[t] for t in tools]
        for group in groups:
            running = []
            for tool in group:
                out = tmp / (
                    f"{tool}-{int(rate)}.pcapng" if tool.startswith("conntui") else f"{tool}-{int(rate)}.pcap"
                )
                errf = tmp / f"{tool}-{int(rate)}.err"
                res = Result(tool, rate)
                try:
                    proc = start_tool(tool, port, out, errf, [])
                except RuntimeError as exc:
                    res.error = str(exc)
                    results.append(res)
                    continue
                running.append((res, proc, cpu_seconds(proc.pid), out, errf))
            if not running:
                continue
            sent = _gen.run(rate, seconds, port, procs=procs)
            run_id = next(_RUNS)
            for res, *_ in running:
                res.offered, res.offered_rate, res.gen = sent.packets, sent.rate, sent.kind
                res.run = run_id
            for res, proc, cpu0, out, errf in running:
                finish(res, proc, cpu0, out, errf)
                results.append(res)
                out.unlink(missing_ok=True)
    finally:
        sink.close()
    return results


_RUNS = itertools.count(1)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(results: list[Result]) -> str:
    rows = []
    by_rate: dict[float, dict[str, Result]] = {}
    for r in results:
        by_rate.setdefault(r.rate, {})[r.tool] = r
    for rate, tools in by_rate.items():
        for tool in ("conntui", "conntui-notrace", "conntui-tui", "conntui-py", "tcpdump"):
            r = tools.get(tool)
            if r is None:
                continue
            other = tools.get("tcpdump")
            ratio = (
                f"{r.in_file / other.in_file:.3f}"
                # only counts of one generator run divide: the same packets offered to both
                if tool.startswith("conntui") and other and other.in_file and other.run == r.run
                else ""
            )
            rows.append(
                [
                    f"{int(rate):,}",
                    f"{int(r.offered_rate):,}",
                    tool,
                    r.offered,
                    r.in_file,
                    pct(r.in_file, r.offered),
                    r.captured,
                    r.drops,
                    "" if r.commented is None else pct(r.commented, r.in_file),
                    f"{1e6 * r.cpu / r.in_file:.2f}" if r.in_file else "—",
                    ratio,
                    r.error[:60],
                ]
            )
    return table(
        [
            "target/s",
            "offered/s",
            "tool",
            "offered",
            "in file",
            "recv/offered",
            "captured",
            "kernel drops",
            "commented",
            "CPU µs/pkt",
            "vs tcpdump",
            "error",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="one short low rate (CI)")
    ap.add_argument("--rates", type=float, nargs="+", default=[25_000, 50_000, 100_000, 250_000])
    ap.add_argument("--seconds", type=float, default=4.0, help="load duration per rate (max 60)")
    ap.add_argument("--procs", type=int, default=1, help="generator processes")
    ap.add_argument(
        "--apart",
        action="store_true",
        help="one generator run per tool, one after the other (no CPU contention, no ratio)",
    )
    ap.add_argument("--together", action="store_true", help=argparse.SUPPRESS)  # the default now
    ap.add_argument("--no-tcpdump", action="store_true")
    ap.add_argument(
        "--no-tui", action="store_true", help="skip conntui with its TUI (in tmux), run headless only"
    )
    ap.add_argument("--max-rate", action="store_true", help="also measure the generator alone, unpaced")
    ap.add_argument(
        "--pure", action="store_true", help="also conntui headless on its pure-Python path (CONNTUI_PURE=1)"
    )
    ap.add_argument(
        "--no-trace-too",
        action="store_true",
        help="also conntui headless with --no-trace (the tracer's cost, on the same traffic)",
    )
    ap.add_argument("--python-gen", action="store_true", help="use the Python generator even if gcc works")
    args = ap.parse_args(argv)
    require_root()
    if args.python_gen:
        _gen.force_python()
    if args.smoke:
        args.rates, args.seconds = [5_000], 1.0
    args.seconds = min(args.seconds, 60.0)
    tools = ["conntui"]
    if not args.no_tui and have("tmux"):
        tools.append("conntui-tui")
    elif not args.no_tui:
        print("   conntui-tui: skipped (needs tmux)")
    tools += ["conntui-py"] if args.pure else []
    tools += ["conntui-notrace"] if args.no_trace_too else []
    tools += [] if args.no_tcpdump or not have("tcpdump") else ["tcpdump"]
    banner("capture: conntui --headless -q -i lo -p PORT -w x.pcapng vs tcpdump -w (16-byte UDP on lo)")
    gen = "C sendmmsg" if _gen.build_c() else "Python"
    if not _gen.build_c():
        args.procs = max(args.procs, 2)  # one Python sender tops out near 340k/s here
    print(
        f"   generator: {gen}, {args.procs} process(es); {args.seconds:g} s per rate; "
        + (
            "tools one after the other, each its own generator run"
            if args.apart
            else "tools together, one generator run"
        )
    )
    if args.max_rate:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
            sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            sink.bind(("127.0.0.1", 0))
            s = _gen.run(0, 1.0, sink.getsockname()[1], procs=args.procs)
        print(f"   generator alone, unpaced, nobody capturing: {s.rate:,.0f} pkt/s")
    sys.stdout.flush()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="conntui-bench-cap-") as d:
        for rate in args.rates:
            results += measure(rate, args.seconds, tools, not args.apart, args.procs, Path(d))
            done = [r for r in results if r.rate == rate]
            sys.stderr.write(
                "   "
                + "; ".join(f"{r.tool} {pct(r.in_file, r.offered)}" for r in done)
                + f" at {rate:,.0f}/s\n"
            )
    print("\n" + report(results))
    for r in results:
        if r.tool.startswith("conntui") and r.matches:
            kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(r.matches.items(), key=lambda kv: -kv[1]))
            print(
                f"   {r.tool} @ {int(r.rate):,}/s: matches in the file: {kinds}; drained in {r.drain:.1f} s"
            )
    print("   recv/offered = packets in the written file / datagrams the generator sent (lossless = 100%).")
    return verdict(results, Checks("capture", smoke=args.smoke)).exit_code()


def verdict(results: list[Result], checks: Checks) -> Checks:
    """A tool that did not start or whose file is broken fails any run; in smoke mode (a low
    rate, which every tool here keeps whole) so does a missing packet or comment, or counters
    that do not add up (captured + kernel drops = offered)."""
    for r in results:
        at = f"{r.tool} at {int(r.rate):,}/s"
        checks.expect(not r.error, f"{at}: {r.error}", always=True)
        if r.error:
            continue
        checks.expect(r.offered > 0, f"{at}: the generator sent nothing", always=True)
        checks.expect(r.in_file == r.offered, f"{at}: {r.in_file:,} packets in the file, {r.offered:,} sent")
        if r.commented is not None:
            checks.expect(
                r.commented == r.in_file, f"{at}: {r.commented:,} of {r.in_file:,} packets carry the comment"
            )
        if r.captured is not None and r.drops is not None:
            # the TUI's status bar rounds above 10k ("28.6k"): within its rounding there
            slack = r.offered // 1000 if r.tool == "conntui-tui" else 0
            checks.expect(
                abs(r.captured + r.drops - r.offered) <= slack,
                f"{at}: captured {r.captured:,} + kernel drops {r.drops:,} != {r.offered:,} sent",
            )
        else:
            checks.expect(False, f"{at}: no captured/dropped counters in its output")
    return checks


if __name__ == "__main__":
    sys.exit(main())
