"""Keep Python's full garbage collections from stalling the capture and the screen.

The session holds a window of up to 200,000 records (several objects each). A full (gen2)
collection scans all of them: at 20,000 segments/s one ran every second or so and held the
GIL for 150-550 ms, long enough to overflow the capture socket's buffer and to freeze the UI
(bench/hotpath.py --gc: 43 % of conntui's CPU at 40k pkt/s went to the collector). Records
form no reference cycles (refcounting frees them), so they need not be scanned at all:
``gc.freeze()`` once a second moves everything alive into the permanent generation, which
collections skip. Cyclic garbage frozen by mistake is released by an ``unfreeze`` every
minute (one full scan then). Both the capture loop and the TUI tick it.
"""

from __future__ import annotations

import gc
import time

FREEZE_EVERY = 1.0
UNFREEZE_EVERY = 60.0


class GcPolicy:
    def __init__(self) -> None:
        now = time.monotonic()
        self._frozen_at = now
        self._unfrozen_at = now
        self.enabled = True

    def tick(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._unfrozen_at >= UNFREEZE_EVERY:
            self._unfrozen_at = now
            gc.unfreeze()
        elif now - self._frozen_at >= FREEZE_EVERY:
            self._frozen_at = now
            gc.freeze()

    def stop(self) -> None:
        if self.enabled:
            self.enabled = False
            gc.unfreeze()
