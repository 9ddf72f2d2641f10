"""Keep Python's garbage collector from stalling the capture and the screen.

The session holds a window of up to 150,000 records (up to three objects the collector
tracks each). A full (gen2) collection scans all of them: at 20,000 segments/s one ran every
second or so and held the GIL for 150-550 ms, long enough to overflow the capture socket's buffer
and to freeze the UI (bench/hotpath.py --gc: 43 % of conntui's CPU at 40k pkt/s went to the
collector). Records form no reference cycles (reference counting frees them), so they need
not be scanned again and again.

While a policy is active, the collector's own schedule is off. Every ``YOUNG_EVERY``
seconds ``tick`` collects what was allocated since the last tick (``gc.collect(1)``) and
freezes the survivors (``gc.freeze()``): each record is scanned once, young, in a pause of a
few milliseconds. The automatic schedule scanned it up to three times (gen0, gen1, then
gen2 with everything not frozen yet, 20-70 ms in the middle of a frame; with a freeze only
once a second, bench/ui.py at 20,000 segments/s: UI key → frame p95 1.6x this policy's).

What a freeze catches alive and is later dropped in a cycle stays until a full collection
(``gc.unfreeze()``, ``gc.collect()``). Textual's lines refer to themselves (``Strip`` caches
hold the strip), so every line on screen that a later frame replaces is such garbage: the
UI keeps that low (``tui/widgets/scrolling.py``), to about 1,200 objects (0.2 MB) a second
at 20,000 segments/s. A full collection runs when the process has grown by
``FULL_GROWTH`` and ``FULL_SLACK`` bytes since the last one (much as the collector waits for
gen2 to grow by a quarter), at most every ``FULL_MIN_EVERY`` seconds, and at least every
``FULL_MAX_EVERY`` seconds; the growth of the first ``FULL_MIN_EVERY`` seconds, the window
filling up, is not counted. Each takes 0.2-1.2 s with a full window (the old policy: one a
minute). The size is the resident size: ``gc.get_freeze_count()`` walks every frozen object
(8-30 ms for a full window).

The capture loop and the TUI both tick it. A ``lead`` policy (the TUI's) does the
collections while it ticks, between frames and never right after a key press (the TUI's
tick waits then); the others (the capture loop's) step in only when the lead has not
collected for ``LEAD_GRACE`` seconds, and do it all without a lead (headless). The
collector's schedule is back, and everything unfrozen, when the last policy stops.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Iterator

YOUNG_EVERY = 0.1
FULL_GROWTH = 0.25
FULL_SLACK = 64 << 20  # bytes: a small process is not scanned in full for a few more
FULL_MIN_EVERY = 60.0
FULL_MAX_EVERY = 600.0
LEAD_GRACE = 0.5

_lock = threading.Lock()  # one collection at a time, whichever thread ticks
_state_lock = threading.Lock()  # activation and stop
_active = 0
_leads = 0  # active lead policies
_gc_was_enabled = True
_young_at = 0.0
_full_at = 0.0
_baseline = -1  # resident bytes after the last full collection (-1: still warming up)
_paused = 0  # paused() blocks running with the collector off (no policy active when they began)


def resident() -> int:
    """This process's resident size in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _collect(now: float) -> None:
    global _young_at, _full_at, _baseline
    _young_at = now
    since_full = now - _full_at
    if _baseline < 0 and since_full >= FULL_MIN_EVERY:
        _baseline = resident()  # warmed up: growth counts from here
        _full_at = now
        since_full = 0.0
    if since_full >= FULL_MAX_EVERY or (
        since_full >= FULL_MIN_EVERY and resident() > _baseline * (1 + FULL_GROWTH) + FULL_SLACK
    ):
        _full_at = now
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _baseline = resident()
    else:
        gc.collect(1)
        gc.freeze()


class GcPolicy:
    """See the module docstring. ``enabled`` False: ``tick`` and ``stop`` do nothing."""

    def __init__(self, *, lead: bool = False) -> None:
        self.enabled = True
        self.lead = lead
        self._active = False

    def _activate(self) -> None:
        global _active, _leads, _gc_was_enabled, _young_at, _full_at, _baseline
        with _state_lock:
            if _active == 0:
                # (off for a paused() block: it was on, and is to be again at the end)
                _gc_was_enabled = gc.isenabled() or _paused > 0
                gc.disable()
                now = time.monotonic()
                _young_at = _full_at = now
                _baseline = -1
            _active += 1
            _leads += self.lead
            self._active = True

    def tick(self) -> None:
        if not self.enabled:
            return
        if not self._active:
            self._activate()
        every = YOUNG_EVERY if self.lead or not _leads else LEAD_GRACE
        now = time.monotonic()
        if now - _young_at < every or not _lock.acquire(blocking=False):
            return
        try:
            if now - _young_at >= every and self._active:
                _collect(now)
        finally:
            _lock.release()

    def stop(self) -> None:
        global _active, _leads
        if not self.enabled:
            return
        self.enabled = False
        if not self._active:
            return
        with _state_lock, _lock:
            self._active = False
            _active -= 1
            _leads -= self.lead
            if _active == 0:
                gc.unfreeze()
                if _gc_was_enabled:
                    gc.enable()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector's automatic schedule off for a burst of allocations that form no
    reference cycles (a cold socket table: one entry per socket, 20,000 here: a third of its
    time went to collections in a fresh process, issue 18), unless a policy runs it already.
    A policy that starts meanwhile takes the collector over as it was before the block."""
    global _paused
    with _state_lock:
        mine = _active == 0 and gc.isenabled()
        if mine:
            _paused += 1
            gc.disable()
    try:
        yield
    finally:
        if mine:
            with _state_lock:
                _paused -= 1
                if _active == 0 and _paused == 0:
                    gc.enable()
