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


# -- cases ("when"): per client, per arguments ----------------------------------------------

PUSH = {
    "action": "ask",
    "reason": "pushing is public",
    "arguments": {
        "type": "object",
        "properties": {"branch": {"type": "string"}},
        "required": ["branch"],
    },
    "rate_limit": {"max": 2, "window": 60},
    "approval": {"timeout": 45},
    "when": [
        {
            "clients": ["ci"],
            "arguments": {"properties": {"force": {"const": True}}, "required": ["force"]},
            "action": "deny",
            "reason": "no force pushes from CI",
        },
        {"clients": ["cursor", "ci"], "action": "allow"},
        {"arguments": {"properties": {"branch": {"pattern": "^scratch/"}}}, "action": "allow"},
        {"arguments": {"properties": {"branch": {"const": "main"}}}, "action": "deny"},
        {"clients": ["claude-code"], "action": "ask", "approval": {"timeout": 5}},
    ],
}
WITH_CASES = policy({"git/push": PUSH, "git/*": {"action": "deny"}})


@pytest.mark.parametrize(
    ("client", "arguments", "verdict", "basis", "case", "reason", "timeout"),
    [
        # a client case: the first that holds wins, over a later case that would deny
        (
            "cursor",
            {"branch": "main"},
            Verdict.ALLOW,
            Basis.RULE,
            1,
            "git/push is allowed for cursor by the policy",
            None,
        ),
        # both conditions of a case must hold: ci with force is denied, without it allowed
        (
            "ci",
            {"branch": "dev", "force": True},
            Verdict.DENY,
            Basis.RULE,
            0,
            "no force pushes from CI",
            None,
        ),
        ("ci", {"branch": "dev"}, Verdict.ALLOW, Basis.RULE, 1, None, None),
        # an arguments case, for any client; not matching it is no block
        (
            "local",
            {"branch": "scratch/try"},
            Verdict.ALLOW,
            Basis.RULE,
            2,
            "git/push is allowed for these arguments by the policy",
            None,
        ),
        (
            "local",
            {"branch": "main"},
            Verdict.DENY,
            Basis.RULE,
            3,
            "git/push is denied for these arguments by the policy",
            None,
        ),
        # first match wins: case 3 (main) before claude-code's own case 4
        ("claude-code", {"branch": "main"}, Verdict.DENY, Basis.RULE, 3, None, None),
        (
            "claude-code",
            {"branch": "dev"},
            Verdict.ASK,
            Basis.RULE,
            4,
            "git/push needs a person's approval for claude-code",
            5.0,
        ),
        # no case holds: the rule's own action, reason and timeout
        ("local", {"branch": "dev"}, Verdict.ASK, Basis.RULE, None, "pushing is public", 45.0),
        # the rule's arguments still block, whatever a case would allow
        ("cursor", {}, Verdict.DENY, Basis.ARGUMENTS, None, None, None),
        ("cursor", {"branch": 7}, Verdict.DENY, Basis.ARGUMENTS, None, None, None),
        ("ci", {"branch": 7, "force": True}, Verdict.DENY, Basis.ARGUMENTS, None, None, None),
    ],
)
def test_cases_decide_by_client_and_arguments(
    client, arguments, verdict, basis, case, reason, timeout
):
    decision = decide(WITH_CASES, ToolCall("git", "push", arguments, client), Counters(), 0.0)
    assert (decision.verdict, decision.basis, decision.rule, decision.case) == (
        verdict,
        basis,
        "git/push",
        case,
    )
    if reason is not None:
        assert decision.reason == reason
    assert decision.approval_timeout == timeout


def test_a_case_with_both_conditions_says_so_in_its_reason():
    p = policy(
        {
            "t": {
                "action": "deny",
                "when": [{"clients": ["cursor"], "arguments": {}, "action": "ask"}],
            }
        }
    )
    decision = decide(p, ToolCall("s", "t", {}, "cursor"), Counters(), 0.0)
    assert decision.reason == "s/t needs a person's approval for cursor with these arguments"
    assert decision.case == 0


def test_a_deny_rule_can_allow_one_client_and_stays_denied_for_the_others():
    p = policy({"t": {"action": "deny", "when": [{"clients": ["cursor"], "action": "allow"}]}})
    allowed = decide(p, ToolCall("s", "t", {}, "cursor"), Counters(), 0.0)
    denied = decide(p, ToolCall("s", "t", {}, "claude-code"), Counters(), 0.0)
    assert (allowed.verdict, allowed.case) == (Verdict.ALLOW, 0)
    assert (denied.verdict, denied.basis, denied.case) == (Verdict.DENY, Basis.RULE, None)
    assert denied.reason == "s/t is denied by the policy"
    assert not denied.hidden
    assert hidden_tools(p, "s", ["t"]) == frozenset()  # a rule with cases never hides


