"""Tool pinning: what each server said its tools are, and what a person has accepted.

An agent reads a tool's definition (its name, title, description, input and output
schema, annotations) and a server's instructions as part of its prompt, so a server that
changes them after it was trusted (a "rug pull") can steer the agent without changing a
single call. The first time Lockgate sees a server's tools it records each definition and
its fingerprint; from then on a definition that differs is **held**: left out of
``tools/list`` and its calls refused, until a person accepts the change (the app's Tools
view, or ``lockgate tools accept SERVER TOOL``). Changed instructions are held too: left
out of the handshake's answer until accepted.

What counts as new follows the policy's ``pinning`` settings: a new tool of a known
server and the tools of a server never seen are trusted on first use (the default) or
held; a tool whose definition has poisoning findings (:mod:`proxy.policy.poison`) is shown
with them, or held until a person accepts it. A tool whose name changed but whose
definition is otherwise a pinned one's is held as *renamed*: the policy matches names, so
a renamed tool may escape a rule written for the old name.

The pins live in ``tool-pins.json`` in the data folder, written atomically after each
change. :class:`ToolPins` is owned by the gateway's loop; it does no I/O of its own except
:meth:`ToolPins.load` and :meth:`ToolPins.save`, which the gateway runs on a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from proxy.config.atomic import write_atomic
from proxy.errors import LockgateError
from proxy.policy.model import PinningSettings
from proxy.policy.poison import Finding, scan_instructions, scan_tool

__all__ = [
    "DEFINING_FIELDS",
    "InstructionsChange",
    "PinsError",
    "ToolChange",
    "ToolPins",
    "definition_of",
    "fingerprint",
]

log = logging.getLogger(__name__)

# what an agent reads of a tool, so what a change of is a change of the tool
DEFINING_FIELDS: Final = (
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
)
FILE_VERSION: Final = 1
MAX_TOOLS_PER_SERVER: Final = 2000  # past it, a server's new tools are held, not pinned
MAX_DEFINITION_BYTES: Final = 1024 * 1024  # a larger definition is held, never pinned
_FINDINGS_CACHE: Final = 4096
_DIGEST: Final = "x-lockgate-fingerprint"  # what a too-large definition is held as


class PinsError(LockgateError):
    """A pin cannot be accepted (nothing waits), or the pins file cannot be written."""

    title = "Tool pins"


def definition_of(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a tool's entry in ``tools/list`` that define it for an agent."""
    return {key: tool[key] for key in DEFINING_FIELDS if key in tool}


