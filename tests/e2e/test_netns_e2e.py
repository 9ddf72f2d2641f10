"""Issue 12: real Podman containers behind NAT, captured from the host with ``-i any``.

A busybox ``httpd`` runs in a container with a published port (podman's DNAT and
masquerade), clients reach it from the host (by 127.0.0.1 and by the host's own address)
and from a second container (directly, and through the host's published port: hairpin
NAT). conntui runs on the host with its defaults. Each client sends its request in two
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
# is, waits for the test's go, sends the rest and reads the answer.
CLIENT = r"""
import json, os, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"GET / HTTP/1.0\r\n")
print(json.dumps({"pid": os.getpid(), "fd": s.fileno(), "lport": s.getsockname()[1]}), flush=True)
sys.stdin.readline()
s.sendall(b"Host: x\r\n\r\n")
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


def host_client(web: podkit.Container, addr: str, port: int, what: str) -> Truth:
    p = subprocess.Popen(
        [sys.executable, "-c", CLIENT, addr, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdin is not None and p.stdout is not None
    me = json.loads(p.stdout.readline())
    child = serving_child(web.pid, me["lport"])
    p.stdin.write("go\n")
    p.stdin.flush()
    done = json.loads(p.stdout.readline())
    p.wait(timeout=10)
    kernel(done["ok"], f"{what}: no HTTP answer")
    listener = (web.pid, podkit.listener_fd(web.pid, 80))
    return Truth(what, (me["pid"], me["fd"]), me["lport"], child, listener)


def container_client(
    web: podkit.Container, client: podkit.Container, addr: str, port: int, what: str
) -> Truth:
    """``nc`` in the client container: the first half, a pause the test reads the truth in,
    the rest."""
    script = f"(printf 'GET / HTTP/1.0\\r\\n'; sleep 2; printf 'Host: x\\r\\n\\r\\n') | nc {addr} {port}"
    p = subprocess.Popen(
        ["podman", "exec", client.name, "/bin/sh", "-c", script], stdout=subprocess.PIPE, text=True
    )
    ns = client.netns_inode()
    deadline = time.monotonic() + 5
    nc = None
    while nc is None:
        for pid in (int(x) for x in os.listdir("/proc") if x.isdigit()):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
                same = os.stat(f"/proc/{pid}/ns/net").st_ino == ns
            except OSError:
                continue
            if comm == "nc" and same and podkit.socket_inodes(pid):
                nc = pid
        kernel(nc is not None or time.monotonic() < deadline, f"{what}: nc did not start")
        time.sleep(0.01)
    assert nc is not None
    conns = [s for s in podkit.tcp_sockets(nc) if s[3] == port and s[4] == 0x01]
    kernel(len(conns) == 1, f"{what}: nc's connection not found")
    inode = conns[0][5]
    fd = podkit.socket_inodes(nc)[inode][0]
    child = serving_child(web.pid, conns[0][1])
    out, _ = p.communicate(timeout=15)
    kernel(out.startswith("HTTP/1."), f"{what}: no HTTP answer")
    return Truth(what, (nc, fd), conns[0][1], child, (web.pid, podkit.listener_fd(web.pid, 80)))


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
    seen: dict[tuple[object, ...], tuple[object, ...]] = {}
    for r in rows:
        key = (r.get("flags"), r.get("payload_len"), r.get("seq"), r.get("ack"))
        said = (r.get("match"), sorted(holders(r.get("receiver"))), sorted(holders(r.get("sender"))))
        if seen.setdefault(key, said) != said:
            bad.append(f"{t.what}: two copies attributed differently: {brief(r)} vs {seen[key]}")
    return bad


def test_podman_published_port_every_client_names_httpd_in_its_container(web, tmp_path: Path) -> None:
    c, port, started = web
    client = podkit.run(started, "/bin/sleep", "600")
    cap = FileConntui(tmp_path / "rows.jsonl", "--headless", "--json", "-i", "any", "-p", f"{port},80")
    try:
        truths = [
            host_client(c, "127.0.0.1", port, "host client by 127.0.0.1"),
            host_client(c, host_address(), port, "host client by the host's address"),
            container_client(c, client, c.ip, 80, "second container, directly"),
            container_client(c, client, host_address(), port, "second container, through the published port"),
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
