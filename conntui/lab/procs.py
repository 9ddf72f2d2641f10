"""Programs the lab runs inside its namespaces, and their JSON-line conversations.

``Program`` starts any command under ``ip netns exec`` in its own session (so a Ctrl-C on
the terminal reaches the lab, which then stops everything in order) and reads its stdout
as JSON lines on a thread. ``Actor`` speaks the request/reply protocol of
``conntui.lab.actor``; Node scripts just print events.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .netns import LabError, exec_prefix

Reply = dict[str, Any]


def package_env() -> dict[str, str]:
    """The environment for programs: this conntui importable, whatever the cwd."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def node_binary() -> str | None:
    return shutil.which("node")


class Program:
    """A process in a namespace whose stdout is a stream of JSON objects, one a line."""

    def __init__(self, ns: str, argv: Sequence[str], name: str) -> None:
        self.ns = ns
        self.name = name
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            [*exec_prefix(ns), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=package_env(),
            start_new_session=True,
        )
        self.pid = self.proc.pid  # ip netns exec execs the program: same pid
        self.lines: queue.Queue[Reply | None] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._read_stdout, name=f"lab-{name}-out", daemon=True).start()
        threading.Thread(target=self._read_stderr, name=f"lab-{name}-err", daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                self.stderr_tail.append(line)
                continue
            if isinstance(obj, dict):
                self.lines.put(obj)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())

    def _why_gone(self) -> str:
        tail = "; ".join(self.stderr_tail) or "no output"
        return f"{self.name} (pid {self.pid}) exited: {tail}"

    def next(self, timeout: float) -> Reply:
        """The next JSON line, or a ``LabError`` on timeout or exit."""
        try:
            obj = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise LabError(f"{self.name} (pid {self.pid}) said nothing for {timeout:g} s") from None
        if obj is None:
            self.lines.put(None)
            raise LabError(self._why_gone())
        return obj

    def send_line(self, obj: Reply) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise LabError(self._why_gone()) from None

    def stop(self, grace: float = 2.0) -> None:
        """Close stdin (the program's cue to exit), then TERM, then KILL. Never raises."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                self.proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)


class Actor(Program):
    """A ``conntui.lab.actor`` process: one command, one reply."""

    def __init__(self, ns: str, name: str, max_life: float = 120.0) -> None:
        argv = [sys.executable, "-m", "conntui.lab.actor", "--name", name, "--max-life", f"{max_life:g}"]
        super().__init__(ns, argv, name)
        hello = self.next(15)
        self.pid = int(hello["pid"])

    def __call__(
        self, op: str, *, timeout: float | None = None, allow_error: bool = False, **kw: Any
    ) -> Reply:
        self.send_line({"op": op, **kw})
        wait = timeout if timeout is not None else float(kw.get("timeout", 5)) + 5
        reply = self.next(wait)
        if "error" in reply and not allow_error:
            raise LabError(f"{self.name} {op} failed: {reply['error']}")
        return reply

    def stop(self, grace: float = 2.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(LabError):
                self.send_line({"op": "exit"})
        super().stop(grace)


class NodeScript(Program):
    """``node -e SOURCE`` in a namespace; the script prints JSON events."""

    def __init__(self, ns: str, source: str, name: str, args: Sequence[str] = ()) -> None:
        node = node_binary()
        if node is None:
            raise LabError("node is not on PATH")
        super().__init__(ns, [node, "-e", source, "--", *args], name)

    def expect(self, event: str, timeout: float = 10.0) -> Reply:
        """Skip to the next line whose ``event`` is ``event``."""
        while True:
            obj = self.next(timeout)
            if obj.get("event") == event:
                return obj
            if obj.get("event") == "error":
                raise LabError(f"{self.name}: {obj.get('error')}")
