"""Editing one rule of policy.json: only that rule's text changes (proxy/policy/edit.py)."""

from __future__ import annotations

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
