"""Editing one rule of policy.json: only that rule's text changes (proxy/policy/edit.py)."""

from __future__ import annotations

import codecs
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.policy.decide import Basis, ToolCall, Verdict, decide
from proxy.policy.edit import (
    MAX_EXACT_ARGUMENTS_BYTES,
    PolicyEditError,
    allow_exact_arguments,
    allow_for_client,
    allow_narrowly,
    edit_rule,
    exact_arguments_schema,
    remove_case,
    rule_text,
)
from proxy.policy.limits import Counters
from proxy.policy.model import Action, load_policy

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


# -- cases: per client, exact arguments ----------------------------------------------------


def decision_of(path, tool, arguments=None, client="local", server="fs"):
    call = ToolCall(server, tool, arguments or {}, client)
    return decide(load_policy(path), call, Counters(), 0.0)


DELETE_FILE_TEXT = """{
      "action": "ask",
      "reason": "deleting is final",
      "approval": {"timeout": 30}
    }"""


def test_allow_for_client_adds_a_case_and_keeps_every_other_byte(policy):
    written = allow_for_client(policy, "delete_file", "cursor", "ask")
    expected = HAND_WRITTEN.replace(
        DELETE_FILE_TEXT,
        '{"action": "ask", "reason": "deleting is final", "approval": {"timeout": 30}, "when": [\n'
        '      {"clients": ["cursor"], "action": "allow"}\n'
        "    ]}",
    )
    assert policy.read_text() == expected
    assert written == expected.encode()
    allowed = decision_of(policy, "delete_file", client="cursor")
    assert (allowed.verdict, allowed.case) == (Verdict.ALLOW, 0)
    asked = decision_of(policy, "delete_file", client="claude-code")
    assert (asked.verdict, asked.reason) == (Verdict.ASK, "deleting is final")


def test_allow_for_client_extends_the_case_it_wrote_and_then_changes_nothing(policy):
    allow_for_client(policy, "delete_file", "cursor", "ask")
    allow_for_client(policy, "delete_file", "claude-code", "ask")
    text = policy.read_text()
    assert '      {"clients": ["cursor", "claude-code"], "action": "allow"}\n' in text
    assert json.loads(text)["tools"]["delete_file"]["when"] == [
        {"clients": ["cursor", "claude-code"], "action": "allow"}
    ]
    before = policy.stat().st_mtime_ns
    assert allow_for_client(policy, "delete_file", "cursor", "ask") == text.encode()
    assert policy.read_text() == text
    assert policy.stat().st_mtime_ns == before  # not even rewritten


