"""A socket-holding program the lab runs inside its namespaces (``python -m conntui.lab.actor``).

It reads one JSON command per line on stdin and answers one JSON line on stdout, so the lab
drives real sockets in a real, separate process step by step and learns the exact pid and
fd numbers: the ground truth conntui's attribution is compared with. Sockets are named by
their fd. Every wait is bounded by a timeout; the program exits when stdin closes.

Stdlib only, and it imports nothing from conntui, so it starts fast.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP_TRANSPARENT = 19  # linux/in.h: take packets for non-local addresses (TPROXY)
IP_RECVORIGDSTADDR = 20  # linux/in.h: each datagram's original destination, as ancillary data
PR_SET_NAME = 15
LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, no FIN

socks: dict[int, socket.socket] = {}

Reply = dict[str, Any]


def set_process_name(name: str) -> None:
    """Set comm (what conntui shows as the holder's process name); best effort."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def ep(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe(s: socket.socket) -> Reply:
    out: Reply = {"fd": s.fileno(), "local": ep(s.getsockname())}
    try:
        out["remote"] = ep(s.getpeername())
    except OSError:
        out["remote"] = None
    return out


def keep(s: socket.socket) -> Reply:
    socks[s.fileno()] = s
    return describe(s)


def os_error(exc: OSError) -> Reply:
    num = exc.errno or 0
    return {"error": exc.strerror or str(exc), "errno": num, "errname": errno.errorcode.get(num, "")}


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def original_dst(s: socket.socket) -> str | None:
    """Where the client really dialled, before a NAT REDIRECT (SO_ORIGINAL_DST)."""
    try:
        raw = s.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    return f"{socket.inet_ntoa(raw[4:8])}:{port}"


def op_listen(cmd: dict[str, Any]) -> Reply:
    s = socket.socket(family_of(cmd["host"]), socket.SOCK_STREAM)
    try:
        if cmd.get("reuseaddr", True):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if cmd.get("reuseport"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if cmd.get("transparent"):
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        s.bind((cmd["host"], cmd["port"]))
        s.listen(cmd.get("backlog", 16))
    except OSError as exc:
        s.close()
        return os_error(exc)
    return keep(s)


def op_connect(cmd: dict[str, Any]) -> Reply:
    s = socket.socket(family_of(cmd["host"]), socket.SOCK_STREAM)
    try:
        if cmd.get("bind"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(tuple(cmd["bind"]))
        if not cmd.get("wait", True):
            # Start the handshake and answer at once: the SYN may sit in a full queue.
            s.setblocking(False)
            err = s.connect_ex((cmd["host"], cmd["port"]))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
            out = keep(s)
            out["pending"] = err != 0
            return out
        s.settimeout(cmd.get("timeout", 5))
        s.connect((cmd["host"], cmd["port"]))
        s.settimeout(None)
    except OSError as exc:
        s.close()
        return os_error(exc)
    return keep(s)


def op_wait_connected(cmd: dict[str, Any]) -> Reply:
    s = socks[cmd["fd"]]
    _, w, _ = select.select([], [s], [], cmd.get("timeout", 5))
    if not w:
        return {"connected": False, "error": "timed out"}
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return {"connected": False, "error": os.strerror(err), "errno": err}
    s.setblocking(True)
    return {"connected": True, **describe(s)}


def accepted(conn: socket.socket, cmd: dict[str, Any]) -> Reply:
    conn.settimeout(None)
    out = keep(conn)
    if cmd.get("original_dst"):
        out["original_dst"] = original_dst(conn)
    return out


def op_accept(cmd: dict[str, Any]) -> Reply:
    lst = socks[cmd["fd"]]
    lst.settimeout(cmd.get("timeout", 5))
    try:
        conn, _ = lst.accept()
    except (TimeoutError, OSError) as exc:
        return {"error": f"accept: {exc}"}
    return accepted(conn, cmd)


def op_accept_all(cmd: dict[str, Any]) -> Reply:
    """Accept until nothing arrives for ``idle`` seconds (at most ``max`` connections)."""
    lst = socks[cmd["fd"]]
    got: list[Reply] = []
    deadline = time.monotonic() + cmd.get("timeout", 5)
    while len(got) < cmd.get("max", 64) and time.monotonic() < deadline:
        r, _, _ = select.select(
            [lst], [], [], min(cmd.get("idle", 0.5), max(0.0, deadline - time.monotonic()))
        )
        if not r:
            break
        conn, _ = lst.accept()
        got.append(accepted(conn, cmd))
    return {"accepted": got}


def op_send(cmd: dict[str, Any]) -> Reply:
    try:
        socks[cmd["fd"]].sendall(cmd["data"].encode())
    except OSError as exc:
        return os_error(exc)
    return {"ok": True}


def op_recv(cmd: dict[str, Any]) -> Reply:
    s = socks[cmd["fd"]]
    want = cmd.get("n", 65536)
    got = b""
    deadline = time.monotonic() + cmd.get("timeout", 5)
    try:
        while len(got) < want and time.monotonic() < deadline:
            r, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            chunk = s.recv(want - len(got))
            if not chunk:
                return {"data": got.decode(errors="replace"), "eof": True}
            got += chunk
            if cmd.get("any"):
                break
    except OSError as exc:
        return {**os_error(exc), "data": got.decode(errors="replace")}
    return {"data": got.decode(errors="replace")}


def op_close(cmd: dict[str, Any]) -> Reply:
    s = socks.pop(cmd["fd"])
    if cmd.get("rst"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    s.close()
    return {"ok": True}


def op_shutdown(cmd: dict[str, Any]) -> Reply:
    socks[cmd["fd"]].shutdown(socket.SHUT_WR)
    return {"ok": True}


def op_udp(cmd: dict[str, Any]) -> Reply:
    s = socket.socket(family_of(cmd["host"]), socket.SOCK_DGRAM)
    try:
        if cmd.get("reuseaddr"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if cmd.get("reuseport"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if cmd.get("transparent"):
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            s.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        s.bind((cmd["host"], cmd.get("port", 0)))
        if cmd.get("connect"):
            s.connect(tuple(cmd["connect"]))
    except OSError as exc:
        s.close()
        return os_error(exc)
    return keep(s)


def op_sendto(cmd: dict[str, Any]) -> Reply:
    s = socks[cmd["fd"]]
    data = cmd["data"].encode()
    try:
        if cmd.get("to"):
            s.sendto(data, tuple(cmd["to"]))
        else:
            s.send(data)
    except OSError as exc:
        return os_error(exc)
    return {"ok": True}


def op_recv_all(cmd: dict[str, Any]) -> Reply:
    """Every datagram waiting on a UDP socket, until ``idle`` seconds pass with none."""
    s = socks[cmd["fd"]]
    got: list[Reply] = []
    deadline = time.monotonic() + cmd.get("timeout", 3)
    while len(got) < cmd.get("max", 256) and time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], min(cmd.get("idle", 0.3), max(0.0, deadline - time.monotonic())))
        if not r:
            break
        try:
            data, anc, _, peer = s.recvmsg(65535, 64)
        except OSError as exc:  # a connected UDP socket reports ICMP errors here
            got.append(os_error(exc))
            continue
        item: Reply = {"data": data.decode(errors="replace"), "peer": ep(peer)}
        for level, kind, raw in anc:
            if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR and len(raw) >= 8:
                # a struct sockaddr_in: the destination before TPROXY steered it here
                item["orig"] = f"{socket.inet_ntoa(raw[4:8])}:{struct.unpack_from('!H', raw, 2)[0]}"
        got.append(item)
    return {"received": got}


OPS = {
    "listen": op_listen,
    "connect": op_connect,
    "wait_connected": op_wait_connected,
    "accept": op_accept,
    "accept_all": op_accept_all,
    "send": op_send,
    "recv": op_recv,
    "close": op_close,
    "shutdown": op_shutdown,
    "udp": op_udp,
    "sendto": op_sendto,
    "recv_all": op_recv_all,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", default="lab-actor", help="process name (comm) to show in conntui")
    ap.add_argument("--max-life", type=float, default=300.0, help="exit after this many seconds regardless")
    args = ap.parse_args()
    set_process_name(args.name)
    # A hard bound on the program's life even if the lab vanishes without closing stdin:
    # SIGALRM's default action ends the process.
    signal.alarm(max(1, int(args.max_life)))
    print(json.dumps({"pid": os.getpid(), "name": args.name}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "exit":
            print(json.dumps({"bye": True}), flush=True)
            break
        handler = OPS.get(cmd.get("op", ""))
        try:
            reply = handler(cmd) if handler else {"error": f"unknown op {cmd.get('op')}"}
        except Exception as exc:  # reported to the lab, which stops the scenario with it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
