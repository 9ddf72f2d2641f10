"""Real Podman containers for the end-to-end tests, and their ground truth.

The image is built at test time from ``busybox-static`` (no registry): a directory with
``/bin/busybox`` and applet links, tarred, ``podman import``ed. Containers run with runc
(crun refuses this machine's hybrid cgroups) and explicit ulimits (root cannot raise
RLIMIT_NOFILE here). Every container a test starts is removed, also on failure.

Ground truth comes from the kernel and podman, never from conntui: ``podman inspect`` for
the container's pid and address, ``/proc/PID/fd`` and ``/proc/PID/net/tcp*`` (which show the
process's own network namespace) for which fd holds which socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from .truthkit import KernelDisagrees, kernel

IMAGE = "localhost/conntui-e2e-busybox"
PODMAN_RUN = [
    *("podman", "--runtime", "runc", "run", "-d"),
    *("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
]
APPLETS = ("sh", "httpd", "nc", "sleep", "cat", "printf", "wget", "ls")


def podman(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    kernel(done.returncode == 0, f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def build_image() -> str:
    """The busybox image (built once per machine: ``podman import`` of a directory)."""
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode == 0:
        return IMAGE
    busybox = shutil.which("busybox")
    kernel(busybox is not None, "busybox-static is not installed")
    assert busybox is not None
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(f"{d}/bin")
        os.makedirs(f"{d}/www")
        shutil.copy(busybox, f"{d}/bin/busybox")
        for applet in APPLETS:
            os.symlink("busybox", f"{d}/bin/{applet}")
        with open(f"{d}/www/index.html", "w") as f:
            f.write("hello from a container\n")
        tar = f"{d}.tar"
        with tarfile.open(tar, "w") as t:
            t.add(d, arcname=".")
        try:
            podman("import", tar, IMAGE)
        finally:
            os.unlink(tar)
    return IMAGE


@dataclass
class Container:
    name: str
    id: str
    pid: int  # the container's first process, in the host's pid namespace
    ip: str  # its address on podman's bridge

    def netns_inode(self) -> int:
        return os.stat(f"/proc/{self.pid}/ns/net").st_ino


def inspect(name: str) -> Container:
    out = podman("inspect", "--format", "{{.Id}} {{.State.Pid}} {{.NetworkSettings.IPAddress}}", name)
    cid, pid, ip = out.split()
    return Container(name, cid, int(pid), ip)


@contextlib.contextmanager
def containers() -> Iterator[list[str]]:
    """Names of containers started inside the block; all removed at its end."""
    started: list[str] = []
    try:
        yield started
    finally:
        for name in started:
            rm = ["podman", "rm", "-f", "-t", "0", name]
            subprocess.run(rm, capture_output=True, timeout=60, check=False)


def run(started: list[str], *args: str, publish: str | None = None) -> Container:
    """``podman run -d`` of the busybox image (``publish``: ``HOSTPORT:80``); waits for it."""
    name = f"conntui-e2e-{uuid.uuid4().hex[:8]}"
    started.append(name)
    extra = ["-p", publish] if publish else []
    podman(*PODMAN_RUN[1:], "--name", name, *extra, build_image(), *args)
    deadline = time.monotonic() + 20
    while True:
        c = inspect(name)
        if c.pid and c.ip:
            return c
        kernel(time.monotonic() < deadline, f"container {name} did not start")
        time.sleep(0.1)


def socket_inodes(pid: int) -> dict[int, list[int]]:
    """inode → fds of ``pid`` holding that socket."""
    out: dict[int, list[int]] = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.setdefault(int(link[8:-1]), []).append(int(fd))
    return out


def tcp_sockets(pid: int) -> list[tuple[str, int, str, int, int, int]]:
    """(local addr, port, remote addr, port, state, inode) of every TCP socket in the network
    namespace ``pid`` is in, read from its own ``/proc/PID/net/tcp`` and ``tcp6``."""
    rows: list[tuple[str, int, str, int, int, int]] = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            (la, lp), (ra, rp) = (p.split(":") for p in parts[1:3])
            rows.append((_addr(la), int(lp, 16), _addr(ra), int(rp, 16), int(parts[3], 16), int(parts[9])))
    return rows


def _addr(hexaddr: str) -> str:
    import ipaddress

    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    v6 = ipaddress.IPv6Address(words)
    return str(v6.ipv4_mapped) if v6.ipv4_mapped else str(v6)


def listener_fd(pid: int, port: int) -> int:
    """The fd of ``pid`` holding its listener on ``port`` (in its own namespace)."""
    held = socket_inodes(pid)
    for _, lport, _, _, state, inode in tcp_sockets(pid):
        if lport == port and state == 0x0A and inode in held:
            return held[inode][0]
    raise KernelDisagrees(f"pid {pid} holds no listener on port {port}")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def holder_of(pids: list[int], inode: int) -> set[tuple[int, int]]:
    """Every (pid, fd) among ``pids`` holding the socket ``inode``."""
    return {(pid, fd) for pid in pids for fd in socket_inodes(pid).get(inode, [])}
