"""Which container a process runs in: from ``/proc/PID/cgroup``, named from the runtime's
own state files (no daemon API: conntui talks to no docker or podman socket).

Container runtimes put each container's processes in a cgroup whose path carries the
container's id. The shapes recognised (systemd driver, then cgroupfs driver):

==========  ====================================================  ==========================
runtime     cgroup path component                                 name from
==========  ====================================================  ==========================
docker      ``docker-<id>.scope``, ``/docker/<id>``                ``<data-root>/containers/
                                                                   <id>/config.v2.json``
podman      ``libpod-<id>.scope``, ``/libpod_parent/libpod-<id>``  containers/storage's
                                                                   ``containers.json``
cri-o       ``crio-<id>.scope``, ``crio-<id>``                     the same (CRI-O keeps its
                                                                   containers there too)
containerd  ``cri-containerd-<id>.scope``                          (the id is shown)
==========  ====================================================  ==========================

A rootless container's cgroup is in its user's systemd instance (``user@UID.service``):
it is named from that user's own state (``~/.local/share/containers/storage``,
``~/.local/share/docker``), never from the system's.

Kubernetes pods add ``kubepods…pod<uid>`` (systemd writes the uid with ``_`` for ``-``;
shown with ``-``, as Kubernetes writes it), podman pods ``machine-libpod_pod_<id>.slice``.
A 64-hex component of no known runtime (``/kubepods/besteffort/pod<uid>/<id>``, a runtime
conntui does not know) gives the id and no runtime; any other path gives no container.

``libpod-conmon-<id>`` and ``crio-conmon-<id>`` are **not** containers: they hold conmon,
the runtime's monitor process on the host (it keeps the container's terminal, exit code
and, for podman, the published ports' reservation sockets). conmon runs outside the
container, so it gets no container here: calling its port-reservation socket "in" the
container would make a socket that never receives a packet look like the container's.

The parsing (:func:`parse_cgroup`, :func:`parse_storage_names`, :func:`parse_docker_name`)
is pure; :class:`ContainerLookup` does the I/O and the caching: one read of
``/proc/PID/cgroup`` per (pid, start time, comm), so a reused pid is read anew; each state
file is read again only when its mtime, size or inode changed. A state file that cannot be
read or parsed leaves the name unknown (``""``): never an exception. A process's container
is looked up when the process is first seen holding a socket, so a container renamed later
(``docker rename``) keeps its old name on processes seen before.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..model import Container

__all__ = [
    "CgroupMatch",
    "ContainerLookup",
    "parse_cgroup",
    "parse_cgroup_path",
    "parse_docker_name",
    "parse_storage_names",
    "shared_lookup",
]

_HEX64 = "[0-9a-f]{64}"
# (runtime, pattern of one path component); the id is group 1. Checked in this order.
_RUNTIMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("docker", re.compile(rf"docker-({_HEX64})\.scope")),
    ("podman", re.compile(rf"libpod-({_HEX64})(?:\.scope)?")),
    ("cri-o", re.compile(rf"crio-({_HEX64})(?:\.scope)?")),
    ("containerd", re.compile(rf"cri-containerd-({_HEX64})(?:\.scope)?")),
)
# conmon (podman's and CRI-O's monitor process, on the host): never a container
_CONMON = re.compile(rf"(?:libpod|crio)-conmon-{_HEX64}(?:\.scope)?")
_BARE_ID = re.compile(rf"(?:[A-Za-z0-9_.]+-)?({_HEX64})(?:\.scope)?")
_UUID = "[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_KUBE_POD = re.compile(rf"(?:kubepods-(?:[a-z]+-)?)?pod({_UUID})(?:\.slice)?")
_PODMAN_POD = re.compile(rf"machine-libpod_pod_({_HEX64})\.slice")
_USER_SERVICE = re.compile(r"user@(\d{1,10})\.service")

_MAX_NAME = 256  # a name, not a novel: longer ones are cut (rows and memory stay sane)
_MAX_STATE = 64 << 20  # bytes of a state file read at most (containers.json of thousands)


@dataclass(frozen=True, slots=True)
class CgroupMatch:
    """What a cgroup path says: the container id, the runtime, the pod ("" when none), and
    the user whose systemd instance (``user@UID.service``) runs it: a rootless container."""

    id: str
    runtime: str = ""
    pod: str = ""
    user: int | None = None


def parse_cgroup_path(path: str) -> CgroupMatch | None:
    """The container a cgroup path (``/system.slice/docker-<id>.scope``) names, or None.

    The deepest component that names a container wins (a container nested in another
    is the inner one); a pod is taken from any component of the same path."""
    parts = [p for p in path.split("/") if p]
    pod = ""
    user: int | None = None
    kube = "kubepods" in path
    for part in parts:
        m = _KUBE_POD.fullmatch(part) if kube else None
        if m is None:
            m = _PODMAN_POD.fullmatch(part)
        if m is not None:
            pod = m.group(1).replace("_", "-")
        m = _USER_SERVICE.fullmatch(part)
        if m is not None:
            user = int(m.group(1))
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        if _CONMON.fullmatch(part):
            return None  # conmon's own cgroup: the host side of the container (module doc)
        for runtime, pattern in _RUNTIMES:
            m = pattern.fullmatch(part)
            if m is not None:
                return CgroupMatch(m.group(1), runtime, pod, user)
        m = _BARE_ID.fullmatch(part)
        if m is not None:
            # /docker/<id> (docker's cgroupfs driver), or an id of a runtime not known here
            return CgroupMatch(m.group(1), "docker" if i and parts[i - 1] == "docker" else "", pod, user)
    return CgroupMatch("", "", pod, user) if pod else None


def parse_cgroup(text: str) -> CgroupMatch | None:
    """The container ``/proc/PID/cgroup``'s text names, or None for none.

    Each line is ``hierarchy:controllers:path`` (cgroup v1), ``0::path`` (v2); a hybrid
    layout has both. The v2 line is looked at first, then systemd's named hierarchy, then
    the controllers: runtimes put the process in the same place in each, but conmon-like
    helpers may sit in a container's cgroup in one controller only."""
    ranked: list[tuple[int, str]] = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        rank = 0 if hierarchy == "0" and not controllers else 1 if controllers == "name=systemd" else 2
        ranked.append((rank, path))
    ranked.sort(key=lambda rp: rp[0])
    pod_only: CgroupMatch | None = None
    for _, path in ranked:
        found = parse_cgroup_path(path)
        if found is not None and found.id:
            return found
        if found is not None and pod_only is None:
            pod_only = found
    return pod_only


