"""The kernel's record by time (timeline.py) and rows judged against it (judge.py)."""

from __future__ import annotations

import json

from conntui.judge import judge
from conntui.model import Attribution, Endpoint, Holder, Match, Segment, SocketEntry, SocketTable
from conntui.timeline import KernelEvent, KnownState, Timeline
from conntui.tracer import KernelLine, SocketTracer, parse_line

C, S = "127.0.0.1", "127.0.0.1"
CPORT, SPORT = 40000, 8000
SK_C, SK_S = 0xC1, 0x51


def seg(ts: float, flags: str, *, to_server: bool = True, seq: int = 1, payload: int = 0) -> Segment:
    if to_server:
        return Segment(ts, "lo", "tcp", 4, C, CPORT, S, SPORT, flags, payload, seq)
    return Segment(ts, "lo", "tcp", 4, S, SPORT, C, CPORT, flags, payload, seq)


def connection(tl: Timeline, t0: float = 100.0) -> None:
    """A connection as the tracepoint shows it: connect (port not yet chosen), handshake,
    the server closes first (TIME_WAIT on its side)."""
    tl.on_state(t0, SK_C, 7, 2, C, 0, S, SPORT)  # CLOSE → SYN_SENT, before the port is chosen
    tl.on_state(t0 + 0.001, SK_C, 2, 1, C, CPORT, S, SPORT)  # SYN_SENT → ESTABLISHED
    tl.on_state(t0 + 0.0011, SK_S, 10, 3, S, SPORT, C, CPORT)  # the child, from the listener
    tl.on_state(t0 + 0.0012, SK_S, 3, 1, S, SPORT, C, CPORT)
    tl.on_state(t0 + 0.010, SK_S, 1, 4, S, SPORT, C, CPORT)  # server close(): FIN_WAIT1
    tl.on_state(t0 + 0.011, SK_C, 1, 8, C, CPORT, S, SPORT)  # client: CLOSE_WAIT
    tl.on_state(t0 + 0.012, SK_S, 4, 5, S, SPORT, C, CPORT)
    tl.on_state(t0 + 0.013, SK_C, 8, 9, C, CPORT, S, SPORT)  # client close(): LAST_ACK
    tl.on_state(t0 + 0.014, SK_S, 5, 7, S, SPORT, C, CPORT)  # → TIME_WAIT (a CLOSE after FIN_WAIT2)
    tl.on_state(t0 + 0.015, SK_C, 9, 7, C, CPORT, S, SPORT)


def timeline() -> Timeline:
    tl = Timeline()
    tl.ready_at = 50.0
    connection(tl)
    return tl


def test_state_at_follows_the_connection_through_time():
    tl = timeline()
    server = (S, SPORT, C, CPORT)
    client = (C, CPORT, S, SPORT)
    # before the handshake's last ACK: no socket on the server's tuple, its child comes next
    before = tl.state_at(*server, 100.0005)
    assert before is not None and not before.exists and before.next_state == "SYN_RECV"
    # the client's SYN_SENT birth was filed under its port once the port was known
    syn_sent = tl.state_at(*client, 100.0005)
    assert syn_sent is not None and syn_sent.state == "SYN_SENT"
    assert tl.state_at(*server, 100.005).state == "ESTABLISHED"  # type: ignore[union-attr]
    assert tl.state_at(*server, 100.0125).state == "FIN_WAIT2"  # type: ignore[union-attr]
    assert tl.state_at(*server, 100.02).state == "TIME_WAIT"  # type: ignore[union-attr]
    assert tl.state_at(*server, 100.0 + 61).state == ""  # type: ignore[union-attr]  # TIME_WAIT over
    assert tl.state_at(*client, 100.02) == KnownState("", 100.015, SK_C)  # LAST_ACK → CLOSE: gone


def test_nothing_is_claimed_before_the_tracer_or_after_lost_events():
    tl = timeline()
    assert tl.state_at(S, SPORT, C, CPORT, 49.0) is None  # before ready_at
    assert tl.state_at(S, SPORT, C, 1, 100.005) is None  # a tuple the record never saw
    tl.on_lost(3, now=100.5)  # events lost: nothing is proved up to a second after
    assert tl.state_at(S, SPORT, C, CPORT, 100.005) is None
    assert not tl.covers(101.4) and tl.covers(101.6)


