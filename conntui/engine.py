"""The pipeline: frames → decode → demux against the socket table → session (+ writer).

One ``Engine`` serves the headless printer, the TUI and the tests. Every OS input is
injected (a ``FrameSource`` and a ``TableSource``), so the whole pipeline runs on fake frames
and socket tables in tests. The capture loop never waits for a reader: readers poll the
session with ``since(seq)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from .capture import CaptureError, FrameSource
from .decode import decode_frame
from .demux import attribute
from .export import Writer, attribution_from_comment
from .model import Attribution, Frame, Match, Record, Segment, SocketTable
from .session import Session

SegmentPredicate = Callable[[Segment], bool]


class TableSource(Protocol):
    """Where the socket table comes from (``sockets.SocketTableSource`` on a live host)."""

    def current(self) -> SocketTable: ...

    def refresh(self) -> SocketTable: ...

    def resolve(self, seg: Segment) -> SocketTable | None: ...


class StaticTables:
    """A fixed socket table (tests, files read with -r, the TUI's demo data)."""

    def __init__(self, table: SocketTable | None = None) -> None:
        self._table = table or SocketTable()

    def current(self) -> SocketTable:
        return self._table

    def refresh(self) -> SocketTable:
        return self._table

    def resolve(self, seg: Segment) -> SocketTable | None:
        return None


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
    ) -> None:
        self.source = source
        self.tables = tables
        self.session = session or Session()
        self.keep = keep
        self.writer = writer
        self.on_record = on_record
        self.refresh_interval = refresh_interval
        self.resolve_cooldown = resolve_cooldown
        self.use_file_attributions = use_file_attributions
        self.error: str | None = None  # why capture stopped early, for the UI / exit code
        self.writer_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresher: threading.Thread | None = None
        self._recent_resolves: dict[tuple[str, str, int, str, int], float] = {}
        self.started_at = time.time()

    # -- one frame ---------------------------------------------------------------

    def process(self, frame: Frame) -> Record | None:
        """Decode, filter, attribute and store one frame; None when it is not kept."""
        counters = self.session.counters
        counters.frames += 1
        seg = decode_frame(frame)
        if seg is None:
            counters.undecodable += 1
            if self.keep is None:
                self._write(frame, None, None)
            return None
        if self.keep is not None and not self.keep(seg):
            counters.filtered += 1
            return None
        att = self._attribute(frame, seg)
        rec = self.session.append(frame, seg, att)
        self._write(frame, seg, att)
        if self.on_record is not None:
            self.on_record(rec)
        return rec

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
        att = attribute(seg, table)
        if self.source.live and _needs_resolve(seg, att, table) and self._may_resolve(seg, att):
            fresher = self.tables.resolve(seg)
            if fresher is not None:
                att = attribute(seg, fresher)
        return att

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
        except OSError as exc:
            # The disk filled up or the file went away: say so, keep capturing.
            self.writer_error = (
                f"writing {getattr(self.writer, 'path', 'the capture file')} failed: {exc.strerror or exc}"
            )

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
        try:
            while not self._stop.is_set():
                timeout = poll
                if deadline is not None:
                    timeout = min(poll, max(0.0, deadline - time.monotonic()))
                frames = self.source.read(timeout)
                for frame in frames:
                    if self.process(frame) is not None:
                        stored += 1
                        if count is not None and stored >= count:
                            self._stop.set()
                            break
                now = time.monotonic()
                if now - last_drop_check > 0.5:
                    last_drop_check = now
                    self.session.counters.kernel_drops = self.source.kernel_drops()
                if self.writer is not None and now - last_flush > 0.25:
                    last_flush = now
                    self._flush()
                if not frames and self.source.ended:
                    break
                if deadline is not None and now >= deadline:
                    break
        finally:
            self.session.counters.kernel_drops = self.source.kernel_drops()
            self._flush()

    def _flush(self) -> None:
        if self.writer is not None and self.writer_error is None:
            try:
                self.writer.flush()
            except OSError as exc:
                self.writer_error = f"writing the capture file failed: {exc.strerror or exc}"

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self.tables.refresh()
            except Exception as exc:  # a vanished process mid-scan must not stop refreshing
                self.error = self.error or f"socket table refresh failed: {exc}"

    def start(self) -> None:
        """Run the capture loop and the refresher in background threads (the TUI)."""
        self._thread = threading.Thread(target=self._run_safely, name="conntui-capture", daemon=True)
        self._thread.start()
        if self.source.live:
            self._refresher = threading.Thread(target=self._refresh_loop, name="conntui-refresh", daemon=True)
            self._refresher.start()

    def _run_safely(self) -> None:
        try:
            self.run()
        except CaptureError as exc:
            self.error = str(exc)
        except Exception as exc:  # keep the UI alive; it shows the message
            self.error = f"capture stopped: {type(exc).__name__}: {exc}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        for t in (self._thread, self._refresher):
            if t is not None and t is not threading.current_thread():
                t.join(timeout)
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError as exc:
                self.writer_error = (
                    self.writer_error or f"closing the capture file failed: {exc.strerror or exc}"
                )
        self.source.close()
