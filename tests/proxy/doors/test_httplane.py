"""The HTTP door's fast lane (proxy/doors/httplane.py): what it takes and what it leaves to
the SDK, a client's cancellation, and the SDK's session kept in use by its calls.

Real gateway, real recorder upstream, real HTTP client (httpx2). The answers' likeness to
the SDK route's is tests/contract/test_client_routes.py's; resumption is test_resume.py's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
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


async def held_call(
    gateway: Gateway, session: HttpSession, request_id: int
) -> tuple[asyncio.Task[httpx2.Response], Any]:
    """A lane call that waits for a person, and its pending approval."""
    held = asyncio.create_task(session.post(call(request_id)))
    (pending,) = await eventually(gateway.approvals.pending, "the call to wait for a person")
    return held, pending


async def test_a_cancelled_call_is_answered_as_the_era_answers_and_recorded_so(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        session = HttpSession(http, harness.http_url + "rec", harness.token("agent"))
        await session.open()
        held, _pending = await held_call(gateway, session, 5)
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
        held, pending = await held_call(gateway, busy, 1)
        idle = HttpSession(http, url, token)
        idle_id = await idle.open()
        await eventually(lambda: idle_id not in gateway.http_sessions, "the idle one to go")
        assert busy.session_id in gateway.http_sessions
        assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
        assert text_of(answer_of(await held)) == "ran echo"
        assert (await idle.post(call(2))).status_code == 404
    assert harness.recorded_names() == ["echo"]


async def test_only_the_sessions_own_client_cancels_its_calls_past_the_sdks_checks(
    tmp_path: Path,
) -> None:
    """Red team: a cancellation with another client's token on the victim's session id
    was accepted (202, the victim's call cancelled; and 202 against 404 told a live id
    from a made-up one), and one with headers the SDK refuses was accepted too."""
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        url = harness.http_url + "rec"
        victim = HttpSession(http, url, harness.token("victim"))
        await victim.open()
        held, pending = await held_call(gateway, victim, 7)
        cancel = {"method": "notifications/cancelled", "params": {"requestId": 7}}
        intruder = HttpSession(http, url, harness.token("intruder"))
        intruder.session_id = "0" * 32
        made_up = await intruder.post(cancel)
        intruder.session_id = victim.session_id
        theirs = await intruder.post(cancel)
        assert (made_up.status_code, theirs.status_code) == (404, 404)
        bad = {**victim.headers(), "Accept": "text/plain", "Content-Type": "text/plain"}
        assert (await victim.post(cancel, headers=bad)).status_code >= 400
        assert [p.id for p in gateway.approvals.pending()] == [pending.id]  # still waits
        assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
        assert text_of(answer_of(await held)) == "ran echo"
    assert harness.recorded_names() == ["echo"]


@pytest.mark.parametrize("how", ["revoked", "deleted"])
async def test_a_sessions_end_cancels_its_calls_on_the_lane(tmp_path: Path, how: str) -> None:
    """Red team: a lane call outlived its session (its token revoked, or its DELETE):
    approved after, it reached the server, which started again for an ended session. As
    on the SDK route, the session's end cancels it, and nothing of it starts again."""
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        session = HttpSession(http, harness.http_url + "rec", harness.token("agent"))
        await session.open()
        assert session.session_id is not None
        ours = gateway.http_sessions[session.session_id]
        held, _pending = await held_call(gateway, session, 1)
        if how == "revoked":
            assert await gateway.end_sessions_of("agent") == 1
        else:
            await session.close()
        await eventually(lambda: gateway.approvals.pending() == [], "the question withdrawn")
        await eventually(
            lambda: gateway.audit.query(limit=1)[0].outcome.value == "cancelled", "recorded"
        )
        assert ours.closed
        assert not ours.beside
        held.cancel()
    assert harness.recorded_names() == []
    assert ours.upstream is None or ours.upstream.dead.is_set()


