"""Argument schemas as a rule writer uses them: which properties count as checked
(``additionalProperties``, ``unevaluatedProperties``), and what a blocked call is told
(proxy/policy/argschema.py). Regex meaning against Node is test_argschema_ecma.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.policy.decide import Basis, ToolCall, Verdict, decide
from proxy.policy.limits import Counters
from proxy.policy.model import Rule, parse_policy


def _policy(arguments: Any):
    return parse_policy(
        json.dumps({"version": "1", "default": "deny", "tools": {"t": {"arguments": arguments}}})
    )


def _rule(arguments: Any) -> Rule:
    return _policy(arguments).rules[0]


def _messages(arguments: Any, call: dict[str, Any]) -> list[str]:
    return [error.message for error in _rule(arguments).argument_errors(call)]


def test_additional_properties_false_names_every_unexpected_property():
    closed = {"properties": {"path": {"type": "string"}}, "additionalProperties": False}
    assert _messages(closed, {"path": "/tmp/x"}) == []
    assert _messages(closed, {"path": "/tmp/x", "force": True}) == [
        "Additional properties are not allowed ('force' was unexpected)"
    ]
    assert _messages(closed, {"recursive": True, "path": "/", "force": True}) == [
        "Additional properties are not allowed ('force', 'recursive' were unexpected)"
    ]
    decision = decide(
        _policy(closed), ToolCall("fs", "t", {"path": "/", "force": True}), Counters(), 0.0
    )
    assert decision.verdict is Verdict.DENY
    assert decision.basis is Basis.ARGUMENTS
    assert decision.reason == (
        "arguments rejected at $: Additional properties are not allowed ('force' was "
        "unexpected) (constraint: additionalProperties)"
    )


def test_unevaluated_properties_false_allows_only_what_properties_name():
    schema = {"properties": {"path": {"type": "string"}}, "unevaluatedProperties": False}
    assert _messages(schema, {"path": "/tmp/x"}) == []
    assert _messages(schema, {"path": "/tmp/x", "mode": "w", "force": True}) == [
        "Unevaluated properties are not allowed ('force', 'mode' were unexpected)"
    ]


def test_unevaluated_properties_as_a_schema_checks_the_properties_left_over():
    schema = {
        "properties": {"count": {"type": "integer"}},
        "unevaluatedProperties": {"type": "string"},
    }
    assert _messages(schema, {"count": 1, "note": "fine", "tag": "x"}) == []
    assert _messages(schema, {"count": 1, "note": 5, "tag": "x", "level": 2}) == [
        "Unevaluated properties are not valid under the given schema ('note', 'level' were "
        "unevaluated and invalid)"
    ]


def test_a_boolean_branch_evaluates_no_property():
    # allOf: [true] passes everything but names nothing: the property is still unevaluated
    schema = {"allOf": [True], "unevaluatedProperties": False}
    assert _messages(schema, {}) == []
    assert _messages(schema, {"x": 1}) == [
        "Unevaluated properties are not allowed ('x' was unexpected)"
    ]


def test_a_failing_branch_evaluates_none_of_its_properties():
    schema = {
        "anyOf": [
            {"properties": {"mode": {"const": "read"}}, "required": ["mode"]},
            {"properties": {"path": {"type": "string"}}},
        ],
        "unevaluatedProperties": False,
    }
    assert _messages(schema, {"mode": "read", "path": "/x"}) == []
    # the first branch fails, so "mode" counts as unevaluated though the anyOf passes
    assert _messages(schema, {"mode": "write", "path": "/x"}) == [
        "Unevaluated properties are not allowed ('mode' was unexpected)"
    ]


def test_dependent_schemas_evaluate_their_properties_only_when_the_trigger_is_present():
    schema = {
        "properties": {"recursive": {"type": "boolean"}},
        "dependentSchemas": {"recursive": {"properties": {"depth": {"type": "integer"}}}},
        "unevaluatedProperties": False,
    }
    assert _messages(schema, {"recursive": True, "depth": 2}) == []
    assert _messages(schema, {"depth": 2}) == [
        "Unevaluated properties are not allowed ('depth' was unexpected)"
    ]


IF_THEN_ELSE = {
    "properties": {"kind": {"enum": ["file", "web"]}},
    "if": {"properties": {"kind": {"const": "file"}}},
    "then": {"properties": {"path": {"type": "string"}}},
    "else": {"properties": {"url": {"type": "string"}}},
    "unevaluatedProperties": False,
}


@pytest.mark.parametrize(
    ("call", "unexpected"),
    [
        ({"kind": "file", "path": "/x"}, None),
        ({"kind": "file", "url": "https://x.test"}, "url"),
        ({"kind": "web", "url": "https://x.test"}, None),
        ({"kind": "web", "path": "/x"}, "path"),
    ],
)
def test_if_then_else_evaluate_the_properties_of_the_branch_taken(call, unexpected):
    expected = (
        []
        if unexpected is None
        else [f"Unevaluated properties are not allowed ({unexpected!r} was unexpected)"]
    )
    assert _messages(IF_THEN_ELSE, call) == expected


def test_if_without_then_or_else_evaluates_what_if_itself_names():
    schema = {"if": {"properties": {"dry_run": {"const": True}}}, "unevaluatedProperties": False}
    assert _messages(schema, {"dry_run": True}) == []  # if passes: it evaluated dry_run
    # if fails and there is no else: nothing is evaluated
    assert _messages(schema, {"dry_run": False}) == [
        "Unevaluated properties are not allowed ('dry_run' was unexpected)"
    ]


def test_format_regex_checks_strings_and_leaves_other_types_to_type():
    schema = {"properties": {"filter": {"format": "regex"}}}
    assert _messages(schema, {"filter": "^ok$"}) == []
    assert _messages(schema, {"filter": "(unclosed"}) == ["'(unclosed' is not a 'regex'"]
    assert _messages(schema, {"filter": 5}) == []  # format says nothing about a number
    typed = {"properties": {"filter": {"type": "string", "format": "regex"}}}
    assert _messages(typed, {"filter": 5}) == ["5 is not of type 'string'"]


@pytest.mark.parametrize(
    ("schema", "keys"),
    [
        (True, frozenset()),
        (False, frozenset()),
        ({}, frozenset()),
        ({"properties": {"path": {"pattern": "^/tmp/"}}}, {"path"}),
        ({"type": "object", "required": ["mode"], "properties": {"path": {}}}, {"path", "mode"}),
        ({"properties": {"p": {"$ref": "#/$defs/d"}}, "$defs": {"d": {}}, "x-note": 1}, {"p"}),
        ({"properties": {"p": {}}, "additionalProperties": False}, None),  # every key
        ({"properties": {"p": {}}, "unevaluatedProperties": False}, None),
        ({"patternProperties": {"^p": {}}}, None),
        ({"minProperties": 2}, None),
        ({"propertyNames": {"maxLength": 3}}, None),
        ({"allOf": [{"properties": {"p": {}}}]}, None),
        ({"$ref": "#/$defs/d", "$defs": {"d": {}}}, None),
        ({"type": "array"}, None),
        ({"enum": [{}]}, None),
    ],
)
def test_keys_read_names_the_properties_a_schema_looks_at_or_none(
    schema: Any, keys: frozenset[str] | None
) -> None:
    from proxy.policy.argschema import keys_read

    assert keys_read(schema) == keys
