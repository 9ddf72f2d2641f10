"""listen-vs-connect: a server's listening socket vs the two ends of one connection."""

from __future__ import annotations

from typing import Any

from ..checks import Check, Result, kernel, received_by, sent_by, split_ep
from ..runner import Lab, Scenario

PORT = 8080

NARRATIVE = f"""\
listen-vs-connect: createServer()/listen() vs createConnection()/connect()

A server process calls listen() on port {PORT}: that socket has a local address and no
remote end. It never carries data; it only receives connection requests (SYNs). A client
process calls connect(): its socket gets a local port picked by the kernel and a remote
end, the server. When the handshake completes the kernel creates a third socket, the
server's side of the connection, which accept() hands to the server as a new fd.

Watch for:
  * the SYN (flags S): delivered to the listener (match "listener"); its receiver has no
    remote address;
  * every later segment, in both directions: "established", to the accepted fd on the
    server side and to the client's fd on the other;
  * three fds in two processes: the listener and the accepted socket in the server, one
    socket in the client;
  * the client's FIN after shutdown() (Node's end()): still sent by its fd, which stays open
    until the server's FIN comes back.
"""

# Node's own net module, when node is on PATH: the same story with createServer and
# createConnection. Each prints JSON events with its pid and the fd libuv got.
NODE_SERVER = r"""
const net = require('net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
process.title = 'node-server';
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
// allowHalfOpen: Node would otherwise answer the client's FIN with its own at once.
const srv = net.createServer({allowHalfOpen: true}, (sock) => {
  const fd = sock._handle.fd;
  emit({event: 'accept', pid: process.pid, fd, local: `${sock.localAddress}:${sock.localPort}`,
        remote: `${sock.remoteAddress}:${sock.remotePort}`});
  sock.on('data', (d) => {
    emit({event: 'recv', fd, data: d.toString()});
    sock.write('hello from the server');
  });
  // Half-closed by the client: answer with our own FIN a little later, so the two are apart.
  sock.on('end', () => { emit({event: 'peer_fin', fd}); setTimeout(() => sock.end(), 300); });
  sock.on('close', () => emit({event: 'closed', fd}));
  sock.on('error', (e) => emit({event: 'sock_error', fd, error: e.message}));
});
srv.on('error', (e) => { emit({event: 'error', error: e.message, code: e.code}); process.exit(1); });
srv.listen(port, host, 16, () => emit({event: 'listen', pid: process.pid, fd: srv._handle.fd,
                                       local: `${host}:${port}`}));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 120000).unref();
"""

NODE_CLIENT = r"""
const net = require('net');
const [host, port] = [process.argv[1], Number(process.argv[2])];
process.title = 'node-client';
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const c = net.createConnection({host, port}, () => {
  emit({event: 'connect', pid: process.pid, fd: c._handle.fd, local: `${c.localAddress}:${c.localPort}`,
        remote: `${c.remoteAddress}:${c.remotePort}`});
  setTimeout(() => c.write('hello from the client'), 300);
});
c.on('data', (d) => { emit({event: 'recv', data: d.toString()}); setTimeout(() => c.end(), 300); });
c.on('close', () => emit({event: 'closed'}));
c.on('error', (e) => { emit({event: 'error', error: e.message, code: e.code}); });
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 120000).unref();
"""


def _with_node(lab: Lab) -> None:
    host = lab.server_addr
    server = lab.node(NODE_SERVER, "node-server", "server", (host, str(PORT)))
    ev = server.expect("listen")
    lab.event(
        "listen", role="server", program="node", pid=ev["pid"], fd=ev["fd"], local=ev["local"], remote=None
    )
    lab.say(f"node server pid {ev['pid']} listens on {ev['local']} with fd {ev['fd']}")
    lab.pause(0.3)
    client = lab.node(NODE_CLIENT, "node-client", "client", (host, str(PORT)))
    ev = client.expect("connect")
    lab.event(
        "connect",
        role="client",
        program="node",
        pid=ev["pid"],
        fd=ev["fd"],
        local=ev["local"],
        remote=ev["remote"],
    )
    lab.say(f"node client pid {ev['pid']} connected from {ev['local']} with fd {ev['fd']}")
    ev = server.expect("accept")
    lab.event(
        "accept",
        role="server",
        program="node",
        pid=ev["pid"],
        fd=ev["fd"],
        local=ev["local"],
        remote=ev["remote"],
    )
    lab.say(f"the server's connection callback got fd {ev['fd']} for {ev['remote']}")
    server.expect("recv")
    client.expect("recv")
    server.expect("peer_fin")
    client.expect("closed")
    lab.pause(0.3)


