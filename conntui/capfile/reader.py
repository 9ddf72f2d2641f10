"""The capture file reader (``-r``): frames of a pcap or pcapng file, in order.

The same ``struct`` code as the writers (~200k packets/s). It reads what conntui writes
and what other tools write: classic pcap in µs or ns, either byte order, Kuznetzov's
modified pcap; pcapng with any number of sections and interfaces, enhanced, simple and
obsolete packet blocks (other blocks are skipped). A conntui comment that names an earlier
packet's JSON gets that JSON back in place (comments.py). A file cut in the middle of a
packet ends the iteration cleanly (``truncated``); a damaged one raises
``CaptureFileError`` (one line).
"""

from __future__ import annotations

import os
import re
import struct
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import IO

from ..model import (
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    Frame,
)
from .comments import COMMENT_JSON_PREFIX, COMMENT_PREFIX, COMMENT_REF_PREFIX, REF_WINDOW
from .errors import CaptureFileError
from .formats import (
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    Target,
)

_MAX_BLOCK = 1 << 28
_IFINDEX_RE = re.compile(r"ifindex (\d+)\Z")
_PCAP_MAGIC = {
    # magic as read little-endian → (endianness, ticks per second, extra record bytes)
    0xA1B2C3D4: ("<", 1_000_000, 0),
    0xD4C3B2A1: (">", 1_000_000, 0),
    0xA1B23C4D: ("<", 1_000_000_000, 0),
    0x4D3CB2A1: (">", 1_000_000_000, 0),
    0xA1B2CD34: ("<", 1_000_000, 8),  # Kuznetzov's modified pcap (ifindex, protocol, pkttype)
    0x34CDB2A1: (">", 1_000_000, 8),
}
_SHB = b"\x0a\x0d\x0d\x0a"
_RECEPTION = {1: PACKET_HOST, 2: PACKET_MULTICAST, 3: PACKET_BROADCAST, 4: PACKET_OTHERHOST}


def _pkttype_from_flags(flags: int) -> int:
    direction = flags & 3
    if direction == 2:
        return PACKET_OUTGOING
    reception = _RECEPTION.get((flags >> 2) & 7)
    if reception is not None:
        return reception
    return PACKET_HOST if direction == 1 else -1


