"""The 2026-07-28 era through both doors, with the MCP SDK's own client (v2).

Real gateway, real upstreams: the recorder (tests/servers/recorder.py), which speaks only
the handshake, and mcp-server-time (PyPI, built on the SDK: it speaks both eras). The
client is the SDK's ``Client`` over streamable HTTP (the HTTP door) and over stdio through
a real ``lockgate connect`` process (the local door), pinned to each era and in ``auto``.
Each is compared with what the same client negotiates with the same server directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proxy.gateway.modern import (
    check_request,
    discovered,
    envelope_of,
    for_handshake,
    handshake_answer,
    modern_headers,
    param_headers,
    shaped,
    speaks_2026,
    upstream_handshake,
    without_envelope,
)
from tests.support.harness import RECORDER, Harness, running, write_json
from tests.support.live import lockgate_command
from tests.support.waiting import eventually

TIME_SERVER = Path(sys.executable).with_name("mcp-server-time")
MODERN = "2026-07-28"
DOORS = ("http", "local")


def servers(harness: Harness) -> dict[str, Any]:
    return {
        "mcpServers": {
            "rec": {"command": sys.executable, "args": [str(RECORDER), str(harness.record)]},
            "time": {"command": str(TIME_SERVER)},
        }
    }


def direct(server: str, harness: Harness) -> StdioServerParameters:
    spec = servers(harness)["mcpServers"][server]
    return StdioServerParameters(command=spec["command"], args=spec.get("args", []))


@contextlib.asynccontextmanager
async def through(
    door: str,
    harness: Harness,
    server: str,
    mode: str,
    token: str | None = None,
    **options: Any,
) -> AsyncIterator[Client]:
    """The SDK's client on ``server`` through Lockgate's ``door``, negotiating ``mode``
    (over HTTP with ``token``, else a new one of its own)."""
    if door == "http":
        token = token or harness.token("agent")
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            Client(
                streamable_http_client(harness.http_url + server, http_client=http),
                mode=mode,
                **options,
            ) as client,
        ):
            yield client
        return
    params = StdioServerParameters(
        command=lockgate_command(),
        args=[
            "--config-dir",
            str(harness.paths.config_dir),
            "--data-dir",
            str(harness.paths.data_dir),
            "connect",
            server,
            "--client",
            "agent",
        ],
    )
    async with Client(stdio_client(params), mode=mode, **options) as client:
        yield client


def text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.mark.parametrize("door", DOORS)
async def test_a_2026_client_reaches_a_handshake_server_and_is_decided_by_the_policy(
    tmp_path: Path, door: str
) -> None:
    harness = Harness(tmp_path)
    write_json(harness.paths.servers_file, servers(harness))
    harness.write_policy(
        {
            "default": "allow",
            "tools": {
                "delete_file": {"action": "deny", "reason": "nothing is deleted here"},
                "hidden": {"action": "deny", "hide": True},
            },
        }
    )
    async with running(harness) as gateway, through(door, harness, "rec", MODERN) as client:
        assert client.protocol_version == MODERN
        listed = {tool.name for tool in (await client.list_tools()).tools}
        assert "echo" in listed
        assert "hidden" not in listed
        ran = await client.call_tool("echo", {"text": "hi"})
        assert text(ran) == "ran echo"
        blocked = await client.call_tool("delete_file", {"path": "/"})
        assert blocked.is_error
        assert "nothing is deleted here" in text(blocked)
        with pytest.raises(MCPError):  # hidden: as unknown as it is to the handshake
            await client.call_tool("hidden", {})
        rows = gateway.audit.query(limit=10)
    # the blocked and the hidden call never reached the server; every call is in the log
    assert harness.recorded_names() == ["echo"]
    assert [(r.tool, r.decision.value, r.client) for r in reversed(rows)] == [
        ("echo", "allowed", "agent"),
        ("delete_file", "denied", "agent"),
        ("hidden", "denied", "agent"),
    ]
    # what each request said of itself, beside the identity the policy went by
    assert {r.protocol for r in rows} == {MODERN}
    assert all(r.client_info and r.client_info.startswith("mcp") for r in rows)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("server", ["rec", "time"])
@pytest.mark.parametrize("mode", ["auto", "legacy", MODERN])
async def test_the_sdk_client_negotiates_through_lockgate_what_it_negotiates_directly(
    tmp_path: Path, door: str, server: str, mode: str
) -> None:
    harness = Harness(tmp_path)
    write_json(harness.paths.servers_file, servers(harness))
    harness.write_policy({"default": "allow"})
    # pinned to 2026 the client cannot use the recorder directly (it knows only the
    # handshake); through Lockgate it can, translated: compared with the handshake's
    translated = (server, mode) == ("rec", MODERN)
    async with Client(
        stdio_client(direct(server, harness)), mode="legacy" if translated else mode
    ) as client:
        expected = MODERN if translated else client.protocol_version
        direct_tools = sorted(t.name for t in (await client.list_tools()).tools)
    async with running(harness) as gateway, through(door, harness, server, mode) as client:
        assert client.protocol_version == expected
        assert sorted(t.name for t in (await client.list_tools()).tools) == direct_tools
        if server == "time":
            result = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert not result.is_error
            assert "UTC" in text(result)
            # the log says which version the call came in, on every route (the local
            # door's fast lane too)
            (row,) = gateway.audit.query(limit=5)
            assert row.protocol == expected


def envelope(**extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        **extra,
    }


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("ping", {"_meta": envelope()}, -32601),  # the handshake era's, not this one's
        ("logging/setLevel", {"level": "info", "_meta": envelope()}, -32601),
        ("tools/call", {"_meta": envelope()}, -32602),  # no name
    ],
)
def test_a_request_the_era_does_not_have_is_refused(
    method: str, params: dict[str, Any], code: int
) -> None:
    with pytest.raises(MCPError) as refused:
        check_request(method, MODERN, params)
    assert refused.value.error.code == code
    check_request("tools/list", MODERN, {"_meta": envelope()})
    check_request("vendor/own", MODERN, None)  # a server's own method: passed on


def test_the_envelope_goes_and_the_rest_of_meta_stays() -> None:
    params = {"name": "echo", "_meta": envelope(progressToken=3)}
    assert without_envelope(params) == {"name": "echo", "_meta": {"progressToken": 3}}
    assert without_envelope({"_meta": envelope()}) == {}
    assert without_envelope(None) is None
    assert envelope_of(params) == envelope()


def test_a_result_is_written_as_the_era_writes_it() -> None:
    listed = shaped("tools/list", {"tools": []}, {"name": "rec", "version": "1"})
    assert listed == {
        "tools": [],
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "rec", "version": "1"}},
    }
    called = shaped("tools/call", {"content": [], "resultType": "input_required"}, None)
    assert called == {"content": [], "resultType": "input_required"}  # not cacheable


def test_discover_offers_what_both_speak_and_nothing_to_cache() -> None:
    answer = {
        "supportedVersions": ["2026-07-28", "2099-01-01"],
        "capabilities": {"tools": {"listChanged": True}, "logging": {}},
        "ttlMs": 60_000,
        "cacheScope": "public",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "time"}},
    }
    assert discovered(answer) == {
        "supportedVersions": ["2026-07-28"],
        "capabilities": {"tools": {"listChanged": True}, "logging": {}},
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "time"}},
    }
    assert speaks_2026(answer)
    assert not speaks_2026({"supportedVersions": ["2025-11-25"]})


def test_the_upstream_handshake_and_headers_of_a_2026_request() -> None:
    info = {"name": "cursor", "version": "3"}
    assert upstream_handshake(envelope(**{"io.modelcontextprotocol/clientInfo": info}), "c") == {
        "protocolVersion": "2025-11-25",
        "capabilities": {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}},
        "clientInfo": info,
    }
    assert upstream_handshake(None, "agent")["clientInfo"] == {
        "name": "agent",
        "version": "unknown",
    }
    headers = modern_headers("tools/call", {"name": "wëird", "_meta": envelope()})
    assert headers["mcp-method"] == "tools/call"
    assert headers["mcp-protocol-version"] == MODERN
    assert headers["mcp-name"].startswith("=?base64?")  # not plain ASCII: encoded
    assert "mcp-name" not in modern_headers("tools/list", {"_meta": envelope()})


async def test_a_handshake_servers_questions_reach_a_2026_client_as_input_required_rounds(
    live_gateway: Any,
) -> None:
    """server-everything (TypeScript, handshake era only) asks the client mid-call for a
    sample, an elicitation and its roots; a 2026 client has no channel for requests, so
    Lockgate gives each question to it as an input-required result and the client's
    retry carries the answer back to the very call that asked (decided and logged once).
    The SDK client's own input-required driver answers from its callbacks."""
    asked: list[str] = []

    async def sampling(_ctx: Any, _params: Any) -> types.CreateMessageResult:
        asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by client"),
            model="test-model",
        )

    async def elicitation(_ctx: Any, _params: Any) -> types.ElicitResult:
        asked.append("elicitation")
        return types.ElicitResult(action="decline")

    async def roots(_ctx: Any) -> types.ListRootsResult:
        asked.append("roots")
        return types.ListRootsResult(
            roots=[types.Root.model_validate({"uri": "file:///tmp/work", "name": "work"})]
        )

    async with live_gateway.client(
        mode=MODERN,
        sampling_callback=sampling,
        elicitation_callback=elicitation,
        list_roots_callback=roots,
    ) as client:
        assert client.protocol_version == MODERN
        sampled = await client.call_tool(
            "trigger-sampling-request", {"prompt": "hello", "maxTokens": 10}
        )
        assert "sampled by client" in text(sampled)
        await client.call_tool("trigger-elicitation-request", {})
        listed = await client.call_tool("get-roots-list", {})
        assert "file:///tmp/work" in text(listed)
    assert asked == ["sampling", "elicitation", "roots"]
    sent = [
        m["params"]["name"] for m in live_gateway.upstream_saw() if m.get("method") == "tools/call"
    ]
    # each call reached the server once: the retries went on with it, not again
    assert sent == ["trigger-sampling-request", "trigger-elicitation-request", "get-roots-list"]


