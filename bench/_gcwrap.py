"""Run ``python -m conntui ARGS`` with the garbage collector timed (bench/hotpath.py --gc).

    python _gcwrap.py MODE ARGS...     MODE: default | freeze (gc.freeze() every second) | off

At exit prints ``GCSTATS MODE collections N seconds S cpu C`` on stderr. Measurement only;
conntui itself is unchanged.
"""

from __future__ import annotations

import gc
import runpy
import sys
import threading
import time

_stats = {"n": 0, "t": 0.0}
_start = [0.0]


def _timer(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _start[0] = time.perf_counter()
    else:
        _stats["n"] += 1
        _stats["t"] += time.perf_counter() - _start[0]


def _freezer() -> None:
    while True:
        time.sleep(1.0)
        gc.freeze()


def main() -> None:
    mode = sys.argv.pop(1)
    gc.callbacks.append(_timer)
    if mode == "freeze":
        threading.Thread(target=_freezer, daemon=True).start()
    elif mode == "off":
        gc.disable()
    sys.argv = ["conntui", *sys.argv[1:]]
    try:
        runpy.run_module("conntui", run_name="__main__", alter_sys=True)
    finally:
        sys.stderr.write(
            f"GCSTATS {mode} collections {_stats['n']} seconds {_stats['t']:.3f} "
            f"cpu {time.process_time():.3f}\n"
        )


if __name__ == "__main__":
    main()
