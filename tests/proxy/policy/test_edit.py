"""Editing one rule of policy.json: only that rule's text changes (proxy/policy/edit.py)."""

from __future__ import annotations

import codecs
import json
import os

import pytest

from proxy.policy.edit import PolicyEditError, edit_rule
from proxy.policy.model import load_policy

HAND_WRITTEN = """{
  "version": "1",
  "description": "my rules; keep this comment",
  "default": "ask",
  "tools": {
    "read_*": {"action": "allow"},
    "delete_file": {
      "action": "ask",
      "reason": "deleting is final",
      "approval": {"timeout": 30}
    },
    "git/*":   { "action": "allow" }
  }
}
"""


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(HAND_WRITTEN)
    return path


def test_changing_a_rule_replaces_only_its_text_and_keeps_its_other_fields(policy):
    edit_rule(policy, "delete_file", {"action": "deny"})
    text = policy.read_text()
    assert text == HAND_WRITTEN.replace(
        """{
      "action": "ask",
      "reason": "deleting is final",
      "approval": {"timeout": 30}
    }""",
        '{"action": "deny", "reason": "deleting is final", "approval": {"timeout": 30}}',
    )
    rule = load_policy(policy).rule_for("fs", "delete_file")
    assert rule is not None
    assert rule.action.value == "deny"


def test_a_new_rule_is_added_last_with_the_files_indentation(policy):
    edit_rule(policy, "fs/write_file", {"action": "deny", "reason": "read-only today"})
    text = policy.read_text()
    assert text == HAND_WRITTEN.replace(
        '"git/*":   { "action": "allow" }\n',
        '"git/*":   { "action": "allow" },\n'
        '    "fs/write_file": {"action": "deny", "reason": "read-only today"}\n',
    )
    assert json.loads(text)["description"] == "my rules; keep this comment"


def test_a_field_set_to_none_is_removed(policy):
    edit_rule(policy, "delete_file", {"approval": None, "action": "allow"})
    rule = json.loads(policy.read_text())["tools"]["delete_file"]
    assert rule == {"action": "allow", "reason": "deleting is final"}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("read_*", ["delete_file", "git/*"]),
        ("delete_file", ["read_*", "git/*"]),
        ("git/*", ["read_*", "delete_file"]),
    ],
)
def test_removing_a_rule_leaves_the_others_and_a_valid_file(policy, pattern, expected):
    edit_rule(policy, pattern, None)
    document = json.loads(policy.read_text())
    assert list(document["tools"]) == expected
    load_policy(policy)


