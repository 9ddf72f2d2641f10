"""The capture thread's common case in C (``_fastpath.c``), and when the engine uses it.

At a few hundred thousand packets a second, every Python step per packet counts: reading
the ring, decoding, the flow-cache hit, the row, the pending queue and the pcapng block
cost ~10 µs together in Python, and one core then tops out near 100k packets/s. The C
module does exactly those steps for the common case (a data segment or ACK of a flow whose
attribution is cached and final) and builds the same objects and file bytes; everything
else (SYN/FIN/RST, new flows, anything the verifier or the FIN book watches, unusual
headers) goes through ``Engine.process`` as before. ``tests/unit/test_fastpath.py`` runs
both paths over the same ring and compares every row and byte.

The module is optional: built when a C compiler and the Python headers are present
(setup.py), and ``CONNTUI_PURE=1`` turns it off (benchmarks compare both).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine

try:
    from . import _fastpath  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: the pure-Python path
    _fastpath = None


def status() -> str:
    """One line for ``--version``: which capture path runs."""
    if _fastpath is None:
        return "capture path: pure Python; the C accelerator was not built (needs gcc and python3-dev)"
    if disabled():
        return "capture path: pure Python (CONNTUI_PURE is set)"
    return "capture path: C accelerator"


def built() -> bool:
    """Whether the C module was built at install time."""
    return _fastpath is not None


def disabled() -> bool:
    return os.environ.get("CONNTUI_PURE", "") not in ("", "0")


def available() -> bool:
    return _fastpath is not None and not disabled()


def blocks_builder() -> Any | None:
    """``blocks(records, start, writer) → (bytes, written, stop)``: pcapng blocks for rows,
    built in C (None: write them one by one in Python)."""
    return _fastpath.blocks if available() else None


def make(engine: Engine, names: dict[int, str]) -> Any | None:
    """The accelerator wired to ``engine``'s tables, or None when it cannot serve it."""
    if not available():
        return None
    from . import decode
    from .capture import LINKTYPE_RAW, _ifname
    from .model import Frame, Record, Segment

    return _fastpath.FastPath(
        frame_type=Frame,
        segment_type=Segment,
        record_type=Record,
        addr_cache=decode._addr_text,
        addr_fn=decode._addr,
        u16=decode._U16_VALUES,
        flags_text=decode._FLAGS_TEXT,
        tcp=decode._TCP,
        udp=decode._UDP,
        answers=engine.flow_cache.fast,
        fins=engine.history._fins,
        old_conns=engine.history._old_conns,
        challenge=engine.verifier._challenge,
        reuseport=engine.verifier._reuseport,
        names=names,
        ifname_fn=_ifname,
        slow=engine._fast_slow,
        flush=engine._fast_flush,
        sync=engine._fast_sync,
        session=engine.session,
        linktype=LINKTYPE_RAW,
    )
