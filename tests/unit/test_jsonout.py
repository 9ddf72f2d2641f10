"""The JSON contract of issue 2, its inverse, the headless text line and terminal safety."""

from __future__ import annotations

import json
import re

import pytest

from conntui.jsonout import (
    attribution_to_dict,
    dict_to_attribution,
    dict_to_socket,
    json_line,
    parse_endpoint,
    record_to_dict,
    safe_text,
    socket_to_dict,
    text_line,
)
from conntui.model import (
    PACKET_HOST,
    PACKET_OUTGOING,
    Attribution,
    Endpoint,
    Holder,
    Lookup,
    Match,
    Segment,
    SocketEntry,
)

CONTRACT = {
    "ts": float,
    "iface": str,
    "proto": str,
    "family": int,
    "src": str,
    "sport": int,
    "dst": str,
    "dport": int,
    "flags": str,
    "payload_len": int,
    "match": str,
    "explain": str,
}
HOSTILE = [
    "[bold red]x[/]",
    "\x1b]0;pwn\x07",
    "\x1b[31mred",
    "evil\u202etxt.exe",
    "two\nlines",
    "del\x7f",
    "csi\x9b31m",
    "\u2066iso\u2069",
    "undecodable\udcff",
]

LISTENER = SocketEntry(
    "tcp", 4, "LISTEN", Endpoint("0.0.0.0", 8080), None, inode=500, holders=(Holder(43, 4, "python3"),)
)
SERVER = SocketEntry(
    "tcp",
    4,
    "ESTABLISHED",
    Endpoint("127.0.0.1", 8080),
    Endpoint("127.0.0.1", 51234),
    inode=501,
    holders=(Holder(43, 7, "python3"), Holder(44, 7, "python3")),
    cookie=77,
    first_seen=1764100000.5,
)
CLIENT = SocketEntry(
    "tcp",
    4,
    "ESTABLISHED",
    Endpoint("127.0.0.1", 51234),
    Endpoint("127.0.0.1", 8080),
    inode=502,
    holders=(Holder(42, 3, "curl"),),
)
TIME_WAIT = SocketEntry(
    "tcp",
    6,
    "TIME_WAIT",
    Endpoint("::ffff:127.0.0.1", 8080),
    Endpoint("::ffff:127.0.0.1", 40000),
    former_holders=(Holder(43, 9, "python3"),),
)
UDP_SERVER = SocketEntry(
    "udp",
    6,
    "UNCONN",
    Endpoint("::", 5353),
    None,
    inode=600,
    holders=(Holder(10, 5, "dnsd"),),
    v6only=True,
    rx_queue=3,
    bound_ifindex=2,
    uid=1000,
)


def tcp_seg(**kw: object) -> Segment:
    base: dict[str, object] = dict(
        ts=1764100000.123456,
        iface="lo",
        proto="tcp",
        family=4,
        src="127.0.0.1",
        sport=51234,
        dst="127.0.0.1",
        dport=8080,
        flags="PA",
        payload_len=5,
        seq=1000,
        ack=2000,
        pkttype=PACKET_HOST,
    )
    base.update(kw)
    return Segment(**base)  # type: ignore[arg-type]


def udp_seg() -> Segment:
    return Segment(1764100001.5, "eth0", "udp", 6, "fe80::1", 40000, "ff02::fb", 5353, payload_len=31)


def established() -> Attribution:
    return Attribution(
        Match.ESTABLISHED,
        receiver=SERVER,
        sender=CLIENT,
        explain="4-tuple hit: python3[43] fd 7",
        steps=(Lookup("established hash (127.0.0.1:8080 ← 127.0.0.1:51234)", "hit"),),
    )


def full() -> Attribution:
    """Every field of an Attribution set, for round trips."""
    return Attribution(
        Match.ACCEPT_QUEUE,
        receiver=TIME_WAIT,
        sender=CLIENT,
        explain="queued behind python3[43] fd 4 (2/128)",
        steps=(Lookup("established", "miss"), Lookup("listener 0.0.0.0:8080", "hit")),
        listener=LISTENER,
        candidates=(LISTENER, SERVER),
        sender_explain="curl[42] fd 3 sent it",
    )


def check_socket(d: object) -> None:
    assert isinstance(d, dict)
    assert d["inode"] is None or (isinstance(d["inode"], int) and d["inode"] > 0)
    assert isinstance(d["state"], str)
    assert isinstance(d["local"], str)
    assert d["remote"] is None or isinstance(d["remote"], str)
    assert isinstance(d["holders"], list)
    for h in d["holders"]:
        assert set(h) == {"pid", "process", "fd", "container"}
        assert isinstance(h["pid"], int) and isinstance(h["fd"], int) and isinstance(h["process"], str)
        c = h["container"]
        assert c is None or (isinstance(c, dict) and set(c) == {"id", "name", "runtime", "pod"})


