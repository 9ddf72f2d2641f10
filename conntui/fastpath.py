"""The capture thread's common case in C (``_fastpath.c``), and when the engine uses it.

At a few hundred thousand packets a second, every Python step per packet counts (the
figures are in bench/README.md). The C module does exactly the capture thread's steps
(reading the ring, decoding, the flow-cache hit, the row, the pending queue and the pcapng
block) for the common case (a data segment or ACK of a flow whose attribution is cached
and final) and builds the same objects and file bytes; everything else (SYN/FIN/RST, new
flows, anything the verifier or the FIN book watches, unusual headers) goes through
``Engine.process`` as before. ``tests/unit/test_fastpath.py`` runs
both paths over the same ring and compares every row and byte.

The contract between the two paths is ``FastShared``: the objects both read and write in
place (the flow cache's final answers, the flow history's and the verifier's books, the
session) and the three calls back into the engine, as CPython's ``json`` accelerator takes
the same public arguments as its Python encoder. The engine makes it (``fast_shared``);
nothing here reads another module's private attributes, and this module imports neither
the engine nor the capture (their imports stay one way: engine → capture → capfile →
fastpath).

The module is optional: built when a C compiler and the Python headers are present
(setup.py), and ``CONNTUI_PURE=1`` turns it off (benchmarks compare both).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from .model import Frame, Record, Segment

try:
    from . import _fastpath  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: the pure-Python path
    _fastpath = None


class FastShared(NamedTuple):
    """What the C loop shares with ``Engine.process``: every mapping is the very object
    the Python path uses, read (and, for the session, appended to) in place."""

    answers: Mapping[Any, Any]  # FlowCache.fast: a flow's final attribution
    fins: Mapping[Any, Any]  # FlowHistory.fins: a flow closing goes the Python way
    old_conns: Mapping[Any, Any]  # FlowHistory.old_conns: likewise
    challenge: Mapping[Any, Any]  # Verifier.watched_challenge: likewise
    reuseport: Mapping[Any, Any]  # Verifier.watched_reuseport: likewise
    session: Any  # the Session: ``len(session)`` is the next row's number
    slow: Callable[[Frame], bool]  # a frame for Engine.process; True when it stored a row
    # rows made, with their pending-queue items, counts by match, frames read
    flush: Callable[[list[Record], list[tuple[float, Frame, Record | None]], dict[str, int], int], None]
    sync: Callable[[], None]  # make the flow cache follow the current socket table
    ifname: Callable[[int], str]  # an interface's name by index (capture.ifname)
    linktype: int  # the frames' link type (capture.LINKTYPE_RAW)


class FastOwner(Protocol):
    """What ``make`` is given: the engine, or anything that shares its state the same way."""

    def fast_shared(self) -> FastShared: ...


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
    built in C from ``writer.block_state()`` (None: write them one by one in Python)."""
    return _fastpath.blocks if available() else None


def make(owner: FastOwner, names: dict[int, str]) -> Any | None:
    """The accelerator wired to ``owner``'s shared state (``names``: the ring's interface
    names by index, filled as frames come), or None when it cannot serve."""
    if not available():
        return None
    from . import decode

    shared = owner.fast_shared()
    return _fastpath.FastPath(
        frame_type=Frame,
        segment_type=Segment,
        record_type=Record,
        **decode.shared_tables(),
        answers=shared.answers,
        fins=shared.fins,
        old_conns=shared.old_conns,
        challenge=shared.challenge,
        reuseport=shared.reuseport,
        names=names,
        ifname_fn=shared.ifname,
        slow=shared.slow,
        flush=shared.flush,
        sync=shared.sync,
        session=shared.session,
        linktype=shared.linktype,
    )
