"""A policy change replayed before it is applied: every recorded call of a period decided
under the candidate policy and under the policy in force, and the difference.

Pure, as :mod:`proxy.policy.decide` is: the recorded calls come in (oldest first, from the
audit log: :meth:`proxy.audit.log.AuditReader.recorded_calls`), a report comes out.
What a replay can and cannot know, and how it is honest about it:

- **Rate limits** are simulated over the recorded timeline, each policy with counters of
  its own, charged at each call's recorded time. A call counts as the gateway would have
  charged it: it went ahead (allowed, or asked and approved), and the server did not
  refuse it (a protocol error, or a server that could not be reached, gives the charge
  back). The calls just before the period warm the counters up, so that a limit is not
  fresh at its start.
- **A person's answer** is not a policy's to give: an ``ask`` is shown as "would ask".
  For the limits, an asked call counts as approved if the person approved it when it
  was made (or if nobody was asked then), and as refused if it was refused or denied.
- **Arguments** are replayed as the log holds them: redacted (a secret-looking value is
  ``[redacted]``) and capped. A call whose decision under either policy depends on its
  arguments (a rule's ``arguments`` schema or a ``when`` case on them) and whose
  arguments were redacted or cut is marked *uncertain*.
- **Lockgate's own refusals** (paused, a server removed or turned off, a held tool, a
  malformed call) were not the policy's: they are counted apart and never "change".

The policy in force replayed over a period it was in force for decides every call as it
was decided live, limits included (the tests check it call by call); a difference there
means the policy changed during the period, which the report says (``drifted``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from proxy.policy.argschema import keys_read
from proxy.policy.decide import Decision, ToolCall, Verdict, decide
from proxy.policy.limits import Counters
from proxy.policy.model import Policy, Rule

__all__ = [
    "DecidedGroup",
    "History",
    "RecordedCall",
    "ReplayReport",
    "ReplayedCall",
    "replay",
    "replay_history",
    "warm_up_seconds",
]

# The bases under which the policy (or a person it asked) decided a call; any other
# basis is Lockgate's own state (pause, removed, turned_off, quarantined, name, ...).
_POLICY_BASES: Final = frozenset(
    "rule default arguments limit person session refused timeout no_approver cancelled busy".split()
)
# what a recorded decision was, in the policy's words
_WAS: Final = {"allowed": "allow", "denied": "deny", "approved": "ask", "refused": "ask"}
# outcomes after which the gateway gave a call's charge back (it did not run)
_REFUNDED: Final = frozenset({"protocol_error", "upstream_down"})
EXAMPLES: Final = 5  # calls kept to open, per (change, tool, client)
_ARGUMENTS_KEPT: Final = 50_000  # decisions by what of the arguments is read, per policy


class RecordedCall(NamedTuple):
    """A call as the audit log recorded it, with what replaying it needs (a row of it:
    a replay reads a million of them)."""

    id: str
    time: float  # when it arrived, epoch seconds
    client: str
    server: str
    tool: str
    arguments: str  # JSON text, as the log stores it (redacted, capped)
    decision: str  # allowed, denied, approved, refused
    basis: str | None
    rule: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class DecidedGroup:
    """Calls of one tool by one client, decided alike (the audit log's hourly counts)."""

    server: str
    tool: str
    client: str
    decision: str
    basis: str  # '' for none
    ruled: bool  # a rule decided them
    calls: int


class History(Protocol):
    """Where a replay reads the recorded calls (the audit log: its
    :class:`~proxy.audit.log.AuditReader`)."""

    def decided_groups(self, start: float, end: float) -> list[DecidedGroup]: ...

    def recorded_calls(
        self,
        start: float | None = None,
        end: float | None = None,
        tools: Iterable[tuple[str, str]] | None = None,
    ) -> Iterator[RecordedCall]: ...

    def group_examples(
        self, group: DecidedGroup, start: float, end: float, limit: int = 5
    ) -> list[RecordedCall]: ...


@dataclass(frozen=True, slots=True)
class ReplayedCall:
    """One call the candidate decides otherwise than the policy in force."""

    call: RecordedCall
    was: str  # allow, deny, ask: the policy in force, replayed
    now: str  # the candidate's verdict
    reason: str  # the candidate's reason
    rule: str | None  # the candidate's deciding rule (None: its default)
    uncertain: bool  # it hangs on arguments the log holds redacted or cut

    @property
    def change(self) -> str:
        return change_of(self.was, self.now)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.call.id,
            "time": self.call.time,
            "client": self.call.client,
            "server": self.call.server,
            "tool": self.call.tool,
            "recorded": self.call.decision,
            "was": self.was,
            "now": self.now,
            "change": self.change,
            "reason": self.reason,
            "rule": self.rule,
            "uncertain": self.uncertain,
        }


