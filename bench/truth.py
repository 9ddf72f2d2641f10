#!/usr/bin/env python3
"""Does conntui say only what happened? Real short-lived traffic, the programs' own logs as
truth, tcpdump as the witness of every RST and ICMP (issue 11, "How it is measured").

In one run on loopback, side by side (``--rate`` flows/s in total, for ``--seconds``):

* ``curl`` against ``python3 -m http.server`` (a wrapper logs pid, accepted fd and client
  port per request; curl's ``-w %{local_port}`` names the client side, pid and name; curl's fd
  is not reported, so it is not judged);
* ``curl`` against the same server started after conntui through
  ``sh -c 'sleep 2; exec python3 …'`` (the name changes from ``sh`` to ``python3`` at exec);
* Node ``net`` clients (connect, write a line, end; every other one holds the socket 20-50 ms
  first) against a Node ``net`` echo server, both logging pid and fd (``socket._handle.fd``);
* a DNS-like UDP exchange: a connected socket per query, one query, one answer, closed at
  once, against a bound responder; both log pid and fd.

``conntui --headless --json -i lo -p PORTS`` (default options; ``--conntui-args`` adds some)
and ``tcpdump -i lo -w`` capture at the same time. Reported per kind and overall:

* rows right: the data rows of a flow name the right pid, fd and name on both sides;
* false statements: a claimed RST/ICMP tcpdump did not see on that 4-tuple within 1 s;
  ``time_wait``/``none`` for a segment a live socket received (the flow completed); a holder
  pid that is not the program's; a holder named other than the program was at that time;
* the kernel's verdict (JSON ``kernel``, ``agrees``; "n/a" while absent) and every disagreement;
* flows right (both sides) against the issue's goals; the kernel's counters before/after.

    sudo .venv/bin/python bench/truth.py                 # 200 flows/s for 20 s
    sudo .venv/bin/python bench/truth.py --smoke
    sudo .venv/bin/python bench/truth.py --json          # one JSON summary on stdout

``--smoke`` (about 5 s, 40 flows/s) exits 1 with one line when a tool did not start, conntui
printed no rows, no ground truth was logged, or (without ``--allow-false``) any false
statement was found.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402
    PCAP_MAGICS,
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

PEERS = str(HERE / "_truthpeers.py")
NODE = str(HERE / "_truthnode.js")
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else (shutil.which("python3") or "python3")

# kind → (share of --rate, server port offset)
KINDS = {
    "curl → http.server": (0.15, 0),
    "curl → sh -c exec http.server": (0.10, 1),
    "node net, end at once": (0.375, 2),
    "node net, held 20-50 ms": (0.125, 2),
    "udp dns-like, connected": (0.25, 3),
}
TCPDUMP = ["tcpdump", "-i", "lo", "-n", "-s", "256", "-B", "8192"]
GOAL_FLOWS_RIGHT = 99.0
DROP_COUNTERS = ("Udp:NoPorts", "Udp:InErrors", "Udp:RcvbufErrors", "TcpExt:ListenDrops")
GOAL_AGREE = 99.9
CLAIM = re.compile(r"kernel answer(?:s|ed) with (a RST|ICMP)")
VERIFIED = re.compile(r"verified: the kernel answered with (a RST|ICMP)")
FALSE_KINDS = {
    "rst_icmp_unseen": "claimed RST/ICMP tcpdump did not see",
    "tw_none_live": "time_wait/none for a segment a live socket received",
    "wrong_owner": "holder pid that is not the program's",
    "wrong_name": "holder named other than the program was",
}
COUNTERS = [
    ("Udp", "NoPorts"),
    ("Udp", "InErrors"),
    ("Udp", "RcvbufErrors"),
    ("Tcp", "AttemptFails"),
    ("Tcp", "EstabResets"),
    ("Tcp", "OutRsts"),
    ("Tcp", "InErrs"),
    ("TcpExt", "ListenDrops"),
    ("TcpExt", "ListenOverflows"),
    ("TcpExt", "TCPAbortOnData"),
    ("TcpExt", "TCPAbortOnClose"),
    ("TcpExt", "TCPChallengeACK"),
    ("TcpExt", "TW"),
    ("TcpExt", "TWRecycled"),
    ("Icmp", "OutDestUnreachs"),
    ("Icmp", "InDestUnreachs"),
]


class Fail(Exception):
    """A smoke assertion or a tool that did not start: one line, exit 1."""


# -- the kernel's counters ------------------------------------------------------------------


def kernel_counters() -> dict[str, int]:
    """``Group:Name`` → value from /proc/net/snmp and /proc/net/netstat (as nstat reads them)."""
    out: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for head, vals in zip(lines[::2], lines[1::2], strict=False):
            group, _, names = head.partition(":")
            for name, val in zip(names.split(), vals.partition(":")[2].split(), strict=False):
                out[f"{group}:{name}"] = int(val)
    return out


# -- the witness: tcpdump's file, read without conntui's code ------------------------------------


@dataclass
class Witness:
    """What tcpdump saw: RSTs and FINs by 4-tuple, ICMP unreachables by the datagram they quote,
    and each TCP connection's first SYN and last FIN/RST (for lifetimes)."""

    packets: int = 0
    rst: dict[tuple[Any, ...], list[float]] = field(default_factory=lambda: defaultdict(list))
    icmp: dict[tuple[Any, ...], list[float]] = field(default_factory=lambda: defaultdict(list))
    syn: dict[tuple[Any, ...], list[float]] = field(default_factory=lambda: defaultdict(list))
    fin: dict[tuple[Any, ...], list[tuple[float, tuple[str, int]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    error: str = ""

    def saw_rst(self, key: tuple[Any, ...], ts: float, within: float = 1.0) -> bool:
        return any(ts - 0.01 <= t <= ts + within for t in self.rst.get(key, ()))

    def saw_icmp(self, quoted: tuple[Any, ...], ts: float, within: float = 1.0) -> bool:
        return any(ts - 0.01 <= t <= ts + within for t in self.icmp.get(quoted, ()))


def tuple_key(a: str, ap: int, b: str, bp: int) -> tuple[Any, ...]:
    """A connection's key, the same in both directions."""
    return (a, ap, b, bp) if (a, ap) <= (b, bp) else (b, bp, a, ap)


def _ip(raw: bytes) -> str:
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    import ipaddress

    return str(ipaddress.IPv6Address(raw))


def read_witness(path: Path) -> Witness:
    w = Witness()
    try:
        data = path.read_bytes()
    except OSError as exc:
        w.error = str(exc)
        return w
    if len(data) < 24 or data[:4] not in PCAP_MAGICS:
        w.error = "not a classic pcap file"
        return w
    e = PCAP_MAGICS[data[:4]]
    nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(e + "IIII", data, off)
        pkt = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        w.packets += 1
        ts = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:
            l3, proto = pkt[14:], struct.unpack_from("!H", pkt, 12)[0] if len(pkt) >= 14 else 0
        elif linktype == 113:
            l3, proto = pkt[16:], struct.unpack_from("!H", pkt, 14)[0] if len(pkt) >= 16 else 0
        elif linktype == 276:
            l3, proto = pkt[20:], struct.unpack_from("!H", pkt, 0)[0] if len(pkt) >= 20 else 0
        else:
            w.error = f"link type {linktype} not read"
            return w
        _packet(w, ts, proto, l3)
    return w


def _packet(w: Witness, ts: float, ethertype: int, l3: bytes) -> None:
    if ethertype == 0x0800 and len(l3) >= 20:
        ihl = (l3[0] & 15) * 4
        ipproto, src, dst, l4 = l3[9], _ip(l3[12:16]), _ip(l3[16:20]), l3[ihl:]
        icmp_unreach = ipproto == 1 and len(l4) >= 8 and l4[0] == 3 and l4[1] == 3
        quoted = l4[8:]
        if icmp_unreach and len(quoted) >= 20:
            qihl = (quoted[0] & 15) * 4
            qproto, qsrc, qdst, qudp = quoted[9], _ip(quoted[12:16]), _ip(quoted[16:20]), quoted[qihl:]
            if qproto == 17 and len(qudp) >= 4:
                sp, dp = struct.unpack_from("!HH", qudp)
                w.icmp[("udp", qsrc, sp, qdst, dp)].append(ts)
            return
    elif ethertype == 0x86DD and len(l3) >= 40:
        ipproto, src, dst, l4 = l3[6], _ip(l3[8:24]), _ip(l3[24:40]), l3[40:]
        if ipproto == 58 and len(l4) >= 8 + 48 and l4[0] == 1 and l4[1] == 4:
            quoted = l4[8:]
            if quoted[6] == 17:
                sp, dp = struct.unpack_from("!HH", quoted, 40)
                w.icmp[("udp", _ip(quoted[8:24]), sp, _ip(quoted[24:40]), dp)].append(ts)
            return
    else:
        return
    if ipproto != 6 or len(l4) < 14:
        return
    sp, dp = struct.unpack_from("!HH", l4)
    flags = l4[13]
    key = tuple_key(src, sp, dst, dp)
    if flags & 0x04:
        w.rst[key].append(ts)
    if flags & 0x01 or flags & 0x04:
        w.fin[key].append((ts, (src, sp)))
    if flags & 0x02 and not flags & 0x10:
        w.syn[key].append(ts)


# -- ground truth ---------------------------------------------------------------------------


@dataclass
class Flow:
    """One connection or exchange, as its programs logged it."""

    kind: str
    proto: str
    server_port: int
    client_port: int
    t0: float
    t1: float
    ok: bool
    client_pid: int
    client_fd: int | None  # None: the program does not report it (curl)
    client_comm: str
    server_pid: int = 0
    server_fd: int | None = None
    server_comm: str = ""
    reused: bool = False  # an earlier flow of this run used the same 4-tuple (TIME_WAIT reuse)
    rows: list[dict[str, Any]] = field(default_factory=list)


def read_log(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def join_server(flows: list[Flow], server_log: list[dict[str, Any]]) -> int:
    """Fill in the server side of each flow from the server's log (same client port, nearest
    time within 2 s); returns how many flows found none."""
    by_port: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in server_log:
        if "client_port" in r:
            by_port[r["client_port"]].append(r)
    missing = 0
    for f in flows:
        cands = [r for r in by_port.get(f.client_port, []) if abs(r["t"] - f.t0) < 2.0]
        if not cands:
            missing += 1
            f.ok = False
            continue
        r = min(cands, key=lambda r: abs(r["t"] - f.t0))
        f.server_pid, f.server_fd, f.server_comm = r["pid"], r["fd"], r["comm"]
        if f.proto == "tcp":  # the accept time bounds the connection from below too
            f.t0 = min(f.t0, r["t"])
            f.t1 = max(f.t1, r["t"])
    return missing


# -- the traffic ----------------------------------------------------------------------------


class CurlLoop(threading.Thread):
    """Runs curl processes one after another, each fetching ``rate`` URLs a second (curl's own
    ``--rate``) for about a second, until ``seconds`` are up; keeps each transfer's port."""

    def __init__(self, kind: str, url: str, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.kind, self.url, self.rate, self.seconds = kind, url, rate, seconds
        self.flows: list[Flow] = []
        self.errors: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self) -> None:
        t_end = time.monotonic() + self.seconds + 5
        total = max(1, round(self.rate * self.seconds))
        per_min = max(1, round(self.rate * 60))
        done = 0
        while done < total and time.monotonic() < t_end:
            k = min(max(1, round(self.rate)), total - done)
            done += k
            args = ["curl", "-s", "--max-time", "5", "--rate", f"{per_min}/m"]
            args += ["-w", "%{local_port} %{http_code} %{time_total}\\n"]
            for _ in range(k):
                args += ["-o", "/dev/null", self.url]
            start = time.time()
            try:
                p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            except OSError as exc:
                self.errors.append(str(exc))
                return
            self.procs.append(p)
            comm = _exec_name(p)
            try:
                out, _ = p.communicate(timeout=k / self.rate + 15)
            except subprocess.TimeoutExpired:
                stop(p, timeout=2)
                self.errors.append("curl timed out")
                continue
            for line in out.decode(errors="replace").splitlines():
                parts = line.split()
                if len(parts) != 3 or not parts[0].isdigit():
                    continue
                port, code = int(parts[0]), parts[1]
                if port == 0:
                    self.errors.append(f"curl: no connection (code {code})")
                    continue
                ok = code == "200"
                self.flows.append(Flow(self.kind, "tcp", 0, port, start, time.time(), ok, p.pid, None, comm))
                if not ok:
                    self.errors.append(f"curl: HTTP {code}")


def _kind_of(rec: dict[str, Any]) -> str:
    """The kind of a flow a Node or UDP client logged."""
    if rec.get("proto") == "udp":
        return "udp dns-like, connected"
    return "node net, held 20-50 ms" if rec.get("hold") else "node net, end at once"


def _comm_of(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _exec_name(p: subprocess.Popen[bytes], timeout: float = 2.0) -> str:
    """The child's name once it has exec'd (Popen may return before the exec)."""
    ours = _comm_of("self")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        name = _comm_of(p.pid)
        if name and name != ours:
            return name
        time.sleep(0.001)
    return Path(str(p.args[0])).name[:15] if isinstance(p.args, list) else ""


# -- judging conntui's rows -----------------------------------------------------------------


def _pids(sock: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not sock:
        return []
    return list(sock.get("holders") or []) + list(sock.get("former_holders") or [])


@dataclass
class Tally:
    flows: int = 0
    completed: int = 0
    data_rows: int = 0
    rows_right: int = 0
    rx_right: int = 0
    tx_right: int = 0
    flows_right: int = 0
    flows_no_data: int = 0
    lived_1ms: int = 0
    lived_known: int = 0
    false: Counter[str] = field(default_factory=Counter)

    def add(self, o: Tally) -> None:
        for k in ("flows", "completed", "data_rows", "rows_right", "rx_right", "tx_right", "flows_right"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        for k in ("flows_no_data", "lived_1ms", "lived_known"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.false.update(o.false)


def _row_line(r: dict[str, Any], *extra: str) -> str:
    who = f"{r['proto']} {r['src']}:{r['sport']} → {r['dst']}:{r['dport']} [{r.get('flags', '')}]"
    return " ".join([f"{r['ts']:.6f}", who, f"match {r.get('match')}", *extra])


def _side_ok(sock: dict[str, Any] | None, pid: int, fd: int | None, comm: str) -> tuple[bool, str]:
    """Whether a row's socket names (pid, fd) with the name ``comm``; else what it names."""
    named = _pids(sock)
    hit = [h for h in named if h["pid"] == pid]
    if not hit:
        return False, "names " + (
            ", ".join(f"{h['process']}[{h['pid']}] fd {h['fd']}" for h in named) or "no holder"
        )
    if fd is not None and not any(h["fd"] == fd for h in hit):
        return False, f"fd {', '.join(str(h['fd']) for h in hit)}, want {fd}"
    if comm and not any(h["process"] == comm for h in hit):
        return False, f"name {hit[0]['process']!r}, want {comm!r}"
    return True, ""


def judge(
    flows: list[Flow], rows: list[dict[str, Any]], witness: Witness, show: int
) -> tuple[dict[str, Tally], dict[str, list[str]], dict[str, Any]]:
    """Score every row of the run against the flows' truth and tcpdump's witness."""
    ports = {f.server_port for f in flows}
    by_key: dict[tuple[str, int, int], list[Flow]] = defaultdict(list)
    for f in sorted(flows, key=lambda f: f.t0):
        key = (f.proto, f.client_port, f.server_port)
        if by_key[key] and f.t0 - by_key[key][-1].t1 < 65.0:
            f.reused = True
        by_key[key].append(f)
    examples: dict[str, list[str]] = defaultdict(list)
    false_rows: Counter[str] = Counter()
    claims = Counter[str]()
    stray = 0
    kernel: dict[str, Any] = {"rows_with_field": 0, "verdicts": 0, "agree": 0, "disagree": 0, "null": 0}
    kernel["drops"] = Counter[str]()  # the kernel's drop reasons on captured segments
    # agreement by the verdict's source: "source|agree" / "source|disagree" → rows
    kernel["by_source"] = Counter[str]()
    disagreements: list[str] = []

    def flag(kind: str, cat: str, line: str) -> None:
        false_rows[kind + "\0" + cat] += 1
        if len(examples[cat]) < show:
            examples[cat].append(f"[{kind}] {line}")

    for r in rows:
        sport, dport = int(r.get("sport") or 0), int(r.get("dport") or 0)
        if dport in ports:
            server_port, client_port = dport, sport
        elif sport in ports:
            server_port, client_port = sport, dport
        else:
            continue
        cands = [
            f
            for f in by_key.get((r["proto"], client_port, server_port), [])
            if f.t0 - 1.0 <= r["ts"] <= f.t1 + 2.0
        ]
        flow = min(cands, key=lambda f: abs(f.t0 - r["ts"])) if cands else None
        kind = flow.kind if flow else "other rows on the ports"
        if flow is None:
            stray += 1
        else:
            flow.rows.append(r)
        # the kernel's verdict, when the JSON carries it
        if "kernel" in r or "agrees" in r:
            kernel["rows_with_field"] += 1
            kernel["verdicts"] += r.get("kernel") is not None
            kv = r.get("kernel") or {}
            if "drop" in str(kv.get("verdict", "")).lower() or kv.get("source") == "skb:kfree_skb":
                kernel["drops"][str(kv.get("reason") or "no reason")] += 1
            agrees = r.get("agrees")
            kernel["agree" if agrees is True else "disagree" if agrees is False else "null"] += 1
            if agrees is not None:
                kernel["by_source"][f"{kv.get('source')}|{'agree' if agrees else 'disagree'}"] += 1
            if agrees is False:
                k = r.get("kernel") or {}
                disagreements.append(
                    _row_line(
                        r,
                        f"[{kind}] kernel {k.get('verdict')}/{k.get('reason')} ({k.get('source')}):",
                        str(r.get("explain", ""))[:160],
                    )
                )
        # a claimed RST / ICMP that tcpdump did not see
        notes = [str(n) for n in r.get("notes") or ()]
        text = [str(r.get("explain", "")), *notes]
        claimed = (r.get("match") == "none" and any(CLAIM.search(t) for t in text)) or any(
            VERIFIED.search(n) for n in notes
        )
        if claimed:
            claims["total"] += 1
            if r["proto"] == "udp":
                seen = witness.saw_icmp(("udp", r["src"], sport, r["dst"], dport), r["ts"])
            else:
                seen = witness.saw_rst(tuple_key(r["src"], sport, r["dst"], dport), r["ts"])
            if seen:
                claims["seen"] += 1
            else:
                retracted = any(n.startswith("no RST came back") or n.startswith("no ICMP") for n in notes)
                claims["retracted"] += retracted
                flag(
                    kind,
                    "rst_icmp_unseen",
                    _row_line(
                        r, "— not in tcpdump;", text[0][:120], "(retracted by a later note)" * retracted
                    ),
                )

    tallies: dict[str, Tally] = defaultdict(Tally)
    for f in flows:
        t = tallies[f.kind]
        t.flows += 1
        t.completed += f.ok
        if f.proto == "tcp":  # from the client's SYN to its FIN (its close), as tcpdump saw them
            key = tuple_key("127.0.0.1", f.client_port, "127.0.0.1", f.server_port)
            syn = [s for s in witness.syn.get(key, ()) if f.t0 - 1.0 <= s <= f.t1 + 2.0]
            client = ("127.0.0.1", f.client_port)
            fin = [
                s for s, who in witness.fin.get(key, ()) if who == client and f.t0 - 1.0 <= s <= f.t1 + 2.0
            ]
            if syn and fin:
                t.lived_known += 1
                t.lived_1ms += min(fin) - min(syn) < 0.001
        elif f.ok:  # from socket() to close(), as the client timed it
            t.lived_known += 1
            t.lived_1ms += f.t1 - f.t0 < 0.001
        if not f.ok:
            continue
        rows_f = sorted(f.rows, key=lambda r: r["ts"])
        # which rows a live socket received: up to the first FIN (or RST), and after it those
        # going the same way as that FIN (its peer is in CLOSE_WAIT/LAST_ACK until the last ACK);
        # the other way, an orphaned socket is a TIME_WAIT (FIN_WAIT2) entry, as the kernel has it
        first_fin = next((r for r in rows_f if "F" in r.get("flags", "") or "R" in r.get("flags", "")), None)
        data_right = 0
        data_seen = 0
        for r in rows_f:
            to_server = r["dport"] == f.server_port
            if to_server:
                rx_truth = (f.server_pid, f.server_fd, f.server_comm)
                tx_truth = (f.client_pid, f.client_fd, f.client_comm)
            else:
                rx_truth = (f.client_pid, f.client_fd, f.client_comm)
                tx_truth = (f.server_pid, f.server_fd, f.server_comm)
            live = True
            if f.proto == "tcp" and first_fin is not None and r["ts"] > first_fin["ts"]:
                live = r["src"] == first_fin["src"] and r["sport"] == first_fin["sport"]
                if "R" in first_fin.get("flags", ""):
                    live = False
            if f.reused and "S" in r.get("flags", "") and "A" not in r.get("flags", ""):
                live = False  # a SYN may meet the TIME_WAIT of the 4-tuple's earlier connection
            if live and r.get("match") in ("time_wait", "none"):
                flag(
                    f.kind,
                    "tw_none_live",
                    _row_line(r, "— the flow completed:", str(r.get("explain", ""))[:120]),
                )
            for side, sock, (pid, _fd, comm) in (
                ("receiver", r.get("receiver"), rx_truth),
                ("sender", r.get("sender"), tx_truth),
            ):
                named = _pids(sock)
                wrong = sorted({h["pid"] for h in named if h["pid"] != pid})
                if wrong:
                    flag(
                        f.kind,
                        "wrong_owner",
                        _row_line(r, f"— {side} names pid {wrong}, the program is {pid}"),
                    )
                bad = sorted(
                    {h["process"] for h in named if h["pid"] == pid and comm and h["process"] != comm}
                )
                if bad:
                    flag(
                        f.kind, "wrong_name", _row_line(r, f"— {side} pid {pid} named {bad}, it was {comm!r}")
                    )
            if r.get("payload_len", 0) <= 0:
                continue
            data_seen += 1
            t.data_rows += 1
            rx_ok, rx_why = _side_ok(r.get("receiver"), *rx_truth)
            tx_ok, tx_why = _side_ok(r.get("sender"), *tx_truth)
            t.rx_right += rx_ok
            t.tx_right += tx_ok
            if rx_ok and tx_ok:
                t.rows_right += 1
                data_right += 1
            elif len(examples["row_wrong"]) < show:
                why = "; ".join(
                    w for w in (rx_why and f"receiver {rx_why}", tx_why and f"sender {tx_why}") if w
                )
                examples["row_wrong"].append(f"[{f.kind}] {_row_line(r, '—', why)}")
        directions = {r["dport"] == f.server_port for r in rows_f if r.get("payload_len", 0) > 0}
        if data_seen == 0:
            t.flows_no_data += 1
        elif data_right == data_seen and directions == {True, False}:
            t.flows_right += 1
    for fkey, n in false_rows.items():
        kind, cat = fkey.split("\0")
        tallies[kind].false[cat] += n
    extra = {
        "claims": dict(claims),
        "stray_rows": stray,
        "kernel": kernel,
        "disagreements": disagreements,
    }
    return tallies, examples, extra


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    port = free_port_range(4)
    ports = f"{port}-{port + 3}"
    env = env_with_repo()
    www = tmp / "www"
    www.mkdir()
    (www / "index.html").write_text("<html>" + "x" * 1000 + "</html>\n")
    logs = {
        name: tmp / f"{name}.log" for name in ("http", "httpexec", "nodesrv", "nodecli", "udpsrv", "udpcli")
    }
    life = args.seconds + 120

    def start(name: str, cmd: list[str], stderr: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        try:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
        except OSError as exc:
            raise Fail(f"{name} did not start: {exc}") from None
        procs.append(p)
        return p

    def ready(name: str, log: Path, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        if not wait_for_text(log, '"ready"', proc, timeout):
            raise Fail(f"{name} did not start (no ready line in {timeout:g} s, exit {proc.poll()})")

    before = kernel_counters()
    tcpdump_err, pcap = tmp / "tcpdump.err", tmp / "witness.pcap"
    with tcpdump_err.open("wb") as errf:
        tcpdump = start(
            "tcpdump",
            [*TCPDUMP, "-w", str(pcap), f"portrange {ports} or icmp or icmp6"],
            stderr=errf,
        )
    if not wait_for_text(tcpdump_err, "listening on", tcpdump, 15):
        raise Fail(
            "tcpdump did not start: " + " ".join(tcpdump_err.read_text(errors="replace").split())[-200:]
        )

    http = start(
        "python3 -m http.server", [PY, PEERS, "http", str(port), str(logs["http"]), str(www), str(life)]
    )
    nodesrv = start("node server", ["node", NODE, "server", str(port + 2), str(logs["nodesrv"]), str(life)])
    udpsrv = start("udp server", [PY, PEERS, "udpserver", str(port + 3), str(logs["udpsrv"]), str(life)])
    ready("python3 -m http.server", logs["http"], http)
    ready("node server", logs["nodesrv"], nodesrv)
    ready("udp server", logs["udpsrv"], udpsrv)

    cerr, cout = tmp / "conntui.err", tmp / "conntui.jsonl"
    extra = shlex.split(args.conntui_args or "")
    with cout.open("wb") as o, cerr.open("wb") as e:
        conntui = subprocess.Popen(
            conntui_cmd("--headless", "--json", "-i", "lo", "-p", ports, *extra), stdout=o, stderr=e, env=env
        )
    procs.append(conntui)
    if not wait_for_text(cerr, "listening on", conntui, 30):
        raise Fail("conntui did not start: " + " ".join(cerr.read_text(errors="replace").split())[-300:])
    # started after conntui, through a shell that execs the server (the name changes at exec)
    sh_cmd = (
        f"sleep {args.exec_delay:g}; exec {shlex.quote(PY)} {shlex.quote(PEERS)} http {port + 1} "
        + " ".join(shlex.quote(str(x)) for x in (logs["httpexec"], www, life))
    )
    httpexec = start("sh -c exec http.server", ["sh", "-c", sh_cmd])
    ready("sh -c exec http.server", logs["httpexec"], httpexec, args.exec_delay + 15)

    rate, secs = args.rate, args.seconds
    share = {k: v[0] for k, v in KINDS.items()}
    curls = [
        CurlLoop(
            "curl → http.server",
            f"http://127.0.0.1:{port}/index.html",
            rate * share["curl → http.server"],
            secs,
        ),
        CurlLoop(
            "curl → sh -c exec http.server",
            f"http://127.0.0.1:{port + 1}/index.html",
            rate * share["curl → sh -c exec http.server"],
            secs,
        ),
    ]
    node_share = share["node net, end at once"] + share["node net, held 20-50 ms"]
    hold = share["node net, held 20-50 ms"] / node_share
    nodecli = start(
        "node client",
        [
            "node",
            NODE,
            "client",
            str(port + 2),
            f"{rate * node_share:g}",
            f"{secs:g}",
            str(logs["nodecli"]),
            f"{hold:g}",
        ],
    )
    udp_rate = rate * share["udp dns-like, connected"]
    udpcli = start(
        "udp client",
        [PY, PEERS, "udpclient", str(port + 3), f"{udp_rate:g}", f"{secs:g}", str(logs["udpcli"])],
    )
    t_start = time.time()
    for c in curls:
        c.start()
    for c in curls:
        c.join(secs + 60)
        procs.extend(c.procs)
    for p in (nodecli, udpcli):
        try:
            p.wait(secs + 40)
        except subprocess.TimeoutExpired:
            stop(p, timeout=2)
    t_traffic = time.time() - t_start
    time.sleep(1.5)  # conntui's rows settle (0.5 s) and its verifier's window passes
    wait_idle(conntui.pid, max_wait=10)
    rc = stop(conntui, signal.SIGTERM)
    stop(tcpdump, signal.SIGTERM)
    for p in (http, httpexec, nodesrv, udpsrv):
        stop(p, signal.SIGTERM, timeout=5)
    after = kernel_counters()
    cerr_text = cerr.read_text(errors="replace")
    if rc not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
        raise Fail(f"conntui exited with {rc}: " + " ".join(cerr_text.split())[-300:])

    # the programs' ground truth
    flows: list[Flow] = []
    missing_server = 0
    for c, log in zip(curls, ("http", "httpexec"), strict=True):
        for f in c.flows:
            f.server_port = port if log == "http" else port + 1
        missing_server += join_server(c.flows, read_log(logs[log]))
        flows += c.flows
    client_errors = [e for c in curls for e in c.errors]
    for kind_log, srv_log, sport in (("nodecli", "nodesrv", port + 2), ("udpcli", "udpsrv", port + 3)):
        these = []
        for r in read_log(logs[kind_log]):
            if "client_port" not in r:
                client_errors.append(str(r.get("error", "no port")))
                continue
            these.append(
                Flow(
                    _kind_of(r),
                    r["proto"],
                    sport,
                    r["client_port"],
                    r["t"],
                    r.get("end", r["t"]),
                    bool(r.get("ok")),
                    r["pid"],
                    r.get("fd"),
                    r["comm"],
                )
            )
            if not r.get("ok"):
                client_errors.append(str(r.get("error", "no answer")))
        missing_server += join_server(these, read_log(logs[srv_log]))
        flows += these
    if not flows:
        raise Fail("no ground truth was logged by any program")
    silent = [k for k in KINDS if not any(f.kind == k for f in flows)]
    if silent:
        raise Fail(f"no ground truth was logged for: {', '.join(silent)}")

    rows = read_log(cout)
    rows = [r for r in rows if isinstance(r, dict) and "proto" in r and "ts" in r]
    if not rows:
        raise Fail("conntui printed no rows: " + " ".join(cerr_text.split())[-200:])
    witness = read_witness(pcap)
    if witness.error:
        raise Fail(f"tcpdump's file could not be read: {witness.error}")
    tallies, examples, extra_j = judge(flows, rows, witness, args.show)
    return {
        "ports": ports,
        "seconds": secs,
        "traffic_seconds": round(t_traffic, 2),
        "rate": rate,
        "flows": flows,
        "rows": len(rows),
        "tallies": tallies,
        "examples": examples,
        "judge": extra_j,
        "client_errors": Counter(client_errors),
        "missing_server": missing_server,
        "conntui": parse_counters(cerr_text),
        "conntui_args": ["--headless", "--json", "-i", "lo", "-p", ports, *extra],
        "tcpdump": {**parse_counters(tcpdump_err.read_text(errors="replace")), "packets": witness.packets},
        "witness": {
            "rst": sum(map(len, witness.rst.values())),
            "icmp_unreach": sum(map(len, witness.icmp.values())),
        },
        "counters": [(f"{g}:{n}", before.get(f"{g}:{n}"), after.get(f"{g}:{n}")) for g, n in COUNTERS],
    }


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable summary (``--json``)."""
    tallies: dict[str, Tally] = res["tallies"]
    total = Tally()
    kinds = [k for k in KINDS if k in tallies]
    for k in kinds:
        total.add(tallies[k])
    other = tallies.get("other rows on the ports")
    if other:
        total.false.update(other.false)

    def one(t: Tally) -> dict[str, Any]:
        return {
            "flows": t.flows,
            "completed": t.completed,
            "data_rows": t.data_rows,
            "rows_right": t.rows_right,
            "receiver_right": t.rx_right,
            "sender_right": t.tx_right,
            "flows_right": t.flows_right,
            "flows_right_pct": round(100.0 * t.flows_right / t.completed, 2) if t.completed else None,
            "flows_without_data_row": t.flows_no_data,
            "closed_within_1ms": t.lived_1ms,
            "lifetime_known": t.lived_known,
            "false_statements": {c: t.false.get(c, 0) for c in FALSE_KINDS},
            "false_total": sum(t.false.values()),
        }

    k = res["judge"]["kernel"]
    agree_pct = (
        round(100.0 * k["agree"] / (k["agree"] + k["disagree"]), 3) if k["agree"] + k["disagree"] else None
    )
    out = {
        "ports": res["ports"],
        "rate": res["rate"],
        "seconds": res["seconds"],
        "traffic_seconds": res["traffic_seconds"],
        "conntui_args": res["conntui_args"],
        "rows": res["rows"],
        "kinds": {kk: one(tallies[kk]) for kk in kinds},
        "other_rows_false": dict(other.false) if other else {},
        "overall": one(total),
        "claims": res["judge"]["claims"],
        "stray_rows": res["judge"]["stray_rows"],
        "kernel": {**k, "agree_pct": agree_pct} if k["rows_with_field"] else "n/a",
        "disagreements": res["judge"]["disagreements"],
        "examples": res["examples"],
        "goals": {
            "false_statements": 0,
            "flows_right_pct": GOAL_FLOWS_RIGHT,
            "agree_pct": GOAL_AGREE,
            "met_false": sum(total.false.values()) == 0,
            "met_flows_right": bool(total.completed)
            and 100.0 * total.flows_right / total.completed >= GOAL_FLOWS_RIGHT,
        },
        "client_errors": dict(res["client_errors"]),
        "flows_without_server_record": res["missing_server"],
        "conntui_counters": res["conntui"],
        "tcpdump": res["tcpdump"],
        "witness": res["witness"],
        "kernel_counters": {n: {"before": b, "after": a} for n, b, a in res["counters"]},
    }
    return out


def report(s: dict[str, Any]) -> None:
    rows = []
    for name, t in [*s["kinds"].items(), ("all", s["overall"])]:
        rows.append(
            [
                name,
                t["flows"],
                t["completed"],
                pct(t["closed_within_1ms"], t["lifetime_known"]) if t["lifetime_known"] else "—",
                t["data_rows"],
                pct(t["rows_right"], t["data_rows"]),
                pct(t["receiver_right"], t["data_rows"]),
                pct(t["sender_right"], t["data_rows"]),
                pct(t["flows_right"], t["completed"]),
                t["false_total"],
            ]
        )
    print(
        table(
            [
                "kind",
                "flows",
                "completed",
                "client closed <1 ms",
                "data rows",
                "rows right",
                "receiver",
                "sender",
                "flows right",
                "false stmts",
            ],
            rows,
        )
    )
    print("\n   false statements (rows), by what they say:")
    frows = []
    for name, t in [
        *s["kinds"].items(),
        ("other rows on the ports", {"false_statements": s["other_rows_false"]}),
        ("all", s["overall"]),
    ]:
        fs = t["false_statements"]
        frows.append([name, *(fs.get(c, 0) for c in FALSE_KINDS), sum(fs.values())])
    print(table(["kind", "RST/ICMP unseen", "tw/none, live", "wrong owner", "wrong name", "total"], frows))
    for cat, label in FALSE_KINDS.items():
        for line in s["examples"].get(cat, []):
            print(f"   {label}: {line}")
    for line in s["examples"].get("row_wrong", []):
        print(f"   row not right: {line}")
    c = s["claims"]
    print(
        f"\n   conntui claimed {c.get('total', 0)} RST/ICMP answers; tcpdump saw {c.get('seen', 0)} of them "
        f"({c.get('retracted', 0)} of the rest later noted 'no RST/ICMP came back'). tcpdump saw "
        f"{s['witness']['rst']} RSTs and {s['witness']['icmp_unreach']} ICMP port unreachables on the ports."
    )
    k = s["kernel"]
    if k == "n/a":
        print("   kernel verdict (JSON 'kernel'/'agrees'): n/a (no row carries the fields)")
    else:
        print(
            f"   kernel verdict: {k['rows_with_field']} rows carry the fields, "
            f"{k['verdicts']} with a verdict; "
            f"agree {k['agree']}, disagree {k['disagree']}, no verdict {k['null']}; "
            f"agreement {k['agree_pct'] if k['agree_pct'] is not None else 'n/a'} % (goal ≥ {GOAL_AGREE} %)"
        )
        by = k.get("by_source") or {}
        sources = sorted({key.split("|")[0] for key in by})
        if sources:
            agree = {src: by.get(f"{src}|agree", 0) for src in sources}
            rows = {src: agree[src] + by.get(f"{src}|disagree", 0) for src in sources}
            print(
                "   agreement by the verdict's source: "
                + " · ".join(f"{src} {agree[src]}/{rows[src]}" for src in sources)
            )
        drops = k["drops"]
        counted = {
            n: v["after"] - v["before"] for n, v in s["kernel_counters"].items() if None not in v.values()
        }
        print(
            f"   kernel drops on captured segments: {sum(drops.values())}"
            + (f" ({', '.join(f'{r} x{n}' for r, n in drops.most_common())})" if drops else "")
            + "; the kernel's counters in the run: "
            + ", ".join(f"{n} +{counted.get(n, '?')}" for n in DROP_COUNTERS)
        )
        for line in s["disagreements"]:
            print(f"   disagreement: {line}")
    o = s["overall"]
    g = s["goals"]
    print(
        f"\n   GOALS  false statements: {o['false_total']} "
        f"(goal 0: {'met' if g['met_false'] else 'NOT met'}) · "
        f"flows right (both sides): {pct(o['flows_right'], o['completed'])} "
        f"(goal ≥ {GOAL_FLOWS_RIGHT:g} %: {'met' if g['met_flows_right'] else 'NOT met'})"
    )
    cc, td = s["conntui_counters"], s["tcpdump"]
    print(
        f"   conntui: {s['rows']:,} rows ({s['stray_rows']} on the ports but in no logged flow); captured "
        f"{cc.get('captured', '?')}, dropped by kernel {cc.get('drops', '?')}, "
        f"args: {' '.join(s['conntui_args'])}"
    )
    print(
        f"   tcpdump: {td.get('packets', '?')} packets in its file, "
        f"dropped by kernel {td.get('drops', '?')}; "
        f"traffic ran {s['traffic_seconds']:g} s at {s['rate']:g} flows/s asked"
    )
    errs = s["client_errors"]
    print(
        f"   clients: {sum(errs.values())} errors"
        + (f" ({'; '.join(f'{e} x{n}' for e, n in Counter(errs).most_common(4))})" if errs else "")
        + f"; {s['flows_without_server_record']} flows without a server record"
    )
    print("\n   the kernel's counters (whole host, for context):")
    print(
        table(
            ["counter", "before", "after", "delta"],
            [
                [
                    n,
                    v["before"],
                    v["after"],
                    (v["after"] - v["before"]) if None not in (v["before"], v["after"]) else None,
                ]
                for n, v in s["kernel_counters"].items()
            ],
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="about 5 s at 40 flows/s, with assertions (CI)")
    ap.add_argument("--rate", type=float, default=None, help="new flows per second, all kinds (default 200)")
    ap.add_argument("--seconds", type=float, default=None, help="traffic duration (default 20, at most 120)")
    ap.add_argument(
        "--allow-false", action="store_true", help="with --smoke: do not fail on false statements"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON summary instead of the tables")
    ap.add_argument(
        "--conntui-args",
        default="",
        help="extra conntui flags, one string: --conntui-args='--trace --settle 1'",
    )
    ap.add_argument("--exec-delay", type=float, default=2.0, help="sleep before the sh -c server execs (s)")
    ap.add_argument("--show", type=int, default=5, help="example rows printed per kind of error")
    ap.add_argument("--keep", metavar="DIR", help="copy the logs, conntui's JSON and tcpdump's file here")
    args = ap.parse_args(argv)
    require_root()
    for tool in ("tcpdump", "node", "curl", "sh"):
        if not have(tool):
            print(f"truth.py: {tool} is not installed", file=sys.stderr)
            return 1
    args.rate = args.rate if args.rate is not None else (40.0 if args.smoke else 200.0)
    args.seconds = args.seconds if args.seconds is not None else (5.0 if args.smoke else 20.0)
    if not (0 < args.rate <= 2000 and 0 < args.seconds <= 120):
        print("truth.py: --rate must be in (0, 2000] and --seconds in (0, 120]", file=sys.stderr)
        return 1
    if not args.json:
        banner(
            f"truth: {args.rate:g} flows/s for {args.seconds:g} s (curl, sh -c exec, node net, udp), "
            "conntui vs the programs' logs and tcpdump"
        )
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="conntui-bench-truth-") as d:
        try:
            res = run(args, Path(d), procs)
        except Fail as exc:
            print(f"truth.py: FAIL: {exc}", file=sys.stderr)
            return 1
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    stop(p, signal.SIGTERM, timeout=5)
            if args.keep:
                shutil.copytree(d, args.keep, dirs_exist_ok=True)
    s = summarize(res)
    if args.json:
        print(json.dumps(s))
    else:
        report(s)
    if args.smoke:
        o = s["overall"]
        if not o["completed"]:
            print("truth.py: FAIL: no flow completed per the programs' logs", file=sys.stderr)
            return 1
        if o["false_total"] and not args.allow_false:
            fs = ", ".join(f"{FALSE_KINDS[c]} {n}" for c, n in o["false_statements"].items() if n)
            print(f"truth.py: FAIL: {o['false_total']} false statements ({fs})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
