"""policy.json: the model, the loader and its errors.

A policy is parsed whole or not at all: :func:`parse_policy` either returns a complete
:class:`Policy` or raises :class:`PolicyError` listing every problem it found, each with
the file, line, column and JSON path. The file's own JSON Schema (shipped as
``resources/policy.schema.json``) is the first check; the rules it cannot express (pattern
syntax, argument schemas, fields that make no sense together) come after.
"""

from __future__ import annotations

import difflib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

import jsonschema
from jsonschema.exceptions import ValidationError, relevance

from proxy.config.jsontext import JsonPath, Locations, format_path, locate, nesting_beyond
from proxy.errors import LockgateError
from proxy.policy.argschema import ArgumentSchemaError, compile_arguments_schema
from proxy.policy.patterns import PatternError, Specificity, ToolPattern

__all__ = [
    "DEFAULT_APPROVAL_TIMEOUT",
    "MAX_POLICY_BYTES",
    "SUPPORTED_VERSIONS",
    "TEAM_COUNTER_PREFIX",
    "Action",
    "Case",
    "Limit",
    "PinningSettings",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Rule",
    "Scope",
    "SecretsMode",
    "default_policy",
    "load_policy",
    "parse_policy",
    "parse_policy_bytes",
    "policy_schema",
    "read_policy_bytes",
    "team_layer",
]

SUPPORTED_VERSIONS: Final = ("1",)
DEFAULT_APPROVAL_TIMEOUT: Final = 120.0
MAX_POLICY_BYTES: Final = 8 * 1024 * 1024
MAX_NESTING: Final = 64
NAMED_WINDOWS: Final = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_RESOLVE_CACHE_SIZE: Final = 4096


class Action(StrEnum):
    """What a rule does with a call."""

    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"

    @classmethod
    def from_json(cls, value: str) -> Action:
        return cls.ASK if value == "require_approval" else cls(value)


class SecretsMode(StrEnum):
    """What happens to a tool result that holds a secret (``"results": {"secrets": ...}``)."""

    ALLOW = "allow"  # not looked at
    REDACT = "redact"  # each secret replaced by a marker; the rest reaches the agent
    BLOCK = "block"  # the agent gets an error that says what was found, not the result
    ASK = "ask"  # a person sees what was found and lets it through, or not


@dataclass(frozen=True, slots=True)
class PinningSettings:
    """How tool definitions are trusted (``"pinning"``): a tool or server Lockgate has not
    seen before is trusted on first use or held until a person accepts it; a tool whose
    definition has poisoning findings is only shown with them, or held."""

    new_tools: str = "trust"  # "trust" | "quarantine": a new tool on a known server
    new_servers: str = "trust"  # "trust" | "quarantine": every tool of a new server
    findings: str = "show"  # "show" | "quarantine": a tool with poisoning findings


