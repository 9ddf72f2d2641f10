"""An optional kernel tracer: who opened each TCP/UDP socket, recorded at connect/accept time.

A connection that lives under a millisecond (connect, send 1 KB, close) is gone from the
kernel's tables before a sock_diag look-up or a ``/proc/PID/fd`` scan can name its process.
:class:`SocketTracer` runs ``bpftrace`` on tracepoints and records, the moment a process
gets a socket, the socket's 4-tuple together with the (pid, fd) that holds it; the capture
side then asks :meth:`SocketTracer.lookup` for a tuple the socket table no longer knows.

Everything here is optional: ``SocketTracer.start()`` returns ``None`` (and says why in
``SocketTracer.why_not``) without bpftrace, kernel BTF, tracefs or root, and conntui
works as before.

What is traced (only tracepoints: no kprobes, no kfuncs), and how the tuple ↔ (pid, fd)
join is done
--------------------------------------------------------------------------------------------
The join happens *in the kernel*, in the task that made the system call: at a syscall's
exit, the program follows ``curtask->files->fdt->fd[N]`` (kernel BTF types) to the
``struct file`` of fd N, checks that it is a socket (``S_IFSOCK`` inode), then reads the
``struct sock`` behind it: protocol, family, local and remote address and port, network
namespace, plus the socket inode. The current task *is* the holder (pid = tgid, tid, comm),
and N is its fd, so no timing guess is involved.

* ``syscalls:sys_exit_accept4`` / ``sys_exit_accept`` (TCP): the returned fd → the accepted
  socket → its full tuple. The server side of every accepted connection.
* ``syscalls:sys_enter_connect`` (remember the fd per thread) + ``sys_exit_connect`` (TCP and
  UDP): the client side, complete with the local port the kernel chose. Blocking connects
  exit after the handshake; non-blocking ones with ``EINPROGRESS``, tuple already set.
* ``sock:inet_sock_set_state`` SYN_SENT → CLOSE (TCP): a refused (or timed-out) connect has
  released its local port by the time ``connect()`` returns (``inet_put_port`` zeroes
  ``skc_num``; on loopback the RST is processed inside the connect call itself, so even a
  non-blocking connect returns without it). The port survives in ``inet_sport``, which
  this tracepoint reports as ``sport``; it runs in softirq context (its current task is
  meaningless), so only the tuple is taken from it and joined with the connect's
  (pid, fd) *by the struct sock's address*, in whichever order the two events arrive.
* ``syscalls:sys_exit_bind`` (UDP): the local address and port a UDP socket bound.
* ``syscalls:sys_enter_/sys_exit_sendto``, ``sendmsg``, ``sendmmsg`` (UDP, optional): the local
  address and port of an unconnected socket that sends (the kernel auto-binds an unbound one
  during its first send, hence a second look at syscall exit). Deduplicated in the kernel per
  (socket, pid, fd, port), that memory cleared every 10 s: a busy sender costs one event per
  10 s, plus a few BPF instructions per send on any socket.
* ``syscalls:sys_enter_getsid`` from conntui itself with a magic argument: a marker, used to
  know when the probes are attached (``ready``) and to wait for the output to catch up
  (:meth:`SocketTracer.sync`). ``sched:sched_process_exit`` of conntui: bpftrace exits with
  it, even if conntui is killed with SIGKILL.

Only sockets in the traced network namespace are reported (``skc_net`` compared in the
kernel; by default conntui's own namespace), or with ``all_namespaces`` every namespace's:
each line then carries the namespace's inode and goes to that namespace's own timeline and
memory (``timeline_for``, ``memory_for``), so a container's ``127.0.0.1`` connection is
never taken for the host's on the same 4-tuple.

What it cannot see
------------------
* TCP's handshake completes in softirq context, where the current task is whichever process
  happened to run: nothing is attributed there. A connection accepted *nowhere* (still in
  the accept queue, or reset before ``accept()``) has no holder to report; neither has
  a socket created by the kernel itself.
* Sockets obtained without these syscalls: io_uring's connect/accept/send (no syscall
  tracepoint fires), fds passed over SCM_RIGHTS or inherited across fork (the record names
  the process that called connect/accept), TCP Fast Open's ``sendto(MSG_FASTOPEN)``.
* Unconnected UDP: only the local address and port are recorded (the destination of a
  send is per datagram); a look-up falls back from the exact tuple to the local port.
* pids are the kernel's (initial pid namespace); if conntui runs in another pid namespace
  the tracer refuses to start. Threads: ``pid`` is the process (tgid), ``tid`` the thread.
* Time: bpftrace reports events through per-CPU buffers, so a record arrives a few hundred
  µs to a few ms after the syscall (and may be lost under extreme load: ``stats["lost"]``);
  and a server often accept()s *after* the first data segment arrived. Measured with
  bench/shortlived.py (200 flows/s): at the moment the data segment was captured the
  client's record was there for 99.6 % of flows, the server's for 50 %; half a second
  later (when the engine's records settle) for all of them. Look up late, or
  :meth:`SocketTracer.sync` first.
* Remembered sockets are kept ``ttl`` seconds (60) and at most ``max_keys`` tuples.

Cost (2-core VM, loopback): in the kernel, a few BPF instructions per connect, accept and
bind, and ~0.5-1 µs per send on a UDP socket (``udp_sends=False`` turns that off); then
about 20 µs of bpftrace CPU and 10 µs of this process's (the reader thread, under the GIL)
per event, one event per accepted or connected socket. At 200 connections/s that is ~1 %
of a core; a loop of connect+1 KB+close at full speed (13,000-14,000/s) drops to
6,000-10,000/s, the two cores being shared with bpftrace (with the events filtered out in
the kernel, i.e. probes only: 12,000-13,500/s). A loop of 16-byte UDP sendto() calls:
250,000-280,000/s → 190,000-235,000/s.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, TypeVar

from .model import TCP_STATES, Endpoint, Holder, SocketEntry, unmap
from .timeline import DropBatch, KernelEvent, Timeline

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BTF_PATH = "/sys/kernel/btf/vmlinux"
MARKER_BASE = 1_900_000_000  # getsid(MARKER_BASE + n): far above any pid (pid_max ≤ 2**22)
INIT_PID_NS = 0xEFFFFFFC  # PROC_PID_INIT_INO: the inode of the initial pid namespace
_COMM_LEN = 15  # TASK_COMM_LEN - 1
# at most one sync() a this often for predictions waiting for the output (caught_up): each
# costs two marker events through bpftrace and the reader thread
SYNC_EVERY = 0.02

KIND_NAMES = {"A": "accept", "C": "connect", "B": "bind", "S": "send", "X": "refused"}
_PROTOS = {6: "tcp", 17: "udp"}
# Drops: one line each up to DROP_BUDGET a flow a tick (DROP_TICK_MS); past it the kernel
# counts them (@dn, @dt0, @dt1) and the reader turns each tick's differences into DropBatch.
DROP_BUDGET = 16
DROP_TICK_MS = 100
MAP_KEYS_MAX = 16384  # BPFTRACE_MAP_KEYS_MAX: a full @dn would stop counting new flows
_MARKER_MOD = 1 << 27  # marker numbers wrap: MARKER_BASE + 2**27 still fits a pid_t

TupleKey = tuple[str, str, int, str, int]
_V = TypeVar("_V")


class TraceRecord(NamedTuple):
    """One socket as a process got it: the tuple and the (pid, fd) holding it.

    A NamedTuple (like ``model.Segment``): one is built per traced socket, on a thread that
    competes with the capture thread for the GIL."""

    kind: str  # "accept" | "connect" | "bind" | "send"
    proto: str  # "tcp" | "udp"
    family: int  # 4 | 6: the socket's own family (a dual-stack socket is 6)
    laddr: str  # compressed text form, as the socket shows it (``::ffff:…`` on dual stack)
    lport: int
    raddr: str  # "" when not connected (UDP bind / send)
    rport: int
    pid: int
    tid: int
    fd: int
    comm: str
    inode: int = 0  # the socket's inode (``socket:[N]``), 0 if unknown
    t: float = 0.0  # when the syscall returned, epoch seconds
    sk: int = 0  # the kernel address of the struct sock (joins; reused after free)

    @property
    def holder(self) -> Holder:
        return Holder(self.pid, self.fd, self.comm)

    @property
    def key(self) -> TupleKey:
        return (self.proto, unmap(self.laddr), self.lport, unmap(self.raddr), self.rport)

    def former_entry(self, state: str = "CLOSE") -> SocketEntry:
        """A :class:`SocketEntry` for a socket the kernel no longer has: no holder now, this
        record's holder as ``former_holders``, no inode or cookie (nothing live to match)."""
        remote = Endpoint(self.raddr, self.rport) if self.raddr and self.rport else None
        return SocketEntry(
            proto=self.proto,
            family=self.family,
            state=state,
            local=Endpoint(self.laddr, self.lport),
            remote=remote,
            former_holders=(self.holder,),
            first_seen=self.t,
        )


