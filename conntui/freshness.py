"""What an attribution says about its own age: final, or worth a fresher socket table.

The socket table is read before or after the segment, never at its moment. These pure
predicates decide, from one attribution and its segment, whether the answer can be kept for
the flow (``final_answer``: the flow cache's ``fast`` answers, which the C fast path
reuses), whether an exact look-up may find a better one (``needs_resolve``), whether a
socket had no holder yet (``unheld``: the late fills look again), and whether a segment
came after its connection was over (``late_after_close``). ``ResolveGate`` bounds the
look-ups one flow may cause.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .model import Attribution, Match, Segment, SocketEntry, SocketTable, endpoint_text

OPEN_STATES = frozenset(("ESTABLISHED", "SYN_SENT", "SYN_RECV", "CLOSE_WAIT"))

# After its close, a connection shown in any of these states is a table read too early
_BEFORE_CLOSED = OPEN_STATES | frozenset(("LAST_ACK", "CLOSING", "FIN_WAIT1", "FIN_WAIT2"))

# Answers a flow keeps while its socket lives. A TIME_WAIT, accept-queue or unknown answer
# read from a table may be the wrong moment's: each such row goes the Python way, where the
# kernel's record judges it (judge.py).
FINAL_MATCHES = frozenset(
    (Match.ESTABLISHED, Match.LISTENER, Match.UDP_CONNECTED, Match.UDP_UNCONNECTED, Match.NOT_LOCAL)
)

# A socket in any other state (TIME_WAIT, closing) was read at another moment than some of
# the flow's segments: those rows go the Python way too.
LIVE_STATES = frozenset(("ESTABLISHED", "LISTEN", "UNCONN", "CLOSE_WAIT", "SYN_SENT", "SYN_RECV"))


def shows_open(att: Attribution) -> bool:
    """Whether the attribution shows the connection not yet closed on either end (a
    segment seen after its close then needs a fresh look-up)."""
    return any(s is not None and s.state in _BEFORE_CLOSED for s in (att.receiver, att.sender))


def late_after_close(seg: Segment, att: Attribution) -> Attribution:
    """A segment after both FINs that finds TIME_WAIT is a late one, not a closing race."""
    receiver = att.receiver
    if att.match != Match.ESTABLISHED or receiver is None or receiver.state != "TIME_WAIT":
        return att
    s, d = endpoint_text(seg.src, seg.sport), endpoint_text(seg.dst, seg.dport)
    was = ""
    if receiver.former_holders:
        h = receiver.former_holders[0]
        was = f" (closed by {h.process}[{h.pid}], was fd {h.fd})"
    return replace(
        att,
        match=Match.TIME_WAIT,
        explain=(
            f"{s} → {d} arrives after both FINs of its connection{was}: the kernel alone keeps the "
            "closed connection's remains in TIME_WAIT for about a minute and re-acknowledges late "
            "segments like this one; no process sees it."
        ),
    )


def unheld(sock: SocketEntry | None) -> bool:
    """A connection socket no process was seen to hold (one that may have a holder later)."""
    return (
        sock is not None
        and not sock.holders
        and not sock.former_holders
        and sock.cookie != 0
        and sock.state in OPEN_STATES
        and sock.state != "SYN_RECV"
    )


def final_answer(att: Attribution) -> bool:
    """A cached answer that a segment of its flow needs nothing more for than its row: no
    question for the verifier (a ``none`` waits for its RST or ICMP) and no socket to look
    up again (``unheld``). Such segments may take the C fast path (fastpath.py)."""
    return (
        att.match in FINAL_MATCHES
        and (att.receiver is not None or att.sender is not None)  # counted apart (Counters.unnamed)
        and not unheld(att.receiver)
        and not unheld(att.sender)
        and all(s is None or s.state in LIVE_STATES for s in (att.receiver, att.sender))
    )


def needs_resolve(seg: Segment, att: Attribution, table: SocketTable) -> bool:
    """Whether the table may simply be too old for this segment (worth an exact look-up)."""
    if att.match in (Match.UNKNOWN, Match.NONE):
        return True
    if ("F" in seg.flags or "R" in seg.flags) and any(
        s is not None and s.holders for s in (att.sender, att.receiver)
    ):
        # A FIN or RST usually follows close(): the snapshot may still show the old holder.
        return True
    if att.sender is None and "R" not in seg.flags and table.is_local(seg.src):
        return True
    receiver = att.receiver
    if seg.is_syn and att.match in (Match.ESTABLISHED, Match.ACCEPT_QUEUE, Match.TIME_WAIT):
        # A SYN on a known 4-tuple: is that old connection still there (a stale client),
        # or was it reset or reaped since the snapshot (then the listener takes the SYN)?
        return True
    if att.match == Match.LISTENER and receiver is not None and receiver.rx_queue >= receiver.tx_queue:
        # Near or over a full accept queue at the last snapshot: was this SYN dropped?
        return True
    # A connection socket with no holder may have been accept()ed since the snapshot.
    return receiver is not None and not receiver.holders and receiver.state in ("ESTABLISHED", "CLOSE_WAIT")


class ResolveGate:
    """Repeated misses of one flow (a scan of closed ports, a flood to nowhere) are looked
    up at most once per cooldown; other look-ups are cheap and always worth it (the socket
    table source rate-limits its own expensive /proc walks)."""

    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self._recent: dict[tuple[str, str, int, str, int], float] = {}

    def may_resolve(self, seg: Segment, att: Attribution) -> bool:
        if att.match not in (Match.NONE, Match.UNKNOWN):
            return True
        key = (seg.proto, seg.src, seg.sport, seg.dst, seg.dport)
        now = time.monotonic()
        last = self._recent.get(key)
        if last is not None and now - last <= self.cooldown:
            return False
        if len(self._recent) > 10_000:
            self._recent.clear()
        self._recent[key] = now
        return True
