"""History at size: search, paging, export and a policy replay over an audit log of
1,000,000 calls, each against a baseline measured in the same run.

    .venv/bin/python bench/bench_history.py [--calls 1000000] [--runs 5] [--keep PATH]

The log is built as the gateway writes it (the same rows, through the writer's insert,
then indexed for search by the writer's own index steps), over a week: 40 tools on 8
servers, 6 clients, a tenth denied. Baselines: for search, the newest page with no filter
(the commit order's index, the cheapest read there is); for the replay, reading the same
calls' columns with nothing decided (what any replay must pay for SQLite). Not a test:
figures and ratios, printed.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.audit.database import INSERT, row_of
from proxy.audit.export import ExportFormat, export_calls, pages
from proxy.audit.log import AuditLog, AuditReader
from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.policy.model import parse_policy
from proxy.policy.replay import replay, replay_history

WEEK = 7 * 86400.0
SERVERS = [f"server{i}" for i in range(8)]
TOOLS = ["read_file", "write_file", "search", "list", "fetch"]
CLIENTS = ["claude-desktop", "cursor", "vscode", "claude-code", "ci", "local"]


def build(path: Path, calls: int, now: float) -> None:
    rng = random.Random(7)
    step = WEEK / calls
    with AuditLog(path) as audit:
        conn = sqlite3.connect(path, isolation_level=None)
        batch: list[tuple[object, ...]] = []
        for n in range(calls):
            server, tool = rng.choice(SERVERS), rng.choice(TOOLS)
            denied = rng.random() < 0.1
            record = CallRecord(
                time=now - WEEK + n * step,
                client=rng.choice(CLIENTS),
                server=server,
                tool=tool,
                arguments={"path": f"/home/me/project/src/module_{n % 5000}.py", "n": n % 97},
                decision=CallDecision.DENIED if denied else CallDecision.ALLOWED,
                basis="rule" if denied else "default",
                rule=f"{server}/{tool}" if denied else None,
                reason=f"{server}/{tool} is " + ("denied" if denied else "allowed by default"),
                outcome=Outcome.BLOCKED if denied else Outcome.OK,
                duration_ms=None if denied else 3.5,
            )
            batch.append(row_of(record, 4096))
            if len(batch) == 5000:
                conn.execute("BEGIN")
                conn.executemany(INSERT, batch)
                conn.execute("COMMIT")
                batch.clear()
        if batch:
            conn.executemany(INSERT, batch)
        conn.close()
        wake = CallRecord(time=now, client="x", server="x", tool="wake", reason="",
                          decision=CallDecision.ALLOWED, outcome=Outcome.OK)  # fmt: skip
        audit.write_sync(wake)
        while audit.search_backlog():  # the writer's own index steps
            time.sleep(0.5)


def timed(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the log here once, and reuse it")
    args = parser.parse_args()
    now = time.time()
    path = args.keep or Path(tempfile.mkdtemp()) / "audit.db"
    if not path.exists():
        started = time.perf_counter()
        build(path, args.calls, now)
        print(f"built {args.calls:,} calls (written and indexed) in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    else:
        now = AuditReader(path).query(limit=1)[0].time
    reader = AuditReader(path)
    started = time.perf_counter()
    total = 0
    for n in range(10_000_000):
        total += n
    print(f"this machine: a Python loop of 10,000,000 additions takes "
          f"{time.perf_counter() - started:.2f} s")  # fmt: skip
    size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
    print(f"log: {reader.count():,} calls, {size / 1e6:.0f} MB\n")

    base = timed(lambda: reader.query(limit=200), args.runs)
    print(f"{'read':<58}{'ms':>9}{'x base':>9}")
    print(f"{'baseline: the newest 200 calls, no filter':<58}{base:>9.2f}{1:>9.1f}")
    oldest = reader.query(limit=1, end=now - WEEK + 3600)[0].id
    q, matches = reader.query, reader.count
    searches: list[tuple[str, Callable[[], object]]] = [
        ("page 200, a week back (before_id)", lambda: q(limit=200, before_id=oldest)),
        ("search a rare word (module_1234)", lambda: q(limit=200, search="module_1234")),
        ("search a common word (read_file: 1 in 5)", lambda: q(limit=200, search="read_file")),
        ("search + client + decision",
         lambda: q(limit=200, search="write", client="cursor", decision="denied")),
        ("search + the last day", lambda: q(limit=200, search="fetch", start=now - 86400)),
        ("filters only: server + tool + denied",
         lambda: q(limit=200, server="server3", tool="list", decision="denied")),
        ("count of a common word's matches", lambda: matches(search="read_file")),
        ("count of the last day, no search", lambda: matches(start=now - 86400)),
    ]  # fmt: skip
    for name, work in searches:
        ms = timed(work, args.runs)
        print(f"{name:<58}{ms:>9.2f}{ms / base:>9.1f}")

    day = now - 86400

    class Sink:
        def write(self, text: str) -> int:
            return len(text)

    for form in (ExportFormat.JSONL, ExportFormat.CSV):
        started = time.perf_counter()
        count = export_calls(
            pages(lambda after: reader.query_rows(start=day, after_seq=after, limit=2000,
                                                  oldest_first=True)),
            Sink(),  # type: ignore[arg-type]
            form,
        )  # fmt: skip
        took = time.perf_counter() - started
        print(f"export {form.value} of the last day: {count:,} calls in {took:.2f} s "
              f"({count / took:,.0f} calls/s)")  # fmt: skip

    in_force = parse_policy(json.dumps({"version": "1", "default": "allow", "tools": {
        "server1/write_file": {"action": "deny"},
        "server2/*": {"limits": [{"counter": "s2", "window": "minute", "max": 50}]},
        "server3/fetch": {"arguments": {"properties": {"path": {"pattern": "^/home/"}}}},
        "*/search": {"action": "ask", "when": [{"clients": ["ci"], "action": "allow"}]},
    }}))  # fmt: skip
    candidate = parse_policy(json.dumps({"version": "1", "default": "allow", "tools": {
        "server1/write_file": {"action": "deny"},
        "server2/*": {"limits": [{"counter": "s2", "window": "minute", "max": 5}]},
        "server3/fetch": {"arguments": {"properties": {"path": {"pattern": "^/tmp/"}}}},
        "*/search": {"action": "ask"},
        "*/write_file": {"action": "ask"},
    }}))  # fmt: skip
    click = parse_policy(json.dumps({**in_force.document, "tools": {
        **in_force.document["tools"], "server5/list": {"action": "deny"}}}))  # fmt: skip
    print()
    started = time.perf_counter()
    clicked = replay_history(reader, click, in_force, now - WEEK - 1, now + 1)
    print(f"replay of a week, one rule added (a click: server5/list denied): "
          f"{time.perf_counter() - started:.2f} s, {clicked.changed:,} would change")  # fmt: skip
    for label, start in (("a week", now - WEEK - 1), ("a day", now - 86400)):
        started = time.perf_counter()
        sum(1 for _ in reader.recorded_calls(start, now + 1))
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        every = replay(reader.recorded_calls(start - 60, now + 1), candidate, in_force, start=start)
        every_s = time.perf_counter() - started
        started = time.perf_counter()
        report = replay_history(reader, candidate, in_force, start, now + 1)
        grouped_s = time.perf_counter() - started
        assert (report.changes, report.calls) == (every.changes, every.calls)
        print(f"replay of {label}, four rules changed ({report.calls:,} calls, "
              f"{report.changed:,} would change):\n"
              f"  baseline, reading every call:     {read_s:6.2f} s\n"
              f"  every call decided:               {every_s:6.2f} s  x{every_s / read_s:.2f}\n"
              f"  groups, and call by call the limited/argument tools: "
              f"{grouped_s:4.2f} s  x{grouped_s / read_s:.2f}")  # fmt: skip
    print(report.summary("the last day"))


if __name__ == "__main__":
    main()