def change_of(was: str, now: str) -> str:
    """A difference in a person's words: "blocked" (it went ahead or was asked about,
    and would be blocked), "allowed" (it was blocked or asked about, and would go
    ahead without a person), "asks" (a person would be asked)."""
    return {"deny": "blocked", "allow": "allowed", "ask": "asks"}[now] if was != now else "same"


@dataclass(slots=True)
class ReplayReport:
    """What a candidate would have done to a period's calls, against the policy in force."""

    start: float | None
    end: float | None
    calls: int = 0  # the policy's calls replayed
    skipped: int = 0  # refused by Lockgate's own state: not the policy's
    drifted: int = 0  # the policy in force decides otherwise than was recorded
    uncertain: int = 0  # changes that hang on redacted or cut arguments
    changes: Counter[str] = field(default_factory=Counter)  # by change_of
    by_tool: Counter[tuple[str, str]] = field(default_factory=Counter)  # (change, server/tool)
    by_client: Counter[tuple[str, str]] = field(default_factory=Counter)  # (change, client)
    examples: dict[tuple[str, str, str], list[ReplayedCall]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(self.changes.values())

    def add(self, replayed: ReplayedCall) -> None:
        """Count one call that changes, and keep it as an example if there is room."""
        call = replayed.call
        room = self.add_group(replayed.change, call.server, call.tool, call.client, 1)
        self.uncertain += replayed.uncertain
        if room is not None:
            room.append(replayed)

    def add_group(
        self, change: str, server: str, tool: str, client: str, calls: int
    ) -> list[ReplayedCall] | None:
        """Count ``calls`` of one tool by one client that change alike; the list their
        examples go in, if it has room for more (None: it has enough)."""
        qualified = f"{server}/{tool}"
        self.changes[change] += calls
        self.by_tool[change, qualified] += calls
        self.by_client[change, client] += calls
        kept = self.examples.setdefault((change, qualified, client), [])
        return kept if len(kept) < EXAMPLES else None

    def summary(self, period: str = "the period") -> str:
        """One line for a person about to apply the change."""
        if not self.calls:
            return f"No calls were recorded in {period}: nothing to replay."
        if not self.changed:
            return (
                f"This change would have decided all {self.calls:,} calls of {period} as the "
                "policy in force does."
            )
        parts = []
        for change, words in (
            ("blocked", "would have blocked"),
            ("allowed", "would have allowed"),
            ("asks", "would have asked a person about"),
        ):
            count = self.changes.get(change, 0)
            if count:
                clients = [(c, n) for (ch, c), n in self.by_client.most_common() if ch == change]
                who = ", ".join(f"{client} {n:,}" for client, n in clients[:3])
                more = ", …" if len(clients) > 3 else ""
                parts.append(f"{words} {count:,} call{'s' if count != 1 else ''} ({who}{more})")
        line = f"Of {self.calls:,} calls in {period}, this change " + "; ".join(parts) + "."
        if self.uncertain:
            line += (
                f" {self.uncertain:,} of these hang on arguments the log keeps redacted, "
                "so may differ."
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "calls": self.calls,
            "skipped": self.skipped,
            "drifted": self.drifted,
            "changed": self.changed,
            "uncertain": self.uncertain,
            "changes": dict(self.changes),
            "by_tool": [
                {"change": c, "tool": t, "calls": n} for (c, t), n in self.by_tool.most_common()
            ],
            "by_client": [
                {"change": c, "client": k, "calls": n} for (c, k), n in self.by_client.most_common()
            ],
            "examples": [r.as_dict() for kept in self.examples.values() for r in kept],
            "summary": self.summary(),
        }


def warm_up_seconds(*policies: Policy) -> float:
    """How long before a period its calls must be replayed for the limits' counters to
    be as they were at its start: the longest window of any limit."""
    return max(
        (limit.window for policy in policies for rule in policy.all_rules for limit in rule.limits),
        default=0.0,
    )


def replay(
    calls: Iterable[RecordedCall],
    candidate: Policy,
    in_force: Policy,
    *,
    start: float | None = None,
    end: float | None = None,
) -> ReplayReport:
    """Decide ``calls`` (oldest first) under ``candidate`` and ``in_force``; the report
    covers the calls from ``start`` (earlier ones only warm the limits up) to ``end``."""
    report = ReplayReport(start, end)
    _replay_calls(calls, _Replayer(candidate), _Replayer(in_force), report, start)
    return report


def _replay_calls(
    calls: Iterable[RecordedCall],
    new: _Replayer,
    old: _Replayer,
    report: ReplayReport,
    start: float | None,
) -> None:
    """Replay ``calls`` one by one."""
    for call in calls:
        if not _policys(call.basis, call.rule is not None):
            if start is None or call.time >= start:
                report.skipped += 1
            continue
        went_ahead = _approved(call)
        was, decision, was_unsure = old.decide(call, went_ahead)
        now, decision, now_unsure = new.decide(call, went_ahead)
        if start is not None and call.time < start:
            continue
        report.calls += 1
        if was != _WAS.get(call.decision):
            report.drifted += 1
        if was != now:
            report.add(
                ReplayedCall(
                    call, was, now, decision.reason, decision.rule, was_unsure or now_unsure
                )
            )


def replay_history(
    history: History, candidate: Policy, in_force: Policy, start: float, end: float
) -> ReplayReport:
    """:func:`replay` over the calls ``history`` recorded from ``start`` to ``end``, in
    three parts that give the same changes:

    - the tools the two policies decide alike, call for call (:func:`_unchanged_tools`:
      a click changes one rule) are counted from the log's hourly counts, not decided;
    - the tools whose decision, under either policy, hangs on nothing but the tool and
      the client are decided once per group of calls (the hourly counts: a week of a
      million calls is a few thousand groups);
    - the tools under a rate limit or an argument rule are replayed call by call, oldest
      first, from the longest limit's window before ``start`` (an argument rule with no
      limit decides each kind of arguments once: :meth:`_Replayer._decide_arguments`).

    ``drifted`` counts among the calls decided: a tool the change leaves alone is not
    replayed, so a difference between its record and the policy in force is not news
    about this change.
    """
    report = ReplayReport(start, end)
    new, old = _Replayer(candidate), _Replayer(in_force)
    warm = start - warm_up_seconds(candidate, in_force)
    groups = history.decided_groups(start, end)
    tools = {(g.server, g.tool) for g in groups}
    if warm < start:  # a tool called only then still charges the counters it shares
        tools.update((g.server, g.tool) for g in history.decided_groups(warm, start))
    unchanged = _unchanged_tools(candidate, in_force, tools)
    per_call = {t for t in tools - unchanged if new.per_call(*t) or old.per_call(*t)}
    for group in groups:
        tool = (group.server, group.tool)
        if tool in per_call:
            continue  # counted call by call
        if not _policys(group.basis or None, group.ruled):
            report.skipped += group.calls
        elif tool in unchanged:
            report.calls += group.calls
        else:
            _replay_group(history, group, new, old, report, start=start, end=end)
    if per_call:
        _replay_calls(history.recorded_calls(warm, end, per_call), new, old, report, start)
    return report


def _replay_group(
    history: History,
    group: DecidedGroup,
    new: _Replayer,
    old: _Replayer,
    report: ReplayReport,
    *,
    start: float,
    end: float,
) -> None:
    """Decide a group of calls whose decision hangs on its tool and client alone."""
    call = RecordedCall("", start, group.client, group.server, group.tool, "{}",
                        group.decision, group.basis, None, "")  # fmt: skip
    was, _, _ = old.decide(call, True)
    now, decision, _ = new.decide(call, True)
    report.calls += group.calls
    if was != _WAS.get(group.decision):
        report.drifted += group.calls
    if was != now:
        change = change_of(was, now)
        room = report.add_group(change, group.server, group.tool, group.client, group.calls)
        if room is not None:
            for example in history.group_examples(group, start, end, EXAMPLES - len(room)):
                room.append(ReplayedCall(example, was, now, decision.reason, decision.rule, False))


def _unchanged_tools(
    candidate: Policy, in_force: Policy, tools: Iterable[tuple[str, str]]
) -> frozenset[tuple[str, str]]:
    """The ``tools`` both policies decide alike, call for call: the same rule (pattern
    and every field as written) or both the same default, and no limit counter that a
    rule the two disagree on counts too (a counter is shared by every rule naming it)."""
    same: set[tuple[str, str]] = set()
    moved: set[str] = set()  # the counters of the rules the two disagree on
    for server, tool in tools:
        if _as_written(candidate, server, tool) == _as_written(in_force, server, tool):
            same.add((server, tool))
        else:
            moved.update(_counters(candidate, server, tool), _counters(in_force, server, tool))
    return frozenset(t for t in same if not _counters(in_force, *t) & moved)


def _as_written(policy: Policy, server: str, tool: str) -> str:
    """What decides ``tool`` under ``policy``, as written: its rule (or default), and its
    team layer's."""
    rule = policy.rule_for(server, tool)
    if rule is None:
        mine = f"default {policy.default.value}"
    else:
        spec = policy.document.get("tools", {}).get(rule.pattern.text)
        mine = rule.pattern.text + " " + json.dumps(spec, sort_keys=True)
    return mine if policy.team is None else f"{mine} | {_as_written(policy.team, server, tool)}"


def _counters(policy: Policy, server: str, tool: str) -> set[str]:
    """The counters a call to ``tool`` is counted on, in either layer."""
    found: set[str] = set()
    for layer in (policy, policy.team):
        rule = None if layer is None else layer.rule_for(server, tool)
        if rule is not None:
            found.update(limit.counter for limit in rule.limits)
    return found


def _policys(basis: str | None, ruled: bool) -> bool:
    """Whether a call recorded with ``basis`` was decided by the policy (or a person it
    asked), not by Lockgate's own state."""
    return basis in _POLICY_BASES and not (basis == "arguments" and not ruled)


def _approved(call: RecordedCall) -> bool:
    """Whether the call would go ahead if a policy asked about it: its person approved
    it, or nobody was asked (it was allowed); a refused or denied one would not."""
    return call.decision in ("allowed", "approved")


class _Replayer:
    """One policy's side of a replay: its counters, and what it decides worked out once
    where that hangs on nothing that changes from call to call."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.counters = Counters()
        self._fixed: dict[tuple[str, str, str], tuple[str, Decision]] = {}
        self._rules: dict[tuple[str, str], _ToolRules] = {}
        self._calls: dict[tuple[str, str, str], ToolCall] = {}  # for a limit alone
        # the calls whose decision hangs on their arguments and no limit, by what of
        # them it reads
        self._by_arguments: dict[tuple[object, ...], tuple[str, Decision, bool]] = {}

    def _rule(self, server: str, tool: str) -> _ToolRules:
        known = self._rules.get((server, tool))
        if known is None:
            layers = [self.policy] if self.policy.team is None else [self.policy, self.policy.team]
            rules = [r for r in (layer.rule_for(server, tool) for layer in layers) if r is not None]
            windows = {lim.counter: lim.window for r in rules for lim in r.limits}
            reading = [r for r in rules if _hangs_on_arguments(r)]
            known = self._rules[server, tool] = _ToolRules(
                bool(reading), windows, _keys_read(reading), any(r.cases for r in rules)
            )
        return known

    def per_call(self, server: str, tool: str) -> bool:
        """Whether this policy must see each call to the tool: a rate limit, or a rule
        that hangs on the arguments."""
        rules = self._rule(server, tool)
        return rules.needs_arguments or bool(rules.windows)

    def decide(self, call: RecordedCall, approved: bool) -> tuple[str, Decision, bool]:
        """The verdict, its decision, and whether it hangs on redacted arguments; the
        counters charged as the gateway would have."""
        key = (call.server, call.tool, call.client)
        fixed = self._fixed.get(key)
        if fixed is not None:
            return fixed[0], fixed[1], False
        rules = self._rule(call.server, call.tool)
        needs_arguments, windows = rules.needs_arguments, rules.windows
        if needs_arguments:
            if not windows:
                return self._decide_arguments(call, rules)
            arguments = _arguments(call.arguments)
            tool_call = ToolCall(call.server, call.tool, arguments, call.client)
            unsure = _cut(arguments)
        else:
            tool_call = self._calls.get(key) or self._calls.setdefault(
                key, ToolCall(call.server, call.tool, {}, call.client)
            )
            unsure = False
        decision = decide(self.policy, tool_call, self.counters, call.time)
        verdict = decision.verdict.value
        if not (needs_arguments or windows):
            self._fixed[key] = (verdict, decision)
            return verdict, decision, False
        goes = decision.verdict is Verdict.ALLOW or (decision.verdict is Verdict.ASK and approved)
        if goes and decision.charges and call.outcome not in _REFUNDED:
            self.counters.record(decision.charges, call.time, windows)
        return verdict, decision, unsure

    def _decide_arguments(
        self, call: RecordedCall, rules: _ToolRules
    ) -> tuple[str, Decision, bool]:
        """A call whose decision hangs on its arguments and on no counter: calls whose
        arguments agree on what the rules read (the top-level properties their schemas
        name, else the whole text), and by clients alike to the rules, are decided alike,
        so each such kind is decided once (agents repeat themselves)."""
        keys = rules.keys
        client = call.client if rules.by_client else ""
        arguments: Mapping[str, Any] | None = None
        if keys is None:
            key: tuple[object, ...] = (call.server, call.tool, client, call.arguments)
        else:
            arguments = _arguments(call.arguments)
            read = tuple(json.dumps(arguments[k]) if k in arguments else None for k in keys)
            key = (call.server, call.tool, client, "_truncated" in arguments, read)
        known = self._by_arguments.get(key)
        if known is None:
            if arguments is None:
                arguments = _arguments(call.arguments)
            tool_call = ToolCall(call.server, call.tool, arguments, call.client)
            decision = decide(self.policy, tool_call, self.counters, call.time)
            seen = arguments if keys is None else {k: arguments[k] for k in keys if k in arguments}
            unsure = "_truncated" in arguments or _cut(seen)
            known = (decision.verdict.value, decision, unsure)
            if len(self._by_arguments) >= _ARGUMENTS_KEPT:
                self._by_arguments.clear()  # bounded: arguments are up to the log's cap each
            self._by_arguments[key] = known
        return known


class _ToolRules(NamedTuple):
    """What of a call one policy's rules for its tool (in either layer) look at."""

    needs_arguments: bool  # a rule decides by the arguments
    windows: dict[str, float]  # the limits' windows, by counter
    keys: tuple[str, ...] | None  # the top-level arguments they read (None: maybe all)
    by_client: bool  # a rule has cases, which may name clients


def _keys_read(rules: Iterable[Rule]) -> tuple[str, ...] | None:
    """The top-level properties of the arguments that ``rules``' schemas (their own and
    their cases') read, in a fixed order; None if any may read more."""
    keys: set[str] = set()
    for rule in rules:
        for schema in (rule.arguments, *(case.arguments for case in rule.cases)):
            read = frozenset() if schema is None else keys_read(schema)
            if read is None:
                return None
            keys |= read
    return tuple(sorted(keys))


def _hangs_on_arguments(rule: Rule | None) -> bool:
    """Whether ``rule`` decides a call by its arguments (one it denies outright, it does
    not, whatever schema it has)."""
    return rule is not None and rule.reads_arguments and not rule.denies_outright


def _arguments(text: str) -> Mapping[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _cut(value: Any) -> bool:
    """Whether the log's copy of the arguments lost something: a value redacted, or the
    whole cut to a preview."""
    if isinstance(value, dict):
        return "_truncated" in value or any(_cut(v) for v in value.values())
    if isinstance(value, list):
        return any(_cut(v) for v in value)
    return isinstance(value, str) and "[redacted]" in value
