"""The capture-time prediction (predict.py): the table's answer corrected by the kernel's
record *up to the segment's time*, one test per rule, each with its own truth (the state
changes and tracer records the test feeds), plus the boundary: nothing after the segment
(the changes it caused, the kernel's drop of it) is used."""

from __future__ import annotations

from dataclasses import replace

from conntui.judge import judge
from conntui.model import Attribution, Endpoint, Holder, Match, Segment, SocketEntry, SocketTable
from conntui.predict import NOTE, predict
from conntui.timeline import KernelEvent, Timeline
from conntui.tracer import SocketTracer
from tests.unit.test_timeline import (
    CPORT,
    LISTENER,
    SK_C,
    SK_S,
    SPORT,
    C,
    S,
    holder_at,
    seg,
    table,
    timeline,
)

SERVER = (S, SPORT, C, CPORT)


def no_holder(*_: object) -> tuple[Holder, float] | None:
    return None


def conn_entry(state: str, *holders: Holder, first_seen: float = 0.0) -> SocketEntry:
    """The server's connection socket as a table showed it."""
    return SocketEntry(
        "tcp", 4, state, Endpoint(S, SPORT), Endpoint(C, CPORT),
        inode=7 if holders else 0, holders=holders, first_seen=first_seen,
    )  # fmt: skip


def test_until_ignores_the_changes_after_the_moment() -> None:
    tl = timeline()
    # the full record knows the child born after the handshake's last ACK; a prediction at
    # that ACK's time must not
    full = tl.state_at(*SERVER, 100.0005)
    assert full is not None and full.next_state == "SYN_RECV"
    assert tl.state_at(*SERVER, 100.0005, until=100.0005) is None
    # FIN_WAIT1 entered by close(): held only the next change would tell, unless the tracer
    # saw which call made it
    assert tl.state_at(*SERVER, 100.0105, until=100.0105).held is None  # type: ignore[union-attr]


def test_shutdown_and_close_tell_whether_the_process_still_holds_the_socket() -> None:
    for how, held in (("shutdown", True), ("close", False), ("", None)):
        tl = Timeline()
        tl.ready_at = 0.0
        tl.on_state(1.0, SK_S, 10, 3, *SERVER)
        tl.on_state(1.1, SK_S, 3, 1, *SERVER)
        tl.on_state(1.2, SK_S, 1, 4, *SERVER, how=how)
        got = tl.state_at(*SERVER, 1.25, until=1.25)
        assert got is not None and got.state == "FIN_WAIT1" and got.held is held, how


def test_the_t1_line_carries_shutdown_and_orphan_bits() -> None:
    tracer = SocketTracer(clock_offset=0.0, full_names=False)
    tracer.timeline.ready_at = 0.0
    for line in (
        "T1 81 10 3 8000 40000 127.0.0.1 127.0.0.1 1000000000 1",
        "T1 81 3 1 8000 40000 127.0.0.1 127.0.0.1 1100000000 0",
        "T1 81 1 4 8000 40000 127.0.0.1 127.0.0.1 1200000000 2",  # in shutdown(), held
    ):
        tracer.feed_line(f'{{"type": "printf", "data": "{line}"}}')
    got = tracer.timeline.state_at(*SERVER, 1.3)
    assert got is not None and got.state == "FIN_WAIT1" and got.held is True


def test_rule1_a_syn_the_later_table_shows_on_its_own_connection_goes_to_the_listener() -> None:
    tl = timeline()
    made = conn_entry("ESTABLISHED", Holder(500, 4, "server"), first_seen=100.5)  # read after the SYN
    table_said = Attribution(Match.ESTABLISHED, receiver=made, explain="the established hash holds it")
    got = predict(seg(100.0, "S"), table_said, tl, holder_at, table(made))
    assert got.match == Match.LISTENER and got.receiver == LISTENER
    assert got.kernel is None and got.agrees is None and NOTE in got.notes
    assert got.steps[0].result == "miss"
    # the kernel's verdict, set beside it at settle, agrees
    judged = judge(seg(100.0, "S"), got, tl, holder_at, table(made))
    assert judged.agrees is True


