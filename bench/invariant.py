"""The promise's invariant at length: a longer profile of tests/system/test_invariant.py
than ./dev test runs (bench/fuzz.py does the same for the fuzzing of both doors).

    ./dev bench    (or: .venv/bin/python bench/invariant.py [--runs N] [--seed-random])

Not a benchmark of speed: it reports how many stateful runs, steps and calls ran without
breaking the invariant (and fails loudly if one did). With --seed-random, Hypothesis draws
new examples each time instead of the fixed ones.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(test: str, env: dict[str, str]) -> tuple[int, str, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", test],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="stateful runs (30 steps each)")
    parser.add_argument("--seed-random", action="store_true", help="new examples each time")
    args = parser.parse_args()
    env = {"LOCKGATE_INVARIANT_EXAMPLES": str(args.runs)}
    if args.seed_random:
        env["LOCKGATE_INVARIANT_RANDOM"] = "1"
    test = "tests/system/test_invariant.py"
    code, output, seconds = run(test, env)
    print(f"{test}: {'ok' if code == 0 else 'FAILED'} in {seconds:.0f} s")
    for line in re.findall(r"^invariant: .*$", output, re.MULTILINE):
        print(f"  {line}")
    if code != 0:
        print(output[-6000:])
    return code


if __name__ == "__main__":
    sys.exit(main())
