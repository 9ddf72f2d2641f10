"""The engine's wing, one idea at a time: capture order (history.py), NAT (natviews.py),
late holders (latefill.py) and the kernel tracer's names (tracerrows.py).

Each is driven with the socket tables, conntrack entries and tracer records a test makes,
and the answer is checked against what those inputs say (which process, which note).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from conntui.freshness import ResolveGate
from conntui.history import FlowHistory
from conntui.latefill import RECHECK_AFTER, LateFills
from conntui.model import (
    PACKET_HOST,
    Attribution,
    Endpoint,
    FlowKey,
    Frame,
    Holder,
    Match,
    Record,
    Segment,
    SocketEntry,
    SocketTable,
)
from conntui.natviews import NatViews
from conntui.sockets.conntrack import NatMapping
from conntui.tablesource import StaticTables
from conntui.tracer import TraceRecord
from conntui.tracerrows import TRACE_SLACK, TracerRows

T0 = 1_764_200_000.0
HOST, CLIENT, LO = "192.168.1.10", "192.168.1.50", "127.0.0.1"


def seg(
    src: str, sport: int, dst: str, dport: int, flags: str = "A", *, proto: str = "tcp", t: float = T0
) -> Segment:
    return Segment(
        t, "eth0", proto, 4, src, sport, dst, dport, flags if proto == "tcp" else "", pkttype=PACKET_HOST
    )


def row(s: Segment, att: Attribution, seq: int = 1) -> Record:
    return Record(seq, Frame(s.ts, b"", 1, s.iface, 2, PACKET_HOST, 0x0800, 0), s, att)


class Rows:
    """The engine's ``_reattribute``: a row's new attribution, and a log of them."""

    def __init__(self) -> None:
        self.given: list[tuple[int, Attribution]] = []

    def __call__(self, rec: Record, att: Attribution) -> None:
        rec.attribution = att
        self.given.append((rec.seq, att))


# -- history.observe: capture order in one call ------------------------------------------


def test_observe_books_a_close_a_reset_and_the_syn_after_it() -> None:
    h = FlowHistory()
    a, b = (LO, 40000), (LO, 80)
    assert h.observe(seg(*a, *b, "S")) == (False, None, False, False)
    h.observe(seg(*b, *a, "FA", t=T0 + 1))
    h.observe(seg(*a, *b, "FA", t=T0 + 2))
    h.observe(seg(*b, *a, "A", t=T0 + 3))  # the first closer's last ACK: the close is over
    assert h.observe(seg(*a, *b, "A", t=T0 + 4)).closed
    again = h.observe(seg(*a, *b, "S", t=T0 + 5))
    assert again.syn_after_close and not again.closed and not again.reset_before
    old = SocketEntry("tcp", 4, "ESTABLISHED", Endpoint(LO, 80), Endpoint(LO, 40000), cookie=3)
    h.keep_old_connection(seg(*a, *b), old)
    assert h.observe(seg(*a, *b, "A", t=T0 + 6)).old_conn is old
    assert h.observe(seg(*a, *b, "R", t=T0 + 7)).old_conn is old  # its RST: the last time
    after = h.observe(seg(*a, *b, "S", t=T0 + 8))
    assert after.old_conn is None and after.reset_before and not after.syn_after_close


def test_observe_keeps_no_book_of_udp() -> None:
    h = FlowHistory()
    assert h.observe(seg(LO, 5353, LO, 40000, proto="udp")) == (False, None, False, False)
    assert not h._fins and not h._resets


# -- natviews: conntrack's view of a segment the table misses ------------------------------


class FakeConntrack:
    """A conntrack table with the entries a test gives; counts the look-ups."""

    available = True

    def __init__(self, *entries: NatMapping) -> None:
        self.entries = entries
        self.asked: list[FlowKey] = []

    def lookup(self, key: FlowKey, family: int, *, outgoing: bool) -> NatMapping | None:
        self.asked.append(key)
        for m in self.entries:
            if key in (m.original, m.reply, m.original.reversed(), m.reply.reversed()):
                return m
        return None


NGINX = Holder(77, 9, "nginx")
SERVED = SocketEntry(
    "tcp",
    4,
    "ESTABLISHED",
    Endpoint(HOST, 80),
    Endpoint(CLIENT, 40000),
    inode=500,
    cookie=5,
    holders=(NGINX,),
)
LISTENER = SocketEntry("tcp", 4, "LISTEN", Endpoint(HOST, 80), None, inode=501, cookie=6, holders=(NGINX,))
# the client dialled HOST:8080; a REDIRECT rule sent it to HOST:80
REDIRECT = NatMapping(
    "tcp", FlowKey("tcp", CLIENT, 40000, HOST, 8080), FlowKey("tcp", HOST, 80, CLIENT, 40000)
)


def views(conntrack: FakeConntrack, *entries: SocketEntry) -> NatViews:
    tables = StaticTables(SocketTable(entries, local_addrs=(HOST,)))
    return NatViews(tables, None, ResolveGate(0.05), conntrack=conntrack)  # type: ignore[arg-type]


def test_a_redirected_segment_is_attributed_to_the_socket_behind_the_rule() -> None:
    ct = FakeConntrack(REDIRECT)
    v = views(ct, SERVED, LISTENER)
    s = seg(CLIENT, 40000, HOST, 8080, "PA")  # as captured: before the REDIRECT
    missed = Attribution(Match.NONE, explain="no socket on 8080")
    att = v.through_nat(s, missed)
    assert att.match == Match.ESTABLISHED and att.receiver == SERVED
    assert att.receiver.holders == (NGINX,)
    assert att.explain.startswith(f"NAT (REDIRECT/DNAT): the client dialled {HOST}:8080")
    assert att.steps[0].what.startswith("conntrack: ")
    v.through_nat(s, missed)
    assert ct.asked == [s.key]  # one look-up per captured tuple


def test_a_syn_that_found_its_socket_learns_what_the_client_dialled() -> None:
    v = views(FakeConntrack(REDIRECT), SERVED, LISTENER)
    found = Attribution(Match.LISTENER, receiver=LISTENER)
    att = v.through_nat(seg(CLIENT, 40000, HOST, 8080, "S"), found)
    assert att.receiver is LISTENER and att.match == Match.LISTENER
    assert att.notes == (
        f"NAT (REDIRECT/DNAT): the client dialled {HOST}:8080; conntrack sent it to this socket",
    )


def test_without_a_translation_the_answer_stands() -> None:
    plain = NatMapping(
        "tcp", FlowKey("tcp", CLIENT, 40001, HOST, 80), FlowKey("tcp", HOST, 80, CLIENT, 40001)
    )
    ct = FakeConntrack(plain)
    v = views(ct, LISTENER)
    missed = Attribution(Match.NONE)
    assert v.through_nat(seg(CLIENT, 40001, HOST, 80), missed) is missed
    found = Attribution(Match.ESTABLISHED, receiver=SERVED)
    assert v.through_nat(seg(CLIENT, 40000, HOST, 80, "A"), found) is found  # not a suspect: not asked
    assert len(ct.asked) == 1


# -- latefill: the holder that came after the segment ---------------------------------------


class LaterTables:
    """The table at capture time has the socket unheld; the kernel (``resolve``) names a
    holder once ``accepted`` is set."""

    def __init__(self, unheld: SocketEntry, held: SocketEntry) -> None:
        self.before = SocketTable((unheld,), local_addrs=(LO,))
        self.after = SocketTable((held,), local_addrs=(LO,))
        self.accepted = False
        self.resolved = 0

    def current(self) -> SocketTable:
        return self.before

    def refresh(self) -> SocketTable:
        return self.before

    def resolve(self, seg: Segment, *, prune: bool = False) -> SocketTable | None:
        self.resolved += 1
        return self.after if self.accepted else self.before


SERVER = Holder(4100, 7, "server")
CHILD = SocketEntry("tcp", 4, "ESTABLISHED", Endpoint(LO, 80), Endpoint(LO, 41000), cookie=11)


def test_a_connection_accepted_after_its_first_segment_names_the_server_later() -> None:
    tables = LaterTables(CHILD, replace(CHILD, inode=900, holders=(SERVER,)))
    rows = Rows()
    late = LateFills(tables, rows)
    rec = row(seg(LO, 41000, LO, 80, "PA"), Attribution(Match.ESTABLISHED, receiver=CHILD))
    late.watch(0.0, rec, rec.attribution)
    late.run(RECHECK_AFTER / 2, settle=0.5)
    assert tables.resolved == 0 and not rows.given  # not due yet
    late.run(RECHECK_AFTER, settle=0.5)  # not accept()ed yet: kept for the last round
    assert tables.resolved == 1 and not rows.given
    tables.accepted = True
    late.run(RECHECK_AFTER + 0.1, settle=0.5)
    assert not rows.given  # the last round comes when the row is handed on
    time.sleep(RECHECK_AFTER)  # a socket is looked up again at most once per RECHECK_AFTER
    late.run(0.5, settle=0.5)
    assert tables.resolved == 2
    [(seq, att)] = rows.given
    assert seq == 1 and att.receiver is not None and att.receiver.holders == (SERVER,)
    assert att.notes == ("not accept()ed yet when this segment came; server[4100] fd 7 accept()ed it later",)


def test_a_held_row_is_not_watched_and_a_socket_is_looked_up_once_a_round() -> None:
    tables = LaterTables(CHILD, CHILD)  # never held
    late = LateFills(tables, Rows())
    held = Attribution(Match.ESTABLISHED, receiver=SERVED)
    late.watch(0.0, row(seg(CLIENT, 40000, HOST, 80), held), held)
    late.run(1.0, settle=0.5, final=True)
    assert tables.resolved == 0
    a = row(seg(LO, 41000, LO, 80, "PA"), Attribution(Match.ESTABLISHED, receiver=CHILD), seq=1)
    b = row(seg(LO, 41000, LO, 80, "A"), Attribution(Match.ESTABLISHED, receiver=CHILD), seq=2)
    assert not late.fill(a) and not late.fill(b)
    assert tables.resolved == 1  # the flow's second row came in the same round


# -- tracerrows: names from the kernel tracer's records ----------------------------------


class FakeTimeline:
    def __init__(self, ready_at: float) -> None:
        self.ready_at = ready_at
        self.ended_at = float("inf")

    def covers(self, t: float) -> bool:
        return self.ready_at <= t <= self.ended_at


class FakeTracer:
    """The tracer's records a test gives, looked up by tuple as ``SocketTracer`` does."""

    def __init__(self, *records: TraceRecord, ready_at: float = float("inf")) -> None:
        self.records = records
        self.timeline = FakeTimeline(ready_at)
        self.on_record: list[Any] = []

    def lookup_record(
        self,
        proto: str,
        laddr: str,
        lport: int,
        raddr: str,
        rport: int,
        *,
        at: float | None = None,
        netns: int = 0,
    ) -> TraceRecord | None:
        for r in self.records:
            if (r.proto, r.laddr, r.lport) == (proto, laddr, lport) and (
                not r.raddr or (r.raddr, r.rport) == (raddr, rport)
            ):
                return r
        return None


