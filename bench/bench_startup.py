"""How long an MCP client waits for `lockgate connect` to start, per server.

    ./dev bench    (or: .venv/bin/python bench/bench_startup.py [--runs 15])

A client launches one `lockgate connect NAME` per server every time it starts, often a
dozen at once. Measured here up to the point where the bridge knows whether a gateway is
running (none is, so it exits at once; with one, it hands the client's pipes over and
waits). Two baselines from the same run, interleaved: a bare `python -c pass` in the same
venv (what no Python program can beat), and `lockgate --version`, which loads the whole
command line (what every command, `connect` included, cost before: 0.86 s, most of it the
MCP SDK, which only `serve`, `init` and the app now load).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    data = tempfile.mkdtemp(prefix="lockgate-bench-")
    lockgate = str(BIN / "lockgate")
    cases = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "lockgate --version (whole CLI)": [lockgate, "--version"],
        "lockgate connect NAME": [lockgate, "--data-dir", data, "connect", "time"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for argv in cases.values():
        timed(argv)  # warm the file cache
    for _ in range(runs):
        for name, argv in cases.items():
            times[name].append(timed(argv))
    floor = statistics.median(times["python -c pass (floor)"])
    whole = statistics.median(times["lockgate --version (whole CLI)"])
    print(f"start-up, median of {runs} interleaved runs")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:<32} {median * 1000:7.1f} ms   x{median / floor:5.1f} of the floor"
            f"   x{median / whole:5.2f} of the whole CLI"
        )


if __name__ == "__main__":
    main()