async def test_a_2026_client_that_cannot_answer_is_not_asked(live_gateway: Any) -> None:
    async with live_gateway.client(mode=MODERN) as client:  # no callbacks: nothing to offer
        sampled = await client.call_tool(
            "trigger-sampling-request", {"prompt": "hello", "maxTokens": 10}
        )
    assert sampled.is_error  # the server was told the client cannot sample
    assert "cannot answer sampling/createMessage" in text(sampled)


@pytest.mark.parametrize("door", DOORS)
async def test_a_2026_client_listening_hears_the_policy_hide_a_tool(
    tmp_path: Path, door: str
) -> None:
    """A listen stream is acknowledged with what Lockgate honours, and hears of a tool the
    policy now hides (what a handshake session hears on its own channel)."""
    from mcp.client.subscriptions import ToolsListChanged

    harness = Harness(tmp_path)
    write_json(harness.paths.servers_file, servers(harness))
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, through(door, harness, "rec", MODERN) as client:
        assert "echo" in {t.name for t in (await client.list_tools()).tools}
        async with client.listen(tools_list_changed=True, resource_subscriptions=["x:/"]) as sub:
            assert sub.honored.tools_list_changed is True
            assert not sub.honored.resource_subscriptions  # not carried: not honoured
            harness.write_policy(
                {"default": "allow", "tools": {"echo": {"action": "deny", "hide": True}}}
            )
            await gateway.reload_policy()
            with anyio.fail_after(20):
                event = await sub.__anext__()
            assert isinstance(event, ToolsListChanged)
        assert "echo" not in {t.name for t in (await client.list_tools()).tools}