def test_the_rules_limits_apply_to_calls_a_case_allows():
    enforcer = Enforcer(WITH_CASES, lambda: 0.0)
    call = ToolCall("git", "push", {"branch": "dev"}, "cursor")
    assert [enforcer.decide(call).verdict for _ in range(2)] == [Verdict.ALLOW] * 2
    over = enforcer.decide(call)
    assert (over.verdict, over.basis, over.case, over.counter) == (
        Verdict.DENY,
        Basis.LIMIT,
        1,
        "git/push",
    )
    # the reason is the limit's: a case's allow has no reason of its own to quote
    assert over.reason.startswith("rate limit reached: at most 2 calls per minute")
    # the limit counts per client (scope grant), across the rule's cases
    other = ToolCall("git", "push", {"branch": "scratch/x"}, "local")
    assert enforcer.decide(other).verdict is Verdict.ALLOW


def test_a_limit_on_a_case_decision_quotes_the_cases_reason():
    p = policy(
        {
            "t": {
                "reason": "the rule's reason",
                "rate_limit": {"max": 0, "window": 60},
                "when": [{"clients": ["cursor"], "action": "allow", "reason": "cursor may"}],
            }
        }
    )
    for client, why in [("cursor", "cursor may"), ("local", "the rule's reason")]:
        decision = decide(p, ToolCall("s", "t", {}, client), Counters(), 0.0)
        assert decision.basis is Basis.LIMIT
        assert decision.reason.startswith(f"{why} (rate limit reached")


def test_a_case_that_denies_is_not_charged_and_skips_limits():
    p = policy(
        {
            "t": {
                "rate_limit": {"max": 0, "window": 60},
                "when": [{"clients": ["x"], "action": "deny"}],
            }
        }
    )
    decision = decide(p, ToolCall("s", "t", {}, "x"), Counters(), 0.0)
    assert (decision.basis, decision.case, decision.charges) == (Basis.RULE, 0, ())


