"""Rows set beside the kernel tracer's record: predicted, judged, and named from it.

With a socket tracer (tracer.py) the engine has the kernel's own record of each moment:
which process connect()ed, accept()ed or bound a socket, and what the kernel did with a
segment. Each row is predicted from the table and what the record had published up to its
segment (predict.py; a row waits while the tracer's output is behind), judged beside the
record when it settles (judge.py), and its sockets that were gone before the table saw them
are named from the connect/accept/bind records (``fill_from_tracer``). A row across
namespaces is judged as each end's socket sees it, in its own namespace.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from .judge import HolderAt, RowsIn, judge, judge_sender
from .model import (
    Attribution,
    Endpoint,
    Frame,
    Holder,
    Match,
    Record,
    Segment,
    SocketEntry,
    SocketTable,
    endpoint_text,
)
from .natviews import View
from .predict import predict
from .sockets.namespaces import NamespaceTables
from .sockets.procfs import TracedContainers
from .tablesource import TableSource

if TYPE_CHECKING:
    from .tracer import SocketTracer, TraceRecord

# A traced connect()/accept() returns a little after the kernel made the socket: a record
# this late still names the process that held the socket when the segment came.
TRACE_SLACK = 0.05
_UNSET = object()

Reattribute = Callable[[Record, Attribution], None]
# (capture time (monotonic), the frame, its row: None for a frame written without one)
Pending = Iterable[tuple[float, Frame, Record | None]]


class TracerRows:
    """The rows waiting for the kernel's record, and the look-ups into it."""

    def __init__(
        self,
        tracer: SocketTracer | None,
        tables: TableSource,
        spaces: NamespaceTables | None,
        *,
        live: bool,
        reattribute: Reattribute,
    ) -> None:
        self.tracer = tracer
        self.tables = tables
        self.spaces = spaces
        self.live = live
        self._reattribute = reattribute
        # how many rows of a flow were captured in a window of drops the kernel counted
        # (the engine's pending rows; judge.py); None: such windows are never matched
        self.rows_in: RowsIn | None = None
        # rows to set beside the kernel's record, with the table they were predicted from
        # (with the receiving socket's own view of a row that crosses namespaces)
        self.to_judge: deque[tuple[float, Record, SocketTable, View | None]] = deque()
        # rows whose prediction waits for the tracer's output to reach their time (predict.py)
        self.to_predict: deque[tuple[float, Record, SocketTable]] = deque()
        self._handed: dict[int, object] = {}  # accepted inode → who holds it now (_passed_on)
        # the container of a process a tracer record names (live captures only: /proc now)
        self._traced_containers = TracedContainers() if live else None
        if tracer is not None and self._traced_containers is not None:
            # read while the process runs: a short-lived client is gone when its rows are judged
            tracer.on_record.append(self._traced_containers.note)

    # -- a row as it is stored -------------------------------------------------------

    def predict_now(self, seg: Segment, att: Attribution) -> tuple[Attribution, bool]:
        """The row's prediction, when the tracer's output has reached the segment; else the
        attribution as it is and True: the row waits (``store``, ``predict_waiting``)."""
        tracer = self.tracer
        assert tracer is not None
        if not tracer.timeline.covers(seg.ts):
            return att, False
        # the kernel's record up to the segment, once conntui has read it (predict.py)
        if self.live and not tracer.caught_up(seg.ts):
            return att, True
        return self.predict(seg, att, self.tables.current()), False

    def store(self, at: float, rec: Record, view: View | None, wait: bool) -> None:
        """Queue a stored row to be judged when it settles (and predicted, if it waits)."""
        table = self.tables.current()
        self.to_judge.append((at, rec, table, view))
        if wait:
            self.to_predict.append((at, rec, table))

    def predict(self, seg: Segment, att: Attribution, table: SocketTable) -> Attribution:
        """The table's answer corrected by what the kernel had published up to the segment
        (predict.py): the prediction the kernel's record is set beside when the row settles."""
        tracer = self.tracer
        assert tracer is not None
        return predict(seg, att, tracer.timeline, self.holder_at, table, self._connected_at)

    def predict_waiting(self, horizon: float) -> None:
        """Predict the rows that waited for the tracer's output to catch up with their
        segment (a few ms: bpftrace reads its per-CPU buffers in rounds): as soon as it
        has, or, at the latest, before the row is judged (``horizon``) with what was read."""
        tracer = self.tracer
        assert tracer is not None
        queue = self.to_predict
        while queue:
            at, rec, table = queue[0]
            if at > horizon and not tracer.caught_up(rec.segment.ts):
                break
            queue.popleft()
            predicted = self.predict(rec.segment, rec.attribution, table)
            if predicted is not rec.attribution:
                self._reattribute(rec, predicted)

    # -- a row as it settles -----------------------------------------------------------

    def judge_settled(self, horizon: float) -> None:
        """Set the rows about to be handed on beside the kernel's record of their moment
        (judge.py): names from the tracer, the kernel's verdict, corrections."""
        tracer = self.tracer
        assert tracer is not None
        queue = self.to_judge
        while queue and queue[0][0] <= horizon:
            _, rec, table, view = queue.popleft()
            seg, att = rec.segment, rec.attribution
            timeline = tracer.timeline
            holder_at: HolderAt = self.holder_at
            bound_at: HolderAt = self._bound_at
            if view is not None:
                # a row across namespaces: judged as its receiving socket sees it, there
                seg, table, ns, _, _ = view
                timeline = tracer.timeline_for(ns)
                holder_at, bound_at = self._holder_in(ns), self._bound_in(ns)
            if not timeline.covers(seg.ts):
                self.fill_from_tracer(rec)
                att = rec.attribution
                if timeline.ready_at > seg.ts:
                    note = "the kernel tracer was not attached yet: this row is conntui's prediction only"
                elif timeline.ended_at < seg.ts:
                    note = "the kernel tracer had stopped: this row is conntui's prediction only"
                else:
                    note = "the kernel tracer lost events: this row is conntui's prediction only"
                if note not in att.notes:
                    self._reattribute(rec, replace(att, notes=(*att.notes, note)))
                continue
            judged = judge(seg, att, timeline, holder_at, table, bound_at, self.rows_in, here=view is None)
            if view is not None:
                judged = self._judge_sender_across(view, judged)
            if judged is not att:
                self._reattribute(rec, judged)
            if view is not None:
                continue
            verdict = judged.kernel.verdict if judged.kernel is not None else ""
            unjudged = not verdict or judged.match == Match.UNKNOWN
            if (seg.proto != "tcp" and (unjudged or verdict == "delivered")) or (
                unjudged
                and timeline.state_at(seg.dst, seg.dport, seg.src, seg.sport, seg.ts) is None
                and timeline.state_at(seg.src, seg.sport, seg.dst, seg.dport, seg.ts) is None
            ):
                # the record says nothing of this connection's sockets (UDP: only that the
                # datagram was not dropped; TCP older than the tracer): the tracer's
                # connect/accept/bind records may still name its processes
                self.fill_from_tracer(rec)

    def judge_fast_drops(self, horizon: float, pending: Pending) -> None:
        """Rows the fast path made are final answers the kernel's record need not correct,
        but one the kernel dropped (a full receive buffer, say) must carry its reason: look
        for those rows (in ``pending``, up to ``horizon``) while drops wait for them."""
        tracer = self.tracer
        assert tracer is not None
        timeline = tracer.timeline
        flows = timeline.drop_flows()
        if not flows:
            return
        table = self.tables.current()
        for at, _, rec in pending:
            if at > horizon:
                break
            if rec is None:
                continue
            seg = rec.segment
            if (
                seg.proto,
                seg.src,
                seg.sport,
                seg.dst,
                seg.dport,
            ) in flows and rec.attribution.kernel is None:
                judged = judge(seg, rec.attribution, timeline, self.holder_at, table, None, self.rows_in)
                if judged is not rec.attribution:
                    self._reattribute(rec, judged)

    def _judge_sender_across(self, view: View, att: Attribution) -> Attribution:
        """The sending end of a row across namespaces, judged in its own namespace (its
        socket's tuple there), or named from the tracer's records when the table had none."""
        tracer = self.tracer
        _, _, _, sseg, ns = view
        if tracer is None or ns is None or (att.sender is not None and att.sender.holders):
            return att
        if sseg.proto == "tcp":
            return judge_sender(sseg, att, tracer.timeline_for(ns), self._holder_in(ns))
        got = self._bound_at(sseg.src, sseg.sport, "", 0, sseg.ts, ns)
        if got is None:
            return att
        holder = got[0]
        sender = SocketEntry(
            "udp", sseg.family, "UNCONN", Endpoint(sseg.src, sseg.sport), None, holders=(holder,), netns=ns
        )
        explain = f"sent by {sender.describe()} (the kernel tracer saw it bind or send from {sender.local})"
        return replace(att, sender=sender, sender_explain=explain)

    # -- look-ups into the record ----------------------------------------------------------

    def _holder_in(self, ns: int) -> Callable[[str, int, str, int, float], tuple[Holder, float] | None]:
        return lambda la, lp, ra, rp, at: self.holder_at(la, lp, ra, rp, at, ns)

    def _bound_in(self, ns: int) -> Callable[[str, int, str, int, float], tuple[Holder, float] | None]:
        return lambda la, lp, ra, rp, at: self._bound_at(la, lp, ra, rp, at, ns)

    def _connected_at(
        self, laddr: str, lport: int, raddr: str, rport: int, at: float
    ) -> tuple[Holder, float] | None:
        """Who connect()ed the UDP socket of this exact tuple by ``at`` (the tracer's record)."""
        tracer = self.tracer
        if tracer is None:
            return None
        found = tracer.lookup_record("udp", laddr, lport, raddr, rport, at=at)
        if found is None or found.kind != "connect" or not found.raddr or found.t > at:
            return None
        return found.holder, found.t

    def _bound_at(
        self, laddr: str, lport: int, raddr: str, rport: int, at: float, ns: int = 0
    ) -> tuple[Holder, float] | None:
        """Who bound (or first sent from) the UDP port ``laddr:lport`` last before ``at``
        (in network namespace ``ns``; 0: the traced one)."""
        tracer = self.tracer
        if tracer is None:
            return None
        found = tracer.lookup_record("udp", laddr, lport, "", 0, at=at, netns=ns)
        if found is None or found.kind not in ("bind", "send"):
            return None
        return self._traced(found), found.t

    def _traced(self, found: TraceRecord) -> Holder:
        """The holder a tracer record names, in its container when the process still runs
        (a record names a pid, an fd and a comm; the container is read from /proc)."""
        holder = found.holder
        containers = self._traced_containers
        if containers is not None:
            container = containers.at(found.pid, found.t)
            if container is not None:
                holder = replace(holder, container=container)
        return holder

    def holder_at(
        self, laddr: str, lport: int, raddr: str, rport: int, at: float, ns: int = 0
    ) -> tuple[Holder, float] | None:
        """Who got the TCP socket of this tuple (the tracer's connect/accept record), with the
        name the process had at ``at`` (it may have exec'd since), and when it got it."""
        tracer = self.tracer
        if tracer is None:
            return None
        found = tracer.lookup_record("tcp", laddr, lport, raddr, rport, at=at, netns=ns)
        if found is None:
            return None
        holder = self._passed_on(found, ns, (laddr, lport, raddr, rport)) or self._traced(found)
        renamed = tracer.exec_after(holder.pid, found.t)
        if renamed is not None and tracer.execs.get(holder.pid, (float("inf"), ""))[0] <= at:
            holder = Holder(holder.pid, holder.fd, renamed, holder.container)
        # connect() returns after it sent the SYN (a blocking one after the handshake): the
        # process had the socket from the call's start, a moment before the record
        since = found.t - TRACE_SLACK if found.kind == "connect" else found.t
        return holder, since

    def _passed_on(self, found: TraceRecord, ns: int, tup: tuple[str, int, str, int]) -> Holder | None:
        """Who holds an accept()ed socket now, when the process that accepted it no longer
        does (a forking server: the parent accept()s, the child gets the socket and the
        parent closes its fd); None when the accepting fd still holds it, or nobody can
        be found (then the accept record is all there is).

        A socket the kernel's record shows closed by now (gone, TIME_WAIT, or orphaned: no
        process holds it) is not searched for: nobody can hold it, and a search per closed
        connection (a /proc walk on the capture thread) was most of conntui's time under
        many short connections."""
        if found.kind != "accept" or not found.inode or not self.live:
            return None
        tracer = self.tracer
        if tracer is not None:
            now_state = tracer.timeline_for(ns).state_at(*tup, time.time())
            if now_state is not None and (
                not now_state.exists or now_state.held is False or now_state.state == "TIME_WAIT"
            ):
                return None
        hit = self._handed.get(found.inode, _UNSET)
        if hit is not _UNSET:
            return hit if isinstance(hit, Holder) else None
        try:
            still = os.readlink(f"/proc/{found.pid}/fd/{found.fd}") == f"socket:[{found.inode}]"
        except OSError:
            still = False
        if still:
            return None  # (not remembered: it may pass the socket on later)
        now: Holder | None = None
        spaces = self.spaces
        src = (spaces.source(ns) if ns else spaces.primary) if spaces is not None else self.tables
        scanner = getattr(src, "scanner", None)
        if scanner is not None:
            held = scanner.find_holders({found.inode}, (found.pid,), deep=False).get(found.inode, ())
            now = held[0] if held else None
        if len(self._handed) > 4096:
            self._handed.clear()
        self._handed[found.inode] = now
        return now

    # -- names from connect/accept/bind --------------------------------------------------

    def fill_from_tracer(self, rec: Record) -> None:
        """Name the process of a socket that was gone before conntui could look it up.

        Runs when a row is handed on (after ``settle``), by then the tracer has seen the
        connect()/accept() that made the socket, even for a connection that lived less than
        a millisecond. Only sockets the table could not name are filled, as
        ``former_holders``: the process had the socket, conntui did not see it hold it.
        """
        tracer = self.tracer
        assert tracer is not None
        seg, att = rec.segment, rec.attribution
        table = self.tables.current()
        receiver, sender, match = att.receiver, att.sender, att.match
        filled = False

        def unnamed(sock: SocketEntry | None) -> bool:
            return sock is None or (not sock.holders and not sock.former_holders)

        if (
            match not in (Match.NOT_LOCAL, Match.LISTENER)
            and table.is_local(seg.dst)
            and (unnamed(receiver) or (receiver is not None and receiver.state == "LISTEN"))
        ):
            found = tracer.lookup_record(seg.proto, seg.dst, seg.dport, seg.src, seg.sport, at=seg.ts)
            if found is not None:
                holder = self._traced(found)
                if receiver is None or receiver.state == "LISTEN":
                    receiver = replace(found.former_entry(), former_holders=(holder,))
                else:
                    receiver = replace(receiver, former_holders=(holder,))
                if found.t <= seg.ts + TRACE_SLACK:  # the process had it when the segment came
                    receiver = replace(receiver, holders=(holder,), former_holders=())
                if match in (Match.UNKNOWN, Match.NONE):
                    match = (
                        Match.ESTABLISHED
                        if seg.proto == "tcp"
                        else (Match.UDP_CONNECTED if found.raddr else Match.UDP_UNCONNECTED)
                    )
                filled = True
        if table.is_local(seg.src) and unnamed(sender) and "R" not in seg.flags:
            found = tracer.lookup_record(seg.proto, seg.src, seg.sport, seg.dst, seg.dport, at=seg.ts)
            if found is not None:
                holder = self._traced(found)
                sender = replace(found.former_entry() if sender is None else sender, former_holders=(holder,))
                if found.t <= seg.ts + TRACE_SLACK:
                    sender = replace(sender, holders=(holder,), former_holders=())
                filled = True
        if filled:
            named = any(s is not None and (s.holders or s.former_holders) for s in (receiver, sender))
            explain = att.explain
            if match != att.match:
                explain = (
                    f"The kernel tracer saw {receiver.describe() if receiver is not None else 'a process'} "
                    f"get the socket on {endpoint_text(seg.dst, seg.dport)} (connect/accept/bind), and the "
                    "socket was gone before conntui could look it up in the table."
                )
            note = "process named by the socket tracer: the socket was gone before conntui could look"
            new = replace(
                att,
                match=match,
                receiver=receiver,
                sender=sender,
                explain=explain,
                notes=(*att.notes, note) if named else att.notes,
                related=() if match != att.match else att.related,
            )
            self._reattribute(rec, new)