def test_rule1_a_live_connection_then_keeps_the_syn_on_it() -> None:
    """A SYN on a tuple whose connection was live then (a stale client): the established hash
    holds it (challenge ACK), the listener is not asked."""
    tl = timeline()
    live = conn_entry("ESTABLISHED", Holder(500, 4, "server"), first_seen=100.5)
    table_said = Attribution(Match.ESTABLISHED, receiver=live)
    assert predict(seg(100.005, "S"), table_said, tl, holder_at, table(live)) is table_said


def test_rule2_the_handshakes_last_ack_finds_the_request_sock() -> None:
    tl = timeline()  # client ESTABLISHED at 100.001, server child born at 100.0011
    ack = seg(100.00105, "A")
    tw = conn_entry("TIME_WAIT")  # a table read after the connection closed
    table_said = Attribution(Match.TIME_WAIT, receiver=tw)
    got = predict(ack, table_said, tl, holder_at, table(tw))
    assert got.match == Match.ACCEPT_QUEUE and got.listener == LISTENER
    assert got.receiver is not None and got.receiver.state == "SYN_RECV" and not got.receiver.holders
    assert judge(ack, got, tl, holder_at, table(tw)).agrees is True
    # without the client's record (the tracer had not reported it) nothing is predicted
    bare = Timeline()
    bare.ready_at = 50.0
    assert predict(ack, table_said, bare, holder_at, table(tw)) is table_said


def test_rule2_data_behind_the_last_ack_reaches_the_new_socket() -> None:
    tl = timeline()  # accept() returned at 100.002, within the backlog wait
    data = seg(100.00105, "PA", payload=21)
    got = predict(data, Attribution(Match.UNKNOWN), tl, holder_at, table())
    assert got.match == Match.ESTABLISHED
    assert got.receiver is not None and got.receiver.holders == (Holder(500, 4, "server"),)
    assert judge(data, got, tl, holder_at, table()).agrees is True


def test_rule3_a_live_socket_in_the_record_takes_the_segment_from_a_later_time_wait() -> None:
    tl = timeline()
    data = seg(100.005, "PA", payload=5)
    tw = conn_entry("TIME_WAIT")
    got = predict(data, Attribution(Match.TIME_WAIT, receiver=tw), tl, holder_at, table(tw))
    assert got.match == Match.ESTABLISHED
    assert got.receiver is not None and got.receiver.holders == (Holder(500, 4, "server"),)
    assert got.receiver.state == "ESTABLISHED"
    assert judge(data, got, tl, holder_at, table(tw)).agrees is True


def test_rule3_a_child_nobody_had_accepted_yet_waits_in_the_accept_queue() -> None:
    """The tracer, caught up to the segment, has no accept() of the child before it: the
    segment waits in the accept queue, even if the table (read later) names a holder."""
    tl = timeline()
    data = seg(100.0015, "PA", payload=5)
    later = conn_entry("ESTABLISHED", Holder(500, 4, "server"), first_seen=100.3)  # read after accept()

    def accepted_later(*a: object) -> tuple[Holder, float] | None:
        return None if a[1] == SPORT else (Holder(600, 5, "client"), 99.99)

    table_said = Attribution(Match.ESTABLISHED, receiver=later)
    got = predict(data, table_said, tl, accepted_later, table(later))
    assert got.match == Match.ACCEPT_QUEUE and got.receiver is not None and not got.receiver.holders
    # a socket keeps its first_seen when a later look-up adds the holder: for a listener's
    # child only the accept() record tells who held it then
    before = replace(later, first_seen=100.001)
    early = predict(data, Attribution(Match.ESTABLISHED, receiver=before), tl, accepted_later, table(before))
    assert early.match == Match.ACCEPT_QUEUE
    # a client's socket (born SYN_SENT) seen held before the segment: the table's answer stands
    client = SocketEntry(
        "tcp", 4, "ESTABLISHED", Endpoint(C, CPORT), Endpoint(S, SPORT), inode=9,
        holders=(Holder(600, 5, "client"),), first_seen=99.0,
    )  # fmt: skip
    kept = Attribution(Match.ESTABLISHED, receiver=client)
    reply = seg(100.005, "PA", to_server=False, payload=3)
    assert predict(reply, kept, tl, accepted_later, table(client)) is kept
    # the accept() came at 100.002 (reported later): the kernel's record agrees
    assert judge(data, got, tl, holder_at, table(later)).agrees is True


