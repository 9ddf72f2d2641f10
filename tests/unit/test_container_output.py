"""A holder's container in every output: --json, --headless, pcapng comments (and back
with ``attribution_from_comment``), the ``ctr:`` filter; container names shown literally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conntui.capfile.comments import attribution_from_comment, comment_text
from conntui.capfile.reader import read_capture
from conntui.capfile.writers import open_writer
from conntui.filters import FilterError, parse_display_filter
from conntui.jsonout import dict_to_attribution, json_line, record_to_dict, text_line
from conntui.model import Attribution, Container, Endpoint, Frame, Holder, Match, Segment, SocketEntry

ID = "5f6dc9ff6ca2190b6be70dd62acb52e7cf7775e5fda71d7525b00b69da4624f4"
WEB = Container(ID, "web", "podman")
HOSTILE = Container(ID, "[bold]web[/bold]\x1b[31m\u202e", "podman")
POD = "1b2c3d4e-0000-4111-8222-123456789abc"


def seg() -> Segment:
    return Segment(1.7e9, "lo", "tcp", 4, "127.0.0.1", 40000, "127.0.0.1", 8080, "PA", 5)


def att(container: Container | None, former: Container | None = None) -> Attribution:
    server = SocketEntry(
        "tcp",
        4,
        "ESTABLISHED",
        Endpoint("127.0.0.1", 8080),
        Endpoint("127.0.0.1", 40000),
        inode=7,
        holders=(Holder(1234, 3, "httpd", container),),
    )
    client = SocketEntry(
        "tcp",
        4,
        "ESTABLISHED",
        Endpoint("127.0.0.1", 40000),
        Endpoint("127.0.0.1", 8080),
        inode=8,
        holders=(Holder(99, 5, "curl"),),
        former_holders=(Holder(98, 5, "sh", former),) if former is not None else (),
    )
    return Attribution(Match.ESTABLISHED, receiver=server, sender=client, explain="4-tuple hit")


def test_json_has_the_container_on_each_holder() -> None:
    d = json.loads(json_line(seg(), att(Container(ID, "web", "cri-o", POD))))
    assert d["receiver"]["holders"] == [
        {
            "pid": 1234,
            "process": "httpd",
            "fd": 3,
            "container": {"id": ID, "name": "web", "runtime": "cri-o", "pod": POD},
        }
    ]
    assert d["sender"]["holders"] == [{"pid": 99, "process": "curl", "fd": 5, "container": None}]


def test_json_unknown_name_and_runtime_are_null() -> None:
    d = record_to_dict(seg(), att(Container(ID)))
    assert d["receiver"]["holders"][0]["container"] == {"id": ID, "name": None, "runtime": None, "pod": None}


@pytest.mark.parametrize("c", [WEB, Container(ID), Container("", pod=POD), HOSTILE])
def test_json_round_trip(c: Container) -> None:
    a = att(c, former=c)
    assert dict_to_attribution(json.loads(json_line(seg(), a))) == a


@pytest.mark.parametrize("bad", ["web", 7, [], {}, {"id": 5}, None])
def test_json_a_bad_container_reads_as_none(bad: object) -> None:
    d = record_to_dict(seg(), att(WEB))
    d["receiver"]["holders"][0]["container"] = bad
    assert dict_to_attribution(d).receiver.holders[0].container is None  # type: ignore[union-attr]


def test_headless_line_names_the_container() -> None:
    line = text_line(seg(), att(WEB))
    assert "curl[99] fd 5 → httpd[1234] fd 3 (ctr web) (established)" in line
    assert "(ctr" not in text_line(seg(), att(None))
    assert "httpd[1234] fd 3 (ctr 5f6dc9ff6ca2) (established)" in text_line(seg(), att(Container(ID)))


def test_headless_line_shows_a_hostile_name_literally() -> None:
    line = text_line(seg(), att(HOSTILE))
    assert "(ctr [bold]web[/bold]\\x1b[31m\\u202e)" in line
    assert "\x1b" not in line and "\u202e" not in line


def test_pcapng_comment_carries_the_container_and_reads_back() -> None:
    a = att(WEB)
    text = comment_text(a)
    human, js = text.split("\n")
    assert human.startswith("conntui: curl[99] fd 5 → httpd[1234] fd 3 (ctr web) (established)")
    body = json.loads(js.removeprefix("conntui-json: "))
    assert body["receiver"]["holders"][0]["container"] == {
        "id": ID,
        "name": "web",
        "runtime": "podman",
        "pod": None,
    }
    assert "container" not in body["sender"]["holders"][0]  # compact: no key for no container
    assert attribution_from_comment(text) == a
    hostile = att(HOSTILE)
    text = comment_text(hostile)
    assert "\x1b" not in text.split("\n")[0] and "[bold]web[/bold]" in text.split("\n")[0]
    assert attribution_from_comment(text) == hostile


def test_pcapng_file_round_trip(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, TCP

    data = bytes(IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=40000, dport=8080, flags="PA") / b"hello")
    frame = Frame(1.7e9, data, 101, "lo", 1, 0, 0x0800, len(data))
    a, b = att(WEB), att(None)
    path = tmp_path / "c.pcapng"
    with open_writer(path) as w:
        w.write(frame, None, a)
        w.write(frame, None, a)  # the second one refers back to the first's JSON
        w.write(frame, None, b)
    got = [attribution_from_comment(f.comment) for f in read_capture(path)]
    assert got == [a, a, b]


def test_ctr_filter() -> None:
    s = seg()
    for text in ("ctr:web", "ctr:WE", "container:eb", f"ctr:{ID[:12]}", f"ctr:{ID}"):
        assert parse_display_filter(text)(s, att(WEB)), text
        assert not parse_display_filter(text)(s, att(None)), text
    assert not parse_display_filter("ctr:db")(s, att(WEB))
    assert not parse_display_filter(f"ctr:{ID[1:13]}")(s, att(WEB))  # an id matches from its start
    assert parse_display_filter("ctr:[bold]")(s, att(HOSTILE))  # brackets are plain text
    assert parse_display_filter("ctr:5f6d")(s, att(Container(ID)))  # no name: by id
    assert parse_display_filter("ctr:web")(s, att(None, former=WEB))  # a former holder
    with pytest.raises(FilterError, match="nothing after ctr:"):
        parse_display_filter("ctr:")
