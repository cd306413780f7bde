"""A plausible call record, for tests of what stores and shows records."""

from __future__ import annotations

import json
from typing import Any

from proxy.audit.records import CallDecision, CallRecord, Outcome


def make_record(**changes: Any) -> CallRecord:
    fields: dict[str, Any] = {
        "time": 1_700_000_000.25,
        "client": "claude-desktop",
        "server": "files",
        "tool": "read_file",
        "arguments": {"path": "/home/me/notes.txt"},
        "decision": CallDecision.ALLOWED,
        "basis": "rule",
        "rule": "files/read_*",
        "reason": "files/read_file is allowed by the policy",
        "outcome": Outcome.OK,
        "duration_ms": 12.5,
        "result_size": 321,
    }
    fields.update(changes)
    return CallRecord(**fields)


def compact(value: Any) -> str:
    """JSON as the log stores it: no spaces, no NaN."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