class Scope(StrEnum):
    """Whom a rate-limit counter counts: each client (grant) or all of them (global)."""

    GRANT = "grant"
    GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``max`` calls in any ``window`` seconds, counted on ``counter``."""

    counter: str
    window: float
    max: int
    scope: Scope = Scope.GRANT


@dataclass(frozen=True, slots=True, eq=False)
class Case:
    """One entry of a rule's ``when``: calls it holds for get its action instead of the
    rule's own.

    It holds when every condition it has holds: the call's client is one of ``clients``
    (``None``: any client), and its arguments satisfy ``arguments`` (``None``: any). A
    case's ``arguments`` schema is a condition, not a block: arguments that fail it only
    mean the case does not apply.
    """

    index: int  # its place in the rule's "when" list, from 0
    action: Action
    clients: frozenset[str] | None = None
    arguments: Mapping[str, Any] | bool | None = None
    reason: str | None = None
    approval_timeout: float | None = None  # None: not written (the rule's, else the default)
    _validator: Any = field(default=None, repr=False)

    def holds_for_client(self, client: str) -> bool:
        return self.clients is None or client in self.clients

    def arguments_match(self, arguments: Any) -> bool:
        """Whether ``arguments`` satisfy this case's schema (no schema: they do).

        Raises:
            Exception: whatever validation raises; callers must treat that as a denial.
        """
        if self._validator is None:
            return True
        return bool(self._validator.is_valid(arguments))


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One entry of ``tools``: a pattern and what happens to calls it matches."""

    pattern: ToolPattern
    index: int
    action: Action = Action.ALLOW
    reason: str | None = None
    description: str | None = None
    limits: tuple[Limit, ...] = ()
    arguments: Mapping[str, Any] | bool | None = None
    approval_timeout: float | None = None  # None: not written; the gateway's default applies
    hide: bool = False
    cases: tuple[Case, ...] = ()  # "when", in order: the first that holds decides
    timeout: float | None = None  # seconds a call may run upstream before it is cancelled
    secrets: SecretsMode | None = None  # its results' secrets; None: the policy's default
    _validator: Any = field(default=None, repr=False)

    @property
    def denies_outright(self) -> bool:
        """Whether it denies every call it matches, whatever the client or the arguments
        (a deny without cases): nothing else of it is looked at."""
        return self.action is Action.DENY and not self.cases

    @property
    def reads_arguments(self) -> bool:
        """Whether what it decides can hang on a call's arguments: a schema of its own,
        or a case with one."""
        return self._validator is not None or any(c._validator is not None for c in self.cases)

    @property
    def hides(self) -> bool:
        """Whether the tools it matches are hidden: left out of ``tools/list`` and refused
        as unknown (only a deny rule hides)."""
        return self.hide and self.action is Action.DENY

    def argument_errors(self, arguments: Any) -> list[ValidationError]:
        """Every way ``arguments`` fails this rule's ``arguments`` schema, the most relevant
        first (none: it passes).

        Raises:
            Exception: whatever validation raises; callers must treat that as a denial.
        """
        if self._validator is None:
            return []
        return sorted(self._validator.iter_errors(arguments), key=relevance, reverse=True)


