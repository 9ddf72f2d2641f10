"""pcap / pcapng export and import: round trips, interop with tshark and scapy, errors."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter as ScapyPcapNgWriter
from scapy.utils import rdpcap

from conntui.capfile.comments import attribution_from_comment, attribution_json, comment_text
from conntui.capfile.errors import CaptureFileError, ExportError
from conntui.capfile.formats import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from conntui.capfile.reader import read_capture
from conntui.capfile.writers import open_writer
from conntui.jsonout import attribution_to_dict
from conntui.model import (
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    Attribution,
    Endpoint,
    Frame,
    Holder,
    Lookup,
    Match,
    SocketEntry,
)

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (CI installs it)")

SYN = bytes(IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=51234, dport=8080, flags="S"))
DATA6 = bytes(IPv6(src="::1", dst="::1") / TCP(sport=40000, dport=443, flags="PA") / (b"x" * 33))
DNS = bytes(IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=5000, dport=53) / (b"q" * 20))

SERVER = SocketEntry(
    "tcp",
    4,
    "LISTEN",
    Endpoint("0.0.0.0", 8080),
    None,
    inode=77,
    holders=(Holder(43, 4, "python3"),),
    rx_queue=1,
    tx_queue=128,
)
CLIENT = SocketEntry(
    "tcp",
    4,
    "SYN_SENT",
    Endpoint("127.0.0.1", 51234),
    Endpoint("127.0.0.1", 8080),
    inode=78,
    holders=(Holder(42, 3, "curl"),),
)
ATT = Attribution(
    Match.LISTENER,
    receiver=SERVER,
    sender=CLIENT,
    explain="SYN to the listener python3[43] fd 4",
    steps=(Lookup("established hash", "miss"), Lookup("listener 0.0.0.0:8080", "hit")),
)
HOSTILE = SocketEntry(
    "udp",
    6,
    "UNCONN",
    Endpoint("::", 53),
    None,
    inode=90,
    holders=(Holder(7, 5, "ev\x1b[31mil\u202e\n[red]x"),),
)
ATT_UDP = Attribution(Match.UDP_UNCONNECTED, receiver=HOSTILE, explain="bound to [::]:53\nnewline")


def frames() -> list[Frame]:
    return [
        Frame(1764100000.123456, SYN, LINKTYPE_RAW, "lo", 1, PACKET_OUTGOING, 0x0800, len(SYN)),
        Frame(1764100000.123457, SYN, LINKTYPE_RAW, "lo", 1, PACKET_HOST, 0x0800, len(SYN)),
        Frame(1764100001.5, DATA6, LINKTYPE_RAW, "lo", 1, PACKET_HOST, 0x86DD, len(DATA6)),
        Frame(1764100002.000001, DNS, LINKTYPE_RAW, "eth0", 2, PACKET_BROADCAST, 0x0800, len(DNS)),
        Frame(1764100003.25, DNS, LINKTYPE_RAW, "eth0", 2, PACKET_MULTICAST, 0x0800, len(DNS)),
        # snapped: the wire carried more than was captured
        Frame(1764100004.0, DNS[:30], LINKTYPE_RAW, "eth0", 2, PACKET_OTHERHOST, 0x0800, len(DNS)),
        Frame(1764100005.0, DATA6, LINKTYPE_RAW, "eth0", 2, -1, 0x86DD, len(DATA6)),
    ]


ATTS: list[Attribution | None] = [ATT, ATT, None, ATT_UDP, ATT_UDP, None, ATT]


def write_all(target: object, fmt: str | None = None) -> int:
    with open_writer(target, fmt) as w:  # type: ignore[arg-type]
        for f, a in zip(frames(), ATTS, strict=True):
            w.write(f, None, a)
        return w.count


# --- round trips ----------------------------------------------------------------------


def test_pcapng_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    assert write_all(path) == len(frames())
    reader = read_capture(path)
    got = list(reader)
    assert reader.format == "pcapng" and reader.count == len(got) and reader.truncated == 0
    assert [f._replace(comment="") for f in got] == frames()
    for f, att in zip(got, ATTS, strict=True):
        assert attribution_from_comment(f.comment) == att
        if att is None:
            assert f.comment == ""
        else:
            assert f.comment.startswith("conntui: ")
            assert len(f.comment.split("\n")) == 2


def test_pcapng_comment_is_terminal_safe() -> None:
    text = comment_text(ATT_UDP)
    human, blob = text.split("\n")
    assert human.isprintable() and blob.isascii() and blob.isprintable()
    assert human == (
        "conntui: - → ev\\x1b[31mil\\u202e\\x0a[red]x[7] fd 5 (udp_unconnected): bound to [::]:53\\x0anewline"
    )
    assert comment_text(ATT).startswith("conntui: curl[42] fd 3 → python3[43] fd 4 (listener): SYN to")


def test_rewrite_of_a_read_file_keeps_comments(tmp_path: Path) -> None:
    write_all(tmp_path / "a.pcapng")
    with open_writer(tmp_path / "b.pcapng") as w:
        for f in read_capture(tmp_path / "a.pcapng"):
            w.write(f)
    assert list(read_capture(tmp_path / "a.pcapng")) == list(read_capture(tmp_path / "b.pcapng"))


def test_pcap_round_trip_as_sll2(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    write_all(path)
    reader = read_capture(path)
    got = list(reader)
    assert reader.format == "pcap" and reader.linktypes == {LINKTYPE_LINUX_SLL2}
    assert len(got) == len(frames())
    for f, orig in zip(got, frames(), strict=True):
        assert f.linktype == LINKTYPE_LINUX_SLL2
        assert f.data[20:] == orig.data
        assert (f.ts, f.ifindex, f.protocol, f.iface, f.comment) == (
            orig.ts,
            orig.ifindex,
            orig.protocol,
            "",
            "",
        )
        assert f.pkttype == (orig.pkttype if orig.pkttype >= 0 else PACKET_HOST)
        assert f.wire_len == orig.wire_len + 20


def test_pcap_keeps_a_foreign_linktype_and_converts_or_skips(tmp_path: Path) -> None:
    eth = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(SYN))
    with open_writer(tmp_path / "eth.pcap") as w:
        w.write(Frame(1.0, eth, LINKTYPE_ETHERNET))
        w.write(Frame(2.0, SYN, LINKTYPE_RAW, "lo", 1))  # cannot become Ethernet
    assert (w.count, w.skipped) == (1, 1)
    got = list(read_capture(tmp_path / "eth.pcap"))
    assert [(f.linktype, f.data, f.pkttype) for f in got] == [(LINKTYPE_ETHERNET, eth, -1)]

    sll = struct.pack(">HHH8sH", PACKET_OUTGOING, 772, 0, b"", 0x0800) + SYN
    with open_writer(tmp_path / "mixed.pcap") as w:
        w.write(Frame(1.0, SYN, LINKTYPE_RAW, "lo", 1))
        w.write(Frame(2.0, sll, LINKTYPE_LINUX_SLL, "lo", 1))
        w.write(Frame(3.0, eth, LINKTYPE_ETHERNET, "eth0", 2))
    got = list(read_capture(tmp_path / "mixed.pcap"))
    assert [f.data[20:] for f in got] == [SYN, SYN, SYN]
    assert [(f.ifindex, f.pkttype, f.protocol) for f in got] == [
        (1, PACKET_HOST, 0x0800),
        (1, PACKET_OUTGOING, 0x0800),
        (2, PACKET_HOST, 0x0800),
    ]


def test_explicit_format_and_suffix(tmp_path: Path) -> None:
    for name, fmt, expected in [
        ("a.pcap", None, "pcap"),
        ("a.PCAP", None, "pcap"),
        ("a.pcapng", None, "pcapng"),
        ("a.cap", None, "pcapng"),
        ("noext", None, "pcapng"),
        ("b.pcapng", "pcap", "pcap"),
    ]:
        with open_writer(str(tmp_path / name), fmt) as w:
            assert w.format == expected
        assert read_capture(tmp_path / name).format == expected
    with pytest.raises(ValueError):
        open_writer(tmp_path / "c", "json")


def test_stream_target() -> None:
    for fmt in ("pcapng", "pcap"):
        buf = io.BytesIO()
        assert write_all(buf, fmt) == len(frames())
        assert not buf.closed  # the caller owns the stream
        got = list(read_capture(io.BytesIO(buf.getvalue())))
        assert len(got) == len(frames())
        assert [f.ts for f in got] == [f.ts for f in frames()]


def test_empty_files_are_valid(tmp_path: Path) -> None:
    for name in ("e.pcap", "e.pcapng"):
        open_writer(tmp_path / name).close()
        reader = read_capture(tmp_path / name)
        assert list(reader) == [] and reader.truncated == 0


# --- durability -----------------------------------------------------------------------


def test_flushed_packets_are_readable_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "live.pcapng"
    w = open_writer(path, flush_bytes=1000)
    for i in range(200):
        w.write(frames()[0]._replace(ts=1.0 + i), None, ATT if i % 2 else None)
        reader = read_capture(path)
        n = sum(1 for _ in reader)
        assert reader.truncated == 0 and n <= i + 1  # whole blocks only, never a torn one
    w.flush()
    assert sum(1 for _ in read_capture(path)) == 200
    w.close()
    w.close()  # idempotent
    with pytest.raises(ExportError):
        w.write(frames()[0])


CHILD = textwrap.dedent(
    """
    import sys, threading
    from conntui.capfile.writers import open_writer
    from conntui.model import Frame
    w = open_writer(sys.argv[1])
    stop = threading.Event()

    def capture():
        while not stop.is_set():
            w.write(Frame(1.0, bytes(60), 101, "lo", 1, 0, 0x800, 60))
            if w.count % 1000 == 0:
                w.flush()

    try:
        if sys.argv[2] == "thread":  # as the engine does: capture thread, main thread waits
            t = threading.Thread(target=capture)
            t.start()
            print("ready", flush=True)
            stop.wait()
        else:  # worst case: the interrupt lands anywhere in write()
            print("ready", flush=True)
            capture()
    except KeyboardInterrupt:
        stop.set()
        if sys.argv[2] == "thread":
            t.join()
        w.close()
        print(w.count, flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("where", ["thread", "main"])
@pytest.mark.parametrize("suffix", [".pcapng", ".pcap"])
def test_interrupted_writer_leaves_a_readable_file(tmp_path: Path, sig: int, where: str, suffix: str) -> None:
    """Ctrl-C: the writer closes, every packet written is there, none torn or doubled.
    SIGTERM (default action: the process dies): every flushed packet is there."""
    path = tmp_path / ("x" + suffix)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), where],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        assert first == "ready\n", first
        time.sleep(0.2)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:  # never leave a writer spinning (it loops until told to stop)
            proc.kill()
            proc.wait()
    reader = read_capture(path)
    n = sum(1 for _ in reader)  # never raises: a torn tail just ends the iteration
    assert n >= 1000
    if sig == signal.SIGINT:
        assert reader.truncated == 0
        if where == "thread":
            assert n == int(out)
        else:  # KeyboardInterrupt between the block and ``count += 1``
            assert n - int(out) in (0, 1)


