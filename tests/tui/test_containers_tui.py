"""The TUI names a holder's container: in the row, in Details, in the socket view; the
``ctr:`` filter keeps the rows of that container's processes; names shown literally."""

from __future__ import annotations

import dataclasses

from conntui.capture import ListSource
from conntui.engine import Engine, StaticTables
from conntui.model import Container, SocketTable
from conntui.session import Session
from conntui.tui.app import ConntuiApp
from conntui.tui.detail_text import detail_text

from .scenario import SERVER, fixed_clock, frames, socket_table
from .test_layout import screen_lines, settle
from .test_pilot import list_text, shown, type_filter

ID = "5f6dc9ff6ca2190b6be70dd62acb52e7cf7775e5fda71d7525b00b69da4624f4"
NAME = "[bold]web[/bold]"  # markup in a name is the name's own text
CTR = Container(ID, NAME, "podman")


def contained_table() -> SocketTable:
    """The scenario's table with pyserver (pid 4242, every fd) in a podman container."""
    table = socket_table()
    entries = [
        dataclasses.replace(
            e,
            holders=tuple(
                dataclasses.replace(h, container=CTR) if h.pid == SERVER.pid else h for h in e.holders
            ),
        )
        for e in table.entries
    ]
    return SocketTable(entries, taken_at=table.taken_at, local_addrs=table.local_addrs, ifnames=table.ifnames)


def make_app() -> ConntuiApp:
    engine = Engine(ListSource(frames(), "test frames"), StaticTables(contained_table()), Session())
    engine.run()
    return ConntuiApp(engine, iface="lo", clock=fixed_clock)


def server_rows(app: ConntuiApp) -> list[int]:
    """The rows whose sockets (sender, receiver, the listener a connection came through)
    the container's process holds, by the table this test built."""
    out = []
    for rec in app.engine.session.window():
        a = rec.attribution
        socks = [s for s in (a.sender, a.receiver, a.listener) if s is not None]
        if any(h.pid == SERVER.pid for s in socks for h in s.holders):
            out.append(rec.seq)
    return out


async def test_rows_details_and_filter_name_the_container() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        rows = "\n".join(list_text(app))
        assert f"curl[5151] fd 5 → pyserver[4242] fd 4 (ctr {NAME})" in rows
        text = "\n".join(screen_lines(app))  # the socket view too
        assert text.count(f"pyserver[4242] fd 4 (ctr {NAME})") > rows.count(
            f"pyserver[4242] fd 4 (ctr {NAME})"
        )
        assert "curl[5151] fd 5 (ctr" not in text  # a host process: no container
        expected = server_rows(app)
        assert 0 < len(expected) < len(shown(app))
        await type_filter(pilot, "ctr:WEB")
        assert shown(app) == expected
        await type_filter(pilot, f"ctr:{ID[:12]}")
        assert shown(app) == expected
        await type_filter(pilot, "ctr:nope")
        assert shown(app) == []


def test_details_say_everything_known_about_the_container() -> None:
    engine = Engine(ListSource(frames(), "test frames"), StaticTables(contained_table()), Session())
    engine.run()
    rec = next(
        r
        for r in engine.session.window()
        if r.attribution.receiver is not None
        and any(h.pid == SERVER.pid and h.fd == SERVER.fd for h in r.attribution.receiver.holders)
    )
    text = detail_text(rec, None).plain
    assert f"held by pyserver[4242] fd 4 (ctr {NAME})" in text
    assert f"in container {NAME} (podman, id {ID})" in text
