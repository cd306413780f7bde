"""A tool result that holds a secret, in the app: the real app and gateway, a real stdio
server (tests/servers/shifty.py) whose tool answers with a key of GitHub's shape (built
here: no literal key in the repository), an agent that is the mcp SDK's Client. Asked
about (the prompt offers only Allow once and Deny), redacted or withheld (the live calls
row says so)."""

from __future__ import annotations

import json
import random
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QLabel

from desktop.app import LockgateApp
from desktop.approvals import Answer, ApprovalCard, digest_of
from desktop.calls import DECISION, CallRow
from desktop.liveview import details_text
from proxy.config.paths import Paths
from proxy.config.tokens import TokenStore
from proxy.gateway.approvals import Remember
from tests.desktop.conftest import Agent, started_app, text_of, wait_result

pytestmark = [pytest.mark.timeout(180)]

SHIFTY = Path(__file__).resolve().parents[1] / "servers" / "shifty.py"
KEY = "ghp_" + "".join(random.Random(1).choices(string.ascii_letters + string.digits, k=36))
FETCH = {
    "name": "fetch",
    "description": "Fetches the settings.",
    "inputSchema": {"type": "object"},
    "x-result": {"content": [{"type": "text", "text": f"token {KEY}"}]},
}


def app_with(tmp_path: Path, policy: dict[str, Any]) -> Paths:
    definitions = tmp_path / "tools.json"
    definitions.write_text(json.dumps({"tools": [FETCH]}))
    paths = Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    entry = {"command": sys.executable, "args": [str(SHIFTY), str(definitions)]}
    paths.servers_file.write_text(json.dumps({"mcpServers": {"shifty": entry}}))
    paths.policy_file.write_text(json.dumps({"version": "1", **policy}))
    return paths


@pytest.fixture
def app_and_agent(
    qtbot: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[LockgateApp, Agent]]:
    paths = app_with(tmp_path, request.param)
    with started_app(qtbot, paths) as app:
        qtbot.waitUntil(lambda: app.tools.rowCount() == 1, timeout=60_000)
        tokens = {"claude-test": TokenStore(paths.clients_file).create("claude-test")}
        assert app.host.info is not None
        agent = Agent(app.host.info.url, tokens)
        try:
            yield app, agent
        finally:
            agent.close()


ASK = {"default": "allow", "results": {"secrets": "ask"}}
REDACT = {"default": "allow", "results": {"secrets": "redact"}}
BLOCK = {"default": "allow", "results": {"secrets": "block"}}


def last_row(app: LockgateApp) -> CallRow:
    return app.calls.row(app.calls.rowCount() - 1)


def wait_last(qtbot: Any, app: LockgateApp, outcome: str) -> CallRow:
    """The newest call's row, once it has ``outcome``."""
    qtbot.waitUntil(
        lambda: app.calls.rowCount() > 0 and last_row(app).outcome == outcome, timeout=10_000
    )
    return last_row(app)


def decision_cell(app: LockgateApp) -> str:
    return app.calls.text(app.calls.rowCount() - 1, DECISION)


def the_card(qtbot: Any, app: LockgateApp, after: str | None = None) -> ApprovalCard:
    """The one card shown (``after``: not that approval's, which may still be leaving)."""

    def shown() -> bool:
        cards = list(app.prompt.panel.cards.values())
        return len(cards) == 1 and cards[0].pending.approval_id != after

    qtbot.waitUntil(shown, timeout=20_000)
    return next(iter(app.prompt.panel.cards.values()))


