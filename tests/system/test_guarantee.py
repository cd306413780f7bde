"""Lockgate's promise, defect by defect (issue 11): a call the policy blocks never reaches
the server; every call that reaches a server is in the audit log first; no secret leaves
the keyring.

Each test here failed on the code before its fix. The gateway is real and runs in the
test's loop (tests/support/harness.py); the upstream is tests/servers/recorder.py, which
writes down every tools/call it receives, so "never reached the server" is read from what
the server itself recorded.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest

from proxy.config.secrets import SecretStore
from proxy.gateway.approvals import Remember
from proxy.gateway.core import Gateway
from proxy.gateway.events import ApprovalAnswered, CallFinished, CallStarted
from tests.support.harness import (
    Harness,
    HttpSession,
    LocalClient,
    answer_of,
    recorder_servers,
    running,
    text_of,
    write_json,
)
from tests.support.waiting import eventually

ASK_ALL = {"default": "ask", "tools": {"echo": {}}}


async def pending_for(gateway: Gateway, tool: str) -> Any:
    return await eventually(
        lambda: next((p for p in gateway.approvals.pending() if p.call.tool == tool), None),
        f"a call of {tool} to wait for a person",
    )


def audit_rows(gateway: Gateway, tool: str) -> list[Any]:
    return gateway.audit.query(limit=100, tool=tool)


# -- 1. a pending approval does not survive a block --------------------------------------


@pytest.mark.parametrize("how", ["click", "hand edit"])
async def test_a_call_waiting_for_a_person_is_refused_when_its_tool_is_blocked(tmp_path, how):
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ALL)
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        gateway.approvals.attach()
        await client.handshake(gateway)
        call = client.start_call("write_file", {"path": "/etc/passwd"})
        pending = await pending_for(gateway, "write_file")
        policy = {"default": "ask", "tools": {"write_file": {"action": "deny", "reason": "no"}}}
        harness.write_policy(policy)
        if how == "click":
            await gateway.reload_policy()  # what the app does after it writes a rule
        # a hand edit: the watcher's reload withdraws it
        await eventually(lambda: not gateway.approvals.pending(), "the prompt to be withdrawn")
        # The person answers "allow" a moment too late: nothing is pending any more.
        assert not gateway.approvals.answer(pending.id, True, digest=pending.digest)
        answer = await client.answer(call)
    assert answer["result"]["isError"] is True
    assert 'rec/write_file: no [rule "write_file"]' in text_of(answer)
    assert harness.recorded_names() == []
    withdrawn = [e for e in harness.events if isinstance(e, ApprovalAnswered)]
    assert [(e.answer, e.reason) for e in withdrawn] == [("withdrawn", "the policy changed: no")]


async def test_an_approval_given_as_the_policy_changes_is_decided_under_the_new_one(tmp_path):
    """The person's "allow" lands first; the rule changes before the waiting call resumes.
    The call is decided again when it is released: the new rule's deny stands."""
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ALL)
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        gateway.approvals.attach()
        await client.handshake(gateway)
        call = client.start_call("write_file", {"path": "x"})
        pending = await pending_for(gateway, "write_file")
        harness.write_policy({"default": "ask", "tools": {"write_file": {"action": "deny"}}})
        from proxy.policy.store import read_policy

        result = read_policy(harness.paths.policy_file)
        # Both in one turn of the loop: answered, then swapped, before the call resumes.
        assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
        gateway.policy_store.apply(result)
        answer = await client.answer(call)
    assert answer["result"]["isError"] is True
    assert "write_file is denied by the policy" in text_of(answer)
    assert harness.recorded_names() == []
    (row,) = audit_rows(gateway, "write_file")
    assert (row.decision.value, row.outcome.value) == ("denied", "blocked")


async def test_an_approval_for_the_session_does_not_outlast_a_block(tmp_path):
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ALL)
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        gateway.approvals.attach()
        await client.handshake(gateway)
        first = client.start_call("write_file", {"n": 1})
        pending = await pending_for(gateway, "write_file")
        gateway.approvals.answer(pending.id, True, digest=pending.digest, remember=Remember.SESSION)
        assert "ran write_file" in text_of(await client.answer(first))
        harness.write_policy({"default": "ask", "tools": {"write_file": {"action": "deny"}}})
        await gateway.reload_policy()
        blocked = await client.call("write_file", {"n": 2})
    assert blocked["result"]["isError"] is True
    assert [e["arguments"] for e in harness.recorded()] == [{"n": 1}]


