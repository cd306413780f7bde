"""GatewayControl, the one façade the window, the control socket and the commands use:
each operation on a real gateway (the harness's: serve() in this loop, the recording
upstream, SQLite), as a front end would call it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from proxy.config.servers import ServersError
from proxy.config.servers_edit import remove_server, set_server_disabled
from proxy.config.settings import save_setting
from proxy.gateway.approvals import PendingApproval, Remember
from proxy.gateway.control import AnswerRefused, GatewayControl
from proxy.gateway.events import Event, PauseChanged, ServersReloaded
from tests.support.harness import Harness, LocalClient, recorder_servers, running, write_json
from tests.support.records import make_record
from tests.support.waiting import eventually

DAY = 86400.0


async def test_status_says_what_the_window_header_says(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow", "tools": {"delete_file": {"action": "deny"}}})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        control = GatewayControl(gateway)
        status = control.status()
        assert not status.paused
        assert status.servers == ("rec",)
        (session,) = status.sessions
        assert (session.server, session.client, session.up) == ("rec", "local-agent", True)
        assert status.policy.rules == 1
        assert status.policy.error is None
        assert status.servers_error is None
        assert status.audit_error is None
        assert (status.approvers, status.pending) == (0, 0)


async def test_pause_and_resume_are_heard_and_decide_calls(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        control = GatewayControl(gateway)
        heard: list[Event] = []
        unsubscribe = control.subscribe(heard.append)
        control.pause()
        assert control.paused
        paused = await client.call("echo")
        assert paused["result"]["isError"] is True
        control.resume()
        assert "ran echo" in json.dumps(await client.call("echo"))
        unsubscribe()
        changes = [e.paused for e in heard if isinstance(e, PauseChanged)]
        assert changes == [True, False]
        assert harness.recorded_names() == ["echo"]


async def test_reload_policy_returns_what_is_in_force(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        harness.write_policy({"default": "deny", "tools": {"echo": {}}})
        in_force = await control.reload_policy()
        assert in_force.error is None
        assert in_force.rules == 1
        assert in_force.policy.default.value == "deny"
        assert in_force.digest == control.policy().digest is not None
        harness.paths.policy_file.write_text("{ not json")
        broken = await control.reload_policy()
        assert broken.error is not None
        assert broken.policy.default.value == "deny"  # the last good one stays


async def test_reload_servers_names_them_or_says_what_is_wrong(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        assert control.reload_servers() == ["rec"]
        harness.paths.servers_file.write_text('{"mcpServers": {"bad name!": {}}}')
        with pytest.raises(ServersError, match="a server name is"):
            control.reload_servers()
        assert control.servers().servers.keys() == {"rec"}
        assert control.servers().error is not None


async def test_servers_lists_those_turned_off_apart_from_those_in_force(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    off = {"command": sys.executable, "args": ["-c", "pass"], "disabled": True}
    write_json(harness.paths.servers_file, recorder_servers(harness.record, off=off))
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        servers = control.servers()
        assert servers.servers.keys() == {"rec"}
        assert servers.disabled.keys() == {"off"}
        assert servers.disabled["off"].disabled
        assert control.status().servers == ("rec",)
        assert control.reload_servers() == ["rec"]
        assert await control.restart_server("off") == 0  # nothing of it runs
        await asyncio.to_thread(remove_server, harness.paths.servers_file, "off")
        control.reload_servers()
        assert control.servers().disabled == {}
    (reloaded,) = [e for e in harness.events if isinstance(e, ServersReloaded)]
    assert (reloaded.added, reloaded.removed, reloaded.changed) == ((), (), ())
    assert reloaded.summary() == "no server in force changed"


async def test_an_answer_releases_only_the_call_the_person_was_shown(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy({"default": "ask"})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        control = GatewayControl(gateway)
        detach = control.attach_approver()
        call = client.start_call("echo", {"n": 1})
        (pending,) = await eventually(control.pending_approvals, "the call to wait")
        with pytest.raises(AnswerRefused, match="no such pending approval"):
            control.answer(pending.id, True, digest="not the one shown")
        with pytest.raises(AnswerRefused, match="always-allow is done by writing a rule"):
            control.answer(pending.id, True, digest=pending.digest, remember=Remember.ALWAYS)
        control.answer(pending.id, True, digest=pending.digest)
        answer = await client.answer(call)
        assert "ran echo" in json.dumps(answer)
        with pytest.raises(AnswerRefused):
            control.answer(pending.id, True, digest=pending.digest)  # answered already
        detach()
        assert control.status().approvers == 0


async def test_history_is_the_audit_log_newest_first(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow", "tools": {"delete_file": {"action": "deny"}}})
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        control = GatewayControl(gateway)
        await client.call("echo")
        await client.call("delete_file")
        records = await asyncio.to_thread(control.history, limit=10)
        assert [(r.tool, r.decision.value) for r in records] == [
            ("delete_file", "denied"),
            ("echo", "allowed"),
        ]
        older = await asyncio.to_thread(control.history, limit=10, before_id=records[0].id)
        assert [r.tool for r in older] == ["echo"]


async def test_status_names_the_servers_turned_off(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        assert control.status().disabled == ()
        await asyncio.to_thread(set_server_disabled, harness.paths.servers_file, "rec", True)
        control.reload_servers()
        status = control.status()
        assert (status.servers, status.disabled) == ((), ("rec",))


async def test_the_approval_timeout_is_the_setting_and_changes_for_the_calls_after(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    harness.write_policy(
        {"default": "ask", "tools": {"fetch": {"action": "ask", "approval": {"timeout": 300}}}}
    )
    save_setting(harness.paths, "approval_timeout_seconds", 45)
    async with running(harness) as gateway, LocalClient.open(harness) as client:
        await client.handshake(gateway)
        control = GatewayControl(gateway)
        control.attach_approver()

        async def asked(tool: str) -> float:
            """How long the person has to answer a call of ``tool``, asked now."""
            call = client.start_call(tool)

            def waiting() -> list[PendingApproval]:
                return [p for p in control.pending_approvals() if p.call.tool == tool]

            (pending,) = await eventually(waiting, f"{tool} to wait for a person")
            control.answer(pending.id, False, digest=pending.digest)
            await client.answer(call)
            return pending.deadline - pending.created

        assert control.approval_timeout == 45
        assert await asked("echo") == pytest.approx(45)  # settings.json's, at the start
        control.set_approval_timeout(600)
        assert control.approval_timeout == 600
        assert await asked("echo") == pytest.approx(600)
        assert await asked("fetch") == pytest.approx(300)  # a rule's own timeout wins
        with pytest.raises(ValueError, match="above 0"):
            control.set_approval_timeout(0)
        assert control.approval_timeout == 600


async def test_the_audit_retention_changes_while_the_gateway_runs(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    async with running(harness) as gateway:
        control = GatewayControl(gateway)
        assert control.audit_retention == 90  # the setting's default
        now = time.time()
        await gateway.audit.write(make_record(time=now - 10 * DAY, tool="old"))
        await gateway.audit.write(make_record(time=now - DAY, tool="recent"))
        before = await control.audit_summary()
        assert before.calls == 2

        control.set_audit_retention(5)  # returns at once: the writer prunes
        assert control.audit_retention == 5

        async def pruned() -> bool:
            return (await control.audit_summary()).calls == 1

        await eventually(pruned, "the call older than 5 days to go")
        (kept,) = await asyncio.to_thread(control.history, limit=10)
        assert kept.tool == "recent"
        with pytest.raises(ValueError, match="0 or more"):
            control.set_audit_retention(-1)
        assert control.audit_retention == 5