def test_a_reset_close_is_not_a_time_wait():
    tl = Timeline()
    tl.ready_at = 0.0
    tl.on_state(1.0, SK_S, 10, 3, S, SPORT, C, CPORT)
    tl.on_state(1.1, SK_S, 3, 1, S, SPORT, C, CPORT)
    tl.on_state(1.2, SK_S, 1, 4, S, SPORT, C, CPORT)
    tl.on_reset_received(1.29, SK_S)
    tl.on_state(1.3, SK_S, 4, 7, S, SPORT, C, CPORT)
    assert tl.state_at(S, SPORT, C, CPORT, 1.4).state == ""  # type: ignore[union-attr]


def test_a_drop_serves_one_segment_with_its_sequence_number():
    tl = Timeline()
    tl.on_event(KernelEvent("drop", 10.0001, "tcp", C, CPORT, S, SPORT, 7, "NO_SOCKET"))
    assert tl.events_for("tcp", C, CPORT, S, SPORT, 10.0, seq=6) == {}  # another segment
    got = tl.events_for("tcp", C, CPORT, S, SPORT, 10.0, seq=7)
    assert got["drop"].reason == "NO_SOCKET"
    assert tl.events_for("tcp", C, CPORT, S, SPORT, 10.0, seq=7) == {}  # used up
    tl.on_event(KernelEvent("drop", 20.0, "udp", C, CPORT, S, SPORT, -1, "SOCKET_RCVBUFF"))
    assert tl.events_for("udp", C, CPORT, S, SPORT, 18.0) == {}  # too long before the drop


LISTENER = SocketEntry(
    "tcp", 4, "LISTEN", Endpoint(S, SPORT), None, inode=11, holders=(Holder(500, 3, "server"),)
)


def table(*extra: SocketEntry) -> SocketTable:
    return SocketTable((*extra, LISTENER), local_addrs=[S])


def holder_at(laddr: str, lport: int, raddr: str, rport: int, at: float) -> tuple[Holder, float] | None:
    if lport == SPORT:
        return Holder(500, 4, "server"), 100.002  # accept() returned after the handshake
    return Holder(600, 5, "client"), 99.99  # connect()


def test_a_syn_judged_by_a_later_table_is_given_back_to_the_listener():
    """The table read after the handshake shows the connection the SYN made (or its
    TIME_WAIT): the kernel's record says there was none, so the listener took the SYN."""
    tl = timeline()
    tw = SocketEntry("tcp", 4, "TIME_WAIT", Endpoint(S, SPORT), Endpoint(C, CPORT))
    predicted = Attribution(Match.TIME_WAIT, receiver=tw, explain="finds that 4-tuple's TIME_WAIT remains")
    got = judge(seg(100.0004, "S"), predicted, tl, holder_at, table(tw))
    assert got.match == Match.LISTENER and got.receiver == LISTENER
    assert got.agrees is False and got.kernel is not None and got.kernel.verdict == "delivered"
    assert "miss" in got.steps[0].result  # the established hash had nothing for it
    assert any("predicted time_wait" in n for n in got.notes)


def test_data_to_a_socket_gone_since_is_delivered_to_its_holder_then():
    tl = timeline()
    predicted = Attribution(Match.NONE, explain="No socket … predicted: the kernel answers with a RST.")
    got = judge(seg(100.005, "PA", payload=5), predicted, tl, holder_at, table())
    assert got.match == Match.ESTABLISHED
    assert got.receiver is not None and got.receiver.holders == (Holder(500, 4, "server"),)
    assert got.agrees is False and "RST" not in got.explain


def test_a_none_the_kernel_did_not_drop_is_unknown_not_a_story():
    tl = Timeline()
    tl.ready_at = 0.0
    udp = Segment(5.0, "lo", "udp", 4, S, 53, C, CPORT, "", 12)
    predicted = Attribution(Match.NONE, explain="predicted: the kernel answers with ICMP port unreachable.")
    got = judge(udp, predicted, tl, holder_at, table())
    assert got.match == Match.UNKNOWN and "ICMP" not in got.explain and got.agrees is False


