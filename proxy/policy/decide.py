"""The decision engine: policy + call + counters + clock -> one decision.

:func:`decide` is pure: it reads the counters and never changes them, takes the time as an
argument and does no I/O, so every decision can be replayed and tested as a table. The
order of checks for the one rule that applies (the most specific pattern):

1. ``deny`` (and ``hide``) of a rule without cases: denied, nothing else is looked at.
2. ``arguments``: arguments that are not a JSON object, that fail the rule's schema, or
   that the schema cannot be checked against are denied, naming the failed constraint.
   The rule's schema constrains every call the rule covers, whatever its cases say.
3. ``when``: the first case whose conditions all hold (the call's client is one of its
   ``clients``, its arguments satisfy its ``arguments``) gives the call its action, reason
   and approval timeout instead of the rule's. A case's arguments that cannot be checked
   deny the call, as in 2: failing closed, never "the case does not hold".
4. the action in effect: ``deny`` denies.
5. limits (the rule's, for every call it covers): all must pass; a call over any limit is
   denied, with when it may retry.
6. ``ask``: a person must approve; ``allow``: allowed.

Arguments and limits come before asking, so a person is never asked about a call that
would be blocked anyway. A call that is blocked uses up no budget: the decision lists the
counters to charge, and :class:`Enforcer` charges them only when the call goes ahead.

An ``ask`` has the case's approval timeout, else the rule's, else
``default_approval_timeout`` (the app's setting; :data:`DEFAULT_APPROVAL_TIMEOUT` unless
given), which is also the timeout of the policy's default ``ask``.

A person's approval is not a verdict of its own: a call released by one is decided again
under the policy in force at that moment (:meth:`Enforcer.release`), so a rule changed to
``deny`` while the call waited, or a limit used up meanwhile, still blocks it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from proxy.policy.limits import CounterKey, Counters, LimitCheck, counter_key
from proxy.policy.model import (
    DEFAULT_APPROVAL_TIMEOUT,
    NAMED_WINDOWS,
    Action,
    Case,
    Limit,
    Policy,
    Rule,
)

_MAX_REASON = 400  # a reason quotes argument values; keep what the agent and log see short

__all__ = [
    "Basis",
    "Decision",
    "Enforcer",
    "ToolCall",
    "Verdict",
    "agent_message",
    "decide",
]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A ``tools/call`` as the policy sees it."""

    server: str
    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    client: str = "local"

    @property
    def qualified(self) -> str:
        return f"{self.server}/{self.tool}"


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"


class Basis(StrEnum):
    """What in the policy produced the verdict."""

    RULE = "rule"  # the rule's action (allow, deny, ask)
    DEFAULT = "default"  # no rule matched: the policy's default
    ARGUMENTS = "arguments"  # the arguments failed the rule's schema
    LIMIT = "limit"  # a rate limit was exhausted
    STATE = "state"  # Lockgate's own state, not the policy: paused, a server removed


@dataclass(frozen=True, slots=True)
class Decision:
    """One call's decision, with everything needed to explain and enforce it."""

    verdict: Verdict
    basis: Basis
    reason: str
    rule: str | None  # the deciding rule's pattern; None when the default decided
    counter: str | None = None  # for a limit: the counter that ran out
    retry_at: float | None = None  # for a limit: when a call would pass again
    charges: tuple[CounterKey, ...] = ()  # counters to charge if the call goes ahead
    hidden: bool = False  # the tool is hidden: answer as if it did not exist
    approval_timeout: float | None = None  # for ask: seconds a person has to answer
    argument_path: str | None = None  # for arguments: where in the arguments it failed
    charged_at: float | None = None  # when the enforcer charged ``charges`` (None: not yet)
    case: int | None = None  # the rule's case that decided ("when" index, from 0); None: no case
    source: Rule | None = field(default=None, repr=False, compare=False)  # the rule itself
    layer: str | None = None  # "team": the team's layer decided; None: policy.json
    # the other layer's rule, whose limits a call let through is charged to as well
    also: Rule | None = field(default=None, repr=False, compare=False)

    @property
    def blocked(self) -> bool:
        return self.verdict is Verdict.DENY

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the CLI's ``--json``, the audit log)."""
        return {
            "decision": self.verdict.value,
            "basis": self.basis.value,
            "rule": self.rule,
            "case": self.case,
            "reason": self.reason,
            "counter": self.counter,
            "retry_at": self.retry_at,
            "hidden": self.hidden,
            "approval_timeout": self.approval_timeout,
            "argument_path": self.argument_path,
            "layer": self.layer,
        }