async def test_a_call_waiting_for_a_person_is_refused_when_its_server_is_removed(tmp_path):
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ALL)
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        gateway.approvals.attach()
        await client.handshake(gateway)
        call = client.start_call("write_file", {})
        pending = await pending_for(gateway, "write_file")
        write_json(harness.paths.servers_file, {"mcpServers": {}})
        gateway.reload_servers()
        assert not gateway.approvals.answer(pending.id, True, digest=pending.digest)
        answer = await client.answer(call)
        later = await client.call("echo")  # the session's server is gone: nothing goes
    for blocked in (answer, later):
        assert "is no longer in servers.json" in text_of(blocked)
    assert harness.recorded_names() == []
    withdrawn = [e.reason for e in harness.events if isinstance(e, ApprovalAnswered)]
    assert withdrawn == ["server 'rec' was removed from servers.json"]


async def test_a_policy_that_now_allows_a_waiting_call_releases_it(tmp_path):
    harness = Harness(tmp_path)
    harness.write_policy(ASK_ALL)
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        gateway.approvals.attach()
        await client.handshake(gateway)
        call = client.start_call("fetch", {"url": "x"})
        await pending_for(gateway, "fetch")
        harness.write_policy({"default": "ask", "tools": {"fetch": {}}})
        await gateway.reload_policy()
        answer = await client.answer(call)
    assert text_of(answer) == "ran fetch"
    (row,) = audit_rows(gateway, "fetch")
    assert (row.decision.value, row.outcome.value) == ("allowed", "ok")


# -- 2. "in force" means in force ----------------------------------------------------------


async def test_reload_policy_puts_a_written_policy_in_force_for_the_very_next_call(tmp_path):
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        assert text_of(await client.call("delete_file")) == "ran delete_file"
        harness.write_policy({"default": "allow", "tools": {"delete_file": {"action": "deny"}}})
        store = await gateway.reload_policy()
        assert store.error is None
        blocked = await client.call("delete_file")  # no wait: the next call
    assert blocked["result"]["isError"] is True
    assert harness.recorded_names() == ["delete_file"]


async def test_a_slow_read_of_the_old_file_never_undoes_a_newer_one(tmp_path):
    """The watcher's read of the old content, started before the app's reload, finishes
    after it: the newer content stays in force."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway:
        watcher = gateway.watcher
        stale = watcher._start_read()  # a read of the old file begins...
        from proxy.policy.store import read_policy

        old = read_policy(harness.paths.policy_file)
        harness.write_policy({"default": "deny"})
        await gateway.reload_policy()  # ...the app's reload of the new one is applied...
        watcher._finish_read(stale, old)  # ...then the old read finishes
        assert gateway.policy_store.policy.default.value == "deny"


# -- 4. no call runs without its audit record ---------------------------------------------


NOT_TEXT = [  # a lone surrogate is not text: UTF-8, SQLite and Qt cannot hold it
    b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo\\ud800"}}',
    b'{"jsonrpc":"2.0","id":7,"method":"tools/call",'
    b'"params":{"name":"echo","arguments":{"k":"v\\uDFFF"}}}',
]


@pytest.mark.parametrize("line", NOT_TEXT, ids=["in the name", "in an argument"])
async def test_a_call_that_is_not_text_is_refused_alike_at_both_doors(tmp_path, line):
    """Before: the fast lane forwarded it, then failed to record it, and denied the next
    call. Now both doors refuse it before anything (the SDK's parser on HTTP; the fast
    lane leaves it to the same parser), and the next call is served."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway:
        async with LocalClient.open(harness) as client:
            await client.handshake(gateway)
            client.send_line(line)
            async with asyncio.timeout(20):
                while not client.answers:
                    await client._arrived.wait()
                    client._arrived.clear()
            (local,) = client.answers.values()
            client.answers.clear()
            after_local = await client.call("echo", {"n": 1})
        async with httpx2.AsyncClient(timeout=30) as http:
            session = HttpSession(http, harness.http_url + "rec", harness.token("web"))
            await session.open()
            remote = answer_of(
                await http.post(session.url, content=line, headers=session.headers())
            )
            after_remote = await session.call("echo", {"n": 2})
            await session.close()
    assert local["error"]["code"] == remote["error"]["code"] == -32700
    assert text_of(after_local) == text_of(after_remote) == "ran echo"
    assert [e["arguments"] for e in harness.recorded()] == [{"n": 1}, {"n": 2}]


