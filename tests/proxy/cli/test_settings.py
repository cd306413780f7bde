"""``lockgate settings``: every setting shown, one shown, one set (numbers and words), every
mistake told and the file left as it was; and ``lockgate serve`` prunes the audit log
by the retention setting."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.audit.log import AuditLog, audit_summary
from proxy.cli.main import main
from proxy.config.runinfo import DEFAULT_PORT
from tests.support.live import LiveGateway
from tests.support.records import make_record
from tests.support.waiting import eventually_sync


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def settings_json(lockgate_dirs: tuple[Path, Path]) -> Path:
    return lockgate_dirs[0] / "settings.json"


def lockgate(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """``lockgate ARGS...`` in this process; argparse's exits become exit codes."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = 0 if exc.code is None else int(exc.code)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def test_a_word_setting_is_set_with_the_word_alone(capsys, settings_json):
    result = lockgate(capsys, "settings", "notifications", "plain")
    assert result == Result(
        0,
        f'notifications = "plain" (in {settings_json})\nthe app uses it from its next start\n',
        "",
    )
    assert json.loads(settings_json.read_text()) == {"notifications": "plain"}
    assert lockgate(capsys, "settings", "notifications").out == '"plain"\n'
    assert lockgate(capsys, "settings", "notifications", '"off"').code == 0  # JSON's too
    assert lockgate(capsys, "settings", "notifications").out == '"off"\n'


def test_number_settings_are_set_as_numbers(capsys, settings_json):
    for name, value in (("audit_retention_days", "0"), ("approval_timeout_seconds", "300")):
        result = lockgate(capsys, "settings", name, value)
        assert result.code == 0, result.err
        assert result.out.splitlines() == [
            f"{name} = {value} (in {settings_json})",
            "the app and `lockgate serve` use it from their next start",
        ]
    assert json.loads(settings_json.read_text()) == {
        "audit_retention_days": 0,
        "approval_timeout_seconds": 300,
    }


def test_every_setting_is_listed_with_its_value_and_what_it_is(capsys):
    lockgate(capsys, "settings", "notifications", "off")
    out = lockgate(capsys, "settings").out
    rows = [line.split(maxsplit=2) for line in out.splitlines()]
    assert [row[:2] for row in rows] == [
        ["port", str(DEFAULT_PORT)],
        ["max_message_bytes", "16777216"],
        ["audit_retention_days", "90"],
        ["audit_max_megabytes", "0"],
        ["approval_timeout_seconds", "120"],
        ["notifications", '"off"'],
        ["team_policy", '""'],
        ["otlp_endpoint", '""'],
    ]
    column = len("approval_timeout_seconds  ")  # the longest name, and two spaces
    for line, (name, value, _) in zip(out.splitlines(), rows, strict=True):
        assert (line[:column].rstrip(), line[column:].split()[0]) == (name, value)  # aligned
    assert "or 0 to keep every call for ever" in rows[2][2]
    assert "login" not in out  # the login entry is not a setting (lockgate autostart)


@pytest.mark.parametrize(
    ("argv", "told"),
    [
        (
            ("notifications", "loud"),
            'lockgate: settings.json has an error: "notifications" must be one of "actions", '
            '"plain", "off", not \'loud\'\n',
        ),
        (("audit_retention_days", "3651"), "from 1 to 3650, or 0 to keep every call, not 3651"),
        (("audit_retention_days", "ninety"), "not 'ninety'"),
        (("approval_timeout_seconds", "2"), "whole number of seconds from 5 to 3600, not 2"),
        (("port", "abc"), "\"port\" must be a whole number from 1 to 65535, not 'abc'"),
    ],
)
def test_a_wrong_value_is_told_and_the_file_keeps_what_it_had(capsys, settings_json, argv, told):
    assert lockgate(capsys, "settings", "notifications", "plain").code == 0
    result = lockgate(capsys, "settings", *argv)
    assert (result.code, result.out) == (1, "")
    assert told in result.err
    assert json.loads(settings_json.read_text()) == {"notifications": "plain"}


def test_an_unknown_setting_is_a_usage_error(capsys, settings_json):
    for argv in (("colour",), ("colour", "red"), ("start_at_login", "true")):
        result = lockgate(capsys, "settings", *argv)
        assert result.code == 2
        assert f"no setting {argv[0]!r}; the settings are: port, max_message_bytes" in result.err
    assert not settings_json.exists()


@pytest.mark.slow
def test_serve_prunes_the_audit_log_by_the_retention_setting(tmp_path):
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    data.mkdir()
    now = time.time()
    old = make_record(tool="two_days_old", time=now - 2 * 86400)
    recent = make_record(tool="an_hour_old", time=now - 3600)
    with AuditLog(data / "audit.db") as audit:
        asyncio.run(audit.write(old))
        asyncio.run(audit.write(recent))
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    set_retention = gateway.lockgate("settings", "audit_retention_days", "1")
    assert set_retention.returncode == 0, set_retention.stderr
    gateway.start()
    try:
        eventually_sync(
            lambda: audit_summary(data / "audit.db").calls == 1, "the prune as serve starts"
        )
        with AuditLog(data / "audit.db") as audit:  # retention 0: this reader prunes nothing
            assert [r.tool for r in audit.query()] == ["an_hour_old"]
    finally:
        gateway.stop()
