"""Pilot tests: the real app over the frozen scenario (``scenario.py``)."""

from __future__ import annotations

import os

from conntui.capfile.reader import read_capture
from conntui.filters import parse_display_filter
from conntui.model import Match
from conntui.tui.app import ConntuiApp
from conntui.tui.screens.export import ExportScreen
from conntui.tui.screens.help import HelpScreen
from conntui.tui.screens.main import MainScreen

from .conftest import make_app
from .scenario import HOSTILE, frames

SIZE = (160, 48)
N = len(frames())


def notes(app: ConntuiApp) -> list[str]:
    return [n.message for n in app._notifications]


def shown(app: ConntuiApp) -> list[int]:
    buf = app.feed.buffer
    return [buf[i].seq for i in range(len(buf))]


def list_text(app: ConntuiApp) -> list[str]:
    seg_list = app.main.segment_list
    return [seg_list.render_line(y).text for y in range(seg_list.scrollable_content_region.height)]


async def type_filter(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("slash")
    app = pilot.app
    app.main.filter_input.value = text
    await pilot.press("enter")
    await pilot.pause(2 * app.AFTER_FRAME)  # the socket view follows the list


def expected(app: ConntuiApp, text: str) -> list[int]:
    flt = parse_display_filter(text)
    return [r.seq for r in app.engine.session.window() if flt(r.segment, r.attribution)]


async def test_all_rows_shown_newest_selected() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert len(shown(app)) == N
        assert app.main.segment_list.cursor == N - 1
        assert app.main.segment_list.following
        assert isinstance(app.screen, MainScreen)


async def test_filter_narrows_rows() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        for text in ("8080", "pid:5151", "proc:curl", "match:none", "udp", "80,443 tcp"):
            await type_filter(pilot, text)
            rows = shown(app)
            assert rows == expected(app, text), text
            assert 0 < len(rows) < N, text
            assert app.display_filter is not None and app.display_filter.text == text
        await type_filter(pilot, "match:none")
        assert [app.feed.buffer[i].attribution.match for i in range(len(app.feed.buffer))] == [
            Match.NONE,
            Match.NONE,
        ]
        assert not app.main.filter_input.is_open
        # the socket view follows the filter: only the curl side for proc:curl
        await type_filter(pilot, "proc:curl")
        labels = [str(node.label) for node, _sock in app.main.socket_tree._socket_nodes.values()]
        assert labels and all("51000" in label for label in labels)


async def test_escape_clears_filter() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await type_filter(pilot, "match:none")
        assert len(shown(app)) == 2
        await pilot.press("escape")
        await pilot.pause()
        assert app.display_filter is None
        assert len(shown(app)) == N
        # Esc in the open filter line clears too
        await pilot.press("slash")
        await pilot.press("8", "0", "8", "0", "enter")
        await pilot.pause()
        assert len(shown(app)) == len(expected(app, "8080"))
        await pilot.press("slash", "escape")
        await pilot.pause()
        assert app.display_filter is None and len(shown(app)) == N


async def test_bad_filter_is_a_notification() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        for bad in ("pid:abc", "match:nonsense", "70000", "colour:red", "[red]x[/red]"):
            await type_filter(pilot, bad)
            assert app.is_running
            assert len(shown(app)) == N  # nothing changed
        messages = notes(app)
        assert any("pid" in m for m in messages)
        assert any("unknown match" in m for m in messages)
        assert any("[red]x[/red]" in m for m in messages)  # shown literally, not as markup
        assert app.main.filter_input.is_open  # left open to fix the typo


async def test_select_row_shows_pid_fd_and_steps() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("home")  # the first segment: curl's SYN to the listener
        await pilot.pause()
        rec = app.main.segment_list.selected_record
        assert rec is not None and rec.seq == 0
        assert not app.main.segment_list.following
        await app.workers.wait_for_complete()
        await pilot.pause()
        text = app.main.detail_pane.text.plain
        assert "listener" in text
        assert "pyserver[4242] fd 3" in text  # the receiver
        assert "curl[5151] fd 5" in text  # the sender
        for step in rec.attribution.steps:
            assert step.what in text
        assert "###[ TCP ]###" in text  # scapy's dissection, done lazily
        await pilot.press("down", "down")
        await pilot.pause()
        assert app.main.segment_list.selected_record.seq == 2  # type: ignore[union-attr]
        await pilot.press("enter")
        assert app.focused is app.main.detail_pane
        await pilot.press("tab")
        assert app.focused is app.main.segment_list
        await pilot.press("tab")
        assert app.focused is app.main.socket_tree
        await pilot.press("end")  # the tree has it too; back in the list it follows
        await pilot.press("tab", "tab", "end")
        assert app.main.segment_list.following


async def test_accept_queue_row_names_listener() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await type_filter(pilot, "match:accept_queue")
        await pilot.pause()
        text = app.main.detail_pane.text.plain
        assert "accept_queue" in text
        assert "held by no process" in text
        assert "pyserver[4242] fd 3" in text  # the listener whose queue holds it


async def test_export_all_reads_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    path = tmp_path / "out.pcapng"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)
        inp = app.screen.query_one("#export-path")
        assert inp.value == "conntui-20251125-194642.pcapng"  # type: ignore[attr-defined]
        inp.value = str(path)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert any(f"exported {N} packets to {path}" in m for m in notes(app))
    back = list(read_capture(str(path)))
    assert len(back) == N
    assert [f.data for f in back] == [f.data for f in frames()]


