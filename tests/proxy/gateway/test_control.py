"""GatewayControl, the one façade the window, the control socket and the commands use:
each operation on a real gateway (the harness's: serve() in this loop, the recording
upstream, SQLite), as a front end would call it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from proxy.config.servers import ServersError
from proxy.config.servers_edit import remove_server
from proxy.gateway.approvals import Remember
from proxy.gateway.control import AnswerRefused, GatewayControl
from proxy.gateway.events import Event, PauseChanged, ServersReloaded
from tests.support.harness import Harness, LocalClient, recorder_servers, running, write_json
from tests.support.waiting import eventually


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
