"""Photograph the Activity tab over a week of made-up calls, and the tray's menu with its
sparkline (docs/activity.png, docs/tray-sparkline.png).

    xvfb-run -a -s "-screen 0 1280x800x24" bash -c 'openbox & trayer --edge top \
        --align right --width 10 --height 28 & sleep 1; QT_QPA_PLATFORM=xcb \
        .venv/bin/python docs/activity_screenshot.py [OUTDIR]'

./dev screenshots photographs the app under real traffic, which lasts minutes; a week of
it is written here straight into the audit log (several servers and clients, busier by
day, some calls denied, some asked about), then the app is opened on it.
"""

from __future__ import annotations

import math
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, QPoint
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from desktop.app import LockgateApp
from proxy.audit.database import INSERT, row_of
from proxy.audit.log import AuditLog
from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.config.paths import Paths

REPO = Path(__file__).resolve().parent.parent
WEEK = 7 * 86400.0
TOOLS = {
    "files": ["read_file", "write_file", "list_directory", "search_files"],
    "github": ["create_issue", "list_pulls", "merge_pull", "push"],
    "shell": ["run"],
    "postgres": ["query"],
    "slack": ["post_message", "read_channel"],
    "time": ["get_current_time"],
    "linear": ["create_issue", "list_issues"],
    "sentry": ["list_errors"],
}
WEIGHTS = {"files": 9, "github": 4, "shell": 2, "postgres": 3, "slack": 2, "time": 1, "linear": 1}
CLIENTS = {"claude-desktop": 5, "cursor": 4, "vscode": 2, "claude-code": 3}
DENIED_TOOLS = {
    "shell/run": 0.45,
    "github/push": 0.3,
    "github/merge_pull": 0.2,
    "files/write_file": 0.08,
}
ASKED_TOOLS = {"postgres/query": 0.15, "slack/post_message": 0.5, "github/create_issue": 0.3}


def week_of_calls(path: Path, now: float, calls: int) -> None:
    rng = random.Random(11)
    servers, server_weights = list(WEIGHTS), list(WEIGHTS.values())
    clients, client_weights = list(CLIENTS), list(CLIENTS.values())
    with AuditLog(path) as audit:
        conn = sqlite3.connect(path, isolation_level=None)
        records: list[CallRecord] = []
        made = 0
        while made < calls:
            when = now - rng.random() * WEEK
            hour = time.localtime(when).tm_hour
            busy = 0.15 + max(0.0, math.sin((hour - 7) / 13 * math.pi))  # by day
            if rng.random() > busy:
                continue
            made += 1
            server = rng.choices(servers, server_weights)[0]
            tool = rng.choice(TOOLS[server])
            key = f"{server}/{tool}"
            decision, basis, waited, outcome = CallDecision.ALLOWED, "rule", None, Outcome.OK
            if rng.random() < DENIED_TOOLS.get(key, 0.01):
                decision, outcome = CallDecision.DENIED, Outcome.BLOCKED
            elif rng.random() < ASKED_TOOLS.get(key, 0.0):
                waited = rng.lognormvariate(8.6, 0.9)
                if waited > 60_000:
                    decision, basis, outcome = CallDecision.REFUSED, "timeout", Outcome.BLOCKED
                    waited = 60_000.0
                elif rng.random() < 0.2:
                    decision, basis, outcome = CallDecision.REFUSED, "person", Outcome.BLOCKED
                else:
                    decision, basis = CallDecision.APPROVED, "person"
            record = CallRecord(
                time=when,
                client=rng.choices(clients, client_weights)[0],
                server=server,
                tool=tool,
                arguments={"n": made},
                decision=decision,
                basis=basis,
                reason=f"{key} by {basis}",
                outcome=outcome,
                duration_ms=None if outcome is Outcome.BLOCKED else 20.0,
                waited_ms=waited,
            )
            records.append(record)
        rows = [row_of(r, 4096) for r in sorted(records, key=lambda r: r.time)]
        conn.execute("BEGIN")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
        conn.close()
        wake = CallRecord(time=now - 5, client="cursor", server="time", tool="get_current_time",
                          reason="", decision=CallDecision.ALLOWED, outcome=Outcome.OK)  # fmt: skip
        audit.write_sync(wake)
        while audit.search_backlog():  # the writer counts them by the hour
            time.sleep(0.2)


def settle(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)


def shoot(path: Path) -> None:
    settle(0.6)
    QGuiApplication.primaryScreen().grabWindow(0).save(str(path))
    print(f"wrote {path}")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs").resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="lockgate-activity-"))
    paths = Paths(config_dir=root / "config", data_dir=root / "data")
    paths.config_dir.mkdir(parents=True)
    (paths.config_dir / "servers.json").write_text('{"mcpServers": {}}')
    week_of_calls(paths.audit_db, time.time(), 40_000)
    qt = QApplication(sys.argv[:1])
    qt.setQuitOnLastWindowClosed(False)
    app = LockgateApp(paths, port=0)  # not started: the views read the log themselves
    app.window.resize(1240, 730)
    app.window.move(20, 36)
    app.window.present()
    app.window.show_tab("Activity")
    app.activity.period.setCurrentText("Last 7 days")
    settle(2.0)
    shoot(out / "activity.png")
    app.refresh_sparkline()
    settle(1.0)
    if app.tray.icon is not None:
        where = app.tray.icon.geometry()
        app.tray.menu.popup(QPoint(where.left() - 280, where.bottom() + 4))
        settle(1.0)
        shoot(out / "tray-sparkline.png")
        app.tray.menu.hide()
    else:
        print("no tray here: the tray's menu is not photographed")
    app.close()
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
