"""The decision engine as tables: which rule decides, what it decides, and what the agent
is told."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.policy.decide import (
    Basis,
    Decision,
    Enforcer,
    ToolCall,
    Verdict,
    agent_message,
    decide,
    hidden_tools,
)
from proxy.policy.limits import CounterKey, Counters
from proxy.policy.model import parse_policy
from tests.proxy.policy.test_model import POLICY_MD_EXAMPLE

EXAMPLE = parse_policy(POLICY_MD_EXAMPLE)


@pytest.mark.parametrize(
    ("server", "tool", "arguments", "verdict", "basis", "rule", "reason"),
    [
        (
            "devtools",
            "python_test",
            {},
            Verdict.ALLOW,
            Basis.RULE,
            "python_test",
            "devtools/python_test is allowed by the policy",
        ),
        (
            "devtools",
            "python_build",
            {},
            Verdict.DENY,
            Basis.RULE,
            "python_build",
            "Builds run in CI, not from the agent.",
        ),
        ("devtools", "git_status", {}, Verdict.ALLOW, Basis.RULE, "devtools/git_*", None),
        # the scoped glob outranks the unscoped one, though both match
        ("devtools", "git_delete_branch", {}, Verdict.ALLOW, Basis.RULE, "devtools/git_*", None),
        (
            "github",
            "git_delete_branch",
            {},
            Verdict.ASK,
            Basis.RULE,
            "*delete*",
            "github/git_delete_branch needs a person's approval",
        ),
        (
            "other",
            "git_status",
            {},
            Verdict.ASK,
            Basis.DEFAULT,
            None,
            "no rule matches other/git_status; the policy's default is to ask a person",
        ),
        (
            "filesystem",
            "write_file",
            {"path": "/home/ann/projects/x.txt"},
            Verdict.ALLOW,
            Basis.RULE,
            "filesystem/write_file",
            None,
        ),
        (
            "filesystem",
            "write_file",
            {"path": "/etc/passwd"},
            Verdict.DENY,
            Basis.ARGUMENTS,
            "filesystem/write_file",
            "arguments rejected at $.path: '/etc/passwd' does not match '^/home/[^/]+/projects/' "
            "(constraint: properties/path/pattern)",
        ),
        (
            "filesystem",
            "write_file",
            {},
            Verdict.DENY,
            Basis.ARGUMENTS,
            "filesystem/write_file",
            "arguments rejected at $: 'path' is a required property (constraint: required)",
        ),
        (
            "filesystem",
            "write_file",
            {"path": 7, "extra": 1},
            Verdict.DENY,
            Basis.ARGUMENTS,
            "filesystem/write_file",
            "arguments rejected at $.path: 7 is not of type 'string' "
            "(constraint: properties/path/type)",
        ),
        # the exact tool rule applies on every server; the unscoped glob does not outrank it
        ("web", "fetch", {}, Verdict.ALLOW, Basis.RULE, "fetch", None),
        ("filesystem", "delete_file", {}, Verdict.ASK, Basis.RULE, "*delete*", None),
    ],
)
def test_policy_md_example(server, tool, arguments, verdict, basis, rule, reason):
    decision = decide(EXAMPLE, ToolCall(server, tool, arguments), Counters(), 0.0)
    assert (decision.verdict, decision.basis, decision.rule) == (verdict, basis, rule)
    if reason is not None:
        assert decision.reason == reason


def policy(tools: dict, default: str = "deny"):
    return parse_policy(json.dumps({"version": "1", "default": default, "tools": tools}))


SPECIFICITY = {
    "*": {"reason": "glob: nothing literal"},
    "*_file": {"reason": "glob: 5 literals"},
    "*delete*": {"reason": "glob: 6 literals, written first"},
    "delete*": {"reason": "glob: 6 literals, written second"},
    "fs/*": {"reason": "scoped glob"},
    "fs/delete_*": {"reason": "scoped glob, more literals"},
    "delete_file": {"reason": "exact tool"},
    "fs/delete_file": {"reason": "exact scoped"},
    "*/delete_file": {"reason": "glob over servers: 12 literals"},
}


@pytest.mark.parametrize(
    ("server", "tool", "winner"),
    [
        ("fs", "delete_file", "fs/delete_file"),
        ("web", "delete_file", "delete_file"),
        ("fs", "delete_dir", "fs/delete_*"),
        ("fs", "read_file", "fs/*"),
        ("web", "read_file", "*_file"),
        ("web", "undelete_dir", "*delete*"),  # tie on literals: the one written first
        ("web", "deletes", "*delete*"),
        ("web", "anything", "*"),
    ],
)
def test_specificity_order(server, tool, winner):
    decision = decide(policy(SPECIFICITY), ToolCall(server, tool), Counters(), 0.0)
    assert decision.rule == winner


def test_tie_goes_to_the_rule_written_first_whichever_it_is():
    rules: dict[str, dict[str, Any]] = {"*delete*": {}, "delete*": {}}
    reordered = dict(reversed(list(rules.items())))
    decision = decide(policy(reordered), ToolCall("s", "delete_x"), Counters(), 0.0)
    assert decision.rule == "delete*"


@pytest.mark.parametrize(
    ("default", "verdict", "timeout"),
    [("allow", Verdict.ALLOW, None), ("deny", Verdict.DENY, None), ("ask", Verdict.ASK, 120.0)],
)
def test_default_applies_when_no_rule_matches(default, verdict, timeout):
    decision = decide(policy({"x": {}}, default), ToolCall("s", "y"), Counters(), 0.0)
    assert (decision.verdict, decision.basis, decision.rule) == (verdict, Basis.DEFAULT, None)
    assert decision.approval_timeout == timeout


def test_hidden_tool_is_denied_and_flagged_hidden():
    decision = decide(
        policy({"secret": {"action": "deny", "hide": True}}),
        ToolCall("s", "secret"),
        Counters(),
        0.0,
    )
    assert decision.verdict is Verdict.DENY
    assert decision.hidden


def test_ask_carries_its_timeout_and_charges():
    p = policy(
        {"t": {"action": "ask", "approval": {"timeout": 5}, "rate_limit": {"max": 1, "window": 60}}}
    )
    decision = decide(p, ToolCall("s", "t"), Counters(), 0.0)
    assert decision.verdict is Verdict.ASK
    assert decision.approval_timeout == 5.0
    assert [k.counter for k in decision.charges] == ["t"]


def test_deny_wins_before_arguments_and_limits_are_looked_at():
    p = policy(
        {
            "t": {
                "action": "deny",
                "arguments": {"required": ["x"]},
                "rate_limit": {"max": 0, "window": 60},
            }
        }
    )
    assert decide(p, ToolCall("s", "t", {}), Counters(), 0.0).basis is Basis.RULE


def test_arguments_are_checked_before_limits():
    p = policy(
        {
            "t": {
                "action": "ask",
                "arguments": {"required": ["x"]},
                "rate_limit": {"max": 0, "window": 60},
            }
        }
    )
    assert decide(p, ToolCall("s", "t", {}), Counters(), 0.0).basis is Basis.ARGUMENTS
    assert decide(p, ToolCall("s", "t", {"x": 1}), Counters(), 0.0).basis is Basis.LIMIT


def test_a_person_is_never_asked_about_a_call_over_its_limit():
    p = policy({"t": {"action": "ask", "rate_limit": {"max": 0, "window": 60}}})
    decision = decide(p, ToolCall("s", "t"), Counters(), 0.0)
    assert decision.verdict is Verdict.DENY
    assert decision.basis is Basis.LIMIT


def test_decide_is_pure_it_never_charges():
    p = policy({"t": {"rate_limit": {"max": 1, "window": 60}}})
    counters = Counters()
    for _ in range(5):
        assert decide(p, ToolCall("s", "t"), counters, 0.0).verdict is Verdict.ALLOW
    assert len(counters) == 0


def test_rule_reason_is_kept_when_a_limit_or_arguments_block():
    p = policy(
        {
            "t": {
                "reason": "Be gentle.",
                "rate_limit": {"max": 0, "window": 60},
                "arguments": {"required": ["x"]},
            }
        }
    )
    by_args = decide(p, ToolCall("s", "t", {}), Counters(), 0.0)
    assert by_args.reason.startswith("Be gentle. (arguments rejected at $")
    by_limit = decide(p, ToolCall("s", "t", {"x": 1}), Counters(), 0.0)
    assert by_limit.reason == (
        "Be gentle. (rate limit reached: at most 0 calls per minute for this client (counter 't'))"
    )


def test_many_argument_errors_are_counted():
    p = policy({"t": {"arguments": {"required": ["a", "b", "c"]}}})
    decision = decide(p, ToolCall("s", "t", {}), Counters(), 0.0)
    assert decision.reason.endswith("; 2 more problems")


def test_argument_formats_are_asserted_not_just_annotations():
    # In 2020-12 "format" is only an annotation unless checked; a policy author writing it
    # means it as a constraint, so Lockgate checks the formats jsonschema can check.
    p = policy({"t": {"arguments": {"properties": {"ip": {"type": "string", "format": "ipv4"}}}}})
    ok = decide(p, ToolCall("s", "t", {"ip": "10.0.0.1"}), Counters(), 0)
    assert ok.verdict is Verdict.ALLOW
    bad = decide(p, ToolCall("s", "t", {"ip": "999.0.0.1"}), Counters(), 0)
    assert bad.verdict is Verdict.DENY
    assert "is not a 'ipv4'" in bad.reason


# -- what the agent reads -----------------------------------------------------------------


def test_agent_message_for_a_denied_call():
    call = ToolCall("devtools", "python_build")
    decision = decide(EXAMPLE, call, Counters(), 0.0)
    assert agent_message(call, decision, 0.0) == (
        "Lockgate's policy blocked this call to devtools/python_build: Builds run in CI, not "
        'from the agent. [rule "python_build"].'
    )


def test_agent_message_for_a_limit_says_when_to_retry():
    clock = [100.0]
    enforcer = Enforcer(EXAMPLE, lambda: clock[0])
    call = ToolCall("web", "fetch")
    for _ in range(30):
        enforcer.decide(call)
    clock[0] = 130.2
    decision = enforcer.decide(call)
    assert decision.basis is Basis.LIMIT
    message = agent_message(call, decision, clock[0])
    assert "at most 30 calls per minute for this client" in message
    assert message.endswith("Retry in 30 s or later.")


def test_agent_message_for_the_default():
    call = ToolCall("s", "t")
    decision = decide(policy({}), call, Counters(), 0.0)
    assert agent_message(call, decision, 0.0).endswith("[the policy's default].")


def test_agent_message_for_a_limit_of_zero():
    call = ToolCall("s", "t")
    decision = decide(policy({"t": {"rate_limit": {"max": 0, "window": 1}}}), call, Counters(), 0.0)
    assert agent_message(call, decision, 0.0).endswith("This limit allows no calls; do not retry.")


# -- approval -----------------------------------------------------------------------------


def test_release_charges_and_rechecks_limits():
    clock = [0.0]
    p = policy({"t": {"action": "ask", "rate_limit": {"max": 1, "window": 60}}})
    enforcer = Enforcer(p, lambda: clock[0])
    call = ToolCall("s", "t")
    first = enforcer.decide(call)
    second = enforcer.decide(call)
    assert first.verdict is second.verdict is Verdict.ASK  # nothing charged while asking
    released = enforcer.release(call)
    assert released.verdict is Verdict.ALLOW
    assert released.charged_at == 0.0
    late = enforcer.release(call)  # the budget went to the first
    assert late.verdict is Verdict.DENY
    assert late.basis is Basis.LIMIT


def test_a_released_call_is_decided_by_the_policy_in_force_then():
    """Issue 11, defect 1: a call approved after its tool was blocked must stay blocked."""
    p = policy({"t": {"action": "ask"}})
    enforcer = Enforcer(p, lambda: 0.0)
    call = ToolCall("s", "t")
    assert enforcer.decide(call).verdict is Verdict.ASK
    enforcer.swap_policy(policy({"t": {"action": "deny", "reason": "blocked by a click"}}))
    released = enforcer.release(call)
    assert released.verdict is Verdict.DENY
    assert released.reason == "blocked by a click"


def test_decision_as_dict_is_json_ready():
    decision = decide(EXAMPLE, ToolCall("devtools", "python_build"), Counters(), 0.0)
    data = json.loads(json.dumps(decision.as_dict()))
    assert data["decision"] == "deny"
    assert data["rule"] == "python_build"
    assert data["reason"] == "Builds run in CI, not from the agent."


# -- fail closed --------------------------------------------------------------------------


@pytest.mark.parametrize("asked_tool", ["denied", "bad_args", "limited"])
def test_a_person_cannot_release_what_the_policy_denies(asked_tool):
    p = policy(
        {
            "denied": {"action": "deny"},
            "bad_args": {"action": "ask", "arguments": {"required": ["x"]}},
            "limited": {"action": "ask", "rate_limit": {"max": 0, "window": 60}},
        }
    )
    enforcer = Enforcer(p, lambda: 0.0)
    call = ToolCall("s", asked_tool)
    decision = enforcer.decide(call)
    assert decision.verdict is Verdict.DENY
    assert enforcer.release(call) == decision


def test_release_under_a_new_policy_without_the_rule_follows_its_default():
    clock = [0.0]
    p = policy({"t": {"action": "ask", "rate_limit": {"max": 1, "window": 60}}})
    enforcer = Enforcer(p, lambda: clock[0])
    call = ToolCall("s", "t")
    enforcer.decide(call)
    enforcer.swap_policy(policy({"other": {}}, default="deny"))  # the rule is gone
    assert enforcer.release(call).verdict is Verdict.DENY
    enforcer.swap_policy(policy({"other": {}}, default="ask"))
    assert enforcer.release(call).verdict is Verdict.ALLOW  # asked, and a person approved


def test_a_refund_gives_the_budget_back():
    clock = [10.0]
    p = policy({"t": {"rate_limit": {"max": 1, "window": 60}}})
    enforcer = Enforcer(p, lambda: clock[0])
    call = ToolCall("s", "t")
    first = enforcer.decide(call)
    assert first.verdict is Verdict.ALLOW
    assert enforcer.decide(call).verdict is Verdict.DENY
    enforcer.refund(first)
    assert enforcer.decide(call).verdict is Verdict.ALLOW


def test_restored_charges_count():
    p = policy({"t": {"limits": [{"counter": "c", "max": 2, "window": 60}]}})
    enforcer = Enforcer(p, lambda: 100.0)
    enforcer.restore([(CounterKey("c", "local"), 60.0), (CounterKey("c", "local"), 50.0)])
    assert enforcer.decide(ToolCall("s", "t")).verdict is Verdict.DENY
    assert enforcer.decide(ToolCall("s", "t", client="other")).verdict is Verdict.ALLOW


@pytest.mark.parametrize("arguments", [None, [], "x", 5])
def test_arguments_that_are_not_an_object_are_denied(arguments):
    p = policy({"t": {}}, default="allow")
    decision = decide(p, ToolCall("s", "t", arguments), Counters(), 0.0)
    assert decision.verdict is Verdict.DENY
    assert "arguments must be a JSON object" in decision.reason


def test_a_schema_that_cannot_be_checked_denies():
    # A recursive schema the loader accepts (recursion bounded by the data) meets data
    # nested deeper than Python can recurse: the check fails, so the call is denied.
    p = policy(
        {
            "t": {
                "arguments": {
                    "$defs": {"n": {"properties": {"a": {"$ref": "#/$defs/n"}}}},
                    "$ref": "#/$defs/n",
                }
            }
        }
    )
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    decision = decide(p, ToolCall("s", "t", deep), Counters(), 0.0)
    assert decision.verdict is Verdict.DENY
    assert "arguments could not be checked" in decision.reason


def test_reasons_quoting_arguments_are_bounded():
    p = policy({"t": {"arguments": {"properties": {"p": {"maxLength": 3}}}}})
    decision = decide(p, ToolCall("s", "t", {"p": "x" * 100_000}), Counters(), 0.0)
    assert decision.verdict is Verdict.DENY
    assert len(decision.reason) < 600


@pytest.mark.parametrize(
    ("pattern", "value", "allowed"),
    [
        ("^ls$", "ls", True),
        ("^ls$", "ls\n", False),  # Python's $ would accept the trailing newline
        ("^[0-9]+$", "123", True),
        ("^\\d+$", "\u0661\u0662", False),  # Arabic-Indic digits: not ECMA \d
        ("^\\d+$", "12", True),
        ("^/home/[^/]+/projects/", "/home/ann/projects/x", True),
        ("[$]", "a$b", True),  # a $ inside a class is a literal dollar
        ("a\\$", "a$", True),  # an escaped $ is a literal dollar
    ],
)
def test_patterns_have_json_schema_meaning(pattern, value, allowed):
    p = policy({"t": {"arguments": {"properties": {"v": {"type": "string", "pattern": pattern}}}}})
    decision = decide(p, ToolCall("s", "t", {"v": value}), Counters(), 0.0)
    assert (decision.verdict is Verdict.ALLOW) is allowed


# -- what the gateway asks of the engine ----------------------------------------------------


def test_hidden_tools_are_exactly_those_a_hiding_deny_rule_matches():
    p = policy(
        {
            "fs/secret_*": {"action": "deny", "hide": True},
            "fs/secret_ok": {"action": "allow"},  # more specific: not hidden
            "delete_file": {"action": "deny"},  # denied but listed
        },
        default="allow",
    )
    names = ["secret_keys", "secret_ok", "delete_file", "read_file"]
    assert hidden_tools(p, "fs", names) == {"secret_keys"}
    assert hidden_tools(p, "web", names) == frozenset()  # the rule is scoped to fs
    decision = decide(p, ToolCall("fs", "secret_keys"), Counters(), 0.0)
    assert decision.hidden  # decide answers the same tools as unknown
    assert decision.blocked


def test_blocked_is_true_for_a_denial_only():
    p = policy({"a": {"action": "allow"}, "q": {"action": "ask"}, "d": {"action": "deny"}})
    blocked = {t: decide(p, ToolCall("s", t), Counters(), 0.0).blocked for t in "aqd"}
    assert blocked == {"a": False, "q": False, "d": True}


def test_agent_message_for_a_denial_by_lockgates_state():
    call = ToolCall("fs", "write_file")
    paused = Decision(Verdict.DENY, Basis.STATE, "Lockgate is paused", None)
    assert agent_message(call, paused, 0.0) == (
        "Lockgate blocked this call to fs/write_file: Lockgate is paused."
    )


def test_preview_says_what_decide_would_and_charges_nothing():
    clock = [50.0]
    p = policy({"t": {"rate_limit": {"max": 1, "window": 60}}})
    enforcer = Enforcer(p, lambda: clock[0])
    call = ToolCall("s", "t")
    assert enforcer.now() == 50.0
    assert enforcer.policy is p
    for _ in range(3):
        preview = enforcer.preview(call)
        assert preview.verdict is Verdict.ALLOW
        assert preview.charged_at is None
    assert len(enforcer.counters) == 0
    assert enforcer.decide(call).charged_at == 50.0
    assert enforcer.preview(call).verdict is Verdict.DENY  # now the budget is used
    clock[0] = 110.0
    assert enforcer.now() == 110.0
    assert enforcer.preview(call).verdict is Verdict.ALLOW


def test_refunding_a_decision_that_charged_nothing_gives_nothing_back():
    p = policy({"t": {"rate_limit": {"max": 1, "window": 60}}})
    enforcer = Enforcer(p, lambda: 0.0)
    call = ToolCall("s", "t")
    charged = enforcer.decide(call)
    refused = enforcer.decide(call)
    assert refused.verdict is Verdict.DENY
    assert refused.charged_at is None
    enforcer.refund(refused)  # e.g. the gateway refunds every call it did not send
    assert len(enforcer.counters) == 1  # the first call's charge still stands
    assert enforcer.decide(call).verdict is Verdict.DENY
    enforcer.refund(charged)
    assert enforcer.decide(call).verdict is Verdict.ALLOW