@dataclass(frozen=True, eq=False)
class Policy:
    """A validated policy, ready for :func:`proxy.policy.decide.decide`. Immutable once built."""

    default: Action
    rules: tuple[Rule, ...] = ()
    version: str = "1"
    description: str | None = None
    source: str | None = None
    document: Mapping[str, Any] = field(default_factory=dict, repr=False)
    secrets: SecretsMode = SecretsMode.REDACT  # results' secrets where no rule says
    pinning: PinningSettings = PinningSettings()
    # the team's layer above this policy (:meth:`with_team`); None: this file alone
    team: Policy | None = field(default=None, repr=False)
    _exact_scoped: dict[tuple[str, str], Rule] = field(init=False, repr=False)
    _exact_tool: dict[str, Rule] = field(init=False, repr=False)
    _scoped_globs: dict[str, tuple[Rule, ...]] = field(init=False, repr=False)
    _globs: tuple[Rule, ...] = field(init=False, repr=False)
    _cache: dict[tuple[str, str], Rule | None] = field(init=False, repr=False)
    # decide's own: what this policy decides a call that hangs on no arguments (see
    # proxy.policy.decide._settle), kept as the resolve cache is
    settled: dict[Any, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        exact_scoped: dict[tuple[str, str], Rule] = {}
        exact_tool: dict[str, Rule] = {}
        scoped: dict[str, list[Rule]] = {}
        globs: list[Rule] = []
        for rule in self.rules:
            pat = rule.pattern
            if pat.specificity is Specificity.EXACT_SCOPED:
                assert pat.server is not None
                exact_scoped.setdefault((pat.server, pat.tool), rule)
            elif pat.specificity is Specificity.EXACT_TOOL:
                exact_tool.setdefault(pat.tool, rule)
            elif pat.specificity is Specificity.GLOB_SCOPED:
                assert pat.server is not None
                scoped.setdefault(pat.server, []).append(rule)
            else:
                globs.append(rule)

        def by_rank(rule: Rule) -> tuple[int, int, int]:
            return rule.pattern.rank(rule.index)

        object.__setattr__(self, "_exact_scoped", exact_scoped)
        object.__setattr__(self, "_exact_tool", exact_tool)
        object.__setattr__(
            self, "_scoped_globs", {s: tuple(sorted(r, key=by_rank)) for s, r in scoped.items()}
        )
        object.__setattr__(self, "_globs", tuple(sorted(globs, key=by_rank)))
        object.__setattr__(self, "_cache", {})
        object.__setattr__(self, "settled", {})

    def rule_for(self, server: str, tool: str) -> Rule | None:
        """The one rule that applies to ``tool`` on ``server``; ``None``: the default applies."""
        key = (server, tool)
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        rule = self._resolve(server, tool)
        if len(cache) >= _RESOLVE_CACHE_SIZE:
            cache.clear()  # bounded: an agent inventing tool names cannot grow it
        cache[key] = rule
        return rule

    def _resolve(self, server: str, tool: str) -> Rule | None:
        rule = self._exact_scoped.get((server, tool)) or self._exact_tool.get(tool)
        if rule is not None:
            return rule
        for candidate in self._scoped_globs.get(server, ()):
            if candidate.pattern.matches(server, tool):
                return candidate
        for candidate in self._globs:
            if candidate.pattern.matches(server, tool):
                return candidate
        return None

    def secrets_of(self, server: str, tool: str) -> SecretsMode:
        """What happens to secrets in the results of ``tool`` on ``server``: its rule's
        ``results``, else the policy's; with a team layer, the stricter of the two."""
        rule = self.rule_for(server, tool)
        mine = rule.secrets if rule is not None and rule.secrets is not None else self.secrets
        if self.team is None:
            return mine
        return max(mine, self.team.secrets_of(server, tool), key=_SECRETS_ORDER.index)

    @property
    def secrets_by_default(self) -> SecretsMode:
        """What happens to secrets in a result no tool's rule is known for (a task's):
        the policy's ``results``; with a team layer, the stricter of the two."""
        if self.team is None:
            return self.secrets
        return max(self.secrets, self.team.secrets_by_default, key=_SECRETS_ORDER.index)

    def timeout_of(self, server: str, tool: str) -> float | None:
        """How long a call to ``tool`` may run upstream (its rule's ``timeout``); with a
        team layer, the shorter of the two; None: no bound."""
        rule = self.rule_for(server, tool)
        found = [] if rule is None or rule.timeout is None else [rule.timeout]
        if self.team is not None and (theirs := self.team.timeout_of(server, tool)) is not None:
            found.append(theirs)
        return min(found, default=None)

    def hides(self, server: str, tool: str) -> bool:
        """Whether ``tool`` is hidden (a deny rule with ``hide``), by this policy or its
        team layer."""
        rule = self.rule_for(server, tool)
        if rule is not None and rule.hides:
            return True
        return self.team is not None and self.team.hides(server, tool)

    @property
    def all_rules(self) -> tuple[Rule, ...]:
        """This policy's rules and its team layer's (whose limits count too)."""
        return self.rules if self.team is None else self.rules + self.team.rules

    @property
    def says_default(self) -> bool:
        """Whether the file writes its ``default`` (a team layer without one has no say
        over a call none of its rules matches)."""
        return "default" in self.document

    def with_team(self, team: Policy | None) -> Policy:
        """This policy under ``team`` (a team's layer, :func:`team_layer`): every call is
        decided by both and the stricter decision stands (deny over ask over allow), each
        layer's limits must pass, and results' secrets, timeouts and tool pinning take the
        stricter of the two. None: this policy alone."""
        mine = replace(self, team=None) if self.team is not None else self
        if team is None:
            return mine
        pinning = PinningSettings(
            new_tools=_stricter_pin(mine.pinning.new_tools, team.pinning.new_tools),
            new_servers=_stricter_pin(mine.pinning.new_servers, team.pinning.new_servers),
            findings=_stricter_pin(mine.pinning.findings, team.pinning.findings),
        )
        secrets = max(mine.secrets, team.secrets, key=_SECRETS_ORDER.index)
        return replace(mine, team=team, pinning=pinning, secrets=secrets)

    def candidates(self, server: str, tool: str) -> list[Rule]:
        """Every rule that matches, most specific first (the first one decides)."""
        matching = [r for r in self.rules if r.pattern.matches(server, tool)]
        return sorted(matching, key=lambda r: r.pattern.rank(r.index))


# results' secrets modes, the least strict first
_SECRETS_ORDER: Final = (SecretsMode.ALLOW, SecretsMode.REDACT, SecretsMode.ASK, SecretsMode.BLOCK)


def _stricter_pin(mine: str, theirs: str) -> str:
    """Of two pinning settings, the stricter: quarantine over trust and show."""
    return "quarantine" if "quarantine" in (mine, theirs) else mine


TEAM_COUNTER_PREFIX: Final = "team:"


def team_layer(policy: Policy) -> Policy:
    """``policy`` as a team's layer: its limits count on counters of their own (named
    ``team:NAME``), so that no rule of a person's policy.json shares, and so drains or
    refills, a team's budget."""
    rules = tuple(
        replace(
            rule,
            limits=tuple(
                replace(limit, counter=TEAM_COUNTER_PREFIX + limit.counter) for limit in rule.limits
            ),
        )
        for rule in policy.rules
    )
    return replace(policy, rules=rules, team=None)


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy file."""

    path: JsonPath
    message: str
    line: int | None = None
    column: int | None = None

    def render(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}:{self.column}"
        return f"{where}: {format_path(self.path)}: {self.message}"


class PolicyError(LockgateError):
    """A policy file that cannot be used; ``issues`` lists every problem found."""

    title = "policy.json cannot be used"

    def __init__(self, source: str, issues: Iterable[PolicyIssue]) -> None:
        self.source = source
        self.issues = tuple(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(issue.render(self.source) for issue in self.issues)

    @property
    def first(self) -> PolicyIssue:
        return self.issues[0]


@cache
def policy_schema() -> dict[str, Any]:
    """The JSON Schema of policy.json, as shipped in ``resources/``."""
    text = resources.files("lockgate_resources").joinpath("policy.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _schema_validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(policy_schema())


def load_policy(path: Path | str) -> Policy:
    """Read and validate the policy file at ``path``.

    Raises:
        PolicyError: the file cannot be read, is not JSON, or is not a valid policy.
    """
    return parse_policy_bytes(read_policy_bytes(path), str(path))


def read_policy_bytes(path: Path | str) -> bytes:
    """The bytes of a policy file: a regular file, at most ``MAX_POLICY_BYTES``.

    Raises:
        PolicyError: missing, not a regular file, too large, or unreadable.
    """
    path = Path(path)
    source = str(path)
    try:
        # Not blocking: a FIFO would block a plain open(). What was opened is then looked
        # at, not the path again: nothing can swap the file in between.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(source)
            if not stat.S_ISREG(mode):  # a FIFO, a device (which would never end)
                raise PolicyError(source, [PolicyIssue((), "is not a regular file")])
            handle = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError(
                source, [PolicyIssue((), f"file is over the limit of {MAX_POLICY_BYTES} bytes")]
            )
    except FileNotFoundError:
        raise PolicyError(source, [PolicyIssue((), "no such file")]) from None
    except IsADirectoryError:
        raise PolicyError(source, [PolicyIssue((), "is a directory, not a file")]) from None
    except OSError as exc:
        raise PolicyError(source, [PolicyIssue((), f"cannot read: {exc.strerror}")]) from None
    return data


def parse_policy_bytes(data: bytes, source: str) -> Policy:
    """Parse and validate a policy from the bytes of a file (UTF-8, BOM allowed).

    Raises:
        PolicyError: not UTF-8, or as :func:`parse_policy`.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            source, [PolicyIssue((), f"not UTF-8 text (byte {exc.start} cannot be decoded)")]
        ) from None
    return parse_policy(text, source)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy from its JSON text.

    Raises:
        PolicyError: every problem found, each with line, column and JSON path.
    """
    too_deep = nesting_beyond(text, MAX_NESTING)
    if too_deep is not None:
        line = text.count("\n", 0, too_deep) + 1
        column = too_deep - (text.rfind("\n", 0, too_deep) + 1) + 1
        message = f"nested more than {MAX_NESTING} levels deep"
        raise PolicyError(source, [PolicyIssue((), message, line, column)])
    try:
        duplicated = [False]

        def pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            built = dict(pairs)
            if len(built) != len(pairs):
                duplicated[0] = True
            return built

        document = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=pairs_to_dict
        )
    except json.JSONDecodeError as exc:
        issue = PolicyIssue((), f"not valid JSON: {exc.msg}", exc.lineno, exc.colno)
        raise PolicyError(source, [issue]) from None
    except ValueError as exc:  # NaN/Infinity, integers of thousands of digits
        raise PolicyError(source, [PolicyIssue((), f"not valid JSON: {exc}")]) from None
    locs = locate(text)
    issues = [
        _issue(path, f"duplicate key {path[-1]!r}: JSON keeps only the last one", locs, at=offset)
        for path, offset in (locs.duplicates if duplicated[0] else ())
    ]
    if not isinstance(document, dict):
        issues.append(_issue((), 'a policy is a JSON object: {"version": "1", ...}', locs))
        raise PolicyError(source, issues)
    issues.extend(_schema_issues(document, locs))
    if issues:
        raise PolicyError(source, _ordered(issues))
    rules, rule_issues = _build_rules(document.get("tools", {}), locs)
    if rule_issues:
        raise PolicyError(source, _ordered(rule_issues))
    return Policy(
        default=Action.from_json(document.get("default", "ask")),
        rules=tuple(rules),
        version=document["version"],
        description=document.get("description"),
        source=source,
        document=document,
        secrets=_secrets_mode(document) or SecretsMode.REDACT,
        pinning=_pinning(document.get("pinning", {})),
    )


@cache
def default_policy() -> Policy:
    """The built-in policy that applies while there is no policy.json (``resources/``)."""
    text = resources.files("lockgate_resources").joinpath("default-policy.json").read_text("utf-8")
    return parse_policy(text, "<built-in default policy>")


def _reject_constant(name: str) -> Any:
    """Python's json reads NaN and Infinity; JSON has neither, and NaN slips past every
    numeric bound of the schema (it compares false with everything)."""
    raise ValueError(f"{name} is not a JSON number")


def _ordered(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    return sorted(issues, key=lambda i: (i.line or 0, i.column or 0, format_path(i.path)))


def _issue(
    path: JsonPath, message: str, locs: Locations, at: int | None = None, *, key: bool = False
) -> PolicyIssue:
    """An issue located at ``at`` (an offset), else at the key or value ``path`` names."""
    if at is not None:
        pos: tuple[int, int] | None = locs.offset_to_line_col(at)
    else:
        pos = locs.key_line_col(path) if key else locs.line_col(path)
    line, column = pos if pos else (None, None)
    return PolicyIssue(path, message, line, column)


def _schema_issues(document: dict[str, Any], locs: Locations) -> list[PolicyIssue]:
    issues: list[PolicyIssue] = []
    for error in _schema_validator().iter_errors(document):
        issues.extend(_translate(error, locs))
    return issues


def _translate(error: ValidationError, locs: Locations) -> list[PolicyIssue]:
    """One schema error as issues a person can act on."""
    path: JsonPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key in known:
                continue
            hint = difflib.get_close_matches(key, known, n=1)
            message = "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            # every closed object of the schema names its fields (tests/proxy/policy/
            # test_model.py keeps it so)
            message += "; fields here: " + ", ".join(known)
            out.append(_issue((*path, key), message, locs, key=True))
        return out
    if error.validator == "required":
        message = error.message.replace("is a required property", "is required")
        if path == () and "'version'" in message:
            message += "; supported versions: " + ", ".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
        return [_issue(path, message, locs)]
    custom = _custom_message(error)
    if custom is not None:
        return [_issue(path, f"{custom}; got {json.dumps(error.instance)}", locs)]
    if error.validator == "type":
        expected = schema.get("type")
        kinds = " or ".join(expected) if isinstance(expected, list) else str(expected)
        return [_issue(path, f"must be {_article(kinds)}; got {json.dumps(error.instance)}", locs)]
    return [_issue(path, error.message, locs)]


def _custom_message(error: ValidationError) -> str | None:
    """The ``errorMessage`` of the schema that failed, if it has one (errors come from
    ``iter_errors`` at the top level: there is no parent to look in)."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    message = schema.get("errorMessage")
    return message if isinstance(message, str) else None


