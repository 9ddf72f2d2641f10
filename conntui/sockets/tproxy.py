"""The TPROXY rules of a network namespace, read from ``iptables-save`` and ``nft -j``.

TPROXY (``xt_TPROXY.c: tproxy_tg4``, ``nft_tproxy.c``) hands a segment for a non-local
address straight to a transparent socket on the rule's ``--on-port``; the demux needs that
port to name the socket. Two readers, because neither sees everything:

* ``iptables-save -t mangle`` (and ``ip6tables-save``) prints an iptables rule's target
  options (``--on-port 9000 --on-ip 0.0.0.0 --tproxy-mark 0x1/0xffffffff``); ``nft -j``
  shows the same rule only as an opaque ``{"xt": {"name": "TPROXY"}}``;
* ``nft -j list ruleset`` shows native nftables ``tproxy to :9000`` statements, which
  ``iptables-save`` does not print.

Only the matches that decide whether a rule applies to a segment are understood: protocol,
destination address/prefix and destination port. A rule with any other condition is kept
and flagged ``other``: it may not apply. A reader that fails (missing tool, not root) is
recorded in ``errors`` and the rest is still used: the demux then says it presumes a rule.

Subprocesses cost a few milliseconds, so a namespace's rules are read at most every
``TTL`` seconds, by the refresher thread, never per packet.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from ..model import TproxyRule, TproxyRules

TTL = 5.0  # while a transparent socket exists
IDLE_TTL = 30.0  # otherwise (a rule alone only makes the kernel drop what it steers)
_TIMEOUT = 3.0

_cache: dict[str | None, tuple[float, TproxyRules]] = {}
_lock = threading.Lock()


def rules_for(
    netns_path: str | None = None, *, busy: Callable[[], bool] | None = None, now: float | None = None
) -> TproxyRules:
    """The TPROXY rules of the namespace at ``netns_path`` (None: this one): read again after
    ``TTL`` seconds if ``busy()`` (a transparent socket exists; asked only then), else after
    ``IDLE_TTL``."""
    t = time.monotonic() if now is None else now
    with _lock:
        hit = _cache.get(netns_path)
    if hit is not None:
        age = t - hit[0]
        if age < TTL or (age < IDLE_TTL and not (busy is None or busy())):
            return hit[1]
    rules = read_rules(netns_path)
    with _lock:
        _cache[netns_path] = (t, rules)
    return rules


def prefetch(netns_path: str | None = None) -> threading.Thread | None:
    """Start reading the namespace's rules in a thread when none are cached (a cold start:
    the three tools run while the caller dumps sockets, instead of after); the thread to
    join, or None when they are cached already."""
    with _lock:
        if netns_path in _cache:
            return None
    thread = threading.Thread(target=rules_for, args=(netns_path,), name="conntui-tproxy-read", daemon=True)
    thread.start()
    return thread


# Set by conntui.privsep once conntui may not run programs: (argv, netns_path) → stdout
_privileged_run: Callable[[list[str], str | None], str] | None = None


def set_privileged_run(run: Callable[[list[str], str | None], str] | None) -> None:
    global _privileged_run
    _privileged_run = run


def _run(argv: list[str], netns_path: str | None) -> str:
    """``argv``'s stdout, run in the namespace (``nsenter --net``); OSError with a reason."""
    if _privileged_run is not None:
        return _privileged_run(argv, netns_path)
    if shutil.which(argv[0]) is None:
        raise OSError(f"{argv[0]} is not installed")
    if netns_path:
        if shutil.which("nsenter") is None:
            raise OSError("nsenter is not installed")
        argv = ["nsenter", f"--net={netns_path}", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{argv[0]} timed out") from exc
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
        raise OSError(f"{' '.join(argv)}: {first}")
    return done.stdout


def read_rules(netns_path: str | None = None) -> TproxyRules:
    """Every TPROXY rule both readers find; their failures in ``errors``."""
    rules: list[TproxyRule] = []
    errors: list[str] = []
    for tool, family in (("iptables-save", 4), ("ip6tables-save", 6)):
        try:
            rules += parse_iptables_save(_run([tool, "-t", "mangle"], netns_path), family)
        except OSError as exc:
            errors.append(str(exc))
    try:
        rules += parse_nft_json(_run(["nft", "-j", "list", "ruleset"], netns_path))
    except (OSError, ValueError) as exc:
        errors.append(f"nft ruleset could not be read: {exc}")
    return TproxyRules(tuple(rules), tuple(errors))


_IGNORED_OPTS = frozenset({"-A", "-j", "-m"})


def parse_iptables_save(text: str, family: int) -> list[TproxyRule]:
    """The ``-j TPROXY`` rules of an ``iptables-save -t mangle`` dump."""
    out: list[TproxyRule] = []
    for line in text.splitlines():
        if not line.startswith("-A ") or "-j TPROXY" not in line:
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        proto = dst = dports = on_ip = mark = ""
        on_port = 0
        other = False
        negate = False
        i = 2  # after "-A CHAIN"
        while i < len(words):
            w = words[i]
            arg = words[i + 1] if i + 1 < len(words) else ""
            if w == "!":
                negate = True
                i += 1
                continue
            if w == "-p":
                proto = ("!" if negate else "") + arg
            elif w == "-d":
                dst = ("!" if negate else "") + arg
            elif w == "--dport":
                dports = ("!" if negate else "") + arg
            elif w == "--on-port":
                on_port = int(arg) if arg.isdigit() else 0
            elif w == "--on-ip":
                on_ip = arg
            elif w == "--tproxy-mark":
                mark = arg
            elif w in _IGNORED_OPTS:
                pass
            elif w.startswith("-"):
                other = True
                i += 1
                while i < len(words) and not words[i].startswith("-") and words[i] != "!":
                    i += 1
                negate = False
                continue
            negate = False
            i += 2
        out.append(
            TproxyRule(
                family=family,
                proto=proto,
                dst=dst,
                dports=dports,
                on_port=on_port,
                on_ip=on_ip,
                mark=mark,
                source="iptables" if family == 4 else "ip6tables",
                text=line,
                other=other,
            )
        )
    return out


_NFT_FAMILIES = {"ip": (4,), "ip6": (6,), "inet": (4, 6)}


def parse_nft_json(text: str) -> list[TproxyRule]:
    """The native ``tproxy`` statements of ``nft -j list ruleset`` (``xt`` ones are iptables')."""
    data = json.loads(text)
    out: list[TproxyRule] = []
    for item in data.get("nftables", []) if isinstance(data, dict) else []:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict):
            continue
        exprs = rule.get("expr") or []
        stmt = next((e["tproxy"] for e in exprs if isinstance(e, dict) and "tproxy" in e), None)
        if not isinstance(stmt, dict):
            continue
        proto = dst = dports = mark = ""
        other = False
        for e in exprs:
            if not isinstance(e, dict):
                continue
            if "match" in e:
                kind, value = _nft_match(e["match"])
                if kind == "proto":
                    proto = value
                elif kind == "dst":
                    dst = value
                elif kind == "dport":
                    dports = value
                else:
                    other = True
            elif "mangle" in e and _meta_key(e["mangle"].get("key")) == "mark":
                mark = str(e["mangle"].get("value", ""))
        fams = _NFT_FAMILIES.get(str(rule.get("family")), (4, 6))
        if stmt.get("family") in ("ip", "ip6"):
            fams = (4,) if stmt["family"] == "ip" else (6,)
        where = f"{rule.get('family')} {rule.get('table')} {rule.get('chain')}"
        text_rule = f"nft {where} handle {rule.get('handle')}"
        for fam in fams:
            out.append(
                TproxyRule(
                    family=fam,
                    proto=proto,
                    dst=dst,
                    dports=dports,
                    on_port=int(stmt.get("port") or 0),
                    on_ip=str(stmt.get("addr") or ""),
                    mark=mark,
                    source="nft",
                    text=text_rule,
                    other=other,
                )
            )
    return out