def test_rule4_a_time_wait_in_the_record_takes_a_late_segment() -> None:
    tl = timeline()  # the server's side went to TIME_WAIT at 100.014
    late = seg(100.5, "A")
    got = predict(late, Attribution(Match.NONE, explain="no socket"), tl, no_holder, table())
    assert got.match == Match.TIME_WAIT and got.receiver is None and "RST" not in got.explain
    assert judge(late, got, tl, no_holder, table()).agrees is True


def test_rule5_a_datagram_for_a_connected_udp_socket_gone_since() -> None:
    tl = Timeline()
    tl.ready_at = 0.0
    answer = Segment(5.0, "lo", "udp", 4, S, 53, C, CPORT, "", 12)

    def connected_at(*a: object) -> tuple[Holder, float] | None:
        return (Holder(600, 3, "resolver"), 4.9) if a[1] == CPORT else None

    got = predict(answer, Attribution(Match.NONE), tl, no_holder, table(), connected_at)
    assert got.match == Match.UDP_CONNECTED
    assert got.receiver is not None and got.receiver.holders == (Holder(600, 3, "resolver"),)
    judged = judge(answer, got, tl, no_holder, table())
    assert judged.agrees is True and judged.kernel is not None and judged.kernel.verdict == "delivered"
    # a drop of that datagram is the kernel's word against the prediction
    tl.on_event(KernelEvent("drop", 5.00001, "udp", S, 53, C, CPORT, -1, "NO_SOCKET"))
    judged = judge(answer, got, tl, no_holder, table())
    assert judged.agrees is False and judged.match == Match.NONE


def test_the_prediction_never_uses_the_kernels_verdict_on_the_segment() -> None:
    """A drop published about the segment (its verdict) and the changes it caused are after
    its time: the prediction is the same with or without them."""
    tl = timeline()
    data = seg(100.005, "PA", payload=5, seq=9)
    before = predict(data, Attribution(Match.NONE), tl, holder_at, table())
    tl.on_event(KernelEvent("drop", 100.00501, "tcp", C, CPORT, S, SPORT, 9, "TCP_INVALID_SEQUENCE"))
    tl.on_state(100.0051, SK_C, 1, 4, C, CPORT, S, SPORT)
    assert predict(data, Attribution(Match.NONE), tl, holder_at, table()) == before


def test_nothing_is_predicted_where_the_record_was_not_kept() -> None:
    tl = timeline()
    table_said = Attribution(Match.NONE)
    assert predict(seg(49.0, "PA", payload=1), table_said, tl, holder_at, table()) is table_said
    tl.on_lost(1, now=100.004)
    assert predict(seg(100.005, "PA", payload=1), table_said, tl, holder_at, table()) is table_said


def test_caught_up_never_blocks_and_asks_only_a_live_tracer() -> None:
    tracer = SocketTracer(clock_offset=0.0, full_names=False)
    assert tracer.caught_up(1.0) is False  # no bpftrace: never caught up, no thread started
    assert tracer._ticker is None
    tracer._synced_at = 5.0
    assert tracer.caught_up(4.0) is True and tracer.caught_up(6.0) is False


def test_nothing_is_claimed_after_the_tracer_died() -> None:
    """bpftrace died mid-session: what it recorded stands, moments after say nothing (a
    connection's later changes were never recorded, so its last known state is no proof)."""
    tracer = SocketTracer(clock_offset=0.0, full_names=False)
    tl = tracer.timeline
    tl.ready_at = 0.0
    tl.on_state(1.0, SK_S, 10, 3, *SERVER)
    tl.on_state(1.1, SK_S, 3, 1, *SERVER)
    tracer.ready.set()
    tracer._fail("bpftrace exited (status 1)")
    assert tl.covers(1.2) and not tl.covers(tl.ended_at + 1.0)
    assert tl.state_at(*SERVER, tl.ended_at + 1.0) is None
    never = SocketTracer(clock_offset=0.0, full_names=False)
    never._fail("bpftrace did not attach within 30 s")  # never attached: nothing was covered
    assert never.timeline.ended_at == float("inf") and not never.timeline.covers(1.0)