def hidden_tools(policy: Policy, server: str, names: Iterable[str]) -> frozenset[str]:
    """Which of ``server``'s tools ``names`` the policy hides (the same rule :func:`decide`
    answers as unknown)."""
    return frozenset(name for name in names if policy.hides(server, name))


def decide(
    policy: Policy,
    call: ToolCall,
    counters: Counters,
    now: float,
    default_approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT,
) -> Decision:
    """Decide ``call`` under ``policy`` at time ``now`` (seconds, any monotonic origin).

    ``default_approval_timeout`` is for an ``ask`` whose rule and case set no timeout, and
    for the policy's default ``ask``.

    With a team layer (:meth:`Policy.with_team`), both decide and the stricter decision
    stands: deny over ask over allow, the team's on a tie of deny or ask (its reason is
    the one given), policy.json's on a tie of allow. The team has no say over a call
    none of its rules matches unless its file writes a ``default``. A call let through
    has passed both layers' limits and is charged to both.
    """
    mine = _decide_layer(policy, call, counters, now, default_approval_timeout, layer=None)
    team = policy.team
    if team is None or (team.rule_for(call.server, call.tool) is None and not team.says_default):
        return mine
    theirs = _decide_layer(team, call, counters, now, default_approval_timeout, layer="team")
    return _stricter(theirs, mine)


_STRICTNESS = {Verdict.ALLOW: 0, Verdict.ASK: 1, Verdict.DENY: 2}


def _stricter(theirs: Decision, mine: Decision) -> Decision:
    """The team's decision and policy.json's, as one (see :func:`decide`)."""
    team_wins = theirs.verdict is not Verdict.ALLOW and (
        _STRICTNESS[theirs.verdict] >= _STRICTNESS[mine.verdict]
    )
    winner, other = (theirs, mine) if team_wins else (mine, theirs)
    if winner.verdict is Verdict.DENY:
        return replace(winner, hidden=winner.hidden or (other.hidden and other.blocked))
    charges = tuple(dict.fromkeys(winner.charges + other.charges))
    return replace(winner, charges=charges, also=other.source)


# A settled decision: what a layer decides a call whose decision hangs on nothing but its
# tool and client (its rule reads no arguments), with the limits it must still pass (none
# when it is a denial). None for the decision: the rule reads the arguments, so every
# call is weighed in full. ``typed``: the arguments must still be a JSON object.
_Settled = tuple[Decision | None, tuple[tuple[Limit, CounterKey], ...], bool]
_SETTLED_SIZE = 4096  # per policy, as its resolve cache: an agent inventing names cannot grow it
_NO_COUNTERS = Counters()  # read, never charged: every limit with room passes


def _decide_layer(
    policy: Policy,
    call: ToolCall,
    counters: Counters,
    now: float,
    default_approval_timeout: float,
    *,
    layer: str | None,
) -> Decision:
    """What one layer's file alone decides.

    Most calls hang on nothing but their tool and client: their decision is worked out
    once per policy (:func:`_settle`) and given again while every limit it charges has
    room; the rest, and any call over a limit, are weighed in full (:func:`_weigh`). The
    two agree by construction: a settled decision is :func:`_weigh`'s, made once with
    counters that have room everywhere.
    """
    key = (call.server, call.tool, call.client, default_approval_timeout)
    settled = policy.settled.get(key)
    if settled is None:
        settled = _settle(policy, key, layer)
    decision, gates, typed = settled
    if decision is None or (typed and not isinstance(call.arguments, Mapping)):
        return _weigh(policy, call, counters, now, default_approval_timeout, layer=layer)
    for limit, counter in gates:
        if not counters.passes(limit, counter, now):
            return _weigh(policy, call, counters, now, default_approval_timeout, layer=layer)
    return decision


