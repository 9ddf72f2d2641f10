"""Port sets and the TUI's display-filter language."""

from __future__ import annotations

import pytest

from conntui.filters import FilterError, PortSet, parse_display_filter, parse_ports
from conntui.model import Attribution, Endpoint, Holder, Match, Segment, SocketEntry


def seg(sport: int = 51234, dport: int = 8080, proto: str = "tcp", src: str = "127.0.0.1") -> Segment:
    return Segment(
        ts=1.0, iface="lo", proto=proto, family=4, src=src, sport=sport, dst="127.0.0.1", dport=dport
    )


def att(
    pid: int = 42, name: str = "nginx", match: Match = Match.ESTABLISHED, netns: int = 4026532246
) -> Attribution:
    sock = SocketEntry(
        "tcp",
        4,
        "ESTABLISHED",
        Endpoint("127.0.0.1", 8080),
        Endpoint("127.0.0.1", 51234),
        inode=7,
        holders=(Holder(pid, 5, name),),
        netns=netns,
    )
    return Attribution(match, receiver=sock)


@pytest.mark.parametrize(
    ("specs", "inside", "outside"),
    [
        (["8080"], [8080], [8081, 80]),
        (["80,443"], [80, 443], [8080]),
        (["8000-8100"], [8000, 8050, 8100], [7999, 8101]),
        (["22", "80,443", "9000-9001"], [22, 443, 9001], [23]),
        (["0", "65535"], [0, 65535], [1]),
    ],
)
def test_parse_ports(specs, inside, outside):
    ps = parse_ports(specs)
    for p in inside:
        assert p in ps
    for p in outside:
        assert p not in ps


@pytest.mark.parametrize("bad", ["", "80,", "x", "65536", "100-50", "1-2-3", "-5", "8080a"])
def test_bad_ports_are_one_line_errors(bad):
    with pytest.raises(FilterError) as e:
        parse_ports([bad])
    assert "\n" not in str(e.value)


def test_portset_matches_source_or_destination_and_bpf():
    ps = parse_ports(["8080", "9000-9010"])
    assert ps.matches(seg(dport=8080))
    assert ps.matches(seg(sport=9005, dport=1))
    assert not ps.matches(seg(sport=1, dport=2))
    assert ps.bpf() == "(tcp or udp) and (port 8080 or portrange 9000-9010)"
    assert str(ps) == "8080,9000-9010"
    assert PortSet().matches(seg()) and not PortSet()


@pytest.mark.parametrize(
    ("text", "keep", "drop"),
    [
        ("8080", (seg(), att()), (seg(dport=1), att())),
        ("port:8080", (seg(), att()), (seg(dport=1), att())),
        ("pid:42", (seg(), att()), (seg(), att(pid=43))),
        ("proc:NGI", (seg(), att()), (seg(), att(name="curl"))),
        ("match:none", (seg(), att(match=Match.NONE)), (seg(), att())),
        ("udp", (seg(proto="udp"), att()), (seg(), att())),
        ("host:10.0.0.1", (seg(src="10.0.0.1"), att()), (seg(), att())),
        ("8080 pid:42", (seg(), att()), (seg(), att(pid=1))),
        ("netns:4026532246", (seg(), att()), (seg(), att(netns=4026531840))),
        ("netns:net:[4026532246]", (seg(), att()), (seg(), att(netns=0))),
    ],
)
def test_display_filter_terms(text, keep, drop):
    f = parse_display_filter(text)
    assert f(*keep)
    assert not f(*drop)


def test_empty_display_filter_keeps_everything():
    f = parse_display_filter("  ")
    assert not f and f(seg(), att())


@pytest.mark.parametrize(
    "bad", ["pid:abc", "match:bogus", "color:red", "proto:icmp", "port:", "99999", "netns:web"]
)
def test_bad_display_filters(bad):
    with pytest.raises(FilterError):
        parse_display_filter(bad)
