"""The control door's wire: one JSON request a line, one answer a line, every refusal an
``ok: false`` with words a person can act on. A real gateway (the harness's) and a raw
connection to its socket, as any client of the protocol would speak it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import Harness, running


@asynccontextmanager
async def control_line(harness: Harness) -> AsyncIterator[Any]:
    assert harness.info is not None
    reader, writer = await asyncio.open_unix_connection(harness.info.socket)
    writer.write(b'{"lockgate": 1, "mode": "control"}\n')
    assert json.loads(await reader.readline()) == {"ok": True}

    async def ask(line: bytes | dict[str, Any]) -> dict[str, Any]:
        raw = line if isinstance(line, bytes) else json.dumps(line).encode()
        writer.write(raw + b"\n")
        return dict(json.loads(await asyncio.wait_for(reader.readline(), 10)))

    try:
        yield ask
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        (b"not json", 'expected {"op": ...}'),
        (b'{"no": "op"}', 'expected {"op": ...}'),
        ({"op": "make-coffee"}, "unknown op 'make-coffee'"),
        ({"op": "answer", "id": "x", "approve": "true", "digest": "d"}, "approve must be"),
        ({"op": "answer", "id": "x", "approve": True}, "an answer must name the call's digest"),
        ({"op": "answer", "approve": True, "digest": "d", "remember": "forever"}, "remember must"),
        ({"op": "answer", "approve": True, "digest": "d", "reason": 5}, "reason must be text"),
        ({"op": "answer", "id": "x", "approve": True, "digest": "d"}, "no such pending approval"),
        ({"op": "answer", "approve": True, "digest": "d", "remember": "always"}, "a rule"),
    ],
)
async def test_a_request_that_cannot_be_done_is_refused_in_words(
    tmp_path: Path, request_line: Any, error: str
) -> None:
    harness = Harness(tmp_path)
    async with running(harness), control_line(harness) as ask:
        answer = await ask(request_line)
        assert answer["ok"] is False
        assert error in answer["error"]
        assert (await ask({"op": "status"}))["ok"] is True  # and the connection goes on


async def test_status_pause_resume_and_reloads_on_the_wire(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow", "tools": {"echo": {}}})
    async with running(harness), control_line(harness) as ask:
        status = await ask({"op": "status"})
        assert set(status) == {
            "ok", "paused", "servers", "sessions", "policy", "servers_error", "approvers", "audit_error",
            "pending"
        }  # fmt: skip
        assert status["policy"] == {
            "source": str(harness.paths.policy_file), "rules": 1, "default": "allow", "error": None
        }  # fmt: skip
        assert await ask({"op": "pause"}) == {"ok": True, "paused": True}
        assert (await ask({"op": "status"}))["paused"] is True
        assert await ask({"op": "resume"}) == {"ok": True, "paused": False}
        harness.paths.servers_file.write_text('{"mcpServers": {"bad name!": {}}}')
        refused = await ask({"op": "reload-servers"})
        assert refused["ok"] is False
        assert "a server name is" in refused["error"]
        harness.paths.policy_file.write_text("{ broken")
        reloaded = await ask({"op": "reload-policy"})
        assert reloaded["ok"] is False
        assert reloaded["rules"] == 1  # the last good one is what is in force
        assert await ask({"op": "approvals"}) == {"ok": True, "pending": []}
