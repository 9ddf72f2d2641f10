"""``conntui.gcpolicy``: the collector's schedule while the TUI and the capture loop run.

(Here because the TUI's responsiveness is what it is tuned for; it imports no Textual.)
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from conntui import gcpolicy
from conntui.gcpolicy import GcPolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A reference cycle nothing else holds: only a collection frees it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    assert gcpolicy._active == 0 and gcpolicy._leads == 0, "a policy was left running"
    gc.unfreeze()
    if was:
        gc.enable()


def test_a_running_policy_collects_young_garbage_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpolicy, "YOUNG_EVERY", 0.0)
    was = gc.isenabled()
    policy = GcPolicy()
    policy.tick()
    assert not gc.isenabled()  # no collection at an unpredictable moment
    ref = cycle()
    assert ref() is not None
    policy.tick()
    assert ref() is None  # the tick's young collection freed it
    policy.stop()
    assert gc.isenabled() == was
    assert gc.get_freeze_count() == 0


def test_survivors_are_frozen_and_a_full_collection_frees_frozen_garbage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gcpolicy, "YOUNG_EVERY", 0.0)
    policy = GcPolicy()
    policy.tick()
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    policy.tick()  # alive: frozen
    assert gc.get_freeze_count() > 0
    del a, b
    policy.tick()
    assert ref() is not None  # frozen: young collections do not see it
    monkeypatch.setattr(gcpolicy, "FULL_MAX_EVERY", 0.0)
    policy.tick()
    assert ref() is None  # the full collection did
    policy.stop()


def test_the_lead_collects_and_the_others_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpolicy, "YOUNG_EVERY", 0.0)
    monkeypatch.setattr(gcpolicy, "LEAD_GRACE", 3600.0)
    lead, other = GcPolicy(lead=True), GcPolicy()
    lead.tick()
    other.tick()
    ref = cycle()
    other.tick()
    assert ref() is not None  # the capture loop leaves it to the UI
    lead.tick()
    assert ref() is None
    lead.stop()
    assert not gc.isenabled()  # the capture loop's policy still runs
    ref = cycle()
    other.tick()
    assert ref() is None  # no lead any more: it collects itself
    other.stop()


def test_a_disabled_policy_does_nothing() -> None:
    was = gc.isenabled()
    policy = GcPolicy(lead=True)
    policy.enabled = False
    policy.tick()
    assert gc.isenabled() == was
    assert gcpolicy._active == 0
    policy.stop()


def test_a_full_collection_waits_for_the_process_to_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpolicy, "YOUNG_EVERY", 0.0)
    monkeypatch.setattr(gcpolicy, "FULL_MIN_EVERY", 0.0)
    size = [100 << 20]
    monkeypatch.setattr(gcpolicy, "resident", lambda: size[0])
    policy = GcPolicy()
    policy.tick()
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    policy.tick()  # warmed up at 100 MB; the pair is frozen
    del a, b
    size[0] = 150 << 20  # the window filling up, say: not enough to scan everything
    policy.tick()
    assert ref() is not None
    size[0] = 200 << 20  # more than a quarter and FULL_SLACK over 100 MB
    policy.tick()
    assert ref() is None
    policy.stop()


def test_paused_turns_the_schedule_off_for_the_block_only() -> None:
    gc.enable()
    with gcpolicy.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_policy_started_in_a_paused_block_takes_the_collector_over_as_it_was() -> None:
    gc.enable()
    policy = GcPolicy()
    with gcpolicy.paused():
        policy.tick()  # the capture loop starts while the first socket table is made
    assert not gc.isenabled(), "the block's end must not turn the schedule on under a policy"
    policy.stop()
    assert gc.isenabled(), "the collector was on before the block: on again when the policy stops"


def test_paused_under_a_running_policy_leaves_it_alone() -> None:
    gc.enable()
    policy = GcPolicy()
    policy.tick()
    with gcpolicy.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    policy.stop()
    assert gc.isenabled()


def test_paused_when_the_collector_is_off_leaves_it_off() -> None:
    gc.disable()
    with gcpolicy.paused():
        pass
    assert not gc.isenabled()
