"""Changing one tool's rule in policy.json the way a careful person would by hand.

The app's rule controls ("block this tool", "ask every time", a rate limit) edit the same
file a person edits, so an edit touches only the one rule: the new rule's text replaces
the old rule's text (or is added as the last entry of ``tools``) and every other byte of
the file stays as it was: comments in ``description`` fields, key order, indentation,
rules the app knows nothing about. Fields of the old rule that the change does not
mention are kept (a reason or an approval timeout survives a switch from ask to deny).

The result is checked by the same loader the gateway uses before it is written, and it is
written atomically. The app then has the gateway load it at once
(:meth:`Gateway.reload_policy <proxy.gateway.core.Gateway.reload_policy>`) and says the rule is
in force only after that; the watcher's own event for the same content changes nothing
(its hash check). A file that does not parse now is never edited: the person is in the
middle of changing it.

The cases of a rule's ``when`` are written the same way: :func:`allow_for_client` and
:func:`allow_exact_arguments` add one (creating the exact rule, with the action the tool
has now, if there is none, so other clients keep what they had), :func:`remove_case`
takes one away. A rule with cases is written with one line per case.
"""

from __future__ import annotations

import codecs
import json
import tempfile
from collections.abc import Callable, Mapping
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Final

from proxy.config.atomic import write_atomic
from proxy.config.jsontext import Locations, indent_unit, line_indent, locate, splice, value_end
from proxy.errors import LockgateError
from proxy.policy.model import (
    Action,
    PolicyError,
    Rule,
    load_policy,
    parse_policy,
    parse_policy_bytes,
    read_policy_bytes,
)

__all__ = [
    "MAX_EXACT_ARGUMENTS_BYTES",
    "PolicyEditError",
    "allow_exact_arguments",
    "allow_for_client",
    "allow_narrowly",
    "edit_rule",
    "exact_arguments_schema",
    "preview",
    "remove_case",
    "rule_text",
]

MAX_EXACT_ARGUMENTS_BYTES: Final = 4096  # beyond that, "exactly these" is no readable rule


class _Same(Enum):
    """What a change returns when the file already says what it asks: nothing to write."""

    AS_IT_IS = "as it is"


# old rule (its JSON, and as parsed; None: there is none) -> the changes for edit_rule
_Change = Callable[[Mapping[str, Any] | None, Rule | None], Mapping[str, Any] | _Same | None]


class PolicyEditError(LockgateError):
    """The rule could not be changed; the message says why, for a person."""

    title = "The rule was not changed"


def edit_rule(path: Path, pattern: str, changes: Mapping[str, Any] | None) -> bytes:
    """Set the rule for ``pattern`` in the policy file at ``path``; returns the new text.

    ``changes`` are merged into the existing rule (a value of None removes that field);
    ``changes=None`` removes the rule. A missing file starts from the shipped default
    policy.

    Raises:
        PolicyEditError: the file is broken now, or the change would make it invalid
            (the file is left as it was), or it cannot be written.
    """
    return _edit(path, pattern, lambda _old, _rule: changes)


def allow_for_client(path: Path, pattern: str, client: str, base_action: Action | str) -> bytes:
    """Allow every call of ``client`` that the rule for ``pattern`` covers: a case
    ``{"clients": [client], "action": "allow"}``; returns the new text.

    An existing case of that shape gets the client added to its list; a case that names
    the client without arguments and does not allow (it would decide first) loses it. A
    case for the client with ``arguments`` stays before it: it is more specific. With no
    rule for exactly ``pattern``, one is made with ``action`` ``base_action`` (the action
    the tool has now), so other clients are unaffected. If the client's calls are allowed
    by such a case already, nothing is written.

    Raises:
        PolicyEditError: as :func:`edit_rule` (a rule that hides its tool cannot have cases).
    """

    def change(old: Mapping[str, Any] | None, _rule: Rule | None) -> Mapping[str, Any] | _Same:
        new_case = {"clients": [client], "action": Action.ALLOW.value}
        if old is None:
            return {"action": _action_text(base_action), "when": [new_case]}
        cases = [dict(case) for case in old.get("when", [])]
        for index, case in enumerate(cases):
            if "arguments" in case or client not in case.get("clients", ()):
                continue
            # the first case for every call of this client: it decides them
            if Action.from_json(case["action"]) is Action.ALLOW:
                return _Same.AS_IT_IS
            others = [name for name in case["clients"] if name != client]
            if others:
                cases[index] = {**case, "clients": others}
            else:
                del cases[index]
            break
        for case in cases:
            if set(case) == {"clients", "action"} and case["action"] == Action.ALLOW.value:
                case["clients"] = [*case["clients"], client]
                break
        else:
            cases.append(new_case)
        return {"when": cases}

    return _edit(path, pattern, change)


