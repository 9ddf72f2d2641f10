"""``ConntuiApp``: live, which process and fd the kernel delivers each segment to, and why.

The app reads the engine's session store on a timer (``_tick``) and never waits for the
capture thread: each tick drains at most ``drain_limit`` new records into the feed, so the
screen redraws and keys answer whatever the packet rate. A new filter shows its first
screenful at once (the newest matching rows) and goes through the older rows in short
slices between frames (``_fill``). Export and dissecting a packet run in thread workers
that post a message when done. While a dialog or the help covers the main screen, the
list behind holds still.

Keys come first: the tick, the socket view and a filter's slices wait a little when a key
was just pressed (``_after_key``), so the frame that shows the key's effect is not delayed
or made bigger by them. The tick also runs the garbage collector's young collections
(``GcPolicy(lead=True)``), so that they fall between frames and never just after a key.
"""

from __future__ import annotations

import os
import sys
import termios
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

from textual import events, work
from textual.app import App, ScreenStackError
from textual.binding import Binding, BindingType
from textual.timer import Timer

from ..filters import DisplayFilter, FilterError, parse_display_filter
from ..gcpolicy import GcPolicy
from ..model import Record, SocketEntry, SocketTable
from ..session import WINDOW, Session
from ..tablesource import ManyNamespaces
from .commands import ConntuiCommands
from .feed import FILL_CHUNK, Feed, record_filter
from .ladder import ladder_for
from .messages import ExportDone, ExportFailed
from .screens.confirm import ConfirmScreen
from .screens.export import ExportRequest, ExportScreen
from .screens.help import HelpScreen
from .screens.ladder import LadderScreen
from .screens.main import MainScreen
from .text import safe
from .widgets.filter_input import FilterInput
from .widgets.segment_list import SegmentList
from .widgets.status_bar import Status

if TYPE_CHECKING:
    from textual.widgets import Input


class _Tables(Protocol):
    def current(self) -> SocketTable: ...


# Another namespace's table older than the newest by this much (seconds) was not read again
# because no segment went there lately (``NamespaceTables``): its line says when it was read.
STALE_NAMESPACE = 5.0


class EngineLike(Protocol):
    """What the UI needs of ``conntui.engine.Engine`` (so tests may pass a stand-in)."""

    session: Session
    error: str | None
    writer_error: str | None

    @property
    def tables(self) -> _Tables: ...

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


def terminal_fd() -> int | None:
    """The descriptor Textual reads keys from, when it is a terminal."""
    try:
        fd = sys.__stdin__.fileno() if sys.__stdin__ is not None else -1
    except (OSError, ValueError):
        return None
    return fd if fd >= 0 and os.isatty(fd) else None


def terminal_alive(fd: int) -> bool:
    """Whether the terminal on ``fd`` is still there: after a hangup (its window closed, its
    SSH connection dropped) the kernel answers every request on it with EIO."""
    try:
        termios.tcgetattr(fd)
    except termios.error:
        return False
    return True


