"""Issue 12: real Podman containers behind NAT, captured from the host with ``-i any``.

A busybox ``httpd`` runs in a container with a published port (podman's DNAT and
masquerade), clients reach it from the host (by 127.0.0.1 and by the host's own address)
and from a second container's network namespace (directly, and through the host's
published port: hairpin NAT; the client there is a host program entered with ``nsenter -n``,
as CI's chroot runs ``podman exec``'d commands outside the container's root). conntui
runs on the host with its defaults. Each client sends its request in two
parts: after the first, the test reads the ground truth from the kernel (which forked
httpd process holds the connection, with which fd; the client's pid and fd), then sends
the rest; the rows of that second part must name exactly those. No row of these
connections may name podman's port-reservation socket (``conmon``) or say none/unknown,
and every copy of a segment (bridge and veth) must say the same.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import podkit
from .truthkit import FileConntui, Row, brief, holders, kernel, names

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

PORTS = (31850, 31899)  # published host ports: this file's range only

# A host-side client: connects, sends the first half of a request, tells the test who it
# is, waits for the test's go, sends the rest and reads the answer (4 MiB), a second late:
# the connection stays open meanwhile (the server's child blocks on a full send buffer), so
# a capture that runs behind still finds it open.
CLIENT = r"""
import json, os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"GET /big.bin HTTP/1.0\r\n")
print(json.dumps({"pid": os.getpid(), "fd": s.fileno(), "lport": s.getsockname()[1]}), flush=True)
sys.stdin.readline()
s.sendall(b"Host: x\r\n\r\n")
time.sleep(1.0)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(json.dumps({"ok": data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]}), flush=True)
"""
REST = len(b"Host: x\r\n\r\n")


@dataclass
class Truth:
    """One connection as the kernel and the programs showed it."""

    what: str
    client: tuple[int, int]  # (pid, fd)
    client_port: int  # the client socket's own local port
    server: set[tuple[int, int]]  # the forked httpd's (pid, fd)s when the second half came
    listener: tuple[int, int]  # httpd's (pid, fd) of its listener
    server_ns: int  # the web container's network namespace (inode)


def host_address() -> str:
    """An address of the host that is not loopback and not podman's bridge."""
    cmd = ["ip", "-4", "-o", "addr", "show", "scope", "global"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts[1] != "podman0" and not parts[1].startswith(("veth", "cni")):
            return parts[3].split("/")[0]
    raise podkit.KernelDisagrees("the host has no global IPv4 address besides podman's bridge")


def free_port() -> int:
    ports = list(range(PORTS[0], PORTS[1] + 1))
    random.shuffle(ports)
    busy = subprocess.run(["ss", "-Htan"], capture_output=True, text=True).stdout
    for port in ports:
        if f":{port} " not in busy:
            return port
    raise podkit.KernelDisagrees("no free port in this file's range")


def serving_child(httpd: int, client_port: int, *, timeout: float = 5.0) -> set[tuple[int, int]]:
    """The forked httpd process holding the connection from ``client_port`` (in the
    container's namespace, after masquerade the port is kept), and its fd; the parent must
    not hold it any more."""
    deadline = time.monotonic() + timeout
    while True:
        conns = [
            inode
            for _, lport, _, rport, state, inode in podkit.tcp_sockets(httpd)
            if lport == 80 and rport == client_port and state == 0x01 and inode
        ]
        kids = podkit.children(httpd)
        got = podkit.holder_of(kids, conns[0]) if conns else set()
        if got and not podkit.holder_of([httpd], conns[0]):
            return got
        kernel(time.monotonic() < deadline, f"no httpd child holds the connection from port {client_port}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[podkit.Container, int, list[str]]]:
    with podkit.containers() as started:
        port = free_port()
        c = podkit.run(started, "/bin/httpd", "-f", "-p", "80", "-h", "/www", publish=f"{port}:80")
        deadline = time.monotonic() + 10
        while not any(s[1] == 80 and s[4] == 0x0A for s in podkit.tcp_sockets(c.pid)):
            kernel(time.monotonic() < deadline, "httpd did not listen")
            time.sleep(0.05)
        yield c, port, started


def host_client(web: podkit.Container, addr: str, port: int, what: str, netns_of: int = 0) -> Truth:
    """The client program on the host, or (``netns_of``: a pid) in that process's network
    namespace (``nsenter -n``: a container's network, not its cgroup or root)."""
    prefix = ["nsenter", "-t", str(netns_of), "-n"] if netns_of else []
    p = subprocess.Popen(
        [*prefix, sys.executable, "-c", CLIENT, addr, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdin is not None and p.stdout is not None
    me = json.loads(p.stdout.readline())
    child = serving_child(web.pid, me["lport"])
    p.stdin.write("go\n")
    p.stdin.flush()
    line = p.stdout.readline()
    p.wait(timeout=10)
    kernel(line.strip(), f"{what}: the client failed: {p.stderr.read() if p.stderr else ''}")
    done = json.loads(line)
    kernel(done["ok"], f"{what}: no HTTP answer")
    listener = (web.pid, podkit.listener_fd(web.pid, 80))
    return Truth(what, (me["pid"], me["fd"]), me["lport"], child, listener, web.netns_inode())


def rows_of(rows: list[Row], t: Truth, ports: tuple[int, int]) -> list[Row]:
    """The rows of one connection, in any of the forms NAT and the bridge show it."""
    return [
        r
        for r in rows
        if t.client_port in (r["sport"], r["dport"]) and ({r["sport"], r["dport"]} & set(ports))
    ]


def judge_connection(t: Truth, rows: list[Row], port: int) -> list[str]:
    """Every false statement of these rows, judged by the truth alone."""
    bad: list[str] = []
    if not rows:
        return [f"{t.what}: no rows"]
    syns = [r for r in rows if r.get("flags") == "S"]
    rest = [r for r in rows if r.get("payload_len") == REST]
    answers = [r for r in rows if r.get("payload_len", 0) > REST and r["sport"] in (80, port)]
    if not syns or not rest:
        bad.append(f"{t.what}: the SYN or the request's second half was not captured")
    for r in rows:
        who = names(r.get("receiver")) + names(r.get("sender"))
        if any(proc == "conmon" for _, proc in who):
            bad.append(f"{t.what}: names conmon: {brief(r)}")
        if r.get("match") in ("none", "unknown"):
            bad.append(f"{t.what}: {r.get('match')}: {brief(r)}")
    for r in syns:
        if r.get("match") != "listener" or t.listener not in holders(r.get("receiver"), former=False):
            bad.append(f"{t.what}: SYN not to httpd's listener {t.listener}: {brief(r)}")
        if t.client not in holders(r.get("sender")):
            bad.append(f"{t.what}: SYN not from the client {t.client}: {brief(r)}")
        if (r.get("receiver") or {}).get("netns") != t.server_ns:
            bad.append(f"{t.what}: SYN's receiver not in the container's namespace {t.server_ns}: {brief(r)}")
    for r in rest:
        if not holders(r.get("receiver"), former=False) <= t.server or not holders(r.get("receiver")):
            bad.append(f"{t.what}: second half not to the forked httpd {t.server}: {brief(r)}")
        if t.client not in holders(r.get("sender")):
            bad.append(f"{t.what}: second half not from the client {t.client}: {brief(r)}")
    for r in answers:
        if t.client not in holders(r.get("receiver")):
            bad.append(f"{t.what}: the answer is not to the client {t.client}: {brief(r)}")
        if not holders(r.get("sender")) & t.server:
            bad.append(f"{t.what}: the answer is not from the forked httpd {t.server}: {brief(r)}")
    # every copy of a segment (bridge, veth; NAT'd or not) is attributed the same way
    # (a copy: the same TCP header fields on another device within 5 ms; duplicate ACKs and
    # window updates of a bulk transfer repeat seq/ack at other moments and are not copies)
    seen: dict[tuple[object, ...], tuple[float, str, tuple[object, ...]]] = {}
    for r in sorted(rows, key=lambda r: r["ts"]):
        key = (r.get("flags"), r.get("payload_len"), r.get("seq"), r.get("ack"), r.get("window"))
        said = (r.get("match"), sorted(holders(r.get("receiver"))), sorted(holders(r.get("sender"))))
        before = seen.get(key)
        if before is not None and before[1] != r["iface"] and r["ts"] - before[0] < 0.005:
            if before[2] != said:
                bad.append(f"{t.what}: two copies attributed differently: {brief(r)} vs {before[2]}")
        else:
            seen[key] = (r["ts"], r["iface"], said)
    return bad


def test_podman_published_port_every_client_names_httpd_in_its_container(web, tmp_path: Path) -> None:
    c, port, started = web
    client = podkit.run(started, "/bin/sleep", "600")
    cap = FileConntui(tmp_path / "rows.jsonl", "--headless", "--json", "-i", "any", "-p", f"{port},80")
    try:
        truths = [
            host_client(c, "127.0.0.1", port, "host client by 127.0.0.1"),
            host_client(c, host_address(), port, "host client by the host's address"),
            # in the second container's network namespace (CI's chroot runs `podman exec`'d
            # commands outside the container's root, so the client is a host program there)
            host_client(c, c.ip, 80, "second container's namespace, directly", netns_of=client.pid),
            host_client(
                c, host_address(), port, "second container's namespace, published port", netns_of=client.pid
            ),
        ]
    finally:
        rows, err, _ = cap.stop(settle=2.0)
    assert "Traceback" not in err, err
    bad: list[str] = []
    total = 0
    for t in truths:
        mine = rows_of(rows, t, (port, 80))
        total += len(mine)
        bad += judge_connection(t, mine, port)
    assert not bad, f"{len(bad)} false statements in {total} rows:\n" + "\n".join(bad[:20])


def test_dash_n_captures_in_one_namespace_and_names_its_programs(tmp_path: Path) -> None:
    """-N NAME: conntui joins that namespace (capture, table, tracer), as `ip netns exec`
    would; a server and a client there are named by their own pids and fds."""
    name = f"cdashn{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    server = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", SERVER],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdin is not None
        srv = json.loads(server.stdout.readline())
        args = ("-N", name, "--headless", "--json", "-i", "lo", "-p", "8099")
        cap = FileConntui(tmp_path / "rows.jsonl", *args)
        try:
            client = subprocess.run(
                ["ip", "netns", "exec", name, sys.executable, "-c", ONE_CLIENT],
                capture_output=True,
                text=True,
                check=True,
            )
            me = json.loads(client.stdout)
            acc = json.loads(server.stdout.readline())
        finally:
            rows, err, code = cap.stop(settle=1.0)
        assert code == 0, err
        syn = [r for r in rows if r.get("flags") == "S" and r["sport"] == me["lport"]]
        data = [r for r in rows if r.get("payload_len") == 5 and r["sport"] == me["lport"]]
        assert syn and data, rows
        assert (srv["pid"], srv["fd"]) in holders(syn[0].get("receiver"))
        assert (me["pid"], me["fd"]) in holders(syn[0].get("sender"))
        assert (acc["pid"], acc["fd"]) in holders(data[0].get("receiver"))
        ns = os.stat(f"/run/netns/{name}").st_ino
        assert syn[0]["receiver"]["netns"] == ns
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_dash_n_with_no_such_namespace_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conntui", "-N", "no-such-namespace-here", "--headless"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "conntui: no network namespace 'no-such-namespace-here' (/run/netns/no-such-namespace-here: "
        "No such file or directory)"
    ]


# a server on 127.0.0.1:8099 that says its pid and listener fd, then the accepted fd
SERVER = r"""
import json, os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8099)); s.listen()
print(json.dumps({"pid": os.getpid(), "fd": s.fileno()}), flush=True)
c, _ = s.accept()
print(json.dumps({"pid": os.getpid(), "fd": c.fileno()}), flush=True)
c.recv(100); c.close(); input()
"""
ONE_CLIENT = r"""
import json, os, socket, time
c = socket.create_connection(("127.0.0.1", 8099)); time.sleep(0.2); c.sendall(b"hello"); time.sleep(0.2)
print(json.dumps({"pid": os.getpid(), "fd": c.fileno(), "lport": c.getsockname()[1]}))
"""
