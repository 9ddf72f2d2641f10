"""Shared helpers for the benchmarks: machine facts, tables, processes, capture files.

Plain stdlib. Every benchmark runs as root, generates traffic only on loopback, and bounds
every load loop in count and time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, NamedTuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def env_with_repo() -> dict[str, str]:
    """The environment for child processes: the repository importable as ``conntui``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def conntui_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "conntui", *args]


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit(f"{sys.argv[0]}: run as root (packet capture, socket tables of other processes)")


# -- the machine ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine() -> str:
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')} · nproc {os.cpu_count()} · kernel {platform.release()} · "
        f"{cpu_model()} · Python {platform.python_version()} · load {os.getloadavg()[0]:.2f}"
    )


def banner(title: str) -> None:
    print(f"\n== {title}")
    print(f"   {machine()}")
    sys.stdout.flush()


# -- output -----------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, markdown: bool = False) -> str:
    """A fixed-width (or markdown) table; numbers right-aligned."""
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    num = re.compile(r"^[-+]?[\d,.]+( ?[a-zµ%/]+)?$|^—$|^n/a$")

    def fmt(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if num.match(c) else c.ljust(widths[i]))
        return ("| " + " | ".join(out) + " |") if markdown else "  ".join(out)

    lines = [fmt(list(headers))]
    lines.append(
        ("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        if markdown
        else "  ".join("-" * w for w in widths)
    )
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def _cell(c: object) -> str:
    if c is None:
        return "—"
    if isinstance(c, float):
        return f"{c:,.1f}" if abs(c) >= 10 else f"{c:.2f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# -- processes --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (seconds)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def wait_for_text(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until ``needle`` appears in the file ``path`` (a child's stderr); False on exit/timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if needle in path.read_text(errors="replace"):
                return True
        except OSError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def wait_idle(pid: int, *, quiet: float = 0.4, max_wait: float = 20.0, busy: float = 0.02) -> float:
    """Wait until a process stops burning CPU (its backlog is drained); returns seconds waited."""
    t0 = time.monotonic()
    last = cpu_seconds(pid)
    calm_since = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        time.sleep(0.1)
        now_cpu = cpu_seconds(pid)
        if now_cpu - last > busy * 0.1 * 1.5:
            calm_since = time.monotonic()
        last = now_cpu
        if time.monotonic() - calm_since >= quiet:
            break
    return time.monotonic() - t0


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal a child we started and reap it (SIGKILL after ``timeout``).

    SIGTERM by default: a child of a background job inherits SIGINT ignored, and Python then
    never raises KeyboardInterrupt (conntui handles SIGTERM and SIGHUP itself)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_range(n: int, kind: int = socket.SOCK_STREAM, lo: int = 20000, hi: int = 32000) -> int:
    """A base port P such that P..P+n-1 are free (TCP and UDP) on 127.0.0.1 right now."""
    import random

    for _ in range(200):
        base = random.randint(lo, hi - n)
        ok = True
        for p in range(base, base + n):
            for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, k) as s:
                    try:
                        s.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no free port range")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


# -- capture files ----------------------------------------------------------------------

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}


class FileCount:
    """What a capture file holds: packets, how many carry a conntui attribution comment,
    and the count of each match kind (read from the comment's JSON without parsing it)."""

    def __init__(self) -> None:
        self.packets = 0
        self.commented = 0
        self.matches: dict[str, int] = {}
        self.error = ""

    def __repr__(self) -> str:
        return f"FileCount(packets={self.packets}, commented={self.commented}, matches={self.matches})"


def count_capture(path: str | Path) -> FileCount:
    """Count packets in a pcap or pcapng file with a reader independent of conntui's
    (streaming: files of several GB are fine)."""
    fc = FileCount()
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        fc.error = str(exc)
        return fc
    with f:
        head = f.read(24)
        if head[:4] in PCAP_MAGICS:
            _count_pcap(f, PCAP_MAGICS[head[:4]], fc)
        elif head[:4] == b"\x0a\x0d\x0d\x0a":
            f.seek(0)
            _count_pcapng(f, fc)
        else:
            fc.error = "not a pcap/pcapng file"
    return fc


def _count_pcap(f: IO[bytes], e: str, fc: FileCount) -> None:
    rec = struct.Struct(e + "IIII")
    while True:
        h = f.read(16)
        if len(h) < 16:
            if h:
                fc.error = "truncated record header"
            return
        caplen = rec.unpack(h)[2]
        if len(f.read(caplen)) < caplen:
            fc.error = "truncated record"
            return
        fc.packets += 1


def _count_pcapng(f: IO[bytes], fc: FileCount) -> None:
    """A packet counts as commented when its comment holds the attribution JSON, or names
    an earlier packet (at most 8192 before it) whose comment holds it
    (``conntui-json-ref: frame N``, see conntui/capfile/comments.py)."""
    mkey = b'"match":"'
    matches = fc.matches
    for pkt in pcapng_packets(f, fc):
        if pkt.json is None:
            continue
        m = pkt.json.find(mkey)
        if m < 0:
            continue
        m += len(mkey)
        kind = pkt.json[m : pkt.json.find(b'"', m)].decode()
        fc.commented += 1
        matches[kind] = matches.get(kind, 0) + 1