def _with_python(lab: Lab) -> None:
    host = lab.server_addr
    server = lab.actor("py-server", "server")
    lst = server("listen", host=host, port=PORT)
    lab.event(
        "listen",
        role="server",
        program="python",
        pid=server.pid,
        fd=lst["fd"],
        local=lst["local"],
        remote=None,
    )
    lab.say(f"python server pid {server.pid} listens on {lst['local']} with fd {lst['fd']}")
    lab.pause(0.3)
    client = lab.actor("py-client", "client")
    con = client("connect", host=host, port=PORT)
    lab.event(
        "connect",
        role="client",
        program="python",
        pid=client.pid,
        fd=con["fd"],
        local=con["local"],
        remote=con["remote"],
    )
    acc = server("accept", fd=lst["fd"])
    lab.event(
        "accept",
        role="server",
        program="python",
        pid=server.pid,
        fd=acc["fd"],
        local=acc["local"],
        remote=acc["remote"],
    )
    lab.say(f"accept() returned fd {acc['fd']} for {acc['remote']}")
    lab.pause(0.3)
    client("send", fd=con["fd"], data="hello from the client")
    server("recv", fd=acc["fd"], n=21)
    server("send", fd=acc["fd"], data="hello from the server")
    client("recv", fd=con["fd"], n=21)
    lab.pause(0.3)
    client("shutdown", fd=con["fd"])
    lab.pause(0.3)
    server("recv", fd=acc["fd"], n=1, timeout=2)
    server("close", fd=acc["fd"])
    client("recv", fd=con["fd"], n=1, timeout=2)
    client("close", fd=con["fd"])
    lab.pause(0.3)


def traffic(lab: Lab) -> None:
    if lab.use_node:
        _with_node(lab)
    else:
        lab.say("node not used: the same story with Python sockets")
        _with_python(lab)


def expect(res: Result) -> list[Check]:
    lst = res.one("listen", role="server")
    cli = res.one("connect", role="client")
    acc = res.one("accept", role="server")
    srv_addr, port = split_ep(lst["local"])
    c_addr, c_port = split_ep(cli["local"])
    fds = {(lst["pid"], lst["fd"]), (acc["pid"], acc["fd"]), (cli["pid"], cli["fd"])}
    checks = [
        kernel(
            "three fds in two processes",
            len(fds) == 3 and len({p for p, _ in fds}) == 2 and lst["pid"] == acc["pid"],
            f"listener {lst['pid']}/{lst['fd']}, accepted {acc['pid']}/{acc['fd']}, "
            f"client {cli['pid']}/{cli['fd']}",
        )
    ]
    up: dict[str, Any] = dict(src=c_addr, sport=c_port, dst=srv_addr, dport=port)
    down: dict[str, Any] = dict(src=srv_addr, sport=port, dst=c_addr, dport=c_port)
    syn = res.segments(**up, flags="S")
    checks.append(
        received_by("SYN goes to the listener", syn, lst["pid"], lst["fd"], ["listener"], what="SYN")
    )
    no_remote = [r for r in syn if r.get("receiver") and r["receiver"].get("remote") is None]
    checks.append(
        Check(
            "the listener has no remote end",
            bool(syn) and len(no_remote) == len(syn) and all(r["receiver"]["state"] == "LISTEN" for r in syn),
            f"receiver of the SYN: {[(r['receiver'] or {}).get('state') for r in syn]}, "
            f"remote {[(r['receiver'] or {}).get('remote') for r in syn]}",
        )
    )
    checks.append(sent_by("SYN sent by the client's fd", syn, cli["pid"], cli["fd"], what="SYN"))
    checks.append(
        received_by(
            "SYN-ACK goes to the client's fd",
            res.segments(**down, flags="SA"),
            cli["pid"],
            cli["fd"],
            ["established"],
            what="SYN-ACK",
        )
    )
    data_up = res.segments(**up, data=True)
    checks.append(
        received_by(
            "client data goes to the accepted fd",
            data_up,
            acc["pid"],
            acc["fd"],
            ["established"],
            what="data segment",
        )
    )
    checks.append(
        sent_by("client data sent by the client's fd", data_up, cli["pid"], cli["fd"], what="data segment")
    )
    data_down = res.segments(**down, data=True)
    checks.append(
        received_by(
            "server data goes to the client's fd",
            data_down,
            cli["pid"],
            cli["fd"],
            ["established"],
            what="data segment",
        )
    )
    checks.append(
        sent_by("server data sent by the accepted fd", data_down, acc["pid"], acc["fd"], what="data segment")
    )
    # The client half-closes with shutdown() (Node's end()): its fd is still open when the
    # FIN leaves, so the FIN is the fd's, not the kernel's.
    fin = res.segments(**up, flags=lambda f: "F" in f)
    checks.append(
        sent_by(
            "the client's FIN (after shutdown(), fd still open) is sent by its fd",
            fin,
            cli["pid"],
            cli["fd"],
            what="FIN",
        )
    )
    return checks


SCENARIO = Scenario(
    name="listen-vs-connect",
    summary="a listener (no remote end), the accepted socket and the client socket: three fds, two processes",
    narrative=NARRATIVE,
    traffic=traffic,
    expect=expect,
    uses_node=True,
)