def allow_exact_arguments(
    path: Path,
    pattern: str,
    arguments: Mapping[str, Any],
    base_action: Action | str,
    client: str | None = None,
) -> bytes:
    """Allow calls with exactly ``arguments`` (of ``client`` only, if given) under the rule
    for ``pattern``: a case whose ``arguments`` are :func:`exact_arguments_schema`; returns
    the new text.

    The case goes before the first case that would hold for such a call (it would decide
    first), else last. With no rule for exactly ``pattern``, one is made with ``action``
    ``base_action``, as in :func:`allow_for_client`. The rule's limits still apply. If the
    same case is there already and decides such calls, nothing is written.

    Raises:
        PolicyEditError: the arguments are no JSON object, or over
            :data:`MAX_EXACT_ARGUMENTS_BYTES` of JSON, or the rule's own ``arguments``
            schema blocks them (no case can allow those); or as :func:`edit_rule`.
    """
    new_case: dict[str, Any] = {} if client is None else {"clients": [client]}
    new_case.update(arguments=exact_arguments_schema(arguments), action=Action.ALLOW.value)

    def change(old: Mapping[str, Any] | None, rule: Rule | None) -> Mapping[str, Any] | _Same:
        if old is None or rule is None:
            return {"action": _action_text(base_action), "when": [new_case]}
        try:
            blocked = bool(rule.argument_errors(arguments))
        except Exception:  # decide denies these arguments: so does the rule, then
            blocked = True
        if blocked:
            raise PolicyEditError(
                f"the rule for {pattern!r} blocks these arguments itself (its own "
                '"arguments" schema), and no case can allow what that schema blocks; change '
                "the rule's schema instead"
            )
        cases = list(old.get("when", []))
        first = len(cases)
        for case in rule.cases:
            if client is not None and not case.holds_for_client(client):
                continue
            try:
                holds = case.arguments_match(arguments)
            except Exception:  # decide denies there: the new case must come first
                holds = True
            if holds:
                first = case.index
                break
        if first < len(cases) and cases[first] == new_case:
            return _Same.AS_IT_IS
        cases.insert(first, new_case)
        return {"when": cases}

    return _edit(path, pattern, change)


