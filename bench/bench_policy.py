"""How long one policy decision takes, with 10 and with 1,000 rules.

    ./dev bench            (or: .venv/bin/python bench/bench_policy.py [--calls N])

Each decision is timed alone (perf_counter_ns), so the p99 is real; the timer's own cost
is measured and printed. Ratios are against a baseline measured in the same run (a policy
with no rules: the decision the engine cannot make any cheaper), because these machines
are noisy. "warm" reuses the per-policy rule cache (the steady state: agents call the same
tools again and again); "cold" clears it before every call (the first call of each tool
after a reload, and the worst case for glob-heavy policies).

Not a pass/fail test. Target from issue 2: median under 20 us at 1,000 rules.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from typing import Any

from proxy.policy.decide import Enforcer, ToolCall, decide
from proxy.policy.limits import Counters
from proxy.policy.model import Policy, parse_policy

SERVERS = ["devtools", "filesystem", "github", "git", "fetch", "memory", "slack", "time"]


def build_policy(n_rules: int, rng: random.Random) -> tuple[Policy, list[ToolCall]]:
    """A realistic mix: mostly exact rules, some globs, some limits and argument schemas."""
    tools: dict[str, dict[str, Any]] = {}
    calls: list[ToolCall] = []
    for i in range(n_rules):
        server = SERVERS[i % len(SERVERS)]
        kind = rng.random()
        if kind < 0.45:
            pattern, tool = f"{server}/tool_{i}", f"tool_{i}"
        elif kind < 0.70:
            pattern, tool = f"tool_{i}", f"tool_{i}"
        elif kind < 0.90:
            pattern, tool = f"{server}/grp{i}_*", f"grp{i}_x"
        else:
            pattern, tool = f"*thing{i}*", f"a_thing{i}_b"
        rule: dict[str, Any] = rng.choice(
            [
                {"action": "allow"},
                {"action": "deny", "reason": "no"},
                {"action": "ask"},
                {"rate_limit": {"max": 1_000_000, "window": 60}},
                {"limits": [{"counter": f"c{i % 7}", "window": "minute", "max": 1_000_000}]},
                {
                    "arguments": {
                        "type": "object",
                        "properties": {"path": {"type": "string", "pattern": "^/tmp/"}},
                    }
                },
            ]
        )
        tools[pattern] = rule
        calls.append(ToolCall(server, tool, {"path": "/tmp/x"}, client=f"client{i % 3}"))
    # calls that no rule matches fall to the default after every glob was tried
    calls += [ToolCall(rng.choice(SERVERS), f"unknown_{i}") for i in range(max(1, n_rules // 10))]
    policy = parse_policy(json.dumps({"version": "1", "default": "ask", "tools": tools}))
    return policy, calls


def timer_overhead_ns(samples: int = 200_000) -> float:
    clock = time.perf_counter_ns
    times = []
    for _ in range(samples):
        start = clock()
        times.append(clock() - start)
    return statistics.median(times)


def measure(
    policy: Policy, calls: list[ToolCall], n: int, cold: bool, rng: random.Random
) -> list[float]:
    counters = Counters()
    clock = time.perf_counter_ns
    sample = [rng.choice(calls) for _ in range(n)]
    for call in sample[:2000]:  # warm the interpreter's caches
        decide(policy, call, counters, 0.0)
    cache = policy._cache
    out = []
    gc.disable()
    try:
        for i, call in enumerate(sample):
            if cold:
                cache.clear()
            start = clock()
            decide(policy, call, counters, float(i))
            out.append((clock() - start) / 1000)
    finally:
        gc.enable()
    return out


def measure_enforcer(
    policy: Policy, calls: list[ToolCall], n: int, rng: random.Random
) -> list[float]:
    enforcer = Enforcer(policy, time.monotonic)
    clock = time.perf_counter_ns
    sample = [rng.choice(calls) for _ in range(n)]
    out = []
    for call in sample:
        start = clock()
        enforcer.decide(call)
        out.append((clock() - start) / 1000)
    return out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    rng = random.Random(1)

    baseline_policy = parse_policy('{"version": "1", "default": "ask"}')
    baseline_calls = [ToolCall("s", f"t{i}") for i in range(100)]
    rows = [
        (
            "baseline: no rules (default)",
            measure(baseline_policy, baseline_calls, args.calls, False, rng),
        )
    ]
    for n_rules in (10, 1000):
        policy, calls = build_policy(n_rules, rng)
        rows.append((f"{n_rules:>5} rules, warm", measure(policy, calls, args.calls, False, rng)))
        rows.append((f"{n_rules:>5} rules, cold", measure(policy, calls, args.calls, True, rng)))
        rows.append(
            (
                f"{n_rules:>5} rules, Enforcer (lock+charge), warm",
                measure_enforcer(policy, calls, args.calls, rng),
            )
        )

    base = statistics.median(rows[0][1])
    print(
        f"python {sys.version.split()[0]}, {args.calls} decisions per row, "
        f"timer overhead {timer_overhead_ns() / 1000:.3f} us (included below)"
    )
    print(f"{'case':<44} {'median us':>10} {'p99 us':>9} {'x baseline':>11}")
    for name, values in rows:
        median = statistics.median(values)
        print(f"{name:<44} {median:>10.2f} {p99(values):>9.2f} {median / base:>11.2f}")


if __name__ == "__main__":
    main()