def _article(kind: str) -> str:
    return ("an " if kind[:1] in "aeiou" else "a ") + kind


def _limit(counter: str, spec: Mapping[str, Any]) -> Limit:
    window = spec["window"]
    return Limit(
        counter=counter,
        window=NAMED_WINDOWS[window] if isinstance(window, str) else float(window),
        max=spec["max"],
        scope=Scope(spec.get("scope", "grant")),
    )


def _build_rules(tools: dict[str, Any], locs: Locations) -> tuple[list[Rule], list[PolicyIssue]]:
    rules: list[Rule] = []
    issues: list[PolicyIssue] = []
    for index, (text, spec) in enumerate(tools.items()):
        here: JsonPath = ("tools", text)
        before = len(issues)
        try:
            pattern = ToolPattern.parse(text)
        except PatternError as exc:
            issues.append(_issue(here, str(exc), locs))
            continue
        action = Action.from_json(spec.get("action", "allow"))
        limits = [_limit(item["counter"], item) for item in spec.get("limits", [])]
        if "rate_limit" in spec:
            limits.append(_limit(text, spec["rate_limit"]))
        # Fields a rule's action does not use (limits on a deny rule, say) are kept, not
        # refused: the app preserves them when a click changes the action, so switching
        # back restores them. Refused are only the combinations that mislead: approval
        # on a rule with no action (it allows, though the writer surely meant ask) and
        # hide on a tool that is not denied.
        if "approval" in spec and "action" not in spec:
            issues.append(
                _issue(
                    (*here, "approval"),
                    'this rule has no action, so it allows every call; add "action": "ask"',
                    locs,
                )
            )
        if spec.get("hide") and action is not Action.DENY:
            issues.append(
                _issue((*here, "hide"), 'hides the tool, so it needs action "deny"', locs)
            )
        if spec.get("hide") and "when" in spec:
            issues.append(
                _issue(
                    (*here, "when"),
                    "a hidden tool is hidden from every client, so no case can show it to "
                    'some of them; remove "hide" (the tool is then listed, and denied unless '
                    'a case allows it) or remove "when"',
                    locs,
                )
            )
        validator = _arguments_validator(spec, here, locs, issues)
        cases = [
            _case(index, case, (*here, "when", index), locs, issues)
            for index, case in enumerate(spec.get("when", []))
        ]
        if len(issues) > before:
            continue
        rules.append(
            Rule(
                pattern=pattern,
                index=index,
                action=action,
                reason=spec.get("reason"),
                description=spec.get("description"),
                limits=tuple(limits),
                arguments=spec.get("arguments"),
                approval_timeout=_approval_timeout(spec),
                hide=bool(spec.get("hide", False)),
                cases=tuple(cases),
                timeout=None if "timeout" not in spec else float(spec["timeout"]),
                secrets=_secrets_mode(spec),
                _validator=validator,
            )
        )
    return rules, issues


