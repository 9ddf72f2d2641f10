"""conntui with Wireshark's own tools (issue 15): ``-w -`` streamed into the real tshark.

The sockets are the test's own (this process's pid, the fds it holds), so the comments
tshark prints can be checked against what the test opened.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conntui.wireshark import GLOBAL_NOTE

from ..unit.test_pcapng_pib import blocks, epb_options, pib
from .conftest import REPO, free_port

TSHARK = shutil.which("tshark") or "tshark"  # the Quick start installs it


@contextlib.contextmanager
def conversation(port: int) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A TCP connection on loopback held by this process: (client, accepted)."""
    lst = socket.create_server(("127.0.0.1", port))
    cli = socket.create_connection(("127.0.0.1", port), timeout=5)
    acc, _ = lst.accept()
    try:
        yield cli, acc
    finally:
        for s in (cli, acc, lst):
            s.close()


def exchange(cli: socket.socket, acc: socket.socket, i: int) -> None:
    cli.sendall(b"ping%04d" % i)
    acc.recv(100)
    acc.sendall(b"pong%04d" % i)
    cli.recv(100)


def read_lines(stream: int, buf: bytearray, timeout: float) -> list[str]:
    """Whatever whole lines arrive on ``stream`` within ``timeout`` seconds."""
    r, _, _ = select.select([stream], [], [], timeout)
    if r:
        chunk = os.read(stream, 65536)
        buf += chunk if chunk else b""
    *lines, rest = bytes(buf).split(b"\n")
    buf[:] = rest
    return [line.decode(errors="replace") for line in lines]


@pytest.mark.parametrize("how", ["-r", "-i"], ids=["read-stdin", "capture-from-pipe"])
def test_w_dash_streams_into_tshark_while_capturing(conntui, port, how):
    """``conntui -w - | tshark -r -`` (and ``tshark -i -``: dumpcap reading the pipe, as a
    live capture): tshark prints annotated packets while conntui still runs, and each
    comment names this test's pid and the fds of both ends. The connection is made before
    the capture starts, so every packet is data or ACK between sockets the table holds."""
    me = os.getpid()
    with conversation(port) as (cli, acc):
        cap = conntui("-w", "-", "-i", "lo", "-p", str(port), "--duration", "30")
        assert cap.proc.stdout is not None
        reader = subprocess.Popen(
            [TSHARK, "-l", "-n", how, "-", "-T", "fields", "-e", "frame.number", "-e", "frame.comment"],
            stdin=cap.proc.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        cap.proc.stdout.close()  # tshark holds the read end now
        try:
            got: list[str] = []
            buf = bytearray()
            assert reader.stdout is not None
            c, a = cli.fileno(), acc.fileno()
            want = [rf"\[{me}\] fd {c} → \S+\[{me}\] fd {a} ", rf"\[{me}\] fd {a} → \S+\[{me}\] fd {c} "]
            deadline = time.monotonic() + 20
            i = 0
            while time.monotonic() < deadline:
                exchange(cli, acc, i)
                i += 1
                got += read_lines(reader.stdout.fileno(), buf, 0.3)
                if all(any(re.search(w, line) for line in got) for w in want):
                    break
            assert cap.proc.poll() is None, "conntui ended before tshark printed its packets"
            assert all(any(re.search(w, line) for line in got) for w in want), got
            for line in got:
                number, comment = line.split("\t", 1)
                assert int(number) >= 1, line
                assert re.match(rf"conntui: \S+\[{me}\] fd ({c}|{a}) → \S+\[{me}\] fd ({c}|{a}) ", comment), (
                    line
                )
            cap.proc.send_signal(signal.SIGINT)
            _, err = cap.proc.communicate(timeout=20)
            assert cap.proc.returncode == 0, err
            assert b"Traceback" not in err
        finally:
            cap.kill()
            reader.kill()
            reader.wait()


@pytest.mark.parametrize("traffic", [True, False], ids=["packets-flowing", "idle"])
def test_w_dash_ends_with_one_line_when_its_reader_goes_away(conntui, port, traffic):
    """The reader exits (``| head -c``): conntui stops with one clear line, no traceback,
    whether packets are flowing (the write fails) or not (the flush sees the closed pipe)."""
    cap = conntui("-w", "-", "-i", "lo", "-p", str(port), "--duration", "30")
    assert cap.proc.stdout is not None
    head = os.read(cap.proc.stdout.fileno(), 4)
    assert head == b"\x0a\x0d\x0d\x0a"  # the section header, flushed at once
    cap.proc.stdout.close()
    start = time.monotonic()
    with conversation(port) as (cli, acc):
        for i in range(40 if traffic else 0):
            exchange(cli, acc, i)
            time.sleep(0.05)
        _, err = cap.proc.communicate(timeout=20)
    assert time.monotonic() - start < 10
    assert cap.proc.returncode == 0, err
    text = err.decode(errors="replace")
    assert "Traceback" not in text and "Exception" not in text, text
    lines = [line for line in text.splitlines() if "standard output" in line]
    assert lines == ["conntui: standard output was closed: its reader went away; stopping"], text


def test_w_dash_refuses_a_terminal(port):
    """Binary pcapng would garble a terminal: one line, exit 1."""
    main_fd, tty_fd = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "conntui", "-w", "-", "-i", "lo", "-p", str(port), "-c", "1"],
            stdout=tty_fd,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=30,
        )
    finally:
        os.close(tty_fd)
        os.close(main_fd)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip().splitlines() == [
        "conntui: -w -: standard output is a terminal; pipe it, e.g. conntui -w - | tshark -r -"
    ]