def test_removing_the_only_rule_and_adding_to_an_empty_tools_object(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text('{\n  "version": "1",\n  "tools": {\n    "a": {"action": "deny"}\n  }\n}\n')
    edit_rule(path, "a", None)
    assert json.loads(path.read_text())["tools"] == {}
    edit_rule(path, "b", {"action": "allow"})
    assert path.read_text() == (
        '{\n  "version": "1",\n  "tools": {\n    "b": {"action": "allow"}\n  }\n}\n'
    )


def test_a_missing_file_starts_from_the_shipped_default(tmp_path):
    path = tmp_path / "policy.json"
    edit_rule(path, "echo", {"action": "deny"})
    policy = load_policy(path)
    rule = policy.rule_for("everything", "echo")
    assert rule is not None
    assert rule.action.value == "deny"
    assert policy.default.value == "ask"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_a_broken_file_is_never_edited(policy):
    broken = HAND_WRITTEN.replace('"allow"}', '"allow"')  # a person mid-edit
    policy.write_text(broken)
    with pytest.raises(PolicyEditError, match="fix them"):
        edit_rule(policy, "echo", {"action": "deny"})
    assert policy.read_text() == broken


def test_a_change_that_would_be_invalid_is_refused_and_nothing_is_written(policy):
    with pytest.raises(PolicyEditError, match="would not be valid"):
        edit_rule(policy, "echo", {"action": "block"})
    assert policy.read_text() == HAND_WRITTEN


def test_no_tools_object_gets_one(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text('{"version": "1", "default": "deny"}')
    edit_rule(path, "echo", {"action": "allow"})
    assert json.loads(path.read_text()) == {
        "version": "1",
        "default": "deny",
        "tools": {"echo": {"action": "allow"}},
    }


def test_a_file_that_is_not_utf8_is_refused_and_left_as_it_was(policy):
    broken = HAND_WRITTEN.encode().replace(b"keep this comment", b"keep this \xff comment")
    policy.write_bytes(broken)
    with pytest.raises(PolicyEditError, match=f"{policy} is not UTF-8 text") as info:
        edit_rule(policy, "echo", {"action": "deny"})
    assert info.value.title == "The rule was not changed"
    assert policy.read_bytes() == broken


def test_a_policy_path_that_cannot_be_read_is_refused_with_why(tmp_path):
    # a FIFO where policy.json should be: reading it would block, so it is not read at all
    path = tmp_path / "policy.json"
    os.mkfifo(path)
    with pytest.raises(PolicyEditError, match="is not a regular file"):
        edit_rule(path, "echo", {"action": "deny"})
    assert path.is_fifo()  # not replaced by a written file


def test_a_policy_that_cannot_be_written_says_so_and_writes_nothing(tmp_path):
    # the config folder is a file by mistake: the edit is valid, the write fails
    config = tmp_path / "config"
    config.write_text("not a folder")
    path = config / "policy.json"
    with pytest.raises(PolicyEditError, match=f"cannot write {path}: "):
        edit_rule(path, "echo", {"action": "deny"})
    assert config.read_text() == "not a folder"
    assert list(tmp_path.iterdir()) == [config]  # no temporary file left behind


def test_removing_a_rule_that_does_not_exist_changes_nothing(policy):
    assert edit_rule(policy, "no_such_rule", None) == HAND_WRITTEN.encode()
    assert policy.read_text() == HAND_WRITTEN
    assert [r.pattern.text for r in load_policy(policy).rules] == ["read_*", "delete_file", "git/*"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a", '{"version": "1", "tools": {"b": {"action": "deny"}, "c": {}}}\n'),
        ("b", '{"version": "1", "tools": {"a": {"action": "allow"}, "c": {}}}\n'),
        ("c", '{"version": "1", "tools": {"a": {"action": "allow"}, "b": {"action": "deny"}}}\n'),
    ],
)
def test_removing_a_rule_from_a_one_line_tools_object_keeps_it_on_one_line(
    tmp_path, pattern, expected
):
    path = tmp_path / "policy.json"
    path.write_text(
        '{"version": "1", "tools": {"a": {"action": "allow"}, "b": {"action": "deny"}, "c": {}}}\n'
    )
    edit_rule(path, pattern, None)
    assert path.read_text() == expected
    load_policy(path)


def test_a_rule_added_to_a_one_line_tools_object_is_indented_past_the_object(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text('{\n  "version": "1",\n  "tools": {"a": {"action": "allow"}}\n}\n')
    edit_rule(path, "b", {"action": "deny"})
    assert path.read_text() == (
        '{\n  "version": "1",\n  "tools": {"a": {"action": "allow"},\n'
        '    "b": {"action": "deny"}}\n}\n'
    )
    assert [r.pattern.text for r in load_policy(path).rules] == ["a", "b"]


def test_a_policy_saved_with_a_byte_order_mark_is_edited_and_keeps_it(tmp_path):
    """Some editors save UTF-8 with a BOM; the loader accepts it, so the rule controls
    must too (they raised a raw JSONDecodeError on such a file)."""
    path = tmp_path / "policy.json"
    text = '{"version": "1", "default": "allow", "tools": {"echo": {"action": "allow"}}}\n'
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    written = edit_rule(path, "echo", {"action": "deny"})
    assert written == path.read_bytes()
    assert written.startswith(codecs.BOM_UTF8)
    rule = load_policy(path).rule_for("s", "echo")
    assert rule is not None
    assert rule.action.value == "deny"
