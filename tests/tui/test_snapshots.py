"""SVG snapshots (pytest-textual-snapshot) of the app over the frozen scenario.

Regenerate with ``pytest tests/tui --snapshot-update`` and look at the SVGs (or the
report pytest writes on a mismatch) before committing them.
"""

from __future__ import annotations

from textual.pilot import Pilot

from .conftest import make_app

SIZE = (160, 48)


async def settle(pilot: Pilot[None]) -> None:
    """Let the dissection worker finish so the detail pane is complete."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_main_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle)


def test_filter_applied(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press("slash", *"8080", "enter", "home")
        await pilot.pause(2 * pilot.app.AFTER_FRAME)  # type: ignore[attr-defined]  # the socket view follows
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_filter_being_typed(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press("slash", *"proc:curl")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_export_dialog(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("w")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_help(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_narrow_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=settle)


def test_narrow_80x24_sockets(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press("tab")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_tiny_40x12(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(40, 12), run_before=settle)


def test_tiny_40x12_details(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=(40, 12), run_before=run_before)


def test_wide_240x70(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(), terminal_size=(240, 70), run_before=settle)


def test_lab_note_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """conntui lab: the scenario's title stays on screen; n opens what to watch."""
    from conntui.lab.scenarios.accept_queue import NARRATIVE

    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await settle(pilot)

    assert snap_compare(make_app(note=NARRATIVE), terminal_size=(80, 24), run_before=run_before)


def test_ladder_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """l: the selected connection as a ladder (curl's, the last row)."""

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_sockets_of_two_namespaces(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """The socket view with a container's namespace beside conntui's own, filtered to port
    8080: one level per namespace, the container's :8080 listener apart from the host's."""
    from .test_socket_netns import two_namespace_app

    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press("slash", *"8080", "enter", "tab")
        await pilot.pause(2 * pilot.app.AFTER_FRAME)  # type: ignore[attr-defined]  # the socket view follows
        await settle(pilot)

    assert snap_compare(two_namespace_app(), terminal_size=SIZE, run_before=run_before)
