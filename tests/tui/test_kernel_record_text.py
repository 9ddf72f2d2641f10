"""The kernel's verdict where people look: a mark on the row, a section in Details, and the
holder's process described by psutil (live captures only)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from conntui.model import Holder, KernelVerdict, Match
from conntui.tui.detail_text import detail_text
from conntui.tui.procinfo import process_line
from conntui.tui.row_text import Widths, fit, kernel_mark, row_text

from .scenario import make_engine


def _record():
    return next(r for r in make_engine().session.window() if r.attribution.receiver is not None)


def test_a_disagreement_and_a_drop_are_marked_on_the_row() -> None:
    rec = _record()
    assert kernel_mark(rec.attribution) == ""
    rec.attribution = replace(
        rec.attribution, kernel=KernelVerdict("delivered", "sock:inet_sock_set_state"), agrees=False
    )
    widths = Widths().grow(rec)
    assert str(rec.attribution.match) + "!" in row_text(rec, fit(160, widths)).plain
    rec.attribution = replace(
        rec.attribution, kernel=KernelVerdict("dropped", "skb:kfree_skb", "SOCKET_RCVBUFF"), agrees=True
    )
    assert kernel_mark(rec.attribution) == "✗"


def test_details_show_the_kernels_record_beside_the_prediction() -> None:
    rec = _record()
    rec.attribution = replace(
        rec.attribution,
        match=Match.ESTABLISHED,
        kernel=KernelVerdict("dropped", "skb:kfree_skb", "TCP_OLD_SEQUENCE", "ESTABLISHED"),
        agrees=False,
        notes=("conntui's table predicted time_wait (kernel); the kernel's record says otherwise",),
    )
    text = detail_text(rec, None).plain
    assert "The kernel's record" in text and "dropped (TCP_OLD_SEQUENCE)" in text
    assert "predicted otherwise" in text and "predicted time_wait" in text


def test_details_ask_psutil_only_about_a_live_capture() -> None:
    rec = _record()
    holder = rec.attribution.receiver.holders[0]  # type: ignore[union-attr]
    live = detail_text(rec, None, live=True).plain
    offline = detail_text(rec, None).plain
    assert "user " not in offline and "the process has exited" not in offline
    # the fixed scenario's pids are not this host's processes: a live view says what it finds
    about = process_line(holder)
    assert about in live


def test_process_line_names_the_running_process_and_refuses_a_changed_one() -> None:
    me = Holder(os.getpid(), 0, Path(f"/proc/{os.getpid()}/comm").read_text().strip())
    line = process_line(me)
    assert line.startswith("user ") and "started " in line and "cmd " in line and "parents " in line
    assert "now runs" in process_line(Holder(os.getpid(), 0, "not-this-program"))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_line(Holder(child.pid, 3, "python3")) == "the process has exited"