def _settle(policy: Policy, key: tuple[str, str, str, float], layer: str | None) -> _Settled:
    """Work out, and keep, what ``policy`` decides the calls ``key`` names (server, tool,
    client, default approval timeout), if that hangs on nothing else."""
    server, tool, client, default_approval_timeout = key
    rule = policy.rule_for(server, tool)
    settled: _Settled
    if rule is not None and rule.reads_arguments:
        settled = (None, (), False)
    else:
        call = ToolCall(server, tool, {}, client)
        decision = _weigh(policy, call, _NO_COUNTERS, 0.0, default_approval_timeout, layer=layer)
        gates: tuple[tuple[Limit, CounterKey], ...] = ()
        if rule is not None and not decision.blocked:
            gates = tuple((limit, counter_key(limit, client)) for limit in rule.limits)
        typed = rule is not None and not rule.denies_outright
        settled = (decision, gates, typed)
    cache = policy.settled
    if len(cache) >= _SETTLED_SIZE:
        cache.clear()
    cache[key] = settled
    return settled


def _weigh(
    policy: Policy,
    call: ToolCall,
    counters: Counters,
    now: float,
    default_approval_timeout: float,
    *,
    layer: str | None,
) -> Decision:
    """What one layer decides ``call``, worked out in full; ``layer`` names it."""
    decision = _weigh_rule(policy, call, counters, now, default_approval_timeout)
    return decision if layer is None else replace(decision, layer=layer)


def _weigh_rule(
    policy: Policy,
    call: ToolCall,
    counters: Counters,
    now: float,
    default_approval_timeout: float,
) -> Decision:
    rule = policy.rule_for(call.server, call.tool)
    if rule is None:
        return _by_default(policy, call, default_approval_timeout)
    if rule.denies_outright:
        return Decision(
            Verdict.DENY,
            Basis.RULE,
            rule.reason or f"{call.qualified} is denied by the policy",
            rule.pattern.text,
            hidden=rule.hides,
            source=rule,
        )
    arguments: object = call.arguments  # typed Mapping, but it comes off the wire
    if not isinstance(arguments, Mapping):
        return _argument_denial(rule, "$", "arguments must be a JSON object")
    try:
        errors = rule.argument_errors(arguments)
    except Exception as exc:  # any failure to check is a denial: fail closed
        return _argument_denial(rule, "$", _clip(f"arguments could not be checked ({exc!r})"))
    if errors:
        return _bad_arguments(rule, errors)
    case: Case | None = None
    for candidate in rule.cases:
        if not candidate.holds_for_client(call.client):
            continue
        try:
            holds = candidate.arguments_match(arguments)
        except Exception as exc:  # fail closed, as for the rule's own schema
            message = f"arguments could not be checked against case {candidate.index} ({exc!r})"
            return _argument_denial(rule, "$", _clip(message), case=candidate.index)
        if holds:
            case = candidate
            break
    action = rule.action if case is None else case.action
    reason = rule.reason if case is None else case.reason
    index = None if case is None else case.index
    who = "" if case is None else " for " + _whom(case, call)
    if action is Action.DENY:
        return _ruled(
            rule, index, Verdict.DENY, reason or f"{call.qualified} is denied{who} by the policy"
        )
    checks = [counters.check(limit, call.client, now) for limit in rule.limits]
    blocked = _blocking(checks)
    if blocked is not None:
        return _over_limit(rule, blocked, reason, index)
    charges = tuple(dict.fromkeys(check.key for check in checks))
    if action is Action.ASK:
        timeout = case.approval_timeout if case is not None else None
        if timeout is None:
            timeout = rule.approval_timeout
        return _ruled(
            rule,
            index,
            Verdict.ASK,
            reason or f"{call.qualified} needs a person's approval{who}",
            charges,
            approval_timeout=default_approval_timeout if timeout is None else timeout,
        )
    said = reason or f"{call.qualified} is allowed{who} by the policy"
    return _ruled(rule, index, Verdict.ALLOW, said, charges)


def _ruled(
    rule: Rule,
    case: int | None,
    verdict: Verdict,
    reason: str,
    charges: tuple[CounterKey, ...] = (),
    *,
    approval_timeout: float | None = None,
) -> Decision:
    """What a rule (or its ``case``) decided, on its own terms (no limit was over)."""
    return Decision(
        verdict,
        Basis.RULE,
        reason,
        rule.pattern.text,
        case=case,
        charges=charges,
        approval_timeout=approval_timeout,
        source=rule,
    )


