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

from tests.support.harness import Harness, LocalClient, recorder_servers, running, write_json
from tests.support.waiting import eventually


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
            "ok", "paused", "servers", "disabled", "sessions", "policy", "servers_error", "approvers",
            "audit_error", "pending"
        }  # fmt: skip
        assert (status["servers"], status["disabled"]) == (["rec"], [])
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


async def test_status_names_the_servers_turned_off_and_a_waiting_call_its_case(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    off = {"command": "no-such-server", "disabled": True}
    write_json(harness.paths.servers_file, recorder_servers(harness.record, off=off))
    harness.write_policy(
        {"default": "allow", "tools": {"echo": {"when": [
            {"clients": ["someone-else"], "action": "deny"},
            {"arguments": {"required": ["n"]}, "action": "ask"},
        ]}}}
    )  # fmt: skip
    async with (
        running(harness) as gateway,
        control_line(harness) as ask,
        LocalClient.open(harness) as client,
    ):
        status = await ask({"op": "status"})
        assert (status["servers"], status["disabled"]) == (["rec"], ["off"])
        await client.handshake(gateway)
        assert harness.info is not None
        reader, writer = await asyncio.open_unix_connection(harness.info.socket)
        try:
            writer.write(b'{"lockgate": 1, "mode": "control"}\n{"op": "watch"}\n')
            assert json.loads(await reader.readline()) == {"ok": True}
            assert json.loads(await reader.readline()) == {"ok": True, "pending": []}
            call = client.start_call("echo", {"n": 1})
            heard = json.loads(await asyncio.wait_for(reader.readline(), 10))
        finally:
            writer.close()
        assert heard["event"] == "pending"
        assert (heard["approval"]["rule"], heard["approval"]["case"]) == ("echo", 1)
        await eventually(gateway.approvals.pending, "the call to wait for a person")
        (listed,) = (await ask({"op": "approvals"}))["pending"]
        assert (listed["rule"], listed["case"]) == ("echo", 1)
        answered = await ask(
            {"op": "answer", "id": listed["id"], "approve": False, "digest": listed["digest"]}
        )
        assert answered == {"ok": True}
        assert (await client.answer(call))["result"]["isError"] is True
