"""The socket view's accept-queue history: one sample a second, full height = backlog + 1."""

from __future__ import annotations

from conntui.tui.widgets.socket_tree import SPARK, queue_sparkline


def test_queue_sparkline_is_scaled_to_the_queue_capacity() -> None:
    assert queue_sparkline([0, 0, 0], 8) == SPARK[0] * 3
    line = queue_sparkline([0, 4, 8], 8)
    assert line[0] == SPARK[0] and line[1] == SPARK[4] and line[2] == SPARK[8]
    # over capacity (the kernel lets backlog + 1 in) stays at full height
    assert queue_sparkline([9], 8) == SPARK[8]
    assert queue_sparkline([1], 0) == SPARK[8]  # backlog 0: a queue of one is full
