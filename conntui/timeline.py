"""The kernel's own record, kept by time: TCP state changes, drops and resets.

A socket table read now says what exists now; a segment captured a moment ago was judged by
the kernel against the sockets of *that* moment. The tracer (``tracer.py``) reports every TCP
state change (``sock:inet_sock_set_state``), every dropped packet with the kernel's reason
(``skb:kfree_skb``), every RST the kernel sends (``tcp:tcp_send_reset``) or receives
(``tcp:tcp_receive_reset``) and every SYN-ACK it retransmits; this module keeps them,
bounded, and answers two questions for a captured segment:

* ``state_at(tuple, ts)``: the state the connection socket on this 4-tuple was in at ``ts``
  (``None`` when the record says nothing about the tuple, ``GONE`` when it says there was
  no socket then);
* ``verdict_for(segment)``: what the kernel published about this very segment (dropped,
  and why; or answered by its own RST).

Times are epoch seconds (the tracer converts CLOCK_MONOTONIC once per event). A state change
caused by a segment happens after its capture (the packet tap runs before the protocol
handler), so the state *at* a segment's timestamp is the one the kernel judged it by.

Pure and thread-safe (one lock); stdlib only.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from .model import TCP_STATES, Attribution, unmap

TupleKey = tuple[str, int, str, int]  # (local addr, local port, remote addr, remote port), unmapped

LOSS_SHADOW = 1.0  # seconds after a reported loss before the record proves anything again
TIME_WAIT_LEN = 60.0  # TCP_TIMEWAIT_LEN: how long the kernel keeps a TIME_WAIT entry
_TO_TIME_WAIT = frozenset((4, 5, 11))  # FIN_WAIT1, FIN_WAIT2, CLOSING → CLOSE: the socket left a TIME_WAIT
_CLOSE = 7
_TIME_WAIT = 6
_SYN_RECV = 3
_LISTEN = 10
# A drop or RST is joined to the captured segment it concerns when it happened this close after
# the capture (the kernel handles a segment microseconds after the tap; a loaded host or a
# segment waiting in a socket backlog may take longer).
JOIN_AFTER = 0.5
# A RST the kernel sends to abort a socket may reach the tap before its tracepoint fires; and
# the clocks are converted once per event (microseconds of error).
JOIN_BEFORE = 0.005
# A drop's skb timestamp and its captured segment's are one value, converted to float twice.
STAMP_TOL = 2e-6
# Counted drops are looked for among rows still waiting to be handed on for this long after
# their window (rows wait ``settle`` plus at most the engine's HOLD_MAX).
BATCH_RECENT = 5.0


class StateChange(NamedTuple):
    t: float  # epoch seconds
    sk: int  # the struct sock's address (reused after free: joined with the tuple)
    old: int
    new: int
    reset: bool = False  # the change followed a RST this socket received
    orphan: bool = False  # no process held the socket any more (close()d) at the change
    # which call made a FIN_WAIT1 / LAST_ACK entry: "shutdown" (the process keeps the
    # socket), "close" (it is orphaned right after), "" (the record does not say)
    how: str = ""


@dataclass(frozen=True, slots=True)
class KnownState:
    """What the kernel's record says about one 4-tuple at one moment."""

    state: str  # "ESTABLISHED", "SYN_SENT", ..., "TIME_WAIT"; "" = no socket on the tuple
    since: float  # when it entered that state (epoch seconds)
    sk: int = 0
    # the socket that held the tuple next (created after the moment asked about), if any:
    # a SYN's request sock becomes this child when the handshake completes
    next_state: str = ""
    next_since: float = 0.0
    # whether a process still held the socket then (None: the record cannot tell)
    held: bool | None = None

    @property
    def exists(self) -> bool:
        return bool(self.state)


GONE = KnownState("", 0.0)