async def test_export_over_an_existing_file_asks_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conntui.tui.screens.confirm import ConfirmScreen

    app = make_app()
    path = tmp_path / "old.pcapng"
    path.write_bytes(b"precious")
    async with app.run_test(size=SIZE) as pilot:
        for answer in ("n", "y"):
            await pilot.press("w")
            await pilot.pause()
            app.screen.query_one("#export-path").value = str(path)  # type: ignore[attr-defined]
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press(answer)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, MainScreen)
            if answer == "n":
                assert path.read_bytes() == b"precious"
    assert len(list(read_capture(str(path)))) == N


async def test_export_only_filtered(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    path = tmp_path / "none.pcap"
    async with app.run_test(size=SIZE) as pilot:
        await type_filter(pilot, "match:none")
        await pilot.press("w")
        await pilot.pause()
        app.screen.query_one("#export-path").value = str(path)  # type: ignore[attr-defined]
        await pilot.click("#scope-filtered")
        await pilot.click("#export-ok")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("exported 2 packets" in m for m in notes(app))
    assert len(list(read_capture(str(path)))) == 2


async def test_export_error_is_a_notification(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        await pilot.pause()
        app.screen.query_one("#export-path").value = str(tmp_path / "missing" / "x.pcapng")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.is_running
        assert any("cannot write" in m for m in notes(app))
        # cancel leaves things as they were
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
    assert not os.path.exists(tmp_path / "missing")


async def test_help_opens_and_closes() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        await pilot.press("question_mark")
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_command_palette_offers_actions() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Export")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)


async def test_pause_stops_the_list_growing() -> None:
    app = make_app()
    extra = frames()[:3]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("space")
        assert app.paused
        for f in extra:
            app.engine.process(f)  # type: ignore[attr-defined]
        await pilot.pause(0.3)
        assert len(shown(app)) == N
        assert "PAUSED" in str(app.main.status_bar.render())
        await pilot.press("space")
        await pilot.pause(0.3)
        assert not app.paused
        assert len(shown(app)) == N + len(extra)


async def test_live_engine_started_by_the_app() -> None:
    from conntui.capture import ListSource
    from conntui.engine import Engine, StaticTables
    from conntui.session import Session

    from .scenario import socket_table

    engine = Engine(ListSource(frames()), StaticTables(socket_table()), Session())
    app = make_app(engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(50):
            await pilot.pause(0.05)
            if len(shown(app)) == N:
                break
        assert len(shown(app)) == N
        await pilot.press("q")
    assert not engine.running


async def test_quit_is_clean() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert app._engine_stopped
    assert not app.engine.running


async def test_hostile_process_name_renders_literally() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        lines = list_text(app)
        hostile_rows = [line for line in lines if "evil" in line]
        assert hostile_rows
        for line in hostile_rows:
            assert "[bold red]evil[/]\\x" in line  # brackets kept, ESC as a visible escape
            assert "\x1b" not in line
        await type_filter(pilot, "proc:evil")
        await pilot.press("home")
        await app.workers.wait_for_complete()
        await pilot.pause()
        detail = app.main.detail_pane.text.plain
        assert "[bold red]evil[/]\\x1b[31m[6666] fd 7" in detail
        assert "\x1b" not in detail and "\u202e" not in detail
        tree = [str(node.label) for node in app.main.socket_tree._group_nodes.values()]
        assert any("[bold red]evil[/]\\x1b[31m" in label for label in tree)
        status_and_tree = "".join(tree)
        assert "\x1b" not in status_and_tree
    assert HOSTILE.startswith("[bold red]")


async def test_narrow_terminal() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.main.has_class("-narrow")
        assert not app.main.socket_tree.display or app.main.socket_tree.has_class("-hidden-when-narrow")
        await pilot.press("tab")
        await pilot.pause()
        assert app.focused is app.main.socket_tree
        assert not app.main.socket_tree.has_class("-hidden-when-narrow")
        assert app.main.detail_pane.has_class("-hidden-when-narrow")
        await pilot.press("tab")
        assert app.focused is app.main.detail_pane
        await pilot.press("w")
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)
        await pilot.press("escape")
        await pilot.press("question_mark")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.resize_terminal(60, 15)
        await pilot.pause()
        await pilot.resize_terminal(200, 50)
        await pilot.pause()
        assert not app.main.has_class("-narrow")
        assert app.is_running


async def test_capture_error_is_shown_not_raised() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.engine.error = "interface lo went away: [red]No such device[/red]"
        for _ in range(50):  # the next ticks show it; a loaded machine may take a while
            await pilot.pause(0.1)
            if "went away" in str(app.main.status_bar.render()) and any("went away" in m for m in notes(app)):
                break
        status = str(app.main.status_bar.render())
        assert "interface lo went away: [red]No such device[/red]" in status
        assert any("went away" in m for m in notes(app))
        assert app.is_running


async def test_saved_session_socket_view_comes_from_attributions() -> None:
    from conntui.engine import StaticTables

    engine = make_engine_no_table()
    assert not engine.tables.current().entries and isinstance(engine.tables, StaticTables)
    app = make_app(engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        tree = app.main.socket_tree
        groups = [str(node.label) for node in tree._group_nodes.values()]
        assert any(":8080" in g and "pyserver[4242] fd 3" in g for g in groups)
        assert any(g.startswith("curl[5151]") for g in groups)


def make_engine_no_table():  # type: ignore[no-untyped-def]
    """A session read back from a file: attributions, but no live socket table (-r)."""
    from conntui.engine import StaticTables

    from .scenario import make_engine

    engine = make_engine()
    engine.tables = StaticTables()
    return engine


async def test_late_match_replaces_a_row_in_place() -> None:
    from dataclasses import replace

    app = make_app(socket_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await type_filter(pilot, "match:none")
        await pilot.press("home")
        await pilot.pause()
        rec = app.main.segment_list.selected_record
        assert rec is not None
        late = replace(rec.attribution, match=Match.UNKNOWN, explain="late: [b]re-attributed[/b]")
        assert app.engine.session.reattribute(rec.seq, late)
        await pilot.pause(0.4)
        assert any("unknown" in line for line in list_text(app))
        assert "late: [b]re-attributed[/b]" in app.main.detail_pane.text.plain
        # and on screen: the list was redrawn, not only able to draw the new row
        region = app.main.segment_list.region
        screen = app.screen._compositor.render_strips()
        assert any("unknown" in strip.text for strip in screen[region.y : region.bottom])


async def test_following_list_keeps_details_on_the_newest_row() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for f in frames()[:4]:
            app.engine.process(f)  # type: ignore[attr-defined]
            await pilot.pause(0.12)
        await pilot.pause(0.7)
        newest = app.engine.session.last_seq
        assert app.main.segment_list.selected_record.seq == newest  # type: ignore[union-attr]
        assert app.main.detail_pane.record is not None and app.main.detail_pane.record.seq == newest


async def test_space_pauses_from_every_pane() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        for _pane in range(3):
            await pilot.press("space")
            assert app.paused
            await pilot.press("space")
            assert not app.paused
            await pilot.press("tab")


def many_rows_app(copies: int = 120) -> ConntuiApp:
    """The scenario's frames many times over (a window too big to filter in one go). The
    filter's slices and the ticks that show what they found are driven by hand."""
    from .scenario import make_engine

    app = make_app(engine=make_engine(extra=frames() * copies), tick_interval=3600.0)
    app.KEY_FIRST = 0.0  # the test calls _fill and _tick right after keys: no waiting
    app.FILL_CHUNK = 64
    app.FILL_SLICE = 0.0  # one chunk per slice
    app.FILL_EVERY = 3600.0  # no timer slices: the test calls _fill
    return app


async def fill_all(pilot) -> int:  # type: ignore[no-untyped-def]
    """Slices and ticks until the filter has gone through the window; how many slices."""
    app = pilot.app
    steps = 0
    while app.feed.backfill is not None:
        before = len(app.feed.buffer)
        app._fill()
        assert len(app.feed.buffer) == before  # found rows wait for the tick
        app._tick()
        steps += 1
        if steps % 10 == 0:
            await pilot.pause()
    await pilot.pause()
    return steps


async def test_a_filter_shows_the_newest_matches_at_once_and_fills_in_the_rest() -> None:
    app = many_rows_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        total = len(app.engine.session)
        assert len(shown(app)) == total
        await type_filter(pilot, "8080")
        want = expected(app, "8080")
        first = shown(app)
        # the first frame: a screenful of the newest matching rows, the rest still to come
        assert app.feed.backfill is not None
        assert len(first) >= app.main.segment_list.size.height and first == want[-len(first) :]
        lines = list_text(app)
        assert sum(":8080" in line for line in lines[1:]) >= len(lines) - 2
        status = str(app.main.status_bar.render())
        assert "filtering…" in status and f"of {total:,}" in status
        assert app.main.segment_list.following
        assert app.main.segment_list.selected_record.seq == want[-1]  # type: ignore[union-attr]
        steps = await fill_all(pilot)
        assert steps > 5
        assert shown(app) == want  # the same as filtering the whole window at once
        assert "filtering" not in str(app.main.status_bar.render())
        assert app.main.segment_list.following
        assert app.main.segment_list.selected_record.seq == want[-1]  # type: ignore[union-attr]
        assert app.main.segment_list.scroll_y == app.main.segment_list.max_scroll_y
        assert app._fill_timer is None


async def test_filling_in_keeps_the_row_a_person_is_on() -> None:
    app = many_rows_app()
    async with app.run_test(size=SIZE) as pilot:
        await type_filter(pilot, "tcp")
        await pilot.press("up", "up", "up")
        seg_list = app.main.segment_list
        rec = seg_list.selected_record
        assert rec is not None and not seg_list.following
        top = seg_list.scroll_y
        offset = seg_list.cursor - top
        await fill_all(pilot)
        assert shown(app) == expected(app, "tcp")
        assert seg_list.selected_record is rec  # the same row, still where it was on screen
        assert seg_list.cursor - seg_list.scroll_y == offset
        assert not seg_list.following


async def test_a_filter_goes_back_to_an_old_selected_row_once_it_gets_there() -> None:
    app = many_rows_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("home", *["down"] * 5)  # an old row (seq 5), far from the newest
        await type_filter(pilot, "udp")
        assert app.feed.backfill is not None
        await fill_all(pilot)
        want = expected(app, "udp")
        assert shown(app) == want
        # the nearest matching row at or before the one selected (none: the first)
        rec = app.main.segment_list.selected_record
        assert rec is not None and rec.seq == max([s for s in want if s <= 5] or [want[0]])


async def test_clearing_a_filter_half_way_shows_everything_at_once() -> None:
    app = many_rows_app()
    async with app.run_test(size=SIZE) as pilot:
        await type_filter(pilot, "proc:curl")
        assert app.feed.backfill is not None
        await pilot.press("escape")
        await pilot.pause()
        assert app.feed.backfill is None and app.display_filter is None
        assert shown(app) == [r.seq for r in app.engine.session.window()]
        await fill_all(pilot)  # a slice after the clear is a no-op
        assert len(shown(app)) == len(app.engine.session)


async def test_the_list_holds_still_under_the_help_and_catches_up_after() -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        for f in frames()[:3]:
            app.engine.process(f)  # type: ignore[attr-defined]
        await pilot.pause(0.3)
        assert len(shown(app)) == N  # nothing repaints behind the help
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert len(shown(app)) == N + 3
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen is help_screen  # composed once, shown again


async def test_footer_is_not_rebuilt_when_focus_moves() -> None:
    from conntui.tui.widgets.keys_footer import KeysFooter

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        footer = app.main.query_one(KeysFooter)

        def shown_keys() -> list[str]:
            return [str(k.render()).strip() for k in footer.children if k.display]

        keys = list(footer.children)
        first = shown_keys()
        assert keys and any("Filter" in k for k in first)
        # the list and the detail pane offer the same keys: moving between them keeps them
        for key in ("enter", "tab", "enter", "tab"):
            await pilot.press(key)
            await pilot.pause()
        assert app.focused is app.main.segment_list
        assert list(footer.children) == keys
        assert shown_keys() == first
        # the socket tree offers other keys (Enter folds a node there): those are shown,
        # by the same key widgets (one hidden), not by new ones
        await pilot.press("tab")
        await pilot.pause()
        assert app.focused is app.main.socket_tree
        assert shown_keys() != first
        assert not any("Details" in k for k in shown_keys())
        assert shown_keys()[0] == "space Pause"
        assert list(footer.children) == keys
        # and back: the same keys as before, in the same widgets
        await pilot.press("shift+tab")
        await pilot.pause()
        assert shown_keys() == first
        assert list(footer.children) == keys
        # the filter line takes most keys: three show, and all come back after
        await pilot.press("slash")
        await pilot.pause()
        assert len(shown_keys()) == 3
        await pilot.press("escape")
        await pilot.pause()
        assert shown_keys() == first
        assert list(footer.children) == keys


async def test_the_list_scrollbar_is_what_a_full_repaint_would_draw() -> None:
    """The list repaints its scrollbar only when the thumb moves (widgets/scrolling.py):
    while it grows, follows, scrolls and jumps, the bar on screen stays what a repaint of
    it from scratch draws."""
    from .scenario import make_engine

    app = make_app(engine=make_engine(extra=frames() * 60), tick_interval=3600.0, drain_limit=37)
    app.KEY_FIRST = 0.0
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        seg = app.main.segment_list

        def bar_on_screen() -> list[object]:
            region = seg.vertical_scrollbar.region
            lines = app.screen._compositor.render_strips()
            return [list(line.crop(region.x, region.right)) for line in lines[region.y : region.bottom]]

        async def check() -> None:
            shown = bar_on_screen()
            seg.vertical_scrollbar.refresh()
            await pilot.pause()
            assert bar_on_screen() == shown

        for _ in range(25):  # the list grows by 37 rows a tick, following
            app._tick()
            await pilot.pause()
            await check()
        assert seg.show_vertical_scrollbar and len(app.feed.buffer) > 500
        for key in ("up", "pageup", "pageup", "home", "pagedown", "down", "end"):
            await pilot.press(key)
            await pilot.pause()
            await check()
        for _ in range(5):  # growing again, while not following
            await pilot.press("up")
            app._tick()
            await pilot.pause()
            await check()


async def test_a_key_press_goes_before_the_next_tick() -> None:
    """The drain tick that falls due just after a key waits ``KEY_FIRST`` (once), so the
    frame showing the key's effect does not wait for it; then it runs by itself."""
    app = make_app(tick_interval=3600.0)
    app.KEY_FIRST = 0.5
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for f in frames()[:3]:
            app.engine.process(f)  # type: ignore[attr-defined]
        await pilot.press("up")
        app._tick()
        assert len(shown(app)) == N  # waits
        await pilot.pause(0.7)
        assert len(shown(app)) == N + 3  # the deferred tick ran
        # and a tick is never put off twice in a row (keys held down)
        for f in frames()[:2]:
            app.engine.process(f)  # type: ignore[attr-defined]
        await pilot.press("up")
        app._tick()
        app._tick()
        assert len(shown(app)) == N + 5


async def test_cursor_shows_on_a_tinted_row() -> None:
    # Rows with no socket (none) are tinted red; the cursor's background must still win there,
    # past the match cell (which keeps its own colours).
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await type_filter(pilot, "match:none")
        seg_list = app.main.segment_list
        seg_list.focus()
        await pilot.pause()
        cursor_bg = seg_list.get_component_rich_style("segment-list--cursor").bgcolor
        lines = {y: seg_list.render_line(y) for y in range(1, 3)}  # under the header: the two rows
        rows = {y: strip for y, strip in lines.items() if strip.text.strip()}
        assert len(rows) == 2
        cursor_y = 1 + seg_list.cursor - int(seg_list.scroll_y)

        def first_bg(strip) -> object:  # type: ignore[no-untyped-def]
            return next(seg.style.bgcolor for seg in strip if seg.text.strip() and seg.style is not None)

        assert first_bg(rows[cursor_y]) == cursor_bg
        other = next(y for y in rows if y != cursor_y)
        assert first_bg(rows[other]) != cursor_bg  # the other none row keeps its tint


async def test_a_tick_after_the_screens_are_gone_does_nothing() -> None:
    """A tick deferred by a key (``_after_key``) can fire while the app exits, after its
    screens are gone: it must not raise (it once failed a test under load)."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("space")
    assert app._screens_gone() and app._covered()
    app._tick()  # no ScreenStackError


async def test_the_kernel_tracers_state_is_in_the_status_bar() -> None:
    """attaching → attached → died (with its one-line reason, told once as a notification);
    the capture and the app go on."""
    from conntui.tracer import SocketTracer

    tracer = SocketTracer(clock_offset=0.0, full_names=False)  # no bpftrace: driven by hand
    app = make_app()
    app.engine.tracer = tracer

    async def status_shows(text: str) -> str:
        for _ in range(50):  # the next ticks show it; a loaded machine may take a while
            await pilot.pause(0.1)
            status = str(app.main.status_bar.render())
            if text in status:
                return status
        return str(app.main.status_bar.render())

    async with app.run_test(size=SIZE) as pilot:
        assert "kernel tracer attaching" in await status_shows("attaching")
        tracer.ready.set()
        assert "kernel tracer attached" in await status_shows("attached")
        tracer.why_not = "bpftrace exited (status 1): ERROR: [x] lost"  # outside text: literal
        status = await status_shows("died")
        assert "kernel tracer died: bpftrace exited (status 1): ERROR: [x] lost" in status
        told = [m for m in notes(app) if "tracer stopped" in m]
        assert len(told) == 1 and "[x]" in told[0] and "capture goes on" in told[0]
        await pilot.pause(0.3)
        assert len([m for m in notes(app) if "tracer stopped" in m]) == 1  # once
        assert app.is_running


async def test_a_kernel_tracer_that_could_not_start_says_why() -> None:
    app = make_app()
    app.engine.tracer_unavailable = "bpftrace is not installed"
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(50):
            await pilot.pause(0.1)
            if "failed" in str(app.main.status_bar.render()):
                break
        assert "kernel tracer failed: bpftrace is not installed" in str(app.main.status_bar.render())
        assert any("could not start: bpftrace is not installed" in m for m in notes(app))


def test_the_tracer_states_its_own_state() -> None:
    from conntui.tracer import SocketTracer

    t = SocketTracer(clock_offset=0.0, full_names=False)
    assert t.state() == ("attaching", "")
    t.why_not = "bpftrace did not attach within 30 s"
    assert t.state() == ("failed", "bpftrace did not attach within 30 s")
    t.ready.set()
    t.why_not = "bpftrace exited (status 255)\nsecond line"
    assert t.state() == ("died", "bpftrace exited (status 255)")