def tracer_rows(tracer: FakeTracer, rows: Rows) -> TracerRows:
    tables = StaticTables(SocketTable((), local_addrs=(LO,)))
    return TracerRows(tracer, tables, None, live=False, reattribute=rows)  # type: ignore[arg-type]


def test_a_udp_socket_gone_before_the_table_saw_it_is_named_by_its_bind() -> None:
    bound = TraceRecord("bind", "udp", 4, LO, 5353, "", 0, 3300, 3300, 5, "resolver", t=T0 - 1)
    rows = Rows()
    tr = tracer_rows(FakeTracer(bound), rows)
    rec = row(seg(LO, 40000, LO, 5353, proto="udp"), Attribution(Match.NONE, explain="no socket"))
    tr.fill_from_tracer(rec)
    [(_, att)] = rows.given
    assert att.match == Match.UDP_UNCONNECTED
    assert att.receiver is not None and att.receiver.holders == (Holder(3300, 5, "resolver"),)
    assert att.notes == ("process named by the socket tracer: the socket was gone before conntui could look",)
    assert att.explain.startswith(
        "The kernel tracer saw resolver[3300] fd 5 get the socket on 127.0.0.1:5353"
    )


def test_a_socket_got_after_its_segment_is_a_former_holder_only() -> None:
    late = TraceRecord(
        "connect", "tcp", 4, LO, 41000, LO, 80, 5100, 5100, 4, "client", t=T0 + TRACE_SLACK + 0.01
    )
    rows = Rows()
    tr = tracer_rows(FakeTracer(late), rows)
    rec = row(seg(LO, 41000, LO, 80, "PA"), Attribution(Match.ESTABLISHED, receiver=SERVED))
    tr.fill_from_tracer(rec)
    [(_, att)] = rows.given
    assert att.match == Match.ESTABLISHED and att.explain == ""  # the match stands
    assert att.sender is not None and not att.sender.holders
    assert att.sender.former_holders == (Holder(5100, 4, "client"),)


def test_a_row_the_tracer_did_not_cover_says_so_and_is_still_named() -> None:
    bound = TraceRecord("bind", "udp", 4, LO, 5353, "", 0, 3300, 3300, 5, "resolver", t=T0 - 1)
    rows = Rows()
    tr = tracer_rows(FakeTracer(bound, ready_at=T0 + 10), rows)
    rec = row(seg(LO, 40000, LO, 5353, proto="udp"), Attribution(Match.NONE))
    tr.store(0.0, rec, None, wait=False)
    tr.judge_settled(horizon=-1.0)
    assert not rows.given  # not settled yet
    tr.judge_settled(horizon=0.0)
    assert not tr.to_judge
    att = rec.attribution
    assert att.match == Match.UDP_UNCONNECTED
    assert att.notes[-1] == "the kernel tracer was not attached yet: this row is conntui's prediction only"