def test_a_drop_for_no_socket_confirms_none():
    tl = Timeline()
    tl.ready_at = 0.0
    tl.on_event(KernelEvent("drop", 5.00001, "udp", C, CPORT, S, 9, -1, "NO_SOCKET"))
    udp = Segment(5.0, "lo", "udp", 4, C, CPORT, S, 9, "", 3)
    got = judge(udp, Attribution(Match.NONE), tl, holder_at, table())
    assert got.match == Match.NONE and got.agrees is True
    assert got.kernel is not None and got.kernel.verdict == "dropped"


def test_kernel_record_lines_parse_and_feed_the_timeline():
    line = '{"type": "printf", "data": "T1 193 7 10 8000 0 127.0.0.1 0.0.0.0 5000000000 0"}'
    parsed = parse_line(line)
    assert isinstance(parsed, KernelLine) and parsed.kind == "T1" and len(parsed.fields) == 9
    assert parse_line('{"type": "printf", "data": "T1 1 2"}') is None  # too few fields
    tracer = SocketTracer(clock_offset=100.0, full_names=False)
    tracer.drop_reasons = {3: "NO_SOCKET"}
    tracer.feed_line('{"type": "printf", "data": "D1 3 17 40000 9 -1 -1 127.0.0.1 127.0.0.1 5000000000"}')
    tracer.feed_line('{"type": "printf", "data": "P1 42 6000000000 python3 -m x"}')
    got = tracer.timeline.events_for("udp", C, CPORT, S, 9, 105.0)
    assert got["drop"].reason == "NO_SOCKET"
    assert tracer.exec_after(42, 105.0) == "python3 -m x" and tracer.exec_after(42, 107.0) is None
    tracer.feed_line('{"type": "printf", "data": "D1 x 17 40000 9 -1 -1 a b c"}')  # garbage: counted
    assert tracer.stats["unparsed"] == 1


def test_a_udp_port_bound_after_the_table_was_read_takes_the_datagram():
    """Of equal sockets bound to a UDP port the kernel takes the one bound last; a table read
    before that bind names an older (since closed) responder: the tracer's bind record wins."""
    tl = Timeline()
    tl.ready_at = 0.0
    old = SocketEntry(
        "udp", 4, "UNCONN", Endpoint(S, 53), None, inode=5, holders=(Holder(700, 3, "old"),), first_seen=10.0
    )
    predicted = Attribution(Match.UDP_UNCONNECTED, receiver=old, explain="one of 2 sockets bound to it")
    dgram = Segment(12.0, "lo", "udp", 4, C, CPORT, S, 53, "", 5)

    def bound_at(laddr: str, lport: int, raddr: str, rport: int, at: float) -> tuple[Holder, float] | None:
        return (Holder(701, 3, "new"), 11.0) if lport == 53 else None

    got = judge(dgram, predicted, tl, holder_at, table(), bound_at)
    assert got.receiver is not None and got.receiver.holders == (Holder(701, 3, "new"),)
    assert got.agrees is False and "bound last" in got.explain
    # a bind older than the table's socket changes nothing
    old_bind = judge(dgram, predicted, tl, holder_at, table(), lambda *a: (Holder(701, 3, "new"), 9.0))
    assert old_bind.receiver == old


def test_data_queued_behind_the_handshakes_last_ack_reaches_the_new_socket():
    """On loopback the last ACK and the first data wait in one backlog, stamped when queued:
    the data's time is before the child's birth, but the kernel handled the ACK first."""
    tl = timeline()  # the child is born at 100.0011; accept() returned at 100.002
    data = seg(100.00105, "PA", payload=21)
    predicted = Attribution(Match.SYN_RECV, explain="the request sock")
    got = judge(data, predicted, tl, holder_at, table())
    assert got.match == Match.ESTABLISHED and got.receiver is not None
    assert got.receiver.holders == (Holder(500, 4, "server"),) and got.agrees is False


