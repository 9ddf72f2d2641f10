"""Frame sources: a live AF_PACKET capture and saved capture files.

The live source reads a plain ``AF_PACKET``/``SOCK_DGRAM`` socket ("cooked" frames: the
network header first, interface, direction and ethertype in the socket address), which is
an order of magnitude faster than scapy's sniffing and needs no per-interface link-layer
code. scapy is used only to compile tcpdump-syntax filters through libpcap; without
libpcap the capture still runs (port filters are applied in user space) and a BPF
expression gives a clear error.

With the C accelerator built (fastpath.py), ``LiveCapture.pump`` hands the ring's blocks to
it instead of ``read``: it builds the frames and, for most of them, the rows.

On loopback the kernel hands every packet to a packet socket twice (the transmit copy,
tagged ``PACKET_OUTGOING``, then the receive copy); like tcpdump we keep one: on ``lo`` with
``PACKET_IGNORE_OUTGOING``, on ``any`` with a kernel filter that drops ``lo``'s outgoing
copies by packet type and interface index.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .model import PACKET_OUTGOING, Frame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
LINKTYPE_RAW = 101
DLT_RAW = 12  # libpcap's number for raw IP on Linux

# classic BPF opcodes and ancillary offsets (linux/filter.h)
BPF_LD_W_ABS = 0x20
BPF_JMP_JEQ_K = 0x15
BPF_RET_K = 0x06
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8
SNAPLEN = 262144

_TIMESPEC = struct.Struct("@qq")
_STATS = struct.Struct("@II")

Insn = tuple[int, int, int, int]  # (code, jt, jf, k)


class CaptureError(Exception):
    """A one-line, user-facing reason why capture cannot start or go on."""


class FrameSource(Protocol):
    """What the engine reads frames from: a live socket or a file."""

    live: bool
    description: str

    def read(self, timeout: float) -> list[Frame]:
        """The frames available now (waiting up to ``timeout`` s for the first); [] at the
        end of a file or on timeout. ``ended`` tells the two apart."""
        ...

    @property
    def ended(self) -> bool: ...

    def kernel_drops(self) -> int: ...

    def close(self) -> None: ...


def libpcap_available() -> bool:
    try:
        from scapy.libs.winpcapy import pcap_compile  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def compile_bpf(expression: str) -> list[Insn]:
    """Compile a tcpdump-syntax expression for raw IP frames; raises CaptureError."""
    try:
        from scapy.arch.common import compile_filter
        from scapy.error import Scapy_Exception
    except (ImportError, OSError) as exc:  # pragma: no cover - scapy is a dependency
        raise CaptureError(f"cannot compile filter: {exc}") from exc
    try:
        prog = compile_filter(expression, linktype=DLT_RAW)
    except ImportError as exc:
        raise CaptureError(
            "BPF filter expressions need libpcap (apt-get install libpcap0.8); "
            "-p/--port filters work without it"
        ) from exc
    except Scapy_Exception as exc:
        msg = str(exc)
        detail = msg[msg.rfind("(") + 1 : msg.rfind(")")] if "(" in msg else msg
        raise CaptureError(f"bad filter {expression!r}: {detail}") from exc
    return [
        (prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k)
        for i in range(prog.bf_len)
    ]


def _drop_loopback_outgoing(lo_ifindex: int) -> list[Insn]:
    """Prefix that drops frames that are PACKET_OUTGOING on the loopback interface."""
    return [
        (BPF_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & 0xFFFFFFFF),
        (BPF_JMP_JEQ_K, 0, 3, PACKET_OUTGOING),
        (BPF_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_IFINDEX) & 0xFFFFFFFF),
        (BPF_JMP_JEQ_K, 0, 1, lo_ifindex),
        (BPF_RET_K, 0, 0, 0),
    ]


def _attach(sock: socket.socket, insns: list[Insn]) -> None:
    raw = b"".join(struct.pack("HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def interface_names() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def loopback_ifindexes() -> set[int]:
    """Interfaces whose outgoing frames come back as incoming ones (``lo``)."""
    out = set()
    for idx, name in socket.if_nameindex():
        try:
            with open(f"/sys/class/net/{name}/type") as f:
                if f.read().strip() == "772":  # ARPHRD_LOOPBACK
                    out.add(idx)
        except OSError:
            continue
    return out


@dataclass
class _Stats:
    packets: int = 0
    drops: int = 0


PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
_REQ3 = struct.Struct("@IIIIIII")  # tpacket_req3
_BLOCK_HDR = struct.Struct("@8xIII")  # block_desc: (version, offset_to_priv), status, num_pkts, first
_PKT_HDR = struct.Struct("@IIIII4xHH")  # tpacket3_hdr: next, sec, nsec, snaplen, len, (status), mac, net
_SLL_AT = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): the sockaddr_ll follows
_SLL = struct.Struct("@2xHiHB")  # sockaddr_ll: (family), protocol (BE), ifindex, hatype, pkttype
_STATS_V3 = struct.Struct("@III")
# A block is handed over when full or after this many ms: short, because every look-up the
# demux makes is a race with the sockets it looks for (a process may exit a few ms after its
# last segment); a full block at high rates comes sooner anyway.
RETIRE_MS = 1


class _Ring:
    """A TPACKET_V3 receive ring: the kernel fills blocks of packets in shared memory, so a
    batch costs no system call per packet (``recvmsg`` and the interface name look-up per
    AF_PACKET address cost more than the rest of the capture thread; bench/README.md).

    With blocks retired after ``RETIRE_MS``, what the ring can hold while the reader is busy
    (a refresh, a collection, the TUI) is counted in blocks, not bytes: many small blocks
    (256 of 128 KiB, 32 MiB) hold a quarter of a second of a burst, where a few big ones
    held a few milliseconds and lost packets. A block still holds any single frame (64 KiB
    on ``lo``; the kernel truncates larger ones to fit, keeping their length)."""

    def __init__(self, sock: socket.socket, block_size: int = 1 << 17, blocks: int = 256) -> None:
        import mmap

        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_size = 2048
        req = _REQ3.pack(block_size, blocks, frame_size, block_size * blocks // frame_size, RETIRE_MS, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.map = mmap.mmap(
            sock.fileno(), block_size * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self.block_size = block_size
        self.blocks = blocks
        self.current = 0

    def ready(self) -> bool:
        status = _BLOCK_HDR.unpack_from(self.map, self.current * self.block_size)[0]
        return bool(status & TP_STATUS_USER)

    def take(self, names: dict[int, str], limit: int) -> list[Frame]:
        """Frames of the ready blocks, in order (whole blocks; stops after ``limit``)."""
        frames: list[Frame] = []
        mm = self.map
        unpack_pkt = _PKT_HDR.unpack_from
        unpack_sll = _SLL.unpack_from
        ntohs = socket.ntohs
        while len(frames) < limit:
            base = self.current * self.block_size
            status, count, off = _BLOCK_HDR.unpack_from(mm, base)
            if not status & TP_STATUS_USER:
                break
            pos = base + off
            for _ in range(count):
                nxt, sec, nsec, snaplen, length, mac, _net = unpack_pkt(mm, pos)
                proto, ifindex, _hatype, pkttype = unpack_sll(mm, pos + _SLL_AT)
                name = names.get(ifindex)
                if name is None:
                    name = names[ifindex] = ifname(ifindex)
                frames.append(
                    Frame(
                        sec + nsec * 1e-9,
                        mm[pos + mac : pos + mac + snaplen],
                        LINKTYPE_RAW,
                        name,
                        ifindex,
                        pkttype,
                        ntohs(proto),
                        length,
                    )
                )
                pos += nxt
            struct.pack_into("@I", mm, base + 8, 0)  # hand the block back (TP_STATUS_KERNEL)
            self.current = (self.current + 1) % self.blocks
        return frames

    def close(self) -> None:
        self.map.close()


def ifname(ifindex: int) -> str:
    """An interface's name by index (the index as text when it is gone)."""
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return str(ifindex)


