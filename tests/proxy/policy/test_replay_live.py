"""A policy replayed over a history made by real traffic through the gateway: the policy
that was in force decides every call as it was decided live, call by call (limits, cases,
argument schemas, a person's answers, a server's refusal included); a candidate's
differences are exactly the calls it changes; ``lockgate policy replay`` says the same.

The server is tests/servers/recorder.py, a real stdio MCP server; the clients speak to
the gateway's local door as two different clients.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.audit.log import AuditReader
from proxy.cli.main import main
from proxy.gateway.control import GatewayControl
from proxy.gateway.core import Gateway
from proxy.policy.edit import edit_rule, preview
from proxy.policy.model import Policy, PolicyError, parse_policy
from proxy.policy.replay import ReplayReport, replay, replay_history, warm_up_seconds
from tests.support.harness import Harness, LocalClient, running
from tests.support.waiting import eventually, eventually_sync

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio]

IN_FORCE: dict[str, Any] = {
    "default": "allow",
    "tools": {
        "rec/delete_file": {"action": "deny", "reason": "no deleting"},
        "rec/hidden": {"action": "deny", "hide": True},
        "rec/limited": {"limits": [{"counter": "l", "window": "minute", "max": 3}]},
        "rec/checked": {
            "arguments": {
                "type": "object",
                "properties": {"path": {"type": "string", "pattern": "^/tmp/"}},
                "required": ["path"],
            }
        },
        "rec/write_file": {"action": "ask", "when": [{"clients": ["trusted"], "action": "allow"}]},
        # a person's refusal uses no budget: the second is asked too, the third is over
        "rec/ask_me": {
            "action": "ask",
            "limits": [{"counter": "asked", "window": "minute", "max": 1}],
        },
    },
}


async def answer_next(gateway: Gateway, approve: bool) -> None:
    await eventually(lambda: len(gateway.approvals.pending()) > 0, "a question")
    [pending] = gateway.approvals.pending()
    gateway.approvals.answer(pending.id, approve, digest=pending.digest)


async def traffic(harness: Harness, gateway: Gateway) -> None:
    """Calls of every kind the policy decides, from two clients."""
    detach = gateway.approvals.attach()
    try:
        async with (
            LocalClient.open(harness, client="agent") as agent,
            LocalClient.open(harness, client="trusted") as trusted,
        ):
            await agent.handshake(gateway)
            await trusted.handshake(gateway)
            for _ in range(3):
                await agent.call("echo", {"text": "hi"})
            await agent.call("delete_file", {"path": "/tmp/a"})
            await agent.call("hidden")
            for _ in range(5):  # three go ahead, two are over the limit
                await agent.call("limited")
            await trusted.call("limited")  # per client: its own three
            await agent.call("checked", {"path": "/tmp/ok"})
            await agent.call("checked", {"path": "/etc/shadow"})
            await agent.call("checked", {"path": "/tmp/x", "password": "hunter2"})  # redacted
            await trusted.call("write_file", {"path": "/tmp/w"})
            for approve in (True, False):
                call = asyncio.create_task(agent.call("write_file", {"path": "/tmp/w"}))
                await answer_next(gateway, approve)
                await call
            for approve in (False, True):
                call = asyncio.create_task(agent.call("ask_me"))
                await answer_next(gateway, approve)
                await call
            await agent.call("ask_me")  # over its limit: denied, nobody asked
            await agent.call("refuse")  # the server refuses it: its charge would go back
    finally:
        detach()


def from_the_log(harness: Harness, candidate: Policy, in_force: Policy) -> ReplayReport:
    """The replay the command line makes: groups from the hourly counts, the rest call
    by call (the whole history: it is seconds old)."""
    reader = AuditReader(harness.paths.audit_db)
    eventually_sync(lambda: reader.search_backlog() == 0, "the calls counted")
    return replay_history(reader, candidate, in_force, 0.0, time.time() + 1)


def same_counts(one: ReplayReport, other: ReplayReport) -> None:
    for name in ("calls", "skipped", "drifted", "uncertain", "changes", "by_tool", "by_client"):
        assert getattr(one, name) == getattr(other, name), name
    assert {k: len(v) for k, v in one.examples.items()} == {
        k: len(v) for k, v in other.examples.items()
    }


def recorded(harness: Harness) -> list[Any]:
    return list(AuditReader(harness.paths.audit_db).recorded_calls())


async def test_the_policy_in_force_replays_every_call_as_it_was_decided(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(IN_FORCE)
    async with running(harness) as gateway:
        await traffic(harness, gateway)
        calls = recorded(harness)
    assert len(calls) == 21
    # how long each answered question waited, in the log; nothing for the rest
    waited = {
        (r.tool, r.decision.value): r.waited_ms is not None
        for r in AuditReader(harness.paths.audit_db).query(limit=100)
    }
    assert {k for k, v in waited.items() if v} == {
        ("write_file", "approved"), ("write_file", "refused"),
        ("ask_me", "approved"), ("ask_me", "refused"),
    }  # fmt: skip
    assert {c.decision for c in calls} == {"allowed", "denied", "approved", "refused"}
    policy = parse_policy(json.dumps({"version": "1", **IN_FORCE}))
    report = replay(calls, policy, policy)
    assert (report.calls, report.skipped, report.changed, report.drifted) == (21, 0, 0, 0)
    grouped = from_the_log(harness, policy, policy)
    assert (grouped.calls, grouped.skipped, grouped.changed, grouped.drifted) == (21, 0, 0, 0)

    # Each call, one at a time: the replayed verdict is what was decided live.
    from proxy.policy.replay import _WAS, _Replayer

    side = _Replayer(policy)
    for call in calls:
        verdict, _, _ = side.decide(call, call.decision in ("allowed", "approved"))
        assert verdict == _WAS[call.decision], (call.tool, call.client, call.decision, verdict)


async def test_a_candidate_shows_exactly_the_calls_it_would_change(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(IN_FORCE)
    async with running(harness) as gateway:
        await traffic(harness, gateway)
        calls = recorded(harness)
    in_force = parse_policy(json.dumps({"version": "1", **IN_FORCE}))
    changed = json.loads(json.dumps(IN_FORCE))
    changed["tools"]["rec/echo"] = {"action": "deny"}  # three calls would be blocked
    changed["tools"]["rec/limited"]["limits"][0]["max"] = 1  # agent.s 2nd, 3rd
    changed["tools"]["rec/delete_file"] = {"action": "ask"}  # one would ask
    del changed["tools"]["rec/checked"]  # the one refused for its path would be allowed
    candidate = parse_policy(json.dumps({"version": "1", **changed}))
    report = replay(calls, candidate, in_force)
    same_counts(report, from_the_log(harness, candidate, in_force))
    by = {(c, t): n for (c, t), n in report.by_tool.items()}
    assert by == {
        ("blocked", "rec/echo"): 3,
        ("blocked", "rec/limited"): 2,  # agent's second and third
        ("asks", "rec/delete_file"): 1,
        ("allowed", "rec/checked"): 1,
    }
    assert dict(report.changes) == {"blocked": 5, "asks": 1, "allowed": 1}
    assert report.uncertain == 0  # the redacted call does not hang on its arguments now
    assert report.summary("the last 7 days").startswith(
        "Of 21 calls in the last 7 days, this change would have blocked 5 calls (agent 5)"
    )
    # The schema's call with a redacted password: removing the schema is certain; a
    # schema on the redacted value would not be.
    on_password = json.loads(json.dumps(IN_FORCE))
    on_password["tools"]["rec/checked"]["arguments"]["properties"]["password"] = {"maxLength": 3}
    on_it = parse_policy(json.dumps({"version": "1", **on_password}))
    report = replay(calls, on_it, in_force)
    same_counts(report, from_the_log(harness, on_it, in_force))
    assert report.uncertain == 1
    assert [r.call.tool for kept in report.examples.values() for r in kept] == ["checked"]


async def test_lockgate_policy_replay_prints_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(IN_FORCE)
    async with running(harness) as gateway:
        await traffic(harness, gateway)
    monkeypatch.setenv("LOCKGATE_CONFIG_DIR", str(harness.paths.config_dir))
    monkeypatch.setenv("LOCKGATE_DATA_DIR", str(harness.paths.data_dir))
    same = tmp_path / "same.json"
    same.write_text(harness.paths.policy_file.read_text())
    assert main(["policy", "replay", str(same)]) == 0
    out = capsys.readouterr().out
    assert "would have decided all 21 calls of the last 7d as the policy in force does" in out
    stricter = json.loads(same.read_text())
    stricter["tools"]["rec/ask_me"] = {"action": "deny"}
    candidate = tmp_path / "candidate.json"
    candidate.write_text(json.dumps(stricter))
    assert main(["policy", "replay", str(candidate), "--json", "--since", "1h"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["changes"] == {"blocked": 2}  # the two asked; the third was denied
    assert report["examples"][0]["tool"] == "ask_me"
    assert (report["examples"][0]["was"], report["examples"][0]["now"]) == ("ask", "deny")
    assert warm_up_seconds(parse_policy(json.dumps(stricter))) == 60.0
    assert main(["policy", "replay", str(candidate), "--since", "2026-01-01"]) == 1
    text = capsys.readouterr().out
    assert "would have blocked 2 calls (agent 2)" in text
    assert "rec/ask_me" in text
    assert main(["policy", "replay", str(candidate), "--until", "1h"]) == 0  # nothing then
    assert "No calls were recorded" in capsys.readouterr().out


async def test_a_click_is_replayed_before_it_is_made(tmp_path: Path) -> None:
    """The app's way: the change a rule control is about to make, made to a private copy
    of policy.json (policy.json untouched), replayed by the gateway's control."""
    harness = Harness(tmp_path)
    harness.write_policy(IN_FORCE)
    async with running(harness) as gateway:
        await traffic(harness, gateway)
        before = harness.paths.policy_file.read_bytes()
        change = preview(
            harness.paths.policy_file, lambda path: edit_rule(path, "rec/echo", {"action": "deny"})
        )
        assert harness.paths.policy_file.read_bytes() == before
        control = GatewayControl(gateway)
        await eventually(lambda: gateway.audit.search_backlog() == 0, "the calls counted")
        report = await asyncio.to_thread(control.replay_candidate, change, 0.0, time.time() + 1)
        assert dict(report.changes) == {"blocked": 3}
        assert report.summary("the last 7 days").startswith(
            "Of 21 calls in the last 7 days, this change would have blocked 3 calls (agent 3)"
        )
        with pytest.raises(PolicyError):
            control.replay_candidate(b"{ not json", 0.0, time.time())