# --- errors ---------------------------------------------------------------------------


def test_export_error_on_unwritable_paths(tmp_path: Path) -> None:
    for bad in (tmp_path / "missing-dir" / "x.pcapng", tmp_path):
        with pytest.raises(ExportError) as e:
            open_writer(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ExportError, match="Permission denied"):
            open_writer(ro / "x.pcap")


def test_capture_file_errors(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("hello, this is not a capture file\n")
    (tmp_path / "empty").write_bytes(b"")
    good = io.BytesIO()
    write_all(good)
    corrupt = bytearray(good.getvalue())
    # the second block's length becomes 7 (not a multiple of 4)
    shb_len = struct.unpack_from("<I", corrupt, 4)[0]
    struct.pack_into("<I", corrupt, shb_len + 4, 7)
    (tmp_path / "corrupt").write_bytes(bytes(corrupt))
    for name, match in [
        ("nope", "No such file"),
        ("text", "not a pcap or pcapng"),
        ("empty", "empty"),
        ("corrupt", "corrupt pcapng block"),
    ]:
        with pytest.raises(CaptureFileError, match=match) as e:
            list(read_capture(tmp_path / name))
        assert "\n" not in str(e.value) and name in str(e.value)
    with pytest.raises(CaptureFileError):
        read_capture(tmp_path)  # a directory


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncated_last_packet_ends_cleanly(fmt: str) -> None:
    buf = io.BytesIO()
    write_all(buf, fmt)
    data = buf.getvalue()
    for cut in (1, 5, 13, 30):
        reader = read_capture(io.BytesIO(data[:-cut]))
        got = list(reader)
        assert len(got) == len(frames()) - 1
        assert reader.truncated == 1


def test_attribution_json_is_the_compact_dict() -> None:
    full = Attribution(
        Match.SYN_RECV,
        receiver=None,
        sender=HOSTILE,
        explain="é\x00",
        steps=ATT.steps,
        listener=SERVER,
        candidates=(SERVER, CLIENT),
        sender_explain="s",
    )
    for att in (ATT, ATT_UDP, full, Attribution(Match.NONE)):
        text = attribution_json(att)
        assert text == json.dumps(attribution_to_dict(att, compact=True), separators=(",", ":"))
        assert text.isascii()


def test_attribution_from_comment() -> None:
    assert attribution_from_comment(comment_text(ATT)) == ATT
    assert attribution_from_comment(comment_text(ATT_UDP)) == ATT_UDP
    assert attribution_from_comment("") is None
    assert attribution_from_comment("a comment from Wireshark") is None
    assert attribution_from_comment("conntui-json: {not json") is None
    assert attribution_from_comment('conntui-json: {"match": "nope"}') is None
    assert attribution_from_comment('conntui-json: ["list"]') is None


# --- foreign files ----------------------------------------------------------------------


def _opt(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) & 3)


