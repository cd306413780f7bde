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
from proxy.gateway.approvals import Remember
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


async def session_allowed(gateway: Any, agent: LocalClient, tool: str) -> None:
    """Call ``tool``, and answer the person's question "allow for this session"."""
    first = agent.start_call(tool)
    [pending] = await eventually(gateway.approvals.pending, "a question for the person")
    remember = Remember.SESSION
    assert gateway.approvals.answer(pending.id, True, digest=pending.digest, remember=remember)
    assert text_of(await agent.answer(first)) == f"ran {tool}"


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        ({"tools": {"rec/ask_me": {"action": "ask"}}}, {"rec/ask_me": {"action": "ask"}}),
        ({"default": "ask"}, None),  # both defaults ask, the team's from its next version
    ],
)
async def test_a_session_approval_of_my_question_does_not_answer_the_teams(
    tmp_path: Path, mine: dict[str, Any], theirs: dict[str, Any] | None
) -> None:
    """The person allows a tool for the session when policy.json asks; then the team's
    file asks about it too (a rule of the same pattern, or its default): that is the
    team's question, and a person must be asked it."""
    harness = Harness(tmp_path)
    team = with_team(harness, {"tools": {}})
    harness.write_policy({"default": "allow", **mine})
    tool = "ask_me" if theirs else "echo"
    async with running(harness) as gateway, LocalClient.open(harness) as agent:
        gateway.approvals.attach()
        await agent.handshake(gateway)
        await session_allowed(gateway, agent, tool)
        before = gateway.policy
        asked = {"tools": theirs} if theirs else {"default": "ask", "tools": {}}
        write_json(team, {"version": "1", **asked})
        await eventually(lambda: gateway.policy is not before, "the team's ask in force")
        second = agent.start_call(tool)
        [pending] = await eventually(gateway.approvals.pending, "the team's question asked")
        assert gateway.approvals.answer(pending.id, False, digest=pending.digest)
        assert "refused" in text_of(await agent.answer(second))
        assert harness.recorded_names() == [tool]  # the second never ran


async def test_a_result_let_through_after_the_team_turned_to_block_is_withheld(
    tmp_path: Path,
) -> None:
    """A result holding a secret waits for a person (policy.json: secrets "ask"); the
    team's file meanwhile blocks results with secrets. The person's "let it through"
    comes too late: the layers in force now withhold it."""
    token = "ghp_1234567890abcdefghijABCDEFGHIJ123456"
    harness = Harness(tmp_path)
    team = with_team(harness, {"tools": {}})
    harness.write_policy({"default": "allow", "results": {"secrets": "ask"}})
    async with running(harness) as gateway, LocalClient.open(harness) as agent:
        gateway.approvals.attach()
        await agent.handshake(gateway)
        waiting = agent.start_call(token)  # the recorder answers with the tool's name
        [pending] = await eventually(gateway.approvals.pending, "the result held")
        assert pending.about == "result"
        write_json(team, {"version": "1", "results": {"secrets": "block"}, "tools": {}})
        await eventually(
            lambda: gateway.policy.secrets_of("rec", token).value == "block", "the team's block"
        )
        assert gateway.approvals.answer(pending.id, True, digest=pending.digest)
        said = text_of(await agent.answer(waiting))
        assert token not in said
        assert "withheld" in said