class KernelEvent(NamedTuple):
    """A drop, a RST the kernel sent, or a SYN-ACK it retransmitted, about one segment.

    ``src``/``dst`` are the segment's own direction: for a drop, the dropped segment; for a
    sent RST, the segment that provoked it (the RST goes the other way); for a retransmitted
    SYN-ACK, the SYN-ACK itself."""

    kind: str  # "drop" | "reset" | "abort" | "synack"
    t: float
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    seq: int = -1  # the dropped TCP segment's sequence number (-1: not known / UDP)
    reason: str = ""
    state: str = ""  # the state of the socket the kernel had found ("" for none)
    # a drop: the skb's receive timestamp (epoch seconds; 0: not set), the very timestamp a
    # packet socket reports for it, so it names its captured segment exactly
    stamp: float = 0.0


@dataclass(slots=True)
class DropBatch:
    """Drops of one flow the kernel counted instead of reporting one by one (a flood: past
    the tracer's per-flow budget a tick): ``count`` segments of ``src → dst`` dropped for
    ``reason`` between ``t0`` and ``t1``. Which captured segments they were is not said:
    ``captured`` (set by the engine on first use) is how many rows of the flow conntui has in
    that window; only when ``count`` covers them all is each row known to be dropped."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    reason: str
    state: str
    count: int
    t0: float
    t1: float
    # the receive timestamps of the window's first and last counted drops (0: not set):
    # a captured segment is in the window exactly when its timestamp is between them
    s0: float = 0.0
    s1: float = 0.0
    captured: int | None = None  # set on first use; -1: the capture lost packets then
    # the flow's window before this one, when this one starts at its last drop; and whether
    # this window's count was found to cover every segment captured in it (set on first use)
    prev: DropBatch | None = field(default=None, repr=False, compare=False)
    next: DropBatch | None = field(default=None, repr=False, compare=False)
    accounted: bool | None = None
    # the last window read when this one was last tried
    tried: DropBatch | None = field(default=None, repr=False, compare=False)
    # the last row judged unknown in this window: its attribution as asked, the ``captured``
    # it was judged with, and the answer (a flood's rows share their flow's attribution)
    unknown: tuple[Attribution, int | None, Attribution] | None = field(
        default=None, repr=False, compare=False
    )

    def covers(self, ts: float) -> bool:
        if self.s1:
            return self.s0 - STAMP_TOL <= ts <= self.s1 + STAMP_TOL
        return self.t0 - JOIN_BEFORE <= ts <= self.t1 + JOIN_BEFORE


def _key(laddr: str, lport: int, raddr: str, rport: int) -> TupleKey:
    return (unmap(laddr), lport, unmap(raddr), rport)


FlowKey = tuple[str, str, int, str, int]  # (proto, src, sport, dst, dport), addresses unmapped
FLOW_EVENTS_MAX = 8192  # events kept per flow (a flood's drops wait for their rows)
_BUCKETS = 1e6 / 4  # stamped drops are indexed by their stamp in 4 us buckets (> 2 * STAMP_TOL)


class _FlowEvents:
    """One flow's kernel events not yet joined to a segment, sorted by time, with the drops
    that carry a receive timestamp apart and indexed by it (in buckets of 4 microseconds): a flood's
    rows find their own drop, or learn there is none, without a scan (a scan of thousands of
    waiting drops per row once cost 80 us a packet). Joined events stay until pruned, marked
    taken. Not thread-safe: the timeline's lock guards it."""

    __slots__ = ("by_stamp", "open_drops", "plain", "plain_t", "stamped", "stamped_t", "stamps", "taken")

    def __init__(self) -> None:
        self.plain: list[KernelEvent] = []  # every event but the stamped drops, by time
        self.plain_t: list[float] = []
        self.stamped: list[KernelEvent] = []  # drops with a receive timestamp, by time
        self.stamped_t: list[float] = []
        self.by_stamp: dict[int, list[KernelEvent]] = {}  # stamped drops by their stamp (us)
        self.stamps: list[float] = []  # every reported drop's stamp, sorted, kept after its join
        self.taken: set[int] = set()  # id() of the events joined to a segment
        self.open_drops = 0  # drops not yet joined

    def add(self, ev: KernelEvent) -> None:
        stamped = ev.kind == "drop" and bool(ev.stamp)
        evs, times = (self.stamped, self.stamped_t) if stamped else (self.plain, self.plain_t)
        i = bisect_right(times, ev.t)
        evs.insert(i, ev)
        times.insert(i, ev.t)
        if ev.kind == "drop":
            self.open_drops += 1
        if stamped:
            self.by_stamp.setdefault(int(ev.stamp * _BUCKETS), []).append(ev)
            insort(self.stamps, ev.stamp)
            if len(self.stamps) > FLOW_EVENTS_MAX + 1024:
                del self.stamps[:1024]
        if len(evs) > FLOW_EVENTS_MAX + 1024:
            self._prune(evs, times, 1024)

    def _prune(self, evs: list[KernelEvent], times: list[float], n: int) -> None:
        for ev in evs[:n]:
            if id(ev) in self.taken:
                self.taken.discard(id(ev))
            elif ev.kind == "drop":
                self.open_drops -= 1
            if ev.kind == "drop" and ev.stamp:
                key = int(ev.stamp * _BUCKETS)
                same = [e for e in self.by_stamp.get(key, ()) if e is not ev]
                if same:
                    self.by_stamp[key] = same
                else:
                    self.by_stamp.pop(key, None)
        del evs[:n]
        del times[:n]

    def take(self, ev: KernelEvent) -> None:
        self.taken.add(id(ev))
        if ev.kind == "drop":
            self.open_drops -= 1

    def own_drop(self, ts: float) -> KernelEvent | None:
        """The drop not yet joined whose receive timestamp is ``ts`` (within STAMP_TOL)."""
        if not self.by_stamp:
            return None
        best: KernelEvent | None = None
        lo, hi = int((ts - STAMP_TOL) * _BUCKETS), int((ts + STAMP_TOL) * _BUCKETS)
        for key in (lo,) if lo == hi else (lo, hi):
            for ev in self.by_stamp.get(key, ()):
                off = abs(ev.stamp - ts)
                closer = best is None or off < abs(best.stamp - ts)
                if closer and off <= STAMP_TOL and id(ev) not in self.taken:
                    best = ev
        return best

    def window(self, lo: float, hi: float, stamped: bool) -> list[KernelEvent]:
        """The events not yet joined with a time in [lo, hi], by time (``stamped``: the stamped
        drops; else the others)."""
        evs, times = (self.stamped, self.stamped_t) if stamped else (self.plain, self.plain_t)
        i, j = bisect_left(times, lo), bisect_right(times, hi)
        taken = self.taken
        return [ev for ev in evs[i:j] if id(ev) not in taken]

    def stamps_between(self, s0: float, s1: float) -> int:
        return bisect_right(self.stamps, s1) - bisect_left(self.stamps, s0)


