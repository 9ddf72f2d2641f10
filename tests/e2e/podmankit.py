"""Real podman containers for the e2e tests, built at test time (there is no registry).

The image is a directory holding ``/bin/busybox`` (Debian's busybox-static) and its applet
links, imported with ``podman import``. Containers run with runc and explicit ulimits (on
these machines crun refuses the hybrid cgroup layout and root cannot raise
RLIMIT_NOFILE). Every image and container made here is removed on exit, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def build_image(workdir: Path, name: str) -> str:
    """``localhost/NAME``: busybox, its applets, and ``/www/index.html``."""
    root = workdir / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "www").mkdir()
    (root / "tmp").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "www" / "index.html").write_text("hello from a container\n")
    tar = workdir / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    image = f"localhost/{name}"
    podman("import", str(tar), image, timeout=120)
    return image


@dataclass(frozen=True)
class RunningContainer:
    """A container as podman itself reports it (``podman inspect``)."""

    name: str
    id: str
    pid: int  # the container's main process (the httpd)
    conmon_pid: int

    def exec(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, timeout=timeout, check=False)


def inspect(name: str) -> dict[str, Any]:
    doc = json.loads(podman("inspect", name).stdout)
    assert isinstance(doc, list) and len(doc) == 1
    return doc[0]  # type: ignore[no-any-return]


def socket_inodes(pid: int) -> dict[int, int]:
    """fd → socket inode of ``pid``, read from ``/proc/PID/fd`` (the test's ground truth)."""
    out: dict[int, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                out[int(fd)] = int(target[8:-1])
    return out


@contextlib.contextmanager
def httpd_container(workdir: Path, prefix: str, host_port: int) -> Iterator[RunningContainer]:
    """A busybox httpd in its own container, port 80 published on ``host_port``; removed
    (with its image) when the block ends, however it ends."""
    tag = f"{prefix}-{secrets.token_hex(4)}"
    image = ""
    try:
        image = build_image(workdir, tag)
        podman(
            "--runtime",
            "runc",
            "run",
            "-d",
            "--name",
            tag,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "-p",
            f"{host_port}:80",
            image,
            "/bin/httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
            timeout=120,
        )
        info = inspect(tag)
        c = RunningContainer(
            name=info["Name"],
            id=info["Id"],
            pid=int(info["State"]["Pid"]),
            conmon_pid=int(info["State"]["ConmonPid"]),
        )
        deadline = time.monotonic() + 20
        while not socket_inodes(c.pid):  # httpd has not bound yet
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"httpd in {tag} holds no socket: {podman('logs', tag, check=False).stderr}"
                )
            time.sleep(0.1)
        yield c
    finally:
        podman("rm", "-f", "-t", "0", tag, check=False, timeout=60)
        if image:
            podman("rmi", "-f", image, check=False, timeout=60)
