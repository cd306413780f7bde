"""A team's policy layered above policy.json: the stricter decision stands, the team's
limits count apart, hiding, results' secrets, timeouts and pinning take the stricter of
the two, and a team file that says nothing about a tool leaves it to policy.json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.policy.decide import Enforcer, ToolCall, Verdict, agent_message, decide, hidden_tools
from proxy.policy.limits import Counters
from proxy.policy.model import Policy, SecretsMode, parse_policy, team_layer

T0 = 1_800_000_000.0


def policy(**document: Any) -> Policy:
    return parse_policy(json.dumps({"version": "1", **document}))


def layered(mine: dict[str, Any], team: dict[str, Any]) -> Policy:
    return policy(**mine).with_team(team_layer(policy(**team)))


def verdict(p: Policy, tool: str, client: str = "c", **arguments: Any) -> tuple[str, str | None]:
    decision = decide(p, ToolCall("s", tool, arguments, client), Counters(), T0)
    return decision.verdict.value, decision.layer


@pytest.mark.parametrize(
    ("mine", "theirs", "expected"),
    [
        ("allow", "deny", ("deny", "team")),  # policy.json cannot loosen a team's denial
        ("allow", "ask", ("ask", "team")),
        ("ask", "ask", ("ask", "team")),  # a tie of ask or deny: the team's words
        ("deny", "deny", ("deny", "team")),
        ("deny", "allow", ("deny", None)),  # it can make things stricter
        ("ask", "allow", ("ask", None)),
        ("allow", "allow", ("allow", None)),
    ],
)
def test_the_stricter_of_the_two_decides(mine: str, theirs: str, expected: Any) -> None:
    p = layered(
        {"default": "allow", "tools": {"s/t": {"action": mine}}},
        {"tools": {"s/t": {"action": theirs, "reason": "the team says so"}}},
    )
    assert verdict(p, "t") == expected


def test_a_team_file_without_a_default_has_no_say_over_other_tools() -> None:
    p = layered({"default": "deny"}, {"tools": {"s/t": {"action": "allow"}}})
    assert verdict(p, "other") == ("deny", None)  # policy.json's default
    mine = layered({"default": "allow"}, {"tools": {"s/t": {"action": "deny"}}})
    assert verdict(mine, "other") == ("allow", None)
    allowlist = layered({"default": "allow"}, {"default": "deny", "tools": {"s/t": {}}})
    assert verdict(allowlist, "other") == ("deny", "team")  # the team's written default
    assert verdict(allowlist, "t") == ("allow", None)


def test_the_teams_reason_and_rule_are_what_the_agent_is_told() -> None:
    p = layered(
        {"default": "allow"}, {"tools": {"s/push": {"action": "deny", "reason": "no pushes"}}}
    )
    call = ToolCall("s", "push", {}, "c")
    decision = decide(p, call, Counters(), T0)
    assert (decision.reason, decision.rule, decision.layer) == ("no pushes", "s/push", "team")
    assert 'team rule "s/push"' in agent_message(call, decision, T0)
    assert decision.as_dict()["layer"] == "team"


def test_a_teams_argument_rule_and_case_stand() -> None:
    p = layered(
        {"default": "allow", "tools": {"s/write": {"action": "allow"}}},
        {
            "tools": {
                "s/write": {
                    "arguments": {"properties": {"path": {"pattern": "^/tmp/"}}},
                    "when": [{"clients": ["ci"], "action": "deny"}],
                }
            }
        },
    )
    assert verdict(p, "write", path="/tmp/a") == ("allow", None)
    assert verdict(p, "write", path="/etc/a") == ("deny", "team")
    assert verdict(p, "write", client="ci", path="/tmp/a") == ("deny", "team")


def test_both_layers_limits_must_pass_and_count_apart() -> None:
    """The team's counter "n" is its own ("team:n"): policy.json naming "n" neither
    shares nor refills it."""
    p = layered(
        {"default": "allow", "tools": {"s/t": {"limits": [{"counter": "n", "window": "minute", "max": 3}]}}},
        {"tools": {"s/t": {"limits": [{"counter": "n", "window": "minute", "max": 2}]}}},
    )  # fmt: skip
    now = [T0]
    enforcer = Enforcer(p, lambda: now[0])
    call = ToolCall("s", "t", {}, "c")
    first = enforcer.decide(call)
    assert first.verdict is Verdict.ALLOW
    assert {key.counter for key in first.charges} == {"n", "team:n"}
    assert enforcer.decide(call).verdict is Verdict.ALLOW
    third = enforcer.decide(call)
    assert (third.verdict, third.layer, third.counter) == (Verdict.DENY, "team", "team:n")
    now[0] += 60
    assert enforcer.decide(call).verdict is Verdict.ALLOW  # both windows passed
    enforcer.restore([])  # restoring knows the team's windows too (no error, no change)
    only_theirs = layered(
        {"default": "allow"},
        {"tools": {"s/t": {"limits": [{"counter": "m", "window": "minute", "max": 1}]}}},
    )
    enforcer = Enforcer(only_theirs, lambda: T0)
    assert enforcer.decide(call).charged_at == T0  # charged though policy.json has no rule
    assert enforcer.decide(call).verdict is Verdict.DENY


def test_hiding_secrets_timeouts_and_pinning_take_the_stricter() -> None:
    p = layered(
        {
            "default": "allow",
            "results": {"secrets": "redact"},
            "pinning": {"new_tools": "quarantine"},
            "tools": {"s/a": {"timeout": 30}, "s/b": {"action": "deny", "hide": True}},
        },
        {
            "results": {"secrets": "allow"},
            "pinning": {"findings": "quarantine"},
            "tools": {
                "s/a": {"timeout": 10, "results": {"secrets": "block"}},
                "s/c": {"action": "deny", "hide": True},
            },
        },
    )
    assert hidden_tools(p, "s", ["a", "b", "c"]) == {"b", "c"}
    assert decide(p, ToolCall("s", "c", {}, "x"), Counters(), T0).hidden
    assert decide(p, ToolCall("s", "b", {}, "x"), Counters(), T0).hidden
    assert p.secrets_of("s", "a") is SecretsMode.BLOCK
    assert p.secrets_of("s", "other") is SecretsMode.REDACT  # the stricter default
    assert (p.timeout_of("s", "a"), p.timeout_of("s", "b")) == (10, None)
    assert (p.pinning.new_tools, p.pinning.findings, p.pinning.new_servers) == (
        "quarantine", "quarantine", "trust"
    )  # fmt: skip
    assert len(p.all_rules) == 4
    assert p.with_team(None).team is None  # layered again, or alone: never two teams deep
    assert p.with_team(p.team).all_rules == p.all_rules