def _secrets_mode(spec: Mapping[str, Any]) -> SecretsMode | None:
    mode = spec.get("results", {}).get("secrets")
    return None if mode is None else SecretsMode(mode)


def _pinning(spec: Mapping[str, Any]) -> PinningSettings:
    return PinningSettings(
        new_tools=spec.get("new_tools", "trust"),
        new_servers=spec.get("new_servers", "trust"),
        findings=spec.get("findings", "show"),
    )


def _approval_timeout(spec: Mapping[str, Any]) -> float | None:
    timeout = spec.get("approval", {}).get("timeout")
    return None if timeout is None else float(timeout)


def _arguments_validator(
    spec: Mapping[str, Any], here: JsonPath, locs: Locations, issues: list[PolicyIssue]
) -> Any:
    """The compiled ``arguments`` schema of a rule or a case (None: it has none); its
    problems go to ``issues``."""
    if "arguments" not in spec:
        return None
    try:
        return compile_arguments_schema(spec["arguments"])
    except ArgumentSchemaError as exc:
        issues.extend(
            _issue((*here, "arguments", *sub), message, locs) for sub, message in exc.problems
        )
        return None


def _case(
    index: int, spec: Mapping[str, Any], here: JsonPath, locs: Locations, issues: list[PolicyIssue]
) -> Case:
    clients = spec.get("clients")
    return Case(
        index=index,
        action=Action.from_json(spec["action"]),
        clients=None if clients is None else frozenset(clients),
        arguments=spec.get("arguments"),
        reason=spec.get("reason"),
        approval_timeout=_approval_timeout(spec),
        _validator=_arguments_validator(spec, here, locs, issues),
    )
