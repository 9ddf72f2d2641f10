"""Issue 11, "say only what happened": each reproduced false statement as a regression test.

Real programs (http.server, curl, Python sockets, sh's exec) make short-lived traffic on
``lo``; conntui captures it with default options; the ground truth is the programs' own
pids, fds and ports, and tcpdump beside conntui as the witness of every RST and ICMP. A row
is judged only by that truth, never by conntui's own checking code. A setup that did not
happen as planned raises ``KernelDisagrees``, never an AssertionError.

Ports come from 31700-31799 (truthkit.TRUTH_PORTS), used by no other test.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_lab import run_lab
from .truthkit import (
    FileConntui,
    HttpServer,
    Row,
    Witness,
    brief,
    curl,
    four,
    holders,
    kernel,
    names,
    python,
    said,
    stop_proc,
    truth_port,
    wait_listening,
)

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

BAD_MATCH = {"none", "time_wait", "unknown"}


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[Callable[..., FileConntui]]:
    """Start ``conntui --headless -i lo ARGS`` (rows to a file); killed at the end."""
    made: list[FileConntui] = []

    def start(*args: str, prefix: tuple[str, ...] = ()) -> FileConntui:
        c = FileConntui(tmp_path / f"rows{len(made)}.jsonl", "--headless", "-i", "lo", *args, prefix=prefix)
        made.append(c)
        return c

    yield start
    for c in made:
        c.kill()


def failures(bad: list[str], rows: list[Row]) -> str:
    return f"{len(bad)} false statements:\n" + "\n".join(bad[:15]) + f"\n({len(rows)} rows)"


# --------------------------------------------------------------------------- 1. curl + http.server


def test_curl_against_http_server_rows_state_only_what_happened(capture, tmp_path: Path) -> None:
    """Several real curl requests, ~0.3-1 s apart, to the real http.server: every row of these
    successful connections names the right pid and fd, none is none/time_wait/unknown, no RST
    is claimed that tcpdump did not see, no SYN gets a TIME_WAIT story on a fresh 4-tuple."""
    port = truth_port()
    wit = Witness(f"tcp port {port}", tmp_path / "w.pcap")
    cap = capture("--json", "-p", str(port))
    srv = HttpServer(port, tmp_path)
    clients: dict[int, int] = {}  # curl's local port → curl's pid
    try:
        for _ in range(8):
            pid, cport = curl(port)
            clients[cport] = pid
            time.sleep(random.uniform(0.3, 1.0))
        rows, err, code = cap.stop()
    finally:
        srv.stop()
        wit.stop()
    assert code == 0, err
    accepted = srv.accepted()
    kernel(set(accepted) == set(clients), f"http.server log {accepted} vs curl ports {clients}")
    segs = wit.tcp()
    rsts = wit.rst_tuples()
    kernel(not rsts, f"tcpdump saw a RST on a curl connection: {rsts}")
    # Each curl's SYN is the first segment of its 4-tuple (fresh ports: no earlier TIME_WAIT).
    for cport in clients:
        first = next(s for s in segs if port in (s[1], s[3]) and cport in (s[1], s[3]))
        kernel(first[4] == "S" and first[1] == cport, f"4-tuple of port {cport} starts with {first}")

    bad: list[str] = []
    seen = set()
    for r in rows:
        cport = r["sport"] if r["dport"] == port else r["dport"]
        if cport not in clients:
            continue
        seen.add(cport)
        to_server = r["dport"] == port
        if r["match"] in BAD_MATCH:
            bad.append(f"match {r['match']} on a live connection: {brief(r)}")
        if "RST" in said(r) and four(r) not in rsts:
            bad.append(f"claims a RST tcpdump did not see: {brief(r)}")
        if r["flags"] == "S":
            if "TIME_WAIT" in said(r) or any("TIME_WAIT" in s["result"] for s in r.get("steps", [])):
                bad.append(f"TIME_WAIT story on a fresh 4-tuple's SYN: {brief(r)}")
            if r["match"] != "listener" or (srv.pid, srv.listen_fd) not in holders(r["receiver"]):
                bad.append(f"SYN not given to http.server's listener fd {srv.listen_fd}: {brief(r)}")
        elif r["payload_len"] > 0 and to_server:
            want = (srv.pid, accepted[cport])
            named = holders(r["receiver"])
            # Data may reach the accepted socket before accept(): then it names no fd yet.
            if not (named == {want} or (r["match"] == "accept_queue" and not named)):
                bad.append(f"request not given to http.server fd {want[1]}: {brief(r)}")
        elif r["payload_len"] > 0 and clients[cport] not in {pid for pid, _ in holders(r["receiver"])}:
            bad.append(f"response not given to curl[{clients[cport]}]: {brief(r)}")
    assert seen == set(clients), f"conntui rows for {sorted(seen)}, curls {sorted(clients)}: {err}"
    assert not bad, failures(bad, rows)


# --------------------------------------------------------------------------- 2. DNS-like UDP

UDP_SERVER = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
print(json.dumps({"pid": os.getpid(), "fd": s.fileno()}), flush=True)
q, peer = s.recvfrom(512)
s.sendto(b"answer:" + q, peer)  # one answer, then gone (a one-shot responder)
"""

