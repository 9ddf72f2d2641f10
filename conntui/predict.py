"""The capture-time prediction, made better by what the kernel had already published.

The demux (``demux.py``) predicts from the socket table, read at some other moment than the
segment: for a connection that lives a few milliseconds, a table read a moment later shows
it in TIME_WAIT, gone, or made by the very SYN being looked up; one read earlier shows no
holder for a socket made since. By the time conntui processes a segment, the tracer
(``tracer.py``) has usually reported every TCP state change that happened *before* the
segment's timestamp, and the connect()/accept()/bind() that made its sockets. ``predict``
corrects the table's answer with that record, and only with it:

* only state changes made up to the segment's timestamp (``Timeline.state_at(until=ts)``):
  nothing the segment itself caused (the handshake's child, the close it starts), no drop
  or RST the kernel published about the segment (that is the kernel's verdict, which
  ``judge.py`` sets beside this prediction when the row settles);
* the tracer's connect/accept/bind records as they are when the segment is processed
  (a record that has not come in yet is not used: the prediction then stays the table's,
  and the judge says so if the kernel disagrees).

The rules, each with its reason:

1. **A SYN on a tuple with no live connection then** (the record shows none, or a TIME_WAIT
   a newer SYN may pass): the listener takes it, whatever the table read later shows (the
   connection this SYN made, or its TIME_WAIT).
2. **The handshake's last ACK** (and data or a FIN right behind it): the local client's
   socket entered ESTABLISHED just before, and the server's tuple has no connection socket
   yet: the listener's request sock takes the ACK and becomes the connection's socket,
   queued for accept(); data behind it reaches that new socket.
3. **A live connection socket in the record**: the established hash delivers the segment
   by its 4-tuple to that socket, in the state the record shows; its holder is the one the
   tracer saw get it by then (none yet: queued for accept()).
4. **A TIME_WAIT in the record** (not a handshake): the kernel's TIME_WAIT remains take a
   segment the table calls ``none``/``unknown``.
5. **UDP**: a datagram the table finds no socket for, to a tuple a process had connect()ed
   by then: that socket (UDP closes are not traced: worded as a prediction).

Pure: the timeline, the holder look-up and the table are passed in.
"""

from __future__ import annotations

from dataclasses import replace

from .demux import attribute
from .judge import HolderAt, _entry_then, _same_tuple
from .model import Attribution, Endpoint, Lookup, Match, Segment, SocketEntry, SocketTable, endpoint_text
from .timeline import KnownState, Timeline

# a client socket this newly ESTABLISHED is still finishing its handshake (SYN-ACK retries)
HANDSHAKE_WINDOW = 3.0
# how long a segment may wait in a loopback backlog behind the one before it (judge.py)
BACKLOG = 0.005
NOTE = "predicted from the kernel's record up to this segment (sock:inet_sock_set_state)"
_UDP_NOTE = "predicted from the tracer's connect() record (UDP closes are not traced)"


def predict(
    seg: Segment,
    att: Attribution,
    timeline: Timeline,
    holder_at: HolderAt,
    table: SocketTable,
    connected_at: HolderAt | None = None,
) -> Attribution:
    """``att`` (the table's answer) corrected by the kernel's record up to ``seg.ts``."""
    if att.kernel is not None or att.match == Match.NOT_LOCAL or not timeline.covers(seg.ts):
        return att
    if seg.proto == "udp":
        return _udp_connected(seg, att, connected_at) if connected_at is not None else att
    if seg.proto != "tcp" or not table.is_local(seg.dst):
        return att
    known = timeline.state_at(seg.dst, seg.dport, seg.src, seg.sport, seg.ts, until=seg.ts)
    if seg.is_syn:
        return _syn(seg, att, known, table)
    if "R" in seg.flags:
        return att  # a RST's receiver: the table's answer (the kernel's verdict tells the rest)
    if known is None or not known.exists or known.state == "TIME_WAIT":
        hs = _handshake(seg, att, known, timeline, holder_at, table)
        if hs is not None:
            return hs
        if known is not None and known.state == "TIME_WAIT":
            return _time_wait(seg, att, known)
        return att
    return _live(seg, att, known, timeline, holder_at)


