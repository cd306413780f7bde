"""Call records: how one is shown as JSON, and that each has its own id."""

from __future__ import annotations

import dataclasses
import json

from proxy.audit.records import CallDecision, CallRecord, Outcome
from tests.support.records import make_record as make


def test_as_dict_is_plain_json_with_the_time_in_utc():
    record = make(time=1.5, error="boom", decision=CallDecision.REFUSED, outcome=Outcome.BLOCKED)
    data = json.loads(json.dumps(record.as_dict()))
    assert data["time"] == "1970-01-01T00:00:01.500Z"
    assert data["ts"] == 1.5
    assert data["decision"] == "refused"
    assert data["outcome"] == "blocked"
    assert data["arguments"] == {"path": "/home/me/notes.txt"}
    assert set(data) == {f.name for f in dataclasses.fields(CallRecord)} | {"ts"}


def test_each_record_gets_its_own_id():
    first, second = make(), make()
    assert first.id != second.id
    assert len(first.id) == 32
    int(first.id, 16)