async def test_a_tool_name_with_control_characters_is_refused_and_logged(tmp_path):
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        refused = await client.request("tools/call", {"name": "echo\u0007\u202e"})
        after = await client.call("echo")
    assert refused["error"] == {
        "code": -32602,
        "message": "tools/call tool name holds control characters",
    }
    assert text_of(after) == "ran echo"
    assert harness.recorded_names() == ["echo"]
    rows = gateway.audit.query(limit=10)
    assert [(r.tool, r.basis, r.outcome.value) for r in rows] == [
        ("echo", "default", "ok"),
        ("echo\u0007\u202e", "name", "protocol_error"),
    ]


def test_text_a_log_cannot_hold_is_stored_escaped(tmp_path):
    """Whatever a record holds (a reason quoting arguments, an error text, a name that came
    another way), it is written: lone surrogates are stored escaped."""
    from proxy.audit.log import AuditLog
    from proxy.audit.records import CallDecision, CallRecord, Outcome

    with AuditLog(tmp_path / "audit.db") as log:
        record = CallRecord(
            time=1.0,
            client="c\ud800",
            server="s",
            tool="t\udfff",
            arguments={"k\ud801": "v\udc00"},
            decision=CallDecision.DENIED,
            rule="r\ud802",
            reason="why \ud803",
            outcome=Outcome.BLOCKED,
            error="err \ud804",
        )
        log.write_sync(record)
        (back,) = log.query()
    assert (back.client, back.tool, back.rule, back.reason, back.error) == (
        "c\\ud800",
        "t\\udfff",
        "r\\ud802",
        "why \\ud803",
        "err \\ud804",
    )
    assert back.arguments == {"k\\ud801": "v\\udc00"}


async def test_a_call_whose_record_cannot_be_written_is_never_sent(tmp_path):
    """audit.db locked by another process: the allowed call is refused before it is sent,
    and the gateway's loop stays responsive while it waits for the lock."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        assert text_of(await client.call("echo", {"n": 1})) == "ran echo"
        locker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
                "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()",
                str(harness.paths.audit_db),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None
            assert locker.stdout.readline().strip() == "locked"
            call = client.start_call("write_file", {"n": 2})
            # While the call waits for the lock, the loop still answers: a ping on
            # another session is answered at once (the lock wait is off the loop).
            async with asyncio.timeout(2.5):  # the lock is waited for up to 5 s
                await eventually(
                    lambda: any(
                        isinstance(e, CallStarted) and e.tool == "write_file"
                        for e in harness.events
                    ),
                    "the call to start",
                )
                async with LocalClient.open(harness) as other:
                    assert "result" in await other.request("ping")
            answer = await client.answer(call, timeout=30)
            assert "database is locked" in (
                gateway.tool_calls.audit_failure or ""
            )  # `lockgate status`
        finally:
            assert locker.stdin is not None
            locker.stdin.close()
            locker.wait(timeout=10)
            assert locker.stdout is not None
            locker.stdout.close()
        again = await client.call("echo", {"n": 3})
        assert gateway.tool_calls.audit_failure is None
    assert answer["error"]["code"] == -32603
    assert "did not send it" in answer["error"]["message"]
    # the app hears how it ended, so its row does not wait for ever
    started = next(
        e for e in harness.events if isinstance(e, CallStarted) and e.tool == "write_file"
    )
    (finished,) = [
        e for e in harness.events if isinstance(e, CallFinished) and e.call_id == started.call_id
    ]
    assert finished.outcome == "blocked"
    assert [e["arguments"] for e in harness.recorded()] == [{"n": 1}, {"n": 3}]
    assert text_of(again) == "ran echo"


async def test_every_call_that_ran_was_recorded_before_it_was_sent(tmp_path):
    """Write-ahead: while the server runs a call (here: it never answers, it exits), the
    call is in the log as pending; a restart marks it interrupted."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        answer = await client.call("exit")
        assert answer["error"]["code"] == -32000
        (row,) = audit_rows(gateway, "exit")
        assert row.outcome.value == "upstream_down"
    # A gateway killed with a call in flight leaves it pending; the next one says so.
    conn = sqlite3.connect(harness.paths.audit_db)
    with conn:
        conn.execute("UPDATE calls SET outcome = 'pending' WHERE tool = 'exit'")
    conn.close()
    async with running(harness) as gateway:
        (row,) = audit_rows(gateway, "exit")
        assert row.outcome.value == "interrupted"
        assert row.error  # what the first run recorded stays


