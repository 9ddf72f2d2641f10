"""The real binary in a real terminal (tmux), as root, on ``lo`` with real traffic: the
screen shows this test's own pid and fds on the right rows, and ``q`` quits cleanly."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (packet capture)"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)"),
]


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def _screen(session: str) -> str:
    return _tmux("capture-pane", "-p", "-t", session)


def _wait_for(session: str, cond, timeout: float = 15.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = _screen(session)
        if cond(text):
            return text
        time.sleep(0.2)
    return text


def test_real_binary_shows_our_pid_and_fds() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    session = f"conntui-test-{os.getpid()}"
    cmd = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m conntui -i lo -p {port}; sleep 5"
    env_path = f"PYTHONPATH={shlex.quote(str(ROOT))}"
    _tmux(
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "220",
        "-y",
        "50",
        f"env -u COLUMNS -u LINES {env_path} TERM=xterm-256color sh -c {shlex.quote(cmd)}",
    )
    _tmux("resize-window", "-t", session, "-x", "220", "-y", "50")  # whatever other sessions say
    client = conn = None
    try:
        up = _wait_for(session, lambda t: "Segments" in t and "segments" in t)
        assert "Segments" in up, up
        time.sleep(1.0)  # the socket table knows the listener
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        time.sleep(1.2)  # one refresh: the accepted fd is known
        for _ in range(3):
            client.sendall(b"ping")
            conn.recv(16)
            conn.sendall(b"pong")
            client.recv(16)
            time.sleep(0.1)
        name = psutil.Process().name()[:20]
        me = f"{name}[{os.getpid()}]"
        listener_row = f"{me} fd {srv.fileno()}"
        server_fd = f"{me} fd {conn.fileno()}"
        client_fd = f"{me} fd {client.fileno()}"

        def rows_ok(text: str) -> bool:
            lines = text.splitlines()
            syn = any(" S " in line and "listener" in line and listener_row in line for line in lines)
            data = any(
                f":{port}" in line and "established" in line and f"{client_fd} → {server_fd}" in line
                for line in lines
            )
            back = any("established" in line and f"{server_fd} → {client_fd}" in line for line in lines)
            return syn and data and back

        text = _wait_for(session, rows_ok)
        assert rows_ok(text), text
        _tmux("send-keys", "-t", session, "q")
        gone = _wait_for(session, lambda t: "Segments" not in t, timeout=10)
        assert "Segments" not in gone and "Traceback" not in gone, gone
    finally:
        for s in (client, conn, srv):
            if s is not None:
                s.close()
        _tmux("kill-session", "-t", session)


# -- the terminal goes away, or Ctrl-C while starting -------------------------------------------


def _marked(marker: str) -> list[tuple[int, str]]:
    """(pid, name) of the live processes whose environment holds ``marker`` (conntui passes
    its environment on to bpftrace), zombies left out."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "environ", "status"]):
        env = proc.info["environ"] or {}
        if marker in env.values() and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append((proc.info["pid"], proc.info["name"]))
    return found


def _wait_until(cond, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def _start_in_pane(session: str, marker: str, shell: str) -> None:
    """conntui's TUI in a new tmux session's first pane, run by ``shell`` (a ``bash -c``
    script around ``{conntui}``), with ``marker`` in its environment; a second window keeps
    the session when the first pane goes."""
    conntui = (
        f"env CONNTUI_TEST_MARKER={marker} TERM=xterm-256color "
        f"{shlex.quote(sys.executable)} -m conntui -i lo -p {free_port()}"
    )
    cmd = f"cd {shlex.quote(str(ROOT))} && " + shell.format(conntui=conntui)
    env_path = f"PYTHONPATH={shlex.quote(str(ROOT))}"
    _tmux(
        "new-session", "-d", "-s", session, "-x", "160", "-y", "40",
        f"env -u COLUMNS -u LINES {env_path} bash -c {shlex.quote(cmd)}",
    )  # fmt: skip
    _tmux("new-window", "-d", "-t", session, "sleep 120")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conntui_pid(marker: str) -> int | None:
    return next((pid for pid, name in _marked(marker) if name.startswith("python")), None)


def _has_tracer(marker: str) -> bool:
    return any(name == "bpftrace" for _, name in _marked(marker))


@pytest.mark.skipif(shutil.which("bpftrace") is None, reason="needs bpftrace")
@pytest.mark.parametrize("when", ["loading", "tracer"])
def test_ctrl_c_while_the_tui_starts_exits_quietly(when: str) -> None:
    """Ctrl-C in the terminal while conntui (the TUI) still sets up, before it takes the
    terminal: exit code 130, no traceback, no bpftrace left (it runs in its own session:
    the terminal's Ctrl-C does not reach it)."""
    session = f"fx-ctrlc-{os.getpid()}-{when}"
    marker = session
    _start_in_pane(session, marker, '{conntui}; echo "EXIT=$?"; sleep 60')
    try:
        assert _wait_until(lambda: _conntui_pid(marker) is not None, 20)
        pid = _conntui_pid(marker)
        if when == "loading":  # conntui's own code loads (its C fast path is mapped)

            def loading() -> bool:
                with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
                    return "_fastpath" in f.read()
                return False

            assert _wait_until(loading, 20), "the C fast path is not built"
        else:
            assert _wait_until(lambda: _has_tracer(marker), 20), _screen(session)
        _tmux("send-keys", "-t", f"{session}:0", "C-c")
        text = _wait_for(f"{session}:0", lambda t: "EXIT=" in t, timeout=30)
        assert "Traceback" not in text, text
        assert "EXIT=130" in text and "conntui: interrupted" in text, text
        assert _wait_until(lambda: not _marked(marker), 10), _marked(marker)
    finally:
        _tmux("kill-session", "-t", session)
        for pid, _ in _marked(marker):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


@pytest.mark.skipif(shutil.which("bpftrace") is None, reason="needs bpftrace")
@pytest.mark.parametrize(
    "shell",
    [
        # the pane's shell (bash -c) ends on the hangup
        "{conntui}; sleep 60",
        # a shell that ignores SIGHUP and stays: the kernel sends SIGHUP only to the
        # session leader, so conntui gets none; its terminal just fails (EIO, EOF)
        'trap "" HUP; {conntui}; sleep 60',
    ],
    ids=["shell-ends", "shell-ignores-hup"],
)
def test_the_tui_ends_when_its_pane_is_killed(shell: str) -> None:
    """The terminal goes away (the tmux pane is killed, as when a window is closed or an SSH
    connection drops): conntui ends, and its tracer with it, instead of running on and
    spinning on a terminal that is not there."""
    session = f"fx-pane-{os.getpid()}-{len(shell)}"
    marker = session
    _start_in_pane(session, marker, shell)
    try:
        up = _wait_for(f"{session}:0", lambda t: "Segments" in t and "segments" in t)
        assert "Segments" in up, up
        assert _wait_until(lambda: _has_tracer(marker), 20), "no tracer"
        pid = _conntui_pid(marker)
        assert pid is not None
        _tmux("kill-pane", "-t", f"{session}:0")
        # a generous bound: conntui that never ends fails it; how fast is not the point
        assert _wait_until(lambda: not psutil.pid_exists(pid) or _is_zombie(pid), 30), "conntui still runs"
        assert _wait_until(lambda: not _marked(marker), 10), _marked(marker)
    finally:
        _tmux("kill-session", "-t", session)
        for left, _ in _marked(marker):
            with contextlib.suppress(psutil.Error):
                psutil.Process(left).kill()


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
