"""The PNGs of ``screenshots/`` keep the spaces between fields (scripts/screenshots.py).

rsvg-convert dropped the no-break space that starts a ``<text>`` of Textual's SVG, so in
every PNG a field ran into the one before it (``19:46:40.000000lo``, ``[5151]fd 5``).
"""

from __future__ import annotations

import importlib.util
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="needs rsvg-convert")

# two cells as Textual writes them: "AB" at x=0, then " C" (its space a no-break space)
SVG = """<svg class="rich-terminal" viewBox="0 0 120 30" width="120" height="30" \
xmlns="http://www.w3.org/2000/svg"><rect x="0" y="0" width="120" height="30" fill="#ffffff"/>\
<text x="0" y="22" textLength="24.4" style="font-family: monospace; font-size: 20px" fill="#000000">AB</text>\
<text x="24.4" y="22" textLength="24.4" style="font-family: monospace; font-size: 20px" \
fill="#000000">&#160;C</text></svg>"""


def _screenshots():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "scripts" / "screenshots.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dark_columns(png: bytes) -> list[int]:
    """The x of each column with a dark pixel, from an 8-bit RGB(A) PNG (stdlib only)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += data
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    dark: set[int] = set()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        for x in range(width):
            if sum(line[x * channels : x * channels + 3]) < 3 * 128:
                dark.add(x)
    return sorted(dark)


def test_the_png_keeps_the_space_that_starts_a_text(tmp_path: Path) -> None:
    svg = tmp_path / "two.svg"
    svg.write_text(SVG, encoding="utf-8")
    _screenshots().to_png(svg)
    dark = dark_columns(svg.with_suffix(".png").read_bytes())
    c = [x for x in dark if x >= 26]  # the C: one cell (12.2 px) after x=24.4, not at it
    assert c and c[0] >= 34, c[:5]
    # what rsvg-convert does with the SVG as it is: the C moves into the space
    plain = subprocess.run(["rsvg-convert"], input=SVG.encode(), capture_output=True, check=True).stdout
    assert next(x for x in dark_columns(plain) if x >= 26) < 34