class ConntuiApp(App[None]):
    """See the module docstring."""

    CSS_PATH = "app.tcss"
    TITLE = "conntui"
    COMMANDS = App.COMMANDS | {ConntuiCommands}
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    # A new filter: the first pass (in the key's handler) stops once the screen can be
    # filled or after FILL_FIRST seconds; the rest goes in FILL_SLICE-second slices, one
    # every FILL_EVERY seconds, so frames and keys go on in between. What the slices find
    # joins the list at the next tick (one repaint a tick, not one a slice).
    FILL_FIRST = 0.008
    FILL_SLICE = 0.006
    FILL_EVERY = 0.03
    FILL_CHUNK = FILL_CHUNK
    # The capture thread runs Python too: with the default 5 ms GIL switch interval, each
    # of the many event-loop wake-ups between a key and its frame could wait up to 5 ms
    # for the interpreter. While the app runs it asks for a switch every 2 ms (bench/ui.py
    # at 20,000 segments/s, 2 cores: key → frame p95 about 40 % lower, p50 15-40 % lower,
    # the capture rate unchanged).
    SWITCH_INTERVAL: float | None = 0.002
    # Work a key causes but its effect does not need (catching up after a pause, the
    # socket view after a new filter) waits this long, so the frame showing the effect
    # goes first. (``call_after_refresh`` may run before that frame.)
    AFTER_FRAME = 0.04
    # A key's frame goes first: periodic work (the drain tick, the socket view, a new
    # filter's slices) that falls due less than KEY_FIRST seconds after a key press waits
    # until then, once (it would delay that frame and make it bigger).
    KEY_FIRST = 0.03
    DETAIL_EVERY = 0.5  # seconds: the detail pane following a busy stream
    TERMINAL_EVERY = 0.5  # seconds: is the terminal still there (_check_terminal)

    def __init__(
        self,
        engine: EngineLike,
        *,
        iface: str,
        filter_text: str = "",
        export_path: str | None = None,
        note: str = "",
        clock: Callable[[], float] = time.time,
        tick_interval: float = 0.1,
        socket_interval: float = 1.0,
        drain_limit: int = 5_000,
        capacity: int | None = None,
        gc_freeze: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.iface = iface
        self.capture_filter = filter_text
        self.export_path = export_path
        self.clock = clock
        self.tick_interval = tick_interval
        self.socket_interval = socket_interval
        self.drain_limit = drain_limit
        if capacity is None:  # the list shows what the session's window holds
            capacity = int(getattr(engine.session, "window_size", WINDOW))
        self.feed = Feed(engine.session, capacity)
        self.paused = False
        self.display_filter: DisplayFilter | None = None
        self.export_state = ""  # the last export from the UI
        self._exporting = False
        self._fill_timer: Timer | None = None
        self._retired: list[object] = []  # a replaced buffer, freed after the next frame
        self._switch_was: float | None = None
        self._terminal: int | None = None  # the terminal watched by _check_terminal
        self._rates: deque[tuple[float, int]] = deque(maxlen=64)
        self._error_shown: str | None = None
        self._tracer_told: tuple[str, str] = ("", "")  # the tracer failure last notified
        self._engine_stopped = False
        self._last_detail = 0.0
        self._key_at = 0.0  # time.monotonic() of the last key press
        self._deferred: set[Callable[[], None]] = set()
        self.main = MainScreen(self.feed.buffer, note)  # note: conntui lab's what to watch
        # pids of a live capture are this host's now: Details may ask psutil about them
        self.main.detail_pane.live = bool(getattr(engine, "live", False))
        self.gc_policy = GcPolicy(lead=True)  # collections between frames (see _tick)
        self.gc_policy.enabled = gc_freeze

    # -- lifecycle ---------------------------------------------------------------------

    def get_default_screen(self) -> MainScreen:
        return self.main

    def on_mount(self) -> None:
        if self.SWITCH_INTERVAL is not None and self._switch_was is None:
            self._switch_was = sys.getswitchinterval()
            sys.setswitchinterval(min(self._switch_was, self.SWITCH_INTERVAL))
        if not self.engine.running:
            self.engine.start()
        self.install_screen(HelpScreen(), name="help")  # composed once, on first use
        self._tick()
        self._refresh_sockets()
        self.set_interval(self.tick_interval, self._tick, name="drain")
        self.set_interval(self.socket_interval, self._refresh_sockets, name="sockets")
        self._terminal = terminal_fd() if not self.is_headless else None
        if self._terminal is not None:
            self.set_interval(self.TERMINAL_EVERY, self._check_terminal, name="terminal")

    def _check_terminal(self) -> None:
        """End the app (as ``q`` does: capture and tracer stopped) once its terminal is gone.
        A closed window or a dropped SSH connection does not always send conntui SIGHUP
        (only the session leader gets it from the kernel; a shell that ignores it, or
        does not pass it on, leaves conntui running): reads of the terminal then return
        nothing at once, and Textual's input thread spins on them."""
        if self._terminal is not None and not terminal_alive(self._terminal):
            self._terminal = None
            self.stop_engine()
            self.exit()

    def stop_engine(self) -> None:
        if not self._engine_stopped:
            self._engine_stopped = True
            self.engine.stop()
        self.gc_policy.stop()

    async def action_quit(self) -> None:
        self.stop_engine()
        self.exit()

    def on_unmount(self) -> None:
        self.stop_engine()  # whatever ended the app: capture stops, a -w file is finished
        if self._switch_was is not None:
            sys.setswitchinterval(self._switch_was)
            self._switch_was = None

    # -- the drain tick ----------------------------------------------------------------

    def _covered(self) -> bool:
        """A dialog or the help is over the main screen: it holds still meanwhile (every
        change behind a modal screen repaints the whole screen under its tint). Also True
        once the app has closed its screens (a timer may still fire while it exits)."""
        return self._screens_gone() or self.screen is not self.main

    def _screens_gone(self) -> bool:
        try:
            self.screen  # noqa: B018 - raises once the app has closed its screens
        except ScreenStackError:
            return True
        return False

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self._key_at = time.monotonic()
        await super().on_event(event)

    def _after_key(self, work: Callable[[], None]) -> bool:
        """True if a key was pressed less than ``KEY_FIRST`` seconds ago: ``work`` then
        runs when that time is up (a second time, it runs at once)."""
        wait = self.KEY_FIRST - (time.monotonic() - self._key_at)
        if wait <= 0 or work in self._deferred:
            return False
        self._deferred.add(work)

        def later() -> None:
            try:
                if not self._screens_gone():  # a key just before q: the app may be gone by now
                    work()
            finally:
                self._deferred.discard(work)

        self.set_timer(wait, later)
        return True

    def _tick(self) -> None:
        if self._after_key(self._tick):
            return
        self.gc_policy.tick()
        if self._covered():
            return
        now = self.clock()
        if not self.paused:
            drained = self.feed.drain(self.drain_limit, now)
            if drained.added or drained.evicted:
                self.main.segment_list.rows_changed(drained)
        if self.feed.backfill is not None:
            added, done = self.feed.flush()
            self.main.segment_list.rows_prepended(added, done=done)
            if done:
                self._set_empty_text()
        self._update_status(now)
        self._follow_detail()

    def _rate(self, now: float, segments: int) -> float:
        rates = self._rates
        rates.append((now, segments))
        while len(rates) > 2 and now - rates[0][0] > 2.0:
            rates.popleft()
        t0, n0 = rates[0]
        return (segments - n0) / (now - t0) if now > t0 else 0.0

    def _update_status(self, now: float) -> None:
        engine = self.engine
        counters = engine.session.counters
        error = engine.error or engine.writer_error
        if error and error != self._error_shown:
            self._error_shown = error
            self.notify(error, title="capture", severity="error", timeout=10, markup=False)
        source = getattr(engine, "source", None)
        tracer, tracer_why = self._tracer_state()
        self.main.status_bar.show(
            Status(
                iface=self.iface,
                capture_filter=self.capture_filter,
                display_filter=self.display_filter.text if self.display_filter else "",
                rate=self._rate(now, counters.segments),
                segments=counters.segments,
                shown=len(self.feed.buffer),
                filtering=self.feed.filling,
                drops=counters.kernel_drops,
                attributed_pct=counters.attributed_pct(),
                export=" · ".join(
                    x for x in (f"-w {self.export_path}" if self.export_path else "", self.export_state) if x
                ),
                paused=self.paused,
                error=error,
                source_ended=bool(
                    source is not None and not source.live and source.ended and not engine.running
                ),
                tracer=tracer,
                tracer_why=tracer_why,
            )
        )

    def _tracer_state(self) -> tuple[str, str]:
        """The kernel tracer's state for the status bar ("" when none was asked for), told
        once as a notification when it fails or dies."""
        engine = self.engine
        tracer = getattr(engine, "tracer", None)
        unavailable = str(getattr(engine, "tracer_unavailable", ""))
        if tracer is not None:
            state, why = tracer.state()
        elif unavailable:
            state, why = "failed", unavailable
        else:
            return "", ""
        if state in ("failed", "died") and (state, why) != self._tracer_told:
            self._tracer_told = (state, why)
            what = "stopped" if state == "died" else "could not start"
            self.notify(
                f"the kernel tracer {what}: {why}. Rows from now on are conntui's predictions only "
                "(no kernel verdicts); the capture goes on.",
                title="kernel tracer",
                severity="warning",
                timeout=10,
                markup=False,
            )
        return state, why

    def _socket_entries(self) -> tuple[Sequence[SocketEntry], int, dict[int, str]]:
        """The sockets of every namespace the table source reads, conntui's own namespace's
        inode, and what else names each other namespace (its ``ip netns`` name; when its table
        was read, if well before the newest: one no segment went to lately is not read again)."""
        tables = self.engine.tables
        if not isinstance(tables, ManyNamespaces):
            return tables.current().entries, 0, {}
        spaces = tables.namespace_tables()
        newest = max(t.table.taken_at for t in spaces)
        entries: list[SocketEntry] = []
        notes: dict[int, str] = {}
        for space in spaces:
            entries.extend(space.table.entries)
            bits = [f"({space.name})"] if space.name else []
            if newest - space.table.taken_at > STALE_NAMESPACE:
                read = time.strftime("%H:%M:%S", time.localtime(space.table.taken_at))
                bits.append(f"sockets as read at {read}")
            if bits:
                notes[space.inode] = " ".join(bits)
        return entries, tables.primary_inode, notes

    def _refresh_sockets(self) -> None:
        if self.paused or self._covered() or self._after_key(self._refresh_sockets):
            return
        primary, notes = 0, dict[int, str]()
        try:
            entries, primary, notes = self._socket_entries()
        except Exception as exc:  # a table source must never take the UI down
            entries = ()
            self.engine.error = self.engine.error or f"socket table unavailable: {exc}"
        if not entries:  # a saved session (-r): the sockets its attributions name
            entries = tuple(self.feed.activity.seen.values())
        self.main.socket_tree.show(
            entries,
            self.display_filter,
            self.feed.activity,
            self.clock(),
            primary_netns=primary,
            netns_notes=notes,
        )
        # late matches (Session.reattribute) change rows in place: show them
        self.main.segment_list.refresh_if_reattributed()
        self.main.detail_pane.refresh_if_reattributed()

    # -- selection and details ---------------------------------------------------------

    def on_segment_list_selected(self, message: SegmentList.Selected) -> None:
        """A person's selection shows at once. While the list follows a busy stream, the
        tick brings the detail pane along (``_follow_detail``)."""
        if message.user or self.main.detail_pane.record is None:
            self._show_detail()

    def _follow_detail(self) -> None:
        """The detail pane follows the selected row at most every ``DETAIL_EVERY``
        seconds, redrawn in the tick's own frame (not in a frame of its own)."""
        rec = self.main.segment_list.selected_record
        shown = self.main.detail_pane.record
        if rec is None or shown is None or rec.seq == shown.seq:
            return
        if time.monotonic() - self._last_detail >= self.DETAIL_EVERY:
            self._show_detail()

    def _show_detail(self) -> None:
        self._last_detail = time.monotonic()
        self.main.detail_pane.show(self.main.segment_list.selected_record)

    # -- actions -----------------------------------------------------------------------

    def action_filter(self) -> None:
        self.main.filter_input.open(self.display_filter.text if self.display_filter else "")

    def action_clear_filter(self) -> None:
        self.main.filter_input.close()
        if self.display_filter is not None:
            self.apply_filter("")
        if self.main.focused is None or isinstance(self.main.focused, FilterInput):
            self.main.segment_list.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if isinstance(event.input, FilterInput):
            event.stop()
            if self.apply_filter(event.value):
                event.input.close()
                self.main.segment_list.focus()

    def on_filter_input_cancelled(self, message: FilterInput.Cancelled) -> None:
        self.action_clear_filter()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self._update_status(self.clock())
        if not self.paused:
            # catch up after the frame that shows "resumed" (a drain is bounded, but a
            # frame sooner is a frame sooner)
            self.set_timer(self.AFTER_FRAME, self._catch_up)

    def _catch_up(self) -> None:
        if not self.paused:
            self._tick()
            self._refresh_sockets()

    def action_details(self) -> None:
        self.main.focus_pane("details")

    def action_switch_pane(self, step: int = 1) -> None:
        self.main.switch_pane(step)

    def action_follow(self) -> None:
        self.main.segment_list.action_last()
        self.main.focus_pane("segments")

    def action_ladder(self) -> None:
        """The selected segment's connection as a ladder (``screens/ladder.py``)."""
        rec = self.main.segment_list.selected_record
        if rec is None:
            self.notify("select a segment first", severity="warning", markup=False)
            return
        self.push_screen(LadderScreen(ladder_for(self.engine.session.window(), rec)))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen("help")

    # -- filter ------------------------------------------------------------------------

    def apply_filter(self, text: str) -> bool:
        """Parse and apply a display filter; a bad one is a notification. True if applied.

        What the screen shows changes at once: the newest rows that match (enough to fill
        the list), or every row for no filter. Older rows follow in slices (``_fill``,
        shown at each tick) while the status bar says how far the filter has got.
        """
        try:
            flt: DisplayFilter | None = parse_display_filter(text) if text.strip() else None
        except FilterError as exc:
            self.notify(str(exc), title="filter", severity="error", markup=False)
            return False
        if flt is not None and not flt:
            flt = None
        self.display_filter = flt
        seg_list = self.main.segment_list
        rec = seg_list.selected_record
        want = max(100, 2 * seg_list.size.height)
        # freeing a 150,000-row buffer touches every row: not before the frame that matters
        self._retired.append((self.feed.buffer, self.feed.backfill))
        self.feed.apply_filter(flt, want=want, budget=self.FILL_FIRST, chunk=self.FILL_CHUNK)
        filling = self.feed.backfill is not None
        self._set_empty_text()
        seg_list.set_buffer(self.feed.buffer, None if rec is None else rec.seq, partial=filling)
        if filling and self._fill_timer is None:
            self._fill_timer = self.set_interval(self.FILL_EVERY, self._fill, name="filter")
        self._update_status(self.clock())
        # the socket view follows a frame later: the list is what the key is about
        self.set_timer(self.AFTER_FRAME, self._after_filter)
        return True

    def _after_filter(self) -> None:
        self._retired.clear()
        self._refresh_sockets()

    def _set_empty_text(self) -> None:
        if self.feed.backfill is not None and not len(self.feed.buffer):
            text = "filtering…"  # nothing matched yet among the rows gone through so far
        elif self.display_filter:
            text = "no segment matches the filter"
        else:
            text = "waiting for segments…"
        self.main.segment_list.empty_text = text

    def _fill(self) -> None:
        """One slice of a new filter's pass over the older rows (see ``Feed.fill``)."""
        if self._after_key(self._fill):
            return
        self.feed.fill(self.FILL_SLICE, self.FILL_CHUNK)
        fill = self.feed.backfill
        if (fill is None or not fill.pos) and self._fill_timer is not None:
            self._fill_timer.stop()  # gone through: the next tick shows the last of it
            self._fill_timer = None

    # -- export ------------------------------------------------------------------------

    def default_export_name(self) -> str:
        return time.strftime("conntui-%Y%m%d-%H%M%S.pcapng", time.localtime(self.clock()))

    def action_export(self) -> None:
        if self._exporting:
            self.notify("an export is already running", severity="warning", markup=False)
            return
        screen = ExportScreen(
            self.default_export_name(),
            total=len(self.engine.session),
            shown=len(self.feed.buffer),
            filter_text=self.display_filter.text if self.display_filter else "",
        )
        self.push_screen(screen, self._export_chosen)

    def _export_chosen(self, request: ExportRequest | None) -> None:
        if request is None:
            return
        path = os.path.abspath(os.path.expanduser(request.path))
        keep = record_filter(self.display_filter) if request.only_filtered else None
        if os.path.lexists(path):
            # never replace a file without asking (and never through a link: open_writer)
            def answered(replace: bool | None) -> None:
                if replace:
                    self._start_export(path, keep, overwrite=True)

            self.push_screen(ConfirmScreen(f"{safe(path)} exists. Replace it?"), answered)
            return
        self._start_export(path, keep, overwrite=False)

    def _start_export(self, path: str, keep: Callable[[Record], bool] | None, *, overwrite: bool) -> None:
        self._exporting = True
        self.export_state = f"exporting to {path}…"
        self._export(path, keep, overwrite)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _export(self, path: str, keep: Callable[[Record], bool] | None, overwrite: bool = False) -> None:
        try:
            from ..capfile.errors import ExportError
            from ..capfile.export import export_session
        except ImportError as exc:
            self.post_message(ExportFailed(path, f"export is not available: {exc}"))
            return
        try:
            written = export_session(self.engine.session, path, keep, overwrite=overwrite)
        except ExportError as exc:
            self.post_message(ExportFailed(path, str(exc)))
        except OSError as exc:
            self.post_message(ExportFailed(path, f"cannot write {path}: {exc.strerror or exc}"))
        except Exception as exc:  # never take the UI down for an export
            self.post_message(ExportFailed(path, f"export failed: {type(exc).__name__}: {exc}"))
        else:
            self.post_message(ExportDone(path, written))

    def on_export_done(self, message: ExportDone) -> None:
        self._exporting = False
        noun = "packet" if message.packets == 1 else "packets"
        self.export_state = f"exported {message.packets} → {message.path}"
        self.notify(f"exported {message.packets} {noun} to {message.path}", title="export", markup=False)

    def on_export_failed(self, message: ExportFailed) -> None:
        self._exporting = False
        self.export_state = "export failed"
        self.notify(message.error, title="export failed", severity="error", timeout=10, markup=False)
