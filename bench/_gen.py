"""Loopback UDP load: the C ``udpgen`` (sendmmsg, built at run time) or a Python fallback.

``Generator(rate, duration, port, procs)`` splits the rate over ``procs`` processes and
reports what was really sent (the achieved offered rate).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
_built: str | None = None
_tmpdir: tempfile.TemporaryDirectory[str] | None = None

PY_GEN = r"""
import socket, sys, time
dst, port, payload = sys.argv[1], int(sys.argv[2]), int(sys.argv[5])
rate, duration = float(sys.argv[3]), float(sys.argv[4])
assert dst.startswith("127.") and 0 < duration <= 600
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((dst, port))
send = s.send
buf = b"x" * payload
limit = int(rate * duration) if rate > 0 else -1
sent = 0
t0 = time.monotonic(); deadline = t0 + duration
mono = time.monotonic
while True:
    t = mono()
    if t >= deadline or (limit >= 0 and sent >= limit):
        break
    if rate > 0:
        due = t0 + sent / rate
        if due > t:
            time.sleep(due - t)
            continue
    for _ in range(64):
        try:
            send(buf)
        except (ConnectionRefusedError, BlockingIOError):
            pass
        sent += 1
print(f"sent {sent} elapsed {mono() - t0:.6f}", flush=True)
"""


def force_python() -> None:
    """Use the Python generator from now on (to test the fallback)."""
    global _built
    _built = ""


def build_c() -> str | None:
    """Compile ``udpgen.c`` once into a temp dir; None when no C compiler works."""
    global _built
    if _built is not None:
        return _built or None
    _built = compile_c("udpgen") or ""
    if not _built:
        sys.stderr.write("bench: cannot build udpgen.c, falling back to Python\n")
    return _built or None


def compile_c(name: str) -> str | None:
    """``bench/NAME.c`` compiled with gcc -O2 into this run's temp dir; None (and the
    compiler's words on stderr) when no compiler works."""
    global _tmpdir
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    if _tmpdir is None:
        _tmpdir = tempfile.TemporaryDirectory(prefix="conntui-bench-")
    exe = os.path.join(_tmpdir.name, name)
    r = subprocess.run([cc, "-O2", "-o", exe, str(HERE / f"{name}.c")], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(f"bench: cannot build {name}.c: {r.stderr.strip()}\n")
        return None
    return exe


@dataclass
class Sent:
    packets: int
    elapsed: float
    kind: str  # "C sendmmsg x2" / "Python x2"

    @property
    def rate(self) -> float:
        return self.packets / self.elapsed if self.elapsed else 0.0


class Generator:
    """Start ``procs`` paced senders of ``rate`` pkt/s in total for ``duration`` seconds."""

    def __init__(
        self,
        rate: float,
        duration: float,
        port: int,
        *,
        procs: int = 1,
        payload: int = 16,
        dst: str = "127.0.0.1",
        force_python: bool = False,
    ) -> None:
        exe = None if force_python else build_c()
        per = rate / procs if rate > 0 else 0
        args = [dst, str(port), str(per), str(duration), str(payload)]
        cmd = [exe, *args] if exe else [sys.executable, "-c", PY_GEN, *args]
        self.kind = f"{'C sendmmsg' if exe else 'Python'} x{procs}"
        self.duration = duration
        self.procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
        self.started = time.monotonic()

    def wait(self) -> Sent:
        total, elapsed = 0, 0.0
        for p in self.procs:
            try:
                out, _ = p.communicate(timeout=self.duration + 30)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            for line in out.splitlines():
                if line.startswith("sent "):
                    parts = line.split()
                    total += int(parts[1])
                    elapsed = max(elapsed, float(parts[3]))
        return Sent(total, elapsed, self.kind)


def run(rate: float, duration: float, port: int, **kw: object) -> Sent:
    return Generator(rate, duration, port, **kw).wait()  # type: ignore[arg-type]
