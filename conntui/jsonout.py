"""The per-segment output contract: JSON dicts (``--json``), the one-line text (``--headless``),
and the way back from a dict to an ``Attribution`` (``-r`` of a conntui pcapng).

The JSON keys of issue 2 are a contract: extras may be added, never renamed. Anything that
came from outside (process names, interface names, explanations read back from a file) is
passed through ``safe_text`` before it reaches a terminal; JSON needs no such care because
``json.dumps`` (``ensure_ascii=True``) escapes every control, DEL and non-ASCII character.
Stdlib only.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .model import (
    PACKET_OUTGOING,
    Attribution,
    Container,
    Endpoint,
    Holder,
    KernelVerdict,
    Lookup,
    Match,
    Segment,
    SocketEntry,
)

__all__ = [
    "attribution_to_dict",
    "dict_to_attribution",
    "dict_to_socket",
    "direction",
    "holder_summary",
    "json_line",
    "parse_endpoint",
    "record_to_dict",
    "safe_text",
    "socket_summary",
    "socket_to_dict",
    "text_line",
]

# Bidi controls a terminal would obey (reordering what follows them): LRE..RLO, LRI..PDI,
# LRM, RLM, ALM. They are also non-printable for str.isprintable; listed for clarity.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def _escape(c: str) -> str:
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def safe_text(s: str) -> str:
    """``s`` with everything a terminal would act on escaped (``\\x1b``, ``\\u202e``, ...).

    Escapes C0/C1 controls, DEL, bidi controls, line/paragraph separators, lone surrogates
    (undecodable bytes) and every other character Python does not consider printable.
    Rich markup such as ``[red]`` is left as is: it is plain text unless it is rendered as
    markup, which conntui never does with names from outside.
    """
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() and c not in _BIDI else _escape(c) for c in s)


def parse_endpoint(text: str) -> Endpoint:
    """``127.0.0.1:8080`` / ``[::1]:8080`` → ``Endpoint`` (the inverse of ``str(Endpoint)``)."""
    addr, _, port = text.rpartition(":")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    return Endpoint(addr, int(port))


def direction(pkttype: int) -> str | None:
    """``"out"`` for frames this host sent, ``"in"`` for received ones, None when unknown."""
    if pkttype < 0:
        return None
    return "out" if pkttype == PACKET_OUTGOING else "in"


def _container(c: Container | None) -> dict[str, Any] | None:
    """``{"id", "name", "runtime", "pod"}``, each ``null`` when unknown; None: no container."""
    if c is None:
        return None
    return {"id": c.id or None, "name": c.name or None, "runtime": c.runtime or None, "pod": c.pod or None}


def _holders(holders: tuple[Holder, ...], compact: bool = False) -> list[dict[str, Any]]:
    """Each holder as ``{pid, process, fd, container}``; ``compact`` (per-packet comments)
    leaves ``container`` out when the process is in none."""
    out: list[dict[str, Any]] = []
    for h in holders:
        d: dict[str, Any] = {"pid": h.pid, "process": h.process, "fd": h.fd}
        if h.container is not None or not compact:
            d["container"] = _container(h.container)
        out.append(d)
    return out


def socket_to_dict(sock: SocketEntry | None, *, compact: bool = False) -> dict[str, Any] | None:
    """A socket as the contract shows it, plus extras that let ``dict_to_socket`` rebuild it.

    ``compact`` (per-packet comments) leaves out extras that have their default value.
    """
    if sock is None:
        return None
    d: dict[str, Any] = {
        "inode": sock.inode or None,
        "state": sock.state,
        "local": str(sock.local),
        "remote": None if sock.remote is None else str(sock.remote),
        "holders": _holders(sock.holders, compact),
        "proto": sock.proto,
        "family": sock.family,
    }
    extras: dict[str, Any] = {
        "uid": sock.uid,
        "cookie": sock.cookie,
        "rx_queue": sock.rx_queue,
        "tx_queue": sock.tx_queue,
        "bound_ifindex": sock.bound_ifindex,
        "v6only": sock.v6only,
        "former_holders": _holders(sock.former_holders, compact),
        "first_seen": sock.first_seen,
        "unreadable": list(sock.unreadable),
        "netns": sock.netns,  # the network namespace's inode (net:[N]); 0 when not read
        "transparent": sock.transparent,
    }
    if compact:
        extras = {k: v for k, v in extras.items() if v}
    d.update(extras)
    if sock.unreadable and not sock.holders:
        d["holders_note"] = sock.describe()
    return d


def _verdict_to_dict(v: KernelVerdict | None) -> dict[str, str] | None:
    """The kernel's own word on a segment: ``verdict`` (dropped, reset, delivered, sent),
    ``reason`` (the kernel's name for it), ``source`` (the tracepoint), ``socket``."""
    if v is None:
        return None
    return {"verdict": v.verdict, "reason": v.reason, "source": v.source, "socket": v.socket}


def _dict_to_verdict(d: Any) -> KernelVerdict | None:
    if not isinstance(d, dict):
        return None
    return KernelVerdict(
        str(d.get("verdict", "")),
        str(d.get("source", "")),
        str(d.get("reason", "")),
        str(d.get("socket", "")),
    )


def attribution_to_dict(att: Attribution, *, compact: bool = False) -> dict[str, Any]:
    """Everything an ``Attribution`` holds, as JSON-ready data (the inverse of
    ``dict_to_attribution``). ``compact`` drops empty extras (used in pcapng comments)."""
    d: dict[str, Any] = {
        "receiver": socket_to_dict(att.receiver, compact=compact),
        "sender": socket_to_dict(att.sender, compact=compact),
        "match": att.match.value,
        "explain": att.explain,
        "listener": socket_to_dict(att.listener, compact=compact),
        "candidates": [socket_to_dict(c, compact=compact) for c in att.candidates],
        "steps": [{"what": s.what, "result": s.result} for s in att.steps],
        "sender_explain": att.sender_explain,
        "notes": list(att.notes),
        "related": list(att.related),
        "kernel": _verdict_to_dict(att.kernel),
        "agrees": att.agrees,
    }
    if compact:
        for key in ("listener", "candidates", "steps", "sender_explain", "notes", "related", "kernel"):
            if not d[key]:
                del d[key]
        if d["agrees"] is None:
            del d["agrees"]
    return d


def record_to_dict(seg: Segment, att: Attribution, record: int | None = None) -> dict[str, Any]:
    """One ``--json`` line: the segment and its attribution (issue 2's contract + extras).

    ``record`` is the row's number in the session, which ``related`` refers to."""
    d: dict[str, Any] = {
        "ts": seg.ts,
        "iface": seg.iface,
        "proto": seg.proto,
        "family": seg.family,
        "src": seg.src,
        "sport": seg.sport,
        "dst": seg.dst,
        "dport": seg.dport,
        "flags": seg.flags,
        "payload_len": seg.payload_len,
    }
    d.update(attribution_to_dict(att))
    d["seq"] = seg.seq
    d["ack"] = seg.ack
    d["window"] = seg.window
    d["pkttype"] = seg.pkttype
    d["direction"] = direction(seg.pkttype)
    d["ifindex"] = seg.ifindex
    d["wire_len"] = seg.wire_len
    if record is not None:
        d["record"] = record
    return d


def json_line(seg: Segment, att: Attribution, record: int | None = None) -> str:
    """One ``--json`` output line (no newline). ASCII only: every control character, DEL,
    bidi control and non-ASCII character of a process name is a JSON escape."""
    return json.dumps(record_to_dict(seg, att, record), ensure_ascii=True)


def _dict_to_container(d: Any) -> Container | None:
    """The inverse of ``_container``; anything but an object with an id or pod is none."""
    if not isinstance(d, dict):
        return None

    def text(key: str) -> str:
        v = d.get(key)
        return v if isinstance(v, str) else ""

    c = Container(text("id"), text("name"), text("runtime"), text("pod"))
    return c if c.id or c.name or c.pod else None


def _holder(d: dict[str, Any]) -> Holder:
    return Holder(
        pid=int(d["pid"]),
        fd=int(d["fd"]),
        process=str(d["process"]),
        container=_dict_to_container(d.get("container")),
    )


def holder_summary(h: Holder) -> str:
    """``httpd[1234] fd 3``, with ``(ctr web)`` when it runs in a container. Terminal-safe."""
    text = f"{safe_text(h.process)}[{h.pid}] fd {h.fd}"
    if h.container is not None:
        text += f" (ctr {safe_text(h.container.label)})"
    return text


def dict_to_socket(d: dict[str, Any]) -> SocketEntry:
    """The inverse of ``socket_to_dict``. Tolerates dicts with only the contract keys: the
    family is then taken from the local address, the protocol guessed from the state."""
    local = parse_endpoint(d["local"])
    remote = None if d.get("remote") is None else parse_endpoint(d["remote"])
    state = str(d["state"])
    proto = d.get("proto") or ("udp" if state == "UNCONN" else "tcp")
    family = d.get("family") or (6 if ":" in local.addr else 4)
    return SocketEntry(
        proto=str(proto),
        family=int(family),
        state=state,
        local=local,
        remote=remote,
        inode=int(d.get("inode") or 0),
        holders=tuple(_holder(h) for h in d.get("holders") or ()),
        uid=int(d.get("uid", 0)),
        cookie=int(d.get("cookie", 0)),
        rx_queue=int(d.get("rx_queue", 0)),
        tx_queue=int(d.get("tx_queue", 0)),
        bound_ifindex=int(d.get("bound_ifindex", 0)),
        v6only=bool(d.get("v6only", False)),
        former_holders=tuple(_holder(h) for h in d.get("former_holders") or ()),
        first_seen=float(d.get("first_seen", 0.0)),
        unreadable=tuple(int(p) for p in d.get("unreadable") or ()),
        netns=int(d.get("netns") or 0),
        transparent=bool(d.get("transparent", False)),
    )


def _opt_socket(d: Any) -> SocketEntry | None:
    return None if d is None else dict_to_socket(d)


def dict_to_attribution(d: dict[str, Any]) -> Attribution:
    """The inverse of ``attribution_to_dict`` (also accepts a whole ``record_to_dict``).

    Raises ``KeyError``/``ValueError``/``TypeError`` on a malformed dict.
    """
    return Attribution(
        match=Match(d["match"]),
        receiver=_opt_socket(d.get("receiver")),
        sender=_opt_socket(d.get("sender")),
        explain=str(d.get("explain", "")),
        steps=tuple(Lookup(str(s["what"]), str(s["result"])) for s in d.get("steps") or ()),
        listener=_opt_socket(d.get("listener")),
        candidates=tuple(dict_to_socket(c) for c in d.get("candidates") or ()),
        sender_explain=str(d.get("sender_explain", "")),
        notes=tuple(str(n) for n in d.get("notes") or ()),
        related=tuple(int(r) for r in d.get("related") or ()),
        kernel=_dict_to_verdict(d.get("kernel")),
        agrees=d["agrees"] if isinstance(d.get("agrees"), bool) else None,
    )


def socket_summary(sock: SocketEntry | None) -> str:
    """``nginx[12] fd 7`` (``(+N)`` more holders), ``kernel`` when no process holds it, ``-``
    for no socket. Terminal-safe."""
    if sock is None:
        return "-"
    if not sock.holders:
        return safe_text(sock.describe())
    more = f" (+{len(sock.holders) - 1})" if len(sock.holders) > 1 else ""
    return holder_summary(sock.holders[0]) + more


_clock_cache: tuple[int, str] = (-1, "")


def _clock(ts: float) -> str:
    """Local wall-clock time ``HH:MM:SS.ffffff`` (as tcpdump prints it)."""
    global _clock_cache
    sec = int(ts)
    usec = round((ts - sec) * 1_000_000)
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    cached_sec, hms = _clock_cache
    if cached_sec != sec:
        hms = time.strftime("%H:%M:%S", time.localtime(sec))
        _clock_cache = (sec, hms)
    return f"{hms}.{usec:06d}"


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _iface(seg: Segment) -> str:
    if seg.iface:
        return safe_text(seg.iface)
    return f"if{seg.ifindex}" if seg.ifindex else "?"


def text_line(seg: Segment, att: Attribution) -> str:
    """One ``--headless`` line, tcpdump-like and terminal-safe::

        21:00:01.123456 lo tcp 127.0.0.1:51234 → 127.0.0.1:8080 [S] len 0
            python3[42] fd 3 → python3[43] fd 4 (listener)

    (one line; wrapped here). The right half reads "sender → receiver (match)"; ``kernel``
    is a socket no process holds, ``-`` no socket at all.
    """
    flags = f" [{seg.flags or 'none'}]" if seg.proto == "tcp" else ""
    return (
        f"{_clock(seg.ts)} {_iface(seg)} {seg.proto} "
        f"{_endpoint(seg.src, seg.sport)} → {_endpoint(seg.dst, seg.dport)}{flags} len {seg.payload_len}"
        f"  {socket_summary(att.sender)} → {socket_summary(att.receiver)} ({att.match.value})"
        + "".join(f"; {safe_text(n)}" for n in att.notes)
        + (f"; kernel: {safe_text(att.kernel.text())}" if att.kernel is not None else "")
        + ("; conntui's prediction disagreed" if att.agrees is False else "")
    )