def _name(value: Any) -> str:
    return value[:_MAX_NAME] if isinstance(value, str) else ""


def parse_storage_names(data: bytes) -> dict[str, str]:
    """id → name from containers/storage's ``containers.json`` (podman, CRI-O, buildah):
    a list of ``{"id": ..., "names": [...], ...}``; the first name is the container's.
    Anything else (garbled JSON, another shape) gives ``{}``: names unknown."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(doc, list):
        return {}
    out: dict[str, str] = {}
    for entry in doc:
        if not isinstance(entry, dict):
            continue
        cid, names = entry.get("id"), entry.get("names")
        if isinstance(cid, str) and isinstance(names, list) and names:
            name = _name(names[0])
            if name:
                out[cid] = name
    return out


def parse_docker_name(data: bytes) -> str:
    """The name in docker's ``config.v2.json`` (``"Name": "/web"`` → ``web``); ``""`` when
    the file is garbled or has none."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(doc, dict):
        return ""
    return _name(doc.get("Name")).removeprefix("/")


def _home(uid: int) -> str | None:
    """The home directory of ``uid`` from the password database; None for no such user."""
    try:
        return pwd.getpwuid(uid).pw_dir
    except (KeyError, OverflowError):
        return None


def _read_small(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_STATE)
    except OSError:
        return None