def _block(endian: str, btype: int, body: bytes) -> bytes:
    total = len(body) + 12
    return struct.pack(endian + "II", btype, total) + body + struct.pack(endian + "I", total)


def foreign_pcapng(endian: str) -> bytes:
    """Big or little endian, ns and 2^-20 resolutions, two IDBs, EPB flags and two comments,
    an obsolete PB, an SPB, a name resolution block and an unknown block."""
    e = endian
    shb = _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(e, 0, b""))
    idb0 = _block(
        e,
        1,
        struct.pack(e + "HHI", LINKTYPE_RAW, 0, 0)
        + _opt(e, 2, b"eth0")
        + _opt(e, 9, b"\x09")
        + _opt(e, 0, b""),
    )
    idb1 = _block(e, 1, struct.pack(e + "HHI", LINKTYPE_RAW, 0, 0) + _opt(e, 2, b"lo") + _opt(e, 9, b"\x94"))
    ticks = 1764100000_123456789
    epb = _block(
        e,
        6,
        struct.pack(e + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(SYN), 100)
        + SYN
        + _opt(e, 1, "first ☃".encode())
        + _opt(e, 2, struct.pack(e + "I", 2))
        + _opt(e, 1, b"second")
        + _opt(e, 0, b""),
    )
    t2 = 3 << 20  # 3 s at 2^-20
    pb = _block(e, 2, struct.pack(e + "HHIIII", 1, 0, t2 >> 32, t2 & 0xFFFFFFFF, len(DNS), len(DNS)) + DNS)
    spb = _block(e, 3, struct.pack(e + "I", len(DATA6)) + DATA6 + b"\0" * (-len(DATA6) & 3))
    nrb = _block(e, 4, b"\0\0\0\0")
    unknown = _block(e, 0x0BAD, b"junk")
    return shb + idb0 + nrb + epb + unknown + idb1 + pb + spb


