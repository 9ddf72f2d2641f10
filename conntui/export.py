"""Capture files: streaming pcap / pcapng writers and a pcap / pcapng reader.

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
formats are small and fully specified; the reader uses the same ``struct`` code (~200k
packets/s). scapy's ``rdpcap`` and ``tshark`` are the references the tests check against.

pcapng (the default) keeps everything conntui knows about a packet:

* one SHB (``shb_userappl`` = "conntui"), then one IDB per (link type, interface name,
  ifindex) on first use: ``if_name``, ``if_tsresol`` = 6 (µs: a float epoch timestamp holds
  no more), and ``if_description`` = ``ifindex N`` (pcapng has no ifindex option; the
  reader parses this exact form back);
* one EPB per packet: ``epb_flags`` direction (inbound / outbound) and reception type
  (unicast, multicast, broadcast, promiscuous) from the Linux packet type, and
  ``opt_comment`` = the attribution, two lines::

      conntui: python3[42] fd 3 → python3[43] fd 7 (established): <explain>
      conntui-json: {"receiver":...,"sender":...,"match":"established",...}

  Line 1 is for people reading the comment in Wireshark (terminal-safe text); line 2 is
  what ``attribution_from_comment`` reads back for ``-r``. The JSON (about 1 KB) is the
  same for every segment of a flow, and at 250k packets/s writing it each time was most of
  the file (1.35 KB a packet, 340 MB/s) and of the capture thread's time. So every packet
  keeps line 1, and line 2 is written in full once per ``REF_WINDOW`` packets per distinct
  attribution; the packets in between say where it is::

      conntui-json-ref: frame 17

  (Wireshark's frame number: the 17th packet of the file). The reader puts the JSON back
  in place, so ``Frame.comment`` is always the two-line form; it keeps the JSON of the last
  ``REF_WINDOW`` packets only (a file cut with editcap may lose a referenced packet: those
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

import contextlib
import io
import json
import os
import re
import select
import stat
import struct
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import IO, Any, Final, cast

from . import fastpath
from .decode import decode_frame
from .jsonout import dict_to_attribution, safe_text, socket_summary, socket_to_dict
from .model import (
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    Attribution,
    Frame,
    Match,
    Record,
    Segment,
    SocketEntry,
)
from .privileges import give_to_invoking_user

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_RAW",
    "STDOUT",
    "CaptureFileError",
    "CaptureReader",
    "ExportError",
    "ExportExists",
    "PcapNgWriter",
    "PcapWriter",
    "StdoutWriter",
    "Writer",
    "attribution_from_comment",
    "attribution_json",
    "comment_text",
    "create_private_file",
    "open_stdout_writer",
    "open_writer",
    "ptcpdump_attribution",
    "read_capture",
]

LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
_RAW_IP = frozenset((LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6))

SNAPLEN: Final = 262144
ARPHRD_ETHER: Final = 1
ARPHRD_NONE: Final = 0xFFFE  # what SLL2 says for frames captured without a link header

COMMENT_PREFIX: Final = "conntui: "
COMMENT_JSON_PREFIX: Final = "conntui-json: "
COMMENT_REF_PREFIX: Final = "conntui-json-ref: frame "
# A packet whose attribution's JSON is in one of the previous REF_WINDOW packets of the file
# names that packet instead of repeating the JSON (see the module docstring).
REF_WINDOW: Final = 8192


class ExportError(Exception):
    """The capture file cannot be written (one line, for the user)."""


class ExportExists(ExportError):
    """The target file exists and overwriting was not asked for (a UI may ask, then retry
    with ``overwrite=True``)."""


class CaptureFileError(Exception):
    """The capture file cannot be read: missing, not a capture, corrupt (one line)."""


# ---------------------------------------------------------------------------------------
# comments


_dumps = json.JSONEncoder(separators=(",", ":")).encode


class _SocketJson:
    """Socket → compact JSON text, cached by identity: the sockets of an attribution come
    from the socket table and are shared by every segment of a flow."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._cache: dict[int, tuple[SocketEntry, str]] = {}

    def __call__(self, sock: SocketEntry | None) -> str:
        if sock is None:
            return "null"
        hit = self._cache.get(id(sock))
        if hit is not None and hit[0] is sock:
            return hit[1]
        text = _dumps(socket_to_dict(sock, compact=True))
        if len(self._cache) >= self.limit:
            self._cache.clear()
        self._cache[id(sock)] = (sock, text)  # holds ``sock``, so its id stays its own
        return text


