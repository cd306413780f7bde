"""Coverage per package, held to the floors in pyproject.toml (``[tool.lockgate.coverage]``).

``./dev test`` runs the whole suite under coverage (the gateway subprocesses included),
then this: it prints each package's share of statements and branches run, and fails if
any is below its floor. A floor only ever goes up: raise it when a package's tests grow.

    python -m tests.support.coverage_floors [DATA_FILE]
"""

from __future__ import annotations

import json
import sys
import tempfile
import tomllib
from collections import defaultdict
from pathlib import Path

import coverage

REPO = Path(__file__).resolve().parents[2]


def package_of(path: str) -> str:
    """The package a file belongs to: ``proxy/policy/decide.py`` → ``proxy.policy``,
    ``proxy/errors.py`` → ``proxy``, ``desktop/app.py`` → ``desktop``."""
    relative = (REPO / path).resolve().relative_to(REPO)
    return ".".join(relative.parent.parts)


def measure(data_file: str) -> dict[str, tuple[int, int]]:
    """Per package: (statements and branches run, statements and branches in all)."""
    cov = coverage.Coverage(data_file=data_file, config_file=str(REPO / "pyproject.toml"))
    cov.load()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "coverage.json"
        cov.json_report(outfile=str(report))
        files = json.loads(report.read_text())["files"]
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, data in files.items():
        summary = data["summary"]
        entry = totals[package_of(path)]
        entry[0] += summary["covered_lines"] + summary.get("covered_branches", 0)
        entry[1] += summary["num_statements"] + summary.get("num_branches", 0)
    return {package: (c, t) for package, (c, t) in totals.items()}


def main(argv: list[str]) -> int:
    data_file = argv[1] if len(argv) > 1 else str(REPO / ".coverage")
    floors: dict[str, float] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
        "lockgate"
    ]["coverage"]
    measured = measure(data_file)
    failed = []
    print(f"{'package':<18} {'covered':>8}  floor")
    for package in sorted(set(measured) | set(floors)):
        covered, total = measured.get(package, (0, 0))
        percent = 100.0 * covered / total if total else 0.0
        floor = floors.get(package)
        mark = ""
        if floor is not None and percent + 1e-9 < floor:
            mark = "  BELOW THE FLOOR"
            failed.append(package)
        shown = "-" if floor is None else f"{floor:g} %"
        print(f"{package:<18} {percent:7.1f} %  {shown}{mark}")
    if failed:
        print(f"coverage below its floor: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