UDP_CLIENT = r"""
import json, os, socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect(("127.0.0.1", int(sys.argv[1])))
c.settimeout(5)
c.send(b"query")
a = c.recv(512)
out = {"pid": os.getpid(), "fd": c.fileno(), "port": c.getsockname()[1], "answer": a.decode()}
c.close()  # closed at once, the way a resolver does
print(json.dumps(out))
"""

ICMP_CLAIM = re.compile(r"ICMP")


def claims_icmp(r: Row) -> bool:
    """Whether a row says an ICMP error was (or will be) sent; "no ICMP ... came back" is not."""
    texts = [str(r.get("explain", "")), str(r.get("sender_explain", "")), *map(str, r.get("notes", []) or [])]
    return any(ICMP_CLAIM.search(t) and not t.startswith("no ICMP") for t in texts)


def test_dns_like_udp_answer_is_not_none_and_no_icmp_is_invented(capture, tmp_path: Path) -> None:
    """A connected UDP client, one query, one answer from a one-shot responder, both closed at
    once: the answer reached the client's socket (not ``none``), no ICMP port unreachable is
    claimed that tcpdump did not see, and the exit summary counts as attributed only rows
    that name a socket (``- → -`` rows are not)."""
    port = truth_port()
    n = 4
    wit = Witness(f"udp port {port} or icmp", tmp_path / "w.pcap")
    cap = capture("--json", "-p", str(port))
    clients: dict[int, dict[str, Any]] = {}
    servers: list[dict[str, Any]] = []
    try:
        for _ in range(n):
            server = subprocess.Popen(
                [sys.executable, "-c", UDP_SERVER, str(port)], stdout=subprocess.PIPE, text=True
            )
            try:
                assert server.stdout is not None
                servers.append(json.loads(server.stdout.readline()))
                c = python(UDP_CLIENT, str(port))
                kernel(c["answer"] == "answer:query", f"client got {c}")
                clients[c["port"]] = c | {"server": servers[-1]}
                server.wait(5)
            finally:
                stop_proc(server)
            time.sleep(0.4)
        rows, err, code = cap.stop()
    finally:
        wit.stop()
    assert code == 0, err
    icmps = wit.icmp_count()

    bad: list[str] = []
    answers = [r for r in rows if r["sport"] == port and r["dport"] in clients]
    queries = [r for r in rows if r["dport"] == port and r["sport"] in clients]
    kernel(len(answers) == n and len(queries) == n, f"{len(queries)}/{len(answers)} rows for {n} exchanges")
    for r in answers:
        c = clients[r["dport"]]
        if r["match"] == "none":
            bad.append(f"answer to a live connected socket is none: {brief(r)}")
        named = holders(r["receiver"])
        if named and named != {(c["pid"], c["fd"])}:
            bad.append(f"answer names {named}, not the client {c['pid']} fd {c['fd']}: {brief(r)}")
    for r in queries:
        srv = clients[r["sport"]]["server"]
        named = holders(r["receiver"])
        if r["match"] == "none" or (named and named != {(srv["pid"], srv["fd"])}):
            bad.append(f"query not given to the responder {srv['pid']} fd {srv['fd']}: {brief(r)}")
        c = clients[r["sport"]]
        if holders(r["sender"]) != {(c["pid"], c["fd"])}:  # the client's socket, closed since
            bad.append(f"query not sent by the client {c['pid']} fd {c['fd']}: {brief(r)}")
    for r in rows:
        if claims_icmp(r) and not icmps:
            bad.append(f"claims an ICMP tcpdump did not see: {brief(r)}")
    # The summary: "N attributed" counts rows that name a socket (a process or the kernel's).
    m = re.search(r"(\d+) attributed", err)
    assert m, err
    naming = sum(1 for r in rows if r.get("receiver") or r.get("sender"))
    if int(m.group(1)) != naming:
        bad.append(f"summary says {m.group(1)} attributed, but {naming} of {len(rows)} rows name a socket")
    assert not bad, failures(bad, rows)


