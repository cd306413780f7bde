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
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from proxy.config.atomic import write_atomic
from proxy.config.jsontext import Locations, line_indent, locate, splice, value_end
from proxy.errors import LockgateError
from proxy.policy.model import PolicyError, parse_policy_bytes, read_policy_bytes

__all__ = ["PolicyEditError", "edit_rule", "rule_text"]


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
    try:
        raw = read_policy_bytes(path) if path.exists() else _default_text().encode("utf-8")
        bom = raw.startswith(codecs.BOM_UTF8)  # as some editors save it; it stays
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyEditError(f"{path} is not UTF-8 text: {exc}") from None
    except PolicyError as exc:
        raise PolicyEditError(str(exc)) from None
    try:
        parse_policy_bytes(text.encode("utf-8"), str(path))
    except PolicyError as exc:
        raise PolicyEditError(
            f"policy.json has errors; fix them (or undo your edit) before changing rules "
            f"here:\n{exc}"
        ) from None
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


def rule_text(rule: Mapping[str, Any]) -> str:
    """A rule as the app writes it: one line, keys in a reading order."""
    order = ["action", "reason", "limits", "approval", "arguments", "hide", "description"]
    ordered = {k: rule[k] for k in order if k in rule}
    ordered.update({k: v for k, v in rule.items() if k not in ordered})
    return json.dumps(ordered, ensure_ascii=False)


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
    new_rule = rule_text(rule)
    if old is not None:
        start = locations.values[("tools", pattern)]
        return splice(text, [(start, value_end(text, start), new_rule)])
    if isinstance(tools, dict):
        return _add_member(text, locations, pattern, new_rule)
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