class _Interface:
    __slots__ = ("ifindex", "linktype", "name", "offset", "snaplen", "units")

    def __init__(self, linktype: int, snaplen: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.name = ""
        self.ifindex = 0
        self.units = 1_000_000  # ticks per second
        self.offset = 0  # if_tsoffset, seconds


class CaptureReader:
    """Frames of a pcap or pcapng file, in order. Iterate it; ``with`` closes the file.

    After (or during) iteration: ``count`` frames read, ``truncated`` = 1 when the file
    ended inside a packet (the iteration then just stops), ``format`` "pcap" | "pcapng".
    Per-frame fields: ``iface`` from the pcapng interface name ("" in classic pcap),
    ``ifindex``/``pkttype``/``protocol`` from Linux cooked headers, else ``pkttype`` from
    pcapng ``epb_flags`` (-1 when unknown), ``comment`` = the packet's comments joined by
    newlines.
    """

    def __init__(self, source: Target) -> None:
        self.count = 0
        self.truncated = 0
        self.format = ""
        self.linktypes: set[int] = set()
        self._owned = False
        self._offset = 0
        self._jsons: dict[int, str] = {}  # frame number → its conntui-json line (the last REF_WINDOW)
        self._json_at: deque[int] = deque()
        if isinstance(source, str | os.PathLike):
            self.name = os.fsdecode(source)
            try:
                self._f: IO[bytes] = open(source, "rb", buffering=1 << 20)  # noqa: SIM115
            except OSError as e:
                raise CaptureFileError(f"cannot read {self.name}: {e.strerror or e}") from None
            self._owned = True
        else:
            self._f = source
            self.name = str(getattr(source, "name", "<stream>"))
        try:
            self._frames = self._open()
        except BaseException:
            self.close()
            raise

    def _error(self, what: str) -> CaptureFileError:
        return CaptureFileError(f"{self.name}: {what}")

    def _read(self, n: int) -> bytes:
        try:
            data = self._f.read(n)
        except OSError as e:
            raise self._error(f"read error: {e.strerror or e}") from None
        self._offset += len(data)
        return data

    def _open(self) -> Iterator[Frame]:
        head = self._read(24)
        if len(head) < 4:
            raise self._error("empty or too short to be a capture file")
        if head[:4] == _SHB:
            self.format = "pcapng"
            return self._pcapng(head)
        magic = struct.unpack_from("<I", head)[0]
        if magic not in _PCAP_MAGIC:
            raise self._error("not a pcap or pcapng file")
        if len(head) < 24:
            raise self._error("truncated pcap header")
        self.format = "pcap"
        return self._pcap(head)

    # classic pcap -----------------------------------------------------------------------

    def _pcap(self, head: bytes) -> Iterator[Frame]:
        endian, units, extra = _PCAP_MAGIC[struct.unpack_from("<I", head)[0]]
        linktype = struct.unpack_from(endian + "I", head, 20)[0] & 0xFFFF
        self.linktypes.add(linktype)
        rec = struct.Struct(endian + "IIII")
        size = rec.size + extra
        read = self._read
        while True:
            hdr = read(size)
            if len(hdr) < size:
                if hdr:
                    self.truncated += 1
                return
            sec, frac, caplen, orig = rec.unpack_from(hdr)
            if caplen > _MAX_BLOCK:
                raise self._error(f"corrupt packet record at offset {self._offset - size}")
            data = read(caplen)
            if len(data) < caplen:
                self.truncated += 1
                return
            frame = _frame(data, linktype, (sec * units + frac) / units, orig)
            if extra:
                ifindex, protocol, pkttype = struct.unpack_from(endian + "IHB", hdr, rec.size)
                frame = Frame(frame.ts, data, linktype, "", ifindex, pkttype, protocol, orig, frame.comment)
            self.count += 1
            yield frame

    # pcapng -----------------------------------------------------------------------------

    def _pcapng(self, head: bytes) -> Iterator[Frame]:
        pending = head  # bytes already read past the block boundary
        endian = "<"
        ifaces: list[_Interface] = []
        while True:
            start = self._offset - len(pending)
            if len(pending) < 12:
                pending += self._read(12 - len(pending))
                if len(pending) < 12:
                    if pending:
                        self.truncated += 1
                    return
            if pending[:4] == _SHB:
                bom = pending[8:12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    raise self._error(f"bad byte-order magic in section header at offset {start}")
                ifaces = []
            btype, total = struct.unpack_from(endian + "II", pending)
            if total < 12 or total % 4 or total > _MAX_BLOCK:
                raise self._error(f"corrupt pcapng block (length {total}) at offset {start}")
            need = total - len(pending)
            block = pending + self._read(need) if need > 0 else pending[:total]
            pending = b"" if need >= 0 else pending[total:]
            if len(block) < total:
                self.truncated += 1
                return
            if btype == 6:  # enhanced packet block
                iid, hi, lo, caplen, orig = struct.unpack_from(endian + "IIIII", block, 8)
                yield self._packet(block, ifaces, iid, (hi << 32) | lo, caplen, orig, 28, endian)
            elif btype == 1:  # interface description block
                ifaces.append(self._idb(block, endian))
            elif btype == 3:  # simple packet block
                if not ifaces:
                    raise self._error(f"packet before any interface at offset {start}")
                (orig,) = struct.unpack_from(endian + "I", block, 8)
                caplen = min(orig, total - 16, ifaces[0].snaplen or orig)
                frame = _frame(block[12 : 12 + caplen], ifaces[0].linktype, 0.0, orig)
                self.count += 1
                yield _with_iface(frame, ifaces[0], -1, "")
            elif btype == 2:  # obsolete packet block
                iid, _drops, hi, lo, caplen, orig = struct.unpack_from(endian + "HHIIII", block, 8)
                yield self._packet(block, ifaces, iid, (hi << 32) | lo, caplen, orig, 28, endian)
            # any other block (name resolution, statistics, custom, ...) is skipped

    def _packet(
        self,
        block: bytes,
        ifaces: list[_Interface],
        iid: int,
        ticks: int,
        caplen: int,
        orig: int,
        off: int,
        endian: str,
    ) -> Frame:
        if iid >= len(ifaces):
            raise self._error(f"packet for undeclared interface {iid} at offset {self._offset}")
        end = len(block) - 4
        if off + caplen > end:
            raise self._error(f"packet longer than its block at offset {self._offset}")
        iface = ifaces[iid]
        data = block[off : off + caplen]
        pkttype = -1
        comments: list[str] = []
        pos = off + caplen + (-caplen & 3)
        while pos + 4 <= end:
            code, length = struct.unpack_from(endian + "HH", block, pos)
            if code == 0:
                break
            value = block[pos + 4 : pos + 4 + length]
            if code == 1:
                comments.append(value.decode("utf-8", "replace"))
            elif code == 2 and length == 4:
                pkttype = _pkttype_from_flags(struct.unpack(endian + "I", value)[0])
            pos += 4 + length + (-length & 3)
        frame = _frame(data, iface.linktype, ticks / iface.units + iface.offset, orig)
        self.count += 1
        comment = "\n".join(comments)
        if comment.startswith(COMMENT_PREFIX):
            comment = self._json_in_place(comment)
        return _with_iface(frame, iface, pkttype, comment)

    def _json_in_place(self, comment: str) -> str:
        """Keep this packet's conntui JSON for later packets, or put back the JSON a
        reference names (see comments.py)."""
        number = self.count
        ref = comment.rfind("\n" + COMMENT_REF_PREFIX)
        if ref >= 0:
            try:
                at = int(comment[ref + 1 + len(COMMENT_REF_PREFIX) :])
            except ValueError:
                return comment
            line = self._jsons.get(at)
            return comment if line is None else comment[:ref] + "\n" + line
        at_json = comment.find("\n" + COMMENT_JSON_PREFIX)
        if at_json >= 0:
            jsons, order = self._jsons, self._json_at
            jsons[number] = comment[at_json + 1 :].split("\n", 1)[0]
            order.append(number)
            while order[0] < number - REF_WINDOW:
                del jsons[order.popleft()]
        return comment

    def _idb(self, block: bytes, endian: str) -> _Interface:
        linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", block, 8)
        iface = _Interface(linktype, snaplen)
        self.linktypes.add(linktype)
        for code, value in _options(block, 16, len(block) - 4, endian):
            if code == 2:
                iface.name = value.decode("utf-8", "replace")
            elif code == 3:
                m = _IFINDEX_RE.match(value.decode("utf-8", "replace"))
                if m:
                    iface.ifindex = int(m.group(1))
            elif code == 9 and value:
                v = value[0]
                iface.units = 2 ** (v & 0x7F) if v & 0x80 else 10**v
            elif code == 14 and len(value) == 8:
                iface.offset = struct.unpack(endian + "q", value)[0]
        return iface

    # iteration --------------------------------------------------------------------------

    def __iter__(self) -> CaptureReader:
        return self

    def __next__(self) -> Frame:
        try:
            return next(self._frames)
        except StopIteration:
            self.close()
            raise
        except (struct.error, ValueError, IndexError, OverflowError):
            # a hostile or damaged file: a block too short for its own fields, ...
            self.close()
            raise self._error(f"corrupt capture file near offset {self._offset}") from None

    def close(self) -> None:
        if self._owned:
            self._owned = False
            self._f.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _options(block: bytes, pos: int, end: int, endian: str) -> Iterator[tuple[int, bytes]]:
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", block, pos)
        if code == 0:
            return
        yield code, block[pos + 4 : pos + 4 + length]
        pos += 4 + length + (-length & 3)


def _frame(data: bytes, linktype: int, ts: float, orig: int) -> Frame:
    """A frame with what its own bytes say: Linux cooked headers (ifindex, packet type,
    protocol), or the IP version of a raw IP frame."""
    ifindex = protocol = 0
    pkttype = -1
    if linktype == LINKTYPE_LINUX_SLL2 and len(data) >= 20:
        protocol, _res, ifindex, _hatype, pkttype = struct.unpack_from(">HHIHB", data)
    elif linktype == LINKTYPE_LINUX_SLL and len(data) >= 16:
        pkttype = struct.unpack_from(">H", data)[0]
        protocol = struct.unpack_from(">H", data, 14)[0]
    elif linktype == LINKTYPE_RAW and data:
        version = data[0] >> 4
        protocol = 0x0800 if version == 4 else 0x86DD if version == 6 else 0
    elif linktype == LINKTYPE_IPV4:
        protocol = 0x0800
    elif linktype == LINKTYPE_IPV6:
        protocol = 0x86DD
    return Frame(ts, data, linktype, "", ifindex, pkttype, protocol, orig)


def _with_iface(frame: Frame, iface: _Interface, pkttype: int, comment: str) -> Frame:
    """Add what the pcapng interface and EPB options say (cooked headers win)."""
    return Frame(
        frame.ts,
        frame.data,
        frame.linktype,
        iface.name,
        frame.ifindex or iface.ifindex,
        frame.pkttype if frame.pkttype >= 0 else pkttype,
        frame.protocol,
        frame.wire_len,
        comment,
    )


def read_capture(source: Target) -> CaptureReader:
    """Frames of a pcap or pcapng file (a path or a binary stream).

    The header is read at once, so a missing, unreadable or non-capture file raises
    ``CaptureFileError`` here; corruption later raises it during iteration, while a
    truncated last packet just ends the iteration (``reader.truncated`` = 1).
    """
    return CaptureReader(source)