def _meta_key(x: Any) -> str:
    return str(x["meta"].get("key", "")) if isinstance(x, dict) and isinstance(x.get("meta"), dict) else ""


def _nft_match(m: Any) -> tuple[str, str]:
    """("proto" | "dst" | "dport" | "", value) for one nft ``match`` expression."""
    if not isinstance(m, dict):
        return "", ""
    left, right, op = m.get("left"), m.get("right"), m.get("op", "==")
    neg = "!" if op == "!=" else ""
    if op not in ("==", "!=", "in"):
        return "", ""
    if _meta_key(left) == "l4proto" and isinstance(right, str):
        return "proto", neg + right
    payload = left.get("payload") if isinstance(left, dict) else None
    if isinstance(payload, dict):
        field = payload.get("field")
        if field == "daddr":
            if isinstance(right, str):
                return "dst", neg + right
            if isinstance(right, dict) and isinstance(right.get("prefix"), dict):
                p = right["prefix"]
                return "dst", f"{neg}{p.get('addr')}/{p.get('len')}"
        if field == "dport" and payload.get("protocol") in ("tcp", "udp"):
            if isinstance(right, int):
                return "dport", f"{neg}{right}"
            if isinstance(right, dict) and isinstance(right.get("range"), list) and len(right["range"]) == 2:
                lo, hi = right["range"]
                return "dport", f"{neg}{lo}:{hi}"
        if field == "protocol" and isinstance(right, str):
            return "proto", neg + right
    return "", ""