def test_a_case_whose_arguments_cannot_be_checked_denies_the_call():
    recursive = {"$defs": {"n": {"properties": {"a": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}
    p = policy(
        {
            "t": {
                "action": "allow",
                "when": [
                    {"clients": ["other"], "arguments": recursive, "action": "deny"},
                    {"clients": ["cursor"], "arguments": recursive, "action": "ask"},
                ],
            }
        }
    )
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    decision = decide(p, ToolCall("s", "t", deep, "cursor"), Counters(), 0.0)
    assert (decision.verdict, decision.basis, decision.case) == (Verdict.DENY, Basis.ARGUMENTS, 1)
    assert "arguments could not be checked against case 1" in decision.reason
    # the client is checked first: a case for another client is never evaluated
    assert decide(p, ToolCall("s", "t", deep, "local"), Counters(), 0.0).verdict is Verdict.ALLOW


@pytest.mark.parametrize("arguments", [None, [], "x"])
def test_arguments_that_are_not_an_object_are_denied_before_any_case(arguments):
    p = policy({"t": {"action": "deny", "when": [{"clients": ["cursor"], "action": "allow"}]}})
    decision = decide(p, ToolCall("s", "t", arguments, "cursor"), Counters(), 0.0)
    assert (decision.verdict, decision.basis) == (Verdict.DENY, Basis.ARGUMENTS)


def test_agent_message_for_a_case_names_the_rule():
    call = ToolCall("git", "push", {"branch": "main"}, "local")
    decision = decide(WITH_CASES, call, Counters(), 0.0)
    assert agent_message(call, decision, 0.0) == (
        "Lockgate's policy blocked this call to git/push: git/push is denied for these "
        'arguments by the policy [rule "git/push"].'
    )


def test_as_dict_says_which_case_decided():
    call = ToolCall("git", "push", {"branch": "dev"}, "cursor")
    data = json.loads(json.dumps(decide(WITH_CASES, call, Counters(), 0.0).as_dict()))
    assert (data["rule"], data["case"]) == ("git/push", 1)
    plain = decide(EXAMPLE, ToolCall("devtools", "python_build"), Counters(), 0.0).as_dict()
    assert plain["case"] is None


# -- approval timeouts: the case's, the rule's, else the default ---------------------------


@pytest.mark.parametrize(
    ("rule", "client", "timeout"),
    [
        ({"action": "ask"}, "x", 77.0),  # nothing written: the default given
        ({"action": "ask", "approval": {"timeout": 9}}, "x", 9.0),
        ({"action": "allow", "when": [{"clients": ["x"], "action": "ask"}]}, "x", 77.0),
        (
            {
                "action": "allow",
                "approval": {"timeout": 9},
                "when": [{"clients": ["x"], "action": "ask"}],
            },
            "x",
            9.0,  # the case writes none: the rule's
        ),
        (
            {
                "action": "ask",
                "approval": {"timeout": 9},
                "when": [{"clients": ["x"], "action": "ask", "approval": {"timeout": 3}}],
            },
            "x",
            3.0,
        ),
    ],
)
def test_approval_timeout_comes_from_the_case_the_rule_or_the_default(rule, client, timeout):
    p = policy({"t": rule})
    decision = decide(p, ToolCall("s", "t", {}, client), Counters(), 0.0, 77.0)
    assert decision.verdict is Verdict.ASK
    assert decision.approval_timeout == timeout


def test_without_a_default_given_the_built_in_timeout_applies():
    p = policy({"t": {"action": "ask"}}, default="ask")
    assert decide(p, ToolCall("s", "t"), Counters(), 0.0).approval_timeout == 120.0
    assert decide(p, ToolCall("s", "u"), Counters(), 0.0).approval_timeout == 120.0


def test_the_policys_default_ask_gets_the_default_timeout_given():
    decision = decide(policy({}, default="ask"), ToolCall("s", "u"), Counters(), 0.0, 33.0)
    assert (decision.basis, decision.approval_timeout) == (Basis.DEFAULT, 33.0)


def test_the_enforcer_uses_its_default_approval_timeout_and_it_can_be_changed():
    p = policy(
        {"t": {"action": "ask"}, "u": {"action": "ask", "approval": {"timeout": 4}}}, default="ask"
    )
    enforcer = Enforcer(p, lambda: 0.0, default_approval_timeout=60)
    assert enforcer.default_approval_timeout == 60.0
    assert enforcer.decide(ToolCall("s", "t")).approval_timeout == 60.0
    enforcer.default_approval_timeout = 15
    assert enforcer.decide(ToolCall("s", "t")).approval_timeout == 15.0
    assert enforcer.preview(ToolCall("s", "t")).approval_timeout == 15.0
    assert enforcer.decide(ToolCall("s", "u")).approval_timeout == 4.0  # written: it stands
    assert enforcer.decide(ToolCall("s", "other")).approval_timeout == 15.0  # policy default
    assert Enforcer(p, lambda: 0.0).default_approval_timeout == 120.0


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "60", True])
def test_an_enforcer_refuses_a_default_approval_timeout_that_is_no_time(bad):
    with pytest.raises(ValueError, match="approval timeout"):
        Enforcer(policy({}), lambda: 0.0, default_approval_timeout=bad)
    enforcer = Enforcer(policy({}), lambda: 0.0)
    with pytest.raises(ValueError, match="approval timeout"):
        enforcer.default_approval_timeout = bad
    assert enforcer.default_approval_timeout == 120.0


# -- a person's approval, re-decided with the cases -----------------------------------------


def test_a_call_asked_by_a_case_is_released_under_that_case_and_charged():
    enforcer = Enforcer(WITH_CASES, lambda: 0.0)
    call = ToolCall("git", "push", {"branch": "dev"}, "claude-code")
    asked = enforcer.decide(call)
    assert (asked.verdict, asked.case) == (Verdict.ASK, 4)
    released = enforcer.release(call)
    assert (released.verdict, released.case, released.reason) == (
        Verdict.ALLOW,
        4,
        "approved by a person",
    )
    assert released.charged_at == 0.0
    enforcer.release(call)
    late = enforcer.release(call)  # the rule's limit (2 a minute) covers case decisions too
    assert (late.verdict, late.basis) == (Verdict.DENY, Basis.LIMIT)


@pytest.mark.parametrize(
    ("when", "verdict", "case"),
    [
        # the case now denies the client: the denial stands, approved or not
        ([{"clients": ["claude-code"], "action": "deny", "reason": "no more"}], Verdict.DENY, 0),
        # the case is gone and the rule denies
        (None, Verdict.DENY, None),
        # a case now allows it: allowed
        ([{"clients": ["claude-code"], "action": "allow"}], Verdict.ALLOW, 0),
        # a case for other arguments does not hold: the new rule denies
        ([{"arguments": {"required": ["force"]}, "action": "deny"}], Verdict.DENY, None),
    ],
)
def test_a_released_call_is_decided_again_with_the_cases_in_force(when, verdict, case):
    enforcer = Enforcer(WITH_CASES, lambda: 0.0)
    call = ToolCall("git", "push", {"branch": "dev"}, "claude-code")
    assert enforcer.decide(call).verdict is Verdict.ASK
    rule: dict[str, Any] = {"action": "deny"}
    if when is not None:
        rule["when"] = when
    enforcer.swap_policy(policy({"git/push": rule}))
    released = enforcer.release(call)
    assert (released.verdict, released.case) == (verdict, case)
    if when and when[0].get("reason"):
        assert released.reason == "no more"


def test_a_released_call_whose_new_case_asks_counts_as_approved():
    enforcer = Enforcer(policy({"t": {"action": "ask"}}), lambda: 0.0)
    call = ToolCall("s", "t", {"path": "/x"}, "cursor")
    enforcer.decide(call)
    enforcer.swap_policy(
        policy(
            {
                "t": {
                    "action": "deny",
                    "when": [{"arguments": {"required": ["path"]}, "action": "ask"}],
                }
            }
        )
    )
    released = enforcer.release(call)
    assert (released.verdict, released.case, released.reason) == (
        Verdict.ALLOW,
        0,
        "approved by a person",
    )
    other = ToolCall("s", "t", {}, "cursor")  # the case does not hold: the rule denies
    assert enforcer.release(other).verdict is Verdict.DENY


SETTLING = {
    "s/denied": {"action": "deny", "reason": "no"},
    "s/hidden": {"action": "deny", "hide": True, "arguments": {"required": ["x"]}},
    "s/asked": {"action": "ask", "approval": {"timeout": 30}},
    "s/by_client": {"action": "ask", "when": [{"clients": ["ci"], "action": "allow"}]},
    "s/limited": {"limits": [{"counter": "c", "window": "minute", "max": 2}]},
    "s/shared": {"limits": [{"counter": "c", "window": "minute", "max": 3, "scope": "global"}]},
    "s/never": {"limits": [{"counter": "z", "window": "minute", "max": 0}]},
    "s/schema": {"arguments": {"properties": {"p": {"type": "string"}}}},
    "s/case_schema": {"when": [{"arguments": {"required": ["p"]}, "action": "deny"}]},
}


@pytest.mark.parametrize("team", [False, True])
def test_a_decision_worked_out_once_is_the_one_worked_out_in_full(team: bool) -> None:
    """decide() gives a call that hangs on nothing but its tool and client the decision
    it worked out for the first such call, while its limits have room: it must be what
    weighing the call in full gives, call after call, as the counters fill up."""
    from proxy.policy.decide import _weigh

    mine = policy(SETTLING, default="allow")
    if team:
        mine = mine.with_team(
            parse_policy(json.dumps({"version": "1", "tools": {"s/limited": {"limits": [
                {"counter": "t", "window": "minute", "max": 1}]}, "s/asked": {"action": "deny"}}}))
        )  # fmt: skip
    counters = Counters()
    checked = 0
    for now in (0.0, 1.0, 2.0, 3.0, 61.5):
        for tool in [*(name.split("/")[1] for name in SETTLING), "other"]:
            for client in ("cursor", "ci"):
                for arguments in ({}, {"p": 1}, ["not", "an", "object"]):
                    call = ToolCall("s", tool, arguments, client)  # type: ignore[arg-type]
                    fast = decide(mine, call, counters, now)
                    full = _weigh(mine, call, counters, now, 120.0, layer=None)
                    if mine.team is not None and (
                        mine.team.rule_for("s", tool) is not None or mine.team.says_default
                    ):
                        theirs = _weigh(mine.team, call, counters, now, 120.0, layer="team")
                        full = decide.__globals__["_stricter"](theirs, full)
                    assert fast == full, (tool, client, arguments, now)
                    assert (fast.layer, fast.source, fast.also) == (
                        full.layer,
                        full.source,
                        full.also,
                    )
                    checked += 1
                    if not fast.blocked and fast.charges:
                        counters.record(fast.charges, now, {"c": 60.0, "t": 60.0})
    assert checked == 5 * 10 * 2 * 3
    assert len(counters) > 0  # the limits filled up on the way


def test_what_decide_keeps_is_bounded_when_an_agent_invents_tool_names() -> None:
    from proxy.policy.decide import _SETTLED_SIZE

    mine = policy({"s/*": {"action": "ask"}}, default="allow")
    for n in range(_SETTLED_SIZE + 10):
        decide(mine, ToolCall("s", f"invented_{n}"), Counters(), 0.0)
    assert 0 < len(mine.settled) <= _SETTLED_SIZE