def _syn(seg: Segment, att: Attribution, known: KnownState | None, table: SocketTable) -> Attribution:
    """Rule 1: a SYN the table (read after it) shows on its own connection or a TIME_WAIT."""
    if att.match not in (Match.ESTABLISHED, Match.ACCEPT_QUEUE, Match.SYN_RECV, Match.TIME_WAIT):
        return att
    recv = att.receiver
    if known is None:
        # no change on this tuple since the tracer started: only a connection the table
        # first saw after the SYN is known to be newer than it
        if recv is None or recv.first_seen <= seg.ts:
            return att
    elif known.exists and known.state != "TIME_WAIT":
        return att  # a live connection then: the SYN hits it (challenge ACK)
    gone = table.connected("tcp", seg.dst, seg.dport, seg.src, seg.sport)
    redo = attribute(seg, table.with_entries((), removed=gone) if gone else table)
    if redo.match != Match.LISTENER:
        return att
    tw = known is not None and known.state == "TIME_WAIT"
    what = "a TIME_WAIT the kernel lets a newer SYN through" if tw else "no connection socket"
    steps = tuple(
        Lookup(st.what, "hit: TIME_WAIT (kernel record)" if tw else "miss")
        if st.what.startswith("established hash")
        else st
        for st in redo.steps
    )
    return replace(
        redo,
        steps=steps,
        explain=(
            f"{redo.explain} The kernel's record shows {what} on this 4-tuple when the SYN came; "
            "the connection a later table read shows is the one this SYN made."
        ),
        notes=(*redo.notes, NOTE),
    )


def _handshake(
    seg: Segment,
    att: Attribution,
    known: KnownState | None,
    timeline: Timeline,
    holder_at: HolderAt,
    table: SocketTable,
) -> Attribution | None:
    """Rule 2: the handshake's last ACK, or data/FIN right behind it; None if not that."""
    if not table.is_local(seg.src):
        return None
    client = timeline.state_at(seg.src, seg.sport, seg.dst, seg.dport, seg.ts, until=seg.ts)
    if client is None or client.state != "ESTABLISHED" or seg.ts - client.since > HANDSHAKE_WINDOW:
        return None
    if known is not None and known.exists and known.since > client.since:
        return None  # a TIME_WAIT newer than the client's handshake: not this connection's
    listeners = [e for e in table.on_port("tcp", seg.dport) if e.is_listener]
    if not listeners:
        return None
    listener = att.listener if att.listener is not None else listeners[0]
    ehash = _ehash(seg)
    if seg.payload_len or "F" in seg.flags:
        at = seg._replace(ts=seg.ts + BACKLOG)
        entry, note = _entry_then(
            at, "ESTABLISHED", seg.dst, seg.dport, seg.src, seg.sport, att.receiver, holder_at
        )
        if not entry.netns:
            entry = replace(entry, netns=listener.netns)  # the listener's child: its namespace
        held = bool(entry.holders)
        who = f"; {entry.describe()} held it" if held else "; no process had accept()ed it yet"
        return replace(
            att,
            match=Match.ESTABLISHED if held else Match.ACCEPT_QUEUE,
            receiver=entry,
            listener=listener,
            explain=(
                f"Sent right behind the handshake's last ACK (the client on "
                f"{endpoint_text(seg.src, seg.sport)} had just entered ESTABLISHED, the server had no "
                "connection socket yet): the kernel handles that ACK first, which makes the connection's "
                f"socket, and this segment reaches it by its 4-tuple{who}."
            ),
            steps=(Lookup(ehash, f"hit: ESTABLISHED (the socket the ACK before made), {entry.describe()}"),),
            notes=(*att.notes, *((note,) if note else ()), NOTE),
        )
    entry = SocketEntry(
        proto="tcp",
        family=listener.family,
        state="SYN_RECV",
        local=_local(seg),
        remote=_remote(seg),
        netns=listener.netns,  # the request sock lives where its listener does
    )
    return replace(
        att,
        match=Match.ACCEPT_QUEUE,
        receiver=entry,
        listener=listener,
        explain=(
            f"The handshake's last ACK: the client on {endpoint_text(seg.src, seg.sport)} had just entered "
            "ESTABLISHED and the server had no connection socket on this 4-tuple yet, so the listener's "
            f"request sock ({listener.describe()}) takes it and the kernel turns it into the connection's "
            "socket, queued for accept() (no fd yet)."
        ),
        steps=(Lookup(ehash, "hit: request sock (NEW_SYN_RECV)"),),
        notes=(*att.notes, NOTE),
    )