def fingerprint(definition: Mapping[str, Any], *, without_name: bool = False) -> str:
    """SHA-256 of the definition's canonical JSON (keys sorted, ASCII: a lone surrogate
    hashes too). ``without_name`` is what a renamed tool keeps."""
    parts = {k: v for k, v in definition.items() if not (without_name and k == "name")}
    try:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(parts)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ToolChange:
    """A tool held until a person looks at it, and why."""

    server: str
    tool: str
    kind: str  # "changed", "renamed", "new", "new_server", "findings", "too_large"
    new: Mapping[str, Any] | None  # its definition now (None: never listed; only called)
    old: Mapping[str, Any] | None  # the definition accepted before (None: none was)
    renamed_from: str | None = None
    findings: tuple[Finding, ...] = ()
    seen: float = 0.0  # when Lockgate first saw it so

    def reason(self) -> str:
        """What the agent and the audit log are told of a call to it. Not how to accept
        it: an agent with a shell must not be handed the command that frees its tool."""
        review = "A person must review the change in Lockgate before it can be used."
        what = {
            "changed": "its definition changed since it was accepted",
            "renamed": f"it is tool {self.renamed_from!r} under a new name",
            "new": "it is new, and the policy holds new tools until a person accepts them",
            "new_server": "its server is new, and the policy holds a new server's tools "
            "until a person accepts them",
            "findings": "its description looks poisoned ("
            + ", ".join(sorted({f.kind for f in self.findings}))
            + ")",
            "too_large": "its definition is too large to pin",
            "unseen": "Lockgate has not seen its definition (list the tools first), and "
            "the policy holds tools until a person accepts them",
            "unpinned": "Lockgate lost its record of the accepted definitions "
            "(tool-pins.json could not be read), so it holds every tool until a person "
            "accepts it again",
        }.get(self.kind, self.kind)
        return f"Lockgate holds tool {self.server}/{self.tool}: {what}. {review}"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the control door, ``lockgate tools changes --json``)."""
        return {
            "server": self.server,
            "tool": self.tool,
            "kind": self.kind,
            "new": self.new,
            "old": self.old,
            "renamed_from": self.renamed_from,
            "findings": [f.as_dict() for f in self.findings],
            "seen": self.seen,
            "fingerprint": None if self.new is None else fingerprint(self.new),
        }


@dataclass(frozen=True, slots=True)
class InstructionsChange:
    """A server's instructions, held: left out of the handshake's answer until accepted."""

    server: str
    kind: str  # "changed", "new_server", "findings"
    new: str
    old: str | None
    findings: tuple[Finding, ...] = ()
    seen: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "kind": self.kind,
            "new": self.new,
            "old": self.old,
            "findings": [f.as_dict() for f in self.findings],
            "seen": self.seen,
        }


@dataclass(slots=True)
class _Pin:
    accepted: dict[str, Any] | None = None  # the definition accepted
    by_person: bool = False  # accepted by a person (not trusted on first use)
    pending: dict[str, Any] | None = None  # seen since, waiting for a person
    kind: str | None = None  # why it waits
    renamed_from: str | None = None
    seen: float = 0.0


@dataclass(slots=True)
class _TextPin:
    accepted: str | None = None
    by_person: bool = False
    pending: str | None = None
    kind: str | None = None
    seen: float = 0.0


@dataclass(slots=True)
class _Server:
    tools: dict[str, _Pin] = field(default_factory=dict)
    instructions: _TextPin | None = None
    greeted: bool = False  # its handshake was seen (with instructions or without)

    @property
    def known(self) -> bool:
        """Whether some tool of it was accepted: its new tools are a known server's (a
        first listing's later pages are still a new server's)."""
        return any(pin.accepted is not None for pin in self.tools.values())


class ToolPins:
    """Every server's pinned tool definitions; see the module."""

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        """``path``: the pins file (None: kept in memory only, for tests and tools)."""
        self.path = path
        self._clock = clock
        self._servers: dict[str, _Server] = {}
        self._findings: dict[tuple[str, str], tuple[Finding, ...]] = {}
        self.version = 0  # counts changes: the gateway saves when it moved
        # the pins file could not be read: what was held or accepted is unknown, so every
        # tool first seen now is held (not trusted), until a person accepts it
        self.lost: str | None = None
        self._nameless: dict[int, tuple[dict[str, Any], str]] = {}

    # -- the file ------------------------------------------------------------------------

    def load(self, *, set_aside: bool = True) -> None:
        """Read the pins file (none yet: nothing is pinned). A broken file is moved aside
        (``tool-pins.json.broken``; unless ``set_aside`` is False: only reading) and every
        tool is held until a person accepts it again (:attr:`lost`)."""
        if self.path is None:
            return
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            self._servers = _parse(json.loads(data))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            aside = self.path.with_name(self.path.name + ".broken")
            log.error(
                "%s is not a pins file (%s); moved to %s; every tool is held until accepted",
                self.path,
                exc,
                aside,
            )
            if set_aside:
                self.path.replace(aside)
            self._servers = {}
            moved = f"; it was moved to {aside}" if set_aside else ""
            self.lost = f"{self.path.name} could not be read ({exc}){moved}"

    def snapshot(self) -> dict[str, Any]:
        """The pins as the file holds them (taken on the loop; :meth:`save` writes it out
        on a worker thread: the definitions are replaced, never changed, so it is safe)."""
        servers: dict[str, Any] = {}
        for name, server in sorted(self._servers.items()):
            entry: dict[str, Any] = {
                "tools": {
                    tool: {k: v for k, v in _pin_json(pin).items() if v is not None}
                    for tool, pin in sorted(server.tools.items())
                }
            }
            if server.greeted:
                entry["greeted"] = True
            if server.instructions is not None:
                text = server.instructions
                entry["instructions"] = {
                    "accepted": text.accepted,
                    "by_person": text.by_person,
                    "pending": text.pending,
                    "kind": text.kind,
                    "seen": text.seen,
                }
            servers[name] = entry
        return {"version": FILE_VERSION, "servers": servers}

    def save(self, snapshot: dict[str, Any]) -> None:
        """Write a :meth:`snapshot` to the file, atomically.

        Raises:
            PinsError: the file cannot be written.
        """
        if self.path is None:
            return
        data = (json.dumps(snapshot, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, data)
        except OSError as exc:
            raise PinsError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    # -- what servers say -------------------------------------------------------------------

    def observe(
        self, server: str, tools: Sequence[Any], settings: PinningSettings
    ) -> frozenset[str]:
        """Pin what ``server`` listed (one page of ``tools/list``) and return the names of
        the listed tools that are held."""
        entry = self._servers.setdefault(server, _Server())
        known = entry.known
        held: set[str] = set()
        listed = {t.get("name") for t in tools if isinstance(t, Mapping)}
        now = self._clock()
        first: dict[str, dict[str, Any]] = {}
        for tool in tools:
            if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
                continue
            name: str = tool["name"]
            definition = definition_of(tool)
            if name in first:  # listed twice: which one the agent reads is anyone's guess
                if not _same(first[name], definition):
                    self._listed_twice(entry, name, definition, now)
                    held.add(name)
                continue
            first[name] = definition
            self._observe_one(
                entry, name, definition, listed=listed, known=known, settings=settings, now=now
            )
            if self.held(server, name, settings) is not None:
                held.add(name)
        return frozenset(held)

    def _observe_one(
        self,
        entry: _Server,
        name: str,
        definition: dict[str, Any],
        *,
        listed: set[Any],
        known: bool,
        settings: PinningSettings,
        now: float,
    ) -> None:
        pin = entry.tools.get(name)
        if pin is None:
            if len(entry.tools) >= MAX_TOOLS_PER_SERVER:
                return  # not pinned: held as unseen (see held), whatever the settings
            pin = entry.tools[name] = _Pin()
            self._findings.clear()  # a new name: another server's tool may shadow it
        if pin.accepted is not None and _same(pin.accepted, definition):
            if pin.pending is not None:  # it changed, and changed back
                pin.pending = pin.kind = pin.renamed_from = None
                self.version += 1
            return
        if pin.pending is not None and _same(pin.pending, definition):
            return  # still waiting, as it was
        if _json_size(definition) > MAX_DEFINITION_BYTES:  # (only what is not pinned yet)
            digest = fingerprint(definition)
            if pin.kind != "too_large" or (pin.pending or {}).get(_DIGEST) != digest:
                pin.pending, pin.kind, pin.seen = {"name": name, _DIGEST: digest}, "too_large", now
                self.version += 1
            return
        self.version += 1
        if pin.accepted is not None:
            pin.pending, pin.kind, pin.renamed_from, pin.seen = definition, "changed", None, now
            return
        renamed = self._renamed_from(entry, name, definition, listed)
        if renamed is not None:
            pin.pending, pin.kind, pin.renamed_from, pin.seen = definition, "renamed", renamed, now
            return
        trusted = settings.new_tools == "trust" if known else settings.new_servers == "trust"
        if trusted and self.lost is None:
            pin.accepted, pin.by_person = definition, False
            pin.pending = pin.kind = pin.renamed_from = None
        else:
            pin.pending, pin.seen = definition, now
            pin.kind = "unpinned" if self.lost else "new" if known else "new_server"

    def _listed_twice(
        self, entry: _Server, name: str, definition: dict[str, Any], now: float
    ) -> None:
        """A name listed twice with two definitions: held as changed (the later one shown),
        whatever the pin says."""
        pin = entry.tools.setdefault(name, _Pin())
        if pin.kind != "changed" or pin.pending is None or not _same(pin.pending, definition):
            pin.pending, pin.kind, pin.renamed_from, pin.seen = definition, "changed", None, now
            self.version += 1

    def _renamed_from(
        self, entry: _Server, name: str, definition: Mapping[str, Any], listed: set[Any]
    ) -> str | None:
        """The pinned tool, no longer listed, whose definition this one is but for its name."""
        if len(definition) <= 1:  # a bare name is no evidence of anything
            return None
        nameless = fingerprint(definition, without_name=True)
        for other, pin in entry.tools.items():
            if other == name or other in listed or pin.accepted is None:
                continue
            if self._nameless_of(pin.accepted) == nameless:
                return other
        return None

    def _nameless_of(self, definition: dict[str, Any]) -> str:
        """A pinned definition's fingerprint without its name, worked out once (a first
        listing of many new tools would otherwise hash every pin for each of them)."""
        cached = self._nameless.get(id(definition))
        if cached is not None and cached[0] is definition:
            return cached[1]
        if len(self._nameless) >= _FINDINGS_CACHE:
            self._nameless.clear()
        digest = fingerprint(definition, without_name=True)
        self._nameless[id(definition)] = (definition, digest)
        return digest

    def observe_instructions(
        self, server: str, text: str | None, settings: PinningSettings
    ) -> bool:
        """Pin ``server``'s instructions (from its handshake); whether they are held."""
        entry = self._servers.setdefault(server, _Server())
        known = entry.greeted  # instructions now and none before are a change
        if not entry.greeted:
            entry.greeted = True
            self.version += 1
        if not isinstance(text, str):
            return False
        pin = entry.instructions
        if pin is None:
            pin = entry.instructions = _TextPin()
            self.version += 1
            if not known and settings.new_servers == "trust":
                pin.accepted = text
        if pin.accepted == text:
            if pin.pending is not None:
                pin.pending = pin.kind = None
                self.version += 1
        elif pin.pending != text:
            pin.pending, pin.seen = text, self._clock()
            pin.kind = "changed" if known else "new_server"
            self.version += 1
        return self.instructions_held(server, settings) is not None

    # -- what is held ------------------------------------------------------------------

    def held(self, server: str, tool: str, settings: PinningSettings) -> ToolChange | None:
        """Why a call to ``tool`` of ``server`` is held, or None: it may be decided."""
        entry = self._servers.get(server)
        pin = None if entry is None else entry.tools.get(tool)
        if pin is None:
            known = entry is not None and entry.known
            trusted = settings.new_tools == "trust" if known else settings.new_servers == "trust"
            full = entry is not None and len(entry.tools) >= MAX_TOOLS_PER_SERVER
            if trusted and not full and self.lost is None:
                return None
            return ToolChange(server, tool, "unseen", None, None)
        if pin.pending is not None and pin.kind is not None:
            return ToolChange(
                server,
                tool,
                pin.kind,
                pin.pending,
                pin.accepted,
                pin.renamed_from,
                self._findings_of(pin.pending, server),
                pin.seen,
            )
        if settings.findings == "quarantine" and pin.accepted is not None and not pin.by_person:
            findings = self._findings_of(pin.accepted, server)
            if findings:
                return ToolChange(server, tool, "findings", pin.accepted, None, None, findings)
        return None

    def instructions_held(
        self, server: str, settings: PinningSettings
    ) -> InstructionsChange | None:
        entry = self._servers.get(server)
        pin = None if entry is None else entry.instructions
        if pin is None:
            return None
        if pin.pending is not None and pin.kind is not None:
            findings = scan_instructions(pin.pending, other_tools=self._other_tools(server))
            return InstructionsChange(
                server, pin.kind, pin.pending, pin.accepted, findings, pin.seen
            )
        if settings.findings == "quarantine" and pin.accepted is not None and not pin.by_person:
            findings = scan_instructions(pin.accepted, other_tools=self._other_tools(server))
            if findings:
                return InstructionsChange(server, "findings", pin.accepted, None, findings)
        return None

    def changes(self, settings: PinningSettings) -> list[ToolChange]:
        """Every tool held now, the oldest first."""
        found = [
            change
            for server, entry in self._servers.items()
            for tool in entry.tools
            if (change := self.held(server, tool, settings)) is not None
        ]
        return sorted(found, key=lambda c: (c.seen, c.server, c.tool))

    def instruction_changes(self, settings: PinningSettings) -> list[InstructionsChange]:
        return [
            change
            for server in sorted(self._servers)
            if (change := self.instructions_held(server, settings)) is not None
        ]

    def findings_of(self, server: str, tool: str) -> tuple[Finding, ...]:
        """The poisoning findings of the definition a tool has now (pending or accepted)."""
        entry = self._servers.get(server)
        pin = None if entry is None else entry.tools.get(tool)
        if pin is None:
            return ()
        definition = pin.pending if pin.pending is not None else pin.accepted
        return () if definition is None else self._findings_of(definition, server)

    def servers(self) -> list[str]:
        return sorted(self._servers)

    # -- a person's answer ------------------------------------------------------------------

    def accept(self, server: str, tool: str, *, fingerprint_seen: str | None = None) -> ToolChange:
        """A person accepted ``tool``'s definition as it is now (held or not);
        ``fingerprint_seen``: the :func:`fingerprint` of the definition they looked at,
        which must still be the one waiting.

        Raises:
            PinsError: Lockgate has not seen that tool, or it changed again since.
        """
        entry = self._servers.get(server)
        pin = None if entry is None else entry.tools.get(tool)
        if pin is None or (pin.pending is None and pin.accepted is None):
            raise PinsError(f"Lockgate has not seen a tool {tool!r} of server {server!r}")
        if pin.kind == "too_large":
            raise PinsError(f"tool {server}/{tool}'s definition is too large to accept")
        definition = pin.pending if pin.pending is not None else pin.accepted
        assert definition is not None
        if fingerprint_seen is not None and fingerprint(definition) != fingerprint_seen:
            raise PinsError(
                f"tool {server}/{tool} changed again since it was shown; look at it again"
            )
        change = ToolChange(
            server,
            tool,
            pin.kind or "accepted",
            definition,
            pin.accepted,
            pin.renamed_from,
            self._findings_of(definition, server),
            pin.seen,
        )
        pin.accepted, pin.by_person = definition, True
        pin.pending = pin.kind = pin.renamed_from = None
        self.version += 1
        return change

    def accept_instructions(self, server: str) -> None:
        """A person accepted ``server``'s instructions as they are now.

        Raises:
            PinsError: the server has no instructions Lockgate has seen.
        """
        entry = self._servers.get(server)
        pin = None if entry is None else entry.instructions
        if pin is None or (pin.pending is None and pin.accepted is None):
            raise PinsError(f"Lockgate has seen no instructions of server {server!r}")
        pin.accepted = pin.pending if pin.pending is not None else pin.accepted
        pin.by_person = True
        pin.pending = pin.kind = None
        self.version += 1

    def forget(self, server: str) -> bool:
        """Drop everything pinned of ``server`` (its next tools are a new server's)."""
        gone = self._servers.pop(server, None) is not None
        if gone:
            self.version += 1
        return gone

    # -- inside ----------------------------------------------------------------------

    def _findings_of(self, definition: Mapping[str, Any], server: str) -> tuple[Finding, ...]:
        """A definition's poisoning findings, the other servers' tools known (cached until
        a tool name is pinned anew: another server's new tool may be shadowed)."""
        key = (fingerprint(definition), server)
        found = self._findings.get(key)
        if found is None:
            if len(self._findings) >= _FINDINGS_CACHE:
                self._findings.clear()
            others = self._other_tools(server)
            found = self._findings[key] = scan_tool(definition, other_tools=others)
        return found

    def _other_tools(self, server: str | None) -> list[str]:
        """Tool names of the servers other than ``server`` (for shadowing)."""
        return [
            tool for name, entry in self._servers.items() if name != server for tool in entry.tools
        ]


def _json_size(definition: Mapping[str, Any]) -> int:
    """Bytes of the definition as JSON; one that cannot be written (nested past what
    JSON text can be read back from) counts as too large."""
    try:
        return len(json.dumps(definition, ensure_ascii=True, default=str))
    except (ValueError, RecursionError):
        return MAX_DEFINITION_BYTES + 1


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a == b or fingerprint(a) == fingerprint(b)


def _pin_json(pin: _Pin) -> dict[str, Any]:
    return {
        "accepted": pin.accepted,
        "fingerprint": None if pin.accepted is None else fingerprint(pin.accepted),
        "by_person": pin.by_person or None,
        "pending": pin.pending,
        "kind": pin.kind,
        "renamed_from": pin.renamed_from,
        "seen": pin.seen or None,
    }


def _parse(document: Any) -> dict[str, _Server]:
    """The servers of a pins file.

    Raises:
        ValueError: it is not one this version writes.
    """
    if not isinstance(document, dict) or document.get("version") != FILE_VERSION:
        raise ValueError(f"not version {FILE_VERSION}")
    servers: dict[str, _Server] = {}
    for name, entry in document["servers"].items():
        server = servers[str(name)] = _Server(greeted=entry.get("greeted") is True)
        for tool, pin in entry.get("tools", {}).items():
            server.tools[str(tool)] = _Pin(
                accepted=_object(pin.get("accepted")),
                by_person=bool(pin.get("by_person", False)),
                pending=_object(pin.get("pending")),
                kind=pin.get("kind"),
                renamed_from=pin.get("renamed_from"),
                seen=float(pin.get("seen") or 0.0),
            )
        text = entry.get("instructions")
        if isinstance(text, dict):
            server.instructions = _TextPin(
                accepted=text.get("accepted"),
                by_person=bool(text.get("by_person", False)),
                pending=text.get("pending"),
                kind=text.get("kind"),
                seen=float(text.get("seen") or 0.0),
            )
    return servers


def _object(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("a definition is an object")
    return value
