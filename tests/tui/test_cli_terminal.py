"""The command line as a person meets it: the help, a bad number, and a pipe.

Started with standard output not a terminal (``conntui | grep ...``, ``> file``), conntui
runs headless as tcpdump would, says so in one line on stderr, and stops at --duration:
never a TUI nobody sees, spinning in a pipe.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORT = 29471  # this test's own, below the ephemeral range (grep tests/ before reusing it)


def conntui(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conntui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def test_help_names_lab_and_puts_each_example_on_its_own_line() -> None:
    out = conntui("--help").stdout
    lines = out.splitlines()
    assert "  sudo conntui -i lo -p 8080" in lines
    assert "  sudo conntui --headless --json -c 20 tcp port 443" in lines
    assert "  conntui -r session.pcapng --headless" in lines
    assert any(line.strip().startswith("sudo conntui lab") for line in lines)


@pytest.mark.parametrize("argv", [["--settle", "abc"], ["-c", "abc"], ["--duration", "x"], ["--nope"]])
def test_a_bad_option_is_one_line_and_exit_code_2(argv: list[str]) -> None:
    done = conntui(*argv)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("conntui: "), done.stderr
    assert "usage:" not in done.stderr and "Traceback" not in done.stderr
    assert argv[0].lstrip("-") in err[0] or "count" in err[0]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (packet capture)")
def test_with_stdout_a_pipe_it_runs_headless_and_stops_at_duration() -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", PORT))
    srv.listen(4)
    stop = threading.Event()
    ends: list[socket.socket] = []
    fds: list[int] = []

    def traffic() -> None:  # one connection, a ping every 0.2 s while conntui captures
        client = socket.create_connection(("127.0.0.1", PORT), timeout=2)
        conn, _ = srv.accept()
        ends.extend((client, conn))
        fds.extend((client.fileno(), conn.fileno()))
        time.sleep(1.2)  # a socket table refresh: the accepted fd is known
        deadline = time.monotonic() + 8
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                client.sendall(b"ping")
                conn.recv(16)
            except OSError:
                return
            stop.wait(0.2)

    worker = threading.Thread(target=traffic, daemon=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conntui", "-i", "lo", "-p", str(PORT), "--duration", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    started = time.monotonic()
    try:
        time.sleep(1.0)  # capture up
        worker.start()
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - started
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        worker.join(5)
        for end in (*ends, srv):
            end.close()
    assert proc.returncode == 0, err
    assert took < 12, took  # --duration 3, plus start-up and the settle time
    notes = [line for line in err.splitlines() if "not a terminal" in line]
    assert len(notes) == 1 and "headless" in notes[0], err
    assert "\x1b[" not in out  # lines, not a screen
    rows = [line for line in out.splitlines() if f":{PORT}" in line]
    assert rows, (out, err)
    client, conn = fds
    pid = os.getpid()
    assert any(
        f"[{pid}] fd {client} → " in line and f"[{pid}] fd {conn} (established)" in line for line in rows
    ), rows


@pytest.mark.root
def test_with_stdin_not_a_terminal_it_runs_headless_instead_of_a_tui_nobody_can_quit() -> None:
    """``sudo conntui < /dev/null`` (or started by a script in the background) on a terminal:
    the TUI could never read a key (Textual's input thread spun at full CPU on the end of
    its input, and q never came). conntui says so in one line and runs headless."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conntui", "-i", "lo", "-p", str(PORT + 1), "--duration", "2"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if select.select([master], [], [], 0.5)[0]:
                    out += os.read(master, 65536)
            except OSError:
                break
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            while select.select([master], [], [], 0.2)[0]:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                out += chunk
        os.close(master)
    text = out.decode(errors="replace")
    assert code == 0, text
    notes = [line for line in text.splitlines() if "standard input is not a terminal" in line]
    assert len(notes) == 1 and "headless" in notes[0], text
    assert "\x1b[?1049h" not in text  # no alternate screen: no TUI was drawn
