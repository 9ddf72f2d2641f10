"""A scriptable socket-holding process for end-to-end tests.

Run as ``python actor.py``; it reads one JSON command per line on stdin and answers one JSON
line on stdout, so a test can open real sockets in a real, separate process step by step and
know its pid and the exact fd numbers. Sockets are named by their fd.

Commands: listen, connect, connect_nb, accept, send, recv, close, udp, sendto, recvfrom, fork_hold,
exit.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time

socks: dict[int, socket.socket] = {}
children: list[int] = []


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def keep(s: socket.socket) -> dict[str, object]:
    socks[s.fileno()] = s
    out: dict[str, object] = {"fd": s.fileno(), "local": list(s.getsockname()[:2])}
    try:
        out["remote"] = list(s.getpeername()[:2])
    except OSError:
        out["remote"] = None
    return out


def handle(cmd: dict) -> dict[str, object]:
    op = cmd["op"]
    if op == "listen":
        s = socket.socket(family_of(cmd["host"]), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if cmd.get("reuseport"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if "v6only" in cmd:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(cmd["v6only"]))
        if cmd.get("device"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, cmd["device"].encode())
        s.bind((cmd["host"], cmd["port"]))
        s.listen(cmd.get("backlog", 16))
        return keep(s)
    if op == "connect":
        s = socket.socket(family_of(cmd["host"]), socket.SOCK_STREAM)
        if cmd.get("bind"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(tuple(cmd["bind"]))
        s.settimeout(cmd.get("timeout", 5))
        try:
            s.connect((cmd["host"], cmd["port"]))
        except OSError as exc:
            s.close()
            return {"error": exc.strerror or str(exc), "errno": exc.errno}
        s.settimeout(None)
        return keep(s)
    if op == "connect_nb":
        # A non-blocking connect: returns at once with the fd (the handshake goes on without
        # us) and the errno connect_ex gave (EINPROGRESS normally).
        s = socket.socket(family_of(cmd["host"]), socket.SOCK_STREAM)
        if cmd.get("bind"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(tuple(cmd["bind"]))
        s.setblocking(False)
        err = s.connect_ex((cmd["host"], cmd["port"]))
        return {**keep(s), "errno": err}
    if op == "accept":
        lst = socks[cmd["fd"]]
        lst.settimeout(cmd.get("timeout", 5))
        conn, _ = lst.accept()
        conn.settimeout(None)
        return keep(conn)
    if op == "send":
        socks[cmd["fd"]].sendall(cmd["data"].encode())
        return {"ok": True}
    if op == "recv":
        s = socks[cmd["fd"]]
        want = cmd["n"]
        got = b""
        deadline = time.monotonic() + cmd.get("timeout", 5)
        while len(got) < want and time.monotonic() < deadline:
            r, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            chunk = s.recv(want - len(got))
            if not chunk:
                break
            got += chunk
        return {"data": got.decode(errors="replace")}
    if op == "close":
        s = socks.pop(cmd["fd"])
        if cmd.get("rst"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        return {"ok": True}
    if op == "udp":
        s = socket.socket(family_of(cmd["host"]), socket.SOCK_DGRAM)
        if cmd.get("reuseport"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((cmd["host"], cmd.get("port", 0)))
        if cmd.get("connect"):
            s.connect(tuple(cmd["connect"]))
        return keep(s)
    if op == "sendto":
        s = socks[cmd["fd"]]
        if cmd.get("to"):
            s.sendto(cmd["data"].encode(), tuple(cmd["to"]))
        else:
            s.send(cmd["data"].encode())
        return {"ok": True}
    if op == "recvfrom":
        s = socks[cmd["fd"]]
        r, _, _ = select.select([s], [], [], cmd.get("timeout", 5))
        if not r:
            return {"data": None}
        data, peer = s.recvfrom(65535)
        return {"data": data.decode(errors="replace"), "peer": list(peer[:2])}
    if op == "fork_hold":
        # A child that inherits every socket and just waits: each socket gets two holders.
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
            time.sleep(cmd.get("seconds", 30))
            os._exit(0)
        children.append(pid)
        return {"child": pid}
    if op == "exit":
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except OSError:
                pass
        return {"bye": True}
    return {"error": f"unknown op {op}"}


def main() -> None:
    print(json.dumps({"pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            reply = handle(cmd)
        except Exception as exc:  # report to the test, which fails with the message
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
        if cmd["op"] == "exit":
            break


if __name__ == "__main__":
    main()
