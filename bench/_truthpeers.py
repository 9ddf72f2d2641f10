"""Python roles for bench/truth.py; each logs its own pid, fd, port and name as ground truth.

Run with the system ``python3`` (stdlib only), so that the process is named ``python3``:

    python3 _truthpeers.py http PORT LOG DIR TIMEOUT          python3 -m http.server, logging each accept
    python3 _truthpeers.py udpserver PORT LOG TIMEOUT          a DNS-like responder (one bound socket)
    python3 _truthpeers.py udpclient PORT RATE SECONDS LOG     connected UDP: one query, one answer, close

Every role appends JSON lines to LOG (one per accepted connection / datagram / exchange, and
a ``ready`` line first), and each line carries the name the process had at that moment
(``/proc/self/comm``). All traffic is on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import struct
import sys
import time

MAX_SECONDS = 600.0


def _bound(timeout: float) -> None:
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.setitimer(signal.ITIMER_REAL, min(timeout, MAX_SECONDS + 60))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


def _comm() -> str:
    with open("/proc/self/comm") as f:
        return f.read().strip()


class _Log:
    """Appends one JSON line per call with a single write (never interleaved, never lost on exit)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __call__(self, **rec: object) -> None:
        os.write(self.fd, (json.dumps(rec) + "\n").encode())


def http(port: int, log_path: str, directory: str, timeout: float) -> None:
    """``python3 -m http.server PORT --bind 127.0.0.1`` itself, with ``get_request`` wrapped to
    log (pid, accepted fd, client port) for each connection."""
    import socketserver

    _bound(timeout)
    log = _Log(log_path)
    pid, comm = os.getpid(), _comm()
    orig = socketserver.TCPServer.get_request
    ready = socketserver.TCPServer.server_activate

    def get_request(self: socketserver.TCPServer) -> tuple[socket.socket, tuple[str, int]]:
        conn, addr = orig(self)
        log(proto="tcp", pid=pid, fd=conn.fileno(), client_port=addr[1], t=time.time(), comm=comm)
        return conn, addr

    def server_activate(self: socketserver.TCPServer) -> None:
        ready(self)
        log(ready=True, pid=pid, listen_fd=self.socket.fileno(), comm=comm)

    socketserver.TCPServer.get_request = get_request  # type: ignore[method-assign]
    socketserver.TCPServer.server_activate = server_activate  # type: ignore[method-assign,assignment]
    os.chdir(directory)
    sys.argv = ["http.server", str(port), "--bind", "127.0.0.1"]
    runpy.run_module("http.server", run_name="__main__", alter_sys=True)


def dns_query(qid: int) -> bytes:
    """A DNS query for ``bench.test A`` (RFC 1035 wire format)."""
    name = b"".join(bytes([len(p)]) + p for p in (b"bench", b"test")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)


def dns_answer(query: bytes) -> bytes:
    """The answer to ``query``: 127.0.0.1, TTL 1."""
    qid = struct.unpack_from("!H", query)[0]
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + socket.inet_aton("127.0.0.1")
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + query[12:] + rr


def udpserver(port: int, log_path: str, timeout: float) -> None:
    """One bound (unconnected) UDP socket answering every query; logs each query's peer."""
    _bound(timeout)
    log = _Log(log_path)
    pid, comm = os.getpid(), _comm()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("127.0.0.1", port))
    fd = s.fileno()
    log(ready=True, pid=pid, fd=fd, comm=comm)
    deadline = time.monotonic() + min(timeout, MAX_SECONDS)
    s.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            q, peer = s.recvfrom(2048)
        except TimeoutError:
            continue
        if len(q) < 12:
            continue
        s.sendto(dns_answer(q), peer)
        log(proto="udp", pid=pid, fd=fd, client_port=peer[1], t=time.time(), comm=comm)


def udpclient(port: int, rate: float, seconds: float, log_path: str) -> None:
    """``rate`` exchanges/s for ``seconds``: a new connected socket each time, one query, one
    answer, closed at once (as a stub resolver does)."""
    seconds = min(seconds, MAX_SECONDS)
    _bound(seconds + 30)
    log = _Log(log_path)
    pid, comm = os.getpid(), _comm()
    n = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() - t0 > seconds + 5:
            break
        start = time.time()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(1.0)
            s.connect(("127.0.0.1", port))
            fd, cport = s.fileno(), s.getsockname()[1]
            s.send(dns_query(i & 0xFFFF))
            ok = len(s.recv(2048)) > 12
        except OSError as exc:
            log(proto="udp", error=str(exc), t=start)
            continue
        finally:
            s.close()
        log(proto="udp", pid=pid, fd=fd, client_port=cport, t=start, end=time.time(), ok=ok, comm=comm)


if __name__ == "__main__":
    role, a = sys.argv[1], sys.argv[2:]
    if role == "http":
        http(int(a[0]), a[1], a[2], float(a[3]))
    elif role == "udpserver":
        udpserver(int(a[0]), a[1], float(a[2]))
    elif role == "udpclient":
        udpclient(int(a[0]), float(a[1]), float(a[2]), a[3])
    else:
        sys.exit(f"unknown role {role}")
