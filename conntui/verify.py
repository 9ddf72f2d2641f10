"""Check the demux's predictions against what the kernel then did.

The demux says what the kernel *should* do with a segment; later segments show what it *did*:
a SYN to a closed port is answered by the kernel's RST, a UDP datagram to a closed port by
an ICMP port unreachable, a SYN that hits an established connection by a challenge ACK, a
SYN dropped because the accept queue is full by the client's retransmission. The verifier
links each answer to its question (both records get a note naming the other) and, when the
answer does not come within ``window`` seconds, says so.

Pure: it sees records and ICMP errors, and returns notes for the engine to attach.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from .decode import IcmpError
from .model import FlowKey, Match, Record, Segment, SocketEntry, SocketTable


class Note(NamedTuple):
    """Something later segments revealed about record ``seq``."""

    seq: int
    text: str
    related: int = -1  # another record the note is about, or -1
    receiver: SocketEntry | None = None  # the socket that really received it, when now known


@dataclass(slots=True)
class _Question:
    seq: int
    ts: float
    port: int
    candidates: tuple[SocketEntry, ...] = ()
    isn: int = -1  # a SYN's sequence number (its retransmissions carry the same)
    answer: str = ""  # what came back to a SYN first ("a challenge ACK"), and its record
    answered_by: int = -1


def _retransmitted(first: _Question) -> str:
    """The note on a SYN sent again: what came back to the first one, or that nothing did.
    (Every SYN-ACK and RST goes through the verifier, and so does every bare ACK while a
    challenge ACK is awaited: the only ACK that answers a SYN.)"""
    text = f"a retransmission of the SYN of record #{first.seq}"
    if first.answer == "a challenge ACK":
        return f"{text}, which got a challenge ACK (record #{first.answered_by}), not a SYN-ACK"
    if first.answer:
        return f"{text}, which got {first.answer} (record #{first.answered_by})"
    return (
        f"{text}: nothing came back to that one (no SYN-ACK, RST or challenge ACK was captured): "
        "it or its answer was dropped, e.g. by a full accept queue or SYN queue"
    )


class Verifier:
    """Links answers to questions; bounded memory, no clocks of its own."""

    def __init__(
        self, window: float = 0.5, limit: int = 50_000, accepted: Callable[[Segment], bool] | None = None
    ) -> None:
        self.window = window
        # whether a SYN's connection exists (then a full queue seen now filled after it)
        self.accepted = accepted
        self.limit = limit
        self._rst: OrderedDict[FlowKey, _Question] = OrderedDict()
        self._icmp: OrderedDict[FlowKey, _Question] = OrderedDict()
        self._challenge: OrderedDict[FlowKey, _Question] = OrderedDict()
        self._syns: OrderedDict[FlowKey, _Question] = OrderedDict()  # each flow's last SYN
        self._reuseport: OrderedDict[FlowKey, _Question] = OrderedDict()
        self._next_expire = float("-inf")

    # The C fast path (fastpath.py) reads these two books in place: a segment of a flow in
    # either goes the Python way (``on_record`` answers it). Never replaced.
    @property
    def watched_challenge(self) -> OrderedDict[FlowKey, _Question]:
        """Flows whose SYN hit an established connection: its challenge ACK is awaited."""
        return self._challenge

    @property
    def watched_reuseport(self) -> OrderedDict[FlowKey, _Question]:
        """Flows whose SO_REUSEPORT pick is checked against the established socket."""
        return self._reuseport

    def _remember(self, book: OrderedDict[FlowKey, _Question], key: FlowKey, q: _Question) -> None:
        book[key] = q
        book.move_to_end(key)
        while len(book) > self.limit:
            book.popitem(last=False)

    def on_record(self, rec: Record) -> list[Note]:
        seg, att = rec.segment, rec.attribution
        notes: list[Note] = []
        if seg.proto == "tcp":
            flags = seg.flags
            if "R" in flags and self._syns:
                self._answered(seg, rec.seq, "a RST")
            if "R" in flags and self._rst:
                q = self._rst.pop(FlowKey("tcp", seg.dst, seg.dport, seg.src, seg.sport), None)
                if q is not None:
                    notes.append(
                        Note(q.seq, f"verified: the kernel answered with a RST (record #{rec.seq})", rec.seq)
                    )
                    notes.append(
                        Note(
                            rec.seq,
                            f"the kernel's RST answering record #{q.seq}: nothing listens on port {q.port}",
                            q.seq,
                        )
                    )
            elif "S" in flags and "A" in flags:
                # a SYN-ACK answered the SYN: the connection was new, no challenge ACK follows
                self._challenge.pop(FlowKey("tcp", seg.dst, seg.dport, seg.src, seg.sport), None)
                self._answered(seg, rec.seq, "a SYN-ACK")
            elif flags == "A" and seg.payload_len == 0 and self._challenge:
                q = self._challenge.pop(FlowKey("tcp", seg.dst, seg.dport, seg.src, seg.sport), None)
                if q is not None:
                    self._answered(seg, rec.seq, "a challenge ACK")
                    notes.append(
                        Note(q.seq, f"the kernel answered with a challenge ACK (record #{rec.seq})", rec.seq)
                    )
                    notes.append(
                        Note(
                            rec.seq,
                            f"challenge ACK (RFC 5961) answering the SYN of record #{q.seq}: it carries the "
                            "old connection's sequence numbers, so a client that lost its state answers "
                            "with a RST and then retries",
                            q.seq,
                        )
                    )
            if seg.is_syn:
                notes += self._syn(rec)
            elif att.match == Match.ESTABLISHED and self._reuseport:
                notes += self._reuseport_pick(rec)
            if att.match == Match.NONE and "R" not in flags:
                self._remember(self._rst, seg.key, _Question(rec.seq, seg.ts, seg.dport))
        elif seg.proto == "udp" and att.match == Match.NONE and att.candidates == ():
            self._remember(self._icmp, seg.key, _Question(rec.seq, seg.ts, seg.dport))
        return notes

    def _syn(self, rec: Record) -> list[Note]:
        seg, att = rec.segment, rec.attribution
        notes: list[Note] = []
        first = self._syns.get(seg.key)
        if first is not None and first.isn == seg.seq:
            notes.append(Note(rec.seq, _retransmitted(first), first.seq))
        else:
            self._remember(self._syns, seg.key, _Question(rec.seq, seg.ts, seg.dport, isn=seg.seq))
        receiver = att.receiver
        if (
            att.match == Match.LISTENER
            and receiver is not None
            and receiver.rx_queue > receiver.tx_queue
            and not (self.accepted is not None and self.accepted(seg))
        ):
            notes.append(
                Note(
                    rec.seq,
                    f"the accept queue is full ({receiver.rx_queue} waiting, backlog {receiver.tx_queue}): "
                    "the kernel drops this SYN (ListenOverflows) and the client will retransmit it",
                    -1,
                )
            )
        if att.match == Match.LISTENER and len(att.candidates) > 1:
            self._remember(self._reuseport, seg.key, _Question(rec.seq, seg.ts, seg.dport, att.candidates))
        if (
            att.match in (Match.ESTABLISHED, Match.ACCEPT_QUEUE)
            and receiver is not None
            and receiver.state not in ("SYN_SENT", "SYN_RECV")
        ):
            self._remember(self._challenge, seg.key, _Question(rec.seq, seg.ts, seg.dport))
        return notes

    def _answered(self, seg: Segment, seq: int, what: str) -> None:
        """``seg`` (record ``seq``) came back on the flow of a SYN: the first such answer is
        what that SYN's retransmission says it got."""
        q = self._syns.get(FlowKey("tcp", seg.dst, seg.dport, seg.src, seg.sport))
        if q is not None and q.answered_by < 0:
            q.answer, q.answered_by = what, seq

    def _reuseport_pick(self, rec: Record) -> list[Note]:
        """Once the connection's accepted socket has a holder, name the group member whose
        process holds it: that is the listener the kernel picked for the SYN (by its hash, or a BPF
        program attached to the group)."""
        receiver = rec.attribution.receiver
        if receiver is None or not receiver.holders:
            return []
        q = self._reuseport.pop(rec.segment.key, None)
        if q is None:
            return []
        return self._picked(q, receiver, f" (record #{rec.seq})", rec.seq)

    def recheck(self, table: SocketTable) -> list[Note]:
        """Resolve waiting SO_REUSEPORT SYNs whose accepted socket now has a holder in the
        table (a connection accept()ed with no segment since)."""
        notes: list[Note] = []
        for key, q in list(self._reuseport.items()):
            for child in table.connected("tcp", key.dst, key.dport, key.src, key.sport):
                if child.holders and child.state != "LISTEN":
                    del self._reuseport[key]
                    notes += self._picked(q, child, "", -1)
                    break
        return notes

    def _picked(self, q: _Question, receiver: SocketEntry, where: str, related: int) -> list[Note]:
        pids = {h.pid for h in receiver.holders}
        members = [c for c in q.candidates if pids & {h.pid for h in c.holders}]
        who = receiver.describe()
        if len(members) == 1:
            m = members[0]
            return [
                Note(
                    q.seq,
                    f"resolved: the kernel picked {m.describe()} of the SO_REUSEPORT group's "
                    f"{len(q.candidates)} listeners: its process accept()ed the connection as {who}{where}",
                    related,
                    m,
                )
            ]
        if members:
            return [
                Note(
                    q.seq,
                    f"the connection was accept()ed as {who}, by a process that holds "
                    f"{len(members)} of the group's listeners: which one the kernel picked is not visible",
                    related,
                )
            ]
        return []

    @property
    def waiting_reuseport(self) -> bool:
        return bool(self._reuseport)

    def on_icmp(self, err: IcmpError, seq: int | None = None) -> list[Note]:
        """An ICMP destination unreachable; ``seq`` is its own record, when it has one."""
        q = self._icmp.pop(err.quoted, None)
        if q is None or not err.port_unreachable:
            return []
        where = f" (record #{seq})" if seq is not None else ""
        return [
            Note(
                q.seq,
                f"verified: the kernel answered with ICMP port unreachable{where}",
                -1 if seq is None else seq,
            )
        ]

    def expire(self, now: float) -> list[Note]:
        """Questions whose answer did not come within the window (``now``: capture time).
        Called per batch of frames; does its work at most every 50 ms of capture time."""
        if now < self._next_expire:
            return []
        self._next_expire = now + 0.05
        horizon = now - self.window
        notes: list[Note] = []
        for book, text in (
            (
                self._rst,
                "no RST came back: a firewall dropped it, or the socket table was wrong",
            ),
            (
                self._icmp,
                "no ICMP port unreachable came back: ICMP rate limiting (net.ipv4.icmp_ratelimit), "
                "a firewall, or the socket table was wrong",
            ),
            (
                self._challenge,
                "no challenge ACK came back (rate limited: TCPACKSkippedChallenge)",
            ),
        ):
            while book:
                key, q = next(iter(book.items()))
                if q.ts > horizon:
                    break
                del book[key]
                notes.append(Note(q.seq, f"{text} (waited {self.window:g} s)", -1))
        while self._reuseport:  # never accept()ed (or accepted by a process we cannot see)
            key3, q = next(iter(self._reuseport.items()))
            if q.ts > now - 30.0:
                break
            del self._reuseport[key3]
        while self._syns:
            key2, q = next(iter(self._syns.items()))
            if q.ts > now - 10.0:  # SYN retransmissions come 1 s, 3 s, 7 s... later
                break
            del self._syns[key2]
        return notes
