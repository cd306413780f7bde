"""``lockgate log``: one line per call, saying what decided it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from proxy.audit.log import AuditLog
from proxy.audit.records import CallDecision, Outcome
from tests.support.live import lockgate_command
from tests.support.records import make_record


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
