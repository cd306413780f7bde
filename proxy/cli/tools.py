"""``lockgate tools changes`` and ``lockgate tools accept``: the held tools, from a terminal.

Through the running gateway's control door, or, when none runs, on the pins file itself
(``tool-pins.json`` in the data folder) with the policy's ``pinning`` settings.
"""

from __future__ import annotations

import difflib
import json
import sys
from datetime import datetime
from typing import Any, TextIO

from proxy.bridge.control import GatewayNotRunning, control
from proxy.config.paths import Paths
from proxy.gateway.pins import ToolPins
from proxy.policy.model import PinningSettings, PolicyError, load_policy

__all__ = ["accept", "changes"]


def changes(paths: Paths, *, as_json: bool, out: TextIO) -> int:
    """Print every held tool and held instructions: what changed (a unified diff of the
    accepted and the new definition) and any poisoning findings. Exits 0 with nothing
    held, 1 with something held (so a script can check)."""
    try:
        answer = control(paths, "tools-changes")
        tools, instructions = answer["tools"], answer["instructions"]
    except GatewayNotRunning:
        print("Lockgate is not running: what its pins file holds.", file=sys.stderr)
        pins, settings = _pins_here(paths, reading=True)
        tools = [c.as_dict() for c in pins.changes(settings)]
        instructions = [c.as_dict() for c in pins.instruction_changes(settings)]
    if as_json:
        json.dump({"tools": tools, "instructions": instructions}, out, indent=2)
        out.write("\n")
        return 1 if tools or instructions else 0
    if not tools and not instructions:
        print("no tool is held: every tool is as it was accepted", file=out)
        return 0
    for change in tools:
        print(_heading(change, f"{change['server']}/{change['tool']}"), file=out)
        _print_diff(change.get("old"), change.get("new"), out)
        _print_findings(change.get("findings") or [], out)
        exact = f" --fingerprint {change['fingerprint']}" if change.get("fingerprint") else ""
        print(
            f"  accept: lockgate tools accept {change['server']} {change['tool']}{exact}",
            file=out,
        )
        print(file=out)
    for change in instructions:
        print(_heading(change, f"{change['server']} (its instructions)"), file=out)
        old = _printable(change.get("old") or "")
        _print_lines(old.splitlines(), _printable(str(change.get("new", ""))).splitlines(), out)
        _print_findings(change.get("findings") or [], out)
        print(f"  accept: lockgate tools accept {change['server']} --instructions", file=out)
        print(file=out)
    return 1


def accept(
    paths: Paths, server: str, tool: str | None, out: TextIO, fingerprint_seen: str | None = None
) -> int:
    """Accept a held tool's definition (or, ``tool`` None, a server's instructions) as it
    is now; ``fingerprint_seen``: the one printed by ``changes``, which must still be it.

    Raises:
        proxy.bridge.control.ControlError: the gateway refused (nothing of that name).
        proxy.gateway.pins.PinsError: the same, with no gateway running.
    """
    what = f"{server}/{tool}" if tool is not None else f"the instructions of {server}"
    fields: dict[str, Any] = {"server": server}
    fields.update({"tool": tool} if tool is not None else {"instructions": True})
    if fingerprint_seen is not None:
        fields["fingerprint"] = fingerprint_seen
    try:
        control(paths, "tools-accept", **fields)
    except GatewayNotRunning:
        pins, _settings = _pins_here(paths)
        if tool is None:
            pins.accept_instructions(server)
        else:
            pins.accept(server, tool, fingerprint_seen=fingerprint_seen)
        pins.save(pins.snapshot())
    print(f"accepted {what}: its calls are decided by the policy again", file=out)
    return 0


def _pins_here(paths: Paths, *, reading: bool = False) -> tuple[ToolPins, PinningSettings]:
    """The pins file and the policy's settings, read here (no gateway runs; ``reading``:
    only to show them, so a broken file is left where it is)."""
    pins = ToolPins(paths.tool_pins)
    pins.load(set_aside=not reading)
    if pins.lost is not None:
        print(f"lockgate: {pins.lost}", file=sys.stderr)
    try:
        settings = load_policy(paths.policy_file).pinning
    except (OSError, PolicyError):
        settings = PinningSettings()
    return pins, settings


def _heading(change: dict[str, Any], name: str) -> str:
    kind = str(change.get("kind", ""))
    words = {
        "changed": "changed since it was accepted",
        "renamed": f"renamed (it was {change.get('renamed_from')!r})",
        "new": "new, held until accepted",
        "new_server": "of a new server, held until accepted",
        "findings": "looks poisoned, held until accepted",
        "too_large": "too large to pin",
        "unseen": "never listed, held until accepted",
    }.get(kind, kind)
    seen = change.get("seen")
    when = ""
    if isinstance(seen, int | float) and seen > 0:
        when = f" (seen {datetime.fromtimestamp(seen).strftime('%Y-%m-%d %H:%M')})"
    return f"{name}: {words}{when}"


def _print_diff(old: Any, new: Any, out: TextIO) -> None:
    def lines(definition: Any) -> list[str]:
        if definition is None:
            return []
        return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    _print_lines(lines(old), lines(new), out)


def _print_lines(old: list[str], new: list[str], out: TextIO) -> None:
    diff = difflib.unified_diff(old, new, "accepted", "now", lineterm="", n=2)
    for line in diff:
        print(f"  {line}", file=out)


def _printable(text: str) -> str:
    """A server's text as a terminal may show it: control characters (escape sequences
    that would move the cursor, rewrite the screen or set the clipboard) written out."""
    return "".join(
        c if c in "\n\t" or (c.isprintable() and ord(c) >= 0x20) else f"\\u{ord(c):04x}"
        for c in text
    )


def _print_findings(findings: list[dict[str, Any]], out: TextIO) -> None:
    for finding in findings:
        print(
            _printable(
                f"  finding: {finding.get('kind')} in {finding.get('where')}: "
                f"{finding.get('excerpt')!r}: {finding.get('why')}"
            ),
            file=out,
        )
