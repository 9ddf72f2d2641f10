"""Ground truth for test_truth.py: real programs that say which pid and fd they used, and
tcpdump beside conntui as the witness of every RST and ICMP the kernel really sent.

Nothing here asks conntui anything: the tests judge conntui's rows only by what these
helpers saw happen.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .conftest import REPO, Conntui

Row = dict[str, Any]

# Ports 31700-31799 are used by test_truth.py only (no other test picks from this range).
TRUTH_PORTS = (31700, 31799)


class KernelDisagrees(Exception):
    """The kernel or a real program did not do what the test set up (not conntui's fault)."""


def kernel(cond: object, what: str) -> None:
    if not cond:
        raise KernelDisagrees(what)


def truth_port() -> int:
    """A port of this file's range, free for TCP and UDP on 127.0.0.1. Bound without
    SO_REUSEADDR, so no TIME_WAIT entry of an earlier run holds it either."""
    ports = list(range(TRUTH_PORTS[0], TRUTH_PORTS[1] + 1))
    random.shuffle(ports)
    for port in ports:
        ok = True
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise KernelDisagrees("no free port in the truth range")


def stop_proc(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """End a process this test started (by its own pid), bounded."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------- tcpdump witness


class Witness:
    """``tcpdump -i lo -w`` beside conntui: what really went over the wire."""

    def __init__(self, bpf: str, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-U", "-s", "256", "-w", str(path), bpf],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        buf = b""
        deadline = time.monotonic() + 10
        while b"listening on" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.proc.kill()
                raise KernelDisagrees(f"tcpdump did not start: {buf!r}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                buf += os.read(fd, 4096)
        self.packets: list[Any] = []

    def stop(self) -> list[Any]:
        time.sleep(0.3)
        stop_proc(self.proc, signal.SIGINT)
        # slow imports: only once the capture is over (l2 registers Ethernet, lo's link type)
        import scapy.layers.inet
        import scapy.layers.l2  # noqa: F401
        from scapy.utils import rdpcap

        self.packets = list(rdpcap(str(self.path)))
        return self.packets

    def kill(self) -> None:
        stop_proc(self.proc, signal.SIGINT)

    def tcp(self) -> list[tuple[str, int, str, int, str, int]]:
        """(src, sport, dst, dport, flags, payload length) of every TCP segment, in order."""
        from scapy.layers.inet import IP, TCP

        out = []
        for p in self.packets:
            if IP in p and TCP in p:
                t = p[TCP]
                out.append((p[IP].src, t.sport, p[IP].dst, t.dport, str(t.flags), len(bytes(t.payload))))
        return out

    def rst_tuples(self) -> set[tuple[str, int, str, int]]:
        """Every 4-tuple (both orientations) that carried a RST."""
        out = set()
        for src, sport, dst, dport, flags, _ in self.tcp():
            if "R" in flags:
                out |= {(src, sport, dst, dport), (dst, dport, src, sport)}
        return out

    def icmp_count(self) -> int:
        from scapy.layers.inet import ICMP

        return sum(1 for p in self.packets if ICMP in p)


# --------------------------------------------------------------------------- real programs

# The real http.server, through a subclass that logs what the kernel gave it: its pid, the
# listening fd, and per request the accepted fd and the client's port.
HTTP_SERVER = r"""
import http.server, json, os, sys
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.SimpleHTTPRequestHandler):
    def setup(self):
        super().setup()
        log.write(json.dumps({"fd": self.connection.fileno(), "cport": self.client_address[1]}) + "\n")
    def log_message(self, *a):
        pass
with http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H) as srv:
    log.write(json.dumps({"pid": os.getpid(), "listen_fd": srv.socket.fileno()}) + "\n")
    srv.serve_forever()