MODERN_ONLY = Path(__file__).resolve().parents[2] / "servers" / "modern_only.py"


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_a_client_of_either_era_reaches_a_server_that_speaks_only_2026(
    tmp_path: Path, door: str, mode: str
) -> None:
    """tests/servers/modern_only.py refuses the handshake. A handshake client is answered
    from its server/discover and each request is sent in the era's envelope (its
    input-required rounds asked of the client as the handshake asks); a 2026 client's
    requests pass as they came. The policy decides both."""
    harness = Harness(tmp_path)
    record = tmp_path / "modern.jsonl"
    write_json(
        harness.paths.servers_file,
        {"mcpServers": {"m": {"command": sys.executable, "args": [str(MODERN_ONLY), str(record)]}}},
    )
    harness.write_policy(
        {
            "default": "allow",
            "tools": {"m/echo": {"when": [{"arguments": {"required": ["no"]}, "action": "deny"}]}},
        }
    )
    confirmations: list[str] = []

    async def elicitation(_ctx: Any, params: Any) -> types.ElicitResult:
        confirmations.append(params.message)
        return types.ElicitResult(action="accept", content={})

    async with (
        running(harness),
        through(door, harness, "m", mode, elicitation_callback=elicitation) as client,
    ):
        expected = MODERN if mode == MODERN else "2025-11-25"
        assert client.protocol_version == expected
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["confirm", "echo"]
        assert text(await client.call_tool("echo", {"text": "hi"})) == "echo: hi"
        refused = await client.call_tool("echo", {"text": "x", "no": 1})
        assert refused.is_error  # decided by the policy: never sent
        assert text(await client.call_tool("confirm", {})) == "confirmed: accept"
    assert confirmations == ["Go ahead?"]
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    assert [s["name"] for s in sent] == ["echo", "confirm", "confirm"]  # asked, answered
    assert all(s["meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN for s in sent)


def test_mcp_param_headers_are_made_for_a_local_client_and_checked_for_an_http_one() -> None:
    schema = {
        "type": "object",
        "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
    }
    assert param_headers(schema, {"region": "eu"}) == {"Mcp-Param-Region": "eu"}
    assert param_headers(None, {"region": "eu"}) == {}  # never listed: nothing to make
    assert param_headers(schema, {"region": "eu"}, {"mcp-param-region": "eu", "x": "y"}) == {
        "mcp-param-region": "eu"
    }
    with pytest.raises(MCPError) as mismatch:
        param_headers(schema, {"region": "eu"}, {"mcp-param-region": "us"})
    assert mismatch.value.error.code == -32020
    # a schema Lockgate has not seen: the client's headers go on, for the server to check
    assert param_headers(None, {}, {"Mcp-Param-Region": "us"}) == {"Mcp-Param-Region": "us"}


def test_a_2026_servers_result_as_a_handshake_client_takes_it() -> None:
    result = {
        "tools": [],
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "m"}, "keep": 1},
    }
    assert for_handshake(result) == {"tools": [], "_meta": {"keep": 1}}
    discovered_answer = {
        "capabilities": {"tools": {}},
        "instructions": "hi",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "m", "version": "2"}},
    }
    assert handshake_answer(discovered_answer, {"protocolVersion": "2025-06-18"}) == {
        "protocolVersion": "2025-06-18",
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "m", "version": "2"},
        "instructions": "hi",
    }
    assert handshake_answer({}, {"protocolVersion": "2099-01-01"})["protocolVersion"] == (
        "2025-11-25"
    )