class Timeline:
    """The kernel's TCP state changes by 4-tuple, and its drops and resets by flow.

    ``ready_at`` is when the tracer started reporting (epoch seconds; ``inf`` until then):
    nothing is known about moments before it. ``lost`` counts events the tracer said it lost;
    while any are lost the record can no longer prove an absence.
    """

    def __init__(self, *, ttl: float = 120.0, max_keys: int = 200_000, per_key: int = 8) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self.per_key = per_key
        self.ready_at = float("inf")
        self.lost = 0
        self.lost_until = float("-inf")  # when the last loss was reported (epoch seconds)
        self.ended_at = float("inf")  # when the tracer stopped (died): nothing is known after
        self._lock = threading.Lock()
        self._states: OrderedDict[TupleKey, tuple[StateChange, ...]] = OrderedDict()
        self._resets_in: dict[int, float] = {}  # sk → when it last received a RST
        self._unbound: dict[int, StateChange] = {}  # sk → its SYN_SENT birth, before it had a port
        self._events: OrderedDict[FlowKey, _FlowEvents] = OrderedDict()
        self._batches: OrderedDict[FlowKey, deque[DropBatch]] = OrderedDict()
        self.counts: dict[str, int] = {"states": 0, "drop": 0, "reset": 0, "synack": 0}

    # -- feeding (the tracer's reader thread) ------------------------------------------------

    def on_state(
        self,
        t: float,
        sk: int,
        old: int,
        new: int,
        laddr: str,
        lport: int,
        raddr: str,
        rport: int,
        *,
        orphan: bool = False,
        how: str = "",
    ) -> None:
        if rport == 0:  # a listener: not a 4-tuple
            return
        with self._lock:
            if lport == 0:
                # connect(): CLOSE → SYN_SENT fires before the kernel picks the local port;
                # the socket's next change names it, and this birth is filed there.
                self._unbound[sk] = StateChange(t, sk, old, new)
                if len(self._unbound) > 4096:
                    self._unbound.pop(next(iter(self._unbound)))
                return
            key = _key(laddr, lport, raddr, rport)
            reset = new == _CLOSE and abs(self._resets_in.pop(sk, -1e18) - t) < 1.0
            old_list = self._states.pop(key, ())
            birth = self._unbound.pop(sk, None)
            if birth is not None and t - birth.t < 300.0:
                old_list = (*old_list, birth)
            change = StateChange(t, sk, old, new, reset, orphan, how)
            self._states[key] = (*old_list, change)[-self.per_key :]
            self.counts["states"] += 1
            self._expire(t)

    def on_reset_received(self, t: float, sk: int) -> None:
        with self._lock:
            self._resets_in[sk] = t
            if len(self._resets_in) > 4096:
                self._resets_in.clear()

    def on_event(self, ev: KernelEvent) -> None:
        fkey = (ev.proto, unmap(ev.src), ev.sport, unmap(ev.dst), ev.dport)
        with self._lock:
            fe = self._events.pop(fkey, None)
            if fe is None:
                fe = _FlowEvents()
            fe.add(ev)
            self._events[fkey] = fe
            self.counts[ev.kind] = self.counts.get(ev.kind, 0) + 1
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)

    def on_drop_batch(self, batch: DropBatch) -> None:
        fkey = (batch.proto, unmap(batch.src), batch.sport, unmap(batch.dst), batch.dport)
        with self._lock:
            q = self._batches.pop(fkey, None)
            if q is None:
                q = deque(maxlen=256)  # a tick's worth each (0.1 s): longer than any row waits
            if q and batch.s0 and q[-1].s1 == batch.s0:
                batch.prev, q[-1].next = q[-1], batch
            q.append(batch)
            self._batches[fkey] = q
            self.counts["drop"] = self.counts.get("drop", 0) + batch.count
            while len(self._batches) > self.max_keys:
                self._batches.popitem(last=False)

    def drops_between(
        self, proto: str, src: str, sport: int, dst: str, dport: int, s0: float, s1: float
    ) -> int:
        """How many drops of this flow reported one by one had a receive timestamp in [s0, s1]."""
        with self._lock:
            fe = self._events.get((proto, unmap(src), sport, unmap(dst), dport))
            return fe.stamps_between(s0, s1) if fe is not None else 0

    def batch_for(
        self, proto: str, src: str, sport: int, dst: str, dport: int, ts: float
    ) -> DropBatch | None:
        """The kernel's count of this flow's drops whose window holds ``ts``, if any."""
        with self._lock:
            q = self._batches.get((proto, unmap(src), sport, unmap(dst), dport))
            if not q:
                return None
            # rows ask about recent windows: from the newest back, the earliest that holds
            # ``ts`` (adjacent windows share a boundary), stopping a second before ``ts``
            found = None
            for b in reversed(q):
                if b.covers(ts):
                    found = b
                elif found is not None or (b.s1 or b.t1) < ts - 1.0:
                    break
            return found

    def _expire(self, now: float) -> None:
        states = self._states
        horizon = now - self.ttl
        while states:
            key, changes = next(iter(states.items()))
            if len(states) <= self.max_keys and changes[-1].t >= horizon:
                break
            del states[key]

    # -- asking -------------------------------------------------------------------------------

    def on_lost(self, n: int, now: float) -> None:
        """The tracer lost ``n`` events (its buffers overflowed) by ``now``: moments up to then
        (since the last loss, or the start) can no longer prove an absence or a state."""
        self.lost += n
        self.lost_until = now

    def covers(self, t: float) -> bool:
        """Whether the record was being kept, whole, at time ``t``. After a loss, moments
        from ``LOSS_SHADOW`` seconds after it are covered again: a connection whose events
        were lost is then older than the loss and ``state_at`` says what its later changes show."""
        return self.ready_at <= t <= self.ended_at and not (self.lost and t <= self.lost_until + LOSS_SHADOW)

    def state_at(
        self, laddr: str, lport: int, raddr: str, rport: int, t: float, *, until: float | None = None
    ) -> KnownState | None:
        """The state of the connection socket on this 4-tuple (seen from the local end
        ``laddr:lport``) at time ``t``; ``GONE`` when the record shows none then; ``None``
        when the record cannot say (not traced then, or the tuple never changed state since
        the tracer started, e.g. a connection older than conntui).

        ``until``: use only the changes made by then, as a prediction made at that moment
        could (``predict.py``): no ``next_state``, no birth inferred from a later change, and
        ``held`` unknown where only a later change would tell."""
        if not self.covers(t):
            return None
        with self._lock:
            changes = self._states.get(_key(laddr, lport, raddr, rport))
        if changes and until is not None:
            changes = tuple(c for c in changes if c.t <= until)
        if not changes:
            return None
        before = [c for c in changes if c.t <= t]
        after = [c for c in changes if c.t > t]
        nxt = after[0] if after else None
        next_state = _state_name(nxt.new) if nxt is not None else ""
        next_since = nxt.t if nxt is not None else 0.0
        if not before:
            # The first change seen is later: if it is the socket's birth, there was no socket
            # on the tuple before it (a socket from before the tracer would have changed state
            # on its way out, after ``ready_at``, and be listed here).
            if nxt is not None and nxt.old in (_CLOSE, _LISTEN) and nxt.new in (2, _SYN_RECV):
                return KnownState("", 0.0, 0, next_state, next_since)
            return None
        last = before[-1]
        if last.new == _CLOSE:
            if last.old in _TO_TIME_WAIT and not last.reset and t - last.t < TIME_WAIT_LEN:
                return KnownState("TIME_WAIT", last.t, last.sk, next_state, next_since)
            return KnownState("", last.t, last.sk, next_state, next_since)
        held = _held(last, nxt, before)
        return KnownState(_state_name(last.new), last.t, last.sk, next_state, next_since, held)

    def child_of_listener(self, laddr: str, lport: int, raddr: str, rport: int, t: float) -> bool | None:
        """Whether the connection socket on this tuple at ``t`` was made by a listener (its
        birth was LISTEN → SYN_RECV: a server's child, which no process holds until
        accept()); None when its birth is not in the record (changes up to ``t`` only)."""
        with self._lock:
            changes = self._states.get(_key(laddr, lport, raddr, rport), ())
        for c in reversed([c for c in changes if c.t <= t]):
            if c.new == _CLOSE:
                return None  # the last socket on the tuple closed before its birth was seen
            if c.old in (_CLOSE, _LISTEN) and c.new in (2, _SYN_RECV):
                return c.old == _LISTEN
        return None

    def events_for(
        self,
        proto: str,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        ts: float,
        seq: int = -1,
        *,
        exact: bool = False,
    ) -> dict[str, KernelEvent]:
        """What the kernel published about the segment ``src → dst`` captured at ``ts``:
        ``"drop"`` (it dropped it), ``"reset"`` (it answered it with a RST), ``"abort"``
        (this is a RST the kernel sent to abort a socket). Each event serves one segment
        (the first asked about), so N drops name N segments; a TCP drop must carry the
        segment's sequence number. ``exact``: the segment was captured as it arrived, in the
        namespace that dropped it, so a drop stamped with a receive timestamp is its own only
        if the stamps are equal (a copy captured on another device carries another stamp, and
        is joined by time; a TCP drop also by its sequence number)."""
        fkey = (proto, unmap(src), sport, unmap(dst), dport)
        found: dict[str, KernelEvent] = {}
        with self._lock:
            fe = self._events.get(fkey)
            if fe is None:
                return found
            # a drop whose receive timestamp is this segment's is its own, whatever the order
            own = fe.own_drop(ts)
            if own is not None:
                found["drop"] = own
                fe.take(own)
            lo, hi = ts - JOIN_BEFORE, ts + JOIN_AFTER
            # the stamped drops of the window: another segment's when this segment's stamp is
            # exact (it names its own). A TCP drop with this sequence number is this segment's
            # all the same: a locally sent segment is stamped when IP delivers it,
            # microseconds after the capture's stamp (the kernel replaces its departure time
            # then; measured on loopback)
            stamped = [] if exact and seq < 0 else fe.window(lo, hi, True)
            if exact:
                stamped = [ev for ev in stamped if ev.seq == seq]
            candidates = fe.window(lo, hi, False)
            if stamped:
                candidates = sorted((*candidates, *stamped), key=lambda e: e.t)
            for ev in candidates:
                if ev.kind in found or ev.kind == "synack":
                    continue
                if ev.kind == "drop" and seq >= 0 and ev.seq >= 0 and ev.seq != seq:
                    continue
                found[ev.kind] = ev
                fe.take(ev)
        return found

    def drop_flows(self) -> set[tuple[str, str, int, str, int]]:
        """The flows (proto, src, sport, dst, dport) with drops not yet joined to a segment:
        the engine looks for their rows among those the fast path made."""
        with self._lock:
            flows = {k for k, fe in self._events.items() if fe.open_drops > 0}
            recent = time.time() - BATCH_RECENT
            return flows | {k for k, q in self._batches.items() if q and q[-1].t1 >= recent}

    def synack_retransmits(self, src: str, sport: int, dst: str, dport: int, ts: float) -> int:
        """How many SYN-ACK retransmissions the kernel reported on this flow up to ``ts``."""
        fkey = ("tcp", unmap(src), sport, unmap(dst), dport)
        with self._lock:
            fe = self._events.get(fkey)
            if fe is None:
                return 0
            return sum(1 for e in fe.plain if e.kind == "synack" and e.t <= ts + JOIN_BEFORE)