@pytest.mark.parametrize("endian", ["<", ">"])
def test_read_foreign_pcapng(endian: str) -> None:
    got = list(read_capture(io.BytesIO(foreign_pcapng(endian))))
    assert len(got) == 3
    a, b, c = got
    assert (a.iface, a.data, a.pkttype, a.comment, a.wire_len) == (
        "eth0",
        SYN,
        PACKET_OUTGOING,
        "first ☃\nsecond",
        100,
    )
    assert a.ts == pytest.approx(1764100000.123456789, abs=1e-6)
    assert (b.iface, b.data, b.ts, b.pkttype, b.protocol) == ("lo", DNS, 3.0, -1, 0x0800)
    assert (c.iface, c.data, c.linktype) == ("eth0", DATA6, LINKTYPE_RAW)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_read_foreign_pcap(endian: str, nanos: bool) -> None:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    head = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    frac = 500_000_000 if nanos else 500_000
    rec = struct.pack(endian + "IIII", 1764100000, frac, len(SYN), len(SYN)) + SYN
    (f,) = list(read_capture(io.BytesIO(head + rec)))
    assert (f.ts, f.data, f.linktype, f.pkttype, f.protocol) == (1764100000.5, SYN, LINKTYPE_RAW, -1, 0x800)


def test_read_scapy_pcapng(tmp_path: Path) -> None:
    path = tmp_path / "scapy.pcapng"
    pkt = Ether() / IP(SYN)
    pkt.time = 1764100000.25
    pkt.comments = [b"from scapy"]
    pkt.sniffed_on = "eth9"
    with ScapyPcapNgWriter(str(path)) as w:
        w.write(pkt)
    (f,) = list(read_capture(path))
    assert (f.linktype, f.data, f.ts, f.comment, f.iface) == (
        LINKTYPE_ETHERNET,
        bytes(pkt),
        1764100000.25,
        "from scapy",
        "eth9",
    )


