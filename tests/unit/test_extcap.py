"""The extcap protocol answers (what Wireshark asks before any capture; no root needed)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from conntui import cli
from conntui.wireshark import EXTCAP_NAME, PLUGIN_NAME, install

REPO = Path(__file__).resolve().parent.parent.parent


def run(*args: str, module: str = "conntui.wireshark.extcap") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.mark.parametrize("module", ["conntui.wireshark.extcap", "conntui"])
def test_interfaces_dlts_and_config_in_extcap_syntax(module):
    """The launcher runs the module; ``conntui --extcap-...`` answers the same."""
    res = run("--extcap-interfaces", "--extcap-version=4.0", module=module)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("extcap {version=")
    assert lines[1].startswith("interface {value=conntui-any}{display=conntui: any")
    dlts = run("--extcap-dlts", "--extcap-interface", "conntui-any", module=module)
    assert dlts.stdout == "dlt {number=101}{name=RAW}{display=Raw IP, each packet annotated by conntui}\n"
    config = run("--extcap-config", "--extcap-interface", "conntui-any", module=module).stdout
    assert "{call=--port}" in config and "{call=--trace}{display=" in config and "{type=boolflag}" in config


def test_a_capture_filter_is_checked_as_wireshark_asks():
    if not cli.libpcap_available():
        pytest.fail("libpcap is not installed (the Quick start installs libpcap0.8)")
    good = run("--extcap-capture-filter", "tcp port 80", "--extcap-interface", "conntui-any")
    assert good.returncode == 0 and good.stdout == ""
    bad = run("--extcap-capture-filter", "tcp port nonsense", "--extcap-interface", "conntui-any")
    assert bad.returncode == 1 and "nonsense" in bad.stdout


def test_unknown_interface_and_missing_fifo_are_one_line_errors():
    res = run("--extcap-dlts", "--extcap-interface", "eth0")
    assert (
        res.returncode == 1 and res.stderr == "conntui: unknown extcap interface 'eth0' (only conntui-any)\n"
    )
    res = run("--capture", "--extcap-interface", "conntui-any")
    assert res.returncode == 2 and res.stderr == "conntui: --capture needs --fifo PATH\n"


@pytest.mark.parametrize("personal", [False, True], ids=["wireshark-4.0", "wireshark-4.2"])
def test_install_says_in_one_line_when_the_launcher_goes_to_the_global_folder(tmp_path, personal):
    """Up to 4.0 ``tshark -G folders`` lists no personal extcap folder: the launcher goes to
    the global one, for every user, and the line that says where says so."""
    folders = {"Personal Lua Plugins": str(tmp_path / "lua"), "Extcap path": str(tmp_path / "global")}
    if personal:
        folders["Personal Extcap path"] = str(tmp_path / "mine")
    out = io.StringIO()
    assert install(out, folders=folders) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"Lua plugin: {tmp_path / 'lua' / PLUGIN_NAME}"
    if personal:
        assert lines[1:] == [f"extcap (capture source conntui-any): {tmp_path / 'mine' / EXTCAP_NAME}"]
    else:
        assert lines[1:] == [
            f"extcap (capture source conntui-any): {tmp_path / 'global' / EXTCAP_NAME} "
            "(Wireshark's global extcap folder: this Wireshark has no personal one, "
            "so it is there for every user)"
        ]
    assert (tmp_path / ("mine" if personal else "global") / EXTCAP_NAME).exists()
