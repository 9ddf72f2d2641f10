"""Late holders: naming the process of a socket nobody held when its segment came.

A connection's first segments often reach it before the server calls accept(), and a
client socket may belong to a process not scanned yet: the look-up at capture time finds
the socket without a holder (``freshness.unheld``). Such rows are looked at again
``RECHECK_AFTER`` later (a connection held for 20 ms is often closed by the time the row is
handed on) and once more just before they are handed on, with one exact look-up per
socket in each of those rounds; the row's note says the holder came later.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from .freshness import unheld
from .model import Attribution, Record, SocketEntry
from .tablesource import TableSource

RECHECK_AFTER = 0.015  # seconds: a socket seen without a holder is looked up again this soon

Reattribute = Callable[[Record, Attribution], None]


class LateFills:
    """The rows waiting for a late holder, and the look-ups that name it."""

    def __init__(self, tables: TableSource, reattribute: Reattribute) -> None:
        self.tables = tables
        self._reattribute = reattribute
        self._late_checked: dict[tuple[str, int], float] = {}  # → when last looked up
        self._recheck: deque[tuple[float, Record]] = deque()  # (capture time, row): 15 ms on
        self._recheck_last: deque[tuple[float, Record]] = deque()  # and once more when handed on

    def watch(self, at: float, rec: Record, att: Attribution) -> None:
        """Look at ``rec`` again (stored at ``at``, monotonic) if a socket of ``att`` (its
        attribution when it was stored) is unheld."""
        if unheld(att.receiver) or unheld(att.sender):
            self._recheck.append((at, rec))

    def run(self, now: float, settle: float, final: bool = False) -> None:
        """The rounds due by ``now``: rows ``RECHECK_AFTER`` old, then the rows about to be
        handed on (``settle`` old: their last chance); every row when ``final``."""
        recheck, last = self._recheck, self._recheck_last
        while recheck and (final or recheck[0][0] <= now - RECHECK_AFTER):
            at, row = recheck.popleft()
            if not self.fill(row):
                last.append((at, row))
        while last and (final or last[0][0] <= now - settle):
            self.fill(last.popleft()[1])

    def fill(self, rec: Record) -> bool:
        """Name the process of a socket nobody held when its segment came, if one holds it
        now. True when nothing is left unnamed."""
        att = rec.attribution
        receiver, sender = att.receiver, att.sender
        if not (unheld(receiver) or unheld(sender)):
            return True
        seg = rec.segment
        table = self.tables.current()
        notes: list[str] = []

        def later(sock: SocketEntry | None, side: str) -> SocketEntry | None:
            nonlocal table
            if sock is None or not unheld(sock):
                return sock
            key = (sock.proto, sock.cookie)
            now = table.by_cookie(*key)
            clock = time.monotonic()
            # one exact look-up per socket per round (a flow's rows come in the same round)
            if (now is None or not now.holders) and clock - self._late_checked.get(
                key, -1.0
            ) >= RECHECK_AFTER:
                if len(self._late_checked) > 10_000:
                    self._late_checked.clear()
                self._late_checked[key] = clock
                fresher = self.tables.resolve(seg)
                if fresher is not None:
                    table = fresher
                    now = table.by_cookie(*key)
            if now is None or not now.holders:
                return sock
            if side == "receiver" and not sock.inode:
                notes.append(
                    f"not accept()ed yet when this segment came; {now.describe()} accept()ed it later"
                )
            else:
                notes.append(
                    f"the {side}'s process was not found when this segment came; {now.describe()} holds it"
                )
            return now

        new_receiver, new_sender = later(receiver, "receiver"), later(sender, "sender")
        if notes:
            self._reattribute(
                rec, replace(att, receiver=new_receiver, sender=new_sender, notes=(*att.notes, *notes))
            )
        return not (unheld(new_receiver) or unheld(new_sender))