# --- interop ---------------------------------------------------------------------------


def test_scapy_reads_both_formats(tmp_path: Path) -> None:
    write_all(tmp_path / "x.pcapng")
    write_all(tmp_path / "x.pcap")
    ng = rdpcap(str(tmp_path / "x.pcapng"))
    assert len(ng) == len(frames())
    assert ng[0].haslayer(TCP) and ng[0][TCP].dport == 8080
    assert ng[0].comments and ng[0].comments[0].startswith(b"conntui: curl[42] fd 3")
    assert ng[0].sniffed_on == "lo" and ng[3].sniffed_on == "eth0"
    assert ng[2].haslayer(IPv6)
    classic = rdpcap(str(tmp_path / "x.pcap"))
    assert len(classic) == len(frames())
    assert classic[0].haslayer(TCP) and classic[3].haslayer(UDP)


def tshark(*args: str) -> str:
    assert TSHARK is not None
    res = subprocess.run([TSHARK, *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def comment_field() -> str:
    """``frame.comment`` (Wireshark ≥ 3.6/4.x) or ``pkt_comment`` (older)."""
    fields = tshark("-G", "fields")
    return "frame.comment" if "\tframe.comment\t" in fields else "pkt_comment"


@needs_tshark
def test_tshark_reads_comments_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    write_all(path)
    out = tshark(
        "-r",
        str(path),
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.packet_flags_direction",
        "-e",
        "tcp.dstport",
        "-e",
        "udp.dstport",
        "-e",
        comment_field(),
    )
    rows = [line.split("|") for line in out.splitlines()]
    assert len(rows) == len(frames())
    assert [r[0] for r in rows] == ["lo", "lo", "lo", "eth0", "eth0", "eth0", "eth0"]
    assert [int(r[1], 16) if r[1] else 0 for r in rows] == [2, 1, 1, 1, 1, 1, 0]
    assert rows[0][2] == "8080" and rows[3][3] == "53"
    jsons: dict[int, str] = {}  # frame number → the JSON its comment carries
    refs = 0
    for number, (row, att) in enumerate(zip(rows, ATTS, strict=True), 1):
        comment = row[4]
        if att is None:
            assert comment == ""
            continue
        # tshark shows the newline between the two lines as a literal "\n"
        human, _, second = comment.partition("\\n")
        assert human.startswith("conntui: ")
        if second.startswith("conntui-json-ref: frame "):  # the same JSON as an earlier packet
            refs += 1
            blob = jsons[int(second.removeprefix("conntui-json-ref: frame "))]
        else:
            assert second.startswith("conntui-json: ")
            blob = jsons[number] = second.removeprefix("conntui-json: ")
        assert attribution_from_comment("conntui-json: " + blob) == att
    assert refs == 3  # frames 2 and 7 name frame 1 (the same attribution), frame 5 names 4
    assert "conntui: curl[42] fd 3 → python3[43] fd 4 (listener)" in rows[0][4]


@needs_tshark
@pytest.mark.parametrize("name", ["x.pcap", "x.pcapng", "empty.pcap", "empty.pcapng"])
def test_tshark_reads_both_formats(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.startswith("empty"):
        open_writer(path).close()
        expected = 0
    else:
        write_all(path)
        expected = len(frames())
    out = tshark("-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "ip.src", "-e", "ipv6.src")
    assert len(out.splitlines()) == expected
    if expected:
        assert out.splitlines()[0].split("\t")[1] == "127.0.0.1"
        assert out.splitlines()[2].split("\t")[2] == "::1"
    if name == "x.pcap":
        sll = tshark("-r", str(path), "-T", "fields", "-e", "sll.ifindex", "-e", "sll.pkttype")
        assert sll.splitlines()[:4] == ["1\t4", "1\t0", "1\t0", "2\t1"]


def test_a_flow_names_the_packet_with_its_json_and_the_reader_puts_it_back(tmp_path: Path) -> None:
    """Within REF_WINDOW packets, a flow's packets name the one that carries its JSON; the
    reader restores the JSON; a reference to a packet the file no longer has (cut with
    editcap) reads as no attribution, never as another packet's."""
    path = tmp_path / "refs.pcapng"
    f0 = frames()[1]
    with open_writer(path) as w:
        w._ref_window = 3  # type: ignore[attr-defined]
        for i in range(8):
            w.write(f0._replace(ts=f0.ts + i), None, ATT)
    raw = path.read_bytes()
    assert raw.count(b"conntui-json: {") == 2  # packets 1 and 5 (4 past 1: beyond the window of 3)
    assert raw.count(b"conntui-json-ref: frame 1") == 3  # packets 2-4
    assert raw.count(b"conntui-json-ref: frame 5") == 3  # packets 6-8
    back = list(read_capture(path))
    assert [attribution_from_comment(f.comment) for f in back] == [ATT] * 8
    assert all(f.comment.startswith("conntui: ") and "\nconntui-json: {" in f.comment for f in back)
    # the file without its first packet: packets 2-4 name it and lose their attribution
    blocks = []
    pos = 0
    while pos < len(raw):
        btype, total = struct.unpack_from("<II", raw, pos)
        blocks.append((btype, raw[pos : pos + total]))
        pos += total
    first_epb = next(i for i, (t, _) in enumerate(blocks) if t == 6)
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(b"".join(b for i, (_, b) in enumerate(blocks) if i != first_epb))
    got = [attribution_from_comment(f.comment) for f in read_capture(cut)]
    # frame numbers shift by one: the references of the old packets 2-4 now name a packet
    # without JSON or one that is not kept, so they carry no attribution...
    assert got[:3] == [None, None, None]
    # ...and packet 5, with its own JSON, and the ones naming it (as old frame 5) again do
    assert got[3] == ATT


def test_a_session_export_writes_every_row_spooled_ones_first_as_its_writer_would(tmp_path: Path) -> None:
    """``capfile.export.export_session`` (the TUI's ``w``): the rows that left memory come
    back from the spool first, ``keep`` picks rows, and the file holds the very bytes the
    writer gives those rows; an existing file is replaced only when asked."""
    from conntui.capfile.errors import ExportExists
    from conntui.capfile.export import export_session
    from conntui.capfile.spool import PcapngSpool
    from conntui.decode import decode_frame
    from conntui.session import Session

    session = Session(window=3, spool=PcapngSpool(str(tmp_path)))
    base = frames()[1]
    try:
        for i in range(8):
            frame = base._replace(ts=base.ts + i)
            seg = decode_frame(frame)
            assert seg is not None
            session.append(frame, seg, Attribution(Match.ESTABLISHED, CLIENT, SERVER, explain=f"row {i}"))
        path = tmp_path / "all.pcapng"
        assert export_session(session, str(path)) == 8
        by_hand = tmp_path / "by-hand.pcapng"
        with open_writer(by_hand) as w:
            for rec in session.all_records():
                w.write(rec.frame, rec.segment, rec.attribution)
        assert path.read_bytes() == by_hand.read_bytes()
        back = [attribution_from_comment(f.comment) for f in read_capture(path)]
        assert [a.explain for a in back if a is not None] == [f"row {i}" for i in range(8)]

        even = tmp_path / "even.pcapng"
        assert export_session(session, str(even), lambda rec: rec.seq % 2 == 0) == 4
        assert [f.ts for f in read_capture(even)] == [base.ts + i for i in range(0, 8, 2)]

        with pytest.raises(ExportExists):
            export_session(session, str(even))
        assert export_session(session, str(even), overwrite=True) == 8
    finally:
        session.close()
