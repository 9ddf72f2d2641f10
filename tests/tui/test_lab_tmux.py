"""``conntui lab`` in a real terminal (tmux): while the TUI runs, the scenario's title and
what to watch stay on screen (before, the TUI covered the text printed before it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, capture)"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)"),
]


def test_the_lab_tui_shows_what_to_watch() -> None:
    sock = f"conntui-labnote-{os.getpid()}"
    tmux = ["tmux", "-L", sock]
    lab = f"env -u COLUMNS -u LINES {sys.executable} -m conntui lab udp-demux"
    cmd = f"cd {ROOT} && {lab}; echo LAB-EXIT=$?; sleep 30"
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "lab", "-x", "160", "-y", "48", cmd], check=True, timeout=10
    )

    subprocess.run([*tmux, "resize-window", "-t", "lab", "-x", "160", "-y", "48"], timeout=10)

    def pane() -> str:
        got = subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "lab"], capture_output=True, text=True, timeout=10
        )
        return got.stdout

    try:
        deadline = time.monotonic() + 30
        while "udp-catchall[" not in pane() and time.monotonic() < deadline:
            time.sleep(0.5)
        screen = pane()
        assert "udp-catchall[" in screen, screen  # the TUI is up and the traffic ran
        lines = screen.splitlines()
        assert lines[0].strip().startswith("udp-demux: who gets a datagram when there is no connection")
        assert any(line.strip() == "Watch for:" for line in lines[:3]), screen
        assert "the catch-all fd, although the connected socket is bound" in screen
        assert "Segments" in screen
        subprocess.run([*tmux, "send-keys", "-t", "lab", "q"], check=True, timeout=10)
        deadline = time.monotonic() + 20
        while "LAB-EXIT=" not in pane() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "LAB-EXIT=0" in pane(), pane()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