@pytest.mark.parametrize("door", DOORS)
async def test_a_servers_refusal_to_start_reaches_a_2026_client_without_its_secrets(
    tmp_path: Path, door: str, os_keyring: Any
) -> None:
    """The pooled upstream opens at the client's first request; what the server says when
    it will not start is scrubbed of the secrets it was started with, as a session's is
    (it once went out word for word: the session was not known yet)."""
    import uuid

    from proxy.config.secrets import SecretStore

    name, secret = f"leak-{uuid.uuid4().hex}", f"sk-{uuid.uuid4().hex}"
    store = SecretStore(os_keyring)
    store.set(name, secret)
    harness = Harness(tmp_path, secrets=store)
    spec = servers(harness)["mcpServers"]["rec"]
    spec["env"] = {"SECRET": f"keyring:{name}", "LEAK_AT_START": "1"}
    write_json(harness.paths.servers_file, {"mcpServers": {"rec": spec}})
    harness.write_policy({"default": "allow"})
    try:
        async with running(harness), through(door, harness, "rec", MODERN) as client:
            with pytest.raises(MCPError) as refused:
                await client.list_tools()
    finally:
        store.delete(name)
    assert secret not in repr(refused.value.error)
    assert "cannot start with key [secret]" in refused.value.error.message


async def test_a_2026_client_that_gives_up_on_a_call_waiting_for_a_person_ends_it(
    tmp_path: Path,
) -> None:
    """Closing the request is a 2026 client's cancellation: a call waiting for a person is
    withdrawn and recorded cancelled, and nothing reaches the server even if the person
    then says yes (it once ran for a client that had gone)."""
    harness = Harness(tmp_path)
    write_json(harness.paths.servers_file, servers(harness))
    harness.write_policy({"default": "allow", "tools": {"echo": {"action": "ask"}}})
    async with running(harness) as gateway:
        gateway.approvals.attach()
        async with through("http", harness, "rec", MODERN) as client:
            call = asyncio.ensure_future(client.call_tool("echo", {}))
            pending = await eventually(
                lambda: next(iter(gateway.approvals.pending()), None), "the call to wait"
            )
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, MCPError):
                await call
        await eventually(lambda: not gateway.approvals.pending(), "the prompt to go")
        assert not gateway.approvals.answer(pending.id, True, digest=pending.digest)
        (row,) = await eventually(
            lambda: [r for r in gateway.audit.query(limit=5) if r.outcome.value != "pending"],
            "the call to be recorded",
        )
    assert row.outcome.value == "cancelled"
    assert harness.recorded_names() == []