# -- 5. no secret leaves the keyring ------------------------------------------------------


async def test_an_upstream_error_of_any_code_is_scrubbed_of_secrets(tmp_path, os_keyring):
    name = f"leak-{uuid.uuid4().hex}"
    secret = f"sk-{uuid.uuid4().hex}"
    store = SecretStore(os_keyring)
    store.set(name, secret)
    harness = Harness(tmp_path, secrets=store)
    record = harness.record
    servers = recorder_servers(record)
    servers["mcpServers"]["rec"]["env"] = {"SECRET": f"keyring:{name}"}
    write_json(harness.paths.servers_file, servers)
    harness.write_policy({"default": "allow"})
    try:
        async with running(harness) as gateway:
            async with LocalClient.open(harness) as client:
                await client.handshake(gateway)
                local = await client.call("leak")
            async with httpx2.AsyncClient(timeout=30) as http:
                session = HttpSession(http, harness.http_url + "rec", harness.token("web"))
                await session.open()
                remote = await session.call("leak")
                await session.close()
            logged = [r.error for r in audit_rows(gateway, "leak")]
    finally:
        store.delete(name)
    for answer in (local, remote):
        assert answer["error"]["code"] == -32603
        assert secret not in json.dumps(answer)
        assert "[secret]" in answer["error"]["message"]
        assert answer["error"]["data"] == {"token": "[secret]", "hint": ["Bearer [secret]"]}
    assert logged
    assert all(error is not None and secret not in error for error in logged)
    assert secret.encode() not in harness.paths.audit_db.read_bytes()


# -- 6. rate limits survive a restart -----------------------------------------------------

LIMITED = {
    "default": "allow",
    "tools": {"fetch": {"limits": [{"counter": "fetch", "window": "hour", "max": 2}]}},
}


async def test_rate_limits_survive_a_restart(tmp_path):
    harness = Harness(tmp_path)
    harness.write_policy(LIMITED)
    for _ in range(2):
        async with running(harness) as gateway, LocalClient.open(harness) as client:
            await client.handshake(gateway)
            await client.call("fetch")
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        third = await client.call("fetch")
    assert third["result"]["isError"] is True
    assert "rate limit reached: at most 2 calls per hour" in text_of(third)
    assert harness.recorded_names() == ["fetch", "fetch"]


async def test_a_call_the_server_refuses_gives_its_charge_back(tmp_path):
    harness = Harness(tmp_path)
    harness.write_policy(
        {
            "default": "allow",
            "tools": {"refuse": {"limits": [{"counter": "r", "window": "hour", "max": 1}]}},
        }
    )
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        for _ in range(3):  # each is refused by the server: none uses the budget
            assert (await client.call("refuse"))["error"]["code"] == -32602
        charges = gateway.audit.charges_since(0)
    assert harness.recorded_names() == ["refuse"] * 3
    assert charges == []