# --------------------------------------------------------------------------- 3. a SYN's steps


def test_new_connection_syn_misses_the_established_hash(capture, tmp_path: Path) -> None:
    """≥ 20 new curl connections: a new connection's SYN misses the established hash; the
    steps never show an established-hash hit followed by a listener look-up."""
    port = truth_port()
    wit = Witness(f"tcp port {port}", tmp_path / "w.pcap")
    cap = capture("--json", "-p", str(port))
    srv = HttpServer(port, tmp_path)
    try:
        ports = [curl(port)[1] for _ in range(24)]
        rows, err, code = cap.stop()
    finally:
        srv.stop()
        wit.stop()
    assert code == 0, err
    segs = wit.tcp()
    fresh = {
        p
        for p in ports
        if next(s for s in segs if p in (s[1], s[3]) and port in (s[1], s[3]))[4] == "S"
        and sum(1 for s in segs if s[1] == p and s[3] == port and s[4] == "S") == 1
    }
    kernel(len(fresh) >= 20, f"only {len(fresh)} fresh 4-tuples")
    syns = [r for r in rows if r["flags"] == "S" and r["dport"] == port and r["sport"] in fresh]
    kernel(len(syns) == len(fresh), f"{len(syns)} SYN rows for {len(fresh)} connections")
    bad = []
    for r in syns:
        steps = [(s["what"], s["result"]) for s in r.get("steps", [])]
        est = [i for i, (w, res) in enumerate(steps) if w.startswith("established hash")]
        if (
            est
            and steps[est[0]][1].startswith("hit")
            and any(w.startswith("listeners") for w, _ in steps[est[0] + 1 :])
        ):
            bad.append(f"established-hash hit, then listeners: {brief(r)}")
        elif est and not steps[est[0]][1].startswith("miss"):
            bad.append(f"a new connection's SYN does not miss the established hash: {brief(r)}")
    assert not bad, failures(bad, syns)


# --------------------------------------------------------------------------- 4. names follow exec


