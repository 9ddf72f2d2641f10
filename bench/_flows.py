"""Roles for bench/shortlived.py, each a separate process that knows its own pids and fds.

    python _flows.py server PORT TIMEOUT          TCP on PORT, UDP on PORT+1
    python _flows.py client PORT RATE SECONDS SEED
    python _flows.py poll PORT SECONDS INTERVAL   psutil.net_connections every INTERVAL s

Every role prints ``ready`` (or starts at once), then JSON lines with its ground truth (or
observations) when it ends. All traffic goes to 127.0.0.1; every loop is bounded in count
and time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import threading
import time

PAYLOAD = b"q" * 1024
MAX_SECONDS = 600.0


def _bound(timeout: float) -> None:
    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
    signal.setitimer(signal.ITIMER_REAL, min(timeout, MAX_SECONDS + 60))


def server(port: int, timeout: float) -> None:
    """Accept TCP connections and receive UDP datagrams; record (client port → pid, fd)."""
    _bound(timeout)
    pid = os.getpid()
    records: list[dict[str, object]] = []
    lock = threading.Lock()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1024)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    us.bind(("127.0.0.1", port + 1))
    stop = threading.Event()

    def handle(conn: socket.socket, peer: tuple[str, int]) -> None:
        with lock:
            records.append(
                {
                    "proto": "tcp",
                    "client_port": peer[1],
                    "server_pid": pid,
                    "server_fd": conn.fileno(),
                    "t": time.time(),
                }
            )
        conn.settimeout(5)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        conn.close()

    def accept_loop() -> None:
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, peer = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            threading.Thread(target=handle, args=(conn, peer), daemon=True).start()

    def udp_loop() -> None:
        us.settimeout(0.2)
        fd = us.fileno()
        while not stop.is_set():
            try:
                _, peer = us.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            with lock:
                records.append(
                    {
                        "proto": "udp",
                        "client_port": peer[1],
                        "server_pid": pid,
                        "server_fd": fd,
                        "t": time.time(),
                    }
                )

    threads = [threading.Thread(target=f, daemon=True) for f in (accept_loop, udp_loop)]
    for t in threads:
        t.start()
    print(json.dumps({"ready": True, "pid": pid, "tcp_fd": ls.fileno(), "udp_fd": us.fileno()}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    stop.set()
    for t in threads:
        t.join(2)
    time.sleep(0.2)
    with lock:
        for r in records:
            print(json.dumps(r))
    sys.stdout.flush()
    os._exit(0)


def client(port: int, rate: float, seconds: float, seed: int) -> None:
    """Open flows at ``rate``/s for ``seconds``: TCP and UDP alternately; half close at once
    (within a millisecond), half hold the socket 20-50 ms. Each flow sends 1 KB."""
    seconds = min(seconds, MAX_SECONDS)
    _bound(seconds + 30)
    rng = random.Random(seed)
    pid = os.getpid()
    records: list[dict[str, object]] = []
    lock = threading.Lock()

    def flow(proto: str, hold: float) -> None:
        t0 = time.perf_counter()
        try:
            if proto == "tcp":
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(PAYLOAD)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.connect(("127.0.0.1", port + 1))
                s.send(PAYLOAD)
            cport, fd, sent_at = s.getsockname()[1], s.fileno(), time.time()
            if hold:
                time.sleep(hold)
            s.close()
        except OSError as exc:
            with lock:
                records.append({"proto": proto, "error": str(exc)})
            return
        life = time.perf_counter() - t0
        with lock:
            records.append(
                {
                    "proto": proto,
                    "client_port": cport,
                    "client_pid": pid,
                    "client_fd": fd,
                    "t": sent_at,
                    "life": life,
                    "hold": hold > 0,
                }
            )

    n = int(rate * seconds)
    t0 = time.monotonic()
    threads = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() - t0 > seconds + 5:
            break
        proto = "tcp" if i % 2 == 0 else "udp"
        hold = rng.uniform(0.020, 0.050) if (i // 2) % 2 == 1 else 0.0
        t = threading.Thread(target=flow, args=(proto, hold), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(6)
    for r in records:
        print(json.dumps(r))
    sys.stdout.flush()


def poll(port: int, seconds: float, interval: float) -> None:
    """What a psutil-polling tool sees: (proto, client port, side) → {(pid, fd)}."""
    import psutil

    seconds = min(seconds, MAX_SECONDS)
    _bound(seconds + 30)
    seen: dict[tuple[str, int, str], set[tuple[int, int]]] = {}
    udp_server: set[tuple[int, int]] = set()
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    polls = 0
    while time.monotonic() < deadline:
        t = time.monotonic()
        for c in psutil.net_connections("inet4"):
            if not c.laddr or c.pid is None:
                continue
            proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
            lport = c.laddr.port
            rport = c.raddr.port if c.raddr else 0
            sp = port if proto == "tcp" else port + 1
            if lport == sp and rport:
                seen.setdefault((proto, rport, "server"), set()).add((c.pid, c.fd))
            elif lport == sp and proto == "udp":
                udp_server.add((c.pid, c.fd))
            elif rport == sp:
                seen.setdefault((proto, lport, "client"), set()).add((c.pid, c.fd))
        polls += 1
        time.sleep(max(0.0, interval - (time.monotonic() - t)))
    out = [{"proto": k[0], "client_port": k[1], "side": k[2], "holders": sorted(v)} for k, v in seen.items()]
    print(json.dumps({"polls": polls, "udp_server": sorted(udp_server), "seen": out}))
    sys.stdout.flush()


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "server":
        server(int(sys.argv[2]), float(sys.argv[3]))
    elif role == "client":
        client(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    elif role == "poll":
        poll(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(f"unknown role {role}")
