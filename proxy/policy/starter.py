"""A starting policy for a first run, built from what each server's tools are.

Every tool of every configured server (asked of the servers themselves) gets a rule from
its risk: read-only tools are allowed, everything else (write, network, execute,
destructive) asks the person. A read-only tool whose name says it reads secrets (the
environment, credentials, tokens, passwords) asks too: reading is what leaks them; so does
one whose description or schema looks poisoned (:mod:`proxy.policy.poison`). Tools
that appear later, and the tools of a server that could not be asked, fall to the
default, which asks too. Each rule says why in its
``description``. Nothing is written here: the caller shows it first.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxy.policy.model import parse_policy
from proxy.policy.risk import Category

if TYPE_CHECKING:  # the catalog imports the MCP SDK, which every command would pay for
    from proxy.upstream.catalog import ServerTools

__all__ = ["policy_text", "starting_policy"]


def starting_policy(listing: Mapping[str, ServerTools]) -> dict[str, Any]:
    """The policy document for these servers' tools."""
    rules: dict[str, Any] = {}
    for server, found in sorted(listing.items()):
        for tool, risk in zip(found.tools, found.risks, strict=True):
            name = tool.get("name")
            if not isinstance(name, str):
                continue
            action = "allow" if risk.category is Category.READ else "ask"
            why = "; ".join(str(s) for s in risk.signals[:3]) or "no signal"
            description = f"{risk.category.value}, {risk.level.value} risk ({why})"
            if action == "allow" and _reads_secrets(name):
                action = "ask"
                description += "; it may reveal secrets, so it asks"
            if action == "allow" and any(s.source == "poisoning" for s in risk.signals):
                action = "ask"
                description += "; its description looks poisoned, so it asks"
            rules[f"{server}/{name}"] = {"action": action, "description": description}
    return {
        "version": "1",
        "description": "Starting policy suggested by Lockgate from your servers' tools: "
        "read-only tools are allowed, every other tool asks you first. Edit freely.",
        "default": "ask",
        "tools": rules,
    }


_SECRET_WORDS = frozenset(
    "env environ environment secret secrets credential credentials password passwords "
    "passwd token tokens apikey apikeys keychain keyring cookie cookies".split()
)


def _reads_secrets(tool: str) -> bool:
    """Whether a tool's name says it reads secrets: get-env, read_secret, listApiKeys..."""
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", tool)
    lowered = [w.lower() for w in words]
    joined = {a + b for a, b in itertools.pairwise(lowered)}  # api+key
    return bool(_SECRET_WORDS & ({*lowered} | joined))


def policy_text(document: Mapping[str, Any]) -> str:
    """As written to policy.json; checked by the real loader first."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    parse_policy(text, "the starting policy")  # raises PolicyError if it were wrong
    return text