def _whom(case: Case, call: ToolCall) -> str:
    """Whom a case decided for, as its default reason says it: "cursor", "these
    arguments", or "cursor with these arguments"."""
    if case.clients is None:
        return "these arguments"
    if case.arguments is None:
        return call.client
    return f"{call.client} with these arguments"


def _by_default(policy: Policy, call: ToolCall, default_approval_timeout: float) -> Decision:
    verdict = _VERDICT_OF[policy.default]
    reason = f"no rule matches {call.server}/{call.tool}; {_DEFAULT_SAYS[verdict]}"
    timeout = default_approval_timeout if verdict is Verdict.ASK else None
    return Decision(verdict, Basis.DEFAULT, reason, None, approval_timeout=timeout)


_VERDICT_OF = {Action.ALLOW: Verdict.ALLOW, Action.DENY: Verdict.DENY, Action.ASK: Verdict.ASK}
_DEFAULT_SAYS = {
    Verdict.ALLOW: "the policy's default is allow",
    Verdict.DENY: "the policy's default is deny",
    Verdict.ASK: "the policy's default is to ask a person",
}


def _blocking(checks: list[LimitCheck]) -> LimitCheck | None:
    """The failed limit that frees up last (``None``: all passed); never-freeing first."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        return None
    return max(failed, key=lambda c: math.inf if c.retry_at is None else c.retry_at)


def _over_limit(rule: Rule, check: LimitCheck, why: str | None, case: int | None) -> Decision:
    """Deny for a limit; ``why`` is the reason in effect (the case's, else the rule's)."""
    limit = check.limit
    scope = "for this client" if check.key.client is not None else "across all clients"
    reason = (
        f"rate limit reached: at most {limit.max} call{'s' if limit.max != 1 else ''} "
        f"per {_span(limit.window)} {scope} (counter {limit.counter!r})"
    )
    if why:
        reason = f"{why} ({reason})"
    return Decision(
        Verdict.DENY,
        Basis.LIMIT,
        reason,
        rule.pattern.text,
        case=case,
        counter=limit.counter,
        retry_at=check.retry_at,
        source=rule,
    )


def _bad_arguments(rule: Rule, errors: list[Any]) -> Decision:
    first = errors[0]
    constraint = "/".join(str(p) for p in first.schema_path)
    message = f"{_clip(first.message)} (constraint: {constraint})"
    if len(errors) > 1:
        message += f"; {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''}"
    return _argument_denial(rule, first.json_path, message)


def _argument_denial(rule: Rule, where: str, message: str, case: int | None = None) -> Decision:
    """Deny for the arguments; ``where`` is a "$.path" into them."""
    reason = f"arguments rejected at {where}: {message}"
    if rule.reason:
        reason = f"{rule.reason} ({reason})"
    return Decision(
        Verdict.DENY,
        Basis.ARGUMENTS,
        reason,
        rule.pattern.text,
        case=case,
        argument_path=where,
        source=rule,
    )


_WINDOW_NAMES = {seconds: name for name, seconds in NAMED_WINDOWS.items()}


def _span(seconds: float) -> str:
    return _WINDOW_NAMES.get(seconds) or f"{seconds:g} seconds"


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def agent_message(call: ToolCall, decision: Decision, now: float) -> str:
    """The text a blocked call's agent reads, so the model can adapt rather than fail."""
    if decision.basis is Basis.STATE:
        return f"Lockgate blocked this call to {call.qualified}: {decision.reason}."
    team = "team " if decision.layer == "team" else ""
    rule = f'{team}rule "{decision.rule}"' if decision.rule else f"the {team}policy's default"
    text = f"Lockgate's policy blocked this call to {call.qualified}: {decision.reason} [{rule}]."
    if decision.basis is Basis.LIMIT:
        if decision.retry_at is None:
            text += " This limit allows no calls; do not retry."
        else:
            wait = max(0.0, decision.retry_at - now)
            text += f" Retry in {math.ceil(wait)} s or later."
    return text


