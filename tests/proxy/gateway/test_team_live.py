"""A team's policy in force through a real gateway: what it denies never reaches the
server whatever policy.json says, the log and the agent say the team decided, an edit of
the team's file is in force at once, a broken one keeps the last good, and one that was
never readable refuses every call. The server is tests/servers/recorder.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from proxy.cli.main import main
from proxy.config.settings import settings_file
from proxy.gateway.events import PolicyRejected, PolicyReloaded
from tests.support.harness import Harness, LocalClient, running, text_of, write_json
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio]

PERMISSIVE = {"default": "allow", "tools": {"rec/delete_file": {"action": "allow"}}}
TEAM = {"tools": {"rec/delete_file": {"action": "deny", "reason": "the team forbids deleting"}}}


def with_team(harness: Harness, team: dict[str, Any] | None) -> Path:
    path = harness.root / "team" / "policy.json"
    path.parent.mkdir(exist_ok=True)
    if team is not None:
        write_json(path, {"version": "1", **team})
    harness.write_policy(PERMISSIVE)
    settings_file(harness.paths).write_text(json.dumps({"team_policy": str(path)}))
    return path


async def test_policy_json_cannot_loosen_what_the_team_denies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = Harness(tmp_path)
    team = with_team(harness, TEAM)
    monkeypatch.setenv("LOCKGATE_CONFIG_DIR", str(harness.paths.config_dir))
    monkeypatch.setenv("LOCKGATE_DATA_DIR", str(harness.paths.data_dir))
    async with running(harness) as gateway, LocalClient.open(harness) as agent:
        await agent.handshake(gateway)
        denied = await agent.call("delete_file", {"path": "/tmp/x"})
        assert "the team forbids deleting" in text_of(denied)
        assert 'team rule "rec/delete_file"' in text_of(denied)
        assert text_of(await agent.call("echo")) == "ran echo"  # the rest: policy.json's
        assert harness.recorded_names() == ["echo"]  # the denied call never reached it
        [echo, delete] = gateway.audit.query(limit=2)
        assert (delete.tool, delete.decision.value, delete.layer) == (
            "delete_file",
            "denied",
            "team",
        )
        assert echo.layer is None
        # the team's file edited (a checkout): in force for the next call
        write_json(team, {"version": "1", "tools": {"rec/echo": {"action": "deny"}}})
        await eventually(
            lambda: (
                gateway.policy.team is not None
                and gateway.policy.team.rule_for("rec", "echo") is not None
            ),
            "the team's new file in force",
        )
        assert "team rule" in text_of(await agent.call("echo"))
        await agent.call("delete_file", {"path": "/tmp/x"})  # no longer the team's concern
        assert harness.recorded_names() == ["echo", "delete_file"]
        # broken: the last good team policy stays in force
        team.write_text("{ not json")
        await eventually(lambda: gateway.team_store is not None and gateway.team_store.error,
                         "the broken team file noticed")  # fmt: skip
        assert "team rule" in text_of(await agent.call("echo"))
        assert await asyncio.to_thread(main, ["status"]) == 0  # asks the running gateway
        status = capsys.readouterr().out
        assert f"team:      {team} (1 rules, which policy.json cannot loosen)" in status
        assert "team policy error (its last good copy stays in force)" in status
        rejected = [e for e in harness.events if isinstance(e, PolicyRejected)]
        assert [e.layer for e in rejected] == ["team"]  # the window says whose file it is
        assert {e.layer for e in harness.events if isinstance(e, PolicyReloaded)} == {
            None, "team"
        }  # fmt: skip
    assert harness.paths.last_good_team_policy.exists()  # kept for a later start


async def test_a_team_file_never_read_refuses_every_call(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    with_team(harness, None)  # the setting names a file that is not there
    async with running(harness) as gateway, LocalClient.open(harness) as agent:
        await agent.handshake(gateway)
        refused = text_of(await agent.call("echo"))
        assert "team policy" in refused
        assert "cannot be read" in refused
        assert harness.recorded_names() == []


async def test_a_team_file_broken_at_start_uses_the_copy_kept(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    team = with_team(harness, TEAM)
    async with running(harness):
        pass  # the gateway kept a copy of the team's file in force
    team.write_text("{ broken")
    async with running(harness) as gateway, LocalClient.open(harness) as agent:
        await agent.handshake(gateway)
        assert "the team forbids deleting" in text_of(await agent.call("delete_file"))
        assert text_of(await agent.call("echo")) == "ran echo"
