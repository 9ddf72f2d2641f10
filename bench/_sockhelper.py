"""Helper process for bench/sockets.py: holds N loopback TCP sockets open.

    python _sockhelper.py N_SOCKETS N_LISTENERS TIMEOUT_S

Opens N_LISTENERS listeners on 127.0.0.1 and (N_SOCKETS - N_LISTENERS) / 2 connections to
them (a client socket and its accepted peer each), prints one JSON line
``{"pid":..,"sockets":..,"ports":[..]}`` and then serves commands on stdin:

* ``new``: open one more connection, print ``{"client_port","server_port","client_fd","server_fd"}``;
* ``quit`` (or EOF, or TIMEOUT_S elapsed): close everything and exit.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import struct
import sys


def main() -> int:
    n, n_listeners, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    n = min(n, 100_000)
    signal.signal(signal.SIGALRM, lambda *_: sys.exit(3))  # bounded in time; closes in finally
    signal.setitimer(signal.ITIMER_REAL, timeout)
    want = n + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        # raising the hard limit needs CAP_SYS_RESOURCE; the caller splits N over processes
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, want), hard), hard))
    listeners: list[socket.socket] = []
    held: list[socket.socket] = []
    try:
        for _ in range(n_listeners):
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.bind(("127.0.0.1", 0))
            ls.listen(4096)
            listeners.append(ls)
        pairs = max(0, (n - n_listeners) // 2)
        for i in range(pairs):
            ls = listeners[i % n_listeners]
            c = socket.create_connection(ls.getsockname())
            s, _ = ls.accept()
            held += (c, s)
        ports = [ls.getsockname()[1] for ls in listeners]
        print(
            json.dumps({"pid": os.getpid(), "sockets": len(held) + len(listeners), "ports": ports}),
            flush=True,
        )
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "new":
                ls = listeners[0]
                c = socket.create_connection(ls.getsockname())
                s, _ = ls.accept()
                held += (c, s)
                print(
                    json.dumps(
                        {
                            "client_port": c.getsockname()[1],
                            "server_port": ls.getsockname()[1],
                            "client_fd": c.fileno(),
                            "server_fd": s.fileno(),
                        }
                    ),
                    flush=True,
                )
            elif cmd == "quit":
                break
    finally:
        linger = struct.pack("ii", 1, 0)
        for s in held + listeners:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)  # RST: leave no TIME_WAIT behind
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