class LiveCapture:
    """A cooked AF_PACKET socket on one interface or on all (``any``)."""

    live = True

    def __init__(
        self,
        iface: str = "any",
        bpf: list[Insn] | None = None,
        *,
        bufsize: int = 8 << 20,
        batch: int = 4096,
        ring: bool = True,
    ) -> None:
        self.iface = iface
        self.description = f"live on {iface}"
        self._batch = batch
        self._stats = _Stats()
        self._names: dict[str, int] = {}
        self._ring_names: dict[int, str] = {}
        self._ended = False
        ifindex = 0
        if iface != "any":
            try:
                ifindex = socket.if_nametoindex(iface)
            except OSError:
                names = ", ".join(["any", *interface_names()])
                raise CaptureError(f"unknown interface {iface!r} (available: {names})") from None
        try:
            # Protocol 0: nothing is queued until bind(), after the filter is in place.
            sock = socket.socket(
                socket.AF_PACKET, socket.SOCK_DGRAM, 0 if ifindex else socket.htons(ETH_P_ALL)
            )
        except PermissionError:
            from .privileges import capture_denied_message

            raise CaptureError(capture_denied_message()) from None
        self._sock = sock
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, bufsize)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            program = list(bpf) if bpf else [(BPF_RET_K, 0, 0, SNAPLEN)]
            if ifindex:
                if ifindex in loopback_ifindexes():
                    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                _attach(sock, program)
                sock.bind((iface, ETH_P_ALL))
            else:
                # Bound to every interface from the start: drop everything, drain what
                # slipped in before the filter, then install the real filter.
                _attach(sock, [(BPF_RET_K, 0, 0, 0)])
                sock.setblocking(False)
                while True:
                    try:
                        sock.recv(65536)
                    except BlockingIOError:
                        break
                prefix: list[Insn] = []
                for lo in sorted(loopback_ifindexes()):
                    prefix += _drop_loopback_outgoing(lo)
                _attach(sock, prefix + program)
            sock.setblocking(False)
            self._ancbuf = socket.CMSG_SPACE(_TIMESPEC.size)
            self._ring: _Ring | None = None
            if ring:
                try:
                    self._ring = _Ring(sock)
                except OSError:
                    self._ring = None  # an old kernel or a locked-memory limit: recvmsg
        except OSError as exc:
            sock.close()
            raise CaptureError(f"cannot capture on {iface}: {exc.strerror or exc}") from None

    @property
    def ended(self) -> bool:
        return self._ended

    def _wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for frames; True when some are ready (with a ring: a
        block handed over)."""
        if self._ended:
            return False
        try:
            ready, _, _ = select.select([self._sock], [], [], timeout)
        except (OSError, ValueError):
            self._ended = True
            return False
        if not ready:
            return False
        if self._ring is not None and not self._ring.ready():
            self._check_alive()
            return False
        return True

    def read(self, timeout: float) -> list[Frame]:
        if not self._wait(timeout):
            return []
        if self._ring is not None:
            return self._ring.take(self._ring_names, self._batch)
        frames: list[Frame] = []
        recvmsg = self._sock.recvmsg
        anc = self._ancbuf
        unpack_ts = _TIMESPEC.unpack
        names = self._names
        for _ in range(self._batch):
            try:
                data, ancdata, _flags, addr = recvmsg(SNAPLEN, anc, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENODEV, errno.ENXIO):
                    raise CaptureError(f"interface {self.iface} went away: {exc.strerror}") from None
                raise
            ts = 0.0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = unpack_ts(payload[: _TIMESPEC.size])
                    ts = sec + nsec * 1e-9
            # addr = (ifname, ethertype, pkttype, hatype, hwaddr)
            name = addr[0]
            ifindex = names.get(name)
            if ifindex is None:
                ifindex = names[name] = _ifindex(name)
            frames.append(
                Frame(
                    ts=ts,
                    data=data,
                    linktype=LINKTYPE_RAW,
                    iface=addr[0],
                    ifindex=ifindex,
                    pkttype=addr[2],
                    protocol=addr[1],
                    wire_len=len(data),
                )
            )
        return frames

    def fast_names(self) -> dict[int, str] | None:
        """The ring's interface names, for the C fast path; None without a ring."""
        return self._ring_names if self._ring is not None else None

    def pump(self, fast: Any, timeout: float, budget: int) -> tuple[int, int]:
        """``read`` and ``Engine.process`` in one, through the C fast path (fastpath.py):
        the ready blocks go to ``fast.take``, which stores the common rows itself and hands
        the others to the engine. (frames read, rows stored); ``budget`` < 0: no limit."""
        ring = self._ring
        if ring is None or not self._wait(timeout):
            return 0, 0
        frames, stored = fast.take(ring, self._batch, budget)  # moves ring.current on
        return int(frames), int(stored)

    def _check_alive(self) -> None:
        """A ring reports a vanished interface only as readiness with nothing in it."""
        try:
            self._sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.ENETDOWN, errno.ENODEV, errno.ENXIO):
                raise CaptureError(f"interface {self.iface} went away: {exc.strerror}") from None

    def received(self) -> int:
        """Packets the kernel has put in the socket (its ring or queue) for conntui to read,
        so far: its own count (``tp_packets`` less ``tp_drops``), read with the drops."""
        self.kernel_drops()
        return self._stats.packets - self._stats.drops

    def kernel_drops(self) -> int:
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS_V3.size)
        except OSError:
            return self._stats.drops
        packets, drops = _STATS.unpack(raw[: _STATS.size])  # the kernel resets them on each read
        self._stats.packets += packets
        self._stats.drops += drops
        return self._stats.drops

    def close(self) -> None:
        self._ended = True
        if getattr(self, "_ring", None) is not None:
            ring, self._ring = self._ring, None
            assert ring is not None
            ring.close()
        self._sock.close()


