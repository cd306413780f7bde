"""A rule change replayed over the recorded calls before the person confirms it, and the
team's rules shown read-only: the real app and gateway, server-everything behind the tee,
agents that are the mcp SDK's Client over HTTP, so the audit log has a real history."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItemModel

from desktop.app import REPLAY_NOT_AVAILABLE, REPLAY_PERIOD, REPLAY_SECONDS, LockgateApp
from desktop.calls import CallRow
from desktop.toolsview import REPLAYING_TEXT, RULE, RuleEditor, ToolRow
from proxy.config.paths import Paths
from proxy.config.settings import settings_file
from proxy.policy.edit import edit_rule, preview
from proxy.policy.risk import classify
from proxy.upstream.catalog import ServerTools
from tests.desktop.conftest import Agent, ask_policy, set_policy, started_app, wait_result

pytestmark = [pytest.mark.timeout(180)]

TEAM = {
    "version": "1",
    "tools": {"everything/echo": {"action": "deny", "reason": "the team keeps echo off"}},
}


def replayed(app: LockgateApp, edit: Any) -> str:
    """The line for ``edit``, computed here, past the window: preview, then replay."""
    control = app.host.control
    assert control is not None
    data = preview(app.paths.policy_file, edit)
    end = time.time()
    return control.replay_candidate(data, end - REPLAY_SECONDS, end).summary(REPLAY_PERIOD)


def settled(editor: RuleEditor) -> bool:
    """The editor shows a replay's answer (not the one being worked out)."""
    return editor.replay.isVisible() and editor.replay.text() not in ("", REPLAYING_TEXT)


def choose(editor: RuleEditor, choice: str) -> None:
    editor.action.setCurrentIndex(editor.action.findData(choice))


def echo_history(qtbot: Any, app: LockgateApp, agent: Agent) -> None:
    """Three calls of echo by claude-test and one by cursor-test, recorded to the end."""
    for client in ("claude-test", "claude-test", "claude-test", "cursor-test"):
        assert not wait_result(qtbot, agent.call("echo", {"message": "hi"}, client=client)).is_error
    qtbot.waitUntil(
        lambda: sum(1 for r in recorded(app) if r.tool == "echo" and r.outcome == "ok") == 4,
        timeout=10_000,
    )


def recorded(app: LockgateApp) -> list[CallRow]:
    return [app.calls.row(n) for n in range(app.calls.rowCount())]


def editor_on_echo(app: LockgateApp) -> RuleEditor:
    app.window.show_tab("Tools & rules")
    assert app.tools_view.select("everything", "echo")
    return app.tools_view.editor


def test_a_pending_change_shows_its_replay_and_only_apply_writes_it(qtbot, running_app, agent):
    echo_history(qtbot, running_app, agent)
    editor = editor_on_echo(running_app)
    assert not editor.replay.isVisible()  # nothing pending, nothing to replay
    before = running_app.paths.policy_file.read_bytes()

    choose(editor, "deny")
    assert editor.replay.text() == REPLAYING_TEXT  # at once, while it waits and runs
    qtbot.waitUntil(lambda: settled(editor), timeout=20_000)
    expected = replayed(running_app, lambda p: edit_rule(p, "everything/echo", editor.changes()))
    assert editor.replay.text() == expected
    assert "would have blocked 4 calls (claude-test 3, cursor-test 1)" in expected
    assert running_app.paths.policy_file.read_bytes() == before  # a preview writes nothing

    # another pending change: the line follows it
    choose(editor, "ask")
    qtbot.waitUntil(
        lambda: settled(editor) and "asked a person about 4 calls" in editor.replay.text(),
        timeout=20_000,
    )
    assert editor.replay.text() == replayed(
        running_app, lambda p: edit_rule(p, "everything/echo", editor.changes())
    )
    assert running_app.paths.policy_file.read_bytes() == before

    # back to what is in force: nothing pending, no line
    choose(editor, "allow")
    qtbot.waitUntil(lambda: not editor.replay.isVisible(), timeout=5_000)

    choose(editor, "deny")
    qtbot.waitUntil(lambda: settled(editor), timeout=20_000)
    qtbot.mouseClick(editor.apply, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "in force" in editor.status.text(), timeout=10_000)
    written = json.loads(running_app.paths.policy_file.read_text())
    assert written["tools"]["everything/echo"] == {"action": "deny"}
    assert wait_result(qtbot, agent.call("echo", {"message": "after"})).is_error


def test_an_approval_shows_what_always_allowing_would_have_done(qtbot, running_app, agent):
    echo_history(qtbot, running_app, agent)
    set_policy(running_app, qtbot, ask_policy())
    waiting = agent.call("echo", {"message": "may I?"}, client="cursor-test")
    qtbot.waitUntil(lambda: len(running_app.prompt.panel.cards) == 1, timeout=10_000)
    card = next(iter(running_app.prompt.panel.cards.values()))
    assert card.allow_once.isEnabled()  # the card is there before any replay answered

    def shown() -> bool:
        replays = running_app.pending.replays.get(card.pending.approval_id, {})
        return len(replays) == 3 and REPLAYING_TEXT not in replays.values()

    qtbot.waitUntil(shown, timeout=30_000)
    always = replayed(
        running_app, lambda p: edit_rule(p, "everything/echo", {"action": "allow", "hide": None})
    )
    assert "would have allowed 4 calls (claude-test 3, cursor-test 1)" in always
    assert card.replay.isVisible()
    assert card.replay.text() == f"If you always allow it: {always}"
    assert always in card.allow_always.toolTip()
    assert "would have allowed 1 call (cursor-test 1)" in card.allow_client.toolTip()
    # the same card in the Approvals tab says the same
    tab_card = running_app.approvals_tab.cards[card.pending.approval_id]
    assert tab_card.replay.text() == card.replay.text()
    before = running_app.paths.policy_file.read_bytes()
    qtbot.mouseClick(card.allow_once, Qt.MouseButton.LeftButton)
    assert not wait_result(qtbot, waiting).is_error
    assert running_app.paths.policy_file.read_bytes() == before  # once: no rule