class Event(NamedTuple):
    """One parsed bpftrace line (``E1 …``); ``lport == 0`` for a refused connect's socket."""

    kind: str  # one letter: A C B S X
    pid: int
    tid: int
    fd: int
    ret: int
    sk: int
    inode: int
    protocol: int
    family: int  # AF_INET | AF_INET6
    lport: int
    rport: int
    laddr: str
    raddr: str
    mono: float  # CLOCK_MONOTONIC seconds
    comm: str
    netns: int = 0  # the socket's network namespace (inode); 0: not reported (the traced one)


def _addr4(v: int) -> str:
    return socket.inet_ntop(socket.AF_INET, struct.pack("=I", v & 0xFFFFFFFF))


def _addr6(words: Iterable[int]) -> str:
    return socket.inet_ntop(socket.AF_INET6, struct.pack("=4I", *(w & 0xFFFFFFFF for w in words)))


_E_FIELDS = 23  # fields before comm


def parse_event(data: str) -> Event | None:
    """Parse the text of one ``E1`` printf (see :func:`build_script`); None if malformed.

    Fields: E1 kind pid tid fd ret sk inode protocol family lport dport(be) saddr4 daddr4
    saddr6[4] daddr6[4] nsecs comm — comm is last and may hold spaces or anything else.
    """
    ns_field = data.startswith("E2 ")  # the namespace's inode before comm
    n = _E_FIELDS + ns_field
    parts = data.split(" ", n)
    if len(parts) != n + 1 or parts[0] not in ("E1", "E2") or parts[1] not in KIND_NAMES:
        return None
    try:
        pid, tid, fd, ret, sk, inode, protocol, family, lport, dport_be = map(int, parts[2:12])
        if family == socket.AF_INET:
            laddr, raddr = _addr4(int(parts[12])), _addr4(int(parts[13]))
        elif family == socket.AF_INET6:
            laddr, raddr = _addr6(map(int, parts[14:18])), _addr6(map(int, parts[18:22]))
        else:
            return None
        nsecs = int(parts[22])
        netns = int(parts[23]) if ns_field else 0
    except (ValueError, OverflowError, struct.error):
        return None
    rport = socket.ntohs(dport_be & 0xFFFF)
    return Event(
        parts[1], pid, tid, fd, ret, sk, inode, protocol, family, lport & 0xFFFF, rport,
        laddr, raddr, nsecs / 1e9, parts[n], netns,
    )  # fmt: skip


class Marker(NamedTuple):
    """A marker event: conntui's own ``getsid(MARKER_BASE + seq)``, seen by bpftrace."""

    pid: int
    seq: int


class KernelLine(NamedTuple):
    """A line of the kernel's record (``T1``, ``D1``, ``R1``, ``r1``, ``Y1``, ``P1``): its
    letter and its fields as text (``record_event`` turns them into timeline calls)."""

    kind: str
    fields: list[str]


_KERNEL_FIELDS = {"T1": 9, "D1": 9, "R1": 8, "r1": 2, "Y1": 5, "P1": 3}
# the same lines with the network namespace's inode as a last field (what the program prints)
_KERNEL_FIELDS.update({k[0] + "2": n + 1 for k, n in _KERNEL_FIELDS.items() if k != "P1"})
_KERNEL_FIELDS["D3"] = 11  # D2 with the dropped skb's receive timestamp (ns) before the namespace


class MapPrint(NamedTuple):
    """A printed bpftrace map of the drop counts (``@dn``, ``@dt0``, ``@dt1``): keys as text
    ("reason,proto,sport,dport,state,saddr,daddr,netns") → value."""

    name: str
    values: dict[str, int]


_DROP_MAPS = frozenset({"@dn", "@dt0", "@dt1", "@ds0", "@ds1"})

Parsed = Event | Marker | KernelLine | MapPrint | tuple[str, int]


def parse_line(line: bytes | str) -> Parsed | None:
    """One line of ``bpftrace -f json`` output → an :class:`Event`, a :class:`Marker`,
    ``("lost", n)`` or ``("probes", n)`` (probes attached); None for anything else (maps, garbage)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    kind, data = obj.get("type"), obj.get("data")
    if kind == "printf" and isinstance(data, str):
        if data.startswith(("E1 ", "E2 ")):
            return parse_event(data)
        head = data[:2]
        n = _KERNEL_FIELDS.get(head)
        if n is not None and data[2:3] == " ":
            # the last field (comm) may hold spaces
            fields = data[3:].split(" ", n - 1)
            return KernelLine(head, fields) if len(fields) == n else None
        if data.startswith("M1 "):
            parts = data.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                return Marker(int(parts[1]), int(parts[2]))
        if data.startswith("DZ ") and data[3:].strip().isdigit():
            return ("tick", int(data[3:]))
        return None
    if kind == "map" and isinstance(data, dict) and len(data) == 1:
        name, values = next(iter(data.items()))
        if name in _DROP_MAPS and isinstance(values, dict):
            return MapPrint(name, {str(k): v for k, v in values.items() if isinstance(v, int)})
        return None
    counts = {"lost_events": ("lost", "events"), "attached_probes": ("probes", "probes")}
    if kind in counts and isinstance(data, dict):
        name, field = counts[kind]
        value = data.get(field)
        if isinstance(value, int):
            return (name, value)
    return None


# -- the bpftrace program ------------------------------------------------------------------
#
# bpftrace 0.17 (Debian 12) has no macros, so the program is assembled here. Every event is
# one printf: "E1 <kind> pid tid fd ret sk inode protocol family lport dport(be) saddr4
# daddr4 saddr6[4] daddr6[4] nsecs comm"; fields read from the struct sock in ``$sk``.

_V6 = "$sk->__sk_common.skc_v6_{}.in6_u.u6_addr32[{}]"
_EVENT_ARGS = ", ".join(
    [
        "$sk->sk_protocol",
        "$sk->__sk_common.skc_family",
        "{lport}",
        "$sk->__sk_common.skc_dport",
        "$sk->__sk_common.skc_rcv_saddr",
        "$sk->__sk_common.skc_daddr",
        *(_V6.format("rcv_saddr", i) for i in range(4)),
        *(_V6.format("daddr", i) for i in range(4)),
    ]
)
_EVENT_FMT = "E2 {kind} %d %d %d %d %lu %lu" + " %u" * 14 + " %lu %u %s"


_SK_NS = "$sk->__sk_common.skc_net.net->ns.inum"


def _count_drop(saddr: str, daddr: str) -> str:
    """The bpftrace statements that count a drop past the budget in the kernel (``@dn``) with
    the time of the flow's first and last (``@dt0``, ``@dt1``), keyed by reason, flow, the
    state of the socket found and the namespace."""
    key = f"[args->reason, $proto, $sport, $dport, $st, ntop({saddr}), ntop({daddr}), $ns]"
    return (
        f"\n          @dn{key} = count();"
        f"\n          if (@dt0{key} == 0) {{ @dt0{key} = nsecs; }}"
        f"\n          @dt1{key} = max(nsecs);"
        f"\n          if (@ds0{key} == 0) {{ @ds0{key} = $stamp; }}"
        f"\n          @ds1{key} = max($stamp);"
        "\n          @dany = 1;"
    )


def _printf(kind: str, fd: str, ret: str, lport: str = "$sk->__sk_common.skc_num") -> str:
    """The printf of one event about the socket ``$sk`` (inode in ``$ino``)."""
    fmt = _EVENT_FMT.format(kind=kind)
    args = _EVENT_ARGS.format(lport=lport)
    return f'printf("{fmt}", pid, tid, {fd}, {ret}, (uint64)$sk, $ino, {args}, nsecs, {_SK_NS}, comm);'


def _with_sock(fd: str, netns: int, body: str) -> str:
    """bpftrace statements running ``body`` with ``$fd``, ``$sk`` and ``$ino`` set when
    ``fd`` (an int expression) is an AF_INET/AF_INET6 socket of the traced network
    namespace in the current task's fd table."""
    return f"""
  $fd = (int64)({fd});
  $fdt = curtask->files->fdt;
  if ($fd >= 0 && $fd < (int64)$fdt->max_fds) {{
    $file = *($fdt->fd + $fd);
    if ($file != 0) {{
      $inode = $file->f_inode;
      if (($inode->i_mode & 0xF000) == 0xC000) {{
        $sk = ((struct socket *)$file->private_data)->sk;
        if ($sk != 0) {{
          if ($sk->__sk_common.skc_net.net->ns.inum == @NETNS@ &&
              ($sk->__sk_common.skc_family == 2 || $sk->__sk_common.skc_family == 10)) {{
            $ino = $inode->i_ino;
            {body}
          }}
        }}
      }}
    }}
  }}"""


