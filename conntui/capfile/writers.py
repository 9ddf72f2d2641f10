"""The capture file writers: streaming pcap and pcapng, built with ``struct``.

Why hand-written ``struct`` code rather than scapy's utils (which DESIGN.md suggests): the
writer runs on the capture thread at up to ~250k packets/s (``-w``); in a live capture the
C fast path (fastpath.py) builds the blocks of rows whose comment is already cached here,
byte for byte as ``PcapNgWriter.write`` would, and this code writes them. scapy's
``PcapNgWriter`` wants a ``Packet`` per frame (~5k packets/s once the bytes are dissected);
its byte-level path (``RawPcapNgWriter._write_packet``) is private, writes each block
unbuffered and cannot set the reception type. This module, measured on 100k 140-byte
frames to tmpfs: ~700k packets/s without comments; with a JSON comment per packet
~300-450k/s when segments of a flow share their attribution's sockets (comments are cached
per distinct attribution, JSON per socket), ~100k/s if every attribution differs. The
formats are small and fully specified. scapy's ``rdpcap`` and ``tshark`` are the references
the tests check against.

pcapng (the default) keeps everything conntui knows about a packet:

* one SHB (``shb_userappl`` = "conntui"), then one IDB per (link type, interface name,
  ifindex) on first use: ``if_name``, ``if_tsresol`` = 6 (µs: a float epoch timestamp holds
  no more), and ``if_description`` = ``ifindex N`` (pcapng has no ifindex option; the
  reader parses this exact form back);
* one EPB per packet: ``epb_flags`` direction (inbound / outbound) and reception type
  (unicast, multicast, broadcast, promiscuous) from the Linux packet type, and
  ``opt_comment`` = the attribution in two lines, the JSON line written in full once per
  ``REF_WINDOW`` packets per distinct attribution (comments.py says how).

  packets then read as carrying no attribution).

Classic pcap has one link type per file and no comments: raw IP frames (how conntui
captures) are written as LINKTYPE_LINUX_SLL2 so the interface index and the packet type
(direction) survive; frames that already have a link type keep it. A frame whose link type
differs from the file's is converted to SLL2 when the file is SLL2, else skipped (counted in
``Writer.skipped``). The pcap header is written with the first frame (or at ``close()``).

Durability (Ctrl-C, SIGTERM): every ``write`` appends one whole block (or record) to a C
``io.BufferedWriter`` in a single call; the buffer goes to the file when the next block
would overflow ``flush_bytes`` and on ``flush()``/``close()``, always as whole blocks. The
file is thus a valid capture up to the last flushed packet (a process killed in the middle
of a write(2) can leave a torn last block: ``read_capture`` stops cleanly there, tshark
reads every whole packet and warns that the file was cut short).
"""

from __future__ import annotations

import io
import os
import struct
import threading
from types import TracebackType
from typing import IO, Any, Final, cast

from ..model import (
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    Attribution,
    Frame,
    Segment,
)
from .comments import COMMENT_JSON_PREFIX, COMMENT_REF_PREFIX, REF_WINDOW, SocketJson, comment_text
from .errors import ExportError
from .formats import (
    ARPHRD_ETHER,
    ARPHRD_NONE,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    SNAPLEN,
    Target,
)
from .private import create_private_file

