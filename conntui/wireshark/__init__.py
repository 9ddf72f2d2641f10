"""conntui with Wireshark: ``conntui wireshark plugin|install|uninstall``.

Two files are installed where Wireshark looks for them (``tshark -G folders`` says where):

* ``conntui.lua`` (shipped in this package): a post-dissector that turns conntui's packet
  comments into fields (``conntui.receiver.pid``, ``conntui.match``, ...) to filter on and
  show as columns;
* ``conntui`` in the extcap folder: a two-line launcher that makes conntui a capture
  source ("conntui: any", see ``extcap.py``).

Wireshark up to 4.0 has no personal extcap folder (4.2 added ``~/.local/lib/wireshark/
extcap``): the launcher then goes to the global one, which needs root. Kept free of heavy
imports: Wireshark runs the extcap launcher every time it lists interfaces.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import IO

__all__ = ["EXTCAP_NAME", "PLUGIN_NAME", "install", "launcher_text", "main", "plugin_text", "tshark_folders"]

PROG = "conntui wireshark"
PLUGIN_NAME = "conntui.lua"
EXTCAP_NAME = "conntui"


# said where the launcher goes to the global extcap folder (Wireshark < 4.2)
GLOBAL_NOTE = (
    "Wireshark's global extcap folder: this Wireshark has no personal one, so it is there for every user"
)


class WiresharkError(Exception):
    """One line for the user."""


def plugin_text() -> str:
    """The Lua plugin, as shipped with this conntui."""
    return resources.files(__package__).joinpath(PLUGIN_NAME).read_text(encoding="utf-8")


def launcher_text(python: str | None = None) -> str:
    """The extcap launcher: runs this conntui with this Python, whatever PATH says."""
    py = shlex.quote(python or sys.executable)
    return (
        "#!/bin/sh\n"
        "# conntui as a Wireshark capture source (written by `conntui wireshark install`)\n"
        f'exec {py} -m conntui.wireshark.extcap "$@"\n'
    )


def tshark_folders(tshark: str = "tshark") -> dict[str, str]:
    """``tshark -G folders`` as a dict ("Personal Lua Plugins" → path, ...); {} without tshark."""
    exe = shutil.which(tshark)
    if exe is None:
        return {}
    try:
        res = subprocess.run([exe, "-G", "folders"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    folders: dict[str, str] = {}
    for line in res.stdout.splitlines():
        name, sep, path = line.partition(":")
        if sep and path.strip() and name.strip() not in folders:
            folders[name.strip()] = path.strip()
    return folders


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def plugin_dir(folders: dict[str, str]) -> Path:
    """Where Wireshark loads the user's own Lua plugins."""
    found = folders.get("Personal Lua Plugins")
    return Path(found) if found else _home() / ".local/lib/wireshark/plugins"


def extcap_dir(folders: dict[str, str]) -> tuple[Path, bool]:
    """The extcap folder to use and whether it is the user's own (Wireshark >= 4.2)."""
    for key in ("Personal Extcap path", "Personal Extcap Path"):
        if folders.get(key):
            return Path(folders[key]), True
    found = folders.get("Extcap path") or folders.get("Extcap Path")
    if found:
        return Path(found), False
    return _home() / ".local/lib/wireshark/extcap", True


def _put(path: Path, text: str, mode: int) -> None:
    """Write ``path`` whole (a temporary file renamed over it: never through a symlink)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def install(
    out: IO[str],
    *,
    lua_dir: Path | None = None,
    extcap: Path | None = None,
    folders: dict[str, str] | None = None,
) -> int:
    """Install the Lua plugin and the extcap launcher; say where. 0, or 1 if one failed."""
    folders = tshark_folders() if folders is None else folders
    if not folders:
        sys.stderr.write(f"{PROG}: note: tshark not found: using the default folders of Wireshark >= 4.2\n")
    code = 0
    target = (lua_dir or plugin_dir(folders)) / PLUGIN_NAME
    try:
        _put(target, plugin_text(), 0o644)
        out.write(f"Lua plugin: {target}\n")
    except OSError as e:
        sys.stderr.write(f"{PROG}: cannot write {target}: {e.strerror or e}\n")
        code = 1
    own = True
    if extcap is None:
        extcap, own = extcap_dir(folders)
    launcher = extcap / EXTCAP_NAME
    try:
        _put(launcher, launcher_text(), 0o755)
        where = "" if own else f" ({GLOBAL_NOTE})"
        out.write(f"extcap (capture source conntui-any): {launcher}{where}\n")
    except OSError as e:
        hint = "" if own else " (this Wireshark has no personal extcap folder: run it as root)"
        sys.stderr.write(f"{PROG}: cannot write {launcher}: {e.strerror or e}{hint}\n")
        code = 1
    return code


def uninstall(out: IO[str], *, lua_dir: Path | None = None, extcap: Path | None = None) -> int:
    """Remove what ``install`` wrote (only those two files)."""
    folders = tshark_folders()
    paths = [(lua_dir or plugin_dir(folders)) / PLUGIN_NAME, (extcap or extcap_dir(folders)[0]) / EXTCAP_NAME]
    code = 0
    for path in paths:
        try:
            path.unlink()
            out.write(f"removed {path}\n")
        except FileNotFoundError:
            pass
        except OSError as e:
            sys.stderr.write(f"{PROG}: cannot remove {path}: {e.strerror or e}\n")
            code = 1
    return code


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Show conntui's attributions in Wireshark: a Lua plugin (fields conntui.*) "
        "and a capture source (extcap interface conntui-any).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("plugin", help="print the Lua plugin")
    for name, what in (("install", "install"), ("uninstall", "remove")):
        sp = sub.add_parser(name, help=f"{what} the Lua plugin and the extcap launcher")
        sp.add_argument(
            "--lua-dir", type=Path, metavar="DIR", help="instead of the personal Lua plugin folder"
        )
        sp.add_argument("--extcap-dir", type=Path, metavar="DIR", help="instead of the extcap folder")
    args = p.parse_args(list(argv))
    if args.command == "plugin":
        sys.stdout.write(plugin_text())
        return 0
    if args.command == "install":
        return install(sys.stdout, lua_dir=args.lua_dir, extcap=args.extcap_dir)
    return uninstall(sys.stdout, lua_dir=args.lua_dir, extcap=args.extcap_dir)
