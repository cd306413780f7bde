"""Does the app's window keep up? Heartbeat lateness, memory, start-up and history.

    ./dev bench    (or: .venv/bin/python bench/bench_gui.py [--seconds 10] [--rows 1000000])

Four measurements, each with the real app (LockgateApp, its gateway on its worker thread,
the window open and following the live table):

1. idle: the GUI heartbeat (a 10 ms timer; how late each tick fires) with nothing going on:
   the baseline for the next two, measured in the same run.
2. real traffic: agents in another process (raw JSON-RPC over `lockgate connect`, 16 at once)
   call server-everything's echo through the app's gateway as fast as it answers. The
   gateway shares this process (and Python's GIL) with the GUI, so this is the real cost.
3. the GUI side alone at 5,000 calls/s: the events of 5,000 calls a second (started,
   decided, finished) are put into the host's inbox from a thread, as the gateway's bus
   would, to show what the window absorbs when the gateway is not the limit.
4. history: an audit log of --rows records; the app's start-up time to serving with it,
   "Load older" (500 records before the oldest shown), and scrolling the table end to end.

Memory is the process's resident set before and after each load (the table is bounded).
Not a pass/fail test; the issue's targets: heartbeat late < 50 ms at p99, memory flat,
start to tray icon < 2 s (test_tray.py measures that one on a real X server).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QCoreApplication, QElapsedTimer, QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from desktop.activityview import (
    PERIODS,
    REFRESH_MS,
    ActivityChart,
    chart_model,
    first_bucket,
    read_activity,
)
from desktop.app import LockgateApp
from proxy.audit.database import INSERT, insert_step, row_of
from proxy.audit.log import AuditLog, AuditReader
from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.config.paths import Paths
from proxy.gateway.events import CallDecided, CallFinished, CallStarted

REPO = Path(__file__).resolve().parent.parent
EVERYTHING = (
    REPO / "tests/servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)
LOCKGATE = str(Path(sys.executable).parent / "lockgate")
WEEK = 7 * 86400.0

LOAD = r"""
import asyncio, json, sys, time
async def agent(env, seconds, counts):
    proc = await asyncio.create_subprocess_exec(
        sys.argv[1], "connect", "everything", "--client", "bench",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
    w, r = proc.stdin, proc.stdout
    def send(m): w.write(json.dumps({"jsonrpc": "2.0", **m}).encode() + b"\n")
    send({"id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
          "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
    await r.readline()
    send({"method": "notifications/initialized"})
    await asyncio.sleep(0.5)
    end = time.monotonic() + seconds
    n = 1
    inflight = 4
    call = {"name": "echo", "arguments": {"message": "x"}}
    for _ in range(inflight):
        send({"id": n, "method": "tools/call", "params": call}); n += 1
    while time.monotonic() < end:
        await r.readline()
        counts[0] += 1
        send({"id": n, "method": "tools/call", "params": call}); n += 1
    w.close()
    await proc.wait()
async def main():
    import os
    seconds = float(sys.argv[2])
    counts = [0]
    start = time.monotonic()
    agents = int(sys.argv[3])
    await asyncio.gather(*(agent(dict(os.environ), seconds, counts) for _ in range(agents)))
    print(json.dumps({"calls": counts[0], "seconds": time.monotonic() - start - 0.5}))
asyncio.run(main())
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spin(seconds: float) -> None:
    """Run the event loop for ``seconds``, idle as the real app's ``exec()`` is (a busy
    ``processEvents`` loop would burn a core and take the GIL from the gateway)."""
    loop = QEventLoop()
    QTimer.singleShot(max(0, round(seconds * 1000)), loop.quit)
    loop.exec()


class Heartbeat:
    """A 10 ms timer on the GUI thread; records how late each tick is."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._clock = QElapsedTimer()
        self._timer = QTimer()
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)
        self._last = 0

    def start(self) -> None:
        self.late.clear()
        self._clock.start()
        self._last = 0
        self._timer.start()

    def stop(self) -> list[float]:
        self._timer.stop()
        return list(self.late)

    def _tick(self) -> None:
        now = self._clock.elapsed()
        if self._last:
            self.late.append(max(0.0, now - self._last - 10))
        self._last = now


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 2 else float("nan")


def report(name: str, late: list[float], extra: str = "", baseline: float | None = None) -> float:
    p99 = p(late, 99)
    ratio = f" (x{p99 / baseline:.1f} idle)" if baseline else ""
    print(
        f"{name:<34} heartbeat late p50 {p(late, 50):5.1f} ms  p99 {p99:6.1f} ms{ratio}  "
        f"max {max(late, default=0):6.1f} ms  {extra}"
    )
    return p99


def make_paths(root: Path) -> Paths:
    paths = Paths(config_dir=root / "config", data_dir=root / "data")
    paths.config_dir.mkdir(parents=True)
    servers = {"everything": {"command": "node", "args": [str(EVERYTHING), "stdio"]}}
    (paths.config_dir / "servers.json").write_text(json.dumps({"mcpServers": servers}))
    paths.policy_file.write_text(
        json.dumps(
            {
                "version": "1",
                "default": "allow",
                "tools": {
                    "echo": {
                        "action": "allow",
                        "limits": [
                            {
                                "counter": "echo",
                                "window": "second",
                                "max": 1_000_000,
                                "scope": "global",
                            }
                        ],
                    }
                },
            }
        )
    )
    return paths


def start_app(paths: Paths) -> tuple[LockgateApp, float]:
    started = time.perf_counter()
    app = LockgateApp(paths, port=0)
    app.start()
    while not app.state.running:
        spin(0.01)
    ready = time.perf_counter() - started
    app.window.resize(1240, 730)
    app.window.present()
    spin(0.3)
    return app, ready


def fill_audit(path: Path, rows: int) -> float:
    started = time.perf_counter()
    with AuditLog(path) as audit:
        last: concurrent.futures.Future[None] | None = None
        for i in range(rows):
            record = CallRecord(
                id=f"h{i:08d}",
                time=1.7e9 + i,
                client="agent",
                server="everything",
                tool=("echo", "get-sum", "read_file")[i % 3],
                arguments={"i": i, "path": "/x"},
                decision=CallDecision.ALLOWED if i % 7 else CallDecision.DENIED,
                basis="rule",
                rule="echo",
                reason="ok",
                outcome=Outcome.OK,
                duration_ms=0.5,
                result_size=40,
            )
            last = concurrent.futures.Future()
            audit._enqueue((insert_step(record, 1 << 16),), last)  # the writer groups them
            if i % 20000 == 0:
                last.result()
        if last is not None:
            last.result()
    return time.perf_counter() - started


def gui_alone(app: LockgateApp, seconds: float) -> tuple[list[float], float, list[float], float]:
    """The events of 5,000 calls a second put into the host's inbox from a thread, as the
    gateway's bus would, for ``seconds``: the heartbeat's lateness, the rate fed, the
    resident set each second and before."""
    inbox = app.host._inbox
    stop = threading.Event()
    fed = [0]

    def feed() -> None:  # 5,000 calls/s of events, in 10 ms slices, as the bus delivers them
        n = 0
        tick = time.perf_counter()
        while not stop.is_set():
            for _ in range(50):
                cid = f"syn{n}"
                t = time.time()
                inbox.append(CallStarted(cid, t, "agent", "everything", "echo", {"message": n}))
                inbox.append(CallDecided(cid, t, "allowed", "rule", "echo", "allowed by rule"))
                inbox.append(CallFinished(cid, t, "ok", 0.4, 30))
                n += 1
            fed[0] = n
            tick += 0.01
            time.sleep(max(0.0, tick - time.perf_counter()))

    beat = Heartbeat()
    before = rss_mb()
    feeder = threading.Thread(target=feed, daemon=True)
    beat.start()
    feeder.start()
    started = time.perf_counter()
    samples = []
    while time.perf_counter() - started < seconds:
        spin(1.0)
        samples.append(rss_mb())
    late = beat.stop()
    stop.set()
    feeder.join()
    return late, fed[0] / (time.perf_counter() - started), samples, before


def build_week(path: Path, calls: int, now: float) -> None:
    """``calls`` calls over the week before ``now`` (7 servers, 4 clients, a tenth denied),
    inserted straight (as bench_history.py does), then counted by the hour by the log's
    writer."""
    step = WEEK / calls
    with AuditLog(path) as audit:
        conn = sqlite3.connect(path, isolation_level=None)
        rows = []
        for n in range(calls):
            denied = n % 10 == 0
            record = CallRecord(
                time=now - WEEK + n * step,
                client=("claude-desktop", "cursor", "vscode", "ci")[n % 4],
                server=f"server{n % 7}",
                tool=("read_file", "write_file", "search")[n % 3],
                arguments={"n": n},
                decision=CallDecision.DENIED if denied else CallDecision.ALLOWED,
                basis="rule",
                reason="",
                outcome=Outcome.BLOCKED if denied else Outcome.OK,
                waited_ms=1500.0 + n % 30_000 if n % 97 == 0 else None,
            )
            rows.append(row_of(record, 4096))
        conn.execute("BEGIN")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
        conn.close()
        wake = CallRecord(time=now, client="x", server="x", tool="wake", reason="",
                          decision=CallDecision.ALLOWED, outcome=Outcome.OK)  # fmt: skip
        audit.write_sync(wake)
        while audit.search_backlog():  # the writer's own index and hourly counts
            time.sleep(0.2)


def activity_costs(root: Path, calls: int) -> None:
    """5. A week's read for the Activity tab from a log of ``calls``, and one repaint of
    its chart (a week of hourly bars, 7 keys)."""
    now = time.time()
    path = root / "activity" / "audit.db"
    path.parent.mkdir(parents=True)
    started = time.perf_counter()
    build_week(path, calls, now)
    print(f"5. activity: {calls:,} calls over a week, built and counted in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    reader = AuditReader(path)
    week = next(period for period in PERIODS if period.label == "Last 7 days")

    def timed(work: Callable[[], object], runs: int) -> float:
        took = []
        for _ in range(runs):
            began = time.perf_counter()
            work()
            took.append((time.perf_counter() - began) * 1000)
        return statistics.median(took)

    chart_rows = reader.activity(now - WEEK, now, bucket=3600, by="server")
    print(
        f"   read a week by the hour (activity() alone): "
        f"{timed(lambda: reader.activity(now - WEEK, now, bucket=3600, by='server'), 5):.1f} ms; "
        f"all the tab reads (chart, totals, blocked, approvals, sparkline): "
        f"{timed(lambda: read_activity(reader, week, 'server', now), 5):.1f} ms"
    )
    first = first_bucket(now, week)
    model = chart_model(chart_rows, first=first, bucket=3600, buckets=week.buckets, by="server")
    chart = ActivityChart()
    chart.resize(860, 520)
    chart.set_model(model)
    laid = timed(lambda: chart.set_model(model), 20)
    painted = timed(chart.grab, 20)
    print(
        f"   chart of {len(model.bars)} bars x {len(model.keys)} keys: laid out in "
        f"{laid:.2f} ms, one repaint (grab) {painted:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--activity-calls", type=int, default=100_000)
    args = parser.parse_args()
    if not EVERYTHING.exists():
        sys.exit("server-everything is missing: run ./dev test once (npm ci in tests/servers)")
    qt = QApplication(sys.argv[:1])
    qt.setQuitOnLastWindowClosed(False)
    root = Path(tempfile.mkdtemp(prefix="lockgate-bench-gui-"))
    paths = make_paths(root / "live")
    app, ready = start_app(paths)
    print(
        f"python {sys.version.split()[0]}, Qt platform {qt.platformName()}, "
        f"{os.cpu_count()} CPUs; app start to serving: {ready * 1000:.0f} ms"
    )
    beat = Heartbeat()

    beat.start()
    spin(3)
    idle = report("1. idle", beat.stop(), f"RSS {rss_mb():.0f} MB")

    env = {
        **os.environ,
        "LOCKGATE_CONFIG_DIR": str(paths.config_dir),
        "LOCKGATE_DATA_DIR": str(paths.data_dir),
    }
    before = rss_mb()
    load = subprocess.Popen(
        [sys.executable, "-c", LOAD, LOCKGATE, str(args.seconds), str(args.agents)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    spin(1.0)  # the agents connect and shake hands
    beat.start()
    while load.poll() is None:
        spin(0.1)
    late = beat.stop()
    spin(1.0)
    assert load.stdout is not None
    result = json.loads(load.stdout.read())
    rate = result["calls"] / result["seconds"]
    report(
        f"2. real traffic, {args.agents} agents",
        late,
        f"{rate:,.0f} calls/s; RSS {before:.0f} -> {rss_mb():.0f} MB; "
        f"table {app.calls.rowCount()} rows",
        idle,
    )

    late, fed, samples, before = gui_alone(app, args.seconds)
    report(
        "3. GUI alone, 5,000 calls/s",
        late,
        f"{fed:,.0f} calls/s fed; RSS {before:.0f} -> "
        + " ".join(f"{s:.0f}" for s in samples[::2])
        + " MB",
        idle,
    )
    without = p(late, 50), p(late, 99)
    # The same load with the Activity tab in sight, refreshing ten times as often as the
    # app does (every 0.5 s instead of 5 s): a week of the log by tool, read on a worker.
    app.activity.timer.setInterval(500)
    app.activity.period.setCurrentText("Last 7 days")
    app.activity.by.setCurrentText("By tool")
    app.window.show_tab("Activity")
    reads = [0]
    shown = app.activity._show

    def counted(got: object) -> None:
        reads[0] += 1
        shown(got)  # type: ignore[arg-type]

    app.activity._show = counted  # type: ignore[method-assign]
    late, fed, samples, before = gui_alone(app, args.seconds)
    app.activity._show = shown  # type: ignore[method-assign]
    report(
        "3b. same, Activity tab refreshing",
        late,
        f"{fed:,.0f} calls/s fed; {reads[0]} reads shown; without the tab: p50 "
        f"{without[0]:.1f} ms, p99 {without[1]:.1f} ms "
        f"(p99 x{p(late, 99) / max(without[1], 0.1):.1f})",
        idle,
    )
    app.window.show_tab("Live calls")
    app.activity.timer.setInterval(REFRESH_MS)
    app.close()

    print(f"4. filling an audit log with {args.rows:,} records...", flush=True)
    history = make_paths(root / "history")
    took = fill_audit(history.audit_db, args.rows)
    print(f"   written in {took:.1f} s ({history.audit_db.stat().st_size / 1e6:.0f} MB)")
    app, ready = start_app(history)
    print(f"   app start to serving with {args.rows:,} records: {ready * 1000:.0f} ms")
    timings = []
    for _ in range(4):
        before_rows = app.calls.rowCount()
        started = time.perf_counter()
        app.load_older()
        while app.calls.rowCount() == before_rows:
            spin(0.005)
        timings.append((time.perf_counter() - started) * 1000)
    print(
        "   Load older (500 records): "
        + ", ".join(f"{t:.0f} ms" for t in timings)
        + f"; table {app.calls.rowCount()} rows"
    )
    bar = app.live.table.verticalScrollBar()
    app.live.follow.setChecked(False)
    beat.start()
    started = time.perf_counter()
    steps = 0
    for value in range(bar.minimum(), bar.maximum() + 1, max(1, bar.pageStep() // 2)):
        bar.setValue(value)
        app.live.table.viewport().repaint()
        QCoreApplication.processEvents()
        steps += 1
    scroll = (time.perf_counter() - started) * 1000
    late = beat.stop()
    print(
        f"   scrolling the table end to end: {steps} half-pages in {scroll:.0f} ms "
        f"({scroll / max(steps, 1):.1f} ms each, repainted)"
    )
    app.close()
    del late
    activity_costs(root, args.activity_calls)


if __name__ == "__main__":
    main()
