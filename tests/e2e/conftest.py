"""End-to-end harness: real processes holding real sockets, and conntui capturing on ``lo``.

Every test here runs as root (CI does); they are skipped only where root is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent.parent

pytestmark = pytest.mark.root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real packet capture); CI runs as root")
    for item in items:
        if "e2e" in item.nodeid:
            item.add_marker(skip)


class Actor:
    """A separate process that opens sockets on command (see actor.py)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "actor.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self._read(10)
        self.pid: int = hello["pid"]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise TimeoutError("actor did not answer")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("actor exited")
        return json.loads(line)

    def __call__(self, op: str, timeout: float = 10, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(timeout)
        if "error" in reply and op != "connect":
            raise RuntimeError(f"actor {op} failed: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                self("exit", timeout=5)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def actors() -> Iterator[Any]:
    made: list[Actor] = []

    def make() -> Actor:
        a = Actor()
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for TCP and UDP on loopback, away from the ephemeral range."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        port = random.randint(20000, 30000)
        ok = True
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(fam, kind)
            try:
                s.bind((host, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise RuntimeError("no free port")


@pytest.fixture
def port() -> int:
    return free_port()


class Conntui:
    """``conntui --headless --json`` capturing in a subprocess."""

    def __init__(self, *args: str, ready: bool = True, env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "conntui", *args]
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        self.stderr_head = b""
        if ready:
            self._wait_ready()

    def _wait_ready(self, timeout: float = 15) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stderr.fileno()
        while b"listening on" not in buf and b"reading from" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"conntui did not start: {buf.decode(errors='replace')}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                buf += chunk
        self.stderr_head = buf

    def stop(self, sig: int = signal.SIGINT, settle: float = 0.6) -> tuple[list[dict[str, Any]], str, int]:
        time.sleep(settle)  # let the last segments through the pipeline
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.parse(out), (self.stderr_head + err).decode(errors="replace"), self.proc.returncode

    def wait(self, timeout: float = 30) -> tuple[list[dict[str, Any]], str, int]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.parse(out), (self.stderr_head + err).decode(errors="replace"), self.proc.returncode

    @staticmethod
    def parse(out: bytes) -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.decode().splitlines() if line.strip()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def conntui() -> Iterator[Any]:
    made: list[Conntui] = []

    def start(*args: str, ready: bool = True, env: dict[str, str] | None = None) -> Conntui:
        c = Conntui(*args, ready=False, env=env)
        made.append(c)  # killed at the end even when it never says it is ready
        if ready:
            c._wait_ready()
        return c

    yield start
    for c in made:
        c.kill()


def holder_pairs(sock: dict[str, Any] | None) -> set[tuple[int, int]]:
    if not sock:
        return set()
    return {(h["pid"], h["fd"]) for h in sock["holders"]}
