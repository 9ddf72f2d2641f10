"""One line about a holder's process for the Details pane: user, start time, parents and
command line, read with psutil when the row is opened (never on the capture path).

The row names a process as it was when the segment came; by the time a person opens it the
pid may have exited or been reused. psutil's view is shown only while the pid still runs
the program the row names, otherwise the line says the process is gone or changed.
"""

from __future__ import annotations

import time

import psutil

from ..model import Holder

_PARENTS = 3  # parent chain shown up to this many steps


def process_line(holder: Holder) -> str:
    """``user root · started 14:05:01 · parents bash[12] ← sshd[1] · cmd python3 -m http.server``."""
    try:
        proc = psutil.Process(holder.pid)
        with proc.oneshot():
            name = proc.name()
            if not (name.startswith(holder.process[:15]) or holder.process.startswith(name)):
                return f"pid {holder.pid} now runs {name}: the process this row names has gone"
            parts = [
                f"user {proc.username()}",
                "started " + time.strftime("%H:%M:%S", time.localtime(proc.create_time())),
            ]
            chain: list[str] = []
            parent = proc.parent()
            while parent is not None and len(chain) < _PARENTS:
                chain.append(f"{parent.name()}[{parent.pid}]")
                parent = parent.parent()
            if chain:
                parts.append("parents " + " ← ".join(chain))
            cmd = " ".join(proc.cmdline())
            if cmd:
                parts.append("cmd " + (cmd if len(cmd) <= 120 else cmd[:119] + "…"))
        return " · ".join(parts)
    except psutil.NoSuchProcess:
        return "the process has exited"
    except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return ""