def check_contract(d: dict[str, object]) -> None:
    for key, typ in CONTRACT.items():
        assert isinstance(d[key], typ), key
    assert d["proto"] in ("tcp", "udp")
    assert d["family"] in (4, 6)
    assert d["match"] in {m.value for m in Match}
    for key in ("receiver", "sender"):
        assert key in d
        if d[key] is not None:
            check_socket(d[key])
    json.dumps(d)  # serialisable as is


def test_record_to_dict_tcp() -> None:
    d = record_to_dict(tcp_seg(), established())
    check_contract(d)
    assert d["ts"] == 1764100000.123456
    assert (d["src"], d["sport"], d["dst"], d["dport"]) == ("127.0.0.1", 51234, "127.0.0.1", 8080)
    assert d["flags"] == "PA" and d["payload_len"] == 5 and d["match"] == "established"
    assert d["receiver"]["local"] == "127.0.0.1:8080"
    assert d["receiver"]["remote"] == "127.0.0.1:51234"
    assert d["receiver"]["inode"] == 501
    assert d["receiver"]["holders"] == [
        {"pid": 43, "process": "python3", "fd": 7, "container": None},
        {"pid": 44, "process": "python3", "fd": 7, "container": None},
    ]
    assert d["sender"]["holders"] == [{"pid": 42, "process": "curl", "fd": 3, "container": None}]
    assert d["direction"] == "in" and d["seq"] == 1000 and d["ack"] == 2000
    assert d["steps"] == [{"what": "established hash (127.0.0.1:8080 ← 127.0.0.1:51234)", "result": "hit"}]
    # the contract keys come first, in the contract's order
    assert list(d)[:14] == [*list(CONTRACT)[:10], "receiver", "sender", "match", "explain"]


def test_record_to_dict_udp_ipv6() -> None:
    att = Attribution(Match.UDP_UNCONNECTED, receiver=UDP_SERVER, explain="bound to [::]:5353")
    d = record_to_dict(udp_seg(), att)
    check_contract(d)
    assert d["proto"] == "udp" and d["family"] == 6 and d["flags"] == ""
    assert d["src"] == "fe80::1" and d["dst"] == "ff02::fb"
    assert d["receiver"]["local"] == "[::]:5353" and d["receiver"]["remote"] is None
    assert d["sender"] is None


def test_record_to_dict_no_receiver_and_kernel_socket() -> None:
    att = Attribution(Match.NONE, receiver=None, sender=None, explain="no socket: RST")
    d = record_to_dict(tcp_seg(flags="S", payload_len=0, pkttype=PACKET_OUTGOING), att)
    check_contract(d)
    assert d["receiver"] is None and d["sender"] is None and d["match"] == "none"
    assert d["direction"] == "out"
    kd = socket_to_dict(TIME_WAIT)
    assert kd is not None
    check_socket(kd)
    assert kd["inode"] is None and kd["holders"] == []
    assert kd["local"] == "[::ffff:127.0.0.1]:8080"
    assert kd["former_holders"] == [{"pid": 43, "process": "python3", "fd": 9, "container": None}]


def test_direction_unknown() -> None:
    assert record_to_dict(tcp_seg(pkttype=-1), established())["direction"] is None


@pytest.mark.parametrize("att", [established(), full(), Attribution(Match.UNKNOWN, explain="table empty")])
@pytest.mark.parametrize("compact", [False, True])
def test_dict_to_attribution_round_trip(att: Attribution, compact: bool) -> None:
    d = json.loads(json.dumps(attribution_to_dict(att, compact=compact)))
    assert dict_to_attribution(d) == att


def test_dict_to_attribution_from_a_json_line() -> None:
    line = json.dumps(record_to_dict(udp_seg(), Attribution(Match.UDP_UNCONNECTED, receiver=UDP_SERVER)))
    assert dict_to_attribution(json.loads(line)) == Attribution(Match.UDP_UNCONNECTED, receiver=UDP_SERVER)


def test_dict_to_socket_with_contract_keys_only() -> None:
    s = dict_to_socket({"inode": None, "state": "UNCONN", "local": "[::1]:53", "remote": None, "holders": []})
    assert (s.proto, s.family, s.inode, s.local, s.remote) == ("udp", 6, 0, Endpoint("::1", 53), None)


def test_dict_to_attribution_rejects_garbage() -> None:
    with pytest.raises((KeyError, ValueError)):
        dict_to_attribution({"match": "bogus"})
    with pytest.raises(KeyError):
        dict_to_attribution({})


