"""The pipeline: frames → decode → demux against the socket table → session (+ writer).

One ``Engine`` serves the headless printer, the TUI and the tests. Every OS input is
injected (a ``FrameSource`` and a ``TableSource``), so the whole pipeline runs on fake frames
and socket tables in tests. The capture loop never waits for a reader: readers poll the
session with ``since(seq)``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from .capture import CaptureError, FrameSource
from .crossns import NatIndex, SegmentCopies, compose, copy_note, mapping_ends, unknown_end
from .decode import IcmpError, decode_frame, decode_icmp_error
from .demux import attribute
from .export import ExportError, PcapNgWriter, Writer, attribution_from_comment
from .flowcache import FlowCache, cache_key
from .gcpolicy import GcPolicy
from .history import FlowHistory
from .judge import HolderAt, judge, judge_sender
from .model import (
    PACKET_HOST,
    PACKET_OUTGOING,
    Attribution,
    Endpoint,
    FlowKey,
    Frame,
    Holder,
    Lookup,
    Match,
    Record,
    Segment,
    SocketEntry,
    SocketTable,
    endpoint_text,
    unmap,
)
from .predict import predict
from .session import Session
from .timeline import JOIN_AFTER, DropBatch

if TYPE_CHECKING:
    from .tracer import SocketTracer, TraceRecord
from .sockets.conntrack import Conntrack, NatMapping, local_socket_tuple
from .sockets.namespaces import NamespaceTables
from .sockets.procfs import TracedContainers
from .verify import Note, Verifier

SegmentPredicate = Callable[[Segment], bool]
_NAT_SUSPECTS = frozenset((Match.NONE, Match.NOT_LOCAL, Match.UNKNOWN))
_UNSET = object()
# a row across namespaces as each end's socket sees it: (receiving segment, its table, its
# namespace, sending segment, its namespace (None: another host))
_View = tuple[Segment, SocketTable, int, Segment, int | None]


class TableSource(Protocol):
    """Where the socket table comes from (``sockets.SocketTableSource`` on a live host)."""

    def current(self) -> SocketTable: ...

    def refresh(self) -> SocketTable: ...

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None: ...


class StaticTables:
    """A fixed socket table (tests, files read with -r, the TUI's demo data)."""

    def __init__(self, table: SocketTable | None = None) -> None:
        self._table = table or SocketTable()

    def current(self) -> SocketTable:
        return self._table

    def refresh(self) -> SocketTable:
        return self._table

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None:
        return None


def _quoted_segment(err: IcmpError) -> Segment:
    q = err.quoted
    return Segment(err.ts, "", q.proto, err.family, q.src, q.sport, q.dst, q.dport)


# A traced connect()/accept() returns a little after the kernel made the socket: a record
# this late still names the process that held the socket when the segment came.
TRACE_SLACK = 0.05
# the verifier's notes when a predicted answer does not come: guesses the kernel's record replaces
_NO_ANSWER = ("no RST came back", "no ICMP port unreachable came back")
RECHECK_AFTER = 0.015  # seconds: a socket seen without a holder is looked up again this soon
HOLD_MAX = 2.0  # seconds a row may wait beyond ``settle`` for the tracer's output (_record_horizon)
_OPEN_STATES = frozenset(("ESTABLISHED", "SYN_SENT", "SYN_RECV", "CLOSE_WAIT"))


# After its close, a connection shown in any of these states is a table read too early
_BEFORE_CLOSED = _OPEN_STATES | frozenset(("LAST_ACK", "CLOSING", "FIN_WAIT1", "FIN_WAIT2"))


def _shows_open(att: Attribution) -> bool:
    """Whether the attribution shows the connection not yet closed on either end (a
    segment seen after its close then needs a fresh look-up)."""
    return any(s is not None and s.state in _BEFORE_CLOSED for s in (att.receiver, att.sender))


def _late_after_close(seg: Segment, att: Attribution) -> Attribution:
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


def _unheld(sock: SocketEntry | None) -> bool:
    """A connection socket no process was seen to hold (one that may have a holder later)."""
    return (
        sock is not None
        and not sock.holders
        and not sock.former_holders
        and sock.cookie != 0
        and sock.state in _OPEN_STATES
        and sock.state != "SYN_RECV"
    )


# Answers a flow keeps while its socket lives. A TIME_WAIT, accept-queue or unknown answer
# read from a table may be the wrong moment's: each such row goes the Python way, where the
# kernel's record judges it (judge.py).
_FINAL_MATCHES = frozenset(
    (Match.ESTABLISHED, Match.LISTENER, Match.UDP_CONNECTED, Match.UDP_UNCONNECTED, Match.NOT_LOCAL)
)


# A socket in any other state (TIME_WAIT, closing) was read at another moment than some of
# the flow's segments: those rows go the Python way too.
_LIVE_STATES = frozenset(("ESTABLISHED", "LISTEN", "UNCONN", "CLOSE_WAIT", "SYN_SENT", "SYN_RECV"))


def _final_answer(att: Attribution) -> bool:
    """A cached answer that a segment of its flow needs nothing more for than its row: no
    question for the verifier (a ``none`` waits for its RST or ICMP) and no socket to look
    up again (``_unheld``). Such segments may take the C fast path (fastpath.py)."""
    return (
        att.match in _FINAL_MATCHES
        and (att.receiver is not None or att.sender is not None)  # counted apart (Counters.unnamed)
        and not _unheld(att.receiver)
        and not _unheld(att.sender)
        and all(s is None or s.state in _LIVE_STATES for s in (att.receiver, att.sender))
    )


def _needs_resolve(seg: Segment, att: Attribution, table: SocketTable) -> bool:
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


class Engine:
    """Runs the capture loop; owns nothing the UI draws with except the session."""

    def __init__(
        self,
        source: FrameSource,
        tables: TableSource,
        session: Session | None = None,
        *,
        keep: SegmentPredicate | None = None,
        writer: Writer | None = None,
        on_record: Callable[[Record], None] | None = None,
        refresh_interval: float = 1.0,
        resolve_cooldown: float = 0.05,
        use_file_attributions: bool = True,
        settle: float = 0.5,
        verify_window: float = 0.4,
        kernel_filtered: bool = False,
        tracer: SocketTracer | None = None,
    ) -> None:
        self.source = source
        self.tables = tables
        self.session = session if session is not None else Session()  # an empty one is falsy
        self.keep = keep
        self.tracer = tracer  # optional: pid/fd of sockets gone before the table saw them
        self.tracer_unavailable = ""  # why no tracer runs although one was asked for (one line)
        # segments already passed ``keep`` in the kernel's BPF filter
        self._keep_segments = None if kernel_filtered else keep
        self.writer = writer
        self.on_record = on_record
        self.refresh_interval = refresh_interval
        self.resolve_cooldown = resolve_cooldown
        self.use_file_attributions = use_file_attributions
        self.error: str | None = None  # why capture stopped early, for the UI / exit code
        self.writer_error: str | None = None
        # Told once, on the thread that failed, when writing the capture file fails.
        self.on_writer_error: Callable[[str], None] | None = None
        self._stop = threading.Event()
        self._stop_requested = False  # set by request_stop (signal handlers)
        self._thread: threading.Thread | None = None
        self._refresher: threading.Thread | None = None
        self._recent_resolves: dict[tuple[str, str, int, str, int], float] = {}
        self.verifier = Verifier(window=verify_window, accepted=self._syn_was_accepted)
        self.history = FlowHistory()  # what capture order showed: FINs, RSTs, old connections
        # sockets seen without a holder: looked up again shortly after, and when handed on
        self._late_checked: dict[tuple[str, int], float] = {}  # → when last looked up
        self._recheck: deque[tuple[float, Record]] = deque()  # (capture time, row): 15 ms on
        self._recheck_last: deque[tuple[float, Record]] = deque()  # and once more when handed on
        self._listener_checks: dict[tuple[str, int], float] = {}
        self.flow_cache = FlowCache(final=_final_answer)
        self._fast: Any = None  # the C fast path (fastpath.py), while a live ring capture runs
        self._nat: Conntrack | None = None
        self._nat_next_check = 0.0
        self._nat_cache: dict[FlowKey, object] = {}
        self.settle = settle if source.live else 0.0
        self._pending: deque[tuple[float, Frame, Record | None]] = deque()
        # rows to set beside the kernel's record, with the table they were predicted from
        # (with the receiving socket's own view of a row that crosses namespaces)
        self._to_judge: deque[tuple[float, Record, SocketTable, _View | None]] = deque()
        # (epoch seconds, packets the capture had lost by then): see _sample_ring_drops
        self._ring_drops: deque[tuple[float, int]] = deque([(time.time(), 0)])
        # every network namespace's table, when the tables source keeps them (host capture)
        self.spaces = tables if isinstance(tables, NamespaceTables) else None
        self._nat_index = NatIndex()
        self._copies: SegmentCopies[Record] = SegmentCopies()
        self._handed: dict[int, object] = {}  # accepted inode → who holds it now (_passed_on)
        # the container of a process a tracer record names (live captures only: /proc now)
        self._traced_containers = TracedContainers() if source.live else None
        if tracer is not None and self._traced_containers is not None:
            # read while the process runs: a short-lived client is gone when its rows are judged
            tracer.on_record.append(self._traced_containers.note)
        self._copy_of: dict[int, Record] = {}  # a copy's row number → its first copy's row
        self._view: _View | None = None  # set by _across for process()
        # rows whose prediction waits for the tracer's output to reach their time (predict.py)
        self._to_predict: deque[tuple[float, Record, SocketTable]] = deque()
        self.started_at = time.time()

    # -- one frame ---------------------------------------------------------------

    def process(self, frame: Frame) -> Record | None:
        """Decode, filter, attribute and store one frame; None when it is not kept.

        Stored rows reach the writer and ``on_record`` after ``settle`` seconds (live capture
        only), so that what later segments reveal (the kernel's RST, a challenge ACK, ...)
        is in the file and the printed line too.
        """
        counters = self.session.counters
        counters.frames += 1
        seg = decode_frame(frame)
        if seg is None:
            icmp = decode_icmp_error(frame)
            if icmp is not None:
                counters.icmp_errors += 1
                if self.keep is None or self.keep(_quoted_segment(icmp)):
                    self._apply(self.verifier.on_icmp(icmp))
                    self._pending.append((time.monotonic(), frame, None))
                return None
            counters.undecodable += 1
            if self.keep is None:
                self._pending.append((time.monotonic(), frame, None))
            return None
        if self._keep_segments is not None and not self._keep_segments(seg):
            counters.filtered += 1
            return None
        self._view = None
        first = self._copies.first(seg) if self.spaces is not None else None
        now = time.monotonic()
        if first is not None:
            # the same segment seen again on another device (bridge and veth, ``any``): it is
            # attributed as its first copy (now, and as that one is when handed on), and is
            # not a retransmission or a second answer
            first_seq, att, first_rec = first
            rec = self.session.append(frame, seg, replace(att, notes=(*att.notes, copy_note(first_seq, seg))))
            if len(self._copy_of) > 65536:  # rows the C path handed on (never the case yet)
                self._copy_of.clear()
            self._copy_of[rec.seq] = first_rec
            self._pending.append((now, frame, rec))
            if self.settle <= 0:
                self.emit()
            return rec
        att = self._attribute(frame, seg)
        wait = False
        if self.tracer is not None and self._view is None and self.tracer.timeline.covers(seg.ts):
            # the kernel's record up to the segment, once conntui has read it (predict.py);
            # a row across namespaces was looked up in each end's own (judged when settled)
            wait = self.source.live and not self.tracer.caught_up(seg.ts)
            if not wait:
                att = self._predict(seg, att, self.tables.current())
        rec = self.session.append(frame, seg, att)
        if self.spaces is not None:
            self._copies.add(seg, rec.seq, att, rec)
        self._apply(self.verifier.on_record(rec))
        self._pending.append((now, frame, rec))
        if self.tracer is not None:
            self._to_judge.append((now, rec, self.tables.current(), self._view))
            if wait:
                self._to_predict.append((now, rec, self.tables.current()))
        if self.settle <= 0:
            self.emit()
        elif self.source.live and (_unheld(att.receiver) or _unheld(att.sender)):
            self._recheck.append((now, rec))
        return rec

    def _apply(self, notes: list[Note]) -> None:
        timeline = self.tracer.timeline if self.tracer is not None else None
        for note in notes:
            rec = self.session.get(note.seq)
            if rec is None:
                continue
            if timeline is not None and note.text.startswith(_NO_ANSWER) and timeline.covers(rec.segment.ts):
                continue  # the kernel's record of that moment judges the row instead (judge.py)
            att = rec.attribution
            self.session.reattribute(
                note.seq,
                replace(
                    att,
                    receiver=note.receiver or att.receiver,
                    notes=(*att.notes, note.text),
                    related=(*att.related, note.related) if note.related >= 0 else att.related,
                ),
            )

    def emit(self, final: bool = False) -> None:
        """Hand settled rows to the writer and ``on_record`` (every pending row if final)."""
        now = time.monotonic()
        recheck, last = self._recheck, self._recheck_last
        while recheck and (final or recheck[0][0] <= now - RECHECK_AFTER):
            at, row = recheck.popleft()
            if not self._fill_late_holders(row):
                last.append((at, row))
        # the rows about to be handed on (the horizon below): their last chance
        while last and (final or last[0][0] <= now - self.settle):
            self._fill_late_holders(last.popleft()[1])
        if self.verifier.waiting_reuseport:
            self._apply(self.verifier.recheck(self.tables.current()))
        if final:
            self._apply(self.verifier.expire(float("inf")))
        elif self.source.live:
            # kernel timestamps are wall-clock time: a quiet capture still closes its questions
            self._apply(self.verifier.expire(time.time()))
        elif self._pending:
            newest = self._pending[-1][2]
            if newest is not None:
                self._apply(self.verifier.expire(newest.segment.ts))
        horizon = now - self.settle
        if self.tracer is not None and self._pending and not final:
            horizon = self._record_horizon(horizon, now)
        pending = self._pending
        over = len(pending) - self.session.window_size
        if over > 0:
            # After a burst the backlog drains faster than rows settle: rows that have left
            # the session's window are handed on now, so the queue never holds more rows than
            # the window (memory stays bounded; those rows miss only later notes).
            horizon = max(horizon, pending[over][0])
        if self._to_predict:
            self._predict_waiting(float("inf") if final else horizon)
        if self._to_judge:
            self._judge_settled(float("inf") if final else horizon)
        if self.tracer is not None and self._fast is not None:
            self._judge_fast_drops(float("inf") if final else horizon)
        if (
            self._fast is not None
            and self.on_record is None
            and (self.writer is None or isinstance(self.writer, PcapNgWriter))
        ):
            self._fast_emit(float("inf") if final else horizon)
        while pending and (final or pending[0][0] <= horizon):
            _, frame, rec = pending.popleft()
            if rec is None:
                self._write(frame, None, None)
                continue
            first = self._copy_of.pop(rec.seq, None)
            if first is not None:  # as its first copy is now (judged, late holders found)
                told = first.attribution
                self._reattribute(rec, replace(told, notes=(*told.notes, copy_note(first.seq, rec.segment))))
            self._write(frame, rec.segment, rec.attribution)
            if self.on_record is not None:
                self.on_record(rec)

    # -- the C fast path (fastpath.py) -------------------------------------------------

    def _fast_slow(self, frame: Frame) -> bool:
        """A frame the fast path leaves to ``process``."""
        return self.process(frame) is not None

    def _fast_sync(self) -> None:
        """The fast path reads the flow cache's answers in place: before it does, and after
        every call into Python code (where the refresher thread may swap the table), the
        cache follows the current table, as ``FlowCache.get`` does for each frame here."""
        self.flow_cache.follow(self.tables.current())

    def _fast_flush(
        self,
        recs: list[Record],
        items: list[tuple[float, Frame, Record | None]],
        counts: dict[str, int],
        frames: int,
    ) -> None:
        """Rows the fast path made, in capture order: into the session and the queue of
        rows to hand on, as ``process`` puts each one."""
        self.session.counters.frames += frames
        if recs:
            self._pending.extend(items)  # first: a row in the session is always handed on
            self.session.extend(recs, counts)

    def _fast_emit(self, horizon: float) -> None:
        """Hand on the settled rows the C way (blocks for the writer built in C, one write
        per call), up to the first row only ``emit``'s loop can hand on."""
        fast, pending = self._fast, self._pending
        while pending and pending[0][0] <= horizon:
            writer = self.writer if self.writer_error is None else None
            blob, written, more, error = fast.emit(pending, horizon, writer)
            if written and writer is not None:
                try:
                    writer.put_blocks(blob, written)
                except (OSError, ExportError) as exc:
                    self._writer_failed(exc)
            if error is not None:  # after the rows it had built were written
                raise error
            if not more:
                return
            if pending and pending[0][0] <= horizon:  # one row the Python way, then C again
                _, frame, rec = pending.popleft()
                self._write(frame, rec.segment if rec else None, rec.attribution if rec else None)

    def _attribute(self, frame: Frame, seg: Segment) -> Attribution:
        if frame.comment and self.use_file_attributions:
            restored = attribution_from_comment(frame.comment)
            if restored is not None:
                return restored
        table = self.tables.current()
        if not self.source.live and not len(table):
            return Attribution(
                Match.UNKNOWN,
                explain="Read from a file with no attribution recorded: the socket table of that "
                "moment is not known.",
            )
        # Most segments are data and ACKs of flows already seen: with the same table, the
        # demux would answer exactly as before (it reads only addresses, ports, flags,
        # packet type and interface for them), so reuse that answer.
        flags = seg.flags
        history = self.history
        tcp = seg.proto == "tcp"
        closed = tcp and history.note_close(seg)
        old_conn = history.old_connection(seg) if tcp else None
        if old_conn is not None:
            # a SYN hit this old connection; until its RST is seen, it is the one on this tuple
            table = table.with_entries((old_conn,))
            if "R" in flags:
                history.drop_old_connection(seg)
        cacheable = (
            "S" not in flags and "F" not in flags and "R" not in flags and not closed and old_conn is None
        )
        if cacheable:
            key = cache_key(seg)
            hit = self.flow_cache.get(table, key)
            if hit is not None:
                return hit
        after_reset = False
        if tcp and flags:
            pruned = self._forget_reset(seg, table)
            after_reset, table = pruned is not table, pruned
        att = attribute(seg, table)
        if self.spaces is not None and self.source.live and len(self.spaces) > 1:
            crossed = self._across(seg, att)
            if crossed is not None:
                # never cached for the C fast path: each end was read in its own namespace's
                # table, whose refreshes the cache does not follow; every copy and segment of
                # it is judged against the kernel's record of its namespace
                return crossed
        stale_after_close = closed and not seg.is_syn and _shows_open(att)
        if (
            self.source.live
            and (
                after_reset
                or stale_after_close
                or _needs_resolve(seg, att, table)
                or self._listeners_stale(seg, att)
            )
            and self._may_resolve(seg, att)
        ):
            first = att
            fresher = self.tables.resolve(seg, prune=stale_after_close)
            if fresher is not None and old_conn is not None:
                fresher = fresher.with_entries((old_conn,))
            if fresher is not None:
                att = attribute(seg, self._forget_reset(seg, fresher) if seg.is_syn else fresher)
            old = first.receiver
            if (
                seg.is_syn
                and first.match == Match.ESTABLISHED
                and att.match == Match.LISTENER
                and old is not None
                and 0 < old.first_seen < seg.ts
                and not after_reset
                and not history.syn_after_close
            ):
                # Capture order decides: the old connection was alive when this SYN came (no RST
                # or close of it was seen before), so the SYN hit it (challenge ACK); the new
                # connection the table shows now was made after its RST, further on.
                att = first
                history.keep_old_connection(seg, old)
            if first.match == Match.TIME_WAIT and seg.is_syn and att.match == Match.LISTENER:
                # The table read after the fact shows the connection this SYN made; the one
                # before showed why the kernel let it through: keep both halves.
                att = replace(att, explain=f"{att.explain} It reused a TIME_WAIT 4-tuple: {first.explain}")
            if closed and not seg.is_syn:
                att = _late_after_close(seg, att)
            # a fresher table came in: the next segment of the flow is cached against it
            return self._through_nat(seg, att) if self.source.live else att
        if closed and not seg.is_syn:
            att = _late_after_close(seg, att)
        if self.source.live and (seg.is_syn or att.match in _NAT_SUSPECTS):
            natted = self._through_nat(seg, att)
            if natted is not att:
                return natted
        if cacheable and self.tables.current() is table and not _needs_resolve(seg, att, table):
            self.flow_cache.put(table, key, att)
        return att

    def _through_nat(self, seg: Segment, att: Attribution) -> Attribution:
        """What conntrack says about a segment NAT may have rewritten.

        The capture sees ingress frames before DNAT/REDIRECT and egress frames after SNAT and
        the reverse translation, so with NAT the captured addresses are not the socket's
        (KERNEL-DEMUX.md §6). A miss (none, not_local, unknown) is looked up again with the
        socket's real tuple; a SYN that already found its socket learns what the client
        dialled. ``conntui.sockets.conntrack`` has the direction rules.
        """
        if not (seg.is_syn or att.match in _NAT_SUSPECTS):
            return att
        nat = self._conntrack()
        if nat is None:
            return att
        key = seg.key
        mapping = self._nat_cache.get(key, _UNSET)
        if mapping is _UNSET:
            outgoing = seg.pkttype == PACKET_OUTGOING or seg.src == seg.dst or seg.iface == "lo"
            mapping = nat.lookup(key, seg.family, outgoing=outgoing)
            if len(self._nat_cache) > 65536:
                self._nat_cache.clear()
            self._nat_cache[key] = mapping
        if not isinstance(mapping, NatMapping) or not mapping.nat:
            return att
        table = self.tables.current()
        sock = local_socket_tuple(mapping, key, is_local=table.is_local)
        if sock is None:
            return att
        laddr, lport, raddr, rport = sock
        o = mapping.original
        dialled = endpoint_text(o.dst, o.dport)
        kind = "REDIRECT/DNAT" if mapping.dst_nat else "SNAT"
        if att.match not in _NAT_SUSPECTS:  # found already (post-NAT capture, e.g. on lo)
            note = f"NAT ({kind}): the client dialled {dialled}; conntrack sent it to this socket"
            return replace(att, notes=(*att.notes, note))
        incoming = unmap(seg.src) == unmap(raddr) and seg.sport == rport
        if incoming:
            real = seg._replace(src=raddr, sport=rport, dst=laddr, dport=lport)
        else:
            real = seg._replace(src=laddr, sport=lport, dst=raddr, dport=rport)
        if real == seg:
            return att
        real_att = attribute(real, table)
        local_end = real_att.receiver if incoming else real_att.sender
        if _needs_resolve(real, real_att, table) or local_end is None or not local_end.holders:
            fresher = self.tables.resolve(real)
            if fresher is not None:
                real_att = attribute(real, fresher)
        here = endpoint_text(laddr, lport)
        step = Lookup(
            f"conntrack: {endpoint_text(seg.src, seg.sport)} → {endpoint_text(seg.dst, seg.dport)} ({kind})",
            f"the local socket is {here} ↔ {endpoint_text(raddr, rport)}",
        )
        why = (
            f"NAT ({kind}): the client dialled {dialled}; conntrack rewrote the connection so the "
            f"socket on {here} {'receives' if incoming else 'sends'} it (the capture shows the "
            f"addresses as they were on the wire). {real_att.explain}"
        )
        return replace(real_att, explain=why, steps=(step, *real_att.steps))

    def _across(self, seg: Segment, att: Attribution) -> Attribution | None:
        """The row of a segment an end of which is in another network namespace (a
        container's): each end looked up in the namespace owning its address, with its
        socket's own tuple (through conntrack when NAT rewrote it). None: both ends are in
        this namespace or on other hosts, and the usual path answers (crossns.py)."""
        spaces = self.spaces
        assert spaces is not None
        home = spaces.primary_inode
        elsewhere = spaces.owner(seg.src) not in (home, None) or spaces.owner(seg.dst) not in (home, None)
        elsewhere = elsewhere or bool(spaces.owners(seg.src) or spaces.owners(seg.dst))
        if not elsewhere and not (seg.is_syn or att.match in _NAT_SUSPECTS):
            return None
        mapping = self._mapping(seg)
        ends = mapping_ends(mapping, seg) if mapping is not None and mapping.nat else None
        if ends is None:
            if not elsewhere:
                return None
            mapping = None
            ends = (seg.src, seg.sport, seg.dst, seg.dport), (seg.dst, seg.dport, seg.src, seg.sport)
        snd, rcv = ends
        snd_ns, rcv_ns = spaces.owner(snd[0]), spaces.owner(rcv[0])
        if snd_ns in (home, None) and rcv_ns in (home, None) and not spaces.owners(rcv[0]):
            return None  # a NAT of this namespace's own (REDIRECT): _through_nat's
        # each end as its own socket sees it (the device is the host's, not that namespace's)
        rseg = seg._replace(src=rcv[2], sport=rcv[3], dst=rcv[0], dport=rcv[1], pkttype=PACKET_HOST)
        sseg = seg._replace(src=snd[0], sport=snd[1], dst=snd[2], dport=snd[3], pkttype=PACKET_OUTGOING)
        rseg, sseg = rseg._replace(ifindex=0, iface=""), sseg._replace(ifindex=0, iface="")
        several = spaces.owners(rcv[0])
        if rcv_ns is None and len(several) > 1:
            receiving = unknown_end(rcv[0], several)
        else:
            # owned by no namespace: handled where it was captured (forwarded, dropped, or
            # steered by TPROXY to a local socket), with the device and packet type it came by
            where = home if rcv_ns is None else rcv_ns
            if where == home:
                rseg = rseg._replace(iface=seg.iface, ifindex=seg.ifindex)
                if mapping is None:
                    rseg = rseg._replace(pkttype=seg.pkttype)
            rtable = spaces.table(where)
            assert rtable is not None
            receiving = self._look(rseg, rtable, where)
            self._view = (rseg, rtable, where, sseg, snd_ns)
        stable = spaces.table(snd_ns) if snd_ns is not None else None
        if stable is not None:
            sending = self._look(sseg, stable, snd_ns, "sender")
        else:
            sending = attribute(sseg, spaces.primary.current())
        return compose(
            seg,
            receiving,
            sending,
            rcv=rcv,
            rcv_where=self._ns_label(rcv_ns) if rcv_ns not in (home, None) else "",
            snd_where=self._ns_label(snd_ns) if snd_ns not in (home, None) else "",
            mapping=mapping,
        )

    def _look(self, seg: Segment, table: SocketTable, ns: int | None, end: str = "receiver") -> Attribution:
        """The demux in one namespace's table, looked up again there when it is too old, and
        again when the socket of ``end`` (receiver or sender) has changed hands since."""
        att = attribute(seg, table)
        spaces = self.spaces
        if ns is None or spaces is None:
            return att
        if _needs_resolve(seg, att, table) and self._may_resolve(seg, att):
            src = spaces.source(ns)
            fresher = src.resolve(seg) if src is not None else None
            if fresher is not None:
                table, att = fresher, attribute(seg, fresher)
        sock = att.receiver if end == "receiver" else att.sender
        now = self._held_now(sock, ns)
        if now is not sock and now is not None:
            att = attribute(seg, table.with_entries((now,)))
        return att

    def _held_now(self, sock: SocketEntry | None, ns: int | None) -> SocketEntry | None:
        """``sock`` with the holders it has now, when those the table shows have let it go
        (a forking server: the parent accept()s, a child takes the socket, the parent closes
        its fd; the table read before still names the parent). One readlink per holder."""
        if sock is None or not sock.inode or not sock.holders or ns is None or self.spaces is None:
            return sock
        link = f"socket:[{sock.inode}]"
        for h in sock.holders:
            try:
                if os.readlink(f"/proc/{h.pid}/fd/{h.fd}") == link:
                    return sock
            except OSError:
                pass
        src = self.spaces.source(ns)
        if src is None:
            return sock
        found = src.scanner.find_holders({sock.inode}, [h.pid for h in sock.holders], deep=False)
        now = found.get(sock.inode, ())
        if not now:
            return sock  # gone, or not found cheaply: the table's view stands
        return replace(sock, holders=now, former_holders=(*sock.former_holders, *sock.holders))

    def _ns_label(self, ns: int | None) -> str:
        spaces = self.spaces
        if ns is None or spaces is None:
            return ""
        info = spaces.infos.get(ns)
        if info is not None and info.name:
            return f"network namespace net:[{ns}] ({info.name})"
        return f"network namespace net:[{ns}]"

    def _mapping(self, seg: Segment) -> NatMapping | None:
        """The conntrack entry of ``seg``'s connection: asked once per captured tuple, or
        (a half-translated copy, which no whole tuple of the entry matches) found by an
        endpoint of an entry seen before."""
        key = seg.key
        mapping = self._nat_cache.get(key, _UNSET)
        if mapping is _UNSET:
            nat = self._conntrack()
            mapping = None
            if nat is not None:
                outgoing = seg.pkttype == PACKET_OUTGOING or seg.src == seg.dst or seg.iface == "lo"
                mapping = nat.lookup(key, seg.family, outgoing=outgoing)
            if mapping is None:
                mapping = self._nat_index.find(seg)
            elif isinstance(mapping, NatMapping) and mapping.nat:
                self._nat_index.add(mapping)
            if len(self._nat_cache) > 65536:
                self._nat_cache.clear()
            if mapping is not None or not seg.is_syn:  # a SYN may come before its entry
                self._nat_cache[key] = mapping
        return mapping if isinstance(mapping, NatMapping) else None

    def _conntrack(self) -> Conntrack | None:
        """The conntrack table, once the kernel has one (NAT rules load it on demand)."""
        if self._nat is not None:
            return self._nat if self._nat.available else None
        now = time.monotonic()
        if now < self._nat_next_check:
            return None
        self._nat_next_check = now + 5.0
        if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max"):
            return None
        try:
            self._nat = Conntrack()
        except OSError:
            return None
        return self._nat

    def _syn_was_accepted(self, seg: Segment) -> bool:
        """Whether the connection a SYN asks for exists (request sock or child): then the SYN
        was not dropped, whatever the listener's queue shows now."""
        return any(
            e.state != "TIME_WAIT"
            for e in self.tables.current().connected("tcp", seg.dst, seg.dport, seg.src, seg.sport)
        )

    def _fill_late_holders(self, rec: Record) -> bool:
        """Name the process of a socket nobody held when its segment came, if one holds it now.

        A connection's first segments often reach it before the server calls accept(), and a
        client socket may belong to a process not scanned yet: the look-up at capture time
        finds the socket without a holder. The same socket (by cookie) is looked for again
        ``RECHECK_AFTER`` later (a connection held for 20 ms is often closed by the time the
        row is handed on) and when the row is handed on, with one exact look-up per socket
        in each of those rounds; the note says the holder came later. True when nothing is left unnamed."""
        att = rec.attribution
        receiver, sender = att.receiver, att.sender
        if not (_unheld(receiver) or _unheld(sender)):
            return True
        seg = rec.segment
        table = self.tables.current()
        notes: list[str] = []

        def later(sock: SocketEntry | None, side: str) -> SocketEntry | None:
            nonlocal table
            if sock is None or not _unheld(sock):
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
        return not (_unheld(new_receiver) or _unheld(new_sender))

    def _judge_settled(self, horizon: float) -> None:
        """Set the rows about to be handed on beside the kernel's record of their moment
        (judge.py): names from the tracer, the kernel's verdict, corrections."""
        tracer = self.tracer
        assert tracer is not None
        queue = self._to_judge
        while queue and queue[0][0] <= horizon:
            _, rec, table, view = queue.popleft()
            seg, att = rec.segment, rec.attribution
            timeline = tracer.timeline
            holder_at: HolderAt = self._holder_at
            bound_at: HolderAt = self._bound_at
            if view is not None:
                # a row across namespaces: judged as its receiving socket sees it, there
                seg, table, ns, _, _ = view
                timeline = tracer.timeline_for(ns)
                holder_at, bound_at = self._holder_in(ns), self._bound_in(ns)
            if not timeline.covers(seg.ts):
                self._fill_from_tracer(rec)
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
            judged = judge(seg, att, timeline, holder_at, table, bound_at, self._rows_in, here=view is None)
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
                self._fill_from_tracer(rec)

    def _judge_fast_drops(self, horizon: float) -> None:
        """Rows the fast path made are final answers the kernel's record need not correct,
        but one the kernel dropped (a full receive buffer, say) must carry its reason: look
        for those rows while drops wait for them."""
        tracer = self.tracer
        assert tracer is not None
        timeline = tracer.timeline
        flows = timeline.drop_flows()
        if not flows:
            return
        table = self.tables.current()
        for at, _, rec in self._pending:
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
                judged = judge(seg, rec.attribution, timeline, self._holder_at, table, None, self._rows_in)
                if judged is not rec.attribution:
                    self._reattribute(rec, judged)

    def _rows_in(self, batch: DropBatch) -> int:
        """How many rows of the flow of ``batch`` (drops the kernel counted) were captured in
        its window: the rows not yet handed on (a window is judged before its rows leave);
        -1 when the capture has lost packets since the last look (the count cannot be matched)."""
        lost = (
            self._sample_ring_drops()
            if time.time() - self._ring_drops[-1][0] > 0.05
            else self._ring_drops[-1][1]
        )
        before = next((n for t, n in reversed(self._ring_drops) if t <= batch.t0 - 0.01), None)
        if before is None or lost > before:
            return -1
        flow = (batch.proto, unmap(batch.src), batch.sport, unmap(batch.dst), batch.dport)
        n = 0
        for _, _, rec in self._pending:
            if rec is None:
                continue
            seg = rec.segment
            if (seg.proto, unmap(seg.src), seg.sport, unmap(seg.dst), seg.dport) == flow and batch.covers(
                seg.ts
            ):
                n += 1
        return n

    def _sample_ring_drops(self) -> int:
        """The capture's own losses (packets the kernel could not put in the ring), kept with
        their time for the last minute: a window of counted drops is matched to rows only
        when none were lost since before it (``_rows_in``)."""
        lost = self.source.kernel_drops()
        self.session.counters.kernel_drops = lost
        samples = self._ring_drops
        samples.append((time.time(), lost))
        while len(samples) > 2 and samples[0][0] < samples[-1][0] - 60:
            samples.popleft()
        return lost

    def _judge_sender_across(self, view: _View, att: Attribution) -> Attribution:
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

    def _holder_in(self, ns: int) -> Callable[[str, int, str, int, float], tuple[Holder, float] | None]:
        return lambda la, lp, ra, rp, at: self._holder_at(la, lp, ra, rp, at, ns)

    def _bound_in(self, ns: int) -> Callable[[str, int, str, int, float], tuple[Holder, float] | None]:
        return lambda la, lp, ra, rp, at: self._bound_at(la, lp, ra, rp, at, ns)

    def _record_horizon(self, horizon: float, now: float) -> float:
        """Rows are judged and handed on once the tracer's output has caught up with them:
        their segment's time plus the time a drop or RST of it may take to be published
        (``JOIN_AFTER``). A loaded host can keep bpftrace's output more than ``settle``
        behind; a row judged before its record came would be judged on nothing. Bounded:
        a row waits at most ``HOLD_MAX`` beyond ``settle``."""
        tracer = self.tracer
        assert tracer is not None
        if not tracer.ready.is_set() or not tracer.alive:
            return horizon
        offset = time.time() - now  # wall clock - monotonic
        if tracer.caught_up(horizon + offset + JOIN_AFTER):
            return horizon
        read_up_to = tracer.synced_at - offset - JOIN_AFTER
        return max(min(horizon, read_up_to), now - self.settle - HOLD_MAX)

    def _predict(self, seg: Segment, att: Attribution, table: SocketTable) -> Attribution:
        """The table's answer corrected by what the kernel had published up to the segment
        (predict.py): the prediction the kernel's record is set beside when the row settles."""
        tracer = self.tracer
        assert tracer is not None
        return predict(seg, att, tracer.timeline, self._holder_at, table, self._connected_at)

    def _predict_waiting(self, horizon: float) -> None:
        """Predict the rows that waited for the tracer's output to catch up with their
        segment (a few ms: bpftrace reads its per-CPU buffers in rounds): as soon as it
        has, or, at the latest, before the row is judged (``horizon``) with what was read."""
        tracer = self.tracer
        assert tracer is not None
        queue = self._to_predict
        while queue:
            at, rec, table = queue[0]
            if at > horizon and not tracer.caught_up(rec.segment.ts):
                break
            queue.popleft()
            predicted = self._predict(rec.segment, rec.attribution, table)
            if predicted is not rec.attribution:
                self._reattribute(rec, predicted)

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

    def _holder_at(
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
        holder = self._passed_on(found, ns) or self._traced(found)
        renamed = tracer.exec_after(holder.pid, found.t)
        if renamed is not None and tracer.execs.get(holder.pid, (float("inf"), ""))[0] <= at:
            holder = Holder(holder.pid, holder.fd, renamed, holder.container)
        # connect() returns after it sent the SYN (a blocking one after the handshake): the
        # process had the socket from the call's start, a moment before the record
        since = found.t - TRACE_SLACK if found.kind == "connect" else found.t
        return holder, since

    def _passed_on(self, found: TraceRecord, ns: int) -> Holder | None:
        """Who holds an accept()ed socket now, when the process that accepted it no longer
        does (a forking server: the parent accept()s, the child gets the socket and the
        parent closes its fd); None when the accepting fd still holds it, or nobody can
        be found (then the accept record is all there is)."""
        if found.kind != "accept" or not found.inode or not self.source.live:
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
            held = scanner.find_holders({found.inode}, (found.pid,)).get(found.inode, ())
            now = held[0] if held else None
        if len(self._handed) > 4096:
            self._handed.clear()
        self._handed[found.inode] = now
        return now

    def _reattribute(self, rec: Record, att: Attribution) -> None:
        """Give a row a fuller attribution, in the session or, once out of its window, in
        the row itself (it is still to be handed on)."""
        if not self.session.reattribute(rec.seq, att):
            rec.attribution = att

    def _fill_from_tracer(self, rec: Record) -> None:
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

    def _forget_reset(self, seg: Segment, table: SocketTable) -> SocketTable:
        """Remember RSTs; hide a connection from the SYN that follows its reset.

        The table is read after the fact: a connection killed by a RST may still be listed
        (the refresher has not run) or may be gone although the SYN before the RST reached
        it. Capture order settles it: a SYN after a RST on its 4-tuple is a new connection
        attempt, and the old connection must not explain it.
        """
        if "R" in seg.flags:
            self.history.note_reset(seg)
            return table
        if not seg.is_syn or not self.history.reset_before(seg):
            return table
        old = [
            e
            for e in table.connected("tcp", seg.dst, seg.dport, seg.src, seg.sport)
            if e.state != "TIME_WAIT"
        ]
        return table.with_entries((), removed=old) if old else table

    def _listeners_stale(self, seg: Segment, att: Attribution) -> bool:
        """A SYN to a listener: check the port's listeners (new SO_REUSEPORT members, queue
        lengths) at most once a second per port; the refresher covers the rest."""
        if att.match != Match.LISTENER or not seg.is_syn:
            return False
        key = (seg.proto, seg.dport)
        now = time.monotonic()
        last = self._listener_checks.get(key)
        if last is not None and now - last < 1.0:
            return False
        if len(self._listener_checks) > 10_000:
            self._listener_checks.clear()
        self._listener_checks[key] = now
        return True

    def _may_resolve(self, seg: Segment, att: Attribution) -> bool:
        """Repeated misses of one flow (a scan of closed ports, a flood to nowhere) are looked
        up at most once per cooldown; other look-ups are cheap and always worth it (the
        socket table source rate-limits its own expensive /proc walks)."""
        if att.match not in (Match.NONE, Match.UNKNOWN):
            return True
        key = (seg.proto, seg.src, seg.sport, seg.dst, seg.dport)
        now = time.monotonic()
        last = self._recent_resolves.get(key)
        if last is not None and now - last <= self.resolve_cooldown:
            return False
        if len(self._recent_resolves) > 10_000:
            self._recent_resolves.clear()
        self._recent_resolves[key] = now
        return True

    def _write(self, frame: Frame, seg: Segment | None, att: Attribution | None) -> None:
        if self.writer is None or self.writer_error is not None:
            return
        try:
            self.writer.write(frame, seg, att)
        except (OSError, ExportError) as exc:
            # The disk filled up or the file went away: say so, keep capturing.
            self._writer_failed(exc)

    def _writer_failed(self, exc: Exception) -> None:
        """Stop writing (the file keeps every whole packet so far); tell the user once."""
        if self.writer_error is not None:
            return
        self.writer_error = (
            str(exc) if isinstance(exc, ExportError) else f"writing the capture file failed: {exc}"
        )
        if self.on_writer_error is not None:
            self.on_writer_error(self.writer_error)

    # -- loops -------------------------------------------------------------------

    def run(
        self,
        count: int | None = None,
        duration: float | None = None,
        poll: float = 0.1,
    ) -> None:
        """Capture in this thread until stopped, ``count`` segments, ``duration`` seconds,
        or the end of a file. Raises CaptureError when the source fails."""
        deadline = None if duration is None else time.monotonic() + duration
        last_flush = time.monotonic()
        last_drop_check = 0.0
        stored = 0
        refresh_stop = threading.Event()
        if self.source.live:
            # The table is refreshed on a timer beside the capture (misses are looked up at
            # once on the capture thread): new listeners, queue lengths, holders.
            self._refresher = threading.Thread(
                target=self._refresh_loop, args=(refresh_stop,), name="conntui-refresh", daemon=True
            )
            self._refresher.start()
        gc_policy = GcPolicy()
        fast_source = self._start_fast()
        try:
            while not self._stop.is_set() and not self._stop_requested:
                timeout = poll
                if deadline is not None:
                    timeout = min(poll, max(0.0, deadline - time.monotonic()))
                if fast_source is not None:
                    budget = -1 if count is None else count - stored
                    got, kept = fast_source.pump(self._fast, timeout, budget)
                    stored += kept
                else:
                    frames = self.source.read(timeout)
                    got = len(frames)
                    for frame in frames:
                        if self.process(frame) is not None:
                            stored += 1
                            if count is not None and stored >= count:
                                break
                if count is not None and stored >= count:
                    self._stop.set()
                now = time.monotonic()
                if now - last_drop_check > 0.5:
                    last_drop_check = now
                    self._sample_ring_drops()
                self.emit()
                gc_policy.tick()
                if self.writer is not None and now - last_flush > 0.25:
                    last_flush = now
                    self._flush()
                if not got and self.source.ended:
                    break
                if deadline is not None and now >= deadline:
                    break
        finally:
            gc_policy.stop()
            refresh_stop.set()
            self.session.counters.kernel_drops = self.source.kernel_drops()
            self.emit(final=True)
            self._fast = None
            self._flush()

    def _start_fast(self) -> Any:
        """The source to pump through the C fast path, or None for the Python loop: it
        serves a live ring capture whose rows settle before they are handed on, with no
        port filter left to check in Python."""
        from . import fastpath

        pump = getattr(self.source, "pump", None)
        if (
            pump is None
            or not self.source.live
            or self.settle <= 0
            or self._keep_segments is not None
            or not hasattr(self.session, "extend")
        ):
            return None
        names = self.source.fast_names()  # type: ignore[attr-defined]
        if names is None:
            return None
        self._fast = fastpath.make(self, names)
        return self.source if self._fast is not None else None

    def _flush(self) -> None:
        if self.writer is not None and self.writer_error is None:
            try:
                self.writer.flush()
            except (OSError, ExportError) as exc:
                self._writer_failed(exc)

    def _refresh_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_interval):
            try:
                self.tables.refresh()
            except Exception as exc:  # a vanished process mid-scan must not stop refreshing
                self.error = self.error or f"socket table refresh failed: {exc}"

    def start(self) -> None:
        """Run the capture loop (and so the refresher) in a background thread (the TUI)."""
        self._thread = threading.Thread(target=self._run_safely, name="conntui-capture", daemon=True)
        self._thread.start()

    def _run_safely(self) -> None:
        try:
            self.run()
        except CaptureError as exc:
            self.error = str(exc)
        except Exception as exc:  # keep the UI alive; it shows the message
            self.error = f"capture stopped: {type(exc).__name__}: {exc}"

    @property
    def live(self) -> bool:
        """A live capture (not a file): its pids are this host's processes now."""
        return bool(self.source.live)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_stop(self) -> None:
        """End the capture loop after the frames in hand, cleanly (flushed, written). Takes
        no lock, so a signal handler may call it while the loop runs in the same thread."""
        self._stop_requested = True

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        for t in (self._thread, self._refresher):
            if t is not None and t is not threading.current_thread():
                t.join(timeout)
        self.close()

    def close(self) -> None:
        self.emit(final=True)
        self.session.close()
        if self.tracer is not None:
            self.tracer.close()
        if self.writer is not None:
            try:
                self.writer.close()
            except (OSError, ExportError) as exc:
                self._writer_failed(exc)
        self.source.close()
