"""The pipeline: frames → decode → attribute → session (+ writer), and its threads.

One ``Engine`` serves the headless printer, the TUI and the tests. Every OS input is
injected (a ``FrameSource`` and a ``TableSource``), so the whole pipeline runs on fake frames
and socket tables in tests. The capture loop never waits for a reader: readers poll the
session with ``since(seq)``.

The engine owns the loop, the refresher thread and the settle queue (rows are handed to the
writer and ``on_record`` ``settle`` seconds after capture, when what later segments and the
kernel's record revealed is in them). The ideas it runs live beside it: attributor.py (one
segment's attribution: cache, history, fresher tables, NAT and namespaces through
natviews.py), latefill.py (holders found after the fact), tracerrows.py (rows set beside
the kernel tracer's record) and fastpath.py (the C loop for the common case).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import fastpath
from .attributor import Attributor
from .capfile.errors import ExportError
from .capfile.writers import PcapNgWriter, Writer
from .capture import LINKTYPE_RAW, CaptureError, FrameSource, ifname
from .crossns import SegmentCopies, copy_note
from .decode import IcmpError, decode_frame, decode_icmp_error
from .fastpath import FastShared
from .gcpolicy import GcPolicy
from .latefill import LateFills
from .model import Attribution, Frame, Record, Segment, unmap
from .session import Session
from .tablesource import StaticTables, TableSource
from .timeline import JOIN_AFTER, DropBatch
from .tracerrows import TracerRows
from .verify import Note, Verifier

if TYPE_CHECKING:
    from .tracer import SocketTracer

__all__ = ["HOLD_MAX", "Engine", "SegmentPredicate", "StaticTables", "TableSource"]

SegmentPredicate = Callable[[Segment], bool]


def _quoted_segment(err: IcmpError) -> Segment:
    q = err.quoted
    return Segment(err.ts, "", q.proto, err.family, q.src, q.sport, q.dst, q.dport)


# the verifier's notes when a predicted answer does not come: guesses the kernel's record replaces
_NO_ANSWER = ("no RST came back", "no ICMP port unreachable came back")
DRAIN_MAX = 0.5  # seconds a stopped capture goes on reading what the ring already holds (_drain)
HOLD_MAX = 2.0  # seconds a row may wait beyond ``settle`` for the tracer's output (_record_horizon)


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
        self.tracer_unavailable = ""  # why no tracer runs although one was asked for (one line)
        # segments already passed ``keep`` in the kernel's BPF filter
        self._keep_segments = None if kernel_filtered else keep
        self.writer = writer
        self.on_record = on_record
        self.refresh_interval = refresh_interval
        self.error: str | None = None  # why capture stopped early, for the UI / exit code
        self.writer_error: str | None = None
        # Told once, on the thread that failed, when writing the capture file fails.
        self.on_writer_error: Callable[[str], None] | None = None
        self._stop = threading.Event()
        self._stop_requested = False  # set by request_stop (signal handlers)
        self._thread: threading.Thread | None = None
        self._refresher: threading.Thread | None = None
        live = bool(source.live)
        self.attributor = Attributor(
            tables, live=live, resolve_cooldown=resolve_cooldown, use_file_attributions=use_file_attributions
        )
        self.history = self.attributor.history
        self.flow_cache = self.attributor.flow_cache
        # every network namespace's table, when the tables source keeps them (host capture)
        self.spaces = self.attributor.spaces
        self.verifier = Verifier(window=verify_window, accepted=self.attributor.syn_was_accepted)
        self.late = LateFills(tables, self._reattribute)
        # the tracer (optional): pid/fd of sockets gone before the table saw them
        self.records = TracerRows(tracer, tables, self.spaces, live=live, reattribute=self._reattribute)
        self._fast: Any = None  # the C fast path (fastpath.py), while a live ring capture runs
        self.settle = settle if source.live else 0.0
        self._pending: deque[tuple[float, Frame, Record | None]] = deque()
        # (epoch seconds, packets the capture had lost by then): see _sample_ring_drops
        self._ring_drops: deque[tuple[float, int]] = deque([(time.time(), 0)])
        self.records.rows_in = self._rows_in
        self._copies: SegmentCopies[Record] = SegmentCopies()
        self._copy_of: dict[int, Record] = {}  # a copy's row number → its first copy's row
        self.started_at = time.time()

    @property
    def tracer(self) -> SocketTracer | None:
        """The socket tracer (tracer.py) whose record judges the rows, if one runs."""
        return self.records.tracer

    @tracer.setter
    def tracer(self, tracer: SocketTracer | None) -> None:
        self.records.tracer = tracer

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
        att, view = self.attributor.attribute(frame, seg)
        records = self.records
        tracing = records.tracer is not None
        wait = False
        if tracing and view is None:
            # a row across namespaces was looked up in each end's own (judged when settled)
            att, wait = records.predict_now(seg, att)
        rec = self.session.append(frame, seg, att)
        if self.spaces is not None:
            self._copies.add(seg, rec.seq, att, rec)
        self._apply(self.verifier.on_record(rec))
        self._pending.append((now, frame, rec))
        if tracing:
            records.store(now, rec, view, wait)
        if self.settle <= 0:
            self.emit()
        elif self.source.live:
            self.late.watch(now, rec, att)
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
        # holders found late, for rows 15 ms old and the rows about to be handed on
        self.late.run(now, self.settle, final)
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
        records = self.records
        if records.to_predict:
            records.predict_waiting(float("inf") if final else horizon)
        if records.to_judge:
            records.judge_settled(float("inf") if final else horizon)
        if records.tracer is not None and self._fast is not None:
            records.judge_fast_drops(float("inf") if final else horizon, self._pending)
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

    def _rows_in(self, batch: DropBatch, lo: float, hi: float) -> int:
        """How many rows of the flow of ``batch`` (drops the kernel counted) were captured with
        a timestamp in [lo, hi]: the rows not yet handed on (a window is judged before its
        rows leave); -1 when the capture has lost packets since before the window."""
        last = self._ring_drops[-1]
        lost = self._sample_ring_drops() if time.time() - last[0] > 0.05 else last[1]
        before = next((n for t, n in reversed(self._ring_drops) if t <= min(lo, batch.t0) - 0.01), None)
        if before is None or lost > before:
            return -1
        flow = (batch.proto, unmap(batch.src), batch.sport, unmap(batch.dst), batch.dport)
        n = 0
        for _, _, rec in self._pending:
            if rec is None:
                continue
            seg = rec.segment
            if (
                lo <= seg.ts <= hi
                and (seg.proto, unmap(seg.src), seg.sport, unmap(seg.dst), seg.dport) == flow
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

    def _reattribute(self, rec: Record, att: Attribution) -> None:
        """Give a row a fuller attribution, in the session or, once out of its window, in
        the row itself (it is still to be handed on)."""
        if not self.session.reattribute(rec.seq, att):
            rec.attribution = att

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

    # -- the C fast path (fastpath.py) -------------------------------------------------

    def fast_shared(self) -> FastShared:
        """The state the C fast path shares with ``process`` (fastpath.py's contract)."""
        return FastShared(
            answers=self.flow_cache.fast,
            fins=self.history.fins,
            old_conns=self.history.old_conns,
            challenge=self.verifier.watched_challenge,
            reuseport=self.verifier.watched_reuseport,
            session=self.session,
            slow=self._fast_slow,
            flush=self._fast_flush,
            sync=self._fast_sync,
            ifname=ifname,
            linktype=LINKTYPE_RAW,
        )

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
                got, kept = self._take(fast_source, timeout, -1 if count is None else count - stored)
                stored += kept
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
            if self._stop_requested:
                self._drain(fast_source)
        finally:
            gc_policy.stop()
            refresh_stop.set()
            self.session.counters.kernel_drops = self.source.kernel_drops()
            received = getattr(self.source, "received", None)
            if received is not None:  # a live capture: what the kernel queued and was not read
                self.session.counters.unread = max(0, received() - self.session.counters.frames)
            self.emit(final=True)
            self._fast = None
            self._flush()

    def _drain(self, fast_source: Any) -> None:
        """At a stop (a signal): read what the kernel had already put in the capture ring,
        for at most ``DRAIN_MAX`` seconds (a flood goes on arriving); what is left is counted
        as unread (``Counters.unread``), not lost silently."""
        end = time.monotonic() + DRAIN_MAX
        idle = 0
        while idle < 3 and time.monotonic() < end and not self._stop.is_set():
            got, _ = self._take(fast_source, 0.002, -1)
            idle = 0 if got else idle + 1

    def _take(self, fast_source: Any, timeout: float, budget: int) -> tuple[int, int]:
        """One read of the source and its rows: through the C fast path when it serves,
        else frame by frame. (frames read, rows stored); ``budget`` < 0: no limit."""
        if fast_source is not None:
            got, kept = fast_source.pump(self._fast, timeout, budget)
            return got, kept
        frames = self.source.read(timeout)
        kept = 0
        for frame in frames:
            if self.process(frame) is not None:
                kept += 1
                if 0 <= budget <= kept:
                    break
        return len(frames), kept

    def _start_fast(self) -> Any:
        """The source to pump through the C fast path, or None for the Python loop: it
        serves a live ring capture whose rows settle before they are handed on, with no
        port filter left to check in Python."""
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
