"""The UI's data side, without Textual: the ring, the drain, socket grouping, dissection."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace

import pytest

from conntui.filters import parse_display_filter
from conntui.model import Attribution, Frame, Match, Record, Segment
from conntui.session import Session
from conntui.tui.detail_text import detail_text
from conntui.tui.dissect import dissect
from conntui.tui.feed import Feed, RowBuffer, row_selector, socket_key
from conntui.tui.row_text import Widths, fit, row_text
from conntui.tui.sockview import SECTION_LISTEN, SECTION_TCP, SECTION_UDP, build_view, socket_passes

from .scenario import HOSTILE, T0, frames, make_engine, socket_table


def _rec(seq: int) -> Record:
    seg = Segment(
        ts=T0 + seq, iface="lo", proto="tcp", family=4, src="127.0.0.1", sport=1, dst="127.0.0.1", dport=2
    )
    return Record(seq, Frame(T0, b"", 101), seg, Attribution(Match.NONE))


def test_ring_buffer_keeps_the_newest_and_indexes_in_order() -> None:
    buf = RowBuffer(5)
    dropped = buf.extend(_rec(i) for i in range(12))
    assert dropped == 7 and buf.dropped == 7
    assert [buf[i].seq for i in range(len(buf))] == [7, 8, 9, 10, 11]
    assert buf[-1].seq == 11
    assert buf.index_of_seq(9) == 2 and buf.index_of_seq(3) is None
    assert buf.nearest_index(100) == 4 and buf.nearest_index(0) == 0
    with pytest.raises(IndexError):
        buf[5]


def test_ring_buffer_bulk_operations_match_a_deque() -> None:
    """extend (batched list copies), prepend (older rows at the front) and of (a whole
    window at once) keep the same rows, in the same order, as a bounded deque."""
    rng = random.Random(7)
    for capacity in (1, 5, 16):
        buf = RowBuffer(capacity)
        model: deque[int] = deque()
        seq = 10_000  # rows come in seq order; older ones are prepended below 10_000
        low = 10_000
        dropped = 0
        for _ in range(300):
            if rng.random() < 0.6:
                n = rng.randrange(0, 2 * capacity + 2)
                batch = [_rec(seq + i) for i in range(n)]
                seq += n
                evicted = buf.extend(batch)
                model.extend(r.seq for r in batch)
                extra = max(0, len(model) - capacity)
                for _ in range(extra):
                    model.popleft()
                assert evicted == extra
                dropped += extra
            else:
                n = rng.randrange(0, capacity + 2)
                older = [_rec(low - n + i) for i in range(n)]
                added = buf.prepend(older)
                fit = min(n, capacity - len(model))
                assert added == fit
                model.extendleft(r.seq for r in reversed(older[n - fit :]))
                low = model[0] if model else low - n
            assert [buf[i].seq for i in range(len(buf))] == list(model)
            assert buf.dropped == dropped
        rows = [_rec(i) for i in range(capacity * 3)]
        whole = RowBuffer.of(rows, capacity)
        assert [whole[i].seq for i in range(len(whole))] == [r.seq for r in rows[-capacity:]]
        assert whole.dropped == 2 * capacity
        whole.extend([_rec(999_999)])
        assert whole[-1].seq == 999_999 and len(whole) == capacity


def test_row_selector_agrees_with_the_display_filter() -> None:
    rows = make_engine().session.window()
    texts = ("8080", "tcp", "udp 5353", "80,443 tcp", "proc:curl 8080 tcp", "match:none", "pid:6666")
    for text in texts:
        flt = parse_display_filter(text)
        select = row_selector(flt)
        assert select is not None
        assert select(rows) == [r for r in rows if flt(r.segment, r.attribution)], text
    assert row_selector(None) is None


def _session(n: int) -> Session:
    engine = make_engine()
    session = Session(window=n)
    base = engine.session.window()
    for i in range(n):
        r = base[i % len(base)]
        session.append(r.frame, r.segment, r.attribution)
    return session


def test_drain_is_bounded_per_call_and_skips_ahead_when_far_behind() -> None:
    session = _session(1000)
    feed = Feed(session, capacity=100)
    # 1000 waiting > capacity + limit: start from the newest 100 rather than crawl
    d = feed.drain(30, now=0.0)
    assert (d.seen, d.added) == (30, 30)
    assert feed.last_seq == 929
    d = feed.drain(30, now=0.0)
    assert d.seen == 30 and feed.last_seq == 959
    while feed.drain(30, now=0.0).seen:
        pass
    assert feed.last_seq == session.last_seq
    assert [feed.buffer[i].seq for i in range(len(feed.buffer))] == list(range(900, 1000))
    assert not feed.drain(30, now=0.0).seen


def test_drain_keeps_pace_when_not_far_behind() -> None:
    session = _session(300)
    feed = Feed(session, capacity=1000)
    seen = []
    while d := feed.drain(100, now=0.0):
        if not d.seen:
            break
        seen.append(d.seen)
    assert seen == [100, 100, 100]
    assert len(feed.buffer) == 300


def test_drain_filters_rows_but_counts_every_socket() -> None:
    session = make_engine().session
    feed = Feed(session)
    flt = parse_display_filter("match:none")
    feed.drain(10_000, now=1.0)
    feed.apply_filter(flt, want=100, budget=1.0)
    assert len(feed.buffer) == 2 and feed.backfill is None
    assert feed.buffer is not feed.all and len(feed.all) == len(session)
    feed2 = Feed(session)
    feed2.filter = flt
    feed2.drain(10_000, now=5.0)
    assert len(feed2.buffer) == 2
    curl = next(e for e in socket_table().entries if e.holders and e.holders[0].process == "curl")
    act = feed2.activity.get(curl)
    assert act is not None and act.segments == 9 and act.last_hit == 5.0  # 5 sent + 4 received
    assert sum(act.series(int(feed2.activity.newest_ts))) == act.segments


def _seqs(buf: RowBuffer) -> list[int]:
    return [buf[i].seq for i in range(len(buf))]


def test_a_new_filter_shows_the_newest_matches_first_then_fills_in_the_rest() -> None:
    session = _session(3000)
    feed = Feed(session, capacity=5000)
    feed.drain(10_000, now=0.0)
    flt = parse_display_filter("8080")
    full, _ = feed.filtered_window(flt)
    expected = _seqs(full)
    assert 100 < len(expected) < 3000
    feed.apply_filter(flt, want=20, budget=10.0, chunk=16)
    first = _seqs(feed.buffer)
    # at once: at least a screenful, and they are the newest matching rows
    assert len(first) >= 20 and first == expected[-len(first) :]
    assert len(first) < len(expected)
    assert feed.backfill is not None and feed.filling is not None
    done, total = feed.filling
    assert total == 3000 and 0 < done < total
    # new rows keep coming while the older ones are gone through
    base = session.window()
    new: list[int] = []
    steps = 0
    while feed.backfill is not None:
        found = feed.fill(budget=0.0, chunk=16)  # one chunk per step
        assert found <= 16
        before = len(feed.buffer)
        added, done = feed.flush()
        assert added == found and len(feed.buffer) == before + found
        assert done == (feed.backfill is None)
        steps += 1
        if steps % 5 == 0:
            r = base[steps % len(base)]
            rec = session.append(r.frame, r.segment, r.attribution)
            if flt(rec.segment, rec.attribution):
                new.append(rec.seq)
            feed.drain(100, now=2.0)
        assert _seqs(feed.buffer) == sorted(_seqs(feed.buffer))
    assert steps > 10
    assert feed.filling is None
    assert _seqs(feed.buffer) == expected + new
    assert feed.fill(budget=0.0) == 0 and feed.flush() == (0, False)


def test_filling_in_keeps_the_newest_rows_when_the_buffer_fills_up() -> None:
    session = _session(3000)
    feed = Feed(session, capacity=300)
    feed.drain(10_000, now=0.0)  # far behind: the newest 300
    flt = parse_display_filter("0-65535")  # every row
    feed.apply_filter(flt, want=10, budget=10.0, chunk=50)
    assert feed.backfill is not None and len(feed.buffer) == 50
    base = session.window()
    for r in base[:40]:  # new rows push the oldest out of both buffers meanwhile
        session.append(r.frame, r.segment, r.attribution)
    feed.drain(100, now=1.0)
    while feed.backfill is not None:
        feed.fill(budget=0.0, chunk=50)
        feed.flush()
    assert _seqs(feed.buffer) == _seqs(feed.all) == list(range(2740, 3040))


def test_no_filter_is_the_whole_window_at_once() -> None:
    session = _session(3000)
    feed = Feed(session, capacity=5000)
    feed.drain(10_000, now=0.0)
    feed.apply_filter(parse_display_filter("udp"), want=10, budget=10.0, chunk=16)
    feed.apply_filter(None, want=10, budget=0.0, chunk=16)
    assert feed.backfill is None and feed.filter is None
    assert feed.buffer is feed.all and _seqs(feed.buffer) == list(range(3000))
    # a filter nothing matches goes through the whole window, and says so meanwhile
    feed.apply_filter(parse_display_filter("match:none pid:1"), want=10, budget=0.0, chunk=100)
    assert len(feed.buffer) == 0 and feed.filling == (100, 3000)
    while feed.backfill is not None:
        feed.fill(budget=0.0, chunk=100)
        feed.flush()
    assert len(feed.buffer) == 0


def test_socket_view_groups_like_the_kernel() -> None:
    view = build_view(socket_table().entries)
    listeners = view.by_section(SECTION_LISTEN)
    assert [g.listener.local.port for g in listeners if g.listener] == [80, 6379, 8080]
    web = listeners[-1]
    kids = {(s.remote.port if s.remote else 0, s.state, bool(s.holders)) for s in web.rows}
    # accepted, still in the accept queue (no holder), TIME_WAIT
    assert kids == {(51000, "ESTABLISHED", True), (51002, "ESTABLISHED", False), (50990, "TIME_WAIT", False)}
    clients = view.by_section(SECTION_TCP)
    assert [g.process for g in clients] == ["curl", "firefox", "redis-cli", "wget"]
    udp = view.by_section(SECTION_UDP)
    assert {g.process for g in udp} == {HOSTILE, "dig"}
    # the redis child over ::1 sits under the dual-stack [::] listener
    assert len(listeners[1].rows) == 1


def test_socket_view_follows_the_display_filter() -> None:
    entries = socket_table().entries
    for text, ports in (("8080", {8080, 51000, 51002}), ("udp", {5353, 40000}), ("pid:6161", {51002})):
        flt = parse_display_filter(text)
        view = build_view(entries, flt)
        seen = {s.local.port for g in view.groups for s in g.rows}
        seen |= {g.listener.local.port for g in view.groups if g.listener and not g.dimmed}
        assert seen == ports, text
    assert not build_view(entries, parse_display_filter("match:none")).groups
    listener = next(e for e in entries if e.state == "LISTEN" and e.local.port == 8080)
    assert socket_passes(listener, parse_display_filter("match:listener"))


def test_socket_view_is_bounded() -> None:
    base = socket_table().entries[2]  # curl's client socket
    many = [replace(base, local=replace(base.local, port=20000 + i)) for i in range(5000)]
    view = build_view(many, max_rows_per_group=40, max_rows=100)
    assert sum(len(g.rows) for g in view.groups) <= 100
    assert view.groups[0].hidden == 5000 - 40
    assert len({socket_key(s) for s in many}) == 5000


def test_rows_and_details_are_literal() -> None:
    engine = make_engine()
    hostile = [
        r for r in engine.session.window() if r.attribution.receiver and "evil" in str(r.attribution.receiver)
    ]
    assert hostile
    for width in (240, 160, 80, 40):
        line = row_text(hostile[0], fit(width, Widths().grow(hostile[0]))).plain
        assert "\x1b" not in line
        assert "[bold red]evil[/]" in line or width < 100  # (narrower: the name is cut)
    text = detail_text(hostile[0], dissect(hostile[0].frame)).plain
    assert "[bold red]evil[/]\\x1b[31m[6666] fd 7" in text
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text  # the payload's escape, shown as text
    assert all(step.what in text for step in hostile[0].attribution.steps)


@pytest.mark.parametrize("linktype", [101, 1, 113, 276, 147])
def test_dissect_never_raises(linktype: int) -> None:
    frame = frames()[3]
    lines = dissect(frame._replace(linktype=linktype))
    assert lines
    if linktype == 101:
        assert "###[ IP ]###" in lines[0]
        assert any("###[ TCP ]###" in line for line in lines)
    for junk in (b"", b"\x45", b"\xff" * 7, bytes(range(256))):
        assert dissect(Frame(T0, junk, linktype))
