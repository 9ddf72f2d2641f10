"""same-port: HTTP and a raw protocol on one port: one peeking listener vs SO_REUSEPORT."""

from __future__ import annotations

import sys
from typing import Any

from ..checks import Check, Result, holders, kernel, received_by, split_ep
from ..netns import LabError
from ..procs import Program
from ..runner import Lab, Scenario

MUX_PORT = 7000
SHARED_PORT = 7001
MAX_TRIES = 32  # HTTP connections to the shared port until one lands on each server
HTTP_REQ = "GET / HTTP/1.1\r\nHost: lab\r\n\r\n"
RAW_REQ = "HELLO raw-protocol\n"

NARRATIVE = f"""\
same-port: HTTP and a raw TCP protocol on the same port

The kernel picks a listener by address and port only: it never looks at what the client
is going to say. Two ways to serve two protocols on one port, side by side:

1. port {MUX_PORT}: ONE process listens. For each accepted connection it peeks at the first
   bytes (recv with MSG_PEEK) and serves HTTP if they look like a request line ("GET ",
   "POST "...), else the raw protocol. Every connection reaches the same listener; the
   choice is the program's, made after accept().
2. port {SHARED_PORT}: TWO processes, an HTTP server and a raw server, both bind with SO_REUSEPORT.
   The kernel hashes each connection's 4-tuple to pick one member of the group, so HTTP
   requests land on the raw server too (which can only reject them): the split is by
   hash, not by protocol.

Watch for:
  * port {MUX_PORT}: every SYN to the same listener fd; HTTP and raw data to the accepted fds of
    the one "muxd" process;
  * port {SHARED_PORT}: SYNs shown as "one of 2 SO_REUSEPORT listeners" (conntui cannot know the
    hash); the data, though, goes to the exact accepted fd, in "httpd" or in "rawd";
  * HTTP requests to {SHARED_PORT} that the raw server received (its events say so).
"""

SERVER = r"""
import ctypes, json, os, select, socket, sys, time
mode, port = sys.argv[1], int(sys.argv[2])
try:  # comm, the process name conntui shows: muxd, httpd, rawd
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(sys.argv[3].encode()), 0, 0, 0)
except (OSError, AttributeError):
    pass
def out(**kw):
    print(json.dumps(kw), flush=True)
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if mode != "mux":
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
lst.bind(("0.0.0.0", port))
lst.listen(64)
out(event="listen", pid=os.getpid(), fd=lst.fileno(), local="0.0.0.0:%d" % port, mode=mode)
conns = {}
end = time.monotonic() + 60
while time.monotonic() < end:
    r, _, _ = select.select([lst, sys.stdin, *conns], [], [], 0.5)
    if sys.stdin in r and not sys.stdin.readline():
        break
    for s in r:
        if s is lst:
            c, peer = lst.accept()
            conns[c] = "%s:%d" % peer
            out(event="accept", pid=os.getpid(), fd=c.fileno(), remote=conns[c], mode=mode)
        elif s in conns:
            head = s.recv(64, socket.MSG_PEEK)
            if not head:
                conns.pop(s).close()
                continue
            is_http = head.split(b" ", 1)[0] in (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE")
            data = s.recv(4096)
            kind = "http" if is_http else "raw"
            out(event="request", pid=os.getpid(), fd=s.fileno(), remote=conns[s], kind=kind, mode=mode)
            if mode == "raw" and is_http:
                s.sendall(b"ERR not a raw-protocol message\n")
            elif mode == "http" and not is_http:
                s.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            elif is_http:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
            else:
                s.sendall(b"OK raw\n")
"""