_SCRIPT = """// generated by conntui.tracer: see its module docstring

tracepoint:syscalls:sys_enter_getsid /pid == @PID@ && args->pid >= @MARKER@/
{
  printf("M1 %d %d", pid, args->pid - @MARKER@);
}

tracepoint:sched:sched_process_exit /pid == @PID@ && tid == @PID@/
{
  exit();
}

tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept
/args->ret >= 0/
{@ACCEPT@
}

tracepoint:syscalls:sys_enter_connect
{
  @cfd[tid] = args->fd + 1;
}

tracepoint:syscalls:sys_exit_connect
/@cfd[tid] != 0/
{@CONNECT@
  delete(@cfd[tid]);
}

tracepoint:syscalls:sys_enter_bind
{
  @bfd[tid] = args->fd + 1;
}

tracepoint:syscalls:sys_exit_bind
/@bfd[tid] != 0/
{
  if (args->ret == 0) {@BIND@
  }
  delete(@bfd[tid]);
}

// A refused (or timed out) connect: the port is still in inet_sport, not in skc_num.
tracepoint:sock:inet_sock_set_state
/args->protocol == 6 && args->oldstate == 2 && args->newstate == 7/
{
  $sk = (struct sock *)args->skaddr;
  if ($sk->__sk_common.skc_net.net->ns.inum == @NETNS@) {
    $ino = (uint64)0;
    @REFUSED@
  }
}
"""

# The kernel's own record (timeline.py): every TCP state change, every drop of a TCP/UDP
# packet with the kernel's reason, every RST the kernel sends or receives, every SYN-ACK it
# retransmits, every exec (names follow it). All tracepoints; the drop probe reads the
# dropped packet's IP and TCP/UDP headers through BTF.
_KERNEL_RECORD = """
tracepoint:sock:inet_sock_set_state
/args->protocol == 6/
{
  $sk = (struct sock *)args->skaddr;
  $ns = $sk->__sk_common.skc_net.net->ns.inum;
  if ($ns == @NETNS@) {
    // the last field but one: bit 0 when no process holds the socket any more (close()d:
    // orphaned); bit 1 when the change is made inside a shutdown() call (FIN_WAIT1 /
    // LAST_ACK entered by shutdown(), the process keeps the socket; by close() it does not);
    // the last: the socket's network namespace
    $how = (uint64)($sk->sk_socket == 0);
    if (@shut[tid] != 0) {
      $how = $how + 2;
    }
    if (args->family == 2) {
      printf("T2 %lu %d %d %u %u %s %s %lu %lu %u", (uint64)args->skaddr, args->oldstate, args->newstate,
             args->sport, args->dport, ntop(args->saddr), ntop(args->daddr), nsecs, $how, $ns);
    } else {
      printf("T2 %lu %d %d %u %u %s %s %lu %lu %u", (uint64)args->skaddr, args->oldstate, args->newstate,
             args->sport, args->dport, ntop(args->saddr_v6), ntop(args->daddr_v6), nsecs, $how, $ns);
    }
  }
}

tracepoint:syscalls:sys_enter_shutdown
{
  @shut[tid] = 1;
}

tracepoint:syscalls:sys_exit_shutdown
{
  delete(@shut[tid]);
}

tracepoint:skb:kfree_skb
/(args->protocol == 0x0800 || args->protocol == 0x86DD)@DROP_FILTER@/
{
  $skb = (struct sk_buff *)args->skbaddr;
  $dev = $skb->dev;
  $ns = (uint64)0;
  if ($dev != 0) {
    $ns = $dev->nd_net.net->ns.inum;
  }
  if ($dev != 0 && $ns == @NETNS@) {
    $ip = $skb->head + $skb->network_header;
    $st = (int64)-1;
    if (args->rx_sk != 0) {
      $st = (int64)((struct sock *)args->rx_sk)->__sk_common.skc_state;
    }
    // the transport header: after the IPv4 header's own length, or the fixed IPv6 header
    if (args->protocol == 0x0800) {
      $proto = ((struct iphdr *)$ip)->protocol;
      $th = $ip + (((struct iphdr *)$ip)->ihl * 4);
    } else {
      $proto = ((struct ipv6hdr *)$ip)->nexthdr;
      $th = $ip + 40;
    }
    if ($proto == 6 || $proto == 17) {
      $seq = (int64)-1;
      if ($proto == 6) {
        $seq = (int64)((*(uint8 *)($th + 4) << 24) | (*(uint8 *)($th + 5) << 16) |
                       (*(uint8 *)($th + 6) << 8) | *(uint8 *)($th + 7));
      }
      $sport = (*(uint8 *)$th << 8) | *(uint8 *)($th + 1);
      $dport = (*(uint8 *)($th + 2) << 8) | *(uint8 *)($th + 3);
      // the receive timestamp a packet socket reports for this skb (0: none): an exact join
      $stamp = (int64)$skb->tstamp;
      // one line a drop up to a budget a flow a tick; past it (a flood) counted in the kernel
      $b = @dbud[$proto, $sport, $dport, $ns];
      @dbud[$proto, $sport, $dport, $ns] = $b + 1;
      if (args->protocol == 0x0800) {
        if ($b < @DROP_BUDGET@) {
          printf("D3 %d %d %u %u %ld %d %s %s %lu %ld %u", args->reason, $proto, $sport, $dport, $seq, $st,
                 ntop(((struct iphdr *)$ip)->saddr), ntop(((struct iphdr *)$ip)->daddr), nsecs, $stamp, $ns);
        } else {@COUNT4@
        }
      } else {
        if ($b < @DROP_BUDGET@) {
          printf("D3 %d %d %u %u %ld %d %s %s %lu %ld %u", args->reason, $proto, $sport, $dport, $seq, $st,
                 ntop(((struct ipv6hdr *)$ip)->saddr.in6_u.u6_addr8),
                 ntop(((struct ipv6hdr *)$ip)->daddr.in6_u.u6_addr8), nsecs, $stamp, $ns);
        } else {@COUNT6@
        }
      }
    }
  }
}

tracepoint:tcp:tcp_send_reset
{
  $sk = (struct sock *)args->skaddr;
  $skb = (struct sk_buff *)args->skbaddr;
  $ns = (uint64)0;
  if ($sk != 0) {
    $ns = $sk->__sk_common.skc_net.net->ns.inum;
  } else if ($skb != 0 && $skb->dev != 0) {
    $ns = $skb->dev->nd_net.net->ns.inum;
  }
  if ($ns == @NETNS@) {
    $s = (struct sockaddr_in6 *)args->saddr;
    $d = (struct sockaddr_in6 *)args->daddr;
    if ($s->sin6_family == 2) {
      printf("R2 %d %d %d %u %u %s %s %lu %u", args->reason, args->state, $skb != 0, $s->sin6_port,
             $d->sin6_port, ntop(((struct sockaddr_in *)args->saddr)->sin_addr.s_addr),
             ntop(((struct sockaddr_in *)args->daddr)->sin_addr.s_addr), nsecs, $ns);
    } else {
      printf("R2 %d %d %d %u %u %s %s %lu %u", args->reason, args->state, $skb != 0, $s->sin6_port,
             $d->sin6_port, ntop($s->sin6_addr.in6_u.u6_addr8), ntop($d->sin6_addr.in6_u.u6_addr8), nsecs,
             $ns);
    }
  }
}

tracepoint:tcp:tcp_receive_reset
{
  $sk = (struct sock *)args->skaddr;
  $ns = $sk->__sk_common.skc_net.net->ns.inum;
  if ($ns == @NETNS@) {
    printf("r2 %lu %lu %u", (uint64)args->skaddr, nsecs, $ns);
  }
}

tracepoint:tcp:tcp_retransmit_synack
{
  $sk = (struct sock *)args->skaddr;
  $ns = $sk->__sk_common.skc_net.net->ns.inum;
  if ($ns == @NETNS@) {
    if (args->family == 2) {
      printf("Y2 %u %u %s %s %lu %u", args->sport, args->dport, ntop(args->saddr), ntop(args->daddr), nsecs,
             $ns);
    } else {
      printf("Y2 %u %u %s %s %lu %u", args->sport, args->dport, ntop(args->saddr_v6), ntop(args->daddr_v6),
             nsecs, $ns);
    }
  }
}

tracepoint:sched:sched_process_exec
{
  printf("P1 %d %lu %s", pid, nsecs, comm);
}

interval:ms:@DROP_TICK_MS@
{
  clear(@dbud);
  if (@dany == 1) {
    // the counts (never cleared: the reader takes differences, so no drop is lost between
    // a print and a clear), then the last drop's time: a drop counted after this print falls
    // in this window and the next one, never in none
    @dany = 0;
    print(@dn);
    print(@dt1);
    print(@ds1);
    print(@dt0);
    print(@ds0);
    printf("DZ %lu", nsecs);
  }
}
"""