class ContainerLookup:
    """pid → :class:`Container`, cached per (pid, start time, comm) like process names.

    ``root`` is where the runtimes' state files are looked for (``/``; a fake tree in
    tests), ``proc_root`` where ``/proc`` is, ``home_of`` a user's home directory (under
    ``root``; None: no such user), where rootless runtimes keep their state."""

    def __init__(
        self,
        proc_root: str = "/proc",
        root: str = "/",
        max_size: int = 8192,
        home_of: Callable[[int], str | None] | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.root = root.rstrip("/")
        self.max_size = max_size
        self.home_of = home_of if home_of is not None else _home
        self._by_pid: dict[tuple[int, int, str], Container | None] = {}
        # path → ((mtime, size, inode), parsed): one tuple, so a thread never sees half of it
        self._files: dict[str, tuple[tuple[int, int, int], Any]] = {}
        self._roots: tuple[str, str] | None = None  # (docker data root, storage graph root)

    def of(self, pid: int, starttime: int, comm: str) -> Container | None:
        """The container of (pid, start time), whose stat said ``comm`` (an exec may move a
        process into a container's cgroup: runc's init becomes the container's program)."""
        key = (pid, starttime, comm)
        try:
            return self._by_pid[key]
        except KeyError:
            pass
        found = self._resolve(pid)
        if len(self._by_pid) >= self.max_size:
            self._by_pid.clear()
        self._by_pid[key] = found
        return found

    def __len__(self) -> int:
        return len(self._by_pid)

    def _resolve(self, pid: int) -> Container | None:
        data = _read_small(f"{self.proc_root}/{pid}/cgroup")
        if data is None:
            return None
        found = parse_cgroup(data.decode("utf-8", "replace"))
        if found is None:
            return None
        name = self.name_of(found.runtime, found.id, found.user)
        return Container(found.id, name, found.runtime, found.pod)

    def name_of(self, runtime: str, cid: str, user: int | None = None) -> str:
        """The container's name from its runtime's state file; ``""`` when unknown.

        A rootless container (``user``: its cgroup is in that user's systemd instance) is
        named from that user's own state only (``~/.local/share/containers/storage``,
        ``~/.local/share/docker``), and a rootful one from the system's only: a user can
        name cgroups in their own subtree as they like, and must not borrow the name of
        a system container that way."""
        if not cid:
            return ""
        if user is None:
            docker_root, graph_root = self._state_roots()
            run_root = f"{self.root}/run/containers/storage"
        else:
            home = self.home_of(user)
            if not home:
                return ""
            docker_root = f"{self.root}{home}/.local/share/docker"
            graph_root = f"{self.root}{home}/.local/share/containers/storage"
            run_root = f"{self.root}/run/user/{user}/containers"
        if runtime == "docker":
            name = self._parsed(f"{docker_root}/containers/{cid}/config.v2.json", parse_docker_name)
            return name if isinstance(name, str) else ""
        if runtime in ("podman", "cri-o"):
            for path in self._storage_files(graph_root, run_root):
                names = self._parsed(path, parse_storage_names)
                if isinstance(names, dict) and cid in names:
                    return str(names[cid])
        return ""

    def _storage_files(self, graph_root: str, run_root: str) -> list[str]:
        """containers/storage's lists: ``<driver>-containers/containers.json`` under the
        graph root, and ``volatile-containers.json`` (``--rm`` containers in newer
        versions) beside it or under the run root."""
        out: list[str] = []
        for base in (graph_root, run_root):
            try:
                dirs = sorted(d for d in os.listdir(base) if d.endswith("-containers"))
            except OSError:
                continue
            for d in dirs:
                out += (f"{base}/{d}/containers.json", f"{base}/{d}/volatile-containers.json")
        return out

    def _state_roots(self) -> tuple[str, str]:
        """Docker's data root (``data-root`` in ``/etc/docker/daemon.json``) and
        containers/storage's graph root (``graphroot`` in ``/etc/containers/storage.conf``),
        or their defaults; read once."""
        if self._roots is None:
            docker = f"{self.root}/var/lib/docker"
            raw = _read_small(f"{self.root}/etc/docker/daemon.json")
            try:
                conf = json.loads(raw) if raw else None
            except (ValueError, RecursionError):
                conf = None
            data_root = conf.get("data-root") if isinstance(conf, dict) else None
            if isinstance(data_root, str) and data_root:
                docker = self.root + data_root
            graph = f"{self.root}/var/lib/containers/storage"
            raw = _read_small(f"{self.root}/etc/containers/storage.conf")
            try:
                storage = tomllib.loads(raw.decode("utf-8", "replace")).get("storage") if raw else None
            except tomllib.TOMLDecodeError:
                storage = None
            graphroot = storage.get("graphroot") if isinstance(storage, dict) else None
            if isinstance(graphroot, str) and graphroot:
                graph = self.root + graphroot
            self._roots = (docker, graph)
        return self._roots

    def _parsed(self, path: str, parse: Any) -> Any:
        """``parse(bytes)`` of the file at ``path``, cached until the file changes; None
        when it cannot be read."""
        try:
            st = os.stat(path)
        except OSError:
            self._files.pop(path, None)
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        entry = self._files.get(path)
        if entry is not None and entry[0] == key:
            return entry[1]
        data = _read_small(path)
        if data is None:
            return None
        value = parse(data)
        if len(self._files) >= self.max_size:
            self._files.clear()
        self._files[path] = (key, value)
        return value


_SHARED: dict[str, ContainerLookup] = {}


def shared_lookup(proc_root: str = "/proc") -> ContainerLookup:
    """One :class:`ContainerLookup` per proc root for the whole process: every namespace's
    holder scanner and the engine's tracer records share its caches."""
    lookup = _SHARED.get(proc_root)
    if lookup is None:
        lookup = _SHARED.setdefault(proc_root, ContainerLookup(proc_root))
    return lookup