# close() and shutdown() both enter these (the socket is orphaned only after): whether the
# process kept it shows at the socket's next change
_CLOSING_ENTRIES = frozenset((4, 9))  # FIN_WAIT1, LAST_ACK


def _never_held_child(sk: int, before: list[StateChange]) -> bool:
    """Whether socket ``sk`` came from a listener (left SYN_RECV) and no change of it so far
    showed a struct socket: a child not seen accept()ed (its holder is the accept record's)."""
    mine = [c for c in before if c.sk == sk]
    return any(c.old == _SYN_RECV for c in mine) and all(c.orphan for c in mine)


def _held(last: StateChange, nxt: StateChange | None, before: list[StateChange]) -> bool | None:
    """Whether a process held the socket between ``last`` and ``nxt`` (its next change)."""
    if last.orphan and _never_held_child(last.sk, before):
        # a listener's child: no struct socket until accept() grafts one (so sk_socket is
        # NULL), which is "not accept()ed yet", not "close()d"; the accept() record tells
        return None
    if last.orphan:
        # a child the handshake just completed has no struct socket until accept(): not
        # close()d, only not (yet) held; the tracer's accept() record tells
        return None if last.old == _SYN_RECV else False
    if last.new not in _CLOSING_ENTRIES:
        return True
    if nxt is not None and nxt.sk == last.sk:
        return not nxt.orphan  # still held at the next change: it was shutdown(), not close()
    if last.how:
        return last.how == "shutdown"  # the tracer saw which call made the change
    return None


def _state_name(n: int) -> str:
    return TCP_STATES.get(n, str(n))