_UDP_SENDS = """
tracepoint:syscalls:sys_enter_sendto, tracepoint:syscalls:sys_enter_sendmsg,
tracepoint:syscalls:sys_enter_sendmmsg
{@SEND_ENTER@
}

tracepoint:syscalls:sys_exit_sendto, tracepoint:syscalls:sys_exit_sendmsg,
tracepoint:syscalls:sys_exit_sendmmsg
/@sfd[tid] != 0/
{@SEND_EXIT@
  delete(@sfd[tid]);
}

interval:s:10
{
  clear(@useen);
}
"""

# Unconnected UDP sockets only (connect() was recorded already).
# On entry: a UDP socket that has a port is reported once per dedup period; one without
# (its first send: the kernel auto-binds it during the call) is looked at again on exit.
_SEND_ENTER = """if ($sk->sk_protocol == 17 && $sk->__sk_common.skc_dport == 0) {
              $lport = $sk->__sk_common.skc_num;
              if ($lport == 0) {
                @sfd[tid] = $fd + 1;
              } else if (@useen[(uint64)$sk, pid, $fd, $lport] == 0) {
                @useen[(uint64)$sk, pid, $fd, $lport] = 1;
                @PRINTF@
              }
            }"""
_SEND_EXIT = """$lport = $sk->__sk_common.skc_num;
            if ($lport != 0 && @useen[(uint64)$sk, pid, $fd, $lport] == 0) {
              @useen[(uint64)$sk, pid, $fd, $lport] = 1;
              @PRINTF@
            }"""