def test_rate_limits_survive_kill_9(live_gateway) -> None:
    """The charge is in the same transaction as the call's record: a kill -9 right after
    the calls loses neither."""
    import signal as signals

    live_gateway.write_policy(
        {
            "version": "1",
            "default": "allow",
            "tools": {"get-sum": {"limits": [{"counter": "sum", "window": "hour", "max": 2}]}},
        }
    )

    async def calls(n: int) -> list[bool]:
        async with live_gateway.client() as client:
            results = [await client.call_tool("get-sum", {"a": 1, "b": 2}) for _ in range(n)]
        return [r.is_error for r in results]

    assert asyncio.run(calls(2)) == [False, False]
    live_gateway.stop(signals.SIGKILL)
    live_gateway.start()
    assert asyncio.run(calls(1)) == [True]
    sums = [
        m
        for m in live_gateway.upstream_saw()
        if m.get("method") == "tools/call" and m["params"]["name"] == "get-sum"
    ]
    assert len(sums) == 2


# -- 3. an HTTP session is its client's alone ---------------------------------------------


@pytest.mark.parametrize(
    "header", ["mcp-session-id", "authorization", "host", "origin", "mcp-protocol-version"]
)
async def test_a_security_header_given_twice_is_refused(tmp_path, header):
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness), httpx2.AsyncClient(timeout=30) as http:
        url = harness.http_url + "rec"
        victim = HttpSession(http, url, harness.token("victim"))
        attacker = HttpSession(http, url, harness.token("attacker"))
        await victim.open()
        await attacker.open()
        own = dict(attacker.headers())
        own.setdefault("origin", "http://127.0.0.1")
        host = urlsplit(url).netloc
        choices: dict[str, list[Any]] = {
            "mcp-session-id": [victim.session_id, attacker.session_id],
            "authorization": [own["Authorization"], victim.headers()["Authorization"]],
            "host": [host, host],
            "origin": ["http://127.0.0.1", "http://127.0.0.1"],
            "mcp-protocol-version": ["2025-06-18", "2025-06-18"],
        }
        twice = choices[header]
        headers = [(k, v) for k, v in own.items() if k.lower() != header]
        headers += [(header, value) for value in twice]
        if header == "host":  # httpx will not send it: raw HTTP, as an attacker would
            status = await raw_status(url, headers, b'{"jsonrpc":"2.0","id":9,"method":"ping"}')
            assert status == 400
        else:
            response = await attacker.post({"id": 9, "method": "tools/list"}, headers=headers)
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert message == f"the {header} header may be given only once"
        assert "result" in await victim.request("tools/list")  # the victim's session is whole
        await victim.close()
        await attacker.close()


async def raw_status(url: str, headers: list[tuple[str, str]], body: bytes) -> int:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [f"POST {parts.path} HTTP/1.1", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_nothing_of_another_clients_session_can_be_used(tmp_path):
    """Requests, responses (the answers to its server's requests), notifications, its event
    stream and its DELETE: each is answered as an unknown session."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness), httpx2.AsyncClient(timeout=30) as http:
        url = harness.http_url + "rec"
        victim = HttpSession(http, url, harness.token("victim"))
        attacker = HttpSession(http, url, harness.token("attacker"))
        sid = await victim.open()
        forged = attacker.headers(sid)
        attempts = {
            "request": await attacker.post({"id": 1, "method": "tools/list"}, headers=forged),
            "response": await attacker.post({"id": 0, "result": {}}, headers=forged),
            "error response": await attacker.post(
                {"id": 0, "error": {"code": -1, "message": "x"}}, headers=forged
            ),
            "notification": await attacker.post(
                {"method": "notifications/roots/list_changed"}, headers=forged
            ),
            "event stream": await http.get(url, headers=forged),
            "delete": await http.delete(url, headers=forged),
        }
        assert {what: r.status_code for what, r in attempts.items()} == dict.fromkeys(attempts, 404)
        assert "result" in await victim.request("tools/list")
        await victim.close()


async def test_a_client_that_never_closes_its_sessions_is_not_locked_out(tmp_path):
    """The MCP conformance suite opens ~31 sessions a run and closes none: at its cap a
    client's least recently used idle session is ended, not the new one refused."""
    from proxy.gateway.core import MAX_SESSIONS_PER_CLIENT

    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=60) as http:
        url = harness.http_url + "rec"
        token = harness.token("conformance")
        sessions = [HttpSession(http, url, token) for _ in range(MAX_SESSIONS_PER_CLIENT + 2)]
        for session in sessions:
            await session.open()
            assert "result" in await session.request("ping")
        assert len([s for s in gateway.sessions.values() if s.client == "conformance"]) == (
            MAX_SESSIONS_PER_CLIENT
        )
        # The two least recently used are gone (told as an unknown session, so a client
        # opens a new one); every other one works.
        for gone in sessions[:2]:
            response = await gone.post({"id": 99, "method": "tools/list"})
            assert response.status_code == 404
        for kept in sessions[2:]:
            assert "result" in await kept.request("tools/list")
        for session in sessions[2:]:
            await session.close()