class Packet(NamedTuple):
    number: int  # 1-based, in file order
    ts: float  # seconds (the interface's if_tsresol; µs when it has none)
    linktype: int
    data: bytes  # the captured bytes
    json: bytes | None  # the conntui-json it carries, itself or through a json-ref (else None)


def pcapng_packets(f: IO[bytes], fc: FileCount) -> Iterator[Packet]:
    """Every packet of a pcapng stream (at the start of its section header), with the
    attribution JSON its comment carries: ``conntui-json: {...}`` itself, or
    ``conntui-json-ref: frame N`` naming a packet at most 8,192 before it that carries it
    (conntui/capfile/comments.py). ``fc.packets`` counts them; a broken file sets ``fc.error``.
    Independent of conntui's own reader."""
    e = "<"
    jkey = b"conntui-json: {"
    rkey = b"conntui-json-ref: frame "
    jsons: dict[int, bytes] = {}  # frame number → the JSON it carries (the last 8192 frames)
    order: deque[int] = deque()
    ifaces: list[tuple[int, float]] = []  # per interface id: (linktype, seconds per unit)
    while True:
        h = f.read(8)
        if len(h) < 8:
            if h:
                fc.error = "truncated block header"
            return
        if h[:4] == b"\x0a\x0d\x0d\x0a":
            bom = f.read(4)
            e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            btype, blen = struct.unpack(e + "II", h)
            body = bom + f.read(blen - 12)
            ifaces = []
        else:
            btype, blen = struct.unpack(e + "II", h)
            body = f.read(blen - 8)
        if blen < 12 or len(body) < blen - 8:
            fc.error = "truncated block"
            return
        if btype == 1:  # interface description block
            linktype = struct.unpack_from(e + "H", body, 0)[0]
            unit = 1e-6
            opos, end = 8, len(body) - 4
            while opos + 4 <= end:
                code, olen = struct.unpack_from(e + "HH", body, opos)
                if code == 0:
                    break
                if code == 9 and olen >= 1:  # if_tsresol
                    r = body[opos + 4]
                    unit = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0**-r
                opos += 4 + olen + (-olen & 3)
            ifaces.append((linktype, unit))
        elif btype == 6:  # enhanced packet block
            fc.packets += 1
            number = fc.packets
            iid, hi, lo, caplen = struct.unpack_from(e + "IIII", body, 0)
            linktype, unit = ifaces[iid] if iid < len(ifaces) else (1, 1e-6)
            data = body[20 : 20 + caplen]
            opos = 20 + caplen + (-caplen & 3)
            end = len(body) - 4
            carried: bytes | None = None
            while opos + 4 <= end:
                code, olen = struct.unpack_from(e + "HH", body, opos)
                if code == 0:
                    break
                if code == 1:
                    val = body[opos + 4 : opos + 4 + olen]
                    r = val.find(rkey)
                    if r >= 0:
                        target = int(val[r + len(rkey) :].rstrip(b"\0"))
                        if number - target <= 8192:
                            carried = jsons.get(target)
                    else:
                        j = val.find(jkey)
                        if j >= 0:
                            nl = val.find(b"\n", j)
                            carried = jsons[number] = val[j + len(jkey) - 1 : nl if nl >= 0 else len(val)]
                            order.append(number)
                            while order[0] < number - 8192:
                                del jsons[order.popleft()]
                opos += 4 + olen + (-olen & 3)
            yield Packet(number, ((hi << 32) | lo) * unit, linktype, data, carried)
        elif btype == 3:  # simple packet block
            fc.packets += 1


# -- conntui / tcpdump stderr -----------------------------------------------------------


def parse_counters(text: str) -> dict[str, int]:
    """conntui's and tcpdump's closing lines → {'captured', 'drops', 'received', ...}."""
    out: dict[str, int] = {}
    pats = {
        "captured": r"^(\d+) (?:segments|packets) captured",
        "received": r"^(\d+) packets received by filter",
        "drops": r"^(\d+) packets dropped by kernel",
        "attributed": r"^(\d+) attributed",
        "undecodable": r"^(\d+) frames not decodable",
    }
    for key, pat in pats.items():
        m = re.search(pat, text, re.M)
        if m:
            out[key] = int(m.group(1))
    return out


# -- smoke assertions -------------------------------------------------------------------


class Checks:
    """What a run must show: in ``--smoke`` mode (CI), every failed check is printed as one
    line and the benchmark exits 1; a full run prints them too, as warnings, unless
    ``always`` (a tool that did not start is a failure in either mode).

        checks = Checks("capture", smoke=args.smoke)
        checks.expect(in_file == offered, f"conntui wrote {in_file} of {offered} packets")
        return checks.exit_code()
    """

    def __init__(self, name: str, *, smoke: bool) -> None:
        self.name = name
        self.smoke = smoke
        self.failed: list[str] = []
        self.warned: list[str] = []

    def expect(self, ok: bool, what: str, *, always: bool = False) -> bool:
        """Record ``what`` (the failure, said as what happened) unless ``ok``."""
        if not ok:
            (self.failed if self.smoke or always else self.warned).append(what)
        return ok

    def exit_code(self) -> int:
        for what in self.warned:
            print(f"   note: {what}")
        for what in self.failed:
            print(f"bench/{self.name}.py: FAILED: {what}", flush=True)
        return 1 if self.failed else 0