def allow_narrowly(
    path: Path,
    server: str,
    tool: str,
    *,
    client: str | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> bytes:
    """ "Always allow" from an approval, for ``client`` only and/or for exactly
    ``arguments``: a case on the rule for exactly ``server/tool``; returns the new text.

    A tool governed by a wider rule (a glob, a bare tool name, the policy's default) first
    gets a rule of its own that is a copy of that one (its action, reason, limits on the
    same counters, arguments, approval), so every other call of it is decided as before.

    Raises:
        PolicyEditError: as :func:`allow_for_client` and :func:`allow_exact_arguments`;
            or neither ``client`` nor ``arguments`` is given.
    """
    if client is None and arguments is None:
        raise PolicyEditError("say whom or which arguments to allow (else it is a plain allow)")
    pattern = f"{server}/{tool}"

    def copy_of_the_rule_in_force(old: Mapping[str, Any] | None, _: Rule | None) -> Any:
        if old is not None:
            return _Same.AS_IT_IS
        return _governing_rule(path, server, tool)

    _edit(path, pattern, copy_of_the_rule_in_force)
    if arguments is None:
        assert client is not None
        return allow_for_client(path, pattern, client, Action.ASK)  # the rule exists now
    return allow_exact_arguments(path, pattern, arguments, Action.ASK, client)


def preview(path: Path, edit: Callable[[Path], bytes]) -> bytes:
    """What ``edit`` (one of this module's changes, given a policy file's path) would make
    of the policy file at ``path``, which is not touched: the change is made to a private
    copy of it, by the same code that makes it for real (a replay shows its effect
    before the person confirms it).

    Raises:
        PolicyEditError: as ``edit`` does; or the file cannot be read.
    """
    with tempfile.TemporaryDirectory(prefix="lockgate-preview-") as folder:
        copy = Path(folder) / path.name
        if path.exists():
            try:
                copy.write_bytes(read_policy_bytes(path))
            except (OSError, PolicyError) as exc:
                raise PolicyEditError(f"cannot read {path}: {exc}") from None
        return edit(copy)


def _governing_rule(path: Path, server: str, tool: str) -> dict[str, Any]:
    """The rule (as written) that decides ``server/tool`` now, to copy for it alone; a
    ``rate_limit`` shorthand becomes a limit on the same counter, so the budget stays
    shared with the tools the wider rule covers."""
    policy = load_policy(path) if path.exists() else parse_policy(_default_text())
    rule = policy.rule_for(server, tool)
    if rule is None:
        return {"action": policy.default.value}
    written = dict(policy.document["tools"][rule.pattern.text])
    shorthand = written.pop("rate_limit", None)
    if shorthand is not None:
        limit = {"counter": rule.pattern.text, "scope": "grant", **shorthand}
        written["limits"] = [*written.get("limits", []), limit]
    written.pop("description", None)  # it described the wider rule
    return written


def remove_case(path: Path, pattern: str, index: int) -> bytes:
    """Take case ``index`` (from 0) out of the ``when`` of the rule for ``pattern`` (the
    last one: ``when`` goes too; the rule stays); returns the new text.

    Raises:
        PolicyEditError: there is no such rule or case (the file changed meanwhile?); or
            as :func:`edit_rule`.
    """

    def change(old: Mapping[str, Any] | None, _rule: Rule | None) -> Mapping[str, Any] | _Same:
        if old is None:
            raise PolicyEditError(f"{path} has no rule for {pattern!r}")
        cases = list(old.get("when", []))
        if isinstance(index, bool) or not 0 <= index < len(cases):
            raise PolicyEditError(
                f"the rule for {pattern!r} has no case {index} (it has {len(cases)}); "
                "it may have been changed meanwhile"
            )
        del cases[index]
        return {"when": cases or None}

    return _edit(path, pattern, change)


def exact_arguments_schema(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The ``arguments`` schema that exactly ``arguments`` satisfy: every property ``const``
    its value, all of them required, no others.

    Raises:
        PolicyEditError: not a JSON object, or over :data:`MAX_EXACT_ARGUMENTS_BYTES`.
    """
    if not isinstance(arguments, Mapping):
        raise PolicyEditError("a call's arguments are a JSON object; these are not")
    try:
        data = json.dumps(arguments, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError: a lone surrogate
        raise PolicyEditError(f"these arguments cannot be written as JSON: {exc}") from None
    except RecursionError:
        raise PolicyEditError("these arguments are nested too deeply to make a rule of") from None
    if len(data) > MAX_EXACT_ARGUMENTS_BYTES:
        raise PolicyEditError(
            f"these arguments are {len(data)} bytes of JSON, over the {MAX_EXACT_ARGUMENTS_BYTES} "
            "that still make a rule a person can read; allow the tool for this client, or write "
            "an arguments schema by hand"
        )
    return {
        "type": "object",
        "properties": {name: {"const": value} for name, value in arguments.items()},
        "required": list(arguments),
        "additionalProperties": False,
    }


def rule_text(rule: Mapping[str, Any], indent: str | None = None, unit: str = "  ") -> str:
    """A rule as the app writes it: keys in a reading order, on one line; a rule with
    cases (``when``, last) has one line per case, indented by ``unit`` past ``indent``
    (the rule's own line's), and ``]}`` at ``indent`` (``indent=None``: all on one line)."""
    order = ["action", "reason", "limits", "approval", "arguments", "hide", "description"]
    ordered = {k: rule[k] for k in order if k in rule}
    ordered.update({k: v for k, v in rule.items() if k not in ordered and k != "when"})
    cases = rule.get("when")
    if not isinstance(cases, list) or indent is None:
        if cases is not None:
            ordered["when"] = [_case_order(c) for c in cases] if isinstance(cases, list) else cases
        return json.dumps(ordered, ensure_ascii=False)
    head = json.dumps(ordered, ensure_ascii=False)[:-1]
    head += ', "when": [' if ordered else '"when": ['
    lines = [indent + unit + json.dumps(_case_order(c), ensure_ascii=False) for c in cases]
    return head + "\n" + ",\n".join(lines) + "\n" + indent + "]}"


def _case_order(case: Any) -> Any:
    if not isinstance(case, Mapping):
        return case
    order = ["clients", "arguments", "action", "reason", "approval"]
    ordered = {k: case[k] for k in order if k in case}
    ordered.update({k: v for k, v in case.items() if k not in ordered})
    return ordered


def _action_text(action: Action | str) -> str:
    """As written in the file (a wrong one is refused by the loader, with its path)."""
    return action.value if isinstance(action, Action) else action


def _edit(path: Path, pattern: str, change: _Change) -> bytes:
    """The one way a rule is changed: read, check, change, check again, write."""
    try:
        raw = read_policy_bytes(path) if path.exists() else _default_text().encode("utf-8")
        bom = raw.startswith(codecs.BOM_UTF8)  # as some editors save it; it stays
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyEditError(f"{path} is not UTF-8 text: {exc}") from None
    except PolicyError as exc:
        raise PolicyEditError(str(exc)) from None
    try:
        current = parse_policy_bytes(text.encode("utf-8"), str(path))
    except PolicyError as exc:
        raise PolicyEditError(
            f"policy.json has errors; fix them (or undo your edit) before changing rules "
            f"here:\n{exc}"
        ) from None
    tools = current.document.get("tools")
    old = tools.get(pattern) if isinstance(tools, dict) else None
    rule = next((r for r in current.rules if r.pattern.text == pattern), None)
    changes = change(old, rule)
    if changes is _Same.AS_IT_IS:
        return raw
    new_text = _edited(text, pattern, changes)
    try:
        parse_policy_bytes(new_text.encode("utf-8"), str(path))
    except PolicyError as exc:
        raise PolicyEditError(f"that rule would not be valid:\n{exc}") from None
    data = (codecs.BOM_UTF8 if bom else b"") + new_text.encode("utf-8")
    try:
        write_atomic(path, data, mode=0o600)
    except OSError as exc:
        raise PolicyEditError(f"cannot write {path}: {exc}") from None
    return data


def _edited(text: str, pattern: str, changes: Mapping[str, Any] | None) -> str:
    document = json.loads(text)
    tools = document.get("tools")
    locations = locate(text)
    old = tools.get(pattern) if isinstance(tools, dict) else None
    if changes is None:
        if old is None:
            return text
        return _remove_member(text, locations, pattern)
    rule = dict(old) if isinstance(old, dict) else {}
    for key, value in changes.items():
        if value is None:
            rule.pop(key, None)
        else:
            rule[key] = value
    one_line = "\n" not in text.strip()  # the file on one line: so is the rule
    unit = indent_unit(text)
    if old is not None:
        start = locations.values[("tools", pattern)]
        indent = None if one_line else line_indent(text, locations.keys[("tools", pattern)])
        new_rule = rule_text(rule, indent, unit)
        return splice(text, [(start, value_end(text, start), new_rule)])
    if isinstance(tools, dict):
        indent = None if one_line else _member_indent(text, locations.values[("tools",)])
        return _add_member(text, locations, pattern, rule_text(rule, indent, unit))
    # no "tools" object at all: add one as the document's last member
    document["tools"] = {pattern: rule}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _add_member(text: str, locations: Locations, pattern: str, rule: str) -> str:
    start = locations.values[("tools",)]
    end = value_end(text, start)  # just past the closing brace
    close = end - 1
    body = text[start + 1 : close]
    indent = _member_indent(text, start)
    member = f"{json.dumps(pattern, ensure_ascii=False)}: {rule}"
    if not body.strip():
        outer = line_indent(text, start)
        return f"{text[: start + 1]}\n{indent}{member}\n{outer}{text[close:]}"
    last = len(text[:close].rstrip())  # just past the last member's value
    return f"{text[:last]},\n{indent}{member}{text[last:]}"


def _remove_member(text: str, locations: Locations, pattern: str) -> str:
    key_start = locations.keys[("tools", pattern)]
    end = value_end(text, locations.values[("tools", pattern)])
    rest = text[end:].lstrip()
    if rest.startswith(","):  # a member follows: cut up to it
        after_comma = len(text) - len(rest) + 1
        next_member = len(text) - len(text[after_comma:].lstrip())
        line_start = text.rfind("\n", 0, key_start) + 1
        next_line_start = text.rfind("\n", 0, next_member) + 1
        if not text[line_start:key_start].strip() and next_line_start > after_comma:
            return text[:line_start] + text[next_line_start:]  # whole lines
        return text[:key_start] + text[next_member:]
    before = text[:key_start].rstrip()
    if before.endswith(","):  # the last member: its comma goes too
        return before[:-1] + text[end:]
    return before + text[end:]  # the only member


def _member_indent(text: str, tools_start: int) -> str:
    """The indentation of the tools object's members (its first member's), else the
    object's own plus two spaces."""
    after = text[tools_start + 1 :]
    stripped = after.lstrip(" \t")
    if stripped.startswith("\n"):
        line = stripped[1:]
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if line.lstrip(" \t")[:1] not in ("}", ""):
            return indent
    return line_indent(text, tools_start) + "  "


def _default_text() -> str:
    return resources.files("lockgate_resources").joinpath("default-policy.json").read_text("utf-8")
