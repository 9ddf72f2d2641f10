"""The core pipeline against the real kernel: real sockets in separate processes, real capture
on ``lo``, and every attribution checked against what the test itself opened."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from .conftest import REPO, free_port, holder_pairs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def tcp(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["proto"] == "tcp"]


def one(rows: list[dict[str, Any]], **want: Any) -> dict[str, Any]:
    found = [r for r in rows if all(r.get(k) == v for k, v in want.items())]
    assert len(found) == 1, f"expected one row with {want}, got {len(found)}: {found}"
    return found[0]


def test_tcp_conversation_attributed_on_both_ends(conntui, actors, port):
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    server, client = actors(), actors()
    lst = server("listen", host="127.0.0.1", port=port)
    conn = client("connect", host="127.0.0.1", port=port)
    cport = conn["local"][1]
    acc = server("accept", fd=lst["fd"])
    client("send", fd=conn["fd"], data="hello")
    assert server("recv", fd=acc["fd"], n=5)["data"] == "hello"
    server("send", fd=acc["fd"], data="world!")
    assert client("recv", fd=conn["fd"], n=6)["data"] == "world!"
    time.sleep(0.3)
    client("close", fd=conn["fd"])
    time.sleep(0.3)
    server("close", fd=acc["fd"])
    rows, err, code = cap.stop()
    assert code == 0, err
    rows = tcp(rows)
    to_server = [r for r in rows if r["dport"] == port]
    to_client = [r for r in rows if r["sport"] == port]
    assert to_server and to_client

    syn = one(rows, flags="S", dport=port)
    assert syn["match"] == "listener"
    assert holder_pairs(syn["receiver"]) == {(server.pid, lst["fd"])}
    assert syn["receiver"]["state"] == "LISTEN"
    assert holder_pairs(syn["sender"]) == {(client.pid, conn["fd"])}
    assert syn["sport"] == cport

    synack = one(rows, flags="SA", sport=port)
    assert holder_pairs(synack["receiver"]) == {(client.pid, conn["fd"])}

    data_in = one(rows, dport=port, payload_len=5)
    assert data_in["match"] == "established"
    assert holder_pairs(data_in["receiver"]) == {(server.pid, acc["fd"])}
    assert holder_pairs(data_in["sender"]) == {(client.pid, conn["fd"])}
    data_out = one(rows, sport=port, payload_len=6)
    assert data_out["match"] == "established"
    assert holder_pairs(data_out["receiver"]) == {(client.pid, conn["fd"])}
    assert holder_pairs(data_out["sender"]) == {(server.pid, acc["fd"])}

    # The client's FIN leaves a socket its process has closed: kernel-owned, and said so.
    fin = next(r for r in rows if r["dport"] == port and "F" in r["flags"])
    assert fin["sender"] is not None and fin["sender"]["holders"] == []
    assert "clos" in fin["explain"] + fin.get("sender_explain", "")
    for r in rows:
        assert r["match"] != "unknown", r
    # every segment appears once (loopback's outgoing copies are dropped)
    keys = [(r["sport"], r["dport"], r["flags"], r["payload_len"], r["ts"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_many_clients_each_to_its_own_accepted_fd(conntui, actors, port):
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    server = actors()
    lst = server("listen", host="127.0.0.1", port=port)
    pairs = []
    for i in range(4):
        client = actors()
        conn = client("connect", host="127.0.0.1", port=port)
        acc = server("accept", fd=lst["fd"])
        client("send", fd=conn["fd"], data=f"client-{i}")
        server("recv", fd=acc["fd"], n=len(f"client-{i}"))
        pairs.append((client, conn, acc))
    rows, err, code = cap.stop()
    assert code == 0, err
    for client, conn, acc in pairs:
        data = [
            r
            for r in tcp(rows)
            if r["dport"] == port and r["payload_len"] > 0 and r["sport"] == conn["local"][1]
        ]
        assert len(data) == 1
        assert data[0]["match"] == "established"
        assert holder_pairs(data[0]["receiver"]) == {(server.pid, acc["fd"])}
        assert holder_pairs(data[0]["sender"]) == {(client.pid, conn["fd"])}
    assert len({acc["fd"] for _, _, acc in pairs}) == 4


def test_dual_stack_listener_takes_ipv4_and_ipv6(conntui, actors):
    port = free_port("::1")
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    server, c4, c6 = actors(), actors(), actors()
    lst = server("listen", host="::", port=port, v6only=False)
    conn4 = c4("connect", host="127.0.0.1", port=port)
    acc4 = server("accept", fd=lst["fd"])
    conn6 = c6("connect", host="::1", port=port)
    acc6 = server("accept", fd=lst["fd"])
    c4("send", fd=conn4["fd"], data="v4")
    c6("send", fd=conn6["fd"], data="v6")
    server("recv", fd=acc4["fd"], n=2)
    server("recv", fd=acc6["fd"], n=2)
    rows, err, code = cap.stop()
    assert code == 0, err
    syn4 = one(tcp(rows), flags="S", family=4)
    assert syn4["match"] == "listener"
    assert syn4["src"] == "127.0.0.1" and syn4["dst"] == "127.0.0.1"
    assert syn4["receiver"]["local"] == f"[::]:{port}"
    assert holder_pairs(syn4["receiver"]) == {(server.pid, lst["fd"])}
    d4 = one(tcp(rows), family=4, payload_len=2)
    assert d4["match"] == "established"
    assert d4["receiver"]["local"] == f"[::ffff:127.0.0.1]:{port}"
    assert holder_pairs(d4["receiver"]) == {(server.pid, acc4["fd"])}
    assert holder_pairs(d4["sender"]) == {(c4.pid, conn4["fd"])}
    d6 = one(tcp(rows), family=6, payload_len=2)
    assert d6["src"] == "::1" and d6["dst"] == "::1"
    assert holder_pairs(d6["receiver"]) == {(server.pid, acc6["fd"])}
    assert holder_pairs(d6["sender"]) == {(c6.pid, conn6["fd"])}


def test_specific_address_listener_beats_wildcard(conntui, actors, port):
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    wild, spec, client = actors(), actors(), actors()
    lw = wild("listen", host="0.0.0.0", port=port, reuseport=True)
    ls = spec("listen", host="127.0.0.2", port=port, reuseport=True)
    c1 = client("connect", host="127.0.0.2", port=port)
    c2 = client("connect", host="127.0.0.1", port=port)
    rows, err, code = cap.stop()
    assert code == 0, err
    s1 = one(tcp(rows), flags="S", dst="127.0.0.2", sport=c1["local"][1])
    assert s1["match"] == "listener"
    assert holder_pairs(s1["receiver"]) == {(spec.pid, ls["fd"])}
    s2 = one(tcp(rows), flags="S", dst="127.0.0.1", sport=c2["local"][1])
    assert holder_pairs(s2["receiver"]) == {(wild.pid, lw["fd"])}


def test_listener_that_never_accepts_fills_its_accept_queue(conntui, actors, port):
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    server, client = actors(), actors()
    lst = server("listen", host="127.0.0.1", port=port, backlog=5)
    conn = client("connect", host="127.0.0.1", port=port)
    time.sleep(0.2)
    client("send", fd=conn["fd"], data="waiting")
    rows, err, code = cap.stop()
    assert code == 0, err
    data = one(tcp(rows), dport=port, payload_len=7)
    assert data["match"] == "accept_queue"
    assert data["receiver"]["holders"] == []
    assert data["receiver"]["inode"] is None
    assert holder_pairs(data["listener"]) == {(server.pid, lst["fd"])}
    assert f"fd {lst['fd']}" in data["explain"]
    assert str(server.pid) in data["explain"]
    assert "backlog 5" in data["explain"] or "5" in data["explain"]


def test_data_before_accept_names_the_process_that_accepts_it_later(conntui, actors, port):
    # The client's data reaches the connection while it waits in the accept queue: the
    # look-up at capture time finds no holder; when the row is handed on (after --settle),
    # the server has accept()ed it and the row names the accepting pid and fd, with a note.
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    server, client = actors(), actors()
    lst = server("listen", host="127.0.0.1", port=port)
    conn = client("connect", host="127.0.0.1", port=port)
    client("send", fd=conn["fd"], data="early")
    time.sleep(0.3)  # past the first look-up again (15 ms on), before the row is handed on (0.5 s)
    acc = server("accept", fd=lst["fd"])
    rows, err, code = cap.stop()
    assert code == 0, err
    data = one(tcp(rows), dport=port, payload_len=5)
    assert data["match"] in ("accept_queue", "established")
    assert holder_pairs(data["receiver"]) == {(server.pid, acc["fd"])}
    assert any("accept()ed it later" in n for n in data["notes"]), data["notes"]
    assert holder_pairs(data["sender"]) == {(client.pid, conn["fd"])}


def test_syn_to_closed_port_gets_a_kernel_rst(conntui, actors, port):
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    client = actors()
    reply = client("connect", host="127.0.0.1", port=port)
    assert reply.get("error")  # connection refused
    rows, err, code = cap.stop()
    assert code == 0, err
    syn = one(tcp(rows), flags="S", dport=port)
    assert syn["match"] == "none"
    assert syn["receiver"] is None
    # The refused client socket is unhashed microseconds after the RST, often before any
    # look-up can see it; when it was seen, it must be the client's.
    if syn["sender"] is not None:
        assert {pid for pid, _ in holder_pairs(syn["sender"])} <= {client.pid}
    rst = next(r for r in tcp(rows) if r["sport"] == port and "R" in r["flags"])
    assert rst["sender"] is None
    assert "kernel" in rst["sender_explain"].lower()


def test_udp_unconnected_server_and_connected_client(conntui, actors, port):
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    server, a, b = actors(), actors(), actors()
    srv = server("udp", host="127.0.0.1", port=port)
    ua = a("udp", host="127.0.0.1")
    ub = b("udp", host="127.0.0.1", connect=["127.0.0.1", port])
    a("sendto", fd=ua["fd"], data="from-a", to=["127.0.0.1", port])
    b("sendto", fd=ub["fd"], data="from-b!")
    got = {server("recvfrom", fd=srv["fd"])["data"], server("recvfrom", fd=srv["fd"])["data"]}
    assert got == {"from-a", "from-b!"}
    server("sendto", fd=srv["fd"], data="reply-b", to=["127.0.0.1", ub["local"][1]])
    assert b("recvfrom", fd=ub["fd"])["data"] == "reply-b"
    rows, err, code = cap.stop()
    assert code == 0, err
    udp = [r for r in rows if r["proto"] == "udp"]
    ra = one(udp, payload_len=6)
    assert ra["match"] == "udp_unconnected"
    assert holder_pairs(ra["receiver"]) == {(server.pid, srv["fd"])}
    assert holder_pairs(ra["sender"]) == {(a.pid, ua["fd"])}
    rb = one(udp, payload_len=7, dport=port)
    assert rb["match"] == "udp_unconnected"
    assert holder_pairs(rb["sender"]) == {(b.pid, ub["fd"])}
    back = one(udp, sport=port)
    assert back["match"] == "udp_connected"
    assert holder_pairs(back["receiver"]) == {(b.pid, ub["fd"])}
    assert holder_pairs(back["sender"]) == {(server.pid, srv["fd"])}


def test_socket_shared_across_fork_lists_both_holders(conntui, actors, port):
    server, client = actors(), actors()
    lst = server("listen", host="127.0.0.1", port=port)
    child = server("fork_hold")["child"]
    time.sleep(0.2)
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    client("connect", host="127.0.0.1", port=port)
    rows, err, code = cap.stop()
    assert code == 0, err
    syn = one(tcp(rows), flags="S", dport=port)
    assert holder_pairs(syn["receiver"]) == {(server.pid, lst["fd"]), (child, lst["fd"])}


def test_write_then_read_back_gives_the_same_attributions(conntui, actors, port, tmp_path):
    out = tmp_path / "session.pcapng"
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port), "-w", str(out))
    server, client = actors(), actors()
    lst = server("listen", host="127.0.0.1", port=port)
    conn = client("connect", host="127.0.0.1", port=port)
    acc = server("accept", fd=lst["fd"])
    client("send", fd=conn["fd"], data="saved")
    server("recv", fd=acc["fd"], n=5)
    live, err, code = cap.stop(signal.SIGTERM)
    assert code == 0, err
    assert live
    back = conntui("-r", str(out), "--headless", "--json", ready=False)
    rows, err2, code2 = back.wait()
    assert code2 == 0, err2
    assert len(rows) == len(live)
    for a, b in zip(live, rows, strict=True):
        for key in (
            "src",
            "sport",
            "dst",
            "dport",
            "flags",
            "payload_len",
            "match",
            "receiver",
            "sender",
            "explain",
            "iface",
        ):
            assert a[key] == b[key], key
        assert abs(a["ts"] - b["ts"]) < 1e-5


@pytest.mark.parametrize("path", ["c", "python"])
def test_a_quiet_capture_file_names_every_segments_holders_on_both_paths(
    conntui, actors, port, tmp_path, path
):
    """``-q -w``: rows are handed on by the C emit (or, with CONNTUI_PURE=1, the Python
    loop users without a compiler get); most data segments are taken by the C fast path.
    Read back, every data segment names the sockets this test opened."""
    out = tmp_path / "quiet.pcapng"
    env = {"CONNTUI_PURE": "1" if path == "python" else "0"}
    cap = conntui("--headless", "-q", "-i", "lo", "-p", str(port), "-w", str(out), env=env)
    server, client = actors(), actors()
    lst = server("listen", host="127.0.0.1", port=port)
    conn = client("connect", host="127.0.0.1", port=port)
    acc = server("accept", fd=lst["fd"])
    for i in range(40):
        client("send", fd=conn["fd"], data=f"m{i:03d}")
        server("recv", fd=acc["fd"], n=4)
        server("send", fd=acc["fd"], data=f"r{i:03d}")
        client("recv", fd=conn["fd"], n=4)
    _, err, code = cap.stop(signal.SIGTERM)
    assert code == 0, err
    version = subprocess.run(
        [sys.executable, "-m", "conntui", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    ).stdout
    assert ("C accelerator" in version) == (path == "c"), version
    back = conntui("-r", str(out), "--headless", "--json", ready=False)
    rows, err2, code2 = back.wait()
    assert code2 == 0, err2
    data = [r for r in tcp(rows) if r["payload_len"] == 4]
    assert len(data) == 80
    for r in data:
        assert r["match"] == "established", r
        to_server = r["dport"] == port
        srv, cli = {(server.pid, acc["fd"])}, {(client.pid, conn["fd"])}
        assert holder_pairs(r["receiver"]) == (srv if to_server else cli)
        assert holder_pairs(r["sender"]) == (cli if to_server else srv)


@pytest.mark.skipif(
    shutil.which("tcpdump") is None, reason="tcpdump not installed (the README's test line installs it)"
)
def test_segment_count_on_lo_equals_tcpdumps(conntui, actors, port, tmp_path):
    dump = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            "lo",
            "-nn",
            "-w",
            str(tmp_path / "td.pcap"),
            f"tcp port {port} or udp port {port}",
        ],
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    server, client = actors(), actors()
    lst = server("listen", host="127.0.0.1", port=port)
    for _ in range(3):
        conn = client("connect", host="127.0.0.1", port=port)
        acc = server("accept", fd=lst["fd"])
        client("send", fd=conn["fd"], data="x" * 100)
        server("recv", fd=acc["fd"], n=100)
        client("close", fd=conn["fd"])
        server("close", fd=acc["fd"])
    u = client("udp", host="127.0.0.1")
    for _ in range(5):
        client("sendto", fd=u["fd"], data="ping", to=["127.0.0.1", port])
    rows, err, code = cap.stop(settle=1.0)
    dump.send_signal(signal.SIGINT)
    _, td_err = dump.communicate(timeout=10)
    m = re.search(rb"(\d+) packets? captured", td_err)
    assert m, td_err
    assert code == 0, err
    assert len(rows) == int(m.group(1))
    assert re.search(rf"^{len(rows)} segments captured$", err, re.M), err


def test_bad_input_gives_one_line_and_nonzero_exit(conntui, tmp_path):
    cases = [
        (["--headless", "-i", "nosuchif0"], "unknown interface"),
        (["--headless", "-i", "lo", "tcp", "port", "nonsense"], "bad filter"),
        (["--headless", "-p", "99999"], "bad port"),
        (["--headless", "-i", "lo", "-w", "/nonexistent-dir/x.pcapng"], "x.pcapng"),
        (["-r", str(tmp_path / "missing.pcapng"), "--headless"], "missing.pcapng"),
    ]
    for args, needle in cases:
        c = conntui(*args, ready=False)
        _, err, code = c.wait(timeout=30)
        assert code != 0, args
        lines = err.strip().splitlines()
        assert len(lines) == 1, (args, err)
        assert needle in lines[0], (args, err)
        assert "Traceback" not in err


def test_without_capture_privileges_it_says_how_to_run_it():
    # Root without CAP_NET_RAW/CAP_NET_ADMIN: what an unprivileged user gets.
    proc = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-net_raw,-net_admin",
            "--inh-caps=-all",
            sys.executable,
            "-m",
            "conntui",
            "--headless",
            "-i",
            "lo",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "needs root" in lines[0] and "sudo conntui" in lines[0]


def test_no_socket_predictions_are_checked_against_the_kernels_answer(conntui, actors, port):
    cap = conntui("--headless", "--json", "-i", "lo", "-p", str(port))
    client = actors()
    assert client("connect", host="127.0.0.1", port=port).get("error")
    u = client("udp", host="127.0.0.1")
    client("sendto", fd=u["fd"], data="anyone?", to=["127.0.0.1", port])
    rows, err, code = cap.stop(settle=1.0)
    assert code == 0, err
    syn = one(tcp(rows), flags="S", dport=port)
    rst = next(r for r in tcp(rows) if r["sport"] == port and "R" in r["flags"])
    assert syn["match"] == "none"
    assert any("answered with a RST" in n for n in syn["notes"]), syn["notes"]
    assert rst["record"] in syn["related"] and syn["record"] in rst["related"]
    dgram = one([r for r in rows if r["proto"] == "udp"], dport=port)
    assert dgram["match"] == "none" and dgram["receiver"] is None
    verified = [n for n in dgram["notes"] if n.startswith("verified") and "ICMP port unreachable" in n]
    assert verified, dgram["notes"]