def test_a_child_not_yet_accepted_is_not_said_to_be_closed() -> None:
    """The record's orphan bit is set on SYN_RECV → ESTABLISHED of a child nobody has
    accept()ed yet (no struct socket): that is not a close(); the holder is whoever
    accept()ed it by then (the old judge said 'had already close()d it')."""
    tl = Timeline()
    tl.ready_at = 0.0
    tl.on_state(1.0, SK_S, 10, 3, *SERVER, orphan=True)
    tl.on_state(1.001, SK_S, 3, 1, *SERVER, orphan=True)
    assert tl.state_at(*SERVER, 1.5).held is None  # type: ignore[union-attr]
    data = seg(1.5, "PA", payload=3)

    def accepted(*a: object) -> tuple[Holder, float] | None:
        return (Holder(500, 4, "server"), 1.2) if a[1] == SPORT else None

    got = judge(data, Attribution(Match.NONE), tl, accepted, table())
    assert got.match == Match.ESTABLISHED and "close()d" not in got.explain
    assert got.receiver is not None and got.receiver.holders == (Holder(500, 4, "server"),)


class _Lagging(SocketTracer):
    """A live tracer whose output is read up to ``synced`` (no bpftrace: driven by hand)."""

    alive = True  # type: ignore[assignment]

    def __init__(self, synced: float) -> None:
        super().__init__(clock_offset=0.0, full_names=False)
        self.ready.set()
        self._synced_at = synced
        self.asked: list[float] = []

    def caught_up(self, t: float) -> bool:
        self.asked.append(t)
        return self._synced_at >= t


def test_rows_wait_for_the_tracers_output_before_they_are_judged() -> None:
    """A loaded host keeps bpftrace's output behind: a row is judged (and handed on) only once
    the record has been read up to its time plus the drop-join window, at most HOLD_MAX late."""
    import time as _time

    from conntui.capture import ListSource
    from conntui.engine import HOLD_MAX, Engine, StaticTables
    from conntui.timeline import JOIN_AFTER

    class Live(ListSource):
        live = True

    now = _time.monotonic()
    offset = _time.time() - now
    horizon = now - 0.5
    behind = _Lagging(synced=horizon + offset - 0.3)  # read only up to 0.3 s before the horizon
    engine = Engine(Live([]), StaticTables(), tracer=behind)  # type: ignore[arg-type]
    held = engine._record_horizon(horizon, now)
    assert abs(held - (horizon - 0.3 - JOIN_AFTER)) < 0.01  # (the clocks are read again)
    assert len(behind.asked) == 1 and abs(behind.asked[0] - (horizon + offset + JOIN_AFTER)) < 0.01
    stuck = _Lagging(synced=0.0)  # nothing read for long: bounded
    engine.tracer = stuck
    assert engine._record_horizon(horizon, now) == now - engine.settle - HOLD_MAX
    engine.tracer = _Lagging(synced=_time.time() + 1.0)  # caught up: no wait
    assert engine._record_horizon(horizon, now) == horizon


def test_rule2_the_sockets_it_makes_are_in_the_listeners_namespace() -> None:
    """A listener read in a container's namespace: the request sock and the connection the
    handshake makes are that namespace's (JSON's ``netns``), not "not read" (0)."""
    tl = timeline()
    ns = 4026532371
    lst = replace(LISTENER, netns=ns)
    in_ns = SocketTable((lst,), local_addrs=[S])
    ack = seg(100.00105, "A")
    got = predict(ack, Attribution(Match.LISTENER, listener=lst, receiver=lst), tl, holder_at, in_ns)
    assert got.match == Match.ACCEPT_QUEUE and got.receiver is not None and got.receiver.netns == ns
    data = seg(100.00105, "PA", payload=21)
    got = predict(data, Attribution(Match.UNKNOWN, listener=lst), tl, holder_at, in_ns)
    assert got.match == Match.ESTABLISHED and got.receiver is not None and got.receiver.netns == ns