@pytest.mark.parametrize("text", ["127.0.0.1:8080", "[::1]:8080", "[::ffff:10.0.0.1]:1", "[::]:0"])
def test_parse_endpoint_inverts_str(text: str) -> None:
    assert str(parse_endpoint(text)) == text


def test_safe_text_leaves_ordinary_text() -> None:
    for name in ("python3", "nginx: worker", "café", "日本語", "[bold red]x[/]", "a\\x1b"):
        assert safe_text(name) == name


def test_safe_text_escapes_hostile_text() -> None:
    assert safe_text("\x1b]0;pwn\x07") == "\\x1b]0;pwn\\x07"
    assert safe_text("evil\u202etxt") == "evil\\u202etxt"
    assert safe_text("two\nlines\r") == "two\\x0alines\\x0d"
    assert safe_text("del\x7f c1\x85\x9b") == "del\\x7f c1\\x85\\x9b"
    assert safe_text("\u200e\u200f\u061c\u2066\u2069\u202a") == "\\u200e\\u200f\\u061c\\u2066\\u2069\\u202a"
    assert safe_text("\u2028") == "\\u2028"
    assert safe_text("bad\udcff") == "bad\\udcff"
    for name in HOSTILE:
        out = safe_text(name)
        assert out.isprintable(), repr(out)
        out.encode("utf-8")  # no lone surrogates left


def test_json_escapes_hostile_names() -> None:
    """json.dumps (ensure_ascii) already leaves no control, DEL, bidi or non-ASCII char."""
    holders = tuple(Holder(i, i, name) for i, name in enumerate(HOSTILE))
    sock = SocketEntry("tcp", 4, "ESTABLISHED", Endpoint("127.0.0.1", 1), None, inode=1, holders=holders)
    line = json_line(tcp_seg(), Attribution(Match.ESTABLISHED, receiver=sock))
    assert line == json.dumps(record_to_dict(tcp_seg(), Attribution(Match.ESTABLISHED, receiver=sock)))
    assert line.isascii() and line.isprintable()
    for esc in ("\\u001b", "\\u007f", "\\u202e", "\\n", "\\u009b", "\\udcff"):
        assert esc in line
    back = dict_to_attribution(json.loads(line))
    assert back.receiver is not None
    assert [h.process for h in back.receiver.holders] == HOSTILE


TIME_RE = r"\d\d:\d\d:\d\d\.\d{6}"


def test_text_line_tcp() -> None:
    seg = tcp_seg(flags="S", payload_len=0)
    att = Attribution(Match.LISTENER, receiver=LISTENER, sender=CLIENT)
    line = text_line(seg, att)
    assert re.fullmatch(
        TIME_RE + r" lo tcp 127\.0\.0\.1:51234 → 127\.0\.0\.1:8080 \[S\] len 0  "
        r"curl\[42\] fd 3 → python3\[43\] fd 4 \(listener\)",
        line,
    ), line
    assert line.split()[0].endswith(".123456")


def test_text_line_udp_kernel_and_none() -> None:
    att = Attribution(Match.TIME_WAIT, receiver=TIME_WAIT, sender=None)
    line = text_line(udp_seg(), att)
    assert re.fullmatch(
        TIME_RE + r" eth0 udp \[fe80::1\]:40000 → \[ff02::fb\]:5353 len 31  - → kernel \(time_wait\)", line
    ), line
    shared = text_line(tcp_seg(), Attribution(Match.ESTABLISHED, receiver=SERVER))
    assert shared.endswith("- → python3[43] fd 7 (+1) (established)")
    assert "[none]" in text_line(tcp_seg(flags=""), established())
    assert text_line(tcp_seg(iface="", ifindex=3), established()).split()[1] == "if3"
    assert text_line(tcp_seg(iface=""), established()).split()[1] == "?"


def test_text_line_escapes_names() -> None:
    for name in HOSTILE:
        sock = SocketEntry("tcp", 4, "LISTEN", Endpoint("0.0.0.0", 1), None, holders=(Holder(1, 2, name),))
        line = text_line(tcp_seg(iface="lo\x1b"), Attribution(Match.LISTENER, receiver=sock))
        assert line.isprintable(), repr(line)
        assert safe_text(name) in line
    assert "[bold red]x[/][1] fd 2" in text_line(
        tcp_seg(),
        Attribution(
            Match.LISTENER,
            receiver=SocketEntry(
                "tcp", 4, "LISTEN", Endpoint("0.0.0.0", 1), None, holders=(Holder(1, 2, "[bold red]x[/]"),)
            ),
        ),
    )