# --- extcap: conntui as a capture source ----------------------------------------------


def folders() -> dict[str, str]:
    out = subprocess.run([TSHARK, "-G", "folders"], capture_output=True, text=True, timeout=30).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def private_extcap(tmp_path: Path, cmd: list[str]) -> list[str]:
    """``cmd`` run where Wireshark's extcap folder is a fresh directory of this test.

    Wireshark >= 4.2 reads a personal extcap folder under HOME (a temporary HOME is enough);
    up to 4.0 there is only the global one (and WIRESHARK_EXTCAP_DIR is ignored as root):
    then ``cmd`` runs in a private mount namespace where a temporary directory is mounted
    over it, so the system's folder is never touched."""
    f = folders()
    if any(k.lower() == "personal extcap path" for k in f):
        return cmd
    shadow = tmp_path / "extcap"
    shadow.mkdir(exist_ok=True)
    script = 'mount --bind "$0" "$1" && shift && exec "$@"'
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        str(shadow),
        f["Extcap path"],
        *cmd,
    ]


def test_install_makes_tshark_list_the_conntui_interface(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    listed = private_extcap(tmp_path, [TSHARK, "-D"])
    before = subprocess.run(listed, capture_output=True, text=True, env=env, timeout=60)
    assert before.returncode == 0 and "conntui-any" not in before.stdout
    both = private_extcap(
        tmp_path, ["sh", "-c", f'"$0" -m conntui wireshark install && exec {TSHARK} -D', sys.executable]
    )
    after = subprocess.run(both, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert after.returncode == 0, after.stderr
    assert re.search(r"^\d+\. conntui-any \(conntui: any", after.stdout, re.M), after.stdout
    f = folders()
    personal = next((v for k, v in f.items() if k.lower() == "personal extcap path"), None)
    said = [line for line in after.stdout.splitlines() if line.startswith("extcap (capture source")]
    if personal is None:  # Wireshark up to 4.0 (Debian 12): the global folder, said in one line
        assert said == [f"extcap (capture source conntui-any): {f['Extcap path']}/conntui ({GLOBAL_NOTE})"]
    else:
        assert said == [f"extcap (capture source conntui-any): {personal}/conntui"]


def test_tshark_captures_annotated_packets_through_the_extcap(tmp_path, port):
    """``tshark -i conntui-any -c 20``: every packet of this test's connection names this
    process and the fd of each end, read by the installed Lua plugin."""
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    fields = [
        "tcp.srcport",
        "conntui.sender.pid",
        "conntui.sender.fd",
        "conntui.receiver.pid",
        "conntui.receiver.fd",
    ]
    capture = " ".join(
        [TSHARK, "-n", "-i", "conntui-any", "-f", f"'tcp port {port}'", "-c", "20", "-T", "fields"]
        + [f"-e {f}" for f in fields]
    )
    cmd = private_extcap(
        tmp_path,
        ["sh", "-c", f'"$0" -m conntui wireshark install >/dev/null && exec {capture}', sys.executable],
    )
    with conversation(port) as (cli, acc):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            i = 0
            while proc.poll() is None and time.monotonic() < deadline:
                exchange(cli, acc, i)
                i += 1
                time.sleep(0.05)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        client_port = cli.getsockname()[1]
        me = str(os.getpid())
        rows = [line.split("\t") for line in out.decode().splitlines()]
        assert proc.returncode == 0, err.decode(errors="replace")
        assert len(rows) == 20, (rows, err)
        for sport, spid, sfd, rpid, rfd in rows:
            from_client = int(sport) == client_port
            want = (cli, acc) if from_client else (acc, cli)
            assert (spid, sfd, rpid, rfd) == (me, str(want[0].fileno()), me, str(want[1].fileno())), rows


def test_w_dash_with_json_keeps_stdout_pure_pcapng(conntui, port, tmp_path):
    """``-w - --json``: the JSON lines go to stderr; standard output is nothing but the
    capture (tshark reads every packet of it, conntui's own reader agrees)."""
    cap = conntui("-w", "-", "--json", "-i", "lo", "-p", str(port), "--duration", "30")
    with conversation(port) as (cli, acc):
        for i in range(10):
            exchange(cli, acc, i)
        time.sleep(1.0)  # past --settle, so every row is written and printed
        cap.proc.send_signal(signal.SIGINT)
        out, err = cap.proc.communicate(timeout=20)
    assert cap.proc.returncode == 0, err
    path = tmp_path / "stdout.pcapng"
    path.write_bytes(out)
    res = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-T", "fields", "-e", "tcp.len"], capture_output=True
    )
    assert res.returncode == 0 and b"cut short" not in res.stderr, res.stderr
    lengths = [int(x) for x in res.stdout.split()]
    rows = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert len(rows) == len(lengths) and lengths.count(8) == 20  # 10 pings and 10 pongs
    assert sorted(r["payload_len"] for r in rows) == sorted(lengths)


# --- remote capture through Wireshark's own sshdump --------------------------------------

SSHD = "/usr/sbin/sshd"  # openssh-server, which the Quick start installs
PLUGIN = REPO / "conntui" / "wireshark" / "conntui.lua"
SIDES = ("conntui.sender.pid", "conntui.sender.fd", "conntui.receiver.pid", "conntui.receiver.fd")


@contextlib.contextmanager
def private_sshd(tmp_path: Path) -> Iterator[tuple[int, Path, list[psutil.Process]]]:
    """An sshd of this test only, on a free loopback port: its own config, host key and
    authorized key in ``tmp_path``, nothing of the system's sshd used or changed (but
    ``/run/sshd``, the privilege separation folder compiled into sshd, made if missing and
    removed again). Yields (port, the client's private key, a list the caller fills with
    processes to reap); every process sshd started is killed afterwards."""
    d = tmp_path / "sshd"
    d.mkdir(mode=0o700)
    for key in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True, timeout=30
        )
    (d / "authorized_keys").write_bytes((d / "client.pub").read_bytes())
    made_run = not os.path.isdir("/run/sshd")
    if made_run:
        os.mkdir("/run/sshd", 0o755)
    log = open(d / "sshd.log", "wb")  # noqa: SIM115 (closed below)
    reap: list[psutil.Process] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(5):  # a port another program took meanwhile: sshd exits, try another
            port = free_port()
            (d / "sshd_config").write_text(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
                f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile none\nUsePAM no\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nAuthenticationMethods publickey\n"
                f"AllowUsers {getpass.getuser()}\nStrictModes no\nLogLevel VERBOSE\n"
            )
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
            deadline = time.monotonic() + 20
            listening = f"Server listening on 127.0.0.1 port {port}."
            while proc.poll() is None and listening not in (d / "sshd.log").read_text(errors="replace"):
                assert time.monotonic() < deadline, "sshd did not listen within 20 s"
                time.sleep(0.1)
            if proc.poll() is None:
                break
        assert proc is not None and proc.poll() is None, (d / "sshd.log").read_text(errors="replace")
        yield port, d / "client", reap
    finally:
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                reap += psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait()
        for p in reap:
            with contextlib.suppress(psutil.Error):
                p.kill()
                p.wait(10)
        log.close()
        if made_run:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")


