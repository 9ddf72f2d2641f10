"""The README read cold: the Quick start says how to quit the TUI it starts, and the first
rows shown come with what ``kernel`` and ``-`` mean in them."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_quick_start_is_two_lines_and_the_next_sentence_says_how_to_quit() -> None:
    m = re.search(r"## Quick start\n\n```sh\n(.*?)\n```\n\n(.*?)\n\n", README, re.S)
    assert m, "no Quick start block"
    assert len(m.group(1).splitlines()) == 2
    assert "conntui" in m.group(1).splitlines()[0]
    first_sentences = m.group(2).replace("\n", " ")
    assert re.search(r"press `q` to quit", first_sentences), first_sentences


def test_kernel_and_dash_are_explained_where_rows_are_first_shown() -> None:
    first_rows = README.index(" → ")  # the first block of rows
    block_end = README.index("```", README.index("\n", first_rows))
    after = README[block_end : block_end + 900]
    assert "`kernel`" in after and "no process holds" in after
    assert "`-`" in after and "no local socket" in after


def test_the_ladder_the_readme_shows_is_generated_and_shows_what_it_says() -> None:
    """The README's ladder is scripts/screenshots.py's picture of the stale-client lab (its
    text beside it): two client lanes on one 4-tuple, the old fd's challenge ACK."""
    shots = Path(__file__).resolve().parents[2] / "screenshots"
    section = README[README.index("## The ladder of a connection") :]
    assert "](screenshots/ladder-stale-client.png)" in section
    assert (shots / "ladder-stale-client.png").stat().st_size > 10_000
    text = (shots / "ladder-stale-client.txt").read_text(encoding="utf-8").splitlines()
    assert "client-before[" in text[1] and "client-after[" in text[1]
    assert text[3].split()[:3] == ["connect()", "connect()", "listen()"]
    assert any("◀" in line and " A 0 challenge ACK " in line for line in text)
    svg = (shots / "ladder-stale-client.svg").read_text(encoding="utf-8")
    assert "A 0 challenge ACK" in svg and "client-after[" in svg
