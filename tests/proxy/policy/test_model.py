"""policy.json: every field of POLICY.md, and every way a file can be wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from proxy.policy.model import (
    MAX_POLICY_BYTES,
    Action,
    Case,
    Limit,
    PinningSettings,
    PolicyError,
    Scope,
    SecretsMode,
    default_policy,
    load_policy,
    parse_policy,
    policy_schema,
    read_policy_bytes,
)

# The example of the policy design (POLICY.md), verbatim.
POLICY_MD_EXAMPLE = (
    Path(__file__).resolve().parents[2] / "data" / "policy-md-example.json"
).read_text()


def policy_text(tools: dict | None = None, **top) -> str:
    document = {"version": "1", **top}
    if tools is not None:
        document["tools"] = tools
    return json.dumps(document, indent=2)


def test_policy_md_example_loads_as_written():
    policy = parse_policy(POLICY_MD_EXAMPLE)
    assert policy.default is Action.ASK
    by_pattern = {r.pattern.text: r for r in policy.rules}
    assert list(by_pattern) == [
        "python_test",
        "python_build",
        "devtools/git_*",
        "*delete*",
        "filesystem/write_file",
        "fetch",
    ]
    assert by_pattern["python_test"].action is Action.ALLOW  # a rule without action allows
    assert by_pattern["python_test"].limits == (Limit("python_test_rate", 60.0, 10, Scope.GRANT),)
    assert by_pattern["python_build"].action is Action.DENY
    assert by_pattern["python_build"].reason == "Builds run in CI, not from the agent."
    assert by_pattern["*delete*"].approval_timeout == 60.0
    assert by_pattern["filesystem/write_file"].arguments is not None
    # rate_limit shorthand: counter named after the pattern, scope grant
    assert by_pattern["fetch"].limits == (Limit("fetch", 60.0, 30, Scope.GRANT),)


@pytest.mark.parametrize(
    ("rule", "check"),
    [
        ({}, lambda r: r.action is Action.ALLOW),
        ({"action": "allow"}, lambda r: r.action is Action.ALLOW),
        ({"action": "deny"}, lambda r: r.action is Action.DENY),
        ({"action": "ask"}, lambda r: r.action is Action.ASK),
        ({"action": "require_approval"}, lambda r: r.action is Action.ASK),
        # no timeout written: None, so the gateway's own default (a setting) applies
        ({"action": "ask"}, lambda r: r.approval_timeout is None),
        ({"action": "ask", "approval": {"timeout": 0.5}}, lambda r: r.approval_timeout == 0.5),
        ({"action": "ask", "approval": {}}, lambda r: r.approval_timeout is None),
        ({"action": "ask", "approval": {"timeout": 30}}, lambda r: r.approval_timeout == 30.0),
        ({}, lambda r: r.cases == ()),
        ({"reason": "why"}, lambda r: r.reason == "why"),
        ({"description": "notes"}, lambda r: r.description == "notes"),
        ({"action": "deny", "hide": True}, lambda r: r.hide),
        ({"action": "deny", "hide": False}, lambda r: not r.hide),
        ({"limits": []}, lambda r: r.limits == ()),
        (
            {"limits": [{"counter": "c", "window": "second", "max": 1}]},
            lambda r: r.limits[0].window == 1.0,
        ),
        (
            {"limits": [{"counter": "c", "window": "hour", "max": 1}]},
            lambda r: r.limits[0].window == 3600.0,
        ),
        (
            {"limits": [{"counter": "c", "window": "day", "max": 1}]},
            lambda r: r.limits[0].window == 86400.0,
        ),
        (
            {"limits": [{"counter": "c", "window": 2.5, "max": 0}]},
            lambda r: r.limits[0] == Limit("c", 2.5, 0, Scope.GRANT),
        ),
        (
            {"limits": [{"counter": "c", "window": 10, "max": 3, "scope": "global"}]},
            lambda r: r.limits[0].scope is Scope.GLOBAL,
        ),
        (
            {"rate_limit": {"max": 5, "window": "minute", "scope": "global"}},
            lambda r: r.limits == (Limit("t", 60.0, 5, Scope.GLOBAL),),
        ),
        (
            {
                "limits": [{"counter": "a", "window": 1, "max": 1}],
                "rate_limit": {"max": 2, "window": 2},
            },
            lambda r: [lim.counter for lim in r.limits] == ["a", "t"],
        ),
        ({"arguments": True}, lambda r: r.arguments is True),
        ({"arguments": {"type": "object"}}, lambda r: r.arguments == {"type": "object"}),
    ],
)
def test_rule_fields(rule, check):
    policy = parse_policy(policy_text({"t": rule}))
    assert check(policy.rules[0])


@pytest.mark.parametrize(
    ("top", "default"),
    [
        ({"default": "allow"}, Action.ALLOW),
        ({"default": "deny"}, Action.DENY),
        ({"default": "ask"}, Action.ASK),
        ({"default": "require_approval"}, Action.ASK),
        ({}, Action.ASK),  # no default written: ask, the fail-closed choice
    ],
)
def test_default(top, default):
    assert parse_policy(policy_text(**top)).default is default


def test_schema_and_description_fields_are_allowed():
    top = {"$schema": "./policy.schema.json", "description": "mine"}
    policy = parse_policy(policy_text(None, **top))
    assert policy.description == "mine"


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "policy.json"
    path.write_bytes(b"\xef\xbb\xbf" + policy_text().encode())
    assert load_policy(path).version == "1"


# -- errors -------------------------------------------------------------------------------


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.json")
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the example from the issue: a typo in a field name, with its JSON path
        (
            '{"version": "1", "tools": {"python_test": {"limits": [\n'
            '  {"counter": "c", "windw": 60, "max": 1}]}}}',
            [
                'policy.json:2:20: tools."python_test".limits[0].windw: unknown field '
                "(did you mean 'window'?); fields here: counter, max, scope, window",
                "policy.json:2:3: tools.\"python_test\".limits[0]: 'window' is required",
            ],
        ),
        (
            '{"version": "1", "tool": {}}',
            [
                "policy.json:1:18: tool: unknown field (did you mean 'tools'?); fields here: "
                "$schema, default, description, pinning, results, tools, version"
            ],
        ),
        (
            '{"version": "2"}',
            ['policy.json:1:13: version: unsupported version; supported versions: "1"; got "2"'],
        ),
        (
            '{"version": 1}',
            ['policy.json:1:13: version: unsupported version; supported versions: "1"; got 1'],
        ),
        (
            "{}",
            ["policy.json:1:1: (the whole file): 'version' is required; supported versions: \"1\""],
        ),
        (
            "[]",
            ['policy.json:1:1: (the whole file): a policy is a JSON object: {"version": "1", ...}'],
        ),
        (
            '{"version": "1", "default": "block"}',
            ['policy.json:1:29: default: must be "allow", "deny" or "ask"; got "block"'],
        ),
        ('{"version": "1", "tools": []}', ["policy.json:1:27: tools: must be an object; got []"]),
        (
            '{"version": "1", "tools": {"t": "deny"}}',
            ['policy.json:1:33: tools."t": must be an object; got "deny"'],
        ),
        (
            '{"version": "1", "tools": {"t": {"action": "block"}}}',
            [
                'policy.json:1:44: tools."t".action: must be "allow", "deny", "ask" or '
                '"require_approval"; got "block"'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"reason": 5}}}',
            ['policy.json:1:44: tools."t".reason: must be a string; got 5'],
        ),
        (
            '{"version": "1", "tools": {"t": {"hide": "yes"}}}',
            ['policy.json:1:42: tools."t".hide: must be a boolean; got "yes"'],
        ),
        (
            '{"version": "1", "tools": {"t": {"limits": {}}}}',
            ['policy.json:1:44: tools."t".limits: must be an array; got {}'],
        ),
        (
            '{"version": "1", "tools": {"t": {"limits": [{"window": 1, "max": 1}]}}}',
            ["policy.json:1:45: tools.\"t\".limits[0]: 'counter' is required"],
        ),
        (
            '{"version": "1", "tools": {"t": {"limits": [{"counter": "", "window": 1, "max": 1}]}}}',
            ["policy.json:1:57: tools.\"t\".limits[0].counter: '' should be non-empty"],
        ),
        (
            '{"version": "1", "tools": {"t": {"rate_limit": {"max": 1, "window": "week"}}}}',
            [
                'policy.json:1:69: tools."t".rate_limit.window: must be "second", "minute", "hour", '
                '"day" or a number of seconds from 0.001 to 31536000 (a year); got "week"'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"rate_limit": {"max": 1, "window": 0}}}}',
            [
                'policy.json:1:69: tools."t".rate_limit.window: must be "second", "minute", "hour", '
                '"day" or a number of seconds from 0.001 to 31536000 (a year); got 0'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"rate_limit": {"max": -1, "window": 1}}}}',
            [
                'policy.json:1:56: tools."t".rate_limit.max: must be a whole number, 0 or more; '
                "got -1"
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"rate_limit": {"max": 1.5, "window": 1}}}}',
            [
                'policy.json:1:56: tools."t".rate_limit.max: must be a whole number, 0 or more; '
                "got 1.5"
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"rate_limit": {"max": 1}}}}',
            ["policy.json:1:48: tools.\"t\".rate_limit: 'window' is required"],
        ),
        (
            '{"version": "1", "tools": {"t": {"rate_limit": {"max": 1, "window": 1, "counter": "x"}}}}',
            [
                'policy.json:1:72: tools."t".rate_limit.counter: unknown field; fields here: max, '
                "scope, window"
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"limits": [{"counter": "c", "window": 1, "max": 1, '
            '"scope": "user"}]}}}',
            [
                'policy.json:1:94: tools."t".limits[0].scope: must be "grant" or "global"; '
                'got "user"'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"action": "ask", "approval": {"timeout": 0}}}}',
            [
                'policy.json:1:75: tools."t".approval.timeout: must be a number of seconds, above 0 '
                "and at most 86400; got 0"
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"action": "ask", "approval": {"timeot": 5}}}}',
            [
                'policy.json:1:64: tools."t".approval.timeot: unknown field (did you mean '
                "'timeout'?); fields here: timeout"
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"arguments": 5}}}',
            ['policy.json:1:47: tools."t".arguments: must be an object or boolean; got 5'],
        ),
        (
            '{"version": "1", "tools": {"": {}}}',
            ['policy.json:1:27: tools: a tool pattern must not be empty; got ""'],
        ),
    ],
)
def test_schema_errors_name_line_column_and_path(text, expected):
    assert errors_of(text) == sorted(expected, key=_position)


def _position(line: str) -> tuple[int, int]:
    _, row, col, _ = line.split(":", 3)
    return int(row), int(col)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"/x": {}}, "tools.\"/x\": the server part (before '/') is empty"),
        ({"x/": {}}, "tools.\"x/\": the tool part (after '/') is empty"),
        ({" x": {}}, 'tools." x": a tool pattern must not start or end with spaces'),
        (
            {"t": {"action": "allow", "hide": True}},
            'tools."t".hide: hides the tool, so it needs action "deny"',
        ),
        (
            {"t": {"action": "ask", "hide": True}},
            'tools."t".hide: hides the tool, so it needs action "deny"',
        ),
        (
            {"t": {"approval": {"timeout": 1}}},
            'tools."t".approval: this rule has no action, so it allows every call; add '
            '"action": "ask"',
        ),
        (
            {"t": {"arguments": {"type": "objekt"}}},
            'tools."t".arguments.type: not a valid JSON Schema (draft 2020-12)',
        ),
        (
            {"t": {"arguments": {"properties": {"p": {"minLength": -1}}}}},
            'tools."t".arguments.properties.p.minLength: not a valid JSON Schema (draft 2020-12)',
        ),
    ],
)
def test_semantic_errors(rule, expected):
    lines = errors_of(policy_text(rule))
    assert len(lines) == 1
    assert expected in lines[0]
    assert lines[0].startswith("policy.json:")  # with a line number
    _position(lines[0])


@pytest.mark.parametrize(
    "rule",
    [
        {"action": "deny", "rate_limit": {"max": 1, "window": 1}},
        {"action": "deny", "limits": [{"counter": "c", "window": 1, "max": 1}]},
        {"action": "deny", "arguments": {"required": ["x"]}},
        {"action": "deny", "approval": {"timeout": 5}},
        {"action": "allow", "approval": {"timeout": 5}},
    ],
)
def test_fields_the_action_does_not_use_are_kept_for_when_it_changes_back(rule):
    # The app keeps every field when a click changes a rule's action; switching back
    # restores them, so a dormant field is valid, not an error.
    parsed = parse_policy(policy_text({"t": rule})).rules[0]
    assert parsed.action.value == rule["action"]


# -- cases ("when") ----------------------------------------------------------------------


def test_cases_are_parsed_in_order_with_every_field():
    rule = parse_policy(
        policy_text(
            {
                "git/push": {
                    "action": "deny",
                    "approval": {"timeout": 9},
                    "when": [
                        {"clients": ["cursor", "claude-code"], "action": "allow"},
                        {
                            "arguments": {"properties": {"force": {"const": False}}},
                            "action": "require_approval",
                            "reason": "pushing needs a look",
                            "approval": {"timeout": 30},
                        },
                        {"clients": ["local"], "arguments": True, "action": "ask"},
                    ],
                }
            }
        )
    ).rules[0]
    first, second, third = rule.cases
    assert isinstance(first, Case)
    assert [c.index for c in rule.cases] == [0, 1, 2]
    assert (first.action, first.clients, first.arguments) == (
        Action.ALLOW,
        frozenset({"cursor", "claude-code"}),
        None,
    )
    assert (first.reason, first.approval_timeout) == (None, None)  # not written: inherited
    assert second.action is Action.ASK  # the synonym, as for a rule
    assert second.clients is None  # any client
    assert second.arguments == {"properties": {"force": {"const": False}}}
    assert (second.reason, second.approval_timeout) == ("pushing needs a look", 30.0)
    assert third.clients == frozenset({"local"})
    assert rule.approval_timeout == 9.0


def test_a_case_checks_its_client_and_its_arguments_as_conditions():
    rule = parse_policy(
        policy_text(
            {
                "t": {
                    "when": [
                        {
                            "clients": ["cursor"],
                            "arguments": {"required": ["path"]},
                            "action": "deny",
                        }
                    ]
                }
            }
        )
    ).rules[0]
    (case,) = rule.cases
    assert case.holds_for_client("cursor")
    assert not case.holds_for_client("claude-code")
    assert not case.holds_for_client("Cursor")  # names are exact
    assert case.arguments_match({"path": "/"})
    assert not case.arguments_match({})  # no block: the case just does not hold


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"version": "1", "tools": {"t": {"when": [{"action": "allow"}]}}}',
            [
                'policy.json:1:43: tools."t".when[0]: a case needs "clients" or "arguments" (or '
                "both) to say which calls it is for; for every call, set the rule's own action; "
                'got {"action": "allow"}'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": [{"clients": ["a"], "action": "allow", '
            '"clinets": ["b"]}]}}}',
            [
                'policy.json:1:81: tools."t".when[0].clinets: unknown field (did you mean '
                "'clients'?); fields here: action, approval, arguments, clients, reason"
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": [{"clients": ["cursor"]}]}}}',
            ["policy.json:1:43: tools.\"t\".when[0]: 'action' is required"],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": [{"clients": [], "action": "allow"}]}}}',
            [
                'policy.json:1:55: tools."t".when[0].clients: must be a list of at least one '
                'client name, such as ["cursor"]; got []'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": [{"clients": "cursor", "action": "allow"}]}}}',
            [
                'policy.json:1:55: tools."t".when[0].clients: must be a list of at least one '
                'client name, such as ["cursor"]; got "cursor"'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": [{"clients": [""], "action": "allow"}]}}}',
            [
                'policy.json:1:56: tools."t".when[0].clients[0]: must be a client name, such as '
                '"cursor"; got ""'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": [{"clients": ["a"], "action": "block"}]}}}',
            [
                'policy.json:1:72: tools."t".when[0].action: must be "allow", "deny", "ask" or '
                '"require_approval"; got "block"'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": [{"clients": ["a"], "action": "ask", '
            '"approval": {"timeout": 0}}]}}}',
            [
                'policy.json:1:103: tools."t".when[0].approval.timeout: must be a number of '
                "seconds, above 0 and at most 86400; got 0"
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": [{"arguments": 5, "action": "allow"}]}}}',
            ['policy.json:1:57: tools."t".when[0].arguments: must be an object or boolean; got 5'],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": []}}}',
            [
                'policy.json:1:42: tools."t".when: must be a list of at least one case, such as '
                '[{"clients": ["cursor"], "action": "allow"}]; got []'
            ],
        ),
        (
            '{"version": "1", "tools": {"t": {"when": ["cursor"]}}}',
            ['policy.json:1:43: tools."t".when[0]: must be an object; got "cursor"'],
        ),
        (
            '{"version": "1", "tools": {"t": {"wen": []}}}',
            [
                "policy.json:1:34: tools.\"t\".wen: unknown field (did you mean 'when'?); fields "
                "here: action, approval, arguments, description, hide, limits, rate_limit, "
                "reason, results, timeout, when"
            ],
        ),
    ],
)
def test_case_errors_name_line_column_and_path(text, expected):
    assert errors_of(text) == expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"action": "deny", "hide": True, "when": [{"clients": ["cursor"], "action": "allow"}]},
            'tools."t".when: a hidden tool is hidden from every client, so no case can show it '
            'to some of them; remove "hide" (the tool is then listed, and denied unless a case '
            'allows it) or remove "when"',
        ),
        (
            {"when": [{"arguments": {"type": "objekt"}, "action": "allow"}]},
            'tools."t".when[0].arguments.type: not a valid JSON Schema (draft 2020-12)',
        ),
        (
            {
                "when": [
                    {"clients": ["a"], "action": "allow"},
                    {"arguments": {"patern": "^x"}, "action": "deny"},
                ]
            },
            'tools."t".when[1].arguments.patern: unknown JSON Schema keyword (did you mean '
            "'pattern'?)",
        ),
    ],
)
def test_case_semantic_errors(rule, expected):
    lines = errors_of(policy_text({"t": rule}))
    assert len(lines) == 1
    assert expected in lines[0]
    _position(lines[0])  # with a line and column


def test_hide_false_with_cases_is_fine():
    rule = {"action": "deny", "hide": False, "when": [{"clients": ["a"], "action": "allow"}]}
    parsed = parse_policy(policy_text({"t": rule})).rules[0]
    assert not parsed.hides
    assert len(parsed.cases) == 1


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant):
    text = '{"version": "1", "tools": {"t": {"rate_limit": {"max": 1, "window": WINDOW}}}}'
    text = text.replace("WINDOW", constant)
    assert errors_of(text) == [
        f"policy.json: (the whole file): not valid JSON: {constant} is not a JSON number"
    ]


def test_every_problem_is_reported_at_once_and_nothing_is_half_applied():
    text = policy_text(
        {
            "good": {"action": "deny"},
            "bad1": {"actoin": "deny"},
            "bad2": {"action": "allow", "hide": True},
            "bad3": {"rate_limit": {"max": "ten", "window": 60}},
        }
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.json")
    messages = [issue.message for issue in info.value.issues]
    assert any("unknown field" in m for m in messages)
    assert any("whole number" in m for m in messages)
    # semantic checks run once the shape is right; the shape errors come first
    assert len(info.value.issues) == 2


def test_semantic_errors_are_all_reported():
    text = policy_text(
        {
            "a": {"action": "allow", "hide": True},
            "b/": {},
            "c": {"approval": {"timeout": 3}},
        }
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert [i.path for i in info.value.issues] == [
        ("tools", "a", "hide"),
        ("tools", "b/"),
        ("tools", "c", "approval"),
    ]
    assert [i.line for i in info.value.issues] == [6, 8, 10]


def test_invalid_json_names_line_and_column():
    lines = errors_of('{\n  "version": "1",\n  "default": "ask",\n}\n')
    assert lines == [
        "policy.json:4:1: (the whole file): not valid JSON: Expecting property name "
        "enclosed in double quotes"
    ]


def test_duplicate_keys_are_errors_not_silently_dropped():
    text = '{"version": "1", "tools": {\n "t": {"action": "deny"},\n "t": {"action": "allow"}}}'
    assert errors_of(text) == [
        "policy.json:3:2: tools.\"t\": duplicate key 't': JSON keeps only the last one"
    ]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b'{"version": "1", "description": "\xff"}'), "not UTF-8"),
        (lambda p: p.write_bytes(b" " * (MAX_POLICY_BYTES + 1)), "over the limit of"),
    ],
)
def test_file_errors(tmp_path, setup, expected):
    path = tmp_path / "policy.json"
    setup(path)
    with pytest.raises(PolicyError, match=expected) as info:
        load_policy(path)
    assert info.value.source == str(path)


def test_unreadable_file():
    # Reading /proc/self/mem from offset 0 fails with EIO, also for root (CI runs as root,
    # where a chmod 0 file would still be readable).
    with pytest.raises(PolicyError, match="cannot read: Input/output error"):
        load_policy("/proc/self/mem")


# -- shipped files ------------------------------------------------------------------------


def test_shipped_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(policy_schema())


def test_default_policy_is_valid_documented_and_fails_closed():
    policy = default_policy()
    assert policy.default is Action.ASK
    assert policy.description
    assert all(rule.action is not Action.ALLOW for rule in policy.rules)


def test_default_policy_names_the_schema_that_ships_beside_it():
    resources = Path(__file__).resolve().parents[3] / "resources"
    default = json.loads((resources / "default-policy.json").read_text())
    assert (resources / default["$schema"]).is_file()


def test_policy_md_example_passes_the_shipped_schema():
    jsonschema.Draft202012Validator(policy_schema()).validate(json.loads(POLICY_MD_EXAMPLE))


def test_rule_for_uses_the_specificity_order_and_candidates_lists_all():
    policy = parse_policy(POLICY_MD_EXAMPLE)
    scoped = policy.rule_for("devtools", "git_delete")
    assert scoped is not None
    assert scoped.pattern.text == "devtools/git_*"
    assert [r.pattern.text for r in policy.candidates("devtools", "git_delete")] == [
        "devtools/git_*",
        "*delete*",
    ]
    glob = policy.rule_for("other", "git_delete")
    assert glob is not None
    assert glob.pattern.text == "*delete*"
    assert policy.rule_for("other", "nothing") is None


def test_resolve_cache_is_bounded():
    policy = parse_policy(policy_text({"*x*": {}}))
    for i in range(10_000):
        policy.rule_for("s", f"tool{i}")
    assert len(policy._cache) <= 4096


# -- arguments schemas are security controls ----------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "path", "message"),
    [
        (
            {"$ref": "https://schemas.example/allow-all.json"},
            ("$ref",),
            "only references inside this schema (#/...) are allowed; Lockgate never fetches",
        ),
        (
            {"properties": {"p": {"$ref": "other.json#/x"}}},
            ("properties", "p", "$ref"),
            "only references inside this schema",
        ),
        ({"$ref": "#/$defs/missing"}, ("$ref",), "$ref '#/$defs/missing' points at nothing"),
        ({"$id": "https://x.test/s", "type": "object"}, ("$id",), "$id is not supported"),
        ({"$dynamicRef": "#x"}, ("$dynamicRef",), "$dynamicRef is not supported"),
        ({"definitions": {}}, ("definitions",), "use $defs"),
        (
            {"properties": {"path": {"type": "string", "patern": "^/tmp/"}}},
            ("properties", "path", "patern"),
            "unknown JSON Schema keyword (did you mean 'pattern'?)",
        ),
        ({"requried": ["path"]}, ("requried",), "did you mean 'required'?"),
        ({"Properties": {}}, ("Properties",), "did you mean 'properties'?"),
        (
            {"allOf": [{"type": "object"}, {"maxProperty": 3}]},
            ("allOf", 1, "maxProperty"),
            "unknown JSON Schema keyword",
        ),
        (
            {
                "properties": {
                    "p": {"$schema": "http://json-schema.org/draft-04/schema#", "const": "/safe"}
                }
            },
            ("properties", "p", "$schema"),
            "belongs at the top of the schema only",
        ),
        (
            {"$schema": "http://json-schema.org/draft-04/schema#"},
            ("$schema",),
            "another dialect would switch keywords off",
        ),
        (
            {"properties": {"u": {"format": "url"}}},
            ("properties", "u", "format"),
            "format 'url' cannot be checked; known formats:",
        ),
        ({"allOf": [{"$ref": "#"}]}, (), "refers to itself without end"),
        (
            {"properties": {"p": {"pattern": "(unclosed"}}},
            ("properties", "p", "pattern"),
            "not a valid regex (ECMA-262): ",
        ),
        (
            {"patternProperties": {"(?i)^ls$": {}}},
            ("patternProperties", "(?i)^ls$"),
            "not a valid regex (ECMA-262): Invalid group modifier",
        ),
    ],
)
def test_arguments_schema_is_checked_hard(arguments, path, message):
    with pytest.raises(PolicyError) as info:
        parse_policy(policy_text({"t": {"arguments": arguments}}), "p.json")
    issues = [i for i in info.value.issues if i.path == ("tools", "t", "arguments", *path)]
    assert issues, str(info.value)
    assert message in issues[0].message
    assert issues[0].line is not None


@pytest.mark.parametrize(
    "arguments",
    [
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
        {"$defs": {"p": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/p"}}},
        {
            "$defs": {
                "n": {"$anchor": "node", "properties": {"kids": {"items": {"$ref": "#node"}}}}
            },
            "$ref": "#/$defs/n",
        },
        {
            "properties": {"u": {"format": "uri"}, "d": {"format": "date-time"}},
            "x-note": "people's own annotations are fine",
        },
        {"title": "t", "description": "d", "examples": [{}], "default": {}, "deprecated": False},
    ],
)
def test_arguments_schema_features_that_are_allowed(arguments):
    parse_policy(policy_text({"t": {"arguments": arguments}}))


def test_formats_beyond_the_basic_ones_are_really_checked():
    p = parse_policy(
        policy_text(
            {
                "t": {
                    "arguments": {
                        "properties": {"u": {"format": "uri"}, "when": {"format": "date-time"}}
                    }
                }
            }
        )
    )
    rule = p.rules[0]
    assert rule.argument_errors({"u": "https://x.test/a", "when": "2026-11-21T10:00:00Z"}) == []
    assert len(rule.argument_errors({"u": "not a uri", "when": "yesterday"})) == 2


# -- hostile files ------------------------------------------------------------------------


def test_deep_nesting_is_refused_before_any_parser_recurses():
    text = '{"version": "1", "description": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = errors_of(text)
    assert lines == ["policy.json:1:96: (the whole file): nested more than 64 levels deep"]


def test_deep_nesting_inside_an_arguments_schema_is_refused():
    schema: dict = {}
    node = schema
    for _ in range(200):
        node["not"] = {}
        node = node["not"]
    assert (
        "nested more than 64 levels deep" in errors_of(policy_text({"t": {"arguments": schema}}))[0]
    )


def test_huge_integers_are_an_error_not_a_crash():
    lines = errors_of(
        '{"version": "1", "tools": {"t": {"rate_limit": {"window": 1, "max": ' + "9" * 5000 + "}}}}"
    )
    assert len(lines) == 1
    assert "not valid JSON" in lines[0]


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "policy.json"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="is not a regular file"):
        load_policy(fifo)


def test_a_device_is_refused():
    with pytest.raises(PolicyError, match="is not a regular file"):
        load_policy("/dev/zero")


def test_the_first_problem_is_the_first_in_the_file():
    text = policy_text({"b": {"action": "allow", "hide": True}, "a/": {}})
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.json")
    first = info.value.first
    assert first is info.value.issues[0]
    assert first.path == ("tools", "b", "hide")
    assert first.render("policy.json") == str(info.value).splitlines()[0]
    assert (first.line, first.message) == (6, 'hides the tool, so it needs action "deny"')


def test_every_closed_object_of_the_schema_names_its_fields():
    """An unknown field is answered with the fields that are allowed there, so every
    object of policy.schema.json that admits no others must name some."""
    closed = []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("additionalProperties") is False:
                closed.append((where, sorted(node.get("properties", {}))))
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(policy_schema(), "#")
    assert closed
    assert [where for where, fields in closed if not fields] == []


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_policy_path_that_is_no_file_is_refused_without_leaking_a_descriptor(tmp_path, kind):
    path = tmp_path / "policy.json"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with pytest.raises(PolicyError):
            read_policy_bytes(path)
    assert len(os.listdir("/proc/self/fd")) == before


def test_results_pinning_and_timeout_are_read_with_their_defaults():
    bare = parse_policy('{"version": "1", "tools": {"t": {}}}')
    assert bare.secrets is SecretsMode.REDACT  # secrets in results: redacted unless told
    assert bare.pinning == PinningSettings("trust", "trust", "show")
    assert (bare.rules[0].timeout, bare.rules[0].secrets) == (None, None)
    assert bare.secrets_of("s", "t") is SecretsMode.REDACT
    policy = parse_policy(
        '{"version": "1", "results": {"secrets": "block"},'
        ' "pinning": {"new_tools": "quarantine", "findings": "quarantine"},'
        ' "tools": {"t": {"timeout": 2.5, "results": {"secrets": "ask"}}, "u": {}}}'
    )
    assert policy.pinning == PinningSettings("quarantine", "trust", "quarantine")
    t, _ = policy.rules
    assert (t.timeout, t.secrets) == (2.5, SecretsMode.ASK)
    assert policy.secrets_of("s", "t") is SecretsMode.ASK
    assert policy.secrets_of("s", "u") is SecretsMode.BLOCK
    assert policy.secrets_of("s", "other") is SecretsMode.BLOCK
    assert (policy.timeout_of("s", "t"), policy.timeout_of("s", "u")) == (2.5, None)
    # a result no rule is known for (a task's): the policy's, or the stricter layer's
    assert (bare.secrets_by_default, policy.secrets_by_default) == (
        SecretsMode.REDACT,
        SecretsMode.BLOCK,
    )
    assert bare.with_team(policy).secrets_by_default is SecretsMode.BLOCK
    assert policy.with_team(bare).secrets_by_default is SecretsMode.BLOCK


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"version": "1", "tools": {"t": {"timeout": 0}}}',
            'tools."t".timeout: must be a number of seconds, above 0 and at most 86400',
        ),
        (
            '{"version": "1", "results": {"secrets": "hide"}}',
            'results.secrets: must be "allow", "redact", "block" or "ask"',
        ),
        (
            '{"version": "1", "pinning": {"new_tools": "maybe"}}',
            'pinning.new_tools: must be "trust" or "quarantine"',
        ),
        (
            '{"version": "1", "pinning": {"findings": "block"}}',
            'pinning.findings: must be "show" or "quarantine"',
        ),
        (
            '{"version": "1", "pinning": {"new_tool": "trust"}}',
            "pinning.new_tool: unknown field",
        ),
    ],
)
def test_results_pinning_and_timeout_errors_say_what_is_wanted(text, expected):
    [error] = errors_of(text)
    assert expected in error