def test_remote_capture_through_sshdump_runs_conntui_as_the_remote_command(tmp_path, port):
    """Wireshark's own remote capture: ``tshark -i sshdump`` with the extcap options as
    preferences, sshdump logging in to a private sshd and running ``conntui -w -`` there.
    Every packet of this test's connection names this process and the fd of each end
    (read by the plugin from the comments that came through ssh); when tshark has its 20
    packets the remote conntui ends by itself (its reader went away)."""
    fields = ["tcp.srcport", *SIDES, "conntui.match"]
    with private_sshd(tmp_path) as (ssh_port, key, reap):
        remote = shlex.join(
            # -P: the session starts in the user's home, which may hold a "conntui" directory
            # (the clone, in CI's fresh root): it must not shadow the installed package
            [
                sys.executable,
                "-P",
                "-m",
                "conntui",
                "-w",
                "-",
                "-i",
                "lo",
                "-p",
                str(port),
                "--duration",
                "120",
            ]
        )
        prefs = {
            "remotehost": "127.0.0.1",
            "remoteport": str(ssh_port),
            "remoteusername": getpass.getuser(),
            "sshkey": str(key),
            "remotecapturecommand": remote,
        }
        cmd = [TSHARK, "-n", "-X", f"lua_script:{PLUGIN}", "-i", "sshdump", "-c", "20", "-T", "fields"]
        cmd += [arg for k, v in prefs.items() for arg in ("-o", f"extcap.sshdump.{k}:{v}")]
        cmd += [arg for f in fields for arg in ("-e", f)]
        env = {**os.environ, "HOME": str(tmp_path / "home")}  # no personal preferences
        with conversation(port) as (cli, acc):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            try:
                remotes: list[psutil.Process] = []
                deadline = time.monotonic() + 90
                i = 0
                while proc.poll() is None and time.monotonic() < deadline:
                    exchange(cli, acc, i)
                    i += 1
                    if not remotes:
                        remotes = [
                            p
                            for p in psutil.process_iter(["cmdline"])
                            if p.info["cmdline"] and p.info["cmdline"][1:] == shlex.split(remote)[1:]
                        ]
                        reap += remotes
                    time.sleep(0.05)
                out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            client_port = cli.getsockname()[1]
            fds = {
                True: (str(cli.fileno()), str(acc.fileno())),
                False: (str(acc.fileno()), str(cli.fileno())),
            }
        log = (tmp_path / "sshd" / "sshd.log").read_text(errors="replace")
        assert proc.returncode == 0, (err.decode(errors="replace"), log)
        assert "Accepted publickey for" in log, log
        rows = [line.split("\t") for line in out.decode().splitlines()]
        assert len(rows) == 20, (rows, err)
        me = str(os.getpid())
        for sport, spid, sfd, rpid, rfd, match in rows:
            send_fd, recv_fd = fds[int(sport) == client_port]
            assert (spid, sfd, rpid, rfd) == (me, send_fd, me, recv_fd), rows
            assert match == "established", rows
        assert len(remotes) == 1, "the remote conntui was not found among the processes"
        _, alive = psutil.wait_procs(remotes, timeout=30)
        assert not alive, "the remote conntui still runs after tshark stopped"