# -- found on the way: a restart never loosens the rules ----------------------------------


async def test_a_gateway_started_with_a_broken_policy_keeps_the_last_good_one(tmp_path):
    """Before, a gateway that started while policy.json was broken fell back to the
    built-in policy, which asks about everything: a tool the person had denied could be
    approved by a click again. Now the last policy in force is kept, across restarts."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow", "tools": {"delete_file": {"action": "deny"}}})
    async with running(harness):
        pass
    harness.paths.policy_file.write_text('{"version": "1", "default": "allow", "tools": {')
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        assert gateway.policy_store.error is not None  # reported all the same
        blocked = await client.call("delete_file")
        allowed = await client.call("echo")
    assert blocked["result"]["isError"] is True
    assert text_of(allowed) == "ran echo"
    assert harness.recorded_names() == ["echo"]


@pytest.mark.parametrize(
    ("line", "code", "answer_id"),
    [
        (b"{not json", -32700, None),
        (b'{"jsonrpc":"2.0","id":3}', -32600, 3),
        (b'{"jsonrpc":"1.0","id":"x","method":"ping"}', -32600, "x"),
        (b'{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"a":"\\udc00"}}', -32700, 4),
        (
            b'{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"echo"}}',
            -32600,
            None,
        ),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', -32600, None),
    ],
)
async def test_a_malformed_message_on_the_local_door_is_answered(tmp_path, line, code, answer_id):
    """Before, the SDK's loop dropped what it could not read, and the client waited for
    ever; a malformed message is answered with a protocol error, and the session goes on."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        client.send_line(line)
        answer = await client.answer(answer_id)
        assert answer["error"]["code"] == code
        assert text_of(await client.call("echo")) == "ran echo"


async def test_lockgate_policy_reload_says_when_a_policy_is_in_force(tmp_path):
    from tests.support.live import lockgate_command

    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    env = {
        "PATH": "/usr/bin:/bin",
        "LOCKGATE_CONFIG_DIR": str(harness.paths.config_dir),
        "LOCKGATE_DATA_DIR": str(harness.paths.data_dir),
    }

    async def reload() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            lockgate_command(), "policy", "reload", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode or 0, out.decode()

    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        harness.write_policy({"default": "allow", "tools": {"echo": {"action": "deny"}}})
        code, out = await reload()
        assert (code, out) == (
            0,
            f"in force: {harness.paths.policy_file} (1 rules, default allow)\n",
        )
        assert (await client.call("echo"))["result"]["isError"] is True  # the next call
        harness.paths.policy_file.write_text("{")
        code, out = await reload()
        assert code == 1
        assert out.startswith("policy.json not applied, the last good policy stays in force:")
        assert (await client.call("echo"))["result"]["isError"] is True


@pytest.mark.parametrize("request_id", [1.5, True, None, [1]])
async def test_a_request_whose_id_is_no_id_is_refused_over_http(tmp_path, request_id):
    """The SDK takes it for a notification (202, and nothing ever comes): refused."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness), httpx2.AsyncClient(timeout=30) as http:
        session = HttpSession(http, harness.http_url + "rec", harness.token("web"))
        await session.open()
        message = {"id": request_id, "method": "tools/call", "params": {"name": "echo"}}
        response = await session.post(message)
        await session.close()
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600
    assert harness.recorded_names() == []