class Enforcer:
    """Decides and charges atomically, so limits are exact under concurrent calls.

    One lock covers "check the counters" and "charge them", which is the whole of the
    race: never more than ``max`` calls get through in any window, whatever the number of
    threads or tasks calling. ``clock`` is wall-clock seconds: charges outlive the process
    (the audit log keeps them), so they are on a clock a restart does not reset.
    ``default_approval_timeout`` (settable: the app's setting) is how long a person has to
    answer an ``ask`` whose rule and case say nothing.
    """

    def __init__(
        self,
        policy: Policy,
        clock: Callable[[], float],
        *,
        default_approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._counters = Counters()
        self._lock = threading.Lock()
        self._default_approval_timeout = _checked_timeout(default_approval_timeout)

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def default_approval_timeout(self) -> float:
        return self._default_approval_timeout

    @default_approval_timeout.setter
    def default_approval_timeout(self, seconds: float) -> None:
        """For calls decided from now on; a call already waiting keeps its deadline.

        Raises:
            ValueError: not a number of seconds above 0.
        """
        checked = _checked_timeout(seconds)
        with self._lock:
            self._default_approval_timeout = checked

    @property
    def counters(self) -> Counters:
        return self._counters

    def now(self) -> float:
        """The enforcer's clock: what ``retry_at`` and charge times are measured on."""
        return self._clock()

    def swap_policy(self, policy: Policy) -> None:
        """Put a new policy in force for calls decided from now on; counters carry over."""
        with self._lock:
            self._policy = policy

    def decide(self, call: ToolCall) -> Decision:
        """Decide ``call``; an ``allow`` is charged before the lock is released."""
        with self._lock:
            now = self._clock()
            return self._charge(self._decide(call, now), now)

    def preview(self, call: ToolCall) -> Decision:
        """What :meth:`decide` would say now, charging nothing."""
        with self._lock:
            return self._decide(call, self._clock())

    def release(self, call: ToolCall) -> Decision:
        """A person approved ``call``: decide it again under the policy in force now.

        A ``deny`` now (the rule was changed, the arguments no longer pass, a limit ran
        out while the call waited) stands; an ``ask`` counts as approved; either that or
        an ``allow`` is charged and comes back as ``allow``. The policy's cases are
        decided again too: a case that allowed or asked may now deny, or no longer hold.
        """
        with self._lock:
            now = self._clock()
            decision = self._decide(call, now)
            if decision.verdict is Verdict.ASK:
                decision = replace(decision, verdict=Verdict.ALLOW, reason="approved by a person")
            return self._charge(decision, now)

    def refund(self, decision: Decision) -> None:
        """Give back what :meth:`decide` or :meth:`release` charged for ``decision`` (the
        call never reached its server, or its record could not be written)."""
        if decision.charged_at is not None:
            with self._lock:
                self._counters.refund(decision.charges, decision.charged_at)

    def restore(self, charges: Iterable[tuple[CounterKey, float]]) -> None:
        """Charges made before this process started (read back from the audit log)."""
        horizons: dict[str, float] = {}
        for rule in self._policy.all_rules:
            for limit in rule.limits:
                horizons[limit.counter] = max(horizons.get(limit.counter, 0.0), limit.window)
        with self._lock:
            for key, at in sorted(charges, key=lambda charge: charge[1]):
                window = horizons.get(key.counter)
                self._counters.record((key,), at, {key.counter: window} if window else {})

    def _decide(self, call: ToolCall, now: float) -> Decision:
        return decide(self._policy, call, self._counters, now, self._default_approval_timeout)

    def _charge(self, decision: Decision, now: float) -> Decision:
        if decision.verdict is Verdict.ALLOW and decision.charges:
            rules = [rule for rule in (decision.source, decision.also) if rule is not None]
            horizons = {limit.counter: limit.window for rule in rules for limit in rule.limits}
            self._counters.record(decision.charges, now, horizons)
            return replace(decision, charged_at=now)
        return decision


def _checked_timeout(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"an approval timeout is a number of seconds, not {seconds!r}")
    if not (0 < seconds < math.inf):
        raise ValueError(f"an approval timeout must be above 0 seconds and finite, not {seconds}")
    return float(seconds)
