"""The command line's parsing and wiring decisions (no capture, no root)."""

from __future__ import annotations

import pytest

from conntui import cli
from conntui.cli import Options, UsageError, parse_options


def opts(*argv: str) -> Options:
    return parse_options(list(argv))


def test_options_follow_tcpdump_habits():
    o = opts(
        "-i", "lo", "-p", "8080", "-p", "80,443", "-c", "5", "--duration", "2", "--json", "tcp", "port", "9"
    )
    assert o.interface == "lo" and o.count == 5 and o.duration == 2.0
    assert 8080 in o.ports and 443 in o.ports and 81 not in o.ports
    assert o.expression == "tcp port 9"
    assert o.headless and o.json  # --json implies headless
    assert opts().interface == "any" and not opts().headless


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-p", "70000"], "bad port"),
        (["-c", "0"], "bad count"),
        (["--duration", "-1"], "bad duration"),
        (["--settle", "120"], "bad settle"),
        (["-r", "x.pcapng", "-w", "x.pcapng"], "same file"),
    ],
)
def test_bad_options_are_usage_errors(argv, needle):
    with pytest.raises(UsageError) as e:
        parse_options(argv)
    assert needle in str(e.value) and e.value.code == 2


def test_without_libpcap_ports_filter_in_user_space_and_expressions_are_refused(monkeypatch):
    monkeypatch.setattr(cli, "libpcap_available", lambda: False)
    notes: list[str] = []
    assert cli._kernel_filter(opts("-p", "8080"), notes) is None
    assert notes and "user space" in notes[0]
    with pytest.raises(UsageError) as e:
        cli._kernel_filter(opts("tcp"), [])
    assert "libpcap" in str(e.value)


def test_with_libpcap_ports_and_expression_compile_into_one_kernel_program():
    if not cli.libpcap_available():
        pytest.skip("libpcap is not installed (the README's set-up installs libpcap0.8)")
    prog = cli._kernel_filter(opts("-p", "8080", "tcp"), [])
    assert prog and all(len(insn) == 4 for insn in prog)
    with pytest.raises(UsageError) as e:
        cli._kernel_filter(opts("tcp", "port", "nonsense"), [])
    assert "bad filter" in str(e.value) and e.value.code == 2


def test_a_bpf_expression_with_a_file_is_refused():
    with pytest.raises(UsageError) as e:
        cli.make_source(opts("-r", "x.pcapng", "tcp"), [])
    assert "-p" in str(e.value)


def test_w_dash_streams_to_stdout_headless_and_quiet_unless_lines_are_asked_for():
    """``-w -`` is the output: no TUI, no per-segment lines (they would go to stderr)."""
    o = opts("-w", "-")
    assert o.write == "-" and o.headless and o.quiet
    o = opts("-w", "-", "--json")
    assert o.headless and o.json and not o.quiet
    assert opts("-r", "x.pcapng", "-w", "-").write == "-"  # converting a file to a stream


def test_help_lists_every_lab_scenario() -> None:
    from conntui.lab.scenarios import SCENARIOS

    text = " ".join(cli.build_parser().format_help().split())
    for name in SCENARIOS:
        assert f" {name}," in text or f" {name} " in text or text.endswith(f" {name}"), name