_RAW_IP = frozenset((LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n & 3)


_PADS = tuple(_pad4(n) for n in range(4))  # indexed by ``length & 3``


def _opt(code: int, value: bytes) -> bytes:
    """One pcapng option (little endian), padded to 32 bits."""
    return struct.pack("<HH", code, len(value)) + value + _pad4(len(value))


# Process information (``--pcapng-pib``). The pcapng draft has no Process Information Block
# yet: its text (draft-ietf-opsawg-pcapng) defines only the EPB option
# ``epb_processid_threadid`` (code 8: the pid and tid of the process that originated the
# packet, 32 bits each, in the section's byte order). Wireshark's development tree (after
# 4.6) reads and writes the proposed PIB body inside a Wireshark custom block until a block
# type is assigned: block type 0x00000BAD (a custom block that may be copied), Wireshark's
# PEN 32622, then an entry that is little-endian whatever the section's order: entry type
# 3 (process information), entry length, the 32-bit pid and the PIB's options (2 pib_name,
# 3 pib_path, 4 pib_cmdline, 5 pib_ppid, 6 pib_uid, 7 pib_user, 8 pib_uuid, 9
# pib_starttime); a packet names its process with ``epb_processid_threadid``, and where
# several blocks share a pid the last one before the packet is its process. Released
# Wireshark reads such a file without error but does not use either: tshark 4.0 (Debian 12,
# tested) shows each custom block as a frame of its own, with no packet, and ignores the
# option; so with ``pib`` every comment carries its JSON in full (no "frame N" references,
# whose numbers would differ between the two).
PIB_BLOCK_TYPE: Final = 0x00000BAD
PEN_WIRESHARK: Final = 32622
PIB_ENTRY_TYPE: Final = 3
OPT_PIB_NAME: Final = 2
OPT_EPB_PROCESSID_THREADID: Final = 8


def pib_block(pid: int, name: str) -> bytes:
    """A Wireshark custom block carrying the Process Information Block of ``pid``."""
    opts = _opt(OPT_PIB_NAME, name.encode("utf-8", "surrogateescape")[:0xFFFF]) if name else b""
    entry = struct.pack("<I", pid & 0xFFFFFFFF) + opts + (struct.pack("<HH", 0, 0) if opts else b"")
    body = struct.pack("<III", PEN_WIRESHARK, PIB_ENTRY_TYPE, len(entry)) + entry
    total = 12 + len(body)
    return struct.pack("<II", PIB_BLOCK_TYPE, total) + body + struct.pack("<I", total)


def processid_opt(pid: int, tid: int = 0) -> bytes:
    """The EPB option ``epb_processid_threadid`` (tid 0: not known)."""
    return _opt(OPT_EPB_PROCESSID_THREADID, struct.pack("<II", pid & 0xFFFFFFFF, tid & 0xFFFFFFFF))


def _epb_flags(pkttype: int) -> int:
    """epb_flags: bits 0-1 direction (1 inbound, 2 outbound), bits 2-4 reception type."""
    if pkttype == PACKET_OUTGOING:
        return 2
    reception = {PACKET_HOST: 1, PACKET_MULTICAST: 2, PACKET_BROADCAST: 3, PACKET_OTHERHOST: 4}
    return 1 | (reception.get(pkttype, 0) << 2)


def _ethertype(frame: Frame) -> int:
    if frame.protocol:
        return frame.protocol
    version = frame.data[0] >> 4 if frame.data else 0
    return 0x86DD if version == 6 else 0x0800


def _to_sll2(frame: Frame) -> bytes | None:
    """``frame`` as a LINKTYPE_LINUX_SLL2 frame, or None if its link type is not convertible."""
    lt, data = frame.linktype, frame.data
    pkttype = frame.pkttype if 0 <= frame.pkttype <= 255 else PACKET_HOST
    if lt in _RAW_IP:
        head = struct.pack(">HHIHBB8s", _ethertype(frame), 0, frame.ifindex, ARPHRD_NONE, pkttype, 0, b"")
        return head + data
    if lt == LINKTYPE_LINUX_SLL and len(data) >= 16:
        sll_pkttype, hatype, halen = struct.unpack_from(">HHH", data, 0)
        proto = struct.unpack_from(">H", data, 14)[0]
        head = struct.pack(
            ">HHIHBB8s", proto, 0, frame.ifindex, hatype, sll_pkttype & 0xFF, min(halen, 8), data[6:14]
        )
        return head + data[16:]
    if lt == LINKTYPE_ETHERNET and len(data) >= 14:
        proto = struct.unpack_from(">H", data, 12)[0]
        head = struct.pack(">HHIHBB8s", proto, 0, frame.ifindex, ARPHRD_ETHER, pkttype, 6, data[6:12])
        return head + data[14:]
    return None


class Writer:
    """A capture file being written. Use ``open_writer``; ``with`` closes it.

    Packets go through a C ``io.BufferedWriter`` of ``flush_bytes``: appending a block and
    flushing the buffer are each one C call, so neither a second thread calling ``flush``
    nor a KeyboardInterrupt (raised between two Python bytecodes) can tear or duplicate a
    block. The bookkeeping beside the file (``count``, the interface table, the pcap
    header) is plain Python, so call ``write`` from the capture thread, not the main one
    (KeyboardInterrupt only reaches the main thread). ``close`` is idempotent. A stream
    target is flushed and left open (its owner closes it).
    """

    format = ""

    def __init__(self, target: Target, *, flush_bytes: int = 1 << 20, overwrite: bool = False) -> None:
        self.count = 0  # frames written
        self.skipped = 0  # frames that could not be written in this format
        self._lock = threading.Lock()
        self._closed = False
        self._stream: IO[bytes] | None = None
        if isinstance(target, str | os.PathLike):
            self.name = os.fsdecode(target)
            fd = create_private_file(target, overwrite=overwrite)
            self._file = io.BufferedWriter(io.FileIO(fd, "wb"), flush_bytes)
        else:
            self._stream = target
            self.name = str(getattr(target, "name", "<stream>"))
            try:  # any writable binary stream will do, not only a raw file
                self._file = io.BufferedWriter(target, flush_bytes)  # type: ignore[arg-type]
            except (AttributeError, OSError, ValueError) as e:
                raise ExportError(f"cannot write {self.name}: {e}") from None
        try:
            self._start()
        except BaseException:
            self._release()
            raise

    # subclasses -------------------------------------------------------------------------

    def _start(self) -> None:
        """Write the file header."""

    def _finish(self) -> None:
        """Last words before close (pcap: the header of an empty file)."""

    def write(self, frame: Frame, seg: Segment | None = None, att: Attribution | None = None) -> None:
        raise NotImplementedError

    # output -----------------------------------------------------------------------------

    def _put(self, data: bytes) -> None:
        """Append whole blocks (one C call: all or nothing)."""
        try:
            self._file.write(data)
        except ValueError:  # closed, or detached from its stream
            raise ExportError(f"{self.name}: the capture file is closed") from None
        except OSError as e:
            raise ExportError(f"cannot write {self.name}: {e.strerror or e}") from None

    def put_blocks(self, blocks: bytes, count: int) -> None:
        """Append ``count`` whole packet blocks built elsewhere (the C fast path), in one
        C call like every other write."""
        self._put(blocks)
        self.count += count

    def _append(self, block: bytes) -> None:
        self._put(block)
        self.count += 1

    def flush(self) -> None:
        """Put every packet written so far in the file (whole blocks only)."""
        if self._closed:
            return
        try:
            self._file.flush()
            if self._stream is not None:
                self._stream.flush()
        except ValueError:  # closed meanwhile
            pass
        except OSError as e:
            raise ExportError(f"cannot write {self.name}: {e.strerror or e}") from None

    def close(self) -> None:
        """Flush and close; safe to call twice (or after a failed flush)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._finish()
                self.flush()
            finally:
                self._release()

    def _release(self) -> None:
        self._closed = True
        try:
            if self._stream is None:
                self._file.close()
            else:
                self._file.detach()  # leaves the caller's stream open
        except (OSError, ValueError):  # a failed flush, already reported by flush()
            if self._stream is None:
                self._file.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PcapNgWriter(Writer):
    """pcapng with one IDB per interface and the attribution as each packet's comment."""

    format = "pcapng"
    _TAIL = struct.Struct("<4xI")  # opt_endofopt + trailing block length
    _EPB = struct.Struct("<IIIIIII")

    def __init__(
        self, target: Target, *, flush_bytes: int = 1 << 20, overwrite: bool = False, pib: bool = False
    ) -> None:
        # ``pib``: also write process information blocks and ``epb_processid_threadid``
        # (``--pcapng-pib``; see ``pib_block``)
        self.pib = pib
        self._pib_written: dict[int, str] = {}  # pid → the name of its last PIB
        super().__init__(target, flush_bytes=flush_bytes, overwrite=overwrite)

    def _start(self) -> None:
        self._interfaces: dict[tuple[int, str, int], int] = {}
        self._comments: dict[tuple[object, ...], list[Any]] = {}
        self._by_att: dict[int, tuple[Attribution, list[Any]]] = {}
        # read by the C fast path (``block_state``); with ``pib`` every comment carries its
        # JSON in full: released Wireshark counts each PIB's custom block as a frame, so
        # "frame N" in a reference would name another frame there than in Wireshark's
        # development tree. The fast path writes only references, so then every packet comes
        # to ``write``.
        self._ref_window = 0 if self.pib else REF_WINDOW
        self._sock_json = SocketJson()
        self._flag_opts = {
            t: _opt(2, struct.pack("<I", _epb_flags(t)))
            for t in (PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING)
        }
        opts = _opt(4, b"conntui")
        total = 28 + len(opts) + 4
        shb = struct.pack("<IIIHHq", 0x0A0D0D0A, total, 0x1A2B3C4D, 1, 0, -1)
        self._put(shb + opts + self._TAIL.pack(total))
        self.flush()

    def block_state(
        self,
    ) -> tuple[
        dict[tuple[int, str, int], int], dict[int, tuple[Attribution, list[Any]]], dict[int, bytes], int, int
    ]:
        """What the C fast path (fastpath.py) builds this file's packet blocks from, as
        ``write`` does: the interface ids and the comments cached per attribution (both read
        and updated in place), the packet-type options, the blocks written so far and the
        window in which a comment is written as a reference to an earlier one."""
        return self._interfaces, self._by_att, self._flag_opts, self.count, self._ref_window

    def _interface(self, linktype: int, iface: str, ifindex: int) -> int:
        opts = b""
        if iface:
            opts += _opt(2, iface.encode("utf-8", "surrogateescape"))
        if ifindex:
            opts += _opt(3, f"ifindex {ifindex}".encode())
        opts += _opt(9, b"\x06")
        total = 20 + len(opts) + 4
        idb = struct.pack("<IIHHI", 1, total, linktype, 0, SNAPLEN) + opts + self._TAIL.pack(total)
        with self._lock:
            iid = self._interfaces.get((linktype, iface, ifindex))
            if iid is None:  # not added meanwhile by another thread
                iid = len(self._interfaces)
                self._put(idb)  # before any EPB can name it
                self._interfaces[(linktype, iface, ifindex)] = iid
        return iid

    def _comment(self, att: Attribution) -> list[Any]:
        """``[full option, reference option, frame number of the last full one, line 1,
        the attribution]`` for ``att``, cached: rendering JSON costs ~15 µs, a hit ~1 µs. ``write`` (and the C
        fast path, fastpath.py) choose between the two options and update the entry.

        Sockets come from the socket table, so consecutive segments of a flow share the
        same ``SocketEntry`` objects: the key compares them by identity (the cached
        attribution keeps them alive, so their ids stay theirs) instead of hashing them.
        """
        hit = self._by_att.get(id(att))
        if hit is not None and hit[0] is att:  # the engine hands a flow the same object
            return hit[1]
        key = (
            att.match,
            id(att.receiver),
            id(att.sender),
            id(att.listener),
            tuple(map(id, att.candidates)),
            att.explain,
            att.sender_explain,
            att.steps,
            att.notes,
            att.related,
        )
        entry = self._comments.get(key)
        if entry is None:
            text = comment_text(att, self._sock_json).encode("utf-8", "surrogateescape")
            human = text[: text.index(b"\n" + COMMENT_JSON_PREFIX.encode())]
            if len(self._comments) >= 4096:
                self._comments.clear()
            # the entry holds ``att``: its sockets stay alive, so the ids in ``key`` stay theirs
            entry = self._comments[key] = [_opt(1, text), b"", 0, human, att]
        if len(self._by_att) >= 4096:
            self._by_att.clear()
        self._by_att[id(att)] = (att, entry)  # holds ``att``, so its id stays its own
        return entry

    def _comment_opt(self, att: Attribution) -> bytes:
        """The comment option of the next packet: the JSON in full, or where it is."""
        entry = self._comment(att)
        number = self.count + 1
        if entry[2] and number - entry[2] <= self._ref_window:
            return cast(bytes, entry[1])
        entry[2] = number
        entry[1] = _opt(1, entry[3] + b"\n" + COMMENT_REF_PREFIX.encode() + str(number).encode())
        return cast(bytes, entry[0])

    def write(self, frame: Frame, seg: Segment | None = None, att: Attribution | None = None) -> None:
        """Append one EPB; ``att`` becomes its comment (else the frame's own comment, if any).

        On the capture thread for every packet: kept flat (no helper calls on the common
        path) because each Python call costs a tenth of a microsecond here."""
        iface_key = (frame.linktype, frame.iface, frame.ifindex)
        iid = self._interfaces.get(iface_key)
        if iid is None:
            iid = self._interface(*iface_key)
        data = frame.data
        caplen = len(data)
        orig = frame.wire_len if frame.wire_len > caplen else caplen
        if caplen > SNAPLEN:
            data = data[:SNAPLEN]
            caplen = SNAPLEN
        ts = frame.ts
        ticks = int(ts * 1_000_000 + 0.5) if ts > 0 else 0
        opts = self._flag_opts.get(frame.pkttype, b"")
        pibs = b""
        if att is not None:
            opts = self._comment_opt(att) + opts
            if self.pib:
                pibs, pid_opt = self._process_info(att)
                opts += pid_opt
        elif frame.comment:
            opts = _opt(1, frame.comment.encode("utf-8", "surrogateescape")) + opts
        total = 36 + caplen + (-caplen & 3) + len(opts)
        block = b"".join(
            (
                pibs,
                self._EPB.pack(6, total, iid, ticks >> 32, ticks & 0xFFFFFFFF, caplen, orig),
                data,
                _PADS[caplen & 3],
                opts,
                self._TAIL.pack(total),
            )
        )
        try:  # one C call: the block is in the buffer whole, or not at all
            self._file.write(block)
        except ValueError:
            raise ExportError(f"{self.name}: the capture file is closed") from None
        except OSError as e:
            raise ExportError(f"cannot write {self.name}: {e.strerror or e}") from None
        self.count += 1

    def _process_info(self, att: Attribution) -> tuple[bytes, bytes]:
        """(the PIBs a packet of ``att`` needs first, its ``epb_processid_threadid``).

        A PIB for every process holding the sender or receiver socket, written once per
        pid and again when the pid's name changes (a reused pid); the option names the
        sender's first holder, the process that originated the packet (the receiver's
        processes are in the comment: the option has room for one)."""
        blocks = []
        for sock in (att.sender, att.receiver):
            for h in sock.holders if sock is not None else ():
                if h.pid > 0 and self._pib_written.get(h.pid) != h.process:
                    if len(self._pib_written) >= 65536:
                        self._pib_written.clear()
                    self._pib_written[h.pid] = h.process
                    blocks.append(pib_block(h.pid, h.process))
        sender = att.sender.holders if att.sender is not None else ()
        opt = processid_opt(sender[0].pid) if sender and sender[0].pid > 0 else b""
        return b"".join(blocks), opt


class PcapWriter(Writer):
    """Classic pcap (µs). Raw IP frames become LINKTYPE_LINUX_SLL2; no comments."""

    format = "pcap"
    _REC = struct.Struct("<IIII")

    def _start(self) -> None:
        self.linktype: int | None = None

    def _header(self, linktype: int) -> None:
        self._put(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, linktype))
        self.linktype = linktype

    def _finish(self) -> None:
        if self.linktype is None:
            self._header(LINKTYPE_LINUX_SLL2)

    def write(self, frame: Frame, seg: Segment | None = None, att: Attribution | None = None) -> None:
        """Append one record (``seg``/``att`` are not stored: pcap has no comments)."""
        if self.linktype is None:
            self._header(LINKTYPE_LINUX_SLL2 if frame.linktype in _RAW_IP else frame.linktype)
        data = frame.data
        if frame.linktype != self.linktype:
            converted = _to_sll2(frame) if self.linktype == LINKTYPE_LINUX_SLL2 else None
            if converted is None:
                self.skipped += 1
                return
            data = converted
        orig = max(len(frame.data), frame.wire_len) + len(data) - len(frame.data)
        if len(data) > SNAPLEN:
            data = data[:SNAPLEN]
        sec, usec = divmod(max(round(frame.ts * 1_000_000), 0), 1_000_000)
        self._append(self._REC.pack(sec, usec, len(data), orig) + data)