@pytest.fixture
def team_paths(app_paths: Paths, tmp_path: Path) -> Paths:
    team = tmp_path / "team" / "team.json"
    team.parent.mkdir()
    team.write_text(json.dumps(TEAM))
    settings_file(app_paths).write_text(json.dumps({"team_policy": str(team)}))
    return app_paths


@pytest.fixture
def team_app(qtbot: Any, team_paths: Paths) -> Iterator[LockgateApp]:
    with started_app(qtbot, team_paths) as app:
        qtbot.waitUntil(lambda: app.tools.rowCount() > 0, timeout=60_000)
        qtbot.waitUntil(lambda: app.tools.team is not None, timeout=10_000)
        yield app


def test_the_teams_rule_is_shown_and_what_would_loosen_it_not_offered(
    qtbot, team_app, team_paths, tmp_path
):
    editor = editor_on_echo(team_app)
    team = tmp_path / "team" / "team.json"
    assert editor.team.isVisible()
    assert str(team) in editor.team.text()
    assert "denies this tool: the team keeps echo off" in editor.team.text()
    assert "not offered" in editor.team.text()
    items = editor.action.model()
    assert isinstance(items, QStandardItemModel)
    offered = {
        editor.action.itemData(n): items.item(n).isEnabled() for n in range(editor.action.count())
    }
    assert offered == {"allow": False, "ask": False, "limit": False, "deny": True, "hide": True}
    row = next(n for n, r in enumerate(team_app.tools.rows) if r.name == "echo")
    assert "team: deny" in team_app.tools.index(row, RULE).data()
    # a tool the team says nothing of: every choice, no team line
    assert team_app.tools_view.select("everything", "get-env")
    assert not editor.team.isVisible()
    assert all(items.item(n).isEnabled() for n in range(editor.action.count()))
    assert not team_app.tools_view.team_banner.isVisible()

    # the team's file breaks: its last good rules stay, and the view says why
    team.write_text("{ not json")
    banner = team_app.tools_view.team_banner
    qtbot.waitUntil(banner.isVisible, timeout=15_000)
    assert banner.text().startswith("The team's policy: ")
    assert team_app.tools.team is not None


def test_without_a_gateway_the_replay_is_not_available_and_apply_still_writes(qtbot, app_paths):
    """The app with its gateway not started: the view has a tool (given it here, as a
    listing would), the replay says it cannot run, and the rule is written."""
    app = LockgateApp(app_paths, port=0)
    try:
        tool = {"name": "echo", "description": "Echoes", "inputSchema": {}}
        app.tools.set_catalog({"everything": ServerTools("everything", (tool,), (classify(tool),))})
        editor = editor_on_echo(app)
        assert isinstance(app.tools_view.selected(), ToolRow)
        choose(editor, "deny")
        qtbot.waitUntil(lambda: editor.replay.text() == REPLAY_NOT_AVAILABLE, timeout=5_000)
        qtbot.mouseClick(editor.apply, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "once it starts" in editor.status.text(), timeout=10_000)
        written = json.loads(app_paths.policy_file.read_text())
        assert written["tools"]["everything/echo"] == {"action": "deny"}
    finally:
        app.close()
        app.prompt.close()
        app.server_editor.close()
        app.window.hide()
        app.window.deleteLater()


def test_a_candidate_file_is_replayed_from_the_policy_tab(qtbot, running_app, agent, tmp_path):
    """A policy file being written by hand (a changed copy, not yet in place): the Policy
    tab replays it and policy.json stays as it is."""
    echo_history(qtbot, running_app, agent)
    before = running_app.paths.policy_file.read_bytes()
    candidate = tmp_path / "candidate.json"
    document: dict[str, Any] = json.loads(before)
    document.setdefault("tools", {})["everything/echo"] = {"action": "deny"}
    candidate.write_text(json.dumps(document))
    view = running_app.policy_view
    running_app.window.show_tab("Policy")
    view.choose_file = lambda: candidate
    qtbot.mouseClick(view.replay_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "would have blocked" in view.replay_result.text(), timeout=20_000)
    assert view.replay_result.text() == "candidate.json: " + replayed(
        running_app, lambda _copy: candidate.read_bytes()
    )
    assert "(claude-test 3, cursor-test 1)" in view.replay_result.text()
    assert running_app.paths.policy_file.read_bytes() == before
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    view.choose_file = lambda: broken
    qtbot.mouseClick(view.replay_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Not replayed" in view.replay_result.text(), timeout=20_000)
    view.choose_file = lambda: None  # the dialog cancelled: nothing happens
    qtbot.mouseClick(view.replay_button, Qt.MouseButton.LeftButton)
    assert "Not replayed" in view.replay_result.text()