# --- --pcapng-pib: process information blocks, live ------------------------------------


def test_pcapng_pib_names_this_process_on_every_packet_of_a_live_capture(conntui, port, tmp_path):
    """``-w FILE --pcapng-pib`` on a live capture (where the C fast path writes most packets
    otherwise): this process is in a PIB with its name before its first packet, and every
    packet of its connection names it in ``epb_processid_threadid``; tshark reads it all."""
    path = tmp_path / "pib.pcapng"
    me = os.getpid()
    comm = Path("/proc/self/comm").read_text().strip()
    with conversation(port) as (cli, acc):
        cap = conntui("-w", str(path), "--pcapng-pib", "-i", "lo", "-p", str(port), "--headless", "-q")
        for i in range(200):
            exchange(cli, acc, i)
        time.sleep(1.0)  # past --settle, so every row is written
        cap.proc.send_signal(signal.SIGINT)
        _, err = cap.proc.communicate(timeout=30)
    assert cap.proc.returncode == 0, err
    got = blocks(path.read_bytes())
    pibs = [(i, pib(body)) for i, (t, body) in enumerate(got) if t == 0xBAD]
    mine = [i for i, (pid, opts) in pibs if pid == me and opts.get(2) == comm.encode()]
    assert mine, pibs
    epbs = [(i, epb_options(body)) for i, (t, body) in enumerate(got) if t == 6]
    assert len(epbs) >= 400, len(epbs)  # 200 pings, 200 pongs, and pure ACKs
    assert all(i > mine[0] for i, _ in epbs)  # the process first, then its packets
    assert all(o.get(8) == struct.pack("<II", me, 0) for _, o in epbs), [o.get(8) for _, o in epbs]
    res = subprocess.run([TSHARK, "-n", "-r", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.count("\n") == len(got) - 2, res.stderr


def test_the_issues_filter_on_a_file_conntui_wrote_live(conntui, port, tmp_path):
    """The commands of the issue on a real capture: ``-Y 'conntui.match == "none"'`` keeps
    the segments of a connect() to a closed port (no receiving process), and
    ``conntui.receiver.pid``/``.fd`` select exactly one direction of this test's own
    connection (most of whose packets carry only a reference). The refused socket is bound
    first, so its segments are told from any other traffic on these ports."""
    closed = free_port()
    path = tmp_path / "live.pcapng"
    with conversation(port) as (cli, acc):
        cap = conntui("-w", str(path), "-i", "lo", "-p", f"{port},{closed}", "--headless", "-q")
        for i in range(30):
            exchange(cli, acc, i)
        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))
        knocked = refused.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            refused.connect(("127.0.0.1", closed))
        refused.close()
        time.sleep(1.0)  # past --settle, so every row is written
        cap.proc.send_signal(signal.SIGINT)
        _, err = cap.proc.communicate(timeout=30)
        client_port, acc_fd = cli.getsockname()[1], acc.fileno()
    assert cap.proc.returncode == 0, err

    def fields(display_filter: str, *names: str) -> list[list[str]]:
        args = [TSHARK, "-n", "-X", f"lua_script:{PLUGIN}", "-r", str(path), "-Y", display_filter]
        res = subprocess.run(
            args + ["-T", "fields"] + [arg for f in names for arg in ("-e", f)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0 and "Lua" not in res.stderr, res.stderr
        return [line.split("\t") for line in res.stdout.splitlines()]

    ends = {(knocked, closed), (closed, knocked)}
    none = fields('conntui.match == "none"', "tcp.srcport", "tcp.dstport", "conntui.receiver.process")
    ours = [r for r in none if (int(r[0]), int(r[1])) in ends]
    assert [knocked, closed] in [[int(r[0]), int(r[1])] for r in ours], none  # the SYN
    assert all(r[2] == "" for r in ours), ours
    everything = fields("tcp", "tcp.srcport", "tcp.dstport", "conntui.match")
    knock = [m for s, d, m in everything if (int(s), int(d)) == (knocked, closed)]
    assert knock and set(knock) == {"none"}, everything  # the SYN (and a retry): nobody
    mine = f"conntui.receiver.pid == {os.getpid()} && conntui.receiver.fd == {acc_fd}"
    to_server = fields(mine, "tcp.srcport", "tcp.dstport")
    assert {(int(s), int(d)) for s, d in to_server} == {(client_port, port)}, to_server
    assert len(to_server) == len([r for r in everything if (int(r[0]), int(r[1])) == (client_port, port)])
    assert len(to_server) >= 30
