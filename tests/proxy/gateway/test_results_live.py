"""What comes back, end to end: secrets in a real server's result redacted, withheld or
asked about as the policy says, and a rule's timeout cancelling a call that never ends.

The servers are real: server-everything (npm) with a planted environment variable, whose
``get-env`` answers with its whole environment; tests/servers/misbehaving.py, whose
``silent`` never answers, behind tests/servers/tee.py, which records what reached it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from keyring.backend import KeyringBackend

from proxy.config.secrets import SecretStore
from proxy.gateway.events import ApprovalPending, CallFinished
from tests.support.harness import Harness, LocalClient, running, text_of, write_json
from tests.support.live import EVERYTHING_JS, SERVERS
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio]

# a key of the shape GitHub gives, built here so that no literal in the repository is one
PLANTED = "ghp_" + "Lq7Vx2Nw9Rk4Tz8Pb3Hs6Jd1Mf5Gc0Ya2Uex"


def everything_with(harness: Harness, env: dict[str, str]) -> None:
    if not EVERYTHING_JS.exists():
        pytest.fail("server-everything is not installed: run ./dev test")
    entry = {"command": "node", "args": [str(EVERYTHING_JS), "stdio"], "env": env}
    write_json(harness.paths.servers_file, {"mcpServers": {"everything": entry}})


async def get_env(harness: Harness) -> dict[str, Any]:
    assert harness.gateway is not None
    async with LocalClient.open(harness, server="everything") as client:
        await client.handshake(harness.gateway)
        return await client.call("get-env")


@pytest.mark.parametrize("where", ["default", "rule"])
async def test_a_planted_key_is_redacted_and_the_log_says_what_not_the_value(
    tmp_path: Path, where: str
) -> None:
    harness = Harness(tmp_path)
    everything_with(harness, {"SHOP_GITHUB_TOKEN": PLANTED})
    rule = {"results": {"secrets": "redact"}} if where == "rule" else {}
    harness.write_policy({"default": "allow", "tools": {"everything/get-env": rule}})
    async with running(harness) as gateway:
        answer = await get_env(harness)
        text = text_of(answer)
        assert PLANTED not in json.dumps(answer)
        assert "[secret removed by Lockgate: " in text
        environment = json.loads(text)  # still the server's JSON, with the key replaced
        assert environment["SHOP_GITHUB_TOKEN"].startswith("[secret removed by Lockgate")
        assert "PATH" in environment
        [record] = gateway.audit.query(limit=1)
        assert record.secrets == "redacted"
        assert record.outcome == "ok"
        assert any("GitHub" in f["kind"] for f in record.findings)
        assert {f["where"] for f in record.findings} == {"content[0].text.SHOP_GITHUB_TOKEN"}
    stored = harness.paths.audit_db.read_bytes()
    assert PLANTED.encode() not in stored
    finished = [e for e in harness.events if isinstance(e, CallFinished)]
    assert finished
    assert finished[-1].secrets == "redacted"
    assert PLANTED not in repr(finished[-1])


async def test_a_result_with_a_key_is_withheld_when_the_policy_blocks_it(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    everything_with(harness, {"SHOP_GITHUB_TOKEN": PLANTED})
    harness.write_policy({"default": "allow", "results": {"secrets": "block"}})
    async with running(harness) as gateway:
        answer = await get_env(harness)
        assert answer["result"]["isError"] is True
        assert "Lockgate withheld this tool's result" in text_of(answer)
        assert "GitHub" in text_of(answer)
        assert "PATH" not in text_of(answer)
        [record] = gateway.audit.query(limit=1)
        assert (record.outcome, record.secrets) == ("withheld", "blocked")


async def test_allow_lets_the_result_through_untouched(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    everything_with(harness, {"SHOP_GITHUB_TOKEN": PLANTED})
    harness.write_policy(
        {"default": "allow", "tools": {"get-env": {"results": {"secrets": "allow"}}}}
    )
    async with running(harness) as gateway:
        assert PLANTED in text_of(await get_env(harness))
        [record] = gateway.audit.query(limit=1)
        assert (record.secrets, record.findings) == (None, ())


@pytest.mark.parametrize("approve", [True, False])
async def test_ask_shows_a_person_what_was_found_and_waits(tmp_path: Path, approve: bool) -> None:
    harness = Harness(tmp_path)
    everything_with(harness, {"SHOP_GITHUB_TOKEN": PLANTED})
    harness.write_policy({"default": "allow", "results": {"secrets": "ask"}})
    async with running(harness) as gateway:
        detach = gateway.approvals.attach()
        try:
            call = asyncio.create_task(get_env(harness))
            await eventually(gateway.approvals.pending, "the question about the result")
            [pending] = gateway.approvals.pending()
            assert pending.about == "result"
            assert "GitHub" in pending.decision.reason
            assert PLANTED not in pending.decision.reason
            asked = [e for e in harness.events if isinstance(e, ApprovalPending)]
            assert asked[-1].about == "result"
            gateway.approvals.answer(pending.id, approve, digest=pending.digest)
            answer = await asyncio.wait_for(call, 30)
        finally:
            detach()
        [record] = gateway.audit.query(limit=1)
        if approve:
            assert PLANTED in text_of(answer)
            assert (record.outcome, record.secrets) == ("ok", "approved")
        else:
            assert PLANTED not in json.dumps(answer)
            assert "a person refused to let it through" in text_of(answer)
            assert (record.outcome, record.secrets) == ("withheld", "refused")


async def test_ask_with_nobody_to_ask_withholds_the_result(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    everything_with(harness, {"SHOP_GITHUB_TOKEN": PLANTED})
    harness.write_policy({"default": "allow", "results": {"secrets": "ask"}})
    async with running(harness) as gateway:
        answer = await get_env(harness)
        assert "no one is there to ask" in text_of(answer)
        assert PLANTED not in json.dumps(answer)
        [record] = gateway.audit.query(limit=1)
        assert record.secrets == "no_approver"


async def test_a_keyring_secret_in_a_result_is_redacted_whatever_it_looks_like(
    tmp_path: Path, os_keyring: KeyringBackend
) -> None:
    """The server was started with a secret from the keyring; its result repeats it. No
    detector knows its shape (a plain word), but Lockgate knows the value."""
    name, value = f"shop-{uuid.uuid4().hex[:8]}", "correct-horse-battery-staple-42"
    store = SecretStore(os_keyring)
    store.set(name, value)
    try:
        harness = Harness(tmp_path, secrets=store)
        everything_with(harness, {"SHOP_PASSPHRASE": f"keyring:{name}"})
        harness.write_policy({"default": "allow"})
        async with running(harness) as gateway:
            answer = await get_env(harness)
            assert value not in json.dumps(answer)
            [record] = gateway.audit.query(limit=1)
            assert record.secrets == "redacted"
            assert any("keyring" in f["kind"] for f in record.findings)
    finally:
        store.delete(name)


async def test_a_rule_timeout_cancels_the_call_upstream_and_tells_the_agent(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    received = tmp_path / "received.jsonl"
    tee, misbehaving = str(SERVERS / "tee.py"), str(SERVERS / "misbehaving.py")
    entry = {"command": sys.executable, "args": [tee, str(received), sys.executable, misbehaving]}
    write_json(harness.paths.servers_file, {"mcpServers": {"misbehaving": entry}})
    harness.write_policy({"default": "allow", "tools": {"silent": {"timeout": 0.5}}})
    async with (
        running(harness) as gateway,
        LocalClient.open(harness, server="misbehaving") as client,
    ):
        await client.handshake(gateway)
        answer = await client.call("silent")
        assert answer["result"]["isError"] is True
        assert "it ran longer than the 0.5 s the policy allows misbehaving/silent" in (
            text_of(answer)
        )
        [record] = gateway.audit.query(limit=1)
        assert record.outcome == "timed_out"
        assert record.duration_ms is not None
        assert record.duration_ms >= 500

        def cancelled() -> bool:
            lines = [json.loads(x) for x in received.read_text().splitlines() if x]
            return any(m.get("method") == "notifications/cancelled" for m in lines)

        await eventually(cancelled, "the server to be told the call is cancelled")
        assert text_of(await client.call("echo")) != ""  # the session goes on


async def test_a_task_augmented_calls_result_is_inspected_when_it_comes(tmp_path: Path) -> None:
    """2025-11-25 tasks: the call's answer is only the task; its result comes later, to
    tasks/result, and is scanned there (found by a red-team run: it went out untouched)."""
    harness = Harness(tmp_path)
    everything_with(harness, {})
    harness.write_policy({"default": "allow", "results": {"secrets": "block"}})
    async with (
        running(harness) as gateway,
        LocalClient.open(harness, server="everything") as client,
    ):
        hello = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tasks": {}},
            "clientInfo": {"name": "tasks", "version": "1"},
        }
        assert "result" in await client.request("initialize", hello)
        client.send({"method": "notifications/initialized"})
        await eventually(lambda: all(s.initialized for s in gateway.sessions.values()))
        arguments = {"topic": PLANTED}
        created = await client.request(
            "tools/call",
            {"name": "simulate-research-query", "arguments": arguments, "task": {"ttl": 60000}},
        )
        task = created["result"]["task"]["taskId"]
        answer = await client.request("tasks/result", {"taskId": task})
        assert PLANTED not in json.dumps(answer)
        assert "Lockgate withheld this task's result" in text_of(answer)
