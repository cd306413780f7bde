"""End to end: the SDK's Client -> `lockgate serve` (HTTP) -> real MCP servers.

Transparency is checked against a direct connection to the same server; enforcement is
checked on the client's side (what the agent sees) and on the upstream's side (what the
server received, recorded by tests/servers/tee.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from proxy.config.servers_edit import set_server_disabled
from proxy.gateway.events import (
    ApprovalAnswered,
    CallStarted,
    ServersReloaded,
    UpstreamDown,
    UpstreamUp,
)
from tests.support.harness import (
    INITIALIZE_PARAMS,
    RECORDER,
    Harness,
    HttpSession,
    LocalClient,
    recorder_servers,
    running,
    write_json,
)
from tests.support.harness import text_of as text_of_answer
from tests.support.live import EVERYTHING_JS, SERVERS
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


def tool_calls_received(gateway, tool: str) -> list[dict]:
    return [
        m
        for m in gateway.upstream_saw()
        if m.get("method") == "tools/call" and m["params"]["name"] == tool
    ]


def text_of(result) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_tools_resources_prompts_pass_through_unchanged(live_gateway):
    direct = StdioServerParameters(command="node", args=[str(EVERYTHING_JS), "stdio"])
    async with Client(direct, mode="legacy") as plain, live_gateway.client() as proxied:
        direct_tools = (await plain.list_tools()).tools
        proxied_tools = (await proxied.list_tools()).tools
        assert [t.model_dump() for t in proxied_tools] == [t.model_dump() for t in direct_tools]
        assert proxied.server_info is not None
        assert plain.server_info is not None
        assert proxied.server_info.name == plain.server_info.name

        echo = await proxied.call_tool("echo", {"message": "hi"})
        assert (text_of(echo), echo.is_error) == ("Echo: hi", False)

        resources = (await proxied.list_resources()).resources
        assert [r.uri for r in resources] == [
            r.uri for r in (await plain.list_resources()).resources
        ]
        read = await proxied.read_resource(resources[0].uri)
        assert read.contents
        templates = await proxied.list_resource_templates()
        assert templates.resource_templates

        prompts = [p.name for p in (await proxied.list_prompts()).prompts]
        assert prompts == [p.name for p in (await plain.list_prompts()).prompts]
        got = await proxied.get_prompt("simple-prompt")
        assert got.messages

        completion = await proxied.complete(
            types.PromptReference(type="ref/prompt", name="completable-prompt"),
            {"name": "department", "value": "E"},
        )
        assert completion.completion.values
        with pytest.warns(MCPDeprecationWarning):  # deprecated in 2026-07-28, still forwarded
            await proxied.set_logging_level("debug")
        with pytest.warns(MCPDeprecationWarning):
            await proxied.send_ping()


async def test_progress_reaches_the_client_with_its_own_token(live_gateway):
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, total))

    async with live_gateway.client() as client:
        result = await client.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.4, "steps": 4},
            progress_callback=on_progress,
        )
    assert not result.is_error
    assert seen == [(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (4.0, 4.0)]
    call = tool_calls_received(live_gateway, "trigger-long-running-operation")[-1]
    upstream_token = call["params"]["_meta"]["progressToken"]
    assert upstream_token == call["id"]  # the upstream dispatcher's own token, not the client's


async def test_server_to_client_requests_are_routed_back(live_gateway):
    asked = []

    async def sampling(ctx, params):
        asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by client"),
            model="test-model",
        )

    async def elicitation(ctx, params):
        asked.append("elicitation")
        return types.ElicitResult(action="decline")

    async def roots(ctx):
        asked.append("roots")
        return types.ListRootsResult(
            roots=[types.Root.model_validate({"uri": "file:///tmp/work", "name": "work"})]
        )

    async with live_gateway.client(
        sampling_callback=sampling, elicitation_callback=elicitation, list_roots_callback=roots
    ) as client:
        sampled = await client.call_tool(
            "trigger-sampling-request", {"prompt": "hello", "maxTokens": 10}
        )
        assert "sampled by client" in text_of(sampled)
        await client.call_tool("trigger-elicitation-request", {})
        listed = await client.call_tool("get-roots-list", {})
        assert "file:///tmp/work" in text_of(listed)
    assert {"sampling", "elicitation", "roots"} <= set(asked)


async def test_a_cancelled_call_is_cancelled_upstream_with_the_upstreams_id(live_gateway):
    async with live_gateway.client() as client:
        with anyio.move_on_after(0.5):
            await client.call_tool("trigger-long-running-operation", {"duration": 5, "steps": 5})
        # the session goes on working
        assert text_of(await client.call_tool("echo", {"message": "after"})) == "Echo: after"
    call = tool_calls_received(live_gateway, "trigger-long-running-operation")[-1]
    cancels = [
        m for m in live_gateway.upstream_saw() if m.get("method") == "notifications/cancelled"
    ]
    assert any(c["params"]["requestId"] == call["id"] for c in cancels)


async def test_other_servers_and_a_remote_http_upstream(live_gateway):
    async with live_gateway.client("time") as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        assert "get_current_time" in tools
        result = await client.call_tool("get_current_time", {"timezone": "UTC"})
        assert json.loads(text_of(result))["timezone"] == "UTC"
    async with live_gateway.client("remote") as client:
        assert text_of(await client.call_tool("echo", {"message": "far"})) == "Echo: far"


POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "everything/get-env": {"action": "deny", "hide": True},
        "get-tiny-image": {"action": "deny", "reason": "No images today."},
        "echo": {"arguments": {"properties": {"message": {"maxLength": 10}}}},
        "get-sum": {"rate_limit": {"max": 2, "window": 3600}},
        "get-structured-content": {"action": "ask", "approval": {"timeout": 30}},
    },
}


async def test_blocked_calls_are_answered_by_lockgate_and_never_reach_the_server(live_gateway):
    live_gateway.write_policy(POLICY)
    async with live_gateway.client() as client:
        await wait_until_blocked(client, "get-tiny-image", {})

        denied = await client.call_tool("get-tiny-image", {})
        assert denied.is_error
        assert text_of(denied) == (
            "Lockgate's policy blocked this call to everything/get-tiny-image: No images today. "
            '[rule "get-tiny-image"].'
        )

        too_long = await client.call_tool("echo", {"message": "x" * 11})
        assert too_long.is_error
        assert "arguments rejected at $.message" in text_of(too_long)
        assert text_of(await client.call_tool("echo", {"message": "short"})) == "Echo: short"

        sums = [await client.call_tool("get-sum", {"a": 1, "b": 2}) for _ in range(3)]
        assert [s.is_error for s in sums] == [False, False, True]
        assert "at most 2 calls per hour for this client" in text_of(sums[2])
        assert "Retry in" in text_of(sums[2])

        asked = await client.call_tool("get-structured-content", {"location": "New York"})
        assert asked.is_error  # `lockgate serve` alone has nobody to ask
        assert "no one is there to ask" in text_of(asked)

        listed = [t.name for t in (await client.list_tools()).tools]
        assert "get-env" not in listed
        with pytest.raises(MCPError) as info:
            await client.call_tool("get-env", {})
        assert info.value.code == -32602
        assert info.value.message == "Unknown tool: get-env"

    assert tool_calls_received(live_gateway, "get-tiny-image") == []
    assert tool_calls_received(live_gateway, "get-env") == []
    assert tool_calls_received(live_gateway, "get-structured-content") == []
    assert [
        c["params"]["arguments"]["message"] for c in tool_calls_received(live_gateway, "echo")
    ] == ["short"]
    assert len(tool_calls_received(live_gateway, "get-sum")) == 2


async def wait_until_blocked(client, tool, arguments, timeout=5.0):
    """The policy was just written: wait (on the real reload) until it is in force."""
    deadline = time.monotonic() + timeout
    while True:
        result = await client.call_tool(tool, arguments)
        if result.is_error and "Lockgate's policy blocked" in text_of(result):
            return result
        assert time.monotonic() < deadline, "the new policy did not come into force"
        await anyio.sleep(0.05)


async def test_hiding_a_tool_tells_connected_clients_the_list_changed(live_gateway):
    changed = anyio.Event()

    async def on_message(message):
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    # mcp-server-time never sends list_changed itself: the notification can only be Lockgate's.
    async with live_gateway.client("time", message_handler=on_message) as client:
        assert "convert_time" in [t.name for t in (await client.list_tools()).tools]
        live_gateway.write_policy(
            {
                "version": "1",
                "default": "allow",
                "tools": {"time/convert_time": {"action": "deny", "hide": True}},
            }
        )
        with anyio.fail_after(5):
            await changed.wait()
        assert [t.name for t in (await client.list_tools()).tools] == ["get_current_time"]


async def test_every_call_is_in_the_audit_log_with_its_client(live_gateway):
    live_gateway.write_policy(POLICY)
    async with live_gateway.client(client="cursor") as client:
        await wait_until_blocked(client, "get-tiny-image", {})
        await client.call_tool("echo", {"message": "logged"})
    result = live_gateway.lockgate("log", "--json", "--client", "cursor")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    echo = [r for r in records if r["tool"] == "echo"]
    assert echo[-1]["decision"] == "allowed"
    assert echo[-1]["outcome"] == "ok"
    assert echo[-1]["arguments"] == {"message": "logged"}
    assert echo[-1]["server"] == "everything"
    images = [r for r in records if r["tool"] == "get-tiny-image"]
    assert images[-1]["decision"] == "denied"
    assert images[-1]["outcome"] == "blocked"
    assert images[-1]["rule"] == "get-tiny-image"
    assert {"time", "client", "server", "tool", "decision", "outcome"} <= set(images[-1])


async def test_a_server_that_only_speaks_sse_is_reached_by_the_fallback(tmp_path):
    # servers.json gives only the URL, as a client config would: Lockgate tries
    # streamable HTTP, the old server refuses it, and Lockgate falls back to SSE.
    from tests.support.live import LiveGateway, everything_over_http

    with everything_over_http("sse") as sse_url:
        gateway = LiveGateway(tmp_path / "config", tmp_path / "data", tmp_path / "tee.jsonl")
        gateway.config_dir.mkdir()
        gateway.data_dir.mkdir()
        (gateway.config_dir / "servers.json").write_text(
            json.dumps({"mcpServers": {"legacy": {"url": sse_url}}})
        )
        gateway.write_policy({"version": "1", "default": "allow"})
        gateway.start()
        try:
            async with gateway.client("legacy") as client:
                assert "echo" in [t.name for t in (await client.list_tools()).tools]
                result = await client.call_tool("echo", {"message": "over sse"})
                assert text_of(result) == "Echo: over sse"
        finally:
            gateway.stop()


async def test_initialize_says_the_tool_list_may_change_as_lockgate_may_change_it(
    tmp_path: Path,
) -> None:
    # misbehaving.py advertises {"tools": {}}: no listChanged of its own. Lockgate sends
    # notifications/tools/list_changed when the policy hides a tool, so it says so.
    harness = Harness(tmp_path)
    misbehaving = {"command": sys.executable, "args": [str(SERVERS / "misbehaving.py")]}
    write_json(harness.paths.servers_file, recorder_servers(harness.record, odd=misbehaving))
    harness.write_policy({"default": "allow"})
    async with running(harness), LocalClient.open(harness, server="odd") as client:
        answer = await client.request("initialize", INITIALIZE_PARAMS)
        assert answer["result"]["capabilities"]["tools"] == {"listChanged": True}


async def test_a_server_turned_off_is_refused_at_every_step_and_on_again_is_served(
    tmp_path: Path,
) -> None:
    """A server turned off (as the window does it) is refused as a removed one is, in
    words that say how to turn it on: the open session's calls, the call waiting for a
    person (withdrawn), and a session that opens after it; turned on, it is served."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "ask", "tools": {"echo": {}}})
    async with (
        running(harness) as gateway,
        LocalClient.open(harness) as client,
        LocalClient.open(harness) as late,  # the door let it in; its initialize comes later
    ):
        gateway.approvals.attach()
        await client.handshake(gateway)
        assert text_of_answer(await client.call("echo")) == "ran echo"
        waiting = client.start_call("write_file", {})
        await eventually(gateway.approvals.pending, "the call to wait for a person")

        await anyio.to_thread.run_sync(set_server_disabled, harness.paths.servers_file, "rec", True)
        assert gateway.reload_servers() == []
        withdrawn = await client.answer(waiting)
        refused = await client.call("echo")
        opened_late = await late.request("initialize", INITIALIZE_PARAMS)

        await anyio.to_thread.run_sync(
            set_server_disabled, harness.paths.servers_file, "rec", False
        )
        assert gateway.reload_servers() == ["rec"]
        again = await client.call("echo")
        rows = gateway.audit.query(limit=10, tool="echo")

    turned_off = "server 'rec' is turned off in Lockgate; a person can turn it on in Lockgate's "
    for answer in (withdrawn, refused):
        assert answer["result"]["isError"] is True
        assert turned_off in text_of_answer(answer)
    assert turned_off in opened_late["error"]["message"]
    assert text_of_answer(again) == "ran echo"
    assert harness.recorded_names() == ["echo", "echo"]  # nothing while it was off
    assert [(r.decision.value, r.basis) for r in rows] == [
        ("allowed", "rule"),
        ("denied", "server_disabled"),
        ("allowed", "rule"),
    ]
    answered = [e.reason for e in harness.events if isinstance(e, ApprovalAnswered)]
    assert answered == ["server 'rec' was turned off in Lockgate"]
    reloads = [e for e in harness.events if isinstance(e, ServersReloaded)]
    assert [(e.servers, e.removed, e.added, e.disabled) for e in reloads] == [
        ((), ("rec",), (), ("rec",)),
        (("rec",), (), ("rec",), ()),
    ]
    assert [e.summary() for e in reloads] == ["turned off rec", "turned on rec"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids_that_ran(harness: Harness, name: str) -> list[int]:
    """The process of each ``name`` call the recorder ran, in order."""
    return [entry["pid"] for entry in harness.recorded() if entry["name"] == name]


async def test_a_server_turned_off_or_removed_is_stopped_and_its_sessions_refused_everything(
    tmp_path: Path,
) -> None:
    """Its open sessions' processes exit (on both doors), and each request of those
    sessions is refused in the words every door uses, tools/list as tools/call; turned on
    again, the next request starts it again."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    servers = harness.paths.servers_file
    async with (
        running(harness) as gateway,
        LocalClient.open(harness) as client,
        httpx2.AsyncClient(timeout=30) as http,
    ):
        await client.handshake(gateway)
        web = HttpSession(http, harness.http_url + "rec", harness.token("web"))
        await web.open()
        assert text_of_answer(await client.call("echo")) == "ran echo"
        assert text_of_answer(await web.call("fetch")) == "ran fetch"
        assert "tools" in (await client.request("tools/list"))["result"]
        (local_pid,), (web_pid,) = pids_that_ran(harness, "echo"), pids_that_ran(harness, "fetch")
        assert local_pid != web_pid

        await anyio.to_thread.run_sync(set_server_disabled, servers, "rec", True)
        assert gateway.reload_servers() == []
        await eventually(lambda: not (alive(local_pid) or alive(web_pid)), "both to exit")
        turned_off = gateway.not_served("rec")
        assert turned_off is not None
        assert "server 'rec' is turned off in Lockgate" in turned_off
        for method in ("tools/list", "resources/list", "prompts/list", "ping"):
            refused = await client.request(method)
            assert refused["error"]["message"] == turned_off, method
        called = await client.call("echo")
        assert called["result"]["isError"] is True
        assert "server 'rec' is turned off in Lockgate" in text_of_answer(called)

        await anyio.to_thread.run_sync(set_server_disabled, servers, "rec", False)
        assert gateway.reload_servers() == ["rec"]
        assert "tools" in (await client.request("tools/list"))["result"]  # started again
        assert text_of_answer(await client.call("echo")) == "ran echo"
        restarted = pids_that_ran(harness, "echo")[-1]
        assert restarted != local_pid
        assert alive(restarted)

        write_json(servers, {"mcpServers": {}})  # and removed
        assert gateway.reload_servers() == []
        await eventually(lambda: not alive(restarted), "the removed server's process to exit")
        removed = await client.request("tools/list")
        assert removed["error"]["message"] == gateway.not_served("rec")
        assert "Lockgate has no server named 'rec'" in removed["error"]["message"]
        called = await client.call("echo")
        assert "server 'rec' is no longer in servers.json" in text_of_answer(called)
    assert pids_that_ran(harness, "echo") == [local_pid, restarted]  # nothing while off


async def test_a_server_whose_entry_changed_keeps_its_sessions_processes_until_a_restart(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    changed = recorder_servers(harness.record)
    changed["mcpServers"]["rec"]["env"] = {"LOCKGATE_TEST": "changed"}
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        await client.call("echo")
        (before,) = pids_that_ran(harness, "echo")
        write_json(harness.paths.servers_file, changed)
        assert gateway.reload_servers() == ["rec"]
        assert "tools" in (await client.request("tools/list"))["result"]
        assert text_of_answer(await client.call("echo")) == "ran echo"
        assert pids_that_ran(harness, "echo") == [before, before]  # the same process
        assert await gateway.restart_server("rec") == 1
        assert text_of_answer(await client.call("echo")) == "ran echo"
        after = pids_that_ran(harness, "echo")[-1]
    assert after != before
    reloaded = [e for e in harness.events if isinstance(e, ServersReloaded)]
    assert [(e.changed, e.removed) for e in reloaded] == [(("rec",), ())]


async def test_turned_off_and_on_at_once_the_session_runs_its_new_process_and_says_so(
    tmp_path: Path,
) -> None:
    """The old process is slow to exit (as servers that flush on exit are): the session
    starts a new one at its next request without waiting for it, and the old one's end,
    heard after the new one's start, does not report the session down."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    slow_to_exit = (  # the recorder, then a second and a half before the process ends
        "import runpy, sys, time; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__'); time.sleep(1.5)"
    )
    rec = {
        "command": sys.executable,
        "args": ["-c", slow_to_exit, str(RECORDER), str(harness.record)],
    }
    write_json(harness.paths.servers_file, {"mcpServers": {"rec": rec}})
    servers = harness.paths.servers_file
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        await client.call("echo")
        (old,) = pids_that_ran(harness, "echo")
        await anyio.to_thread.run_sync(set_server_disabled, servers, "rec", True)
        gateway.reload_servers()
        await anyio.to_thread.run_sync(set_server_disabled, servers, "rec", False)
        gateway.reload_servers()
        assert text_of_answer(await client.call("echo")) == "ran echo"
        new = pids_that_ran(harness, "echo")[-1]
        assert alive(old)  # still on its way out
        await eventually(lambda: not alive(old), "the old process to exit")
        assert text_of_answer(await client.call("echo")) == "ran echo"  # after its end is heard
        (session,) = gateway.sessions.values()
        told = [
            type(e).__name__
            for e in harness.events
            if isinstance(e, (UpstreamUp, UpstreamDown)) and e.session == session.id
        ]
        assert told == ["UpstreamUp", "UpstreamUp"]  # the old one's stop was not news
    assert pids_that_ran(harness, "echo") == [old, new, new]


async def test_a_call_allowed_just_before_its_server_is_turned_off_is_not_sent_after(
    tmp_path: Path,
) -> None:
    """It was decided while its server was in force; its record was still being written
    (another program held the audit log) when the server was turned off: it does not go."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        assert text_of_answer(await client.call("echo")) == "ran echo"  # its process runs
        holder = sqlite3.connect(harness.paths.audit_db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")  # the log's writer waits for this lock
            call = client.start_call("fetch")

            def decided() -> bool:
                return any(isinstance(e, CallStarted) and e.tool == "fetch" for e in harness.events)

            await eventually(decided, "the call to be decided, its record waiting")
            await anyio.to_thread.run_sync(
                set_server_disabled, harness.paths.servers_file, "rec", True
            )
            assert gateway.reload_servers() == []
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        answer = await client.answer(call)
        (row,) = gateway.audit.query(limit=5, tool="fetch")
    assert "server 'rec' is turned off in Lockgate" in answer["error"]["message"]
    assert harness.recorded_names() == ["echo"]  # fetch never reached it
    assert (row.decision.value, row.outcome.value) == ("allowed", "upstream_down")