"""


class HttpServer:
    """``http.server`` on 127.0.0.1:port serving a tiny directory; its log is the truth."""

    def __init__(self, port: int, tmp: Path) -> None:
        self.port = port
        self.log = tmp / "http.log"
        root = tmp / "www"
        root.mkdir(exist_ok=True)
        (root / "index.html").write_text("hello\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HTTP_SERVER, str(port), str(self.log)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.log.exists() and "listen_fd" in self.log.read_text()):
            kernel(time.monotonic() < deadline and self.proc.poll() is None, "http.server did not start")
            time.sleep(0.05)
        head = json.loads(self.log.read_text().splitlines()[0])
        self.pid: int = head["pid"]
        self.listen_fd: int = head["listen_fd"]

    def accepted(self) -> dict[int, int]:
        """client port → the fd accept() returned for it."""
        out = {}
        for line in self.log.read_text().splitlines()[1:]:
            d = json.loads(line)
            out[d["cport"]] = d["fd"]
        return out

    def stop(self) -> None:
        stop_proc(self.proc)


def curl(port: int) -> tuple[int, int]:
    """One real ``curl`` request; (curl's pid, its local port)."""
    p = subprocess.Popen(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-w",
            "%{local_port}",
            f"http://127.0.0.1:{port}/",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = p.communicate(timeout=10)
    kernel(p.returncode == 0 and out.strip().isdigit(), f"curl failed ({p.returncode}): {err}")
    return p.pid, int(out)


def python(code: str, *args: str, timeout: float = 10) -> dict[str, Any]:
    """Run a short Python program; the JSON line it prints."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    kernel(done.returncode == 0, f"helper program failed: {done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_listening(port: int, timeout: float = 10) -> None:
    """Until something listens on 127.0.0.1:port (asked of ``ss``, so no traffic is made)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=False
        ).stdout
        if out.strip():
            return
        kernel(time.monotonic() < deadline, f"nothing listens on port {port}")
        time.sleep(0.05)


class FileConntui(Conntui):
    """``conntui --headless --json`` with its rows written to a file, not a pipe: a pipe nobody
    reads fills after ~40 rows with steps, and a blocked conntui stops reading its capture.
    ``prefix`` runs it through another command (e.g. ``capsh --drop=...``)."""

    def __init__(self, out: Path, *args: str, prefix: tuple[str, ...] = ()) -> None:
        self.out = out
        self.args = [*prefix, sys.executable, "-m", "conntui", *args]
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(self.args, stdout=f, stderr=subprocess.PIPE, cwd=REPO)
        self.stderr_head = b""
        try:
            self._wait_ready()
        except BaseException:
            self.kill()  # not started in time: no fixture knows of it yet, so it would run on
            raise

    def stop(self, sig: int = signal.SIGINT, settle: float = 0.6) -> tuple[list[Row], str, int]:
        time.sleep(settle)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=30)
        rows = self.parse(self.out.read_bytes()) if "--json" in self.args else []
        return rows, (self.stderr_head + err).decode(errors="replace"), self.proc.returncode

    def lines(self) -> list[str]:
        """The text lines of a ``--headless`` run without ``--json`` (after :meth:`stop`)."""
        return self.out.read_text(errors="replace").splitlines()


# --------------------------------------------------------------------------- reading rows


def holders(sock: Row | None, former: bool = True) -> set[tuple[int, int]]:
    """(pid, fd) a socket of a row names, its former holders too."""
    if not sock:
        return set()
    out = {(h["pid"], h["fd"]) for h in sock.get("holders", [])}
    if former:
        out |= {(h["pid"], h["fd"]) for h in sock.get("former_holders", [])}
    return out


def names(sock: Row | None) -> list[tuple[int, str]]:
    if not sock:
        return []
    return [(h["pid"], h["process"]) for h in sock.get("holders", []) + sock.get("former_holders", [])]


def said(r: Row) -> str:
    """Everything a row states in words: explanation, sender's, notes."""
    return " | ".join(
        [str(r.get("explain", "")), str(r.get("sender_explain", "")), *map(str, r.get("notes", []) or [])]
    )


def brief(r: Row) -> str:
    rec, snd = r.get("receiver"), r.get("sender")
    return json.dumps(
        {
            "tuple": f"{r['sport']}→{r['dport']}",
            "flags": r.get("flags"),
            "len": r.get("payload_len"),
            "match": r.get("match"),
            "receiver": rec and {"state": rec.get("state"), "holders": sorted(holders(rec))},
            "sender": snd and {"state": snd.get("state"), "holders": sorted(holders(snd))},
            "said": said(r)[:300],
            "steps": [f"{s['what']} → {s['result']}" for s in r.get("steps", [])],
        },
        ensure_ascii=False,
    )


def four(r: Row) -> tuple[str, int, str, int]:
    return (r["src"], r["sport"], r["dst"], r["dport"])
