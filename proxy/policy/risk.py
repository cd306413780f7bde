"""How risky is a tool? A category, a level and the signals behind them.

The classifier reads what a server publishes about a tool: its name, description, input
schema and MCP annotations. Each piece of evidence is a :class:`Signal` that votes for a
category with a weight; the category with most weight wins, and ties go to the more
severe one. The level starts from the category and moves with specific evidence (secrets
read, data overwritten, data sent out).

Annotations are the server's own claims and a server may be wrong or lying, so they count
like any other evidence: ``destructiveHint`` raises risk, but ``readOnlyHint`` cannot by
itself outvote a name that says ``delete`` or ``exec``. Every signal is reported, so a
person can see why a tool got its badge and disagree.

A definition that looks poisoned (:mod:`proxy.policy.poison`: hidden text, orders aimed at
the model, rules for other tools, requests to send data away, text too long to review) is
high risk whatever the tool does: one ``poisoning`` signal per kind of finding, first among
the signals, since what the tool's text asks of the model matters more than its verb.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from proxy.policy.poison import KINDS, Finding, scan_tool

__all__ = ["Category", "Level", "Risk", "Signal", "classify", "classify_many", "tools_from_json"]


class Category(StrEnum):
    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    NETWORK = "network"
    DESTRUCTIVE = "destructive"


class Level(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_SEVERITY: Final = {
    Category.READ: 0,
    Category.WRITE: 1,
    Category.NETWORK: 2,
    Category.EXECUTE: 3,
    Category.DESTRUCTIVE: 4,
}
_BASE_LEVEL: Final = {
    Category.READ: Level.LOW,
    Category.WRITE: Level.MEDIUM,
    Category.NETWORK: Level.MEDIUM,
    Category.EXECUTE: Level.HIGH,
    Category.DESTRUCTIVE: Level.HIGH,
}


@dataclass(frozen=True, slots=True)
class Signal:
    """One piece of evidence: where it was seen, what it was, what it points to."""

    source: str  # "name", "description", "input", "annotation", "poisoning"
    detail: str
    category: Category | None  # None: it moves the level, not the category
    weight: float

    def __str__(self) -> str:
        target = self.category.value if self.category else "level"
        return f"{self.source}: {self.detail} -> {target}"


@dataclass(frozen=True, slots=True)
class Risk:
    """A tool's assessed risk."""

    name: str
    category: Category
    level: Level
    signals: tuple[Signal, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category.value,
            "level": self.level.value,
            "signals": [str(s) for s in self.signals],
        }


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Words that say what a tool does, by category, matched against the words of its name.
_VERBS: Final[dict[Category, tuple[str, ...]]] = {
    Category.DESTRUCTIVE: _words(
        """delete remove rm rmdir unlink drop destroy purge wipe erase truncate prune clean
        clear kill terminate uninstall revoke discard obliterate nuke shred rollback"""
    ),
    Category.EXECUTE: _words(
        """run exec execute eval evaluate shell bash sh cmd command script spawn invoke launch
        test tests build compile make install lint linter vet staticcheck deploy deps
        dependencies npm pip pytest cargo gradle mvn docker kubectl terraform benchmark bench
        profile python node repl process depend sql"""
    ),
    Category.NETWORK: _words(
        """fetch http https url request download upload send post email mail sms push pull
        clone webhook browse navigate web curl wget api slack tweet publish notify scrape
        crawl internet remote online reply comment message puppeteer playwright selenium
        browser fork sync submit"""
    ),
    Category.WRITE: _words(
        """write create update edit modify set add insert save put patch commit rename move mv
        mkdir append replace tag merge checkout init apply store upsert assign stage copy cp
        reset restore import enable disable configure register record annotate fmt format
        tidy fix toggle manage rebase restack amend squash revert ensure"""
    ),
    Category.READ: _words(
        """get list read search find show describe status diff log logs view query info
        inspect lookup count open print echo current convert tree stat explain summarize
        validate detect think thinking resolve ls cat head tail grep version help ping health
        whoami compare analyze check"""
    ),
}

# Services that live on someone else's machine: acting on them is acting over the network.
_REMOTE_SERVICES: Final = (
    r"\b(github|gitlab|bitbucket|slack|discord|jira|confluence|notion|linear|trello|asana|"
    r"gmail|google drive|google docs|dropbox|s3|aws|azure|gcp|stripe|twitter|mastodon|"
    r"pull requests?|merge requests?|teams channel)\b"
)

