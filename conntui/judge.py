"""Judge a row by the kernel's own record: the prediction made from the socket table, set
beside what the kernel published about that segment at that moment.

The demux (``demux.py``) predicts from a socket table read *after* the segment; for short
connections that table shows the wrong moment (a connection already gone, or one the SYN
itself created). The kernel's record (``timeline.py``, fed by the tracer) says, for TCP,
which state the connection socket on the 4-tuple was in *when the segment came*, and for
TCP and UDP whether the kernel dropped the segment (and why) or answered it with a RST.

``judge`` returns the row's final attribution:

* the kernel's verdict (``Attribution.kernel``) and whether it agrees with the prediction
  (``Attribution.agrees``); a disagreement is corrected to what the kernel shows, and the
  prediction is kept in a note, never hidden;
* a predicted event the kernel did not confirm is not stated: a ``none`` row (predicting a
  RST or ICMP) whose segment the kernel did not drop is ``unknown`` ("closed before conntui
  could look"), not a story.

Pure: the timeline and the holder look-up are passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from .demux import attribute
from .model import (
    PACKET_HOST,
    Attribution,
    Endpoint,
    Holder,
    KernelVerdict,
    Lookup,
    Match,
    Segment,
    SocketEntry,
    SocketTable,
    endpoint_text,
    unmap,
)
from .timeline import STAMP_TOL, DropBatch, KernelEvent, KnownState, Timeline

# (local addr, local port, remote addr, remote port, at) → (holder, when it got the socket)
HolderAt = Callable[[str, int, str, int, float], tuple[Holder, float] | None]

# States in which the process still holds the socket (a close() would have left them)
_HELD_STATES = frozenset(("ESTABLISHED", "SYN_SENT", "CLOSE_WAIT"))
# the states a table's view of a connection may be confirmed in (held, or just made)
_TABLE_STATES = _HELD_STATES | {"SYN_RECV"}
_STATE_SOURCE = "sock:inet_sock_set_state"
_COUNTED = "skb:kfree_skb (counted in the kernel)"
# how many rows conntui captured in a window of counted drops
# how many rows of a batch's flow conntui captured with a timestamp in (lo, hi] (-1: the
# capture lost packets since before lo, so none can be matched)
RowsIn = Callable[[DropBatch, float, float], int]
# A connection born (or established) this soon before a SYN on its tuple was made by that
# SYN: the tracer's and the capture's clocks differ by more than a veth round trip.
_OWN_CHILD_SLACK = 0.005
_CHILD = "listener (the connection's socket was created from it)"
_ACCEPT_LATE = 60.0  # an accept() this long after a segment still tells which listener queued it
# how long a segment may wait in a loopback backlog behind the one before it (stamped when
# queued, handled after): a holder that accept()ed within this held it when it was handled
_BACKLOG = 0.005
_HANDSHAKE_WINDOW = 3.0  # a request sock's child appears this soon after the segment (SYN-ACK retries)


def _sock_text(state: str, local: str, lport: int, remote: str, rport: int) -> str:
    return f"{state} {endpoint_text(local, lport)} ↔ {endpoint_text(remote, rport)}"


def _same_tuple(sock: SocketEntry | None, laddr: str, lport: int, raddr: str, rport: int) -> bool:
    return (
        sock is not None
        and sock.remote is not None
        and sock.local.port == lport
        and sock.remote.port == rport
        and unmap(sock.local.addr) == unmap(laddr)
        and unmap(sock.remote.addr) == unmap(raddr)
    )


def _entry_then(
    seg: Segment,
    state: str,
    laddr: str,
    lport: int,
    raddr: str,
    rport: int,
    known_sock: SocketEntry | None,
    holder_at: HolderAt,
    held: bool | None = None,
) -> tuple[SocketEntry, str]:
    """The connection socket on this tuple as it was at the segment's time, and a note on
    its holder (who got it, when)."""
    base = known_sock if _same_tuple(known_sock, laddr, lport, raddr, rport) else None
    got = holder_at(laddr, lport, raddr, rport, seg.ts)
    holders: tuple[Holder, ...] = ()
    former: tuple[Holder, ...] = ()
    note = ""
    if got is not None:
        holder, since = got
        if since <= seg.ts and base is not None and base.holders and holder not in base.holders:
            # got by one process, held by another when the table was read after the segment:
            # passed on (a forking server's child; SCM_RIGHTS), the holders seen then stand
            got = None
    if got is not None:
        holder, since = got
        # held: the kernel's record says whether a process still had the socket (a
        # shutdown() keeps it, a close() orphans it: the FIN of a close() leaves an fd-less socket)
        if since <= seg.ts and (held is True or (held is None and state in _HELD_STATES)):
            holders = (holder,)
        elif since <= seg.ts:
            former = (holder,)
        else:
            who = f"{holder.process}[{holder.pid}] fd {holder.fd}"
            note = f"not accept()ed yet when this segment came; {who} got it later"
            former = (holder,)
    elif base is not None and (base.holders or base.former_holders):
        if state in _HELD_STATES:
            holders = base.holders or base.former_holders
        else:
            former = base.former_holders or base.holders
    entry = SocketEntry(
        proto=seg.proto,
        family=base.family if base is not None else seg.family,
        state=state,
        local=base.local if base is not None else Endpoint(laddr, lport),
        remote=base.remote if base is not None else Endpoint(raddr, rport),
        inode=base.inode if base is not None else 0,
        holders=holders,
        uid=base.uid if base is not None else 0,
        cookie=base.cookie if base is not None else 0,
        former_holders=former,
        first_seen=base.first_seen if base is not None else 0.0,
        netns=base.netns if base is not None else 0,
    )
    return entry, note


def _prediction_note(att: Attribution) -> str:
    who = att.receiver.describe() if att.receiver is not None else "no socket"
    return f"conntui's table predicted {att.match.value} ({who}); the kernel's record says otherwise"


def judge(
    seg: Segment,
    att: Attribution,
    timeline: Timeline,
    holder_at: HolderAt,
    table: SocketTable,
    bound_at: HolderAt | None = None,
    rows_in: RowsIn | None = None,
    *,
    here: bool = True,
) -> Attribution:
    """The row's attribution judged against the kernel's record of that moment. ``rows_in``
    counts the rows conntui captured in a window of counted drops (:class:`DropBatch`);
    ``here``: ``seg`` is the segment as captured (not a view of it in another namespace)."""
    if att.kernel is not None or not timeline.covers(seg.ts):
        return att  # judged already, or the record was not being kept then
    tcp = seg.proto == "tcp"
    events = timeline.events_for(
        seg.proto, seg.src, seg.sport, seg.dst, seg.dport, seg.ts, seg.seq if tcp else -1,
        exact=here and seg.pkttype == PACKET_HOST,
    )  # fmt: skip
    drop, reset, abort = events.get("drop"), events.get("reset"), events.get("abort")
    counted = None
    if drop is None and rows_in is not None:
        batch = timeline.batch_for(seg.proto, seg.src, seg.sport, seg.dst, seg.dport, seg.ts)
        if batch is not None:
            if not batch.accounted and not _accounted(seg, batch, timeline, rows_in):
                return _counted_some(att, batch)
            counted = batch
            drop = KernelEvent("drop", seg.ts, seg.proto, seg.src, seg.sport, seg.dst, seg.dport)
            drop = drop._replace(reason=batch.reason, state=batch.state)
    new = att
    if tcp:
        new = _judge_tcp_receiver(seg, new, timeline, holder_at, table, drop, reset)
        new = _judge_tcp_sender(seg, new, timeline, holder_at)
        new = _reuseport_member(seg, new, table, holder_at)
    elif bound_at is not None:
        new = _udp_bound_last(seg, new, bound_at)
    if abort is not None:
        new = replace(
            new,
            kernel=new.kernel or KernelVerdict("sent", "tcp:tcp_send_reset", abort.reason, abort.state),
            notes=(*new.notes, f"the kernel sent this RST to abort the socket ({abort.reason})"),
        )
    if drop is not None:
        dropped = _dropped(seg, att, new, drop, _COUNTED if counted else "skb:kfree_skb")
        if counted is None:
            return dropped
        note = (
            f"the kernel counted {counted.count} drops of this flow ({counted.reason}) from "
            f"{_clock(counted.t0)} to {_clock(counted.t1)}, too many to report one by one: with those "
            f"it reported, as many as the {counted.captured} segments conntui captured then, so this one too"
        )
        return replace(dropped, notes=(*dropped.notes, note))
    if not tcp and new.kernel is None and new.match in (Match.UDP_CONNECTED, Match.UDP_UNCONNECTED):
        # The record covers this moment and the kernel did not drop the datagram: a socket
        # took it, as predicted (UDP publishes no socket for a delivery, only drops).
        agrees = True if new.agrees is None else new.agrees
        return replace(new, kernel=KernelVerdict("delivered", "skb:kfree_skb (no drop)"), agrees=agrees)
    if reset is not None and new.kernel is None:
        agrees = att.match in (Match.NONE, Match.TIME_WAIT) or reset.reason != "NO_SOCKET"
        new = replace(
            new, kernel=KernelVerdict("reset", "tcp:tcp_send_reset", reset.reason, reset.state), agrees=agrees
        )
    if (
        new.match == Match.NONE
        and drop is None
        and reset is None
        and not (tcp and _record_shows_no_socket(seg, timeline))
        and not any(n.startswith("verified:") for n in new.notes)
    ):
        # The prediction was "no socket: the kernel answers with a RST / ICMP"; the kernel,
        # traced at that moment, did not drop the segment: a socket took it.
        new = replace(
            new,
            match=Match.UNKNOWN,
            receiver=None,
            explain=(
                "The kernel did not drop this segment (no skb:kfree_skb for it), so a socket received it; "
                "it was gone before conntui could look it up, and its state then is unknown."
            ),
            notes=(
                *new.notes,
                "conntui's table predicted none (no socket); the kernel's record says otherwise",
            ),
            kernel=new.kernel or KernelVerdict("delivered", "skb:kfree_skb (no drop)"),
            agrees=False,
        )
    return new


def _udp_bound_last(seg: Segment, att: Attribution, bound_at: HolderAt) -> Attribution:
    """A datagram for an unconnected UDP port: of equal sockets bound to it, the kernel takes
    the one bound last (``udp_lib_get_port`` puts it at the head of its hash chain). When the
    tracer saw a bind on this port after the table's socket was first seen, the table (read
    before it) does not know that socket: the datagram went to the newer one."""
    recv = att.receiver
    if att.match != Match.UDP_UNCONNECTED or recv is None or not recv.holders:
        return att
    got = bound_at(seg.dst, seg.dport, "", 0, seg.ts)
    if got is None:
        return att
    holder, since = got
    if since <= recv.first_seen or any(h.pid == holder.pid and h.fd == holder.fd for h in recv.holders):
        return att
    entry = replace(recv, holders=(holder,), former_holders=(), inode=0, cookie=0, first_seen=since)
    return replace(
        att,
        receiver=entry,
        candidates=(),
        explain=(
            f"UDP to {endpoint_text(seg.dst, seg.dport)}: the kernel tracer saw "
            f"{holder.process}[{holder.pid}] fd {holder.fd} bind this port after the sockets in "
            "conntui's table; of equal sockets the kernel takes the one bound last (the head of "
            "its hash chain), so this socket got the datagram."
        ),
        notes=(*att.notes, _prediction_note(att)),
        agrees=False,
    )


def _record_shows_no_socket(seg: Segment, timeline: Timeline) -> bool:
    """The kernel's record shows no connection on the receiver's 4-tuple then (it closed)."""
    known = timeline.state_at(seg.dst, seg.dport, seg.src, seg.sport, seg.ts)
    return known is not None and not known.exists


def _accounted(seg: Segment, batch: DropBatch, timeline: Timeline, rows_in: RowsIn) -> bool:
    """Whether every segment of ``batch``'s window was dropped: the drops the kernel counted,
    with those it reported one by one, are as many as the segments conntui captured there.

    The tracer reads a tick's count before the last drop's receive timestamp (a maximum), so
    every drop in a count has a timestamp up to that one; drops made while the two were read
    are in the next tick's count (though their segments are in this window). So windows are
    settled as a run: from the last window found whole (exclusive: its last segment was its
    own) or the flood's first drop (inclusive), through this one and, if that falls short,
    the next ones read so far. Whatever is counted in the run is a drop of a segment in it,
    so a count that covers every captured segment there proves each was dropped; a count
    that falls short leaves them unknown. The windows of a run found whole are marked so."""
    if not batch.s1:
        return False
    tail = batch
    for _ in range(5):
        if tail.next is None:
            break
        tail = tail.next
    if batch.tried is tail:
        return False  # tried with the same windows read: each row would only scan again
    batch.tried = tail
    run: list[DropBatch] = []
    b: DropBatch | None = batch
    while b is not None and not b.accounted and len(run) < 64:
        run.insert(0, b)
        b = b.prev
    if b is not None and not b.accounted:
        return False  # too long a run of windows that fell short
    lo, inclusive = (b.s1, False) if b is not None else (run[0].s0, True)
    lo_q = lo - STAMP_TOL if inclusive else lo + STAMP_TOL / 4
    counted = 0
    reached = False
    k: DropBatch | None = run[0]
    for _ in range(len(run) + 5):  # up to this window, and at most 5 read after it
        if k is None or not k.s1:
            return False
        counted += k.count
        reached = reached or k is batch
        if reached:
            captured = rows_in(batch, lo_q, k.s1 + STAMP_TOL)
            batch.captured = captured
            if captured < 0:
                return False
            singles = timeline.drops_between(seg.proto, seg.src, seg.sport, seg.dst, seg.dport, lo_q, k.s1)
            if counted + singles >= captured:
                x: DropBatch | None = k
                while x is not None and x is not b:
                    x.accounted = True
                    x = x.prev
                return True
        k = k.next
    return False


def _counted_some(att: Attribution, batch: DropBatch) -> Attribution:
    """A row in a window where the kernel counted drops of its flow but not which: fewer than
    conntui captured segments there (some were delivered), or the window or the capture is
    not exact (no receive timestamps, packets the capture lost)."""
    last = batch.unknown
    if last is not None and last[0] is att and last[1] == batch.captured:
        return last[2]  # a flood's rows share their flow's attribution: the same answer
    verdict = KernelVerdict("unknown", _COUNTED, batch.reason, batch.state)
    got = replace(att, kernel=verdict, agrees=None, notes=(*att.notes, _counted_note(batch)))
    batch.unknown = (att, batch.captured, got)
    return got


def _counted_note(batch: DropBatch) -> str:
    if batch.captured is None or batch.captured < 0:
        why = "the capture lost packets then, so its segments cannot be matched to the count"
    elif not batch.s1:
        why = "the packets carried no receive timestamp to match them by"
    else:
        why = f"conntui captured {batch.captured} segments of it then, some were delivered"
    return (
        f"the kernel dropped {batch.count} segments of this flow from {_clock(batch.t0)} to "
        f"{_clock(batch.t1)} ({batch.reason}; counted in the kernel, too many to report one by one); "
        f"{why}: whether it dropped this one is not known"
    )


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}"


def _dropped(
    seg: Segment, att: Attribution, new: Attribution, drop: KernelEvent, source: str = "skb:kfree_skb"
) -> Attribution:
    """A segment the kernel dropped: its reason beside the prediction."""
    verdict = KernelVerdict("dropped", source, drop.reason, drop.state)
    if drop.reason == "NO_SOCKET":
        agrees = att.match == Match.NONE
        if new.match != Match.NONE:
            answer = "a RST" if seg.proto == "tcp" else "ICMP port unreachable"
            new = replace(
                new,
                match=Match.NONE,
                receiver=None,
                explain=(
                    f"The kernel found no socket for {endpoint_text(seg.dst, seg.dport)} (NO_SOCKET) and "
                    f"dropped the segment; it answers with {answer}."
                ),
                notes=(*new.notes, _prediction_note(att)),
            )
        return replace(new, kernel=verdict, agrees=agrees)
    # The lookup found a socket; the kernel dropped the segment there for its own reason.
    agrees = att.match not in (Match.NONE, Match.UNKNOWN)
    note = f"the kernel dropped it: {drop.reason}" + (f" (socket in {drop.state})" if drop.state else "")
    return replace(new, kernel=verdict, agrees=agrees, notes=(*new.notes, note))


def _judge_tcp_receiver(
    seg: Segment,
    att: Attribution,
    timeline: Timeline,
    holder_at: HolderAt,
    table: SocketTable,
    drop: KernelEvent | None,
    reset: KernelEvent | None,
) -> Attribution:
    if not table.is_local(seg.dst) or att.match == Match.NOT_LOCAL:
        return att
    known = timeline.state_at(seg.dst, seg.dport, seg.src, seg.sport, seg.ts)
    if known is None or drop is not None:
        return att
    if known.exists and known.state != "TIME_WAIT":
        if seg.is_syn:
            # A SYN on a live connection's tuple: the established hash holds it (RFC 5961
            # challenge ACK); no listener is asked.
            if att.match in (Match.ESTABLISHED, Match.ACCEPT_QUEUE):
                return _confirm(att, known, seg)
            if (
                att.match == Match.LISTENER
                and known.state in ("SYN_RECV", "ESTABLISHED")
                and seg.ts - known.since < _OWN_CHILD_SLACK
            ):
                # The child this SYN's own handshake made, stamped by the kernel's clock a
                # hair before the capture's: the listener took the SYN (the same-port lab).
                return att
        elif (
            att.match in (Match.ESTABLISHED, Match.ACCEPT_QUEUE, Match.SYN_RECV)
            and _same_tuple(att.receiver, seg.dst, seg.dport, seg.src, seg.sport)
            and att.receiver is not None
            and att.receiver.state in (known.state, "ESTABLISHED", "SYN_RECV")
            and known.state in _TABLE_STATES
        ):
            then = _holders_then(seg, att, known, holder_at)
            recv = then.receiver
            held = recv is not None and bool(recv.holders)
            if then.match == Match.ACCEPT_QUEUE and held:
                # accept()ed before this segment came: the process's socket took it
                then = replace(then, match=Match.ESTABLISHED)
            elif then.match == Match.ESTABLISHED and not held and known.state == "SYN_RECV":
                then = replace(then, match=Match.ACCEPT_QUEUE)
            if then.match == att.match:
                return _confirm(then, known, seg)
            return replace(
                _confirm(then, known, seg),
                agrees=False,
                notes=(*then.notes, _prediction_note(att)),
            )
        entry, note = _entry_then(
            seg, known.state, seg.dst, seg.dport, seg.src, seg.sport, att.receiver, holder_at, held=known.held
        )
        match = Match.ACCEPT_QUEUE if note else Match.ESTABLISHED
        if entry.holders:
            who = f"; {entry.describe()} held it then"
        elif known.held is False and entry.former_holders:
            h = entry.former_holders[0]
            who = f"; {h.process}[{h.pid}] had already close()d it (fd {h.fd}): the kernel alone finishes it"
        elif known.held is None:
            who = "; whether a process still held it then (shutdown() or close()) the record does not say"
        else:
            who = ""
        explain = (
            f"The established hash holds {endpoint_text(seg.dst, seg.dport)} ↔ "
            f"{endpoint_text(seg.src, seg.sport)}: the kernel's record shows that connection socket in "
            f"{known.state} when this segment came, so the kernel delivered it there by its 4-tuple{who}."
        )
        predicted = att.receiver
        agrees = (
            match == att.match
            and predicted is not None
            and {h.pid for h in predicted.holders} == {h.pid for h in entry.holders}
        )
        return replace(
            att,
            match=match,
            receiver=entry,
            explain=explain,
            steps=(Lookup(_ehash(seg), f"hit: {known.state} (kernel record), {entry.describe()}"),),
            notes=(*att.notes, *((note,) if note else ()), *(() if agrees else (_prediction_note(att),))),
            kernel=KernelVerdict(
                "delivered",
                _STATE_SOURCE,
                socket=_sock_text(known.state, seg.dst, seg.dport, seg.src, seg.sport),
            ),
            agrees=agrees,
        )
    if seg.is_syn:
        # No connection on the tuple (or only a TIME_WAIT the SYN may replace): the SYN goes
        # to the listener. A table read after the handshake shows the connection it made.
        child = (
            known.next_state in ("SYN_RECV", "ESTABLISHED") and known.next_since - seg.ts < _HANDSHAKE_WINDOW
        )
        tw = known.state == "TIME_WAIT"
        if reset is not None:
            return att  # the kernel answered with a RST: the reset verdict tells
        # The lookup as the kernel ran it then: the established hash had nothing live for
        # this tuple (a table read later shows the connection this SYN made).
        gone = table.connected("tcp", seg.dst, seg.dport, seg.src, seg.sport)
        redo = attribute(seg, table.with_entries((), removed=gone) if gone else table)
        if redo.match != Match.LISTENER:
            return att
        if tw:
            redo = replace(
                redo, steps=(Lookup(_ehash(seg), "hit: TIME_WAIT (kernel record)"), *redo.steps[1:])
            )
        if att.match == Match.LISTENER:
            # The prediction's listener stands (read when the SYN came); only its look-up steps
            # are the kernel's: the established hash had no live connection for this tuple.
            steps = tuple(
                Lookup(st.what, "hit: TIME_WAIT (kernel record)" if tw else "miss")
                if st.what.startswith("established hash")
                else st
                for st in att.steps
            )
            out = replace(
                att,
                steps=steps,
                explain=f"{att.explain} {_tw_syn_note(seg)}" if tw else att.explain,
            )
            if child:
                return replace(
                    out, kernel=KernelVerdict("delivered", _STATE_SOURCE, socket=_CHILD), agrees=True
                )
            return out
        notes = (*redo.notes, _prediction_note(att))
        return replace(
            redo,
            explain=f"{redo.explain} {_tw_syn_note(seg)}" if tw else redo.explain,
            notes=notes,
            kernel=KernelVerdict(
                "delivered" if child else "no socket on the 4-tuple",
                _STATE_SOURCE,
                socket=_CHILD if child else "",
            ),
            agrees=False,
        )
    handshake = known.next_state in ("SYN_RECV", "ESTABLISHED") and (
        0 <= known.next_since - seg.ts < _HANDSHAKE_WINDOW
    )
    if known.state == "TIME_WAIT" and not handshake:
        if att.match == Match.TIME_WAIT:
            return _confirm(att, known, seg)
        if att.match in (Match.NONE, Match.UNKNOWN):
            return replace(
                att,
                match=Match.TIME_WAIT,
                receiver=None,
                explain=(
                    f"The connection on {endpoint_text(seg.dst, seg.dport)} ↔ "
                    f"{endpoint_text(seg.src, seg.sport)} had closed; the kernel's record shows "
                    "its TIME_WAIT remains then, which take this late "
                    "segment (the kernel re-acknowledges it; no process sees it)."
                ),
                steps=(Lookup(_ehash(seg), "hit: TIME_WAIT (kernel record)"),),
                notes=(*att.notes, _prediction_note(att)),
                kernel=KernelVerdict(
                    "delivered",
                    _STATE_SOURCE,
                    socket=_sock_text("TIME_WAIT", seg.dst, seg.dport, seg.src, seg.sport),
                ),
                agrees=False,
            )
        return att
    # No connection socket on the tuple at that moment (a TIME_WAIT there was replaced by
    # the SYN before this segment: the handshake's last ACK follows).
    if handshake and (seg.payload_len or "F" in seg.flags):
        # Data sent right behind the handshake's last ACK: on loopback both wait in the same
        # backlog, stamped when queued, and the kernel handles the ACK first. The data reaches
        # the connection's socket the ACK just made (its holder if accept() returned by then).
        at = seg._replace(ts=seg.ts + _BACKLOG)
        entry, note = _entry_then(
            at, "ESTABLISHED", seg.dst, seg.dport, seg.src, seg.sport, att.receiver, holder_at
        )
        match = Match.ESTABLISHED if entry.holders else Match.ACCEPT_QUEUE
        predicted = att.receiver
        agrees = (
            match == att.match
            and predicted is not None
            and {h.pid for h in predicted.holders} == {h.pid for h in entry.holders}
        )
        who = f"; {entry.describe()} held it" if entry.holders else "; no process had accept()ed it yet"
        return replace(
            att,
            match=match,
            receiver=entry,
            explain=(
                "Sent right behind the handshake's last ACK: the kernel handled that ACK first, which "
                f"made the connection's socket, and this segment reached it by its 4-tuple{who}."
            ),
            steps=(Lookup(_ehash(seg), f"hit: ESTABLISHED (kernel record), {entry.describe()}"),),
            notes=(*att.notes, *((note,) if note else ()), *(() if agrees else (_prediction_note(att),))),
            kernel=KernelVerdict("delivered", _STATE_SOURCE, socket="the connection's new socket"),
            agrees=agrees,
        )
    if handshake:
        # The handshake's last ACK: it found the request sock, which the kernel turned into
        # this connection's socket just after (queued for accept()).
        if att.match in (Match.ACCEPT_QUEUE, Match.SYN_RECV):
            return _confirm(att, KnownState("SYN_RECV", known.next_since), seg)
        entry, _ = _entry_then(
            seg, "SYN_RECV", seg.dst, seg.dport, seg.src, seg.sport, att.receiver, holder_at
        )
        return replace(
            att,
            match=Match.ACCEPT_QUEUE,
            receiver=replace(entry, holders=()),
            explain=(
                "The handshake's request sock (its listener's) took this segment; the kernel's record shows "
                "it turned into the connection's socket just after, queued for accept() (no fd yet)."
            ),
            steps=(Lookup(_ehash(seg), "hit: request sock (NEW_SYN_RECV)"),),
            notes=(*att.notes, _prediction_note(att)),
            kernel=KernelVerdict("delivered", _STATE_SOURCE, socket="request sock → child"),
            agrees=False,
        )
    return att


def _reuseport_member(seg: Segment, att: Attribution, table: SocketTable, holder_at: HolderAt) -> Attribution:
    """Which SO_REUSEPORT member took the connection: the kernel hashed the 4-tuple to one
    listener, whose queue the connection joined; the process that accept()ed it (the
    tracer's record) holds that member. The table alone can only say "one of the group"."""
    ends = ((seg.dst, seg.dport, seg.src, seg.sport), (seg.src, seg.sport, seg.dst, seg.dport))
    server = next((e for e in ends if len(_listeners(table, e[1])) > 1), None)
    if server is None:
        return att
    listeners = _listeners(table, server[1])
    # accept() may come long after the handshake (a busy server): any accept of this
    # connection names the member
    got = holder_at(*server, seg.ts + _ACCEPT_LATE)
    if got is None:
        return att
    pid = got[0].pid
    mine = [e for e in listeners if any(h.pid == pid for h in e.holders)]
    if len(mine) != 1:
        return att
    member = mine[0]
    explain, sender_explain = att.explain, att.sender_explain
    picked = []
    for sock in (att.receiver, att.sender, att.listener):
        swap = (
            sock is not None
            and sock.is_listener
            and not _same_socket(sock, member)
            and any(_same_socket(sock, e) for e in listeners)
        )
        picked.append(member if swap else sock)
        if swap and sock is not None and not seg.is_syn:  # a SYN's text lists the whole group
            explain = explain.replace(sock.describe(), member.describe())
            sender_explain = sender_explain.replace(sock.describe(), member.describe())
    receiver, sender, listener = picked
    if (receiver, sender, listener) == (att.receiver, att.sender, att.listener):
        return att
    note = f"SO_REUSEPORT: the kernel gave this connection to {member.describe()} (its process accept()ed it)"
    return replace(
        att,
        receiver=receiver,
        sender=sender,
        listener=listener,
        explain=explain,
        sender_explain=sender_explain,
        notes=(*att.notes, note),
    )


def _same_socket(a: SocketEntry, b: SocketEntry) -> bool:
    """The same kernel socket, whichever table read it (queue lengths change between reads)."""
    if a.cookie and b.cookie:
        return a.cookie == b.cookie
    return a.inode == b.inode and a.local == b.local


def _listeners(table: SocketTable, port: int) -> list[SocketEntry]:
    return [e for e in table.on_port("tcp", port) if e.is_listener]


def _tw_syn_note(seg: Segment) -> str:
    return (
        "a TIME_WAIT of an earlier connection on this 4-tuple was there; the kernel lets a newer SYN "
        "through it to the listener (tcp_timewait_state_process → TCP_TW_SYN) and removes the TIME_WAIT"
    )


def _ehash(seg: Segment) -> str:
    return f"established hash ({endpoint_text(seg.dst, seg.dport)} ← {endpoint_text(seg.src, seg.sport)})"


def _confirm(att: Attribution, known: KnownState, seg: Segment) -> Attribution:
    steps = att.steps
    if not seg.is_syn and known.state:
        # the lookup as the kernel's record shows it (a table read later may show another state)
        who = att.receiver.describe() if att.receiver is not None else "kernel"
        steps = (Lookup(_ehash(seg), f"hit: {known.state} (kernel record), {who}"),)
    return replace(
        att,
        steps=steps,
        kernel=KernelVerdict(
            "delivered", _STATE_SOURCE, socket=_sock_text(known.state, seg.dst, seg.dport, seg.src, seg.sport)
        ),
        agrees=True,
    )


def _holders_then(seg: Segment, att: Attribution, known: KnownState, holder_at: HolderAt) -> Attribution:
    """The receiver's holders as they were at the segment's time (a socket closed since still
    names who held it; one accept()ed later is not yet held)."""
    recv = att.receiver
    if recv is None or recv.holders:
        return att
    entry, note = _entry_then(
        seg, known.state, seg.dst, seg.dport, seg.src, seg.sport, recv, holder_at, held=known.held
    )
    if not (entry.holders or entry.former_holders):
        return att
    notes = (*att.notes, note) if note else att.notes
    return replace(
        att, receiver=replace(recv, holders=entry.holders, former_holders=entry.former_holders), notes=notes
    )


def _judge_tcp_sender(seg: Segment, att: Attribution, timeline: Timeline, holder_at: HolderAt) -> Attribution:
    """The sending socket as it was then: a segment sent before its socket went to TIME_WAIT
    was sent by that connection's socket, not by the kernel's TIME_WAIT remains."""
    if "R" in seg.flags:
        return att
    known = timeline.state_at(seg.src, seg.sport, seg.dst, seg.dport, seg.ts)
    if known is None or not known.exists or known.state == "TIME_WAIT":
        return att
    sender = att.sender
    if sender is not None and sender.holders and sender.state != "TIME_WAIT":
        return _sender_step(att, seg, known.state, sender)
    entry, _ = _entry_then(
        seg, known.state, seg.src, seg.sport, seg.dst, seg.dport, sender, holder_at, held=known.held
    )
    if sender is not None and not entry.holders and (sender.former_holders or not entry.former_holders):
        return _sender_step(att, seg, known.state, sender)
    explain = (
        f"sent by the connection socket on {endpoint_text(seg.src, seg.sport)}, in {known.state} then "
        "(sock:inet_sock_set_state); it has closed since."
    )
    return _sender_step(replace(att, sender=entry, sender_explain=explain), seg, known.state, entry)


def _sender_step(att: Attribution, seg: Segment, state: str, sender: SocketEntry) -> Attribution:
    """The sender's look-up step as the kernel's record shows it (a table read later may show
    the socket in TIME_WAIT or gone)."""
    what = f"sender socket {endpoint_text(seg.src, seg.sport)} → {endpoint_text(seg.dst, seg.dport)}"
    step = Lookup(what, f"hit: {state} (kernel record), {sender.describe()}")
    steps = tuple(s for s in att.steps if not s.what.startswith("sender socket"))
    return replace(att, steps=(*steps, step))


def judge_sender(seg: Segment, att: Attribution, timeline: Timeline, holder_at: HolderAt) -> Attribution:
    """Only the sending end of a TCP row judged (``seg`` as the sending socket sees it): a
    row whose ends are in two network namespaces has each end judged in its own."""
    if not timeline.covers(seg.ts) or seg.proto != "tcp":
        return att
    return _judge_tcp_sender(seg, att, timeline, holder_at)


__all__ = ["HolderAt", "judge", "judge_sender"]
