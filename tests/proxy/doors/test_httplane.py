"""The HTTP door's fast lane (proxy/doors/httplane.py): what it takes and what it leaves to
the SDK, a client's cancellation, and the SDK's session kept in use by its calls.

Real gateway, real recorder upstream, real HTTP client (httpx2). The answers' likeness to
the SDK route's is tests/contract/test_client_routes.py's; resumption is test_resume.py's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

import proxy.doors.http as http_door
from proxy.gateway.core import Gateway
from tests.support.harness import Harness, HttpSession, answer_of, running, text_of
from tests.support.waiting import eventually

ALLOW = {"default": "allow"}
ASK_ECHO = {"default": "allow", "tools": {"echo": {"action": "ask"}}}


@pytest.fixture
def sdk_route(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tools the SDK's route was given, in order (a spy on it: the lane's calls do
    not pass there)."""
    seen: list[str] = []
    original = Gateway._tool_call

    async def spy(self: Gateway, ctx: Any, session: Any, params: Any) -> Any:
        seen.append(params.get("name"))
        return await original(self, ctx, session, params)

    monkeypatch.setattr(Gateway, "_tool_call", spy)
    return seen


def call(request_id: int, name: str = "echo") -> dict[str, Any]:
    return {"id": request_id, "method": "tools/call", "params": {"name": name, "arguments": {}}}


async def test_a_plain_call_is_answered_with_one_json_body(
    tmp_path: Path, sdk_route: list[str]
) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(ALLOW)
    async with running(harness), httpx2.AsyncClient(timeout=30) as http:
        session = HttpSession(http, harness.http_url + "rec", harness.token("agent"))
        await session.open()
        response = await session.post(call(1))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["mcp-session-id"] == session.session_id
        assert json.loads(response.content) == {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {"content": [{"type": "text", "text": "ran echo"}]},
        }
    assert sdk_route == []
    assert harness.recorded_names() == ["echo"]


async def test_what_the_lane_cannot_serve_as_the_sdk_would_goes_to_the_sdk(
    tmp_path: Path, sdk_route: list[str]
) -> None:
    """A client that can be asked things (a server's question travels on its call's own
    stream), a protocol header other than the session's, and an Accept the SDK refuses:
    each is the SDK's to answer."""
    harness = Harness(tmp_path)
    harness.write_policy(ALLOW)
    async with running(harness), httpx2.AsyncClient(timeout=30) as http:
        url, token = harness.http_url + "rec", harness.token("agent")
        asking = HttpSession(http, url, token, capabilities={"sampling": {}})
        await asking.open()
        response = await asking.post(call(1))
        assert response.headers["content-type"].startswith("text/event-stream")
        assert text_of(answer_of(response)) == "ran echo"

        plain = HttpSession(http, url, token)
        await plain.open()
        older = {**plain.headers(), "mcp-protocol-version": "2025-03-26"}
        assert text_of(answer_of(await plain.post(call(2), headers=older))) == "ran echo"

        json_only = {**plain.headers(), "Accept": "application/json"}
        refused = await plain.post(call(3), headers=json_only)
        assert refused.status_code == 406
        assert "text/event-stream" in refused.json()["error"]["message"]
    assert sdk_route == ["echo", "echo"]  # (the SDK refused the third before its route)
    assert harness.recorded_names() == ["echo", "echo"]


async def test_another_clients_session_id_takes_no_call_through(
    tmp_path: Path, sdk_route: list[str]
) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(ALLOW)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        url = harness.http_url + "rec"
        victim = HttpSession(http, url, harness.token("victim"))
        await victim.open()
        intruder = HttpSession(http, url, harness.token("intruder"))
        intruder.session_id = victim.session_id
        response = await intruder.post(call(1))
        assert response.status_code == 404  # as an unknown session: ids cannot be probed
        assert text_of(await victim.call("echo")) == "ran echo"  # the victim's is whole
    assert harness.recorded_names() == ["echo"]
    assert [r.client for r in gateway.audit.query(limit=10)] == ["victim"]
    assert sdk_route == []


async def test_a_cancelled_call_is_answered_as_the_era_answers_and_recorded_so(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        session = HttpSession(http, harness.http_url + "rec", harness.token("agent"))
        await session.open()
        held = asyncio.create_task(session.post(call(5)))
        await eventually(gateway.approvals.pending, "the call to wait for a person")
        cancel = {"method": "notifications/cancelled", "params": {"requestId": 5}}
        assert (await session.post(cancel)).status_code == 202
        answer = answer_of(await held)
        assert answer == {
            "jsonrpc": "2.0",
            "id": 5,
            "error": {"code": -32800, "message": "Request cancelled"},
        }
        assert gateway.approvals.pending() == []  # the person is no longer asked
        (row,) = gateway.audit.query(limit=10)
        await eventually(lambda: gateway.audit.query(limit=1)[0].outcome.value == "cancelled", "")
    assert harness.recorded_names() == []
    assert row.tool == "echo"


async def test_a_call_on_the_lane_keeps_the_sdks_session_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With sessions idle-timed-out after a fraction of a second: a session with nothing
    in flight goes (the evidence that the time passed), the one whose call waits on the
    lane all that while stays, and is served after."""
    monkeypatch.setattr(http_door, "SESSION_IDLE_SECONDS", 0.3)
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        url, token = harness.http_url + "rec", harness.token("agent")
        busy = HttpSession(http, url, token)
        await busy.open()
        held = asyncio.create_task(busy.post(call(1)))
        (pending,) = await eventually(gateway.approvals.pending, "the call to wait")
        idle = HttpSession(http, url, token)
        idle_id = await idle.open()
        await eventually(lambda: idle_id not in gateway.http_sessions, "the idle one to go")
        assert busy.session_id in gateway.http_sessions
        assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
        assert text_of(answer_of(await held)) == "ran echo"
        assert (await idle.post(call(2))).status_code == 404
    assert harness.recorded_names() == ["echo"]