def attribution_json(att: Attribution, sock_json: Callable[[SocketEntry | None], str] | None = None) -> str:
    """``json.dumps(attribution_to_dict(att, compact=True))`` (compact separators), built
    from per-socket fragments so a writer can cache them."""
    sj = sock_json or (lambda s: _dumps(socket_to_dict(s, compact=True)))
    parts = [
        '{"receiver":',
        sj(att.receiver),
        ',"sender":',
        sj(att.sender),
        ',"match":',
        _dumps(att.match.value),
        ',"explain":',
        _dumps(att.explain),
    ]
    if att.listener is not None:
        parts += (',"listener":', sj(att.listener))
    if att.candidates:
        parts += (',"candidates":[', ",".join(map(sj, att.candidates)), "]")
    if att.steps:
        parts += (',"steps":', _dumps([{"what": st.what, "result": st.result} for st in att.steps]))
    if att.sender_explain:
        parts += (',"sender_explain":', _dumps(att.sender_explain))
    if att.notes:
        parts += (',"notes":', _dumps(list(att.notes)))
    if att.related:
        parts += (',"related":', _dumps(list(att.related)))
    if att.kernel is not None:
        k = att.kernel
        verdict = {"verdict": k.verdict, "reason": k.reason, "source": k.source, "socket": k.socket}
        parts += (',"kernel":', _dumps(verdict))
    if att.agrees is not None:
        parts += (',"agrees":', "true" if att.agrees else "false")
    parts.append("}")
    return "".join(parts)


def comment_text(att: Attribution, sock_json: Callable[[SocketEntry | None], str] | None = None) -> str:
    """The per-packet comment: a human summary line, then ``conntui-json: {...}``."""
    sender, receiver = socket_summary(att.sender), socket_summary(att.receiver)
    human = f"{COMMENT_PREFIX}{sender} → {receiver} ({att.match.value})"
    if att.explain:
        human += ": " + safe_text(att.explain)
    for note in att.notes:
        human += " " + safe_text(note)
    if att.kernel is not None:
        human += " kernel: " + safe_text(att.kernel.text())
        if att.agrees is False:
            human += " (conntui's prediction disagreed)"
    return f"{human}\n{COMMENT_JSON_PREFIX}{attribution_json(att, sock_json)}"


_parsed: dict[str, Attribution | None] = {}


def attribution_from_comment(comment: str) -> Attribution | None:
    """The attribution a conntui comment carries (its ``conntui-json:`` line), else None.

    Segments of a flow carry the same comment, so parsed lines are cached (bounded)."""
    for line in comment.split("\n"):
        if line.startswith(COMMENT_JSON_PREFIX):
            if line in _parsed:
                return _parsed[line]
            try:
                att: Attribution | None = dict_to_attribution(json.loads(line[len(COMMENT_JSON_PREFIX) :]))
            except Exception:  # a hostile file: deep nesting, 1e400 as a pid, ... → no attribution
                att = None
            if len(_parsed) >= 4096:
                _parsed.clear()
            _parsed[line] = att
            return att
    if comment.startswith(PTCPDUMP_PREFIX):
        return ptcpdump_attribution(comment)
    return None


# ptcpdump (an eBPF tcpdump) writes the local process of each packet as pcapng comments, one
# option per group, each "Key: value" lines: "PID: 42\nCmd: /usr/bin/curl\nArgs: curl x",
# then optionally ThreadId/ThreadName, UserId/GroupId, ParentPID/ParentCmd/ParentArgs,
# ContainerName/ContainerId/ContainerImage/ContainerLabels, PodName/PodNamespace/... (the
# reader joins a packet's comments with newlines).
PTCPDUMP_PREFIX: Final = "PID: "
_PTCPDUMP_TEXT = 200  # characters kept of each value (Args can be a whole command line)