def test_an_accepted_child_is_not_called_closed_before_accept():
    """A passive connection's child goes SYN_RECV → ESTABLISHED in softirq, before accept()
    gives it a struct socket: the tracepoint's sk_socket is NULL then, which means "not yet
    accept()ed", not "close()d". Its holder is the accept() record's, not a former one
    (a podman httpd's every data segment was told "httpd had already close()d it")."""
    tl = Timeline()
    tl.ready_at = 50.0
    tl.on_state(100.0, SK_S, 10, 3, S, SPORT, C, CPORT, orphan=True)  # request sock → child
    tl.on_state(100.001, SK_S, 3, 1, S, SPORT, C, CPORT, orphan=True)  # ESTABLISHED, no socket yet
    known = tl.state_at(S, SPORT, C, CPORT, 100.5)
    assert known is not None and known.state == "ESTABLISHED"
    assert known.held is None  # the record cannot tell: the accept() record does

    accepted = Holder(4242, 4, "httpd")
    row = Attribution(
        Match.ESTABLISHED,
        receiver=SocketEntry("tcp", 4, "ESTABLISHED", Endpoint(S, SPORT), Endpoint(C, CPORT), cookie=7),
        explain="predicted",
    )
    table = SocketTable([], local_addrs=[S])
    judged = judge(seg(100.5, "PA", payload=5), row, tl, lambda *a: (accepted, 100.2), table)
    assert judged.receiver is not None and judged.receiver.holders == (accepted,)
    assert "close()d" not in judged.explain


def test_a_syn_stamped_just_after_the_child_it_made_still_went_to_the_listener():
    """Seen in the same-port lab: the kernel's record stamped the handshake's child
    (LISTEN → SYN_RECV) a little before the captured SYN that created it (the two clocks
    differ by more than a veth round trip); the judge then called the SYN "delivered by its
    4-tuple" to a connection "already close()d". A SYN that finds a child born within the
    tracer's slack of it made that child: the listener took it."""
    tl = timeline()
    predicted = Attribution(Match.LISTENER, receiver=LISTENER, explain="the listener takes it")
    for ts in (100.00115, 100.0013):  # while the child is SYN_RECV, and just after ESTABLISHED
        got = judge(seg(ts, "S"), predicted, tl, holder_at, table())
        assert got.match == Match.LISTENER and got.receiver == LISTENER
    # a SYN that comes when the connection has been up for a while hits it (challenge ACK)
    late = judge(seg(100.0095, "S"), predicted, tl, holder_at, table())
    assert late.match != Match.LISTENER


# --------------------------------------------------------------------------- floods: drops counted


def _flood_tracer() -> SocketTracer:
    tracer = SocketTracer(clock_offset=100.0, full_names=False)
    tracer.drop_reasons = {6: "SOCKET_RCVBUFF"}
    tracer.netns = 4026531840  # the traced namespace: its lines feed ``timeline``
    tracer.timeline.ready_at = 0.0
    return tracer


def _tick(tracer: SocketTracer, n: int, t0: int, t1: int, s0: int, s1: int) -> None:
    key = f"6,17,{CPORT},9,7,{C},{S},4026531840"
    for name, value in (("@dn", n), ("@dt1", t1), ("@ds1", s1), ("@dt0", t0), ("@ds0", s0)):
        tracer.feed_line(json.dumps({"type": "map", "data": {name: {key: value}}}))
    tracer.feed_line('{"type": "printf", "data": "DZ 1"}')


def _dgram(ts: float) -> Segment:
    return Segment(ts, "lo", "udp", 4, C, CPORT, S, 9, "", 3)


def test_drops_reported_one_by_one_join_their_own_segment_by_receive_timestamp():
    """A flood's drops come in any order relative to the rows that ask: the skb's receive
    timestamp (the one the capture reports) names the segment, not the first row in time."""
    tracer = _flood_tracer()
    # dropped: the datagram stamped 105.000200 (nsecs 5.0003 s); the one at 105.000100 was not
    line = f"D3 6 17 {CPORT} 9 -1 7 {C} {S} 5000300000 105000200000 4026531840"
    tracer.feed_line(json.dumps({"type": "printf", "data": line}))
    udp = Attribution(Match.UDP_UNCONNECTED, explain="bound")
    first = judge(_dgram(105.0001), udp, tracer.timeline, holder_at, table())
    second = judge(_dgram(105.0002), udp, tracer.timeline, holder_at, table())
    assert first.kernel is not None and first.kernel.verdict == "delivered"
    assert second.kernel is not None and (second.kernel.verdict, second.kernel.reason) == (
        "dropped",
        "SOCKET_RCVBUFF",
    )