async def on_both_routes(
    harness: Harness, post: Callable[[HttpSession], Awaitable[httpx2.Response]]
) -> dict[str, int]:
    """``post`` on a session the SDK serves (its client can be asked things) and on one
    the lane would; each one's status."""
    harness.write_policy(ALLOW)
    statuses = {}
    routes: list[tuple[str, dict[str, Any]]] = [("sdk", {"sampling": {}}), ("lane", {})]
    async with running(harness), httpx2.AsyncClient(timeout=30) as http:
        for route, capabilities in routes:
            url, token = harness.http_url + "rec", harness.token("agent")
            session = HttpSession(http, url, token, capabilities=capabilities)
            await session.open()
            statuses[route] = (await post(session)).status_code
    return statuses


SDK_REFUSES = {
    "a Host without its port": {"Host": "localhost"},
    "an IPv6 Host without brackets": {"Host": "::1"},
    "an https Origin": {"Origin": "https://127.0.0.1:1234"},
    "an Origin without its port": {"Origin": "http://localhost"},
    "a Content-Type list": {"Content-Type": "text/plain, application/json"},
}


@pytest.mark.parametrize("case", sorted(SDK_REFUSES))
async def test_headers_the_sdk_refuses_are_refused_alike(tmp_path: Path, case: str) -> None:
    """Red team: the lane served what the SDK's transport security refuses."""

    async def post(session: HttpSession) -> httpx2.Response:
        return await session.post(call(1), headers={**session.headers(), **SDK_REFUSES[case]})

    harness = Harness(tmp_path)
    statuses = await on_both_routes(harness, post)
    assert statuses["lane"] == statuses["sdk"] >= 400
    assert harness.recorded_names() == []


CALL_TEXT = json.dumps({"jsonrpc": "2.0", **call(1)})
BODIES_THE_SDK_DOES_NOT_CALL = {
    "UTF-16": CALL_TEXT.encode("utf-16"),
    "UTF-8 with a byte order mark": b"\xef\xbb\xbf" + CALL_TEXT.encode(),
    "a call with an error member (a response, to the SDK)": json.dumps(
        {**json.loads(CALL_TEXT), "error": {"code": 1, "message": "x"}}
    ).encode(),
}


@pytest.mark.parametrize("case", sorted(BODIES_THE_SDK_DOES_NOT_CALL))
async def test_bodies_the_sdk_does_not_take_for_a_call_are_not_one(
    tmp_path: Path, case: str
) -> None:
    """Red team: the lane read as a tools/call what the SDK refuses or reads as an answer."""

    async def post(session: HttpSession) -> httpx2.Response:
        body = BODIES_THE_SDK_DOES_NOT_CALL[case]
        return await session.http.post(session.url, content=body, headers=session.headers())

    harness = Harness(tmp_path)
    statuses = await on_both_routes(harness, post)
    assert statuses["lane"] == statuses["sdk"]
    assert harness.recorded_names() == []


@pytest.mark.parametrize("bad", [{"Accept": "application/json"}, {"Origin": "https://localhost"}])
async def test_a_reconnection_the_sdk_refuses_is_refused(
    tmp_path: Path, bad: dict[str, str]
) -> None:
    """Red team: a reconnection to a lane stream that is still waiting was served past the
    checks the SDK makes of a GET (its Accept, its transport security)."""
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        url, token = harness.http_url + "rec", harness.token("agent")
        session = HttpSession(http, url, token, protocol="2025-11-25")
        await session.open()
        async with http.stream("POST", url, content=CALL_TEXT, headers=session.headers()) as live:
            priming = ""
            async for line in live.aiter_lines():
                if line.startswith("id:"):
                    priming = line
                    break
            (pending,) = await eventually(gateway.approvals.pending, "the call to wait")
            headers = {**session.headers(), "Last-Event-ID": priming[3:].strip(), **bad}
            refused = await http.get(url, headers=headers)
            assert refused.status_code in (403, 406), refused.text
            assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
    assert harness.recorded_names() == ["echo"]