def ptcpdump_attribution(comment: str) -> Attribution | None:
    """What a ptcpdump comment says about a packet, as an ``unknown`` attribution whose
    note names the process: ptcpdump records the process, not the socket, the fd, nor why
    the kernel chose it, so conntui claims no more."""
    fields: dict[str, str] = {}
    for line in comment.split("\n"):
        key, sep, value = line.partition(": ")
        if sep and key.isalnum() and key not in fields:
            fields[key] = value[:_PTCPDUMP_TEXT]
    pid = fields.get("PID", "")
    if not pid.isdigit() or len(pid) > 10:
        return None
    cmd = fields.get("Cmd", "") or "?"
    what = f"{cmd}[{pid}]"
    if fields.get("ContainerName") or fields.get("ContainerId"):
        what += f" in container {fields.get('ContainerName') or fields.get('ContainerId')}"
    if fields.get("PodName"):
        what += f" (pod {fields.get('PodNamespace', '')}/{fields['PodName']})"
    explain = f"Recorded by ptcpdump: the local process of this packet is {what}"
    if fields.get("Args"):
        explain += f", run as: {fields['Args']}"
    explain += ". ptcpdump records no socket, fd or kernel decision."
    return Attribution(Match.UNKNOWN, explain=explain, notes=(f"ptcpdump: {what}",))


# ---------------------------------------------------------------------------------------
# writers


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


Target = str | os.PathLike[str] | IO[bytes]
_SYMLINK = "it is a symbolic link (conntui never writes through one)"


def create_private_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
    """Open a new capture file for writing, as a root process must; returns the fd.

    * never through a symbolic link at ``path`` (``O_EXCL``/``O_NOFOLLOW``: a link planted
      where the file will be, pointing at ``/etc/shadow``, is an error, its target untouched);
    * never over an existing file unless ``overwrite``: then only a regular file is
      replaced, by unlinking it and creating a new one (never truncating through a hard link
      or into a device or FIFO);
    * mode 0600 (packets and process names are private), owned by the person behind
      ``sudo`` (``SUDO_UID``/``SUDO_GID``) rather than root.

    Symbolic links in the *directories* of ``path`` are followed, as the person typed them.
    Raises ``ExportExists`` or ``ExportError`` (one line).
    """
    name = os.fsdecode(path)
    if overwrite:
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise ExportError(f"cannot write {name}: {e.strerror or e}") from None
        if st is not None:
            if stat.S_ISLNK(st.st_mode):
                raise ExportError(f"cannot write {name}: {_SYMLINK}")
            if not stat.S_ISREG(st.st_mode):
                raise ExportError(f"cannot write {name}: it exists and is not a regular file")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise ExportError(f"cannot replace {name}: {e.strerror or e}") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        if os.path.islink(path):
            raise ExportError(f"cannot write {name}: {_SYMLINK}") from None
        raise ExportExists(f"{name} already exists: not overwriting it (--overwrite replaces it)") from None
    except OSError as e:
        raise ExportError(f"cannot write {name}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        give_to_invoking_user(fd)
    except OSError as e:
        os.close(fd)
        raise ExportError(f"cannot write {name}: {e.strerror or e}") from None
    return fd


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
        self._sock_json = _SocketJson()
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


# ---------------------------------------------------------------------------------------
# standard output (``-w -``)

STDOUT: Final = "-"


class _StdoutStream(io.FileIO):
    """The private copy of standard output ``-w -`` writes to; remembers that its reader
    went away (EPIPE: Python ignores SIGPIPE, so the write fails instead of killing us)."""

    broken_pipe = False

    def write(self, data: Any, /) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:
            self.broken_pipe = True
            raise


class StdoutWriter(PcapNgWriter):
    """pcapng streamed to standard output, for ``conntui -w - | tshark -r -``.

    The engine flushes its writer every 0.25 s, so packets reach the reader as they come, as
    whole blocks. Each flush also checks that the reader is still there (``poll`` says
    POLLERR once the read end of a pipe is closed), so a reader that exits while no packet
    flows still ends the capture. ``broken_pipe`` tells that case from other write errors.
    """

    def flush(self) -> None:
        stream = self._stream
        if not isinstance(stream, _StdoutStream):  # not built by open_stdout_writer
            super().flush()
            return
        try:
            super().flush()
        except ExportError:
            if not stream.broken_pipe:
                raise
        if self._closed or stream.closed:
            return
        poller = select.poll()
        poller.register(stream.fileno(), 0)  # POLLERR and POLLHUP are always reported
        if any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in poller.poll(0)):
            stream.broken_pipe = True
        if stream.broken_pipe:
            raise ExportError("standard output was closed: its reader went away")

    @property
    def broken_pipe(self) -> bool:
        return isinstance(self._stream, _StdoutStream) and self._stream.broken_pipe

    def _release(self) -> None:
        super()._release()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                # whatever a failed flush left in the buffer is dropped: the reader is gone
                stream.close()


