"""The ladder of a connection over the frozen session: lanes are the fds the scenario's
programs hold (and what the kernel holds), arrows the segments in capture order."""

from __future__ import annotations

import time
from dataclasses import replace

from conntui.tui.ladder import MAX_ARROWS, flow_key, ladder_for, ladder_lines
from conntui.tui.screens.ladder import LadderScreen

from .conftest import make_app
from .scenario import make_engine
from .test_layout import screen_lines, settle


def records():  # type: ignore[no-untyped-def]
    return list(make_engine().session.window())


def test_lanes_are_the_sockets_and_arrows_follow_capture_order() -> None:
    recs = records()
    ladder = ladder_for(recs, recs[0])  # curl → pyserver :8080
    assert [ln.label for ln in ladder.lanes] == [
        "curl[5151] fd 5",
        "pyserver[4242] fd 3",
        "pyserver[4242] fd 4",
    ]
    flow = [r for r in recs if flow_key(r.segment) == flow_key(recs[0].segment)]
    assert [a.seq for a in ladder.arrows] == [r.seq for r in flow]
    syn, synack, ack = ladder.arrows[:3]
    assert (syn.src, syn.dst, syn.what, syn.match) == (0, 1, "S 0", "listener")  # listen()
    assert (synack.src, synack.dst) == (1, 0)
    assert (ack.src, ack.dst, ack.match) == (0, 2, "established")  # the fd accept() returned
    lines = ladder_lines(ladder)
    assert "curl[5151]" in lines[1] and "pyserver[4242]" in lines[1] and "fd 5" in lines[2]
    assert "S 0" in lines[4] and "▶" in lines[4] and lines[4].endswith("listener")


def test_kernel_lanes_say_what_the_kernel_holds() -> None:
    recs = records()
    by_port = {r.segment.sport: r for r in recs}
    queued = ladder_for(recs, by_port[51002])
    assert [ln.label for ln in queued.lanes] == ["wget[6161] fd 3", "accept queue (no fd yet)"]
    closed = ladder_for(recs, by_port[51500])
    assert [ln.label for ln in closed.lanes] == ["- (no socket)", "- (no socket)"]
    assert [(a.what, a.match) for a in closed.arrows] == [("S 0", "none"), ("RA 0", "none")]
    # what later segments proved shows on the arrow: the kernel's RST for the SYN
    rst = ladder_lines(closed)[-1]
    assert rst.endswith("none  ⚠ the kernel's RST answering record #10: nothing listens on port 9999"), rst
    late = ladder_for(recs, by_port[50990])
    assert [ln.label for ln in late.lanes] == ["- (no socket)", "TIME_WAIT (kernel)"]


def test_a_hostile_name_in_a_lane_is_literal() -> None:
    recs = records()
    dig = next(r for r in recs if r.segment.sport == 40000)
    text = "\n".join(ladder_lines(ladder_for(recs, dig)))
    assert "[bold red]evil[/]\\x1b" in text and "\x1b" not in text and "\u202e" not in text


def test_a_long_flow_is_bounded_and_says_what_it_leaves_out() -> None:
    recs = records()
    data = recs[3]
    many = [replace(data, seq=i) for i in range(3 * MAX_ARROWS)]
    started = time.perf_counter()
    ladder = ladder_for(many, many[-1])
    lines = ladder_lines(ladder)
    took = time.perf_counter() - started
    assert len(ladder.arrows) == MAX_ARROWS and ladder.elided == 2 * MAX_ARROWS
    assert ladder.arrows[-1].seq == 3 * MAX_ARROWS - 1  # the newest are kept
    assert "first 10,000 segments of this flow are left out" in lines[1]
    assert took < 2.0, took


async def test_l_opens_the_ladder_of_the_selected_row_and_esc_closes_it() -> None:
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("l")  # the last row: curl's final ACK
        await settle(pilot)
        assert isinstance(app.screen, LadderScreen)
        text = "\n".join(screen_lines(app))
        assert "Ladder of tcp 127.0.0.1:51000 ⇄ 127.0.0.1:8080" in text
        assert "curl[5151]" in text and "pyserver[4242]" in text and "fd 5" in text and "fd 4" in text
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.main


async def test_w_saves_the_ladder_as_text_and_svg(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "decoy.txt").write_text("keep")
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("up", "up", "up", "up", "up", "up", "l")  # dig ↔ the hostile name (UDP)
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        await pilot.press("w")  # a second time: a second pair, nothing overwritten
        await settle(pilot)
    txt = sorted(tmp_path.glob("conntui-ladder-*.txt"))
    svg = sorted(tmp_path.glob("conntui-ladder-*.svg"))
    assert len(txt) == 2 and len(svg) == 2 and (tmp_path / "decoy.txt").read_text() == "keep"
    text = txt[0].read_text()
    assert text.startswith("udp 127.0.0.1:40000 ⇄ 127.0.0.1:5353") and "[bold red]evil[/]\\x1b" in text
    picture = svg[0].read_text()
    assert picture.startswith("<svg") and "dig[7070]" in picture and "\x1b" not in picture