class _Server(Program):
    def __init__(self, lab: Lab, mode: str, port: int, name: str) -> None:
        super().__init__(lab.ns("server"), [sys.executable, "-c", SERVER, mode, str(port), name], name)
        lab.programs.append(self)

    def wait(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            obj = self.next(timeout)
            if obj.get("event") == event:
                return obj


def _request(lab: Lab, client: Any, port: int, kind: str) -> dict[str, Any]:
    con = client("connect", host=lab.server_addr, port=port)
    client("send", fd=con["fd"], data=HTTP_REQ if kind == "http" else RAW_REQ)
    got = client("recv", fd=con["fd"], any=True, timeout=3)
    return lab.event(
        "sent", port=port, kind=kind, pid=client.pid, fd=con["fd"], local=con["local"], answer=got.get("data")
    )


def traffic(lab: Lab) -> None:
    mux = _Server(lab, "mux", MUX_PORT, "muxd")
    httpd = _Server(lab, "http", SHARED_PORT, "httpd")
    rawd = _Server(lab, "raw", SHARED_PORT, "rawd")
    servers = {"mux": mux, "http": httpd, "raw": rawd}
    for mode, srv in servers.items():
        ev = srv.wait("listen")
        lab.event("listen", mode=mode, pid=ev["pid"], fd=ev["fd"], local=ev["local"])
        lab.say(f"{srv.name} pid {ev['pid']} listens on {ev['local']} (fd {ev['fd']})")
    client = lab.actor("client", "client")
    lab.pause(1.0)  # conntui's table has the listeners

    def served(srv: _Server) -> None:
        acc = srv.wait("accept")
        lab.event("accept", **{k: acc[k] for k in ("pid", "fd", "remote", "mode")})
        req = srv.wait("request")
        lab.event("request", **{k: req[k] for k in ("pid", "fd", "remote", "mode", "kind")})
        lab.say(f"{srv.name} fd {req['fd']} got a {req['kind']} request from {req['remote']}")

    for kind in ("http", "raw", "http", "raw"):
        _request(lab, client, MUX_PORT, kind)
        served(mux)
    landed: set[str] = set()
    for _ in range(MAX_TRIES):
        sent = _request(lab, client, SHARED_PORT, "http")
        who = "raw" if str(sent["answer"]).startswith("ERR") else "http"
        served(servers[who])
        landed.add(who)
        if landed == {"http", "raw"}:
            break
    if landed != {"http", "raw"}:
        raise LabError(f"{MAX_TRIES} HTTP connections all went to one server: {landed}")
    sent = _request(lab, client, SHARED_PORT, "raw")
    served(servers["http" if str(sent["answer"]).startswith("HTTP") else "raw"])
    lab.pause(0.5)


def expect(res: Result) -> list[Check]:
    checks: list[Check] = []
    listens = {e["mode"]: e for e in res.truth("listen")}
    accepts = {e["remote"]: e for e in res.truth("accept")}
    requests = {e["remote"]: e for e in res.truth("request")}
    for sent in res.truth("sent"):
        port, kind = sent["port"], sent["kind"]
        acc, req = accepts.get(sent["local"]), requests.get(sent["local"])
        label = f"{kind} to {port} from {sent['local']}"
        if acc is None or req is None:
            checks.append(kernel(f"{label}: a server accepted it", False, "no accept/request event"))
            continue
        c_addr, c_port = split_ep(sent["local"])
        up: dict[str, Any] = dict(src=c_addr, sport=c_port, dport=port)
        lst = listens[acc["mode"]]
        syn = res.segments(**up, flags="S")
        if port == MUX_PORT:
            checks.append(
                received_by(f"{label}: SYN → muxd's listener", syn, lst["pid"], lst["fd"], ["listener"])
            )
        else:
            named = [
                r
                for r in syn
                if r["match"] == "listener"
                and any(
                    (lst["pid"], lst["fd"]) in holders(s)
                    for s in (r.get("receiver"), *r.get("candidates", []))
                )
            ]
            checks.append(
                Check(
                    f"{label}: SYN → the SO_REUSEPORT group that holds {acc['mode']}d's listener",
                    bool(syn) and len(named) == len(syn),
                    syn[0]["explain"] if syn else "no SYN",
                )
            )
        checks.append(
            received_by(
                f"{label}: data → {acc['mode']}d's fd {acc['fd']}",
                res.segments(**up, data=True),
                acc["pid"],
                acc["fd"],
                ["established"],
                what="data segment",
            )
        )
        if port == MUX_PORT:
            checks.append(
                kernel(f"{label}: muxd served it as {kind}", req["kind"] == kind, f"muxd saw {req['kind']}")
            )
    misrouted = [
        e
        for e in res.truth("request")
        if e["kind"] == "http" and e["mode"] == "raw" and e["remote"] in accepts
    ]
    checks.append(
        kernel(
            f"an HTTP request to {SHARED_PORT} landed on the raw server (hash, not protocol)",
            bool(misrouted),
            f"{len(misrouted)} HTTP request(s) received by rawd",
        )
    )
    return checks


SCENARIO = Scenario(
    name="same-port",
    summary="HTTP and raw TCP on one port: one peeking listener vs two SO_REUSEPORT servers split by hash",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
    two_hosts=True,
)
