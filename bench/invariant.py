"""The promise's invariant and the fuzzing of both doors, at length: a longer profile of
tests/proxy/test_invariant.py and tests/proxy/test_fuzz.py than ./dev test runs.

    ./dev bench    (or: .venv/bin/python bench/invariant.py [--runs N] [--fuzz N] [--seed-random])

Not a benchmark of speed: it reports how many stateful runs, steps and calls, and how
many fuzz inputs, ran without breaking the invariant (and fails loudly if one did). With
--seed-random, Hypothesis draws new examples each time instead of the fixed ones.
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
    parser.add_argument("--runs", type=int, default=200, help="stateful runs (30 steps each)")
    parser.add_argument("--fuzz", type=int, default=3000, help="fuzz inputs per test")
    parser.add_argument("--seed-random", action="store_true", help="new examples each time")
    args = parser.parse_args()
    random = {"LOCKGATE_INVARIANT_RANDOM": "1", "LOCKGATE_FUZZ_RANDOM": "1"}
    env = {
        "LOCKGATE_INVARIANT_EXAMPLES": str(args.runs),
        "LOCKGATE_FUZZ_EXAMPLES": str(args.fuzz),
        **(random if args.seed_random else {}),
    }
    failed = 0
    for test in ("tests/proxy/test_invariant.py", "tests/proxy/test_fuzz.py"):
        if not (REPO / test).exists():
            continue
        code, output, seconds = run(test, env)
        counts = re.findall(r"^(invariant|fuzz)[^:]*: .*$", output, re.MULTILINE)
        print(f"{test}: {'ok' if code == 0 else 'FAILED'} in {seconds:.0f} s")
        for line in counts:
            print(f"  {line}")
        if code != 0:
            failed += 1
            print(output[-6000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