def test_allow_for_client_appends_after_the_cases_a_person_wrote(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(
        json.dumps(
            {
                "version": "1",
                "tools": {
                    "push": {
                        "action": "ask",
                        "when": [
                            # more specific (arguments): stays first, still decides
                            {
                                "clients": ["cursor"],
                                "arguments": {"required": ["force"]},
                                "action": "deny",
                            },
                            # would decide cursor's calls first: cursor leaves it
                            {"clients": ["cursor", "ci"], "action": "ask", "reason": "look"},
                            {"clients": ["bot"], "action": "deny"},
                        ],
                    }
                },
            },
            indent=2,
        )
    )
    allow_for_client(path, "push", "cursor", "ask")
    assert json.loads(path.read_text())["tools"]["push"]["when"] == [
        {"clients": ["cursor"], "arguments": {"required": ["force"]}, "action": "deny"},
        {"clients": ["ci"], "action": "ask", "reason": "look"},
        {"clients": ["bot"], "action": "deny"},
        {"clients": ["cursor"], "action": "allow"},
    ]
    assert decision_of(path, "push", {}, "cursor").verdict is Verdict.ALLOW
    assert decision_of(path, "push", {"force": True}, "cursor").verdict is Verdict.DENY
    assert decision_of(path, "push", {}, "ci").reason == "look"
    # a case that named only this client goes altogether
    allow_for_client(path, "push", "bot", "ask")
    assert json.loads(path.read_text())["tools"]["push"]["when"][1:] == [
        {"clients": ["ci"], "action": "ask", "reason": "look"},
        {"clients": ["cursor", "bot"], "action": "allow"},
    ]


def test_allow_for_client_without_a_rule_makes_one_with_the_tools_action_now(policy):
    # no rule matches fs/rm: the policy's default (ask) decides it today, for every client
    allow_for_client(policy, "fs/rm", "cursor", Action.ASK)
    assert policy.read_text() == HAND_WRITTEN.replace(
        '"git/*":   { "action": "allow" }\n',
        '"git/*":   { "action": "allow" },\n'
        '    "fs/rm": {"action": "ask", "when": [\n'
        '      {"clients": ["cursor"], "action": "allow"}\n'
        "    ]}\n",
    )
    assert decision_of(policy, "rm", client="cursor").verdict is Verdict.ALLOW
    other = decision_of(policy, "rm", client="claude-code")
    assert (other.verdict, other.rule) == (Verdict.ASK, "fs/rm")  # as before for the others


def test_a_hidden_tool_cannot_be_allowed_for_one_client(tmp_path):
    path = tmp_path / "policy.json"
    text = '{"version": "1", "tools": {"secret": {"action": "deny", "hide": true}}}\n'
    path.write_text(text)
    with pytest.raises(PolicyEditError, match="a hidden tool is hidden from every client"):
        allow_for_client(path, "secret", "cursor", "deny")
    assert path.read_text() == text


def test_remove_case_takes_one_case_and_the_last_takes_when_with_it(policy):
    allow_for_client(policy, "delete_file", "cursor", "ask")
    allow_exact_arguments(policy, "delete_file", {"path": "/tmp/x"}, "ask")
    assert len(json.loads(policy.read_text())["tools"]["delete_file"]["when"]) == 2
    remove_case(policy, "delete_file", 0)  # the exact arguments went first: cursor's stays
    assert json.loads(policy.read_text())["tools"]["delete_file"]["when"] == [
        {"clients": ["cursor"], "action": "allow"}
    ]
    remove_case(policy, "delete_file", 0)
    assert policy.read_text() == HAND_WRITTEN.replace(
        DELETE_FILE_TEXT,
        '{"action": "ask", "reason": "deleting is final", "approval": {"timeout": 30}}',
    )


@pytest.mark.parametrize(
    ("pattern", "index", "message"),
    [
        ("delete_file", 0, "the rule for 'delete_file' has no case 0 \\(it has 0\\)"),
        ("read_*", -1, "has no case -1"),
        ("nothing", 0, "has no rule for 'nothing'"),
    ],
)
def test_remove_case_that_is_not_there_says_so_and_writes_nothing(policy, pattern, index, message):
    with pytest.raises(PolicyEditError, match=message):
        remove_case(policy, pattern, index)
    assert policy.read_text() == HAND_WRITTEN


ARGS = {"path": "/tmp/x", "recursive": True, "depth": 2, "tags": ["a", {"b": None}]}


def test_exact_arguments_allow_that_call_and_no_other(policy):
    allow_exact_arguments(policy, "delete_file", ARGS, "ask")
    case = json.loads(policy.read_text())["tools"]["delete_file"]["when"][0]
    assert case == {
        "arguments": {
            "type": "object",
            "properties": {
                "path": {"const": "/tmp/x"},
                "recursive": {"const": True},
                "depth": {"const": 2},
                "tags": {"const": ["a", {"b": None}]},
            },
            "required": ["path", "recursive", "depth", "tags"],
            "additionalProperties": False,
        },
        "action": "allow",
    }
    same = decision_of(policy, "delete_file", dict(reversed(list(ARGS.items()))), "anyone")
    assert (same.verdict, same.case) == (Verdict.ALLOW, 0)
    assert same.reason == "fs/delete_file is allowed for these arguments by the policy"
    for other in [
        {**ARGS, "path": "/tmp/y"},
        {**ARGS, "recursive": 1},  # true is not 1
        {**ARGS, "depth": "2"},
        {**ARGS, "tags": ["a", {"b": None, "c": 1}]},
        {**ARGS, "extra": None},
        {k: v for k, v in ARGS.items() if k != "depth"},
        {},
    ]:
        decision = decision_of(policy, "delete_file", other)
        assert (decision.verdict, decision.case) == (Verdict.ASK, None), other


def test_exact_arguments_for_one_client_hold_for_that_client_only(policy):
    allow_exact_arguments(policy, "delete_file", ARGS, "ask", client="cursor")
    case = json.loads(policy.read_text())["tools"]["delete_file"]["when"][0]
    assert list(case) == ["clients", "arguments", "action"]
    assert case["clients"] == ["cursor"]
    assert decision_of(policy, "delete_file", ARGS, "cursor").verdict is Verdict.ALLOW
    assert decision_of(policy, "delete_file", ARGS, "claude-code").verdict is Verdict.ASK
    before = policy.read_bytes()
    assert allow_exact_arguments(policy, "delete_file", ARGS, "ask", client="cursor") == before


def test_an_exact_case_is_one_readable_line(policy):
    allow_exact_arguments(policy, "delete_file", {"path": "/tmp/x"}, "ask")
    assert (
        '      {"arguments": {"type": "object", "properties": {"path": {"const": "/tmp/x"}}, '
        '"required": ["path"], "additionalProperties": false}, "action": "allow"}\n'
    ) in policy.read_text()


def test_an_exact_case_goes_before_a_case_that_would_decide_that_call_first(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(
        '{"version": "1", "tools": {"t": {"action": "ask", "when": ['
        '{"arguments": {"required": ["other"]}, "action": "deny"}, '
        '{"clients": ["cursor"], "action": "deny"}]}}}\n'
    )
    allow_exact_arguments(path, "t", {"p": 1}, "ask", client="cursor")
    text = path.read_text()
    assert "\n" not in text.strip()  # a one-line file stays one line
    cases = json.loads(text)["tools"]["t"]["when"]
    assert [c.get("clients") for c in cases] == [None, ["cursor"], ["cursor"]]
    assert "arguments" in cases[1]
    assert decision_of(path, "t", {"p": 1}, "cursor").verdict is Verdict.ALLOW
    assert decision_of(path, "t", {"p": 2}, "cursor").verdict is Verdict.DENY


def test_exact_arguments_the_rules_own_schema_blocks_are_refused(tmp_path):
    # no case can allow what the rule's arguments schema blocks: a case written anyway
    # would change nothing, so the click is told why instead
    path = tmp_path / "policy.json"
    text = (
        '{"version": "1", "tools": {"t": {"action": "ask", '
        '"arguments": {"properties": {"p": {"maximum": 5}}}}}}\n'
    )
    path.write_text(text)
    assert decision_of(path, "t", {"p": 9}).basis is Basis.ARGUMENTS
    with pytest.raises(PolicyEditError, match="blocks these arguments itself"):
        allow_exact_arguments(path, "t", {"p": 9}, "ask")
    assert path.read_text() == text
    allow_exact_arguments(path, "t", {"p": 4}, "ask")  # within the schema: fine
    assert decision_of(path, "t", {"p": 4}).verdict is Verdict.ALLOW


def test_arguments_too_big_for_a_readable_rule_are_refused(policy):
    limit = MAX_EXACT_ARGUMENTS_BYTES
    just = {"s": "x" * (limit - len('{"s": ""}'))}
    assert len(json.dumps(just)) == limit
    exact_arguments_schema(just)  # at the limit: fine
    too_big = {"s": "é" * (limit // 2)}  # counted in bytes of UTF-8, not characters
    with pytest.raises(PolicyEditError, match=f"bytes of JSON, over the {limit}"):
        allow_exact_arguments(policy, "delete_file", too_big, "ask")
    assert policy.read_text() == HAND_WRITTEN


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["not", "an", "object"], "are a JSON object"),
        ({"s": "\ud800"}, "cannot be written as JSON"),
        ({"n": float("nan")}, "cannot be written as JSON"),
    ],
)
def test_arguments_that_cannot_be_a_rule_are_refused(policy, arguments, message):
    with pytest.raises(PolicyEditError, match=message):
        allow_exact_arguments(policy, "delete_file", arguments, "ask")
    assert policy.read_text() == HAND_WRITTEN


def test_rule_text_writes_one_line_per_case():
    rule = {"when": [{"action": "allow", "clients": ["a"]}], "action": "deny"}
    assert rule_text(rule) == '{"action": "deny", "when": [{"clients": ["a"], "action": "allow"}]}'
    assert rule_text(rule, "  ", "\t") == (
        '{"action": "deny", "when": [\n  \t{"clients": ["a"], "action": "allow"}\n  ]}'
    )
    assert rule_text({"when": rule["when"]}, "") == (
        '{"when": [\n  {"clients": ["a"], "action": "allow"}\n]}'
    )


NARROW = """{
  "version": "1",
  "default": "ask",
  "tools": {
    "git/*": {"action": "ask", "reason": "git needs a person", "rate_limit": {"max": 5, "window": 60}}
  }
}
"""


def _decided(path, call):
    return decide(load_policy(path), call, Counters(), 0.0)


def test_allow_narrowly_copies_the_wider_rule_so_other_calls_are_decided_as_before(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(NARROW)
    allow_narrowly(path, "git", "push", client="cursor")
    written = json.loads(path.read_text())["tools"]["git/push"]
    assert written["action"] == "ask"
    assert written["reason"] == "git needs a person"
    # the shorthand's budget is the wider rule's counter, shared with the other git tools
    assert written["limits"] == [{"counter": "git/*", "scope": "grant", "max": 5, "window": 60}]
    assert written["when"] == [{"clients": ["cursor"], "action": "allow"}]
    assert _decided(path, ToolCall("git", "push", {}, "cursor")).verdict is Verdict.ALLOW
    other = _decided(path, ToolCall("git", "push", {}, "claude-code"))
    assert other.verdict is Verdict.ASK
    assert other.reason == "git needs a person"
    assert "git/*" in NARROW
    assert '"git/*"' in path.read_text()


def test_allow_narrowly_for_exact_arguments_under_the_default(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(NARROW)
    allow_narrowly(path, "fs", "rm", arguments={"path": "/tmp/x"})
    assert json.loads(path.read_text())["tools"]["fs/rm"]["action"] == "ask"  # the default
    assert _decided(path, ToolCall("fs", "rm", {"path": "/tmp/x"}, "any")).verdict is Verdict.ALLOW
    assert _decided(path, ToolCall("fs", "rm", {"path": "/etc"}, "any")).verdict is Verdict.ASK


def test_allow_narrowly_on_a_tool_with_its_own_rule_changes_only_that_rule(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(HAND_WRITTEN)
    allow_narrowly(path, "fs", "delete_file", client="cursor", arguments={"path": "/tmp/x"})
    tools = json.loads(path.read_text())["tools"]
    assert "fs/delete_file" in tools  # an exact server/tool rule outranks "delete_file"
    assert tools["delete_file"] == json.loads(HAND_WRITTEN)["tools"]["delete_file"]
    decided = _decided(path, ToolCall("fs", "delete_file", {"path": "/tmp/x"}, "cursor"))
    assert decided.verdict is Verdict.ALLOW
    assert _decided(path, ToolCall("fs", "delete_file", {"path": "/tmp/x"}, "other")).verdict is (
        Verdict.ASK
    )


def test_allow_narrowly_needs_a_client_or_arguments(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(NARROW)
    with pytest.raises(PolicyEditError, match="whom or which arguments"):
        allow_narrowly(path, "git", "push")
    assert path.read_text() == NARROW


# -- cases: a new rule, other clients' cases, schemas that cannot check a call -------------


def schema_too_deep_to_check(refs: int = 20) -> dict[str, Any]:
    """An ``arguments`` schema that follows ``refs`` $refs for each level of nesting of
    ``x``: the loader's probes pass, but a list nested :data:`DEEP` levels takes jsonschema
    past Python's recursion limit, and decide denies such a call (it fails closed)."""
    defs: dict[str, Any] = {f"r{i}": {"$ref": f"#/$defs/r{i + 1}"} for i in range(refs)}
    defs[f"r{refs}"] = {"type": "array", "items": {"$ref": "#/$defs/r0"}}
    return {"$defs": defs, "properties": {"x": {"$ref": "#/$defs/r0"}}}


def nested(depth: int) -> dict[str, Any]:
    """``{"x": [[...]]}``, lists ``depth`` deep: still within the file's nesting limit."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return {"x": value}


DEEP = nested(40)


def test_exact_arguments_without_a_rule_make_one_with_the_tools_action_now(policy: Path) -> None:
    """As allow_for_client does: the tool's other calls keep the action they have today."""
    allow_exact_arguments(policy, "fs/rm", {"path": "/tmp/x"}, Action.ASK)
    tools = json.loads(policy.read_text())["tools"]
    assert tools["fs/rm"] == {
        "action": "ask",
        "when": [{"arguments": exact_arguments_schema({"path": "/tmp/x"}), "action": "allow"}],
    }
    assert {k: v for k, v in tools.items() if k != "fs/rm"} == json.loads(HAND_WRITTEN)["tools"]
    allowed = decision_of(policy, "rm", {"path": "/tmp/x"})
    assert (allowed.verdict, allowed.case) == (Verdict.ALLOW, 0)
    other = decision_of(policy, "rm", {"path": "/etc"})
    assert (other.verdict, other.rule, other.case) == (Verdict.ASK, "fs/rm", None)


def test_an_exact_case_for_one_client_passes_over_the_cases_of_other_clients(
    tmp_path: Path,
) -> None:
    """A case for another client never decides this client's calls, so the new case does
    not go before it: the person's order stays."""
    path = tmp_path / "policy.json"
    path.write_text(
        '{"version": "1", "tools": {"t": {"action": "ask", "when": ['
        '{"clients": ["bot"], "action": "deny"}, '
        '{"clients": ["cursor"], "action": "deny"}]}}}\n'
    )
    allow_exact_arguments(path, "t", {"p": 1}, "ask", client="cursor")
    cases = json.loads(path.read_text())["tools"]["t"]["when"]
    assert [c["clients"] for c in cases] == [["bot"], ["cursor"], ["cursor"]]
    assert cases[1] == {
        "clients": ["cursor"],
        "arguments": exact_arguments_schema({"p": 1}),
        "action": "allow",
    }
    allowed = decision_of(path, "t", {"p": 1}, "cursor")
    assert (allowed.verdict, allowed.case) == (Verdict.ALLOW, 1)
    assert decision_of(path, "t", {"p": 2}, "cursor").case == 2
    assert decision_of(path, "t", {"p": 1}, "bot").case == 0


def test_exact_arguments_the_rules_own_schema_cannot_check_are_refused(tmp_path: Path) -> None:
    """The rule's own schema fails to check them (decide denies such a call): as for
    arguments it blocks, no case can allow them, so the click is told why."""
    path = tmp_path / "policy.json"
    text = json.dumps(
        {
            "version": "1",
            "tools": {"t": {"action": "ask", "arguments": schema_too_deep_to_check()}},
        },
        indent=2,
    )
    path.write_text(text)
    denied = decision_of(path, "t", DEEP)
    assert (denied.verdict, denied.basis) == (Verdict.DENY, Basis.ARGUMENTS)
    assert "could not be checked (RecursionError" in denied.reason
    assert decision_of(path, "t", nested(2)).verdict is Verdict.ASK  # the schema works
    with pytest.raises(PolicyEditError, match="the rule for 't' blocks these arguments itself"):
        allow_exact_arguments(path, "t", DEEP, "ask")
    assert path.read_text() == text


def test_an_exact_case_goes_before_a_case_that_cannot_check_those_arguments(
    tmp_path: Path,
) -> None:
    """A case whose schema fails on these arguments denies the call where it stands
    (decide fails closed), so the new case must come before it to decide first."""
    path = tmp_path / "policy.json"
    path.write_text(
        json.dumps(
            {
                "version": "1",
                "tools": {
                    "t": {
                        "action": "ask",
                        "when": [{"arguments": schema_too_deep_to_check(), "action": "deny"}],
                    }
                },
            },
            indent=2,
        )
    )
    before = decision_of(path, "t", DEEP)
    assert (before.verdict, before.case) == (Verdict.DENY, 0)
    assert "could not be checked against case 0" in before.reason
    allow_exact_arguments(path, "t", DEEP, "ask")
    cases = json.loads(path.read_text())["tools"]["t"]["when"]
    assert cases[0] == {"arguments": exact_arguments_schema(DEEP), "action": "allow"}
    assert cases[1] == {"arguments": schema_too_deep_to_check(), "action": "deny"}
    allowed = decision_of(path, "t", DEEP)
    assert (allowed.verdict, allowed.case) == (Verdict.ALLOW, 0)
    shallow = decision_of(path, "t", nested(2))  # the other case still decides the rest
    assert (shallow.verdict, shallow.case) == (Verdict.DENY, 1)


def test_allow_narrowly_on_a_tool_with_an_exact_rule_adds_a_case_to_it_as_it_is(
    tmp_path: Path,
) -> None:
    """The tool has a rule of its own already: nothing is copied into it (a copy of itself
    would turn its rate_limit shorthand into a second limit on the same calls)."""
    path = tmp_path / "policy.json"
    own = (
        '"git/push": {"action": "ask", "reason": "pushing is public", '
        '"rate_limit": {"max": 2, "window": 60}}'
    )
    text = NARROW.replace("}}\n  }\n}", "}},\n    " + own + "\n  }\n}")
    path.write_text(text)
    assert json.loads(text)["tools"]["git/push"]["rate_limit"] == {"max": 2, "window": 60}
    allow_narrowly(path, "git", "push", client="cursor")
    tools = json.loads(path.read_text())["tools"]
    assert tools["git/push"] == {
        "action": "ask",
        "reason": "pushing is public",
        "rate_limit": {"max": 2, "window": 60},
        "when": [{"clients": ["cursor"], "action": "allow"}],
    }
    assert tools["git/*"] == json.loads(NARROW)["tools"]["git/*"]
    assert _decided(path, ToolCall("git", "push", {}, "cursor")).verdict is Verdict.ALLOW
    other = _decided(path, ToolCall("git", "push", {}, "claude-code"))
    assert (other.verdict, other.reason) == (Verdict.ASK, "pushing is public")


def test_a_case_that_is_not_an_object_is_written_as_it_is_and_refused_by_the_loader(
    tmp_path: Path,
) -> None:
    """rule_text writes a case it cannot order untouched, so the loader sees what the
    change asked for and says where it is wrong; nothing is written."""
    path = tmp_path / "policy.json"
    text = '{\n  "version": "1",\n  "tools": {\n    "t": {"action": "ask"}\n  }\n}\n'
    path.write_text(text)
    with pytest.raises(
        PolicyEditError,
        match=r'would not be valid:\n.*:5:7: tools\."t"\.when\[0\]: must be an object; got "allow c"',
    ):
        edit_rule(path, "t", {"when": ["allow c", {"action": "allow", "clients": ["c"]}]})
    assert path.read_text() == text
    assert rule_text({"when": ["allow c"], "action": "ask"}, "    ") == (
        '{"action": "ask", "when": [\n      "allow c"\n    ]}'
    )


def test_exact_arguments_nested_too_deeply_to_write_are_refused_in_words() -> None:
    """Deeper than JSON can be written here (a recursion limit): a clear refusal, not a
    RecursionError out of the Approvals tab's click."""
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(sys.getrecursionlimit() + 100):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(PolicyEditError, match="nested too deeply to make a rule of"):
        exact_arguments_schema(nested)


def test_a_preview_is_made_on_a_copy_and_never_touches_the_file(tmp_path: Path) -> None:
    from proxy.policy.edit import preview

    missing = tmp_path / "policy.json"
    made = preview(missing, lambda path: edit_rule(path, "git/push", {"action": "deny"}))
    assert b'"git/push"' in made
    assert not missing.exists()  # a missing file starts from the default, and stays missing
    folder = tmp_path / "folder" / "policy.json"
    folder.mkdir(parents=True)  # not a file: it cannot be read
    with pytest.raises(PolicyEditError, match="cannot read"):
        preview(folder, lambda path: edit_rule(path, "git/push", {"action": "deny"}))