@pytest.mark.parametrize("app_and_agent", [ASK], indirect=True)
def test_a_result_question_offers_only_allow_once_and_deny_and_allow_once_lets_it_through(
    qtbot, app_and_agent
):
    app, agent = app_and_agent
    waiting = agent.call("fetch", server="shifty")
    card = the_card(qtbot, app)
    assert card.about_result
    assert app.prompt.isVisible()
    assert "result" in app.prompt.heading.text()
    assert "secret" in app.prompt.heading.text()
    assert "wants to use" not in app.prompt.heading.text()
    title = card.findChild(QLabel, "cardTitle")
    assert title is not None
    assert "holds a secret" in title.text()
    why_label = card.findChild(QLabel, "why")
    assert why_label is not None
    why = why_label.text()
    assert "GitHub" in why  # what was found, never its value
    assert KEY not in why
    shown = [b for b in card.findChildren(type(card.allow_once)) if b.isVisibleTo(card)]
    assert sorted(b.text() for b in shown) == ["Allow once", "Deny (withhold the result)"]
    # the live row says what waits
    qtbot.waitUntil(
        lambda: app.calls.rowCount() > 0 and "result holds a secret" in decision_cell(app)
    )
    assert "waiting for you" in decision_cell(app)

    # the keys of the answers that outlive the call do nothing here
    qtbot.mouseClick(card.countdown, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: QApplication.activeWindow() is app.prompt)
    qtbot.waitUntil(card.hasFocus)
    for key in (Qt.Key.Key_S, Qt.Key.Key_W, Qt.Key.Key_C, Qt.Key.Key_E):
        QTest.keyClick(card, key, Qt.KeyboardModifier.AltModifier)
        assert card.deny.isEnabled(), f"Alt+{key.name} answered a result question"
    assert not waiting.done()

    qtbot.mouseClick(card.allow_once, Qt.MouseButton.LeftButton)
    result = wait_result(qtbot, waiting)
    assert not result.is_error
    assert text_of(result) == f"token {KEY}"
    assert wait_last(qtbot, app, "ok").secrets == "approved"
    assert decision_cell(app) == "✓ allowed · secret let through"
    assert "GitHub" in details_text(last_row(app))
    assert not app.prompt.panel.cards


@pytest.mark.parametrize("app_and_agent", [ASK], indirect=True)
def test_an_always_answer_to_a_result_question_is_once_and_writes_no_rule(
    qtbot, app_and_agent, monkeypatch
):
    app, agent = app_and_agent
    written: list[Any] = []
    monkeypatch.setattr(app, "set_rule", lambda *a, **k: written.append(a))
    monkeypatch.setattr(app, "allow_narrowly", lambda *a, **k: written.append(a))
    policy = app.paths.policy_file.read_bytes()
    waiting = agent.call("fetch", server="shifty")
    card = the_card(qtbot, app)
    pending = card.pending
    # as if an "always" reached the app anyway (a notification, an older card)
    for always in ("tool", "client", "arguments"):
        app.answer(
            Answer(pending.approval_id, digest_of(pending), True, Remember.ALWAYS, always=always)
        )
        assert written == []  # no rule, at once
    result = wait_result(qtbot, waiting)
    assert text_of(result) == f"token {KEY}"
    assert app.paths.policy_file.read_bytes() == policy
    # answered once: the next result is asked about again
    again = agent.call("fetch", server="shifty")
    card = the_card(qtbot, app, after=pending.approval_id)
    qtbot.mouseClick(card.deny, Qt.MouseButton.LeftButton)
    refused = wait_result(qtbot, again)
    assert refused.is_error
    assert KEY not in text_of(refused)
    assert wait_last(qtbot, app, "withheld").secrets == "refused"
    assert decision_cell(app) == "✓ allowed · result withheld"


@pytest.mark.parametrize("app_and_agent", [REDACT], indirect=True)
def test_a_redacted_result_shows_in_live_calls(qtbot, app_and_agent):
    app, agent = app_and_agent
    result = wait_result(qtbot, agent.call("fetch", server="shifty"))
    assert KEY not in text_of(result)
    assert "[secret removed by Lockgate" in text_of(result)
    assert wait_last(qtbot, app, "ok").secrets == "redacted"
    assert decision_cell(app) == "✓ allowed · secret redacted"
    view = app.live
    app.window.show_tab("Live calls")
    view.table.selectRow(view.proxy.rowCount() - 1)
    details = view.details.toPlainText()
    assert "looks like a secret; each one was replaced before the agent got the result" in details
    assert "GitHub" in details
    assert "content[0].text" in details
    assert KEY not in details


@pytest.mark.parametrize("app_and_agent", [BLOCK], indirect=True)
def test_a_withheld_result_shows_in_live_calls_and_its_history(qtbot, app_and_agent):
    app, agent = app_and_agent
    result = wait_result(qtbot, agent.call("fetch", server="shifty"))
    assert result.is_error
    wait_last(qtbot, app, "withheld")
    assert decision_cell(app) == "✓ allowed · result withheld"
    # the same from the audit log (a history row)
    control = app.host.control
    assert control is not None
    records = wait_result(qtbot, app.host.blocking(lambda: control.history(limit=1)))
    row = CallRow.from_record(records[0])
    assert (row.outcome, row.secrets) == ("withheld", "blocked")
    assert row.findings
    assert "GitHub" in row.findings[0]["kind"]
    assert "the policy blocks results that hold secrets" in details_text(row)