def _live(
    seg: Segment, att: Attribution, known: KnownState, timeline: Timeline, holder_at: HolderAt
) -> Attribution:
    """Rule 3: a live connection socket on the tuple then."""
    recv = att.receiver
    same = recv is not None and _same_tuple(recv, *_rx(seg))
    # A listener's child is held by whoever accept()ed it: the tracer's accept() record (read
    # up to this segment) says who and when; a table's holder may be from a later read
    # (a socket keeps its first_seen when a later look-up adds the holder).
    child = timeline.child_of_listener(*_rx(seg), seg.ts)
    held_before = (
        not child
        and att.match == Match.ESTABLISHED
        and same
        and recv is not None
        and bool(recv.holders)
        and recv.state == known.state
        and recv.first_seen <= seg.ts
    )
    if held_before:
        return att  # a table read before the segment saw it held, as the record has it
    base = recv
    if child and same and recv is not None:
        base = replace(recv, holders=(), former_holders=())
    entry, note = _entry_then(seg, known.state, *_rx(seg), base, holder_at, held=known.held)
    if entry.holders:
        match = Match.ESTABLISHED
    elif note or (child and not entry.former_holders):
        # a listener's child nobody had accept()ed by then (the tracer, caught up to this
        # segment, has no accept() of it before; the record calls such a socket orphaned,
        # as it has no struct socket yet): it waits in the accept queue
        match = Match.ACCEPT_QUEUE
    else:
        match = Match.ESTABLISHED
    if (
        match == att.match
        and recv is not None
        and _same_tuple(recv, seg.dst, seg.dport, seg.src, seg.sport)
        and {h.pid for h in recv.holders} == {h.pid for h in entry.holders}
    ):
        return att
    if entry.holders:
        who = f"; {entry.describe()} held it then"
    elif note:
        who = f"; {note}"
    elif match == Match.ACCEPT_QUEUE:
        who = "; no process had accept()ed it yet"
    elif known.held is False and entry.former_holders:
        who = "; its process had already close()d it"
    elif known.held is None and entry.former_holders:
        who = "; whether its process still held it (shutdown() or close()) the record does not say yet"
    else:
        who = "; no process was seen to hold it"
    return replace(
        att,
        match=match,
        receiver=entry,
        explain=(
            f"The kernel's record shows the connection socket on {endpoint_text(seg.dst, seg.dport)} ↔ "
            f"{endpoint_text(seg.src, seg.sport)} in {known.state} when this segment came, so the "
            f"established hash delivers it there by its 4-tuple{who}."
        ),
        steps=(Lookup(_ehash(seg), f"hit: {known.state} (kernel record), {entry.describe()}"),),
        notes=(*att.notes, *((note,) if note else ()), NOTE),
    )


def _time_wait(seg: Segment, att: Attribution, known: KnownState) -> Attribution:
    """Rule 4: the connection had closed into TIME_WAIT before this segment."""
    if att.match not in (Match.NONE, Match.UNKNOWN):
        return att
    return replace(
        att,
        match=Match.TIME_WAIT,
        receiver=None,
        explain=(
            f"The connection on {endpoint_text(seg.dst, seg.dport)} ↔ {endpoint_text(seg.src, seg.sport)} "
            "had closed; the kernel's record shows its TIME_WAIT remains then, which take this late "
            "segment (the kernel re-acknowledges it; no process sees it)."
        ),
        steps=(Lookup(_ehash(seg), "hit: TIME_WAIT (kernel record)"),),
        notes=(*att.notes, NOTE),
    )


def _udp_connected(seg: Segment, att: Attribution, connected_at: HolderAt) -> Attribution:
    """Rule 5: a datagram for a connected UDP socket the table no longer (or not yet) has."""
    if att.match not in (Match.NONE, Match.UNKNOWN):
        return att
    got = connected_at(seg.dst, seg.dport, seg.src, seg.sport, seg.ts)
    if got is None:
        return att
    holder, since = got
    where = endpoint_text(seg.dst, seg.dport)
    entry = SocketEntry(
        proto="udp",
        family=seg.family,
        state="ESTABLISHED",
        local=_local(seg),
        remote=_remote(seg),
        holders=(holder,),
        first_seen=since,
    )
    return replace(
        att,
        match=Match.UDP_CONNECTED,
        receiver=entry,
        explain=(
            f"The kernel tracer saw {entry.describe()} connect() a UDP socket on "
            f"{endpoint_text(seg.dst, seg.dport)} to {endpoint_text(seg.src, seg.sport)} before this "
            "datagram came; it was gone before conntui could look it up, and a connected socket is the "
            "kernel's best match for its own peer's datagram."
        ),
        steps=(Lookup(f"UDP {where} ← {endpoint_text(seg.src, seg.sport)}", f"hit: {entry.describe()}"),),
        notes=(*att.notes, _UDP_NOTE),
    )


def _local(seg: Segment) -> Endpoint:
    return Endpoint(seg.dst, seg.dport)


def _remote(seg: Segment) -> Endpoint:
    return Endpoint(seg.src, seg.sport)


def _rx(seg: Segment) -> tuple[str, int, str, int]:
    """The receiver's tuple (local end first)."""
    return seg.dst, seg.dport, seg.src, seg.sport


def _ehash(seg: Segment) -> str:
    return f"established hash ({endpoint_text(seg.dst, seg.dport)} ← {endpoint_text(seg.src, seg.sport)})"


__all__ = ["HANDSHAKE_WINDOW", "NOTE", "predict"]
