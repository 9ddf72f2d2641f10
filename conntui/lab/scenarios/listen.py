"""listen: what Node's http.createServer().listen(port) (express's app.listen()) does."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

from ..checks import Check, Result, holders, kernel, received_by, sent_by, split_ep
from ..netns import LabError
from ..procs import NodeScript, Program, node_binary
from ..runner import Lab, Scenario

PORT = 8080
CLIENTS = 3
BLOCK_MS = 1500
REQUEST = "GET / HTTP/1.1\r\nHost: lab\r\n\r\n"  # keep-alive: the accepted fds stay open

NARRATIVE = f"""\
listen: what http.createServer().listen({PORT}) does (express's app.listen() calls it)

Node runs an HTTP server with a plain `http.createServer(handler).listen({PORT})`, under strace,
so the lab shows the system calls libuv makes for it:
  socket()            a new TCP socket, fd N (no address yet)
  bind(N, :{PORT})       the local address (no host given: the IPv6 wildcard [::], which
                      also takes IPv4, or 0.0.0.0 when IPv6 is off)
  listen(N, 511)      Node's default backlog: the accept queue may hold 511 connections
                      (capped by net.core.somaxconn); the kernel now answers SYNs itself
  accept4(N) = M      once per connection, a NEW fd M; the listener keeps fd N
Then Node's event loop is kept busy for {BLOCK_MS} ms, and {CLIENTS} clients connect and send their
request meanwhile. The kernel completes each handshake alone: the connection waits in the
listener's accept queue, a socket with inode 0 that no process holds (ss shows ino:0), its
request bytes already queued. When the loop is free, accept4() hands each one a new fd and
the handler answers.

Watch for:
  * the SYNs: "listener", node's fd N; its backlog (Send-Q) is 511;
  * the requests sent while Node was busy: "accept_queue", owned by the listener, no fd;
  * the responses: sent by the accepted fds M (one per connection), not by fd N;
  * the lab's syscall lines (strace) and the ss snapshot with ino:0.
"""

NODE_HTTP = r"""
const http = require('http');
const port = Number(process.argv[1]);
process.title = 'node-http';
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const srv = http.createServer((req, res) => {
  const s = req.socket;
  emit({event: 'request', pid: process.pid, fd: s._handle.fd, remote: `${s.remoteAddress}:${s.remotePort}`,
        local: `${s.localAddress}:${s.localPort}`, url: req.url});
  res.end('hello from node ' + s._handle.fd + '\n');
});
srv.on('connection', (s) => emit({event: 'accept', pid: process.pid, fd: s._handle.fd,
                                  remote: `${s.remoteAddress}:${s.remotePort}`}));
srv.on('error', (e) => { emit({event: 'error', error: e.message, code: e.code}); process.exit(1); });
srv.listen(port, () => {
  const a = srv.address();
  emit({event: 'listen', pid: process.pid, fd: srv._handle.fd, local: `${a.address}:${a.port}`,
        family: a.family});
});
let buf = '';
process.stdin.on('data', (d) => {
  buf += d;
  if (buf.includes('block')) {
    buf = '';
    emit({event: 'blocking', ms: Number(process.argv[2])});
    const end = Date.now() + Number(process.argv[2]);
    while (Date.now() < end) {}  // the event loop does nothing: no accept() runs
    emit({event: 'unblocked'});
  }
});
process.stdin.on('end', () => process.exit(0));
setTimeout(() => process.exit(0), 120000).unref();
"""

_SYSCALL = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s*(socket|bind|listen|accept4?)\((.*)\)\s+=\s+(-?\d+)")


class _StracedNode(NodeScript):
    """``strace -f -e socket,bind,listen,accept4 -o FILE node -e SOURCE``: the syscalls as
    ground truth. ``pid`` stays strace's; node reports its own in each event."""

    def __init__(self, ns: str, source: str, name: str, args: tuple[str, ...], trace: str) -> None:
        node = node_binary()
        if node is None:
            raise LabError("node is not on PATH")
        argv = ["strace", "-f", "-qq", "-e", "trace=socket,bind,listen,accept,accept4", "-o", trace]
        Program.__init__(self, ns, [*argv, node, "-e", source, "--", *args], name)


def parse_strace(text: str) -> list[dict[str, Any]]:
    """The socket/bind/listen/accept4 lines of an ``strace -f -o`` file, TCP ones only."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        m = _SYSCALL.match(line.strip())
        if not m:
            continue
        pid, call, args, ret = int(m[1]), m[2], m[3], int(m[4])
        if call == "socket" and "SOCK_STREAM" not in args:
            continue
        fd = int(args.split(",", 1)[0]) if call != "socket" and args[:1].isdigit() else None
        port = re.search(r"sin6?_port=htons\((\d+)\)", args)
        backlog = int(args.rsplit(",", 1)[1]) if call == "listen" else None
        out.append(
            {
                "pid": pid,
                "call": call,
                "fd": fd,
                "ret": ret,
                "port": int(port[1]) if port else None,
                "backlog": backlog,
                "text": f"{call}({args}) = {ret}",
            }
        )
    return out


def traffic(lab: Lab) -> None:
    if not lab.use_node:
        raise LabError("the listen scenario needs node on PATH (it shows Node's own listen())")
    traced = shutil.which("strace") is not None
    fd, trace = tempfile.mkstemp(prefix="conntui-lab-listen-", suffix=".strace")
    os.close(fd)
    try:
        args = (str(PORT), str(BLOCK_MS))
        if traced:
            server: NodeScript = _StracedNode(lab.ns("server"), NODE_HTTP, "node-http", args, trace)
            lab.programs.append(server)
        else:
            server = lab.node(NODE_HTTP, "node-http", "server", args)
        ev = server.expect("listen")
        lab.event("listen", role="server", pid=ev["pid"], fd=ev["fd"], local=ev["local"], traced=traced)
        lab.say(f"node pid {ev['pid']} listens on {ev['local']} with fd {ev['fd']}")
        ss = lab.sh("server", "ss", "-ltnH", f"sport = :{PORT}", check=False).stdout.split()
        # State Recv-Q Send-Q Local Peer: for a listener, Send-Q is the backlog
        lab.event(
            "listener_queue",
            recv_q=int(ss[1]) if len(ss) > 2 else None,
            send_q=int(ss[2]) if len(ss) > 2 else None,
        )
        lab.say(f"ss: listener Recv-Q {ss[1:2]} Send-Q (backlog) {ss[2:3]}")
        lab.pause(1.0)  # conntui's table shows the listener
        clients = [lab.actor(f"client-{i + 1}", "client") for i in range(CLIENTS)]
        server.send_line({"op": "block"})
        server.expect("blocking")
        conns = []
        for i, c in enumerate(clients):
            con = c("connect", host=lab.server_addr, port=PORT)
            c("send", fd=con["fd"], data=REQUEST)
            conns.append(con)
            lab.event("connect", role=f"client-{i + 1}", pid=c.pid, fd=con["fd"], local=con["local"])
        lab.pause(0.3)
        snap = lab.sh(
            "server", "ss", "-tnieH", "state", "established", f"sport = :{PORT}", check=False
        ).stdout
        inodes = [int(m) for m in re.findall(r"\bino:(\d+)", snap)]
        lab.event("queued", inodes=inodes, ss=snap.strip().splitlines())
        lab.say(f"while node is busy: {len(inodes)} connections established, inodes {inodes}")
        server.expect("unblocked", timeout=BLOCK_MS / 1000 + 5)
        for _ in range(CLIENTS):
            acc = server.expect("accept")
            lab.event("accept", role="server", pid=acc["pid"], fd=acc["fd"], remote=acc["remote"])
            lab.say(f"accept4() gave fd {acc['fd']} to {acc['remote']}")
        for i, c in enumerate(clients):
            got = c("recv", fd=conns[i]["fd"], any=True, timeout=3)
            lab.event("response", role=f"client-{i + 1}", data=got.get("data", ""))
        lab.pause(0.5)
        if traced:
            server.stop()
            with open(trace, encoding="utf-8", errors="replace") as f:
                calls = parse_strace(f.read())
            lab.event("syscalls", calls=calls)
            for call in calls:
                lab.say(f"strace: {call['text']}")
    finally:
        os.unlink(trace)


def expect(res: Result) -> list[Check]:
    checks: list[Check] = []
    lst = res.one("listen", role="server")
    pid, lfd = lst["pid"], lst["fd"]
    accepts = res.truth("accept", role="server")
    calls = res.truth("syscalls")
    if lst.get("traced"):
        seq = [c for c in (calls[0]["calls"] if calls else []) if c["pid"] == pid]
        made = next((c for c in seq if c["call"] == "socket" and c["ret"] == lfd), None)
        bound = next((c for c in seq if c["call"] == "bind" and c["fd"] == lfd), None)
        listened = next((c for c in seq if c["call"] == "listen" and c["fd"] == lfd), None)
        checks.append(
            kernel(
                f"strace: socket() = {lfd}, bind({lfd}, :{PORT}), listen({lfd}, 511)",
                made is not None
                and bound is not None
                and bound["port"] == PORT
                and listened is not None
                and listened["backlog"] == 511,
                "; ".join(c["text"] for c in seq[:4]) or "no syscalls traced",
            )
        )
        handed = sorted(
            c["ret"] for c in seq if c["call"].startswith("accept") and c["fd"] == lfd and c["ret"] >= 0
        )
        checks.append(
            kernel(
                f"strace: accept4({lfd}) handed out the fds Node's connections have",
                handed == sorted(a["fd"] for a in accepts) and lfd not in handed,
                f"accept4 returned {handed}; Node saw {sorted(a['fd'] for a in accepts)}",
            )
        )
    queue = res.one("listener_queue")
    checks.append(
        kernel(
            "the listener's backlog (ss Send-Q) is 511", queue["send_q"] == 511, f"Send-Q {queue['send_q']}"
        )
    )
    queued = res.one("queued")
    checks.append(
        kernel(
            f"while Node was busy, {CLIENTS} connections waited with inode 0",
            len(queued["inodes"]) == CLIENTS and not any(queued["inodes"]),
            f"inodes {queued['inodes']}",
        )
    )
    srv_addr = ""
    for i in range(CLIENTS):
        role = f"client-{i + 1}"
        con = res.one("connect", role=role)
        c_addr, c_port = split_ep(con["local"])
        acc = next((a for a in accepts if split_ep(a["remote"])[1] == c_port), None)
        syn = res.segments(src=c_addr, sport=c_port, dport=PORT, flags="S")
        srv_addr = syn[0]["dst"] if syn else srv_addr
        checks.append(
            received_by(f"{role}: SYN → node's listener fd {lfd}", syn, pid, lfd, ["listener"], what="SYN")
        )
        checks.append(
            Check(
                f"{role}: the listener's backlog shown as 511",
                bool(syn) and all((r.get("receiver") or {}).get("tx_queue") == 511 for r in syn),
                f"tx_queue {[(r.get('receiver') or {}).get('tx_queue') for r in syn]}",
            )
        )
        req = res.segments(src=c_addr, sport=c_port, dport=PORT, data=True)
        named = [r for r in req if r["match"] == "accept_queue" and (pid, lfd) in holders(r.get("listener"))]
        checks.append(
            Check(
                f"{role}: the request sent while Node was busy waits in the accept queue of fd {lfd}",
                bool(req) and len(named) == len(req),
                req[0]["explain"] if req else "no request segment",
            )
        )
        if acc is None:
            checks.append(kernel(f"{role}: Node accepted it", False, "no accept event"))
            continue
        resp = res.segments(sport=PORT, dst=c_addr, dport=c_port, data=True)
        checks.append(
            sent_by(
                f"{role}: the response is sent by the accepted fd {acc['fd']}",
                resp,
                pid,
                acc["fd"],
                what="response",
            )
        )
    return checks


SCENARIO = Scenario(
    name="listen",
    summary="Node's http.createServer().listen(): socket, bind, listen(511), the accept queue, accept4()",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
    two_hosts=True,
    uses_node=True,
)