_PHRASES: Final[tuple[tuple[re.Pattern[str], Category, float, str], ...]] = tuple(
    (re.compile(p, re.IGNORECASE), c, w, d)
    for p, c, w, d in (
        (
            r"\bpermanent(ly)?\b|\birreversib|\bcannot be undone\b|\bcan't be undone\b",
            Category.DESTRUCTIVE,
            3.0,
            "says it cannot be undone",
        ),
        (
            r"\bdelet(e|es|ing)\b|\bremov(e|es|ing)\b|\bdestroy|\bwip(e|es|ing)\b|\berase",
            Category.DESTRUCTIVE,
            1.0,
            "talks of deleting",
        ),
        (
            r"\b(run|runs|execute|executes|executing|running)\b",
            Category.EXECUTE,
            1.0,
            "talks of running something",
        ),
        (
            r"\b(shell|command line|arbitrary code|subprocess)\b",
            Category.EXECUTE,
            1.5,
            "talks of commands or code",
        ),
        (
            r"\b(url|urls|http|internet|web page|website|remote|registry|api(?![ _-]?keys?))\b",
            Category.NETWORK,
            1.0,
            "talks of the network",
        ),
        (_REMOTE_SERVICES, Category.NETWORK, 4.0, "acts on a remote service"),
        (
            r"\b(writes?|creates?|modif(y|ies)|updates?|edits?|saves?|overwrites?|fix(es)?)\b",
            Category.WRITE,
            1.0,
            "talks of changing things",
        ),
        (
            r"\b(reads?|lists?|gets?|returns?|shows?|retrieves?|searches|displays?)\b",
            Category.READ,
            0.75,
            "talks of reading",
        ),
    )
)

# Input fields that say what the tool will be handed.
_EXEC_INPUTS: Final = frozenset(
    _words("""command cmd script code shell commandline command_line program exec executable
    sql""")
)
_NET_INPUTS: Final = frozenset(
    _words("url uri urls endpoint webhook host hostname to recipient recipients email channel")
)
_WRITE_INPUTS: Final = frozenset(
    _words("""content contents text_to_write new_text newtext data edits body patch replacement
    new_content value destination dest target_path""")
)
_FORCE_INPUTS: Final = frozenset(_words("force overwrite hard recursive prune"))
_SENSITIVE: Final = re.compile(
    r"\b(env|environ|environment variables?|dotenv|secrets?|passwords?|credentials?|"
    r"tokens?|api[ _-]?keys?|private[ _-]?keys?|ssh|keychain|cookies?)\b",
    re.IGNORECASE,
)
# Name words that send data out or change remote state: the user acting, often in public.
_SENDS: Final = frozenset(
    _words("""send post push upload publish email mail sms tweet notify webhook deploy reply comment
    submit sync create update edit add merge fork write delete remove close assign set put
    patch insert move""")
)
_REWRITES_HISTORY: Final = frozenset(_words("rebase restack amend squash"))
_WORD: Final = re.compile(r"[A-Za-z][a-z]*|[A-Z]+(?![a-z])|\d+")

_WORD_CATEGORY: Final[dict[str, Category]] = {
    word: category for category, words in _VERBS.items() for word in words
}


def _name_words(name: str) -> list[str]:
    """``git_diffUnstaged`` -> ``["git", "diff", "unstaged"]``."""
    return [w.lower() for w in _WORD.findall(name)]


def _input_names(schema: Any) -> list[str]:
    if not isinstance(schema, Mapping):
        return []
    props = schema.get("properties")
    return [str(k) for k in props] if isinstance(props, Mapping) else []


# What each kind of poisoning finding is, in a person's words.
_POISONING: Final = {
    "hidden_unicode": "hidden text",
    "model_instruction": "orders aimed at the AI model",
    "shadowing": "rules for other tools",
    "exfiltration": "asks for data to be handed over",
    "overlong": "too long to review",
}


def _poisoning_signals(findings: Iterable[Finding]) -> list[Signal]:
    """One signal per kind of finding: the first one's reason, where it is, how many more."""
    by_kind: dict[str, list[Finding]] = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    signals = []
    for kind in KINDS:
        found = by_kind.get(kind)
        if not found:
            continue
        more = f", and {len(found) - 1} more" if len(found) > 1 else ""
        detail = f"{_POISONING[kind]}: {found[0].why} (in {found[0].where}{more})"
        signals.append(Signal("poisoning", detail, None, 0.0))
    return signals


