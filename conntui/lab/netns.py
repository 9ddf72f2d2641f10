"""Private network namespaces for the lab: create, wire with a veth pair, tear down.

Every namespace is named ``conntui-lab-<pid>-<role>`` (the pid of the lab that made it), so
a lab killed with SIGKILL leaves names that ``conntui lab --cleanup`` recognises as stale.
Addresses come from 10.231.0.0/16 (the two hosts' veth: 10.231.0.0/24; links a scenario adds,
such as container-port's: 10.231.1.0/24) and exist only inside these namespaces; nothing is
routed out of them. Each veth pair is created directly inside its two namespaces, so its
names never touch the host's interfaces.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFIX = "conntui-lab-"
NETNS_DIR = "/run/netns"

SERVER_ADDR = "10.231.0.1"
CLIENT_ADDR = "10.231.0.2"
PREFIX_LEN = 24
SERVER_IFACE = "veth-srv"
CLIENT_IFACE = "veth-cli"


class LabError(Exception):
    """A one-line error for the person running the lab."""


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a short command, capturing its output; a failure becomes a ``LabError``."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]} not found (the lab needs iproute2; apt-get install iproute2)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(cmd)} did not finish within {timeout:g} s") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(cmd)} failed: {err[-1] if err else f'exit {proc.returncode}'}")
    return proc


def exec_prefix(ns: str) -> list[str]:
    """The argv prefix that runs a program inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns]


def ns_run(ns: str, *cmd: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return run([*exec_prefix(ns), *cmd], check=check, timeout=timeout)


def list_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def pids_in(ns: str) -> list[int]:
    """Processes living in namespace ``ns`` (the programs a lab started there)."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in proc.stdout.split() if x.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(ns: str, *, grace: float = 1.0) -> None:
    """Stop what still runs in ``ns`` (TERM, then KILL) and delete it. Never raises."""
    try:
        pids = pids_in(ns)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                time.sleep(0.05)
            if not pids:
                break
        run(["ip", "netns", "del", ns], check=False)
    except LabError:
        pass


_OWNED = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")


def stale_namespaces() -> list[str]:
    """Lab namespaces whose lab process no longer exists."""
    stale = []
    for ns in list_namespaces():
        m = _OWNED.match(ns)
        if m and not _alive(int(m.group(1))):
            stale.append(ns)
    return stale


def cleanup(*, everything: bool = False) -> list[str]:
    """Delete stale lab namespaces (or every lab namespace with ``everything``)."""
    names = [n for n in list_namespaces() if n.startswith(PREFIX)] if everything else stale_namespaces()
    for ns in names:
        delete_namespace(ns)
    return names


@dataclass
class Topology:
    """One host (``server`` only, talking over its own loopback) or two hosts on a veth pair.

    ``server`` is where conntui runs; ``client`` is the same namespace in the one-host case.
    """

    two_hosts: bool
    tag: str = field(default_factory=lambda: str(os.getpid()))
    created: list[str] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"{PREFIX}{self.tag}-srv"

    @property
    def client(self) -> str:
        return f"{PREFIX}{self.tag}-cli" if self.two_hosts else self.server

    @property
    def server_addr(self) -> str:
        return SERVER_ADDR if self.two_hosts else "127.0.0.1"

    @property
    def client_addr(self) -> str:
        return CLIENT_ADDR if self.two_hosts else "127.0.0.1"

    @property
    def capture_iface(self) -> str:
        """Where conntui listens: the veth end in the server namespace, or its loopback."""
        return SERVER_IFACE if self.two_hosts else "lo"

    def namespaces(self) -> list[str]:
        return [self.server, self.client] if self.two_hosts else [self.server]

    def build(self) -> None:
        """Create the namespaces and their links. Partial work is undone by ``teardown``."""
        for ns in self.namespaces():
            self.add_namespace(ns)
        if not self.two_hosts:
            return
        self.link(self.server, SERVER_IFACE, SERVER_ADDR, self.client, CLIENT_IFACE, CLIENT_ADDR)

    def add_namespace(self, ns: str) -> str:
        """Create namespace ``ns`` (loopback up, IPv6 off), torn down with the others."""
        if os.path.exists(os.path.join(NETNS_DIR, ns)):
            raise LabError(f"namespace {ns} already exists (run `conntui lab --cleanup`)")
        run(["ip", "netns", "add", ns])
        self.created.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Keep IPv6 neighbour discovery and router solicitations off the veth: the lab
        # speaks IPv4 and the capture stays quiet.
        ns_run(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        ns_run(ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1", check=False)
        return ns

    def extra(self, role: str) -> str:
        """The name of a scenario's own namespace ``role`` (``add_namespace`` makes it)."""
        return f"{PREFIX}{self.tag}-{role}"

    def link(self, a: str, a_iface: str, a_addr: str, b: str, b_iface: str, b_addr: str) -> None:
        """A veth pair made directly inside namespaces ``a`` and ``b`` (its names never touch
        the host's interfaces), each end with its /24 address, up, and carrying traffic."""
        run(["ip", "link", "add", b_iface, "netns", b, "type", "veth", "peer", "name", a_iface, "netns", a])
        for ns, iface, addr in ((a, a_iface, a_addr), (b, b_iface, b_addr)):
            run(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", iface])
            run(["ip", "-n", ns, "link", "set", iface, "up"])
        self._wait_link_up(a, a_iface)

    def _wait_link_up(self, ns: str, iface: str, timeout: float = 5.0) -> None:
        """Wait until the veth carries traffic (both ends up, addresses usable)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = run(["ip", "-n", ns, "-o", "link", "show", iface], check=False).stdout
            if "LOWER_UP" in out and "state UP" in out:
                return
            time.sleep(0.05)
        raise LabError(f"{iface} in {ns} did not come up")

    def teardown(self) -> None:
        for ns in reversed(self.created):
            delete_namespace(ns)
        self.created.clear()