def symbols(event: str, tracefs: str | None = None) -> dict[int, str]:
    """The kernel's names for an enum a tracepoint prints (``skb/kfree_skb``'s drop reasons,
    ``tcp/tcp_send_reset``'s reset reasons), read from the tracepoint's own format file, so
    the numbers are this kernel's. Empty when it cannot be read."""
    for d in [tracefs] if tracefs else TRACEFS_DIRS:
        try:
            with open(f"{d}/events/{event}/format", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        return {int(n): name for n, name in re.findall(r'\{\s*(\d+),\s*"([A-Z0-9_]+)"\s*\}', text)}
    return {}


# Drops that are not the kernel refusing a packet: a closing socket's unread queues.
_NOT_REFUSALS = ("QUEUE_PURGE",)


def build_script(
    our_pid: int,
    netns: int,
    *,
    udp_sends: bool = True,
    kernel_record: bool = True,
    drop_reasons: dict[int, str] | None = None,
) -> str:
    """The bpftrace program (see the module docstring for what each probe is for)."""
    accept = "if ($sk->sk_protocol == 6) { " + _printf("A", "$fd", "args->ret") + " }"
    connect = (
        "if ($sk->sk_protocol == 6 || ($sk->sk_protocol == 17 && $sk->__sk_common.skc_dport != 0)) { "
        + _printf("C", "$fd", "args->ret")
        + " }"
    )
    bind = "if ($sk->sk_protocol == 17) { " + _printf("B", "$fd", "args->ret") + " }"
    subs = {
        "@PID@": str(our_pid),
        "@MARKER@": str(MARKER_BASE),
        "@ACCEPT@": _with_sock("args->ret", netns, accept),
        "@CONNECT@": _with_sock("@cfd[tid] - 1", netns, connect),
        "@BIND@": _with_sock("@bfd[tid] - 1", netns, bind),
        "@REFUSED@": _printf("X", "-1", "0", lport="args->sport"),
    }
    script = _SCRIPT
    if kernel_record:
        skip = [n for n, name in (drop_reasons or {}).items() if name in _NOT_REFUSALS]
        subs["@DROP_FILTER@"] = "".join(f" && args->reason != {n}" for n in skip)
        subs["@DROP_BUDGET@"] = str(DROP_BUDGET)
        subs["@DROP_TICK_MS@"] = str(DROP_TICK_MS)
        subs["@COUNT4@"] = _count_drop("((struct iphdr *)$ip)->saddr", "((struct iphdr *)$ip)->daddr")
        subs["@COUNT6@"] = _count_drop(
            "((struct ipv6hdr *)$ip)->saddr.in6_u.u6_addr8", "((struct ipv6hdr *)$ip)->daddr.in6_u.u6_addr8"
        )
        script += _KERNEL_RECORD
    drops = ("@shut", "@dbud", *sorted(_DROP_MAPS), "@dany")
    shut = "".join(f" clear({m});" for m in drops) if kernel_record else ""
    end = f"\nEND\n{{\n  clear(@cfd); clear(@bfd);{shut}\n}}\n"
    if udp_sends:
        subs["@SEND_ENTER@"] = _with_sock(
            "args->fd", netns, _SEND_ENTER.replace("@PRINTF@", _printf("S", "$fd", "0"))
        )
        subs["@SEND_EXIT@"] = _with_sock(
            "@sfd[tid] - 1", netns, _SEND_EXIT.replace("@PRINTF@", _printf("S", "$fd", "args->ret"))
        )
        script += _UDP_SENDS
        end = f"\nEND\n{{\n  clear(@cfd); clear(@bfd); clear(@sfd); clear(@useen);{shut}\n}}\n"
    for name, value in subs.items():
        script = script.replace(name, value)
    if netns == 0:  # every namespace: each line carries its own, the reader sorts them
        script = script.replace("== @NETNS@", "!= 0")
    return script.replace("@NETNS@", str(netns)) + end


# -- the memory ------------------------------------------------------------------------------


class TraceMemory:
    """Recent records by tuple, bounded in age (``ttl`` seconds) and size (``max_keys``).

    About 530 bytes per tuple (record, key, ordered-dict entry): 100,000 tuples ≈ 55 MB,
    reached only above ~800 new connections/s sustained for a minute (two records each);
    200 connections/s for a minute is ≈ 13 MB.

    Thread-safe: the reader thread adds, any thread looks up. A key keeps its last
    ``per_key`` records (a tuple reused later, a port bound again), newest last.

    Look-ups at a time ``at`` (a segment's timestamp) pick the socket that existed then: a
    record may come after the segment by up to ``grace`` seconds for TCP connect/accept
    (connect() returns after the handshake; accept() may come after the first data) and by
    ``slack`` seconds for the rest (UDP sends are recorded as they happen), so an
    ephemeral port reused a moment later by another process is not mistaken for it.
    """

    def __init__(
        self,
        *,
        ttl: float = 60.0,
        max_keys: int = 100_000,
        per_key: int = 4,
        grace: float = 2.0,
        slack: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self.per_key = per_key
        self.grace = grace
        self.slack = slack
        self._clock = clock
        self._lock = threading.Lock()
        # key → records (newest last); ordered by last update, for expiry from the front
        self._mem: collections.OrderedDict[TupleKey, tuple[TraceRecord, ...]] = collections.OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._mem)

    def add(self, rec: TraceRecord) -> None:
        key = rec.key
        with self._lock:
            mem = self._mem
            old = mem.pop(key, ())
            if old and _same_socket(old[-1], rec):
                old = old[:-1]  # the same socket reported again (e.g. a repeated connect())
            mem[key] = (*old, rec)[-self.per_key :]
            self._expire(rec.t)

    def _expire(self, now: float) -> None:
        mem = self._mem
        horizon = now - self.ttl
        while mem:
            key, recs = next(iter(mem.items()))
            if len(mem) <= self.max_keys and recs[-1].t >= horizon:
                break
            del mem[key]
            self.evicted += 1

    def expire(self, now: float | None = None) -> None:
        """Drop what is older than ``ttl`` (also done on every ``add``)."""
        with self._lock:
            self._expire(self._clock() if now is None else now)

    def records(self, proto: str, laddr: str, lport: int, raddr: str, rport: int) -> list[TraceRecord]:
        """Every record that may name the socket of this tuple, best first: the exact tuple;
        for UDP then the local address and port alone, then the wildcard address."""
        la, ra = unmap(laddr), unmap(raddr)
        keys: list[TupleKey] = [(proto, la, lport, ra, rport)]
        if proto == "udp":
            keys += [(proto, la, lport, "", 0), (proto, "0.0.0.0", lport, "", 0), (proto, "::", lport, "", 0)]
        out: list[TraceRecord] = []
        with self._lock:
            for key in keys:
                out.extend(reversed(self._mem.get(key, ())))
        return out

    def lookup_record(
        self, proto: str, laddr: str, lport: int, raddr: str, rport: int, *, at: float | None = None
    ) -> TraceRecord | None:
        """The record naming the socket with this tuple at time ``at`` (epoch seconds): the
        newest one made no later than ``at`` plus its tolerance (see the class); without
        ``at``, the newest one."""
        best: TraceRecord | None = None
        for rec in self.records(proto, laddr, lport, raddr, rport):
            if at is not None:
                tol = self.grace if rec.proto == "tcp" and rec.kind in ("accept", "connect") else self.slack
                if rec.t > at + tol:
                    continue
            if best is None or (rec.t > best.t and not _same_socket(rec, best)):
                best = rec  # (the same socket: keep the better-keyed record, the exact one)
        return best

    def lookup(
        self, proto: str, laddr: str, lport: int, raddr: str, rport: int, *, at: float | None = None
    ) -> Holder | None:
        rec = self.lookup_record(proto, laddr, lport, raddr, rport, at=at)
        return rec.holder if rec is not None else None


def _same_socket(a: TraceRecord, b: TraceRecord) -> bool:
    return a.sk == b.sk and a.pid == b.pid and a.fd == b.fd and a.inode == b.inode


# -- the tracer ------------------------------------------------------------------------------

_live: weakref.WeakSet[SocketTracer] = weakref.WeakSet()


def _close_all() -> None:
    for tracer in list(_live):
        tracer.close()


atexit.register(_close_all)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT for the block and deliver it after: a Ctrl-C inside ``Popen`` (after the
    fork, before it returns) would leave bpftrace running, in its own session, with nobody
    holding its pid to stop it. Only the main thread sets handlers (and gets SIGINT)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)  # to the handler it was meant for


