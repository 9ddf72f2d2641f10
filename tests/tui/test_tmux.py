"""The real binary in a real terminal (tmux), as root, on ``lo`` with real traffic: the
screen shows this test's own pid and fds on the right rows, and ``q`` quits cleanly."""

from __future__ import annotations

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
