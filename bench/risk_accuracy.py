"""The risk classifier against the labelled set of real tool definitions.

    ./dev bench            (or: .venv/bin/python bench/risk_accuracy.py [--misses])

Prints category and level accuracy, the confusion matrix of categories, and the time to
classify one tool against a baseline measured in the same run (json.dumps of the same
tool: the cost of merely looking at it). tests/proxy/policy/test_risk.py holds the floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.policy.risk import Category, classify

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "risk_labelled_tools.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--misses", action="store_true", help="list every misclassified tool")
    args = parser.parse_args()
    items = json.loads(DATA.read_text("utf-8"))
    confusion: Counter[tuple[str, str]] = Counter()
    cat_ok = level_ok = both_ok = 0
    misses = []
    for item in items:
        risk = classify(item["tool"])
        want = item["label"]
        c = risk.category.value == want["category"]
        lv = risk.level.value == want["level"]
        cat_ok += c
        level_ok += lv
        both_ok += c and lv
        confusion[(want["category"], risk.category.value)] += 1
        if not (c and lv):
            misses.append(
                f"  {item['server']}/{item['tool']['name']}: labelled "
                f"{want['category']}/{want['level']}, got "
                f"{risk.category.value}/{risk.level.value}"
            )
    n = len(items)
    print(f"{n} labelled tools from {len({i['server'] for i in items})} servers")
    print(f"category {cat_ok / n:.1%}   level {level_ok / n:.1%}   both {both_ok / n:.1%}")
    names = [c.value for c in Category]
    print("\nconfusion (rows: label, columns: classifier)")
    print(f"{'':<12}" + "".join(f"{c:>12}" for c in names))
    for row in names:
        print(f"{row:<12}" + "".join(f"{confusion[(row, col)]:>12}" for col in names))
    if args.misses:
        print("\nmisses:\n" + "\n".join(misses))

    tools = [item["tool"] for item in items]

    def per_tool(fn: Callable[[dict[str, Any]], object]) -> float:
        runs = []
        for _ in range(20):
            start = time.perf_counter()
            for tool in tools:
                fn(tool)
            runs.append((time.perf_counter() - start) / len(tools) * 1e6)
        return statistics.median(runs)

    base = per_tool(json.dumps)
    cost = per_tool(classify)
    print(
        f"\nclassify: {cost:.1f} us per tool; baseline json.dumps {base:.1f} us; "
        f"ratio {cost / base:.1f}x"
    )


if __name__ == "__main__":
    main()