class FileCapture:
    """Frames from a saved pcap/pcapng file (conntui's own files carry attributions)."""

    live = False

    def __init__(self, path: str, batch: int = 4096) -> None:
        from .capfile.errors import CaptureFileError
        from .capfile.reader import read_capture

        self.description = f"file {os.path.basename(path)}"
        self._batch = batch
        try:
            self._it: Iterator[Frame] = iter(read_capture(path))
        except CaptureFileError as exc:
            raise CaptureError(str(exc)) from None
        except OSError as exc:
            raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from None
        self._ended = False
        self._error = CaptureFileError

    @property
    def ended(self) -> bool:
        return self._ended

    def read(self, timeout: float) -> list[Frame]:
        frames: list[Frame] = []
        if self._ended:
            return frames
        try:
            for frame in self._it:
                frames.append(frame)
                if len(frames) >= self._batch:
                    break
            else:
                self._ended = True
        except self._error as exc:
            self._ended = True
            raise CaptureError(str(exc)) from None
        return frames

    def kernel_drops(self) -> int:
        return 0

    def close(self) -> None:
        self._ended = True


class ListSource:
    """A fixed list of frames (tests, demos, the TUI's fake source)."""

    live = False

    def __init__(self, frames: list[Frame], description: str = "frames") -> None:
        self._frames = list(frames)
        self.description = description

    @property
    def ended(self) -> bool:
        return not self._frames

    def read(self, timeout: float) -> list[Frame]:
        out, self._frames = self._frames, []
        return out

    def kernel_drops(self) -> int:
        return 0

    def close(self) -> None:
        self._frames = []
