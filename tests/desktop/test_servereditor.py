"""The server editor on its own: a form or a paste in, an entry and the secrets out; a
secret never in the entry."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableWidgetItem

from desktop.servereditor import ServerEdit, ServerEditor

PASTED = json.dumps(
    {
        "mcpServers": {
            "github": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-github"],
                "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_pasted_1234", "LOG": "debug"},
                "autoApprove": ["list_issues"],
            }
        }
    }
)


def _cell(editor: ServerEditor, row: int, column: int) -> QTableWidgetItem:
    item = editor.values.item(row, column)
    assert item is not None
    return item


def _editor(qtbot) -> tuple[ServerEditor, list[ServerEdit]]:
    saved: list[ServerEdit] = []
    editor = ServerEditor(saved.append)
    qtbot.addWidget(editor)
    return editor, saved


def test_a_pasted_entry_fills_the_form_and_its_token_goes_to_the_keyring(qtbot):
    editor, saved = _editor(qtbot)
    editor.start_new()
    editor.paste.setPlainText(PASTED)
    qtbot.mouseClick(editor.fill, Qt.MouseButton.LeftButton)
    assert editor.name.text() == "github"
    assert editor.command.text() == "npx"
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    [edit] = saved
    assert edit.name == "github"
    assert not edit.replace
    assert edit.entry["env"] == {
        "GITHUB_PERSONAL_ACCESS_TOKEN": "keyring:github.env.GITHUB_PERSONAL_ACCESS_TOKEN",
        "LOG": "debug",  # not a secret: written as it is
    }
    assert edit.secrets == {"github.env.GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_pasted_1234"}
    assert "ghp_pasted_1234" not in json.dumps(edit.entry)
    assert edit.entry["autoApprove"] == ["list_issues"]  # the client's own field stays
    assert edit.entry["args"] == ["-y", "@modelcontextprotocol/server-github"]


def test_a_value_marked_secret_by_the_person_goes_to_the_keyring(qtbot):
    editor, saved = _editor(qtbot)
    editor.start_new()
    editor.name.setText("docs")
    editor.kind.setCurrentIndex(1)
    editor.url.setText("https://docs.example/mcp")
    qtbot.mouseClick(editor.add_value, Qt.MouseButton.LeftButton)
    _cell(editor, 0, 0).setText("X-Team")
    _cell(editor, 0, 1).setText("blue-7")
    _cell(editor, 0, 2).setCheckState(Qt.CheckState.Checked)
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    [edit] = saved
    assert edit.entry == {
        "url": "https://docs.example/mcp",
        "headers": {"X-Team": "keyring:docs.header.X-Team"},
    }
    assert edit.secrets == {"docs.header.X-Team": "blue-7"}


def test_editing_keeps_a_keyring_reference_unless_a_new_value_is_typed(qtbot):
    editor, saved = _editor(qtbot)
    entry = {"command": "uvx", "args": ["srv"], "env": {"API_KEY": "keyring:srv.env.API_KEY"}}
    editor.start_edit("srv", entry)
    assert editor.name.isReadOnly()
    assert _cell(editor, 0, 1).text() == "(kept in the keyring)"
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    assert saved[-1].entry == entry
    assert saved[-1].secrets == {}
    assert saved[-1].replace
    assert not editor.save.isEnabled()  # until the app says how the write went
    editor.saved("servers.json changed meanwhile; try again")
    assert editor.status.text() == "servers.json changed meanwhile; try again"
    _cell(editor, 0, 1).setText("new-key-99")
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    assert saved[-1].entry["env"] == {"API_KEY": "keyring:srv.env.API_KEY"}
    assert saved[-1].secrets == {"srv.env.API_KEY": "new-key-99"}


def test_an_incomplete_form_says_what_is_missing_and_saves_nothing(qtbot):
    editor, saved = _editor(qtbot)
    editor.start_new()
    editor.name.setText("bad name!")
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    assert "Name:" in editor.status.text()
    editor.name.setText("ok")
    qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    assert "Command:" in editor.status.text()
    editor.paste.setPlainText("not a server at all")
    qtbot.mouseClick(editor.fill, Qt.MouseButton.LeftButton)
    assert editor.status.text()  # the paste's error, in words
    assert saved == []