class SocketTracer:
    """``bpftrace`` recording (tuple, pid, fd) of new sockets; see the module docstring.

    Build it with :meth:`start`. Without a process (``SocketTracer()``) it is an empty
    tracer that :meth:`feed_line` fills: what the tests use.
    """

    why_not: str = ""  # class level: why the last start() returned None; instance: why it died

    def __init__(
        self,
        *,
        memory: TraceMemory | None = None,
        our_pid: int | None = None,
        clock_offset: float | None = None,
        full_names: bool = True,
    ) -> None:
        self.memory = memory if memory is not None else TraceMemory()
        self.timeline = Timeline()  # the kernel's record: states, drops, resets (timeline.py)
        # The traced namespace (its lines go to ``memory`` and ``timeline``; 0: unknown, all
        # do). Traced with ``all_namespaces``, the others' go to their own, by inode.
        self.netns = 0
        self.timelines: dict[int, Timeline] = {}
        self.memories: dict[int, TraceMemory] = {}
        self.drop_reasons: dict[int, str] = {}  # the kernel's enum names (``symbols``)
        self.reset_reasons: dict[int, str] = {}
        self.execs: dict[int, tuple[float, str]] = {}  # pid → (when, new name) of its last exec
        self.on_exec: list[Callable[[int, str], None]] = []  # called on the reader thread
        # called on the reader thread with each connect/accept/bind/send record, while its
        # process most likely still runs (the engine reads its container then)
        self.on_record: list[Callable[[TraceRecord], None]] = []
        self._exec_lock = threading.Lock()
        self.our_pid = os.getpid() if our_pid is None else our_pid
        # CLOCK_MONOTONIC (bpftrace's nsecs) → epoch seconds; None: measured per event
        self.fixed_offset = clock_offset
        self.full_names = full_names
        self.why_not = ""
        self.ready = threading.Event()  # set when the probes are attached (first marker seen)
        # fixed keys (read from other threads while the reader updates them)
        self.stats: dict[str, int] = dict.fromkeys(
            ("events", "records", "lost", "unparsed", "probes", "kernel"), 0
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.script = ""
        self._closing = False
        self._cond = threading.Condition()
        self._marker_seen = -1  # the number of the last marker read
        self._markers = itertools.count(1)
        self._sync_lock = threading.Lock()
        self._synced_at = float("-inf")  # epoch seconds when the last good sync() started
        self._want_sync = threading.Event()
        self._ticker: threading.Thread | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._threads: list[threading.Thread] = []
        # the drop counts of the tick being printed, and each flow's last (count, t1 nsecs)
        self._dmaps: dict[str, dict[str, int]] = {}
        self._dlast: dict[str, tuple[int, int, int]] = {}
        self._deferred: list[tuple[Callable[[], None], str]] = []
        # refused connects: sk → (event, tuple-less C record), joined with the X event
        self._pending_connect: collections.OrderedDict[int, TraceRecord] = collections.OrderedDict()
        self._refused: collections.OrderedDict[int, Event] = collections.OrderedDict()
        self._names: dict[tuple[int, str], str] = {}
        self._strings: dict[str, str] = {}

    # -- starting and stopping ---------------------------------------------------------------

    @staticmethod
    def unavailable(
        netns_path: str | None = None, *, bpftrace: str = "bpftrace", mount_tracefs: bool = True
    ) -> str:
        """Why the tracer cannot run here ("" when it can); may mount tracefs (root only)."""
        if shutil.which(bpftrace) is None:
            return f"{bpftrace} is not installed"
        if os.geteuid() != 0:
            return "the kernel tracer needs root"
        try:
            if os.stat("/proc/self/ns/pid").st_ino != INIT_PID_NS:
                return "conntui runs in a pid namespace: the tracer's pids would not match /proc"
        except OSError:
            pass
        if not os.path.exists(BTF_PATH):
            return f"the kernel has no BTF ({BTF_PATH} is missing)"
        if not _tracefs_ready() and mount_tracefs:
            _mount_tracefs()
        if not _tracefs_ready():
            return "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
        try:
            os.stat(netns_path or "/proc/self/ns/net")
        except OSError as e:
            return f"network namespace {netns_path}: {e.strerror}"
        return ""

    @classmethod
    def start(
        cls,
        netns_path: str | None = None,
        *,
        wait: float = 0.0,
        udp_sends: bool = True,
        bpftrace: str = "bpftrace",
        mount_tracefs: bool = True,
        attach_timeout: float = 30.0,
        memory: TraceMemory | None = None,
        all_namespaces: bool = False,
        defer_threads: bool = False,
    ) -> SocketTracer | None:
        """Start bpftrace for the namespace at ``netns_path`` (default: conntui's own).

        Returns at once (``ready`` is set once the probes are attached, usually 1-3 s
        later) unless ``wait`` > 0: then waits that long for ``ready``. ``None`` when the
        tracer cannot run here or failed within ``wait``; ``SocketTracer.why_not`` says
        why in one line. Never raises. ``defer_threads``: bpftrace is started, its readers
        only by :meth:`resume` (conntui confines itself in between, with one thread).
        """
        tracer: SocketTracer | None = None
        try:
            reason = cls.unavailable(netns_path, bpftrace=bpftrace, mount_tracefs=mount_tracefs)
            if reason:
                cls.why_not = reason
                return None
            tracer = cls(memory=memory)
            netns = os.stat(netns_path or "/proc/self/ns/net").st_ino
            tracer.netns = netns
            tracer.drop_reasons = symbols("skb/kfree_skb")
            tracer.reset_reasons = symbols("tcp/tcp_send_reset")
            tracer.script = build_script(
                tracer.our_pid,
                0 if all_namespaces else netns,
                udp_sends=udp_sends,
                drop_reasons=tracer.drop_reasons,
            )
            tracer._spawn(bpftrace, attach_timeout, defer_threads=defer_threads and wait <= 0)
        except Exception as e:  # never raise: the tracer is optional
            cls.why_not = f"kernel tracer: {e}"
            return None
        except BaseException:  # Ctrl-C while starting: bpftrace (its own session) goes too
            if tracer is not None:
                tracer.close()
            raise
        if wait > 0 and not tracer.wait_ready(wait):
            cls.why_not = tracer.why_not or f"bpftrace did not attach within {wait:g} s"
            tracer.close()
            return None
        return tracer

    def _spawn(self, bpftrace: str, attach_timeout: float, *, defer_threads: bool = False) -> None:
        env = dict(os.environ)
        env.update(
            {
                "BPFTRACE_MAP_KEYS_MAX": str(MAP_KEYS_MAX),
                "BPFTRACE_PERF_RB_PAGES": "1024",  # 4 MiB a CPU: bursts of state changes
                "BPFTRACE_STRLEN": "32",
            }
        )
        with _interrupts_held():
            self.proc = subprocess.Popen(
                [bpftrace, "-f", "json", "-e", self.script],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: killed as a whole on close
                close_fds=True,
            )
            _live.add(self)
        self._deferred = [
            (self._read_stdout, "conntui-tracer"),
            (self._read_stderr, "conntui-tracer-err"),
            (lambda: self._await_attach(attach_timeout), "conntui-tracer-attach"),
        ]
        if not defer_threads:
            self.resume()

    def resume(self) -> None:
        """Start the threads that read bpftrace (once; ``start(defer_threads=True)``)."""
        deferred, self._deferred = self._deferred, []
        for target, name in deferred:
            th = threading.Thread(target=target, name=name, daemon=True)
            th.start()
            self._threads.append(th)

    def _await_attach(self, timeout: float) -> None:
        """Poke the marker probe until it answers (the probes are attached) or give up."""
        deadline = time.monotonic() + timeout
        while not self.ready.is_set() and not self._closing and self.alive:
            if time.monotonic() > deadline:
                self._fail(f"bpftrace did not attach within {timeout:g} s")
                return
            self._poke(self._next_marker())
            self.ready.wait(0.1)

    def _next_marker(self) -> int:
        return next(self._markers) % _MARKER_MOD

    def _poke(self, seq: int) -> None:
        with contextlib.suppress(OSError):
            os.getsid(MARKER_BASE + seq)  # fails with ESRCH; the tracepoint sees it first

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and not self.why_not

    def state(self) -> tuple[str, str]:
        """Where the tracer is, for a status line: ``("attaching", "")``, ``("attached", "")``,
        ``("failed", why)`` (it never attached) or ``("died", why)`` (it stopped mid-session;
        what it recorded before stays). ``why`` is one line."""
        proc = self.proc
        ended = proc is not None and proc.poll() is not None and not self._closing
        if self.why_not or ended:
            why = self.why_not or self._exit_reason()
            return ("died" if self.ready.is_set() else "failed", why.splitlines()[0] if why else "")
        return ("attached", "") if self.ready.is_set() else ("attaching", "")

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the probes are attached; False on timeout or if bpftrace failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.05):
                return not self.why_not
            if self.why_not or self.proc is None or self.proc.poll() is not None:
                time.sleep(0.05)  # let the reader collect bpftrace's last words
                if not self.why_not:
                    self.why_not = self._exit_reason()
                return False
        return False

    def sync(self, timeout: float = 1.0) -> bool:
        """Wait until the events of system calls made before this call have been read;
        False on timeout. Best effort: bpftrace drains per-CPU buffers in rounds, so two
        markers are sent in turn (whatever was buffered when the first was read is out
        before the second). Costs two system calls and a round trip through bpftrace
        (about 1 ms); one caller at a time."""
        if not self.ready.is_set() or not self.alive:
            return False
        deadline = time.monotonic() + timeout
        with self._sync_lock:
            for _ in range(2):
                seq = self._next_marker()
                self._poke(seq)
                with self._cond:
                    while self._marker_seen != seq:
                        left = deadline - time.monotonic()
                        if left <= 0 or not self.alive:
                            return False
                        self._cond.wait(min(left, 0.05))
        return True

    @property
    def synced_at(self) -> float:
        """Every event made before this time (epoch seconds) has been read (``caught_up``)."""
        return self._synced_at

    def caught_up(self, t: float) -> bool:
        """Whether every event of the kernel's record made before ``t`` (epoch seconds) has
        been read (a :meth:`sync` that started after ``t`` succeeded). Never blocks: when
        not, a sync is asked of a background thread, and a later call says yes. A
        prediction made from the record up to a segment's time (``predict.py``) waits
        for this."""
        if self._synced_at >= t:
            return True
        self._want_sync.set()
        if self._ticker is None and self.ready.is_set() and self.alive:
            self._ticker = threading.Thread(target=self._sync_loop, name="conntui-tracer-sync", daemon=True)
            self._ticker.start()
            self._threads.append(self._ticker)
        return False

    def _sync_loop(self) -> None:
        """Sync whenever someone waits for the record to catch up (one at a time: a busy
        capture is served by a sync every round trip, an idle one costs nothing)."""
        last = 0.0
        while not self._closing and self.alive:
            if not self._want_sync.wait(0.5):
                continue
            time.sleep(max(0.0, last + SYNC_EVERY - time.monotonic()))  # a burst waits for one sync
            last = time.monotonic()
            self._want_sync.clear()
            start = time.time()
            if self.sync(1.0):
                self._synced_at = max(self._synced_at, start)

    def close(self) -> None:
        """Stop bpftrace (its whole process group) and the reader threads. Idempotent."""
        self._closing = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            # SIGKILL at once: nothing of bpftrace's END output is needed, and the kernel
            # detaches the probes when its descriptors close (a SIGINT waits for its END block
            # and the detaching, seconds with this many probes)
            for sig, wait in ((signal.SIGKILL, 2.0),):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in its group
            for th in self._threads:
                if th is not threading.current_thread():
                    th.join(2.0)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        _live.discard(self)

    def __enter__(self) -> SocketTracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        try:
            for line in proc.stdout:
                self.feed_line(line)
        except (OSError, ValueError):
            pass
        if not self._closing and not self.why_not:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
            self._fail(self._exit_reason())

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for line in proc.stderr:
                text = line.decode("utf-8", "replace").strip()
                if text:
                    self._stderr.append(text)

    def _exit_reason(self) -> str:
        rc = self.proc.poll() if self.proc is not None else None
        msgs = [m for m in self._stderr if "RLIMIT_MEMLOCK" not in m and "WARNING" not in m]
        errors = [m for m in msgs if m.startswith("ERROR") or "error" in m.lower()]
        last = (errors or msgs or [""])[-1]
        return f"bpftrace exited (status {rc})" + (f": {last[:200]}" if last else "")

    def _fail(self, reason: str) -> None:
        self.why_not = reason
        if self.ready.is_set():  # what it recorded stands; after now the record says nothing
            now = time.time()
            for tl in (self.timeline, *list(self.timelines.values())):
                tl.ended_at = min(tl.ended_at, now)
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGINT)  # close() reaps it
        with self._cond:
            self._cond.notify_all()

    def feed_line(self, line: bytes | str) -> None:
        """Handle one line of bpftrace's output (the reader thread calls this)."""
        parsed = parse_line(line)
        if parsed is None:
            self.stats["unparsed"] += 1
            return
        if isinstance(parsed, Event):
            self.stats["events"] += 1
            self._on_event(parsed)
        elif isinstance(parsed, KernelLine):
            self.stats["kernel"] += 1
            try:
                self._on_kernel(parsed)
            except (ValueError, OverflowError):
                self.stats["unparsed"] += 1
        elif isinstance(parsed, Marker):
            if parsed.pid != self.our_pid:  # the probe filters on our pid: not ours
                return
            with self._cond:
                self._marker_seen = parsed.seq
                self._cond.notify_all()
            if not self.ready.is_set():
                now = time.time()
                for tl in (self.timeline, *list(self.timelines.values())):
                    tl.ready_at = now
            self.ready.set()
        elif isinstance(parsed, MapPrint):
            self._dmaps[parsed.name] = parsed.values
        elif parsed[0] == "tick":
            self._on_drop_tick()
        elif parsed[0] == "lost":
            self.stats["lost"] += parsed[1]
            now = time.time()
            for tl in (self.timeline, *list(self.timelines.values())):
                tl.on_lost(parsed[1], now)
        else:
            self.stats[parsed[0]] = parsed[1]

    def _on_drop_tick(self) -> None:
        """The kernel's drop counts printed this tick (``@dn``, ``@dt1``, ``@dt0``): each flow
        counted more than at the last tick becomes a :class:`DropBatch` for the difference,
        its window from the last tick's last drop (or its first) to this one's. Counts never
        reset, so a drop counted during a print shows in the next tick's difference."""
        maps, self._dmaps = self._dmaps, {}
        counts, last, first = maps.get("@dn", {}), maps.get("@dt1", {}), maps.get("@dt0", {})
        s_last, s_first = maps.get("@ds1", {}), maps.get("@ds0", {})
        for key, n in counts.items():
            prev_n, prev_t1, prev_s1 = self._dlast.get(key, (0, 0, 0))
            t1, s1 = last.get(key, 0), s_last.get(key, 0)
            if n <= prev_n or not t1:
                continue
            self._dlast[key] = (n, t1, s1)
            s0 = prev_s1 or s_first.get(key, 0)
            if abs(s1 / 1e9 - self._time(str(t1))) > 1.0:
                s0 = s1 = 0  # not receive times (see _on_kernel): the window cannot be matched
            try:
                reason, proto, sport, dport, st, saddr, daddr, ns = key.split(",")
                name = _PROTOS.get(int(proto))
                state = int(st)
                t0 = prev_t1 or first.get(key, t1)
                batch = DropBatch(
                    name or "", saddr, int(sport), daddr, int(dport),
                    self.drop_reasons.get(int(reason), reason),
                    TCP_STATES.get(state, "") if state >= 0 else "",
                    n - prev_n, self._time(str(t0)), self._time(str(t1)),
                    s0 / 1e9 if s0 > 0 and s1 > 0 else 0.0, s1 / 1e9 if s0 > 0 and s1 > 0 else 0.0,
                )  # fmt: skip
            except ValueError:
                self.stats["unparsed"] += 1
                continue
            if name is not None:
                self.stats["kernel"] += 1
                self.timeline_for(int(ns)).on_drop_batch(batch)
        if len(counts) >= MAP_KEYS_MAX:
            # new flows' drops are no longer counted: the record can no longer prove a delivery
            now = time.time()
            for tl in (self.timeline, *list(self.timelines.values())):
                tl.on_lost(1, now)

    def _on_kernel(self, line: KernelLine) -> None:
        """One line of the kernel's record → the timeline of its namespace (see
        ``_KERNEL_RECORD``)."""
        f, kind = line.fields, line.kind
        stamp = 0
        if kind == "D3":  # a D2 line with the skb's receive timestamp before the namespace
            stamp, f, kind = int(f[9]), [*f[:9], f[10]], "D2"
            if abs(stamp / 1e9 - self._time(f[8])) > 1.0:
                # not a receive time: a locally sent TCP segment keeps its departure time on
                # CLOCK_MONOTONIC (EDT), and the packet socket then stamps it itself
                stamp = 0
        if kind[1] == "2":  # the namespace's inode last
            kind, tl = kind[0] + "1", self.timeline_for(int(f[-1]))
            f = f[:-1]
        else:
            tl = self.timeline
        if kind == "T1":  # sk old new sport dport saddr daddr nsecs how (bit 0: orphan, 1: shutdown())
            sk, old, new, sport, dport, how = (int(x) for x in (*f[:5], f[8]))
            tl.on_state(
                self._time(f[7]), sk, old, new, f[5], sport, f[6], dport,
                orphan=bool(how & 1), how="shutdown" if how & 2 else "close",
            )  # fmt: skip
        elif kind == "D1":  # reason proto sport dport seq rx_state saddr daddr nsecs
            reason, proto, sport, dport, seq, st = (int(x) for x in f[:6])
            name = _PROTOS.get(proto)
            if name is not None:
                tl.on_event(
                    KernelEvent(
                        "drop", self._time(f[8]), name, f[6], sport, f[7], dport, seq,
                        self.drop_reasons.get(reason, str(reason)), TCP_STATES.get(st, "") if st >= 0 else "",
                        stamp / 1e9 if stamp > 0 else 0.0,
                    )
                )  # fmt: skip
        elif kind == "R1":  # reason state reply sport(be) dport(be) saddr daddr nsecs (the RST's way)
            reason, state, reply, sport, dport = (int(x) for x in f[:5])
            sport, dport = socket.ntohs(sport & 0xFFFF), socket.ntohs(dport & 0xFFFF)
            why = self.reset_reasons.get(reason, str(reason))
            was = TCP_STATES.get(state, "")
            t = self._time(f[7])
            if reply:  # answering a segment: keyed by that segment's way
                tl.on_event(KernelEvent("reset", t, "tcp", f[6], dport, f[5], sport, -1, why, was))
            else:  # the socket aborted: keyed by the RST's own way
                tl.on_event(KernelEvent("abort", t, "tcp", f[5], sport, f[6], dport, -1, why, was))
        elif kind == "r1":  # sk nsecs
            tl.on_reset_received(self._time(f[1]), int(f[0]))
        elif kind == "Y1":  # sport dport saddr daddr nsecs (the SYN-ACK's way)
            sport, dport = int(f[0]), int(f[1])
            tl.on_event(KernelEvent("synack", self._time(f[4]), "tcp", f[2], sport, f[3], dport))
        elif kind == "P1":  # pid nsecs comm
            pid = int(f[0])
            with self._exec_lock:
                self.execs[pid] = (self._time(f[1]), f[2])
                if len(self.execs) > 8192:
                    self.execs.pop(next(iter(self.execs)))
            for hook in self.on_exec:
                hook(pid, f[2])

    def _time(self, nsecs: str) -> float:
        return int(nsecs) / 1e9 + self._offset()

    def exec_after(self, pid: int, t: float) -> str | None:
        """The name ``pid`` took by an exec after time ``t`` (epoch seconds), if it did."""
        with self._exec_lock:
            got = self.execs.get(pid)
        return got[1] if got is not None and got[0] > t else None

    def _on_event(self, ev: Event) -> None:
        proto = _PROTOS.get(ev.protocol)
        if proto is None:
            return
        if ev.kind == "X":
            self._on_refused(ev)
            return
        family = 4 if ev.family == socket.AF_INET else 6
        connected = ev.kind in ("A", "C")
        share = self._share
        rec = TraceRecord(
            kind=KIND_NAMES[ev.kind],
            proto=proto,
            family=family,
            laddr=share(ev.laddr),
            lport=ev.lport,
            raddr=share(ev.raddr) if connected else "",
            rport=ev.rport if connected else 0,
            pid=ev.pid,
            tid=ev.pid if ev.tid == ev.pid else ev.tid,
            fd=ev.fd,
            comm=share(self._name(ev.pid, ev.comm)),
            inode=ev.inode,
            t=ev.mono + self._offset(),
            sk=ev.sk,
        )
        if ev.kind == "C" and proto == "tcp" and (rec.lport == 0 or rec.rport == 0):
            # A refused connect: the port is released before connect() returns; the tuple
            # comes with the SYN_SENT → CLOSE event of the same struct sock.
            x = self._refused.pop(ev.sk, None)
            if x is None or not self._joins(rec, x):
                _bounded_put(self._pending_connect, ev.sk, rec)
                return
            rec = _with_tuple(rec, x)
        if rec.lport == 0:
            return
        self.memory_for(ev.netns).add(rec)
        self.stats["records"] += 1
        for hook in self.on_record:
            hook(rec)

    def _on_refused(self, ev: Event) -> None:
        rec = self._pending_connect.pop(ev.sk, None)
        if rec is None or not self._joins(rec, ev):
            _bounded_put(self._refused, ev.sk, ev)
            return
        if ev.lport and ev.rport:
            self.memory_for(ev.netns).add(_with_tuple(rec, ev))
            self.stats["records"] += 1

    # -- namespaces -------------------------------------------------------------------------

    def timeline_for(self, netns: int) -> Timeline:
        """The kernel's record of one network namespace (the traced one's is ``timeline``);
        a namespace first seen now is covered from when the tracer was, losses included."""
        if not netns or netns == self.netns:
            return self.timeline
        tl = self.timelines.get(netns)
        if tl is None:
            tl = Timeline()
            main = self.timeline
            tl.ready_at, tl.lost, tl.lost_until = main.ready_at, main.lost, main.lost_until
            tl.ended_at = main.ended_at
            self.timelines[netns] = tl
        return tl

    def memory_for(self, netns: int) -> TraceMemory:
        """Who got each socket, in one network namespace (the traced one's is ``memory``)."""
        if not netns or netns == self.netns:
            return self.memory
        mem = self.memories.get(netns)
        if mem is None:
            mem = self.memories[netns] = TraceMemory(ttl=self.memory.ttl)
        return mem

    def _joins(self, rec: TraceRecord, x: Event) -> bool:
        """Whether a connect's record and a SYN_SENT → CLOSE event of the same struct sock
        address are the same socket: a second apart at most (the address is reused once
        the socket is freed), and to the same port when the connect's record still has it."""
        near = abs(x.mono + self._offset() - rec.t) < 1.0
        return near and (rec.rport == 0 or rec.rport == x.rport)

    def _share(self, text: str) -> str:
        """One string object per distinct address or name (a record is kept for a minute:
        200,000 of them should not hold 600,000 copies of "127.0.0.1")."""
        shared = self._strings.setdefault(text, text)
        if len(self._strings) > 8192:
            self._strings.clear()
        return shared

    def _offset(self) -> float:
        """CLOCK_MONOTONIC → epoch seconds now (follows steps of the wall clock)."""
        if self.fixed_offset is not None:
            return self.fixed_offset
        return time.time() - time.monotonic()

    def _name(self, pid: int, comm: str) -> str:
        """comm, or the program name from cmdline when comm was cut at 15 bytes (as the
        /proc scan names processes)."""
        if not self.full_names or len(comm.encode()) < _COMM_LEN:
            return comm
        key = (pid, comm)
        name = self._names.get(key)
        if name is None:
            name = comm
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0", 1)[0]
                base = os.path.basename(argv0.decode("utf-8", "replace").split(" ", 1)[0])
                if base.startswith(comm):
                    name = base
            except OSError:
                pass
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[key] = name
        return name

    # -- looking up -----------------------------------------------------------------------

    def lookup(
        self, proto: str, laddr: str, lport: int, raddr: str, rport: int, *, at: float | None = None
    ) -> Holder | None:
        """Who got the socket with local ``laddr:lport`` and remote ``raddr:rport`` (the
        socket's own view; v4-mapped addresses match plain IPv4), or None. See
        :meth:`TraceMemory.lookup_record` for ``at``. Thread-safe, never blocks on I/O."""
        return self.memory.lookup(proto, laddr, lport, raddr, rport, at=at)

    def lookup_record(
        self,
        proto: str,
        laddr: str,
        lport: int,
        raddr: str,
        rport: int,
        *,
        at: float | None = None,
        netns: int = 0,
    ) -> TraceRecord | None:
        """Like :meth:`lookup`, with the whole record (kind, tid, inode, time, family); in
        network namespace ``netns`` (an inode; 0: the traced one)."""
        return self.memory_for(netns).lookup_record(proto, laddr, lport, raddr, rport, at=at)


def _with_tuple(rec: TraceRecord, x: Event) -> TraceRecord:
    return rec._replace(laddr=x.laddr, lport=x.lport, raddr=x.raddr, rport=x.rport)


def _bounded_put(d: collections.OrderedDict[int, _V], key: int, value: _V, limit: int = 4096) -> None:
    d.pop(key, None)
    d[key] = value
    while len(d) > limit:
        d.popitem(last=False)


def _tracefs_ready() -> bool:
    return any(os.path.isdir(f"{d}/events/syscalls") for d in TRACEFS_DIRS)


def _mount_tracefs() -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["mount", "-t", "tracefs", "nodev", TRACEFS_DIRS[0]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