def test_counted_drops_mark_every_segment_only_when_they_account_for_all_captured():
    tracer = _flood_tracer()
    udp = Attribution(Match.UDP_UNCONNECTED, explain="bound")
    # 3 drops counted in the kernel, receive timestamps 106.000 .. 106.002
    _tick(tracer, 3, 6_000_000_000, 6_002_000_000, 106_000_000_000, 106_002_000_000)
    rows = [_dgram(106.0), _dgram(106.001), _dgram(106.002)]
    got = [judge(r, udp, tracer.timeline, holder_at, table(), None, lambda b, lo, hi: 3) for r in rows]
    assert all(g.kernel is not None and g.kernel.verdict == "dropped" for g in got)
    assert all(g.kernel is not None and "counted" in g.kernel.source for g in got)
    # the next tick: 2 more counted (from the last one's timestamp on), but conntui has 3 rows
    # there (one was delivered): none is called dropped
    _tick(tracer, 5, 6_000_000_000, 6_004_000_000, 106_000_000_000, 106_004_000_000)
    later = [_dgram(106.003), _dgram(106.0035), _dgram(106.004)]
    got = [judge(r, udp, tracer.timeline, holder_at, table(), None, lambda b, lo, hi: 4) for r in later]
    assert all(g.kernel is not None and g.kernel.verdict == "unknown" for g in got), got
    assert "whether it dropped this one is not known" in got[0].notes[-1]
    # a window the capture lost packets in: never matched
    _tick(tracer, 6, 6_000_000_000, 6_006_000_000, 106_000_000_000, 106_006_000_000)
    lossy = judge(_dgram(106.005), udp, tracer.timeline, holder_at, table(), None, lambda b, lo, hi: -1)
    assert (
        lossy.kernel is not None and lossy.kernel.verdict == "unknown" and "lost packets" in lossy.notes[-1]
    )


def test_drop_counts_are_read_as_differences_and_garbage_is_counted():
    tracer = _flood_tracer()
    _tick(tracer, 10, 6_000_000_000, 6_001_000_000, 106_000_000_000, 106_001_000_000)
    _tick(tracer, 10, 6_000_000_000, 6_001_000_000, 106_000_000_000, 106_001_000_000)  # no change
    ((batch,),) = tracer.timeline._batches.values()
    assert batch.count == 10 and batch.reason == "SOCKET_RCVBUFF" and batch.s1 == 106.001
    tracer.feed_line('{"type": "map", "data": {"@dn": {"x,y": 3}}}')
    tracer.feed_line('{"type": "map", "data": {"@dt1": {"x,y": 5}}}')
    tracer.feed_line('{"type": "printf", "data": "DZ 2"}')
    assert tracer.stats["unparsed"] == 1


def test_a_count_read_before_its_windows_last_drop_is_settled_with_the_next_window():
    """The tracer reads a tick's count, then its last timestamp: drops made in between are
    counted in the next tick but their segments lie in this window. A window that falls
    short is settled together with the next one (never by a count that may be a neighbour's)."""
    tracer = _flood_tracer()
    udp = Attribution(Match.UDP_UNCONNECTED, explain="bound")
    rows = {  # timestamps of the captured segments of each window (all dropped)
        1: [106.0 + i * 1e-4 for i in range(10)],  # 106.0000 .. 106.0009
        2: [106.001 + i * 1e-4 for i in range(10)],  # 106.0010 .. 106.0019
    }
    everything = sorted(rows[1] + rows[2])

    def rows_in(b: object, lo: float, hi: float) -> int:
        return sum(1 for t in everything if lo <= t <= hi)

    # tick 1: 8 of window 1's 10 drops counted, the last timestamp read covers all 10
    _tick(tracer, 8, 6_000_000_000, 6_000_900_000, 106_000_000_000, 106_000_900_000)
    got = judge(_dgram(rows[1][0]), udp, tracer.timeline, holder_at, table(), None, rows_in)
    assert got.kernel is not None and got.kernel.verdict == "unknown"  # 8 < 10: not yet
    # tick 2: the 2 strays and window 2's 10 (cumulative 20): together they cover both windows
    _tick(tracer, 20, 6_000_000_000, 6_001_900_000, 106_000_000_000, 106_001_900_000)
    for t in (rows[1][5], *rows[2]):
        got = judge(_dgram(t), udp, tracer.timeline, holder_at, table(), None, rows_in)
        assert got.kernel is not None and got.kernel.verdict == "dropped", (t, got.notes)
    # one delivered segment in a third window is never hidden by a neighbour's count
    everything.extend([106.002 + i * 1e-4 for i in range(5)])
    _tick(tracer, 24, 6_000_000_000, 6_002_400_000, 106_000_000_000, 106_002_400_000)
    got = judge(_dgram(106.0021), udp, tracer.timeline, holder_at, table(), None, rows_in)
    assert got.kernel is not None and got.kernel.verdict == "unknown"


