"""The per-packet comment codec: an attribution as a pcapng comment, and back.

A conntui comment is two lines::

    conntui: python3[42] fd 3 → python3[43] fd 7 (established): <explain>
    conntui-json: {"receiver":...,"sender":...,"match":"established",...}

Line 1 is for people reading the comment in Wireshark (terminal-safe text); line 2 is what
``attribution_from_comment`` reads back for ``-r``. The JSON (about 1 KB) is the same for
every segment of a flow, and at 250k packets/s writing it each time was most of the file
(1.35 KB a packet, 340 MB/s) and of the capture thread's time. So every packet keeps line
1, and line 2 is written in full once per ``REF_WINDOW`` packets per distinct attribution
(``writers.PcapNgWriter``); the packets in between say where it is::

    conntui-json-ref: frame 17

(Wireshark's frame number: the 17th packet of the file). The reader (``reader.py``) puts
the JSON back in place, so ``Frame.comment`` is always the two-line form; it keeps the JSON
of the last ``REF_WINDOW`` packets only (a file cut with editcap may lose a referenced
packet: those packets then read as carrying no attribution).

Comments that ptcpdump (an eBPF tcpdump) writes are read too (``ptcpdump_attribution``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

from ..jsonout import dict_to_attribution, safe_text, socket_summary, socket_to_dict
from ..model import Attribution, Match, SocketEntry

COMMENT_PREFIX: Final = "conntui: "
COMMENT_JSON_PREFIX: Final = "conntui-json: "
COMMENT_REF_PREFIX: Final = "conntui-json-ref: frame "
# A packet whose attribution's JSON is in one of the previous REF_WINDOW packets of the file
# names that packet instead of repeating the JSON (see the module docstring).
REF_WINDOW: Final = 8192


_dumps = json.JSONEncoder(separators=(",", ":")).encode


class SocketJson:
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
