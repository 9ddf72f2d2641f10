"""Privilege separation, read from ``/proc`` of the real processes (issue 17).

conntui (headless, and the TUI in tmux) runs its capture, parsing and rendering with no
capability, no_new_privs and a seccomp filter on every thread, while its helper
(``conntui-priv``, its child) keeps root's and answers the socket table's questions: a
socket held by a process of another user (whose ``/proc/PID/fd`` an unprivileged uid 0
may not read) is still attributed to the right pid and fd. A test hook shows the kernel
refusing an INET socket, an exec and a write outside ``-w``; killing the helper ends the
session with one line, exit code 1 and a complete file; killing conntui takes the helper
with it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conntui.capfile.reader import read_capture
from conntui.privsep import PROBE_ENV, PROBE_VALUE, sandbox

from .conftest import REPO, free_port

pytestmark = pytest.mark.root


def _children(pid: int, comm: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        head, _, tail = stat.rpartition(b") ")
        if int(tail.split()[1]) == pid and head.split(b" (", 1)[1] == comm.encode():
            out.append(int(name))
    return out


def _wait(cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    return cond()


def _confined(pid: int) -> list[dict[str, str]]:
    """Every thread's CapEff/CapPrm/NoNewPrivs/Seccomp (a thread that ends while they are
    read, such as a table refresh's short-lived helper thread, is left out)."""
    out = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            st = sandbox.status_fields(pid, tid)
        except FileNotFoundError:
            continue
        out.append({k: st[k] for k in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp")})
    return out


def _assert_confined(pid: int) -> None:
    threads = _confined(pid)
    assert len(threads) >= 2  # the capture loop's threads started after the drop are covered too
    for st in threads:
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0 and int(st["CapBnd"], 16) == 0, st
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st


def _helper_of(pid: int) -> int:
    helpers = _wait(lambda: _children(pid, "conntui-priv"), 10)
    assert len(helpers) == 1, helpers
    st = sandbox.status_fields(helpers[0])
    assert int(st["CapEff"], 16) != 0  # the helper keeps root's
    return int(helpers[0])


def _nobody_listener(port: int) -> subprocess.Popen[str]:
    """A listener of uid nobody: its /proc/PID/fd is out of an unprivileged root's reach."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen(8)\n"
        "print(s.fileno(), flush=True)\n"
        "c,_=s.accept(); print(c.fileno(), flush=True)\n"
        "c.recv(10); c.sendall(b'pong'); sys.stdin.read()\n"
    )
    return subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_headless_capture_is_confined_and_still_names_another_users_process(
    conntui: Any, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "s.pcapng"
    c = conntui("--privsep", "--headless", "--json", "-i", "lo", "-p", str(port), "-w", str(out))
    _assert_confined(c.proc.pid)
    helper = _helper_of(c.proc.pid)
    nobody = _nobody_listener(port)
    try:
        assert nobody.stdout is not None
        lfd = int(nobody.stdout.readline())
        # an unprivileged root may not read it; the helper may
        ls = subprocess.run(
            ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "ls", f"/proc/{nobody.pid}/fd"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert ls.returncode != 0 and "Permission denied" in ls.stderr, ls
        time.sleep(1.2)  # a refresh knows the listener
        with socket.create_connection(("127.0.0.1", port), timeout=5) as cl:
            afd = int(nobody.stdout.readline())
            cl.sendall(b"ping")
            assert cl.recv(10) == b"pong"
            me = (os.getpid(), cl.fileno())
            time.sleep(0.8)
        rows, err, code = c.stop()
    finally:
        nobody.kill()
        nobody.wait()
    assert code == 0, err
    assert "Traceback" not in err

    def holders(sock: dict[str, Any] | None) -> list[tuple[int, int]]:
        return [(h["pid"], h["fd"]) for h in (sock or {}).get("holders") or []]

    syn = [r for r in rows if r["flags"] == "S" and r["dport"] == port]
    assert syn and holders(syn[0]["receiver"]) == [(nobody.pid, lfd)], syn
    data = [r for r in rows if r["dport"] == port and r["payload_len"] == 4]
    assert data, rows
    assert holders(data[0]["receiver"]) == [(nobody.pid, afd)], data[0]
    assert holders(data[0]["sender"]) == [me], data[0]
    assert not os.path.exists(f"/proc/{helper}"), "the helper outlived conntui"


def test_the_parser_may_not_open_an_inet_socket_exec_or_write_elsewhere(conntui: Any, tmp_path: Path) -> None:
    c = conntui(
        "--privsep", "--headless", "-i", "lo", "-p", str(free_port()), "-w", str(tmp_path / "x.pcapng"),
        env={PROBE_ENV: PROBE_VALUE},
    )  # fmt: skip
    _assert_confined(c.proc.pid)
    _, err, code = c.stop()
    assert code == 0, err
    assert "conntui-probe: socket AF_INET: Operation not permitted" in err, err
    assert "conntui-probe: socket AF_INET6: Operation not permitted" in err, err
    assert "conntui-probe: exec: Operation not permitted" in err, err
    if sandbox.landlock_abi():
        assert "conntui-probe: write: Permission denied" in err, err
    else:
        assert "conntui-probe: write: allowed" in err, err
    assert not Path("/tmp/conntui-probe-write").exists() or not sandbox.landlock_abi()


def test_without_the_hook_nothing_is_probed(conntui: Any) -> None:
    c = conntui("--privsep", "--headless", "-i", "lo", "-p", str(free_port()), env={PROBE_ENV: "1"})
    _, err, code = c.stop()
    assert code == 0 and "conntui-probe" not in err, err


def test_by_default_a_live_capture_is_confined(conntui: Any) -> None:
    c = conntui("--headless", "-i", "lo", "-p", str(free_port()))
    _wait(lambda: sandbox.status_fields(c.proc.pid)["Seccomp"] == "2", 15)
    _assert_confined(c.proc.pid)
    _helper_of(c.proc.pid)
    _, err, code = c.stop()
    assert code == 0, err


def test_without_privsep_conntui_keeps_its_privileges(conntui: Any) -> None:
    c = conntui("--no-privsep", "--headless", "-i", "lo", "-p", str(free_port()))
    st = sandbox.status_fields(c.proc.pid)
    assert int(st["CapEff"], 16) != 0 and st["Seccomp"] == "0"
    assert _children(c.proc.pid, "conntui-priv") == []
    _, err, code = c.stop()
    assert code == 0, err


def test_a_dead_helper_ends_the_session_with_one_line_and_a_complete_file(
    conntui: Any, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "s.pcapng"
    c = conntui(
        "--privsep", "--headless", "--json", "-i", "lo", "-p", str(port), "-w", str(out), "--settle", "0"
    )
    helper = _helper_of(c.proc.pid)
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as cl:
            conn, _ = srv.accept()
            for _ in range(5):
                cl.sendall(b"ping")
                conn.recv(16)
            time.sleep(0.5)
            os.kill(helper, signal.SIGKILL)
            rows, err, code = c.wait(timeout=30)
            conn.close()
    finally:
        srv.close()
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if "privileged helper" in ln]
    assert lines == [
        f"conntui: the privileged helper (pid {helper}) was killed by SIGKILL: "
        "the session ended (the file, if any, is complete)"
    ], err
    assert "Traceback" not in err
    assert rows
    reader = read_capture(out)
    frames = sum(1 for _ in reader)
    assert (frames, reader.truncated) == (len(rows), 0)  # every printed segment, read to the end


def test_a_crashed_conntui_takes_its_helper_along_with_one_line(conntui: Any) -> None:
    c = conntui("--privsep", "--headless", "-i", "lo", "-p", str(free_port()))
    helper = _helper_of(c.proc.pid)
    assert _wait(lambda: sandbox.status_fields(c.proc.pid)["Seccomp"] == "2", 20)
    os.kill(c.proc.pid, signal.SIGSEGV)
    _, err, code = c.wait(timeout=30)  # the helper holds stderr until it has said its line
    assert code == -signal.SIGSEGV
    assert [ln for ln in err.splitlines() if "ended abruptly" in ln] == [
        f"conntui: the capture process (pid {c.proc.pid}) ended abruptly; the session is over "
        "(the file, if any, holds every block written before)"
    ], err
    assert _wait(lambda: not os.path.exists(f"/proc/{helper}") or _zombie(helper), 10)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b") ")[2][:1] == b"Z"
    except OSError:
        return True


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def test_the_tui_in_a_real_terminal_is_confined_too() -> None:
    port = free_port()
    session = f"conntui-privsep-{os.getpid()}"
    py = shlex.quote(sys.executable)
    cmd = f"cd {shlex.quote(str(REPO))} && exec {py} -m conntui --privsep -i lo -p {port}"
    _tmux(
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "200",
        "-y",
        "50",
        f"TERM=xterm-256color sh -c {shlex.quote(cmd)}",
    )
    try:
        up = _wait(lambda: "Segments" in _tmux("capture-pane", "-p", "-t", session), 30)
        assert up, _tmux("capture-pane", "-p", "-t", session)
        pane_pid = int(_tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
        _assert_confined(pane_pid)  # the shell exec'd conntui: the pane's process is conntui
        _helper_of(pane_pid)
        _tmux("send-keys", "-t", session, "q")
        assert _wait(lambda: not os.path.exists(f"/proc/{pane_pid}") or _zombie(pane_pid), 10)
    finally:
        _tmux("kill-session", "-t", session)


def test_once_confined_a_namespace_only_a_process_holds_is_still_found_and_read() -> None:
    """/proc/PID/ns/net of a root process is out of reach without capabilities (the kernel
    wants the reader's capabilities to cover the target's): the helper lists and opens them."""
    sleeper = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 60"])
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        ino = _wait(lambda: (i := os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino) != own and i, 10)
        _wait(lambda: b"sleep" in Path(f"/proc/{sleeper.pid}/comm").read_bytes(), 10)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # a confined conntui, in miniature
            os.close(r)
            out: dict[str, Any] = {}
            try:
                from conntui import privsep
                from conntui.sockets.namespaces import discover_namespaces
                from conntui.sockets.source import SocketTableSource

                priv = privsep.start()
                priv.drop([])
                try:
                    os.stat(f"/proc/{sleeper.pid}/ns/net")
                    out["direct"] = "allowed"
                except OSError as exc:
                    out["direct"] = exc.strerror
                infos = discover_namespaces()
                info = infos.get(ino)
                out["found"] = info is not None and info.pid == sleeper.pid
                if info is not None:
                    with SocketTableSource(netns_path=info.path) as src:
                        out["netns"] = src.netns_inode
                        out["addrs"] = sorted(src.addresses())
                priv.close()
            except BaseException as exc:  # reported to the parent
                out["error"] = f"{type(exc).__name__}: {exc}"
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        got = json.loads(data)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "error" not in got, got
    assert got["direct"] == "Permission denied"
    assert got["found"] is True
    assert got["netns"] == ino
    assert "127.0.0.1" in got["addrs"]


def test_ctrl_c_to_the_whole_process_group_ends_the_session_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals every process of its foreground group: the helper
    ignores it (and leaves the group), conntui ends the session as always."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "conntui", "--privsep", "--headless", "-i", "lo", "-p", str(free_port()),
         "-w", str(tmp_path / "c.pcapng")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        start_new_session=True,
    )  # fmt: skip
    try:
        helper = _helper_of(proc.pid)
        assert proc.stderr is not None
        head = b""
        deadline = time.monotonic() + 60
        while b"listening on" not in head and time.monotonic() < deadline:  # set up, confined
            head += os.read(proc.stderr.fileno(), 4096) or b""
        assert b"listening on" in head, head
        assert os.getpgid(helper) != proc.pid
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (head + err).decode(errors="replace")
    assert proc.returncode == 0, text
    assert "privileged helper" not in text and "Traceback" not in text, text
    assert _wait(lambda: not os.path.exists(f"/proc/{helper}") or _zombie(helper), 10)