def test_a_drop_stamped_on_another_clock_is_joined_by_time():
    """A locally sent TCP segment keeps its departure time on CLOCK_MONOTONIC (EDT) in the
    skb: that is no receive time, so the drop is joined by time, not by stamp."""
    tracer = _flood_tracer()
    line = f"D3 3 6 {CPORT} 9 7 -1 {C} {S} 5000000000 2017236603876 4026531840"
    tracer.feed_line(json.dumps({"type": "printf", "data": line}))
    syn = Segment(105.0, "lo", "tcp", 4, C, CPORT, S, 9, "S", 0, 7)
    got = judge(syn, Attribution(Match.NONE), tracer.timeline, holder_at, table())
    assert got.kernel is not None and got.kernel.verdict == "dropped"


def test_a_tcp_drop_stamped_after_the_capture_is_joined_by_its_sequence_number():
    """Measured on loopback: a locally sent SYN that finds no socket is dropped with a
    CLOCK_REALTIME stamp a few microseconds after the one the packet socket reported (the
    kernel replaces the skb's departure time with the time of IP delivery). The stamps differ,
    but the sequence number in the time window names the segment (CI saw this SYN's verdict
    as the RST the kernel sent, with its NO_SOCKET drop left unjoined)."""
    tracer = _flood_tracer()
    line = f"D3 3 6 {CPORT} 9 7 -1 {C} {S} 5000000000 105000005000 4026531840"
    tracer.feed_line(json.dumps({"type": "printf", "data": line}))
    syn = Segment(105.0, "lo", "tcp", 4, C, CPORT, S, 9, "S", 0, 7)
    got = judge(syn, Attribution(Match.NONE), tracer.timeline, holder_at, table())
    assert got.kernel is not None and got.kernel.verdict == "dropped"
    # another segment of the flow (another sequence number) in that window does not take it
    tracer.feed_line(json.dumps({"type": "printf", "data": line.replace(" 7 -1 ", " 8 -1 ")}))
    other = Segment(105.0, "lo", "tcp", 4, C, CPORT, S, 9, "S", 0, 9)
    got = judge(other, Attribution(Match.NONE), tracer.timeline, holder_at, table())
    assert got.kernel is None or got.kernel.verdict != "dropped"


def _udp_drop(t: float, stamp: float) -> KernelEvent:
    return KernelEvent("drop", t, "udp", C, CPORT, S, 9, reason="SOCKET_RCVBUFF", stamp=stamp)


def test_a_flood_of_waiting_drops_is_pruned_and_each_joins_its_own_stamp():
    """Past the per-flow bound the oldest waiting drops go; the flow stops being one with
    drops once every drop still kept is joined; each row gets the drop stamped closest to it
    (also across the index's bucket boundaries)."""
    from conntui.timeline import FLOW_EVENTS_MAX

    tl = Timeline()
    n = FLOW_EVENTS_MAX + 2000
    for i in range(n):
        tl.on_event(_udp_drop(100.0 + i * 1e-5, 100.0 + i * 1e-5))
    flow = ("udp", C, CPORT, S, 9)
    assert flow in tl.drop_flows()
    stamps = [100.0 + i * 1e-5 for i in range(n)]
    # a stamp 1.5 us off its drop, the next drop 10 us away: the closer one is taken
    joined = [s for s in stamps if tl.events_for("udp", C, CPORT, S, 9, s + 1.5e-6, exact=True)]
    assert FLOW_EVENTS_MAX <= len(joined) < n and joined == stamps[-len(joined) :]  # the oldest went
    assert flow not in tl.drop_flows()
    # a row with no drop of its own stamped gets none (exact); a joined drop serves only once
    assert tl.events_for("udp", C, CPORT, S, 9, stamps[-1], exact=True) == {}
    # every stamp reported and kept still counts in drops_between (kept after its join)
    assert tl.drops_between("udp", C, CPORT, S, 9, joined[0], joined[-1]) == len(joined)
