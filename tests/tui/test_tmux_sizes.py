"""The real binary in real terminals of 80x24 and 40x12 (tmux), on this test's own loopback
traffic: sender → receiver stays on screen with the fds, the footer keeps ``q Quit`` whole,
and no line of the list runs past its pane."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# this file's own ports, below the ephemeral range (grep tests/ before reusing them)
PORTS = {(80, 24): 29474, (40, 12): 29475}
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (packet capture)"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)"),
]


@pytest.mark.parametrize("size", list(PORTS), ids=[f"{w}x{h}" for w, h in PORTS])
def test_small_terminals_keep_sender_and_receiver(size: tuple[int, int]) -> None:
    width, height = size
    port = PORTS[size]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    sock = f"conntui-size-{os.getpid()}-{width}"
    tmux = ["tmux", "-L", sock]
    run = f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m conntui -i lo -p {port}"
    cmd = f"cd {shlex.quote(str(ROOT))} && {run}; sleep 5"
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), cmd],
        check=True,
        timeout=10,
    )
    subprocess.run([*tmux, "resize-window", "-t", "t", "-x", str(width), "-y", str(height)], timeout=10)

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "t"], capture_output=True, text=True, timeout=10
        ).stdout

    client = conn = None
    try:
        deadline = time.monotonic() + 15
        while "Segments" not in screen() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the socket table knows the listener
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        time.sleep(1.2)  # a refresh: the accepted fd is known
        want = f"fd {client.fileno()} → "
        text = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            client.sendall(b"ping")
            conn.recv(16)
            time.sleep(0.3)
            text = screen()
            if want in text and f"fd {conn.fileno()}" in text:
                break
        assert want in text and f"fd {conn.fileno()}" in text, text
        lines = text.splitlines()
        assert any("sender → receiver" in line for line in lines), text
        assert any("q Quit" in line for line in lines[-2:]), text
        assert all(len(line) <= width for line in lines), text
        # every list line inside its borders: ends with the border (no text across it)
        inside = [line for line in lines if line.startswith("│")]
        assert inside and all(line.rstrip().endswith("│") for line in inside), text
    finally:
        subprocess.run([*tmux, "send-keys", "-t", "t", "q"], timeout=10)
        time.sleep(0.5)
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
        for s in (client, conn, srv):
            if s is not None:
                s.close()
