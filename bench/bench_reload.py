"""How long from saving policy.json to the new policy being in force.

    ./dev bench    (or: .venv/bin/python bench/bench_reload.py [--writes 30] [--rules 200])

Each round writes a new policy the way editors do (write a temporary file, rename it over
the old one) and waits for the reload event. The baseline is the work itself, measured in
the same run: reading and parsing the same file. The difference is the watcher: the
inotify event, the hand-off to the loop and the debounce (200 ms by design: editors save
in bursts, and one reload of the final content is the point).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from proxy.config.watch import DEBOUNCE_SECONDS
from proxy.gateway.events import EventBus, PolicyReloaded
from proxy.policy.model import load_policy
from proxy.policy.store import PolicyStore, PolicyWatcher


def policy(i: int, rules: int) -> dict[str, Any]:
    tools = {
        f"srv/tool_{j}": {"action": "deny" if j % 3 else "allow", "reason": f"rule {j}"}
        for j in range(rules)
    }
    return {"version": "1", "default": "ask", "description": f"version {i}", "tools": tools}


def save(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(".policy.json.tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, path)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=30)
    parser.add_argument("--rules", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lockgate-reload-"))
    path = folder / "policy.json"
    events: asyncio.Queue[object] = asyncio.Queue()
    bus = EventBus()
    bus.subscribe(events.put_nowait)
    store = PolicyStore(path, bus.emit)
    watcher = PolicyWatcher(store)
    await watcher.start()
    await events.get()  # the default, at start

    in_force, parse = [], []
    for i in range(args.writes):
        start = time.perf_counter()
        save(path, policy(i, args.rules))
        while not isinstance(await events.get(), PolicyReloaded):
            pass
        in_force.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        load_policy(path)
        parse.append((time.perf_counter() - start) * 1000)
    await watcher.stop()

    debounce_ms = DEBOUNCE_SECONDS * 1000
    base = statistics.median(parse)
    med = statistics.median(in_force)
    print(f"{args.writes} saves of a {args.rules}-rule policy (debounce {debounce_ms:.0f} ms)")
    print(f"baseline read+parse   median {base:7.1f} ms")
    print(
        f"save -> in force      median {med:7.1f} ms  max {max(in_force):7.1f} ms  "
        f"(x{med / base:.0f} the parse; {med - base - debounce_ms:+.1f} ms beyond "
        "parse + debounce)"
    )


if __name__ == "__main__":
    asyncio.run(main())
