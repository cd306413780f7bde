"""``lockgate log``: one line per call, saying what decided it; calls chosen by time and
search; every call that matches exported as JSON Lines or CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.audit.log import AuditLog
from proxy.audit.records import CallDecision, CallRecord, Outcome
from proxy.cli.common import UsageError, moment
from proxy.cli.main import main
from tests.support.live import lockgate_command
from tests.support.records import make_record
from tests.support.waiting import eventually_sync


def test_each_line_names_the_rule_the_default_or_no_rule(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with AuditLog(data / "audit.db") as audit:
        audit.write_sync(make_record(tool="by_rule", rule="files/read_*", basis="rule"))
        audit.write_sync(make_record(tool="by_case", rule="files/read_*", case=1, basis="rule"))
        audit.write_sync(make_record(tool="by_default", rule=None, basis="default"))
        paused = make_record(
            tool="while_paused",
            rule=None,
            basis="pause",
            decision=CallDecision.DENIED,
            outcome=Outcome.BLOCKED,
            reason="Lockgate is paused",
        )
        audit.write_sync(paused)
    out = subprocess.run(
        [lockgate_command(), "log"],
        env={**os.environ, "LOCKGATE_DATA_DIR": str(data), "LOCKGATE_CONFIG_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    line = {name: next(x for x in out.splitlines() if f"/{name} " in x) for name in
            ("by_rule", "by_case", "by_default", "while_paused")}  # fmt: skip
    assert 'rule "files/read_*"  ' in line["by_rule"]
    assert 'rule "files/read_*" when[1]  ' in line["by_case"]  # the case of it that decided
    assert "  default  " in line["by_default"]
    assert "denied (pause)  blocked  no rule" in line["while_paused"]  # not "default"
    assert "Lockgate is paused" in line["while_paused"]


# -- search, time ranges and export (in this process, through the same entry point)

DAY = 86400.0


def lockgate_log(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["log", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def history(lockgate_dirs: tuple[Path, Path]) -> list[CallRecord]:
    """Five calls over the last ten days, the newest a minute ago, searchable."""
    now = time.time()
    records = [
        make_record(tool="old_read", time=now - 10 * DAY, arguments={"path": "/etc/passwd"}),
        make_record(
            tool="push",
            server="git",
            client="cursor",
            time=now - 3 * DAY,
            decision=CallDecision.DENIED,
            outcome=Outcome.BLOCKED,
            reason='=HYPERLINK("http://evil") pushing is denied',
        ),
        make_record(tool="read_file", time=now - 2 * DAY, arguments={"path": "/home/me/.ssh/id"}),
        make_record(tool="fetch", time=now - DAY / 2, outcome=Outcome.TOOL_ERROR, error="-1 lost"),
        make_record(tool="latest", time=now - 60),
    ]
    with AuditLog(lockgate_dirs[1] / "audit.db") as audit:
        for record in records:
            audit.write_sync(record)
        eventually_sync(lambda: audit.search_backlog() == 0, "the calls searchable")
    return records


def tools_of(text: str) -> list[str]:
    return [line.split()[3].split("/")[1] for line in text.splitlines()]


def test_since_until_and_search_choose_the_calls(
    capsys: pytest.CaptureFixture[str], history: list[CallRecord]
) -> None:
    assert tools_of(lockgate_log(capsys, "--since", "7d")[1]) == [
        "push", "read_file", "fetch", "latest"
    ]  # fmt: skip
    assert tools_of(lockgate_log(capsys, "--since", "7d", "--until", "1d")[1]) == [
        "push", "read_file"
    ]  # fmt: skip
    assert tools_of(lockgate_log(capsys, "--search", "ssh")[1]) == ["read_file"]
    assert tools_of(lockgate_log(capsys, "--search", "etc", "--since", "1w")[1]) == []
    assert tools_of(lockgate_log(capsys, "--outcome", "tool_error")[1]) == ["fetch"]
    code, out, err = lockgate_log(capsys, "--since", "yesterday")
    assert (code, out) == (2, "")
    assert "--since 'yesterday' is not a time" in err
    code, _, err = lockgate_log(capsys, "--search", "***")
    assert code == 2
    assert "nothing to search for" in err


def test_jsonl_and_csv_export_every_call_that_matches(
    capsys: pytest.CaptureFixture[str], history: list[CallRecord]
) -> None:
    code, out, _ = lockgate_log(capsys, "--format", "jsonl")
    assert code == 0
    exported = [json.loads(line) for line in out.splitlines()]
    assert [e["tool"] for e in exported] == [r.tool for r in history]  # oldest first, all
    assert exported[0]["arguments"] == {"path": "/etc/passwd"}
    assert lockgate_log(capsys, "--json", "--since", "1d")[1].count("\n") == 2
    code, out, _ = lockgate_log(capsys, "--format", "csv", "--search", "denied")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["tool"] for row in rows] == ["push"]
    assert rows[0]["reason"].startswith("'=HYPERLINK")  # never a formula in a spreadsheet
    assert (rows[0]["decision"], rows[0]["client"]) == ("denied", "cursor")
    rows = list(csv.DictReader(io.StringIO(lockgate_log(capsys, "--format", "csv")[1])))
    assert len(rows) == 5
    assert next(r for r in rows if r["tool"] == "fetch")["error"] == "'-1 lost"
    rows = list(csv.DictReader(io.StringIO(lockgate_log(capsys, "--format", "csv", "-n", "2")[1])))
    assert [row["tool"] for row in rows] == ["fetch", "latest"]  # the latest two, in order


def test_options_that_do_not_go_together_are_refused(
    capsys: pytest.CaptureFixture[str], history: list[CallRecord]
) -> None:
    for argv, said in (
        (("--follow", "--search", "x"), "leave out --search"),
        (("--follow", "--format", "csv"), "cannot write CSV"),
        (("--json", "--format", "csv"), "--json is --format jsonl"),
        (("--limit", "-1"), "--limit must be 0 or more"),
    ):
        code, _, err = lockgate_log(capsys, *argv)
        assert code == 2, argv
        assert said in err, (argv, err)


def test_a_moment_is_an_age_or_a_date() -> None:
    now = 1_800_000_000.0
    assert moment("30m", now, "--since") == now - 1800
    assert moment("1.5h", now, "--since") == now - 5400
    assert moment("2W", now, "--since") == now - 14 * DAY
    utc = datetime(2026, 11, 30, 14, tzinfo=UTC).timestamp()
    assert moment("2026-11-30T14:00:00+00:00", now, "--since") == utc
    assert moment("2026-11-30 14:00", now, "--since") == datetime(2026, 11, 30, 14).timestamp()
    with pytest.raises(UsageError, match="--until '7 days'"):
        moment("7 days", now, "--until")