async def test_a_revoked_clients_2026_calls_end_with_its_sessions(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    write_json(harness.paths.servers_file, servers(harness))
    harness.write_policy({"default": "allow", "tools": {"echo": {"action": "ask"}}})
    async with running(harness) as gateway:
        gateway.approvals.attach()
        async with through("http", harness, "rec", MODERN) as client:
            call = asyncio.ensure_future(client.call_tool("echo", {}))
            await eventually(gateway.approvals.pending, "the call to wait")
            assert await gateway.end_sessions_of("agent") == 1
            await eventually(lambda: not gateway.approvals.pending(), "the prompt to go")
            with contextlib.suppress(MCPError):
                await asyncio.wait_for(call, 30)
        assert gateway.sessions == {}
    assert harness.recorded_names() == []


async def test_a_probe_does_not_end_the_upstream_another_request_uses(tmp_path: Path) -> None:
    """A client in auto mode probes server/discover; the handshake server has none. The
    pooled upstream the same token's 2026 client is using stays (it once went with the
    probe, and its next call started the server again)."""
    harness = Harness(tmp_path)
    write_json(harness.paths.servers_file, servers(harness))
    harness.write_policy({"default": "allow"})
    token = harness.token("agent")  # both programs hold it
    async with running(harness), through("http", harness, "rec", MODERN, token) as pinned:
        await pinned.call_tool("echo", {})
        async with through("http", harness, "rec", "auto", token) as probing:
            assert probing.protocol_version != MODERN  # it fell back to the handshake
        await pinned.call_tool("echo", {})
    first, second = harness.recorded()
    assert first["pid"] == second["pid"]


async def test_a_servers_question_goes_only_to_the_call_that_can_answer_it(
    live_gateway: Any,
) -> None:
    """Two 2026 programs with one token share a pooled upstream; the handshake server's
    question (nothing on the wire says which call asks) goes to the one call whose client
    can answer it, never to the other program's."""
    asked: list[str] = []

    async def sampling(_ctx: Any, _params: Any) -> types.CreateMessageResult:
        asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the right client"),
            model="test-model",
        )

    token = live_gateway.token("shared")
    async with (
        live_gateway.client(token=token, mode=MODERN) as busy,
        live_gateway.client(token=token, mode=MODERN, sampling_callback=sampling) as asking,
    ):
        long = asyncio.ensure_future(
            busy.call_tool("trigger-long-running-operation", {"duration": 3, "steps": 3})
        )
        sampled = await asking.call_tool(
            "trigger-sampling-request", {"prompt": "hi", "maxTokens": 5}
        )
        assert "sampled by the right client" in text(sampled)
        assert not (await long).is_error
    assert asked == ["sampling"]
