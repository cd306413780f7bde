"""Fuzz both doors of the gateway for longer than ./dev test does, and say how many inputs
ran on each door and side.

    .venv/bin/python bench/fuzz.py [--examples N] [--random] [--seed S] [-k EXPR]

Runs tests/system/test_fuzz.py (the three fuzz tests: the client side on the local door
and on HTTP, the server side) in a pytest subprocess with ``LOCKGATE_FUZZ_EXAMPLES=N``
(default 1000 per test), then prints the counts the tests report (their ``FUZZ-COUNT``
lines), the time each took, and any violation they found. ``--random`` runs a new random
sequence instead of the fixed one (its seed is printed; ``--seed`` runs it again). The
exit status is pytest's: 0 when no test found anything.
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
TESTS = "tests/system/test_fuzz.py"
FUZZ_TESTS = "test_fuzz_"  # the fuzz tests; the others there are single findings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="inputs per test")
    parser.add_argument("--random", action="store_true", help="a new random run")
    parser.add_argument("--seed", type=int, help="the seed of a random run to repeat")
    parser.add_argument("-k", default=FUZZ_TESTS, help="which tests (pytest -k)")
    args = parser.parse_args()

    env = {**os.environ, "LOCKGATE_FUZZ_EXAMPLES": str(args.examples)}
    if args.random or args.seed is not None:
        env["LOCKGATE_FUZZ_RANDOM"] = "1"
    if args.seed is not None:
        env["LOCKGATE_FUZZ_SEED"] = str(args.seed)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "--timeout",
        str(max(300, args.examples * 2)),  # pytest-timeout's 300 s is for ./dev test
        "-k",
        args.k,
        TESTS,
    ]
    print(f"$ LOCKGATE_FUZZ_EXAMPLES={args.examples} {' '.join(command[2:])}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr

    counts = re.findall(r"^FUZZ-COUNT (.*)$", output, flags=re.MULTILINE)
    seeds = sorted(set(re.findall(r"^LOCKGATE_FUZZ_SEED=(\d+)$", output, flags=re.MULTILINE)))
    total = 0
    print()
    for line in counts:
        fields = dict(field.split("=", 1) for field in line.split())
        total += int(fields.get("inputs", 0))
        print("  " + "  ".join(f"{k}={v}" for k, v in fields.items()))
    print(f"\n{total} inputs in {len(counts)} fuzz tests, {elapsed:.0f} s in all")
    if seeds:
        print(f"random run: LOCKGATE_FUZZ_SEED={', '.join(seeds)} (--seed repeats it)")
    for block in violations(output):
        print("\n" + block)
    summary = [line for line in output.splitlines() if re.match(r"^\d+ (passed|failed)", line)]
    print("\n" + (summary[-1] if summary else output[-3000:]))
    return proc.returncode


def violations(output: str) -> list[str]:
    """The tests' reports of what they found: a header line, then "- " and indented lines."""
    blocks: list[list[str]] = []
    inside = False
    for line in output.splitlines():
        if re.match(r"^\d+ kinds of violation in ", line):
            blocks.append([line])
            inside = True
        elif inside and (line.startswith("- ") or line.startswith("    ")):
            blocks[-1].append(line)
        else:
            inside = False
    return ["\n".join(block) for block in blocks]


if __name__ == "__main__":
    sys.exit(main())