def open_writer(
    target: Target,
    fmt: str | None = None,
    *,
    flush_bytes: int = 1 << 20,
    overwrite: bool = False,
    pib: bool = False,
) -> Writer:
    """A writer for ``target`` (a path or a binary stream).

    ``fmt`` is "pcap" or "pcapng"; by default a path ending in ``.pcap`` gets classic pcap
    and anything else (including a stream) pcapng. A path is created as
    ``create_private_file`` says: mode 0600, owned by the user behind sudo, never through a
    symbolic link, and an existing file is replaced only with ``overwrite`` (else
    ``ExportExists``). Raises ``ExportError`` when the path cannot be opened for writing.
    ``pib``: pcapng only, process information blocks too (``PcapNgWriter``).
    """
    if fmt is None:
        path = os.fsdecode(target) if isinstance(target, str | os.PathLike) else ""
        fmt = "pcap" if path.lower().endswith(".pcap") else "pcapng"
    if fmt == "pcapng":
        return PcapNgWriter(target, flush_bytes=flush_bytes, overwrite=overwrite, pib=pib)
    if fmt == "pcap":
        return PcapWriter(target, flush_bytes=flush_bytes, overwrite=overwrite)
    raise ValueError(f"unknown capture format {fmt!r} (pcap or pcapng)")
