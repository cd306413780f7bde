"""Resumable streams on the HTTP door: a client whose SSE stream drops mid-call reconnects
with ``Last-Event-ID`` and gets what it missed, and never what another session was sent.

Real gateway, real recorder upstream, real HTTP client (httpx2, streaming); the call is
held by an ``ask`` the test answers, so the drop lands mid-call without any sleep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
from mcp_types import JSONRPCResponse

from proxy.doors.resume import RETRY_MILLISECONDS, EventLog, SessionEvents, current_log
from proxy.gateway.core import Gateway
from tests.support.harness import Harness, HttpSession, running
from tests.support.waiting import eventually

RESUMING = "2025-11-25"  # priming events (and so resumption) start with this version
ASK_ECHO = {"default": "allow", "tools": {"echo": {"action": "ask"}}}


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of an SSE body: each as its fields (id, retry, data…)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


async def open_session(http: httpx2.AsyncClient, harness: Harness, token: str) -> HttpSession:
    session = HttpSession(http, harness.http_url + "rec", token)
    opened = await session.post(
        {
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": RESUMING,
                "capabilities": {},
                "clientInfo": {"name": "resumer", "version": "1"},
            },
        }
    )
    assert opened.status_code == 200, opened.text
    session.session_id = opened.headers["mcp-session-id"]
    assert (await session.post({"method": "notifications/initialized"})).status_code == 202
    return session


def resuming_headers(session: HttpSession, last_event_id: str) -> dict[str, str]:
    headers = session.headers()
    headers["mcp-protocol-version"] = RESUMING
    headers["Accept"] = "text/event-stream"
    headers["Last-Event-ID"] = last_event_id
    return headers


async def resume(session: HttpSession, last_event_id: str) -> list[dict[str, Any]]:
    """Reconnect with ``Last-Event-ID``; the messages replayed, up to the first answer.

    The SDK keeps a resumed stream open for more, so this reads until an answer comes
    or the stream ends (an id that replays nothing ends it at once)."""
    messages: list[dict[str, Any]] = []
    headers = resuming_headers(session, last_event_id)
    async with session.http.stream("GET", session.url, headers=headers) as response:
        assert response.status_code == 200
        seen = ""
        async for chunk in response.aiter_text():
            seen += chunk
            *done, seen = seen.replace("\r\n", "\n").split("\n\n")
            for event in sse_events("\n\n".join(done)):
                if event.get("data"):
                    messages.append(json.loads(event["data"]))
            if any("result" in m or "error" in m for m in messages):
                break
    return messages


async def call_and_drop(session: HttpSession, request_id: int) -> dict[str, str]:
    """Start a ``tools/call`` of echo and drop its stream after the priming event."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {}},
        }
    )
    headers = {**session.headers(), "mcp-protocol-version": RESUMING}
    async with session.http.stream("POST", session.url, content=body, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        seen = ""
        async for chunk in response.aiter_text():
            seen += chunk
            if "\n\n" in seen.replace("\r\n", "\n"):
                break  # the priming event is here; the answer is not: the client drops
    (priming,) = sse_events(seen)
    return priming


async def held_call(gateway: Gateway) -> Any:
    return await eventually(
        lambda: next(iter(gateway.approvals.pending()), None), "the call to wait for a person"
    )


async def test_a_client_that_drops_mid_call_gets_the_answer_when_it_reconnects(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        session = await open_session(http, harness, harness.token("agent"))
        priming = await call_and_drop(session, 7)
        assert priming["retry"] == str(RETRY_MILLISECONDS)
        assert priming["data"] == ""
        pending = await held_call(gateway)
        assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
        await eventually(lambda: harness.recorded_names() == ["echo"], "the call to be sent")
        assert await resume(session, priming["id"]) == [
            {
                "jsonrpc": "2.0",
                "id": 7,
                "result": {"content": [{"type": "text", "text": "ran echo"}]},
            }
        ]


async def test_another_session_replays_nothing_of_a_session_it_does_not_own(
    tmp_path: Path,
) -> None:
    """Stream names repeat across sessions (both calls have id 7): the answer of the
    first session's call must not be replayed on the second, whatever id it gives."""
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        token = harness.token("agent")  # one client, two of its sessions
        first = await open_session(http, harness, token)
        second = await open_session(http, harness, token)
        priming = await call_and_drop(first, 7)
        pending = await held_call(gateway)
        assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
        await eventually(lambda: harness.recorded_names() == ["echo"], "the call to be sent")
        # the first session's id: unknown to the second (a store shared by id would
        # replay the first's answer here); an id of its own: its own answer only
        assert await resume(second, priming["id"]) == []
        assert [m["id"] for m in await resume(second, "1")] == [0]
        (mine,) = await resume(first, priming["id"])
        assert mine["result"]["content"][0]["text"] == "ran echo"


def response(number: int, size: int = 0) -> JSONRPCResponse:
    return JSONRPCResponse(jsonrpc="2.0", id=number, result={"pad": "x" * size})


async def replayed(store: SessionEvents, log: EventLog, after: str) -> list[Any]:
    got: list[Any] = []

    async def collect(event: Any) -> None:
        got.append(event.message.id)

    token = current_log.set(log)
    try:
        await store.replay_events_after(after, collect)
    finally:
        current_log.reset(token)
    return got


async def store_in(store: SessionEvents, log: EventLog, stream: str, message: Any) -> str:
    token = current_log.set(log)
    try:
        return await store.store_event(stream, message)
    finally:
        current_log.reset(token)


async def test_a_session_keeps_its_newest_events_within_its_bounds() -> None:
    store = SessionEvents(session_events=3, session_bytes=10_000, total_bytes=100_000)
    log = EventLog()
    first = await store_in(store, log, "1", None)  # a priming event
    ids = [await store_in(store, log, "1", response(n)) for n in range(1, 5)]
    # the priming event and the first answer were pushed out: nothing to resume from
    assert await replayed(store, log, first) == []
    assert await replayed(store, log, ids[0]) == []
    assert await replayed(store, log, ids[1]) == [3, 4]
    big = SessionEvents(session_events=100, session_bytes=2_000, total_bytes=100_000)
    mine = EventLog()
    kept = [await store_in(big, mine, "1", response(n, 600)) for n in range(1, 6)]
    assert mine.size <= 2_000
    assert len(mine.events) == 2  # about 700 bytes each
    assert await replayed(big, mine, kept[-2]) == [5]
    assert await replayed(big, mine, kept[0]) == []


async def test_all_sessions_together_stay_within_the_total_and_a_closed_one_frees_its_own() -> None:
    store = SessionEvents(session_events=100, session_bytes=100_000, total_bytes=3_500)
    old, new = EventLog(), EventLog()
    for n in range(4):
        await store_in(store, old, "1", response(n, 500))
    for n in range(4):
        await store_in(store, new, "1", response(n, 500))
    assert store.size <= 3_500
    assert 0 < len(old.events) < 4  # the oldest went first
    assert len(new.events) == 4
    before = store.size
    del old  # the session ended: its tasks (and so its log) are gone
    assert store.size < before
    assert store.size == new.size


async def test_an_event_id_outside_any_session_replays_nothing() -> None:
    store = SessionEvents()
    assert await store.store_event("1", response(1)) == "0"  # no session: nothing kept
    assert store.size == 0
    got: list[Any] = []

    async def collect(event: Any) -> None:
        got.append(event)

    assert await store.replay_events_after("0", collect) is None
    assert await replayed(store, EventLog(), "not-a-number") == []
    assert got == []


async def test_a_client_that_reconnects_before_the_answer_gets_it_when_it_comes(
    tmp_path: Path,
) -> None:
    """The fast lane's stream (proxy/doors/httplane.py): reconnected to while the call
    still waits for a person, the new stream carries the answer once there is one (the
    SDK's store has nothing for it yet, and the SDK never sees the call's answer)."""
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ECHO)
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()
        session = await open_session(http, harness, harness.token("agent"))
        priming = await call_and_drop(session, 8)
        pending = await held_call(gateway)
        headers = resuming_headers(session, priming["id"])
        async with session.http.stream("GET", session.url, headers=headers) as response:
            assert response.status_code == 200  # reconnected, and the call still waits
            assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
            text = ""
            async for chunk in response.aiter_text():
                text += chunk
        messages = [json.loads(e["data"]) for e in sse_events(text) if e.get("data")]
        assert messages == [
            {
                "jsonrpc": "2.0",
                "id": 8,
                "result": {"content": [{"type": "text", "text": "ran echo"}]},
            }
        ]
        assert harness.recorded_names() == ["echo"]