def open_stdout_writer(*, flush_bytes: int = 1 << 20, pib: bool = False) -> StdoutWriter:
    """A pcapng writer on standard output (``-w -``).

    The stream gets a private duplicate of fd 1, and fd 1 itself is pointed at standard
    error: nothing else (a stray ``print``, a library's warning) can land in the middle of
    the capture. Refuses a terminal (binary data would garble it). Raises ``ExportError``.
    """
    if os.isatty(1):
        raise ExportError("-w -: standard output is a terminal; pipe it, e.g. conntui -w - | tshark -r -")
    try:
        fd = os.dup(1)
    except OSError as e:
        raise ExportError(f"-w -: standard output is not open: {e.strerror or e}") from None
    sys.stdout.flush()
    os.dup2(2, 1)
    stream = _StdoutStream(fd, "wb")
    stream.name = "standard output"  # for messages
    return StdoutWriter(stream, flush_bytes=flush_bytes, pib=pib)


# ---------------------------------------------------------------------------------------
# reader

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
        reference names (see the module docstring)."""
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


# ---------------------------------------------------------------------------------------
# spool


class PcapngSpool:
    """Session rows that left the in-memory window, kept in a private temporary pcapng.

    The same format as ``-w`` (the attribution rides in each packet's comment), so reading
    rows back is reading a conntui capture file; the file is 0600 and removed on close (and
    unlinked at once where the platform allows reading an unlinked file through /proc).
    """

    def __init__(self, directory: str | None = None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="conntui-spool-", suffix=".pcapng", dir=directory)
        self._stream = os.fdopen(fd, "wb")
        self._writer = open_writer(self._stream, "pcapng")
        self._lock = threading.Lock()
        self.count = 0
        self._closed = False

    def detach(self) -> None:
        """Unlink the file now; it is read back through ``/proc/self/fd`` and vanishes
        with conntui (nothing to remove at the end, which a confined conntui may not)."""
        fd = self._stream.fileno()
        os.unlink(self.path)
        self.path = f"/proc/self/fd/{fd}"

    def add(self, rec: Record) -> None:
        with self._lock:
            if self._closed:
                return
            self._writer.write(rec.frame, rec.segment, rec.attribution)
            self.count += 1

    def add_many(self, recs: list[Record]) -> None:
        """``add`` for each row, in order; the blocks are built in C where it can (the
        rows the C fast path stores leave the window at the packet rate)."""
        fast = fastpath.blocks_builder()
        with self._lock:
            if self._closed:
                return
            writer = self._writer
            i = 0
            while i < len(recs):
                if fast is not None:
                    blob, written, i = fast(recs, i, writer)
                    if written:
                        writer.put_blocks(blob, written)
                    if i >= len(recs):
                        break
                rec = recs[i]  # one the C builder leaves to the writer (a new comment, ...)
                writer.write(rec.frame, rec.segment, rec.attribution)
                i += 1
            self.count += len(recs)

    def records(self, count: int, first_seq: int) -> Iterator[Record]:
        """The first ``count`` spooled rows, numbered from ``first_seq``."""
        with self._lock:
            if self._closed:
                return
            self._writer.flush()
            self._stream.flush()
        reader = read_capture(self.path)
        try:
            for i, frame in enumerate(reader):
                if i >= count:
                    break
                seg = decode_frame(frame)
                if seg is None:
                    continue
                att = attribution_from_comment(frame.comment) or Attribution(Match.UNKNOWN)
                yield Record(first_seq + i, frame, seg, att)
        finally:
            reader.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError, ExportError):
                self._writer.close()
            with contextlib.suppress(OSError):
                self._stream.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