def test_server_started_through_sh_exec_is_named_python3(capture, tmp_path: Path) -> None:
    """``sh -c 'sleep 1; exec python3 -m http.server'`` started after conntui: the rows name the
    holder ``python3`` (the program after exec), not ``sh``."""
    port = truth_port()
    cap = capture("--json", "-p", str(port))
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hi\n")
    sh = subprocess.Popen(
        ["sh", "-c", f"sleep 1; exec python3 -m http.server {port} --bind 127.0.0.1"],
        cwd=www,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        comm = Path(f"/proc/{sh.pid}/comm").read_text().strip()
        kernel(comm.startswith("python3"), f"after exec pid {sh.pid} is {comm!r}")
        for _ in range(3):
            curl(port)
            time.sleep(0.3)
        rows, err, code = cap.stop()
    finally:
        stop_proc(sh)
    assert code == 0, err
    named = [
        (r, name)
        for r in rows
        for side in ("receiver", "sender")
        for pid, name in names(r.get(side))
        if pid == sh.pid
    ]
    kernel(named, "no row names the server's pid at all")
    bad = [
        f"server named {name!r}, not python3: {brief(r)}"
        for r, name in named
        if not name.startswith("python")
    ]
    assert not bad, failures(bad, rows)


# --------------------------------------------------------------------------- 5. sender in TIME_WAIT

TW_SERVER = r"""
import json, os, socket, sys
lst = socket.socket(); lst.bind(("127.0.0.1", int(sys.argv[1]))); lst.listen(8)
print(json.dumps({"pid": os.getpid()}), flush=True)
for _ in range(int(sys.argv[2])):
    a, _ = lst.accept()
    while a.recv(4096):
        pass
    a.close()  # after the client's FIN: the client's side goes to TIME_WAIT
sys.stdin.read()
"""

TW_CLIENT = r"""
import json, os, socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
out = {"pid": os.getpid(), "fd": c.fileno(), "port": c.getsockname()[1]}
c.sendall(b"hello, server")
c.shutdown(socket.SHUT_WR)  # the FIN leaves while the fd is still open
while c.recv(4096):
    pass
c.close()  # closed first: TIME_WAIT on this side
print(json.dumps(out))
"""


def test_sender_now_in_time_wait_is_not_the_kernel(capture) -> None:
    """A client that sends, shuts down (FIN with its fd open) and closes first ends in TIME_WAIT:
    its data and FIN rows name the client's pid and fd as sender, never "the kernel"."""
    port = truth_port()
    n = 5
    cap = capture("--json", "-p", str(port))
    server = subprocess.Popen(
        [sys.executable, "-c", TW_SERVER, str(port), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    clients = {}
    try:
        assert server.stdout is not None
        server.stdout.readline()
        for _ in range(n):
            c = python(TW_CLIENT, str(port))
            clients[c["port"]] = c
            time.sleep(0.3)
        tw = subprocess.run(
            ["ss", "-Htan", "state", "time-wait", f"dport = :{port}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        rows, err, code = cap.stop()
    finally:
        stop_proc(server)
    assert code == 0, err
    for cport in clients:
        kernel(f":{cport} " in tw, f"client port {cport} is not in TIME_WAIT: {tw}")
    bad = []
    for r in rows:
        c = clients.get(r["sport"])
        if c is None or r["dport"] != port or not (r["payload_len"] > 0 or "F" in r["flags"]):
            continue
        if holders(r["sender"]) != {(c["pid"], c["fd"])}:
            bad.append(f"sender is not client {c['pid']} fd {c['fd']}: {brief(r)}")
        elif "kernel" in str(r.get("sender_explain", "")):
            bad.append(f"sender called the kernel: {brief(r)}")
    assert not bad, failures(bad, rows)


# --------------------------------------------------------------------------- 6. unreadable holder

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NOBODY_LISTENER = r"""
import json, os, socket, sys
lst = socket.socket(); lst.bind(("127.0.0.1", int(sys.argv[1]))); lst.listen(8)
print(json.dumps({"pid": os.getpid(), "fd": lst.fileno()}), flush=True)
conns = []
for _ in range(int(sys.argv[2])):
    conns.append(lst.accept()[0])
sys.stdin.read()
"""


@pytest.mark.skipif(shutil.which("capsh") is None or shutil.which("setpriv") is None, reason="needs capsh")
def test_holder_whose_fds_cannot_be_read_is_not_the_kernel(capture) -> None:
    """A listener held by a ``nobody`` process while conntui runs without the capabilities to
    read its /proc/PID/fd (CAP_SYS_PTRACE, CAP_DAC_*): its rows must say the holder could not
    be read, never that the kernel holds the socket."""
    port = truth_port()
    drop = [
        "capsh",
        "--drop=cap_sys_ptrace,cap_dac_override,cap_dac_read_search",
        "--",
        "-c",
        'exec "$@"',
        "-",
    ]
    cap = capture("--json", "-p", str(port), prefix=tuple(drop))
    lst = subprocess.Popen(
        [*NOBODY, sys.executable, "-c", NOBODY_LISTENER, str(port), "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert lst.stdout is not None
        srv = json.loads(lst.stdout.readline())
        probe = subprocess.run(
            [*drop, "ls", f"/proc/{srv['pid']}/fd"], capture_output=True, text=True, check=False
        )
        kernel(probe.returncode != 0, f"/proc/{srv['pid']}/fd is readable without the capabilities")
        for _ in range(2):
            curl_like = python(
                "import json,os,socket,sys\n"
                "c=socket.create_connection(('127.0.0.1',int(sys.argv[1])));c.sendall(b'x')\n"
                "print(json.dumps({'port':c.getsockname()[1]}))",
                str(port),
            )
            kernel(curl_like["port"], "client did not connect")
            time.sleep(0.3)
        rows, err, code = cap.stop()
    finally:
        stop_proc(lst)
    assert code == 0, err
    to_server = [r for r in rows if r["dport"] == port]
    kernel(to_server, "no rows to the server")
    bad = []
    for r in to_server:
        rec = r.get("receiver")
        if rec is None or holders(rec) == {(srv["pid"], srv["fd"])}:
            continue
        text = json.dumps(r)
        if not holders(rec) and "could not be read" not in text:
            bad.append(f"socket held by unreadable pid {srv['pid']} shown as kernel-held: {brief(r)}")
    assert not bad, failures(bad, to_server)


# --------------------------------------------------------------------------- 7. --trace note

SHORT_LIVED = r"""
import json, os, socket, struct, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
lst = socket.socket(); lst.bind(("127.0.0.1", port)); lst.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", port))
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = lst.accept()
    c.sendall(b"x" * 100); a.recv(100); a.sendall(b"y" * 50); c.recv(50)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close(); a.close()  # a RST: both sockets gone at once, no TIME_WAIT left to look at
    q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); q.connect(("127.0.0.1", port))
    q.send(b"q"); _, peer = u.recvfrom(10); u.sendto(b"a", peer); q.recv(10); q.close()
print(json.dumps({"pid": os.getpid()}))
"""

TRACER_NOTE = "process named by the socket tracer"


@pytest.mark.skipif(shutil.which("bpftrace") is None, reason="bpftrace is not installed (CI installs it)")
def test_trace_note_only_on_rows_that_name_the_process(capture) -> None:
    """With ``--trace``, on connections gone before conntui can look: a row noted "process
    named by the socket tracer" shows that process ("sender → receiver" names its pid); a
    row reading ``kernel → kernel`` with that note claims a naming it does not show."""
    port = truth_port()
    cap = capture("-p", str(port), "--trace")
    kernel("no socket tracer" not in cap.stderr_head.decode(), cap.stderr_head)
    time.sleep(1.0)  # let the tracer attach
    done = python(SHORT_LIVED, str(port), "20", timeout=20)
    _, err, code = cap.stop(settle=1.5)
    assert code == 0, err
    lines = cap.lines()
    kernel(len(lines) >= 20 * 8, f"only {len(lines)} rows")
    noted = [line for line in lines if TRACER_NOTE in line]
    bad = [
        f"noted, names no pid {done['pid']}: {line}"
        for line in noted
        if f"[{done['pid']}]" not in line.split(";")[0]
    ]
    assert not bad, f"{len(bad)} of {len(noted)} noted rows name no process:\n" + "\n".join(bad[:10])


# --------------------------------------------------------------------------- 10. the labs


def lab_run(name: str) -> tuple[list[Row], list[Row]]:
    """``conntui lab NAME --headless --json``: (conntui's rows, the lab's events)."""
    run = run_lab(name, "--headless", "--json")
    end = run.one("end")
    kernel(end.get("error") is None, f"{name} stopped early: {end.get('error')}\n{run.stderr}")
    return run.rows, run.events


def test_lab_listen_vs_connect_server_fin_reaches_the_open_client_fd() -> None:
    """listen-vs-connect: the client half-closes and closes its fd only after the server's FIN
    arrived (its program reacts to that FIN), so the FIN reached the client's open fd; the
    row must name it, not "a socket its process already closed"."""
    rows, events = lab_run("listen-vs-connect")
    conn = next(e for e in events if e["what"] == "connect")
    lst = next(e for e in events if e["what"] == "listen")
    sport = int(lst["local"].rsplit(":", 1)[1])
    cport = int(conn["local"].rsplit(":", 1)[1])
    fins = [r for r in rows if r["sport"] == sport and r["dport"] == cport and "F" in r["flags"]]
    kernel(len(fins) == 1, f"{len(fins)} server FIN rows")
    fin = fins[0]
    bad = []
    if holders(fin["receiver"], former=False) != {(conn["pid"], conn["fd"])}:
        bad.append(f"server's FIN not given to client {conn['pid']} fd {conn['fd']}: {brief(fin)}")
    if "already closed" in said(fin):
        bad.append(f"says the client's fd was already closed: {brief(fin)}")
    assert not bad, failures(bad, rows)


def test_lab_port_conflict_one_reuseport_member_per_connection() -> None:
    """port-conflict: each connection to the SO_REUSEPORT group is taken by one member (the one
    whose process accept()ed it); its SYN, SYN-ACK and queued ACK rows must all name that
    member, never the other one."""
    rows, events = lab_run("port-conflict")
    group = [e for e in events if e.get("part") == "group"]
    listeners = {e["pid"]: e["fd"] for e in group if e["what"] == "listen"}
    kernel(len(listeners) == 2, f"group listeners {listeners}")
    port = int(next(e for e in group if e["what"] == "listen")["local"].rsplit(":", 1)[1])
    taker = {int(e["remote"].rsplit(":", 1)[1]): e["pid"] for e in group if e["what"] == "accept"}
    kernel(len(taker) >= 6 and len(set(taker.values())) == 2, f"accepts {taker}")
    bad = []
    for r in rows:
        cport = r["sport"] if r["dport"] == port else r["dport"] if r["sport"] == port else None
        if cport not in taker or "F" in r["flags"] or r["payload_len"]:
            continue
        other = next(pid for pid in listeners if pid != taker[cport])
        named = {
            pid for key in ("receiver", "sender", "listener") for pid, _ in holders(r.get(key), former=False)
        }
        if other in named:
            bad.append(
                f"names member {other} (fd {listeners[other]}), but {taker[cport]} took it: "
                + brief(r)
                + f" listener={r.get('listener') and holders(r['listener'])}"
            )
    assert not bad, failures(bad, rows)


# --------------------------------------------------------------------------- 11. the prediction itself

PREDICT_SERVER = r"""
import json, os, socket, sys, time
log = open(sys.argv[2], "a", buffering=1)
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
log.write(json.dumps({"pid": os.getpid(), "listen_fd": s.fileno()}) + "\n")
for _ in range(int(sys.argv[3])):
    time.sleep(0.3)  # the client's request is in before accept(): it waits in the accept queue
    c, peer = s.accept()
    accepted = time.time()
    c.recv(100)
    c.sendall(b"reply")
    shut = time.time()
    c.shutdown(socket.SHUT_WR)  # FIN_WAIT1 by shutdown(): the server keeps the socket
    while c.recv(100):
        pass
    time.sleep(0.05)
    closed = time.time()
    log.write(json.dumps({"cport": peer[1], "fd": c.fileno(), "accepted": accepted, "shut": shut,
                          "closed": closed}) + "\n")
    c.close()
"""

PREDICT_CLIENT = r"""
import json, os, socket, sys, time
out = []
for _ in range(int(sys.argv[2])):
    c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    c.sendall(b"request")
    while c.recv(100):
        pass
    closed = time.time()
    out.append({"port": c.getsockname()[1], "fd": c.fileno(), "closed": closed})
    c.close()  # LAST_ACK: the last ACK reaches a socket no process holds
print(json.dumps({"pid": os.getpid(), "conns": out}))
"""


def test_capture_time_prediction_is_what_happened(capture, tmp_path: Path) -> None:
    """The prediction made when a segment is captured (before the kernel's verdict on it is set
    beside it) already names what happened: a request that came before accept() waits in the
    accept queue with no fd, what came after goes to the fd accept() returned, and to the
    server's socket after its shutdown() (the server still holds it); the client's socket
    is named while the client holds it, and not after its close(). No row carries a note that
    the kernel's record disagreed with the prediction. Truth: the programs' own log (pids,
    fds, and when they accepted, shut down and closed)."""
    port = truth_port()
    n = 4
    log = tmp_path / "srv.log"
    cap = capture("--json", "-p", str(port))
    server = subprocess.Popen([sys.executable, "-c", PREDICT_SERVER, str(port), str(log), str(n)])
    try:
        wait_listening(port)
        client = python(PREDICT_CLIENT, str(port), str(n), timeout=30)
        server.wait(10)
        rows, err, code = cap.stop()
    finally:
        stop_proc(server)
    assert code == 0, err
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    srv, conns = lines[0], {c["cport"]: c for c in lines[1:]}
    mine = {c["port"]: c for c in client["conns"]}
    kernel(set(conns) == set(mine) and len(conns) == n, f"server saw {sorted(conns)}, client {sorted(mine)}")

    margin = 0.01  # segments this close to a logged moment are not judged (clocks, syscall time)
    bad: list[str] = []
    judged = 0
    for r in rows:
        cport = r["sport"] if r["dport"] == port else r["dport"]
        if cport not in conns:
            continue
        s, c, ts = conns[cport], mine[cport], r["ts"]
        if any("conntui's table predicted" in n for n in r.get("notes", [])):
            bad.append(f"the prediction was not what happened (the kernel's record corrected it): {brief(r)}")
        named = holders(r["receiver"], former=False)
        if r["dport"] == port and r["flags"] != "S":
            if r["payload_len"] and ts < s["accepted"] - margin:
                judged += 1
                if r["match"] != "accept_queue" or named:
                    bad.append(f"request before accept() not in the accept queue with no fd: {brief(r)}")
            elif s["accepted"] + margin < ts < s["closed"] - margin:
                judged += 1
                if named != {(srv["pid"], s["fd"])}:
                    held = "after shutdown() " if ts > s["shut"] else ""
                    bad.append(f"{held}not given to the server's fd {s['fd']}: {brief(r)}")
        elif r["sport"] == port and r["flags"] not in ("S", "SA"):
            judged += 1
            if ts < c["closed"] - margin and named != {(client["pid"], c["fd"])}:
                bad.append(f"not given to the client's fd {c['fd']}: {brief(r)}")
            if ts > c["closed"] + margin and client["pid"] in {p for p, _ in named}:
                bad.append(f"names the client as holder after its close(): {brief(r)}")
    kernel(judged >= 4 * n, f"only {judged} rows to judge")
    assert not bad, failures(bad, rows)