def classify(tool: Mapping[str, Any], *, other_tools: Iterable[str] = ()) -> Risk:
    """Assess one tool definition as ``tools/list`` gives it. ``other_tools``: the names of
    other servers' tools, which a poisoned description may try to set rules for."""
    name = str(tool.get("name", ""))
    description = str(tool.get("description") or "")
    annotations = tool.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        annotations = {}
    inputs = [n.lower() for n in _input_names(tool.get("inputSchema"))]
    signals: list[Signal] = []

    words = _name_words(name)
    for position, word in enumerate(words):
        category = _WORD_CATEGORY.get(word)
        if category is None:
            continue
        # The first word is usually the verb: what the tool does. Later words say to what.
        weight = 3.0 if position == 0 or category is Category.DESTRUCTIVE else 2.0
        signals.append(Signal("name", f'word "{word}"', category, weight))

    first_sentence = re.split(r"(?<=[.!?])\s|\n", description.strip(), maxsplit=1)[0]
    for pattern, category, weight, detail in _PHRASES:
        if pattern.search(first_sentence):
            signals.append(Signal("description", detail, category, weight))
        elif pattern.search(description):
            signals.append(Signal("description", detail, category, weight / 2))

    for field_name in inputs:
        if field_name in _EXEC_INPUTS:
            signals.append(Signal("input", f'takes "{field_name}"', Category.EXECUTE, 2.0))
        elif field_name in _NET_INPUTS:
            signals.append(Signal("input", f'takes "{field_name}"', Category.NETWORK, 1.5))
        elif field_name in _WRITE_INPUTS:
            signals.append(Signal("input", f'takes "{field_name}"', Category.WRITE, 1.0))

    read_only = annotations.get("readOnlyHint")
    destructive = annotations.get("destructiveHint")
    if read_only is True and destructive is True:
        # Contradictory claims: believe the one that asks for more care.
        signals.append(
            Signal(
                "annotation",
                "readOnlyHint and destructiveHint both true: contradictory, taken as destructive",
                Category.DESTRUCTIVE,
                3.0,
            )
        )
    elif read_only is True:
        # The server's claim, never proof: it settles a tool nothing else speaks of, but
        # it does not outvote a name, a description or an input that says otherwise.
        # (Reported either way, with no weight when contradicted.)
        contradicted = any(s.category is not Category.READ for s in signals)
        weight = 0.0 if contradicted else 2.5
        signals.append(
            Signal("annotation", "readOnlyHint: true (the server's claim)", Category.READ, weight)
        )
    elif destructive is True:
        signals.append(Signal("annotation", "destructiveHint: true", Category.DESTRUCTIVE, 3.0))
    if annotations.get("openWorldHint") is True:
        signals.append(Signal("annotation", "openWorldHint: true", Category.NETWORK, 1.0))

    category = _winner((s.category, s.weight) for s in signals if s.category is not None)
    level, level_signals = _level(
        category, description=description, words=words, inputs=inputs, annotations=annotations
    )
    signals.extend(level_signals)
    if not any(s.category is category for s in signals):
        signals.append(Signal("name", "no clear evidence: assumed to only read", None, 0.0))
    poisoning = _poisoning_signals(scan_tool(tool, other_tools=other_tools))
    if poisoning:
        level = Level.HIGH
    return Risk(name, category, level, (*poisoning, *signals))


def _winner(evidence: Iterable[tuple[Category, float]]) -> Category:
    """The category the weighted evidence points to most (the graver one on a tie)."""
    scores: dict[Category, float] = {}
    for category, weight in evidence:
        scores[category] = scores.get(category, 0.0) + weight
    if not scores:
        return Category.READ
    return max(scores, key=lambda c: (round(scores[c], 6), _SEVERITY[c]))


def _level(
    category: Category,
    *,
    description: str,
    words: list[str],
    inputs: list[str],
    annotations: Mapping[str, Any],
) -> tuple[Level, list[Signal]]:
    level = _BASE_LEVEL[category]
    why: list[Signal] = []
    text = f"{' '.join(words)} {description}"
    if category is Category.READ and _SENSITIVE.search(text):
        level = Level.MEDIUM
        found = _SENSITIVE.search(text)
        assert found is not None
        why.append(Signal("description", f'may expose secrets ("{found.group(0)}")', None, 0.0))
    elif category is Category.WRITE:
        forced = [i for i in inputs if i in _FORCE_INPUTS]
        rewrites = [w for w in words if w in _REWRITES_HISTORY]
        if rewrites:
            level = Level.HIGH
            why.append(Signal("name", f'rewrites history ("{rewrites[0]}")', None, 0.0))
        elif re.search(r"\boverwrit", description, re.IGNORECASE) or forced:
            level = Level.HIGH
            detail = f'takes "{forced[0]}"' if forced else "may overwrite existing data"
            why.append(Signal("input" if forced else "description", detail, None, 0.0))
        elif annotations.get("destructiveHint") is True:
            level = Level.HIGH
            why.append(Signal("annotation", "destructiveHint: true", None, 0.0))
    elif category is Category.NETWORK:
        sends = [w for w in words if w in _SENDS]
        if sends:
            level = Level.HIGH
            why.append(
                Signal("name", f'sends or changes things remotely ("{sends[0]}")', None, 0.0)
            )
    return level, why


def tools_from_json(document: Any) -> list[Mapping[str, Any]]:
    """The tool definitions in a ``tools/list`` result, a JSON-RPC response holding one,
    a list of tools, or one tool.

    Raises:
        ValueError: the document holds no tool definitions.
    """
    if isinstance(document, Mapping) and isinstance(document.get("result"), Mapping):
        document = document["result"]
    if isinstance(document, Mapping) and isinstance(document.get("tools"), list):
        document = document["tools"]
    if isinstance(document, Mapping):
        document = [document]
    if not isinstance(document, list) or not document:
        raise ValueError("expected a tool definition, a list of them, or a tools/list result")
    for i, item in enumerate(document):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValueError(f'item {i} is not a tool definition (an object with a "name")')
    return list(document)


def classify_many(tools: Iterable[Mapping[str, Any]]) -> list[Risk]:
    return [classify(tool) for tool in tools]
