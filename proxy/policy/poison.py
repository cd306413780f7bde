"""Is a tool's definition poisoned? What a server says about a tool, read as an attacker
would write it.

A model reads every text a server publishes about its tools (the name, the description,
every parameter's name, title, description, default, enum and examples, the output
schema, the annotations' title, the server's ``instructions``) as if it were part of its
orders; a person sees little of it. Tool-poisoning research showed what works against
agents through that channel, and each :class:`Finding` is one of those shapes, seen in one
text, with the offsets a window needs to highlight it:

- ``hidden_unicode``: text a person cannot see but a model reads: Unicode tag characters
  (ASCII smuggling), bidi controls, zero-width and other format characters, terminal
  control codes, runs of variation selectors, and blank padding that pushes text out of
  view. Legitimate uses are let through: emoji sequences, subdivision flags, the joiners
  Persian and Indic scripts spell with, a leading byte-order mark.
- ``model_instruction``: orders aimed at the model: to ignore its instructions, to keep
  something from the user, to read a sensitive file first, to run a dangerous command;
  markup that imitates a system prompt (``<IMPORTANT>``, ``<|im_start|>``); a new role.
- ``shadowing``: rules for how *other* tools must behave ("when send_email is used, bcc
  ..."), by the names of other servers' tools the caller knows, or in general words.
- ``exfiltration``: asks for secrets, files or the conversation to be put in a parameter
  or sent to a fixed address.
- ``overlong``: longer than honest texts are (see the limits below), or nested deeper
  than Lockgate reads.

Pure and synchronous, and never raises on what a server sent: the scan is bounded in depth,
in the number of texts and in the characters read, and its patterns have bounded windows,
so a 10 MB description costs a fraction of a second.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any, Final

__all__ = ["KINDS", "Finding", "scan_instructions", "scan_tool", "text_at"]

KINDS: Final = ("hidden_unicode", "model_instruction", "shadowing", "exfiltration", "overlong")

# Longest honest texts, from the labelled real tools (tests/data/risk_labelled_tools.json):
# the longest description is sequential-thinking's, 2,781 characters; the longest text in
# any schema is 199. The limits leave room above both, and well below what it takes to
# bury a payload under pages of filler. Names: the MCP specification's 128.
LIMITS: Final = {
    "name": 128,
    "key": 128,
    "title": 256,
    "description": 4096,
    "schema": 1024,
    "instructions": 8192,
}

MAX_DEPTH: Final = 32  # nesting levels of a schema that are read
MAX_NODES: Final = 5_000  # values visited in one tool
MAX_SCAN: Final = 32_768  # characters of one text that are read (8 times the longest honest)
MAX_TOTAL_SCAN: Final = 131_072  # ... and of all the texts of one tool together
MAX_FINDINGS: Final = 256  # findings of one tool: past that, the rest is not read
MAX_FINDINGS_PER_TEXT: Final = 16
MAX_EXCERPT: Final = 120


@dataclass(frozen=True, slots=True)
class Finding:
    """One suspicious part of one text of a tool definition."""

    kind: str  # one of KINDS
    where: str  # which text: "description", "inputSchema.properties.path.description", ...
    start: int  # offsets into text_at(tool, where) of the offending part
    end: int
    excerpt: str  # the offending part, invisible characters shown as \u{...} escapes
    why: str  # one plain sentence for a person

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "where": self.where,
            "start": self.start,
            "end": self.end,
            "excerpt": self.excerpt,
            "why": self.why,
        }


def scan_tool(tool: Mapping[str, Any], *, other_tools: Iterable[str] = ()) -> tuple[Finding, ...]:
    """Every finding in a tool definition as ``tools/list`` gives it.

    ``other_tools`` are the names of other servers' tools: a description that sets rules
    for one of them is shadowing it. The tool's own name is never counted among them.
    """
    definition: Any = tool  # whatever the server sent, whatever the type says
    if not isinstance(definition, Mapping):
        return ()
    name = tool.get("name")
    scanner = _Scanner(other_tools, own=name if isinstance(name, str) else "")
    for key, role in (("name", "name"), ("title", "title"), ("description", "description")):
        value = tool.get(key)
        if isinstance(value, str):
            scanner.text(key, value, role)
    for key, role in (
        ("inputSchema", "schema"),
        ("outputSchema", "schema"),
        ("annotations", "title"),
    ):
        if key in tool:
            scanner.tree(tool[key], key, role)
    return tuple(scanner.findings)


def scan_instructions(text: str, *, other_tools: Iterable[str] = ()) -> tuple[Finding, ...]:
    """Every finding in a server's ``instructions`` (``where`` is ``"instructions"``;
    ``text_at({"instructions": text}, "instructions")`` gives the text back)."""
    instructions: Any = text  # whatever the server sent, whatever the type says
    if not isinstance(instructions, str):
        return ()
    scanner = _Scanner(other_tools, own="")
    scanner.text("instructions", text, "instructions")
    return tuple(scanner.findings)


def text_at(tool: Mapping[str, Any], where: str) -> str | None:
    """The text a finding's ``where`` names, or None when there is none (a finding about
    structure, such as nesting too deep, names an object rather than a text)."""
    key_of = where.endswith("#key")
    path = where[: -len("#key")] if key_of else where
    steps = _parse_where(path)
    if not steps:
        return None
    node: Any = tool
    for step in steps[:-1]:
        node = _step(node, step)
    last = steps[-1]
    if key_of:
        if isinstance(node, Mapping) and isinstance(last, str) and last in node:
            return last
        return None
    value = _step(node, last)
    return value if isinstance(value, str) else None


# --- where: a path to one text ---------------------------------------------------------------

_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z0-9_$@-]+")
_WHERE_STEP: Final = re.compile(r'\.?([A-Za-z0-9_$@-]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')
_MISSING: Final = object()


def _segment(key: str) -> str:
    return f".{key}" if _PLAIN_SEGMENT.fullmatch(key) else f"[{json.dumps(key)}]"


def _parse_where(path: str) -> list[str | int]:
    steps: list[str | int] = []
    position = 0
    while position < len(path):
        found = _WHERE_STEP.match(path, position)
        if found is None:
            return []
        plain, index, quoted = found.groups()
        if plain is not None and (position == 0) == found.group(0).startswith("."):
            return []  # "a.b", not ".a" nor "ab" glued to the step before
        if plain is not None:
            steps.append(plain)
        elif index is not None:
            steps.append(int(index))
        else:
            steps.append(str(json.loads(quoted)))
        position = found.end()
    return steps


def _step(node: Any, step: str | int) -> Any:
    if isinstance(step, int):
        return node[step] if isinstance(node, list) and step < len(node) else _MISSING
    return node.get(step, _MISSING) if isinstance(node, Mapping) else _MISSING


# --- hidden characters ------------------------------------------------------------------------

_TAG_FIRST: Final = 0xE0000  # tag characters U+E0020..E007E encode ASCII from here
# Every character of category Cf (Unicode 15), C0 and C1 controls but tab, line feed and
# carriage return, variation selectors and the Hangul fillers, which render as nothing.
_HIDDEN_CLASS: Final = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f"
    "\u0890\u0891\u08e2\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e007f\U000e0100-\U000e01ef"
)
_HIDDEN_RUN: Final = re.compile(f"[{_HIDDEN_CLASS}]+")
_HIDDEN_CHAR: Final = re.compile(f"[{_HIDDEN_CLASS}]")
# Format characters that show as a mark (Arabic number signs and the like): not hidden.
_VISIBLE_FORMAT: Final = frozenset(
    [*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x110BD, 0x110CD]
)
_ZW_JOINERS: Final = frozenset((0x200C, 0x200D))
_ANSI_TAIL: Final = re.compile(r"\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]{0,200}(?:\x07|\x1b\\)|[@-Z\\-_]")
_FLAG_TAGS: Final = re.compile("[\U000e0030-\U000e0039\U000e0061-\U000e007a]{2,6}\U000e007f")
_PADDING: Final = re.compile(r"\s{12,}")
_MERGE_GAP: Final = 3  # visible characters between two hidden runs that make them one
_MAX_RUNS: Final = 10_000  # runs of hidden characters (or of blanks) looked at in one text


def _is_variation_selector(cp: int) -> bool:
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def _is_emoji(cp: int) -> bool:
    return cp >= 0x1F000 or 0x2190 <= cp <= 0x2BFF or cp in (0x00A9, 0x00AE, 0x3030, 0x303D)


def _joins_letters(ch: str) -> bool:
    """A letter or mark of a script that spells with ZWJ/ZWNJ (Arabic, Persian, Indic...)."""
    return ord(ch) >= 0x0590 and unicodedata.category(ch)[0] in "LM"


def _breaks_words(ch: str) -> bool:
    """A character of a script written without spaces, where ZWSP marks word breaks."""
    cp = ord(ch)
    return (
        0x0E00 <= cp <= 0x0EFF  # Thai, Lao
        or 0x1000 <= cp <= 0x109F  # Myanmar
        or 0x1780 <= cp <= 0x17FF  # Khmer
        or 0x3040 <= cp <= 0x30FF  # kana
        or 0x4E00 <= cp <= 0x9FFF  # CJK ideographs
    )


def _legitimate(text: str, start: int, end: int) -> bool:
    """Whether a run of hidden characters is one of their honest uses."""
    run = text[start:end]
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    codes = [ord(c) for c in run]
    if all(cp in _VISIBLE_FORMAT for cp in codes):
        return True
    if len(codes) == 1 and _is_variation_selector(codes[0]):
        return True  # emoji or ideograph presentation
    if run == "\ufeff" and start == 0:
        return True  # a byte-order mark at the start of a file
    if (
        before
        and after
        and codes[-1] == 0x200D
        and all(cp == 0xFE0F for cp in codes[:-1])
        and _is_emoji(ord(before))
        and _is_emoji(ord(after))
    ):
        return True  # an emoji ZWJ sequence, 👩‍💻
    if len(codes) == 1 and before and after:
        if codes[0] in _ZW_JOINERS and _joins_letters(before) and _joins_letters(after):
            return True
        if codes[0] == 0x200B and _breaks_words(before) and _breaks_words(after):
            return True
    return before == "\U0001f3f4" and _FLAG_TAGS.fullmatch(run) is not None  # 🏴 subdivision


def _hidden_why(run: str) -> str:
    codes = [ord(c) for c in run]
    tags = "".join(chr(cp - _TAG_FIRST) for cp in codes if 0xE0020 <= cp <= 0xE007E)
    if tags:
        shown = tags if len(tags) <= 60 else tags[:59] + "…"
        return (
            "Unicode tag characters hide text that a person cannot see but a model reads: "
            f'"{shown}"'
        )
    if any(
        cp in (0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x200E, 0x200F, 0x061C) for cp in codes
    ) or any(0x2066 <= cp <= 0x2069 for cp in codes):
        return "bidirectional control characters make the text show other than what a model reads"
    if 0x1B in codes:
        return "terminal escape codes can hide or rewrite text on a person's screen"
    if any(cp < 0x20 or 0x7F <= cp <= 0x9F for cp in codes):
        return "control characters that a screen does not show"
    if any(cp in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF) for cp in codes):
        return "zero-width characters hide text or split words so that filters miss them"
    if sum(1 for cp in codes if _is_variation_selector(cp)) > 1:
        return "a run of variation selectors, a known way to smuggle hidden data"
    return "invisible formatting characters that a person cannot see"


def _hidden(text: str) -> Iterator[tuple[int, int, str]]:
    """Runs of hidden characters as (start, end, why), nearby runs merged into one."""
    spans: list[list[int]] = []
    for found in islice(_HIDDEN_RUN.finditer(text), _MAX_RUNS):
        start, end = found.span()
        if _legitimate(text, start, end):
            continue
        if text[end - 1] == "\x1b":
            tail = _ANSI_TAIL.match(text, end)
            if tail is not None:
                end = tail.end()
        if spans and start - spans[-1][1] <= _MERGE_GAP and end - spans[-1][0] <= 10_000:
            spans[-1][1] = end
            continue
        if len(spans) == MAX_FINDINGS_PER_TEXT:
            break
        spans.append([start, end])
    for start, end in spans:
        run = "".join(_HIDDEN_CHAR.findall(text, start, end))
        yield start, end, _hidden_why(run)
    for found in islice(_PADDING.finditer(text), _MAX_RUNS):
        start, end = found.span()
        padding = found.group(0)
        if end < len(text) and (len(padding) >= 200 or padding.count("\n") >= 12):
            yield start, end, "a long run of blank space pushes the text after it out of view"
            break


# --- the text the phrase rules read -----------------------------------------------------------

_QUOTES: Final = {"‘": "'", "’": "'", "ʼ": "'", "“": '"', "”": '"'}  # noqa: RUF001


@lru_cache(maxsize=4096)
def _fold(ch: str) -> str:
    return _QUOTES.get(ch) or unicodedata.normalize("NFKC", ch)


class _Skeleton:
    """A text as the phrase rules read it, with every offset mapped back to the original:
    hidden characters dropped (tag characters read as the ASCII they encode), compatibility
    forms folded (fullwidth letters, curly quotes) and, for names, identifiers split into words
    (``userSshKey`` reads ``user Ssh Key``)."""

    __slots__ = ("index", "text")

    def __init__(self, raw: str, *, identifier: bool = False) -> None:
        if not identifier and raw.isascii() and _HIDDEN_CHAR.search(raw) is None:
            self.text = raw
            self.index: list[int] | None = None
            return
        parts: list[str] = []
        index: list[int] = []
        previous = ""
        for i, ch in enumerate(raw):
            cp = ord(ch)
            if 0xE0020 <= cp <= 0xE007E:
                folded = chr(cp - _TAG_FIRST)
            elif _HIDDEN_CHAR.match(ch) is not None:
                continue
            elif identifier and ch in "_-.":
                folded = " "
            else:
                folded = ch if cp < 0x80 else _fold(ch)
                if identifier and ch.isupper() and previous.islower():
                    folded = " " + folded
            previous = ch
            parts.append(folded)
            index.extend([i] * len(folded))
        self.text = "".join(parts)
        self.index = index

    def span(self, start: int, end: int) -> tuple[int, int]:
        if self.index is None:
            return start, end
        return self.index[start], self.index[end - 1] + 1


# --- phrase rules -----------------------------------------------------------------------------

_I: Final = re.IGNORECASE
_WIN = r"[^.!?\n]"  # a character of the same sentence


_ALL_WORDS: Final[set[str]] = set()  # every rule's words, filled in as the rules are made


class _Rule:
    """One pattern, as alternatives that each say which words (lower-cased, at least one)
    every match of theirs contains: an alternative none of whose words is in a text is not
    run on it. A word may also be a pattern of its own, for what words cannot say (an IP
    address). tests/proxy/policy/test_poison.py checks that this skipping loses nothing."""

    __slots__ = ("gated", "parts", "words")

    def __init__(self, *parts: tuple[str, str | re.Pattern[str]], flags: int = _I) -> None:
        self.parts = tuple(
            (
                re.compile(pattern, flags),
                words if isinstance(words, re.Pattern) else frozenset(words.split()),
            )
            for pattern, words in parts
        )
        self.words = frozenset(
            w for _, words in self.parts if not isinstance(words, re.Pattern) for w in words
        )
        self.gated = all(not isinstance(words, re.Pattern) for _, words in self.parts)
        _ALL_WORDS.update(self.words)

    def may_match(self, text: str, present: frozenset[str]) -> Iterator[re.Pattern[str]]:
        """The alternatives worth running on a text (``present``: which of all the rules'
        words it holds, see :func:`_present`)."""
        for pattern, words in self.parts:
            if isinstance(words, re.Pattern):
                if words.search(text) is not None:
                    yield pattern
            elif not words.isdisjoint(present):
                yield pattern


def _present(text: str) -> frozenset[str]:
    """Which of the rules' words a text holds (lower-cased, as parts of words too)."""
    folded = text.lower()
    return frozenset(w for w in _ALL_WORDS if w in folded)


_OVERRIDE: Final = _Rule(
    (
        rf"\b(?:ignore|disregard|forget|override|bypass|skip|discard)\b{_WIN}{{0,40}}?\b(?:previous|prior|earlier|above|preceding|former|original|existing|system|safety|developer|user'?s|all\s+other)\b{_WIN}{{0,30}}?\b(?:instructions?|prompts?|rules?|guidance|guidelines?|directions?|directives?|messages?|requests?|polic(?:y|ies)|constraints?|restrictions?|commands?)\b",
        "ignore disregard forget override bypass skip discard",
    ),
    (
        rf"\bignorier(?:e|en|t)?\b{_WIN}{{0,30}}?\b(?:vorherigen?|bisherigen?|obigen?|früheren?|alle)\b{_WIN}{{0,20}}?\b(?:anweisungen|regeln|befehle|instruktionen)\b",
        "ignorier",
    ),
    (
        rf"\bignor(?:e|ez|er)\b{_WIN}{{0,30}}?\b(?:instructions?|consignes|règles)\b{_WIN}{{0,20}}?\b(?:précédentes?|antérieures?)\b",
        "ignor",
    ),
    (
        rf"\bignor(?:a|e|ar|ad)\b{_WIN}{{0,30}}?\b(?:instrucciones|reglas|indicaciones|instruções|regras)\b{_WIN}{{0,20}}?\b(?:anteriores|previas|prévias)\b",
        "ignor",
    ),
    (
        rf"\bигнориру?\w*{_WIN}{{0,30}}?(?:предыдущие|прежние|все){_WIN}{{0,20}}?(?:инструкции|указания|правила)",  # noqa: RUF001
        "игнор",
    ),
    (
        r"(?:忽略|无视|無視|忽視)[^。！？\n]{0,10}?(?:之前|以前|先前|上面|上述|前面|所有|全部|一切)[^。！？\n]{0,6}?(?:指令|指示|说明|說明|规则|規則|命令)",  # noqa: RUF001
        "忽略 无视 無視 忽視",
    ),
    (r"(?:以前|前|上記|これまで)の(?:指示|命令|ルール)を(?:すべて)?無視", "無視"),
)

_CONCEAL: Final = _Rule(
    (
        rf"\b(?:do\s+not|don'?t|never|must\s+not|mustn'?t|should\s+not|shouldn'?t|without)\s+(?:\w+\s+){{0,2}}?(?:tell|telling|inform|informing|notify|notifying|alert|alerting|let|letting|warn|warning)\b{_WIN}{{0,40}}?\b(?:user|users|person|human|operator|them|anyone|anybody)\b",
        "not n't dont never without",
    ),
    (
        rf"\b(?:do\s+not|don'?t|never|must\s+not|mustn'?t|should\s+not|shouldn'?t|without)\s+(?:\w+\s+){{0,2}}?(?:mention|mentioning|reveal|revealing|disclose|disclosing|show|showing|bring\s+(?:this|it|that)\s+up)\b{_WIN}{{0,40}}?\b(?:user|users|person|human|operator|anyone|anybody)\b",
        "not n't dont never without",
    ),
    (
        r"\b(?:don'?t|do\s+not|never)\s+(?:mention|bring\s+up|reveal|disclose|discuss)\s+(?:this|it|that|these|any\s+of\s+(?:this|it))\b",
        "mention bring reveal disclose discuss",
    ),
    (
        r"\b(?:user|person|human)\s+(?:does\s+not|doesn'?t|need\s+not|needn'?t|should\s+not|shouldn'?t|must\s+not|mustn'?t|won'?t|will\s+not|may\s+not)\s+(?:need\s+to\s+)?(?:know|hear|see|notice|learn|be\s+told|be\s+informed|find\s+out)\b",
        "not n't",
    ),
    (
        r"\b(?:leave|keep)\s+(?:it|this|that|these|them)(?:\s+\w+){0,2}?\s+out\s+of\s+(?:your|the)\s+(?:answer|reply|response|output|message|summary)\b",
        "leave keep",
    ),
    (
        r"\bkeep\s+(?:it|this|that|these)(?:\s+\w+)?\s+(?:secret|hidden|private|confidential|between\s+us)\b",
        "keep",
    ),
    (r"\bhide\s+(?:it|this|that|these)\s+from\s+(?:the\s+)?(?:user|person|human)\b", "hide"),
    (r"\bsay\s+nothing\s+(?:about|of)\b", "nothing"),
    (
        r"\b(?:quietly|silently|secretly|covertly|discreetly|invisibly)\s+(?:\w+\s+)?(?:send|post|upload|forward|copy|include|add|call|run|read|attach|append|email|share|change|replace|set|execute|delete|remove)\b",
        "quietly silently secretly covertly discreetly invisibly",
    ),
    (
        r"\binstead\s+of\s+(?:showing|telling|giving|returning|displaying)\s+(?:\w+\s+){0,2}?(?:to\s+)?the\s+(?:user|person)\b",
        "instead",
    ),
    (
        r"\b(?:without|instead\s+of)\s+(?:asking|checking\s+with|confirming\s+with|consulting|telling|informing)\s+(?:the\s+)?(?:user|person|human|them)\b",
        "without instead",
    ),
    (
        r"\bno\s+need\s+to\s+(?:ask|confirm\s+with|check\s+with)\s+(?:the\s+)?(?:user|person|them)\b",
        "need",
    ),
    (
        rf"\b(?:sag|sage|sagen|erzähl|erzähle|verrate|verrat)\b{_WIN}{{0,30}}?\b(?:nutzer|benutzer|anwender|user)\w*{_WIN}{{0,20}}?\bnichts\b",
        "nichts",
    ),
    (
        rf"\bne\s+(?:dites|dis|mentionnez|mentionne|révélez|révèle)\s+(?:rien|pas)\b{_WIN}{{0,30}}?\butilisateur",
        "utilisateur",
    ),
    (r"\bsans\s+(?:le\s+dire|prévenir|informer)\s+(?:à\s+)?l'utilisateur", "utilisateur"),
    (
        rf"\bno\s+(?:le\s+)?(?:digas|diga|menciones|mencione|informes|informe|cuentes|cuente)\b{_WIN}{{0,30}}?\busuario",
        "usuario",
    ),
    (rf"\bnão\s+(?:diga|conte|mencione|informe)\b{_WIN}{{0,30}}?\busuário", "usuário"),
    (
        rf"\bне\s+(?:говори|сообщай|рассказывай|упоминай)\w*{_WIN}{{0,30}}?пользовател",  # noqa: RUF001
        "пользовател",
    ),
    (r"(?:不要|别|不得|切勿)(?:告诉|告知|通知|让)(?:用户|使用者)", "用户 使用者"),
    (r"ユーザー(?:に|には)(?:言わ|伝え|知らせ|教え)ないで", "ユーザー"),
)

_MARKUP: Final = _Rule(
    (
        r"<\s*/?\s*(?:important|system|sys|instructions?|secret|hidden|admin|critical|override|assistant|system[_\x20-]?prompt|developer|tool[_-]?(?:description|instructions?)|hidden[_-]?instructions?|urgent|ai[_-]?instructions?)\s*>",
        "<",
    ),
    (
        r"<\|\s*(?:im_start|im_end|im_sep|system|assistant|user|endoftext|eot_id|start_header_id|end_header_id)\s*\|>",
        "<|",
    ),
    (r"\[/?\s*(?:INST|SYS|SYSTEM|SYSTEM\s+MESSAGE|ADMIN)\s*\]", "["),
    (r"<<\s*/?\s*SYS\s*>>", "<<"),
    (r"\b(?:system|admin|developer|root)\s+override\b", "override"),
    (
        r"\bnew\s+system\s+(?:prompt|instructions?|policy|rules?)\b|\bsystem\s+prompt\s*[:=]",
        "system",
    ),
)

_ROLE: Final = _Rule(
    (
        r"\byou\s+are\s+now\b|\byou'?re\s+now\b|\bfrom\s+now\s+on,?\s+(?:you|the\s+assistant)\b",
        "you assistant",
    ),
    (r"\bdeveloper\s+mode\b|\bjailbreak|\bDAN\s+mode\b", "mode jailbreak"),
    (
        r"\b(?:your|the)\s+(?:safety\s+)?(?:rules|guidelines|instructions|restrictions)\s+(?:no\s+longer|do\s+not|don'?t)\s+apply\b",
        "apply",
    ),
    (
        r"\byou\s+(?:work|answer|report)\s+(?:for|to)\s+(?:the\s+)?(?:operator|owner|author|developer|vendor|server|us)\b",
        "you",
    ),
    (
        rf"\b(?:win|wins|takes?\s+precedence|overrides?|outranks?|comes?\s+first|prevails?)\s+(?:over|above)\s+(?:anything|whatever|what|everything|all|any\w*)\b{_WIN}{{0,20}}?\b(?:user|person|human)\b",
        "over above",
    ),
    (
        r"\b(?:user|person|customer)\s+(?:has|have)\s+(?:already\s+)?(?:pre-?approved|approved|authori[sz]ed|consented\s+to|agreed\s+to|allowed)\s+(?:every|all|any|each)\b",
        "approved authori consented agreed allowed",
    ),
    (r"\b(?:real|true|actual)\s+intent(?:ion)?\s+is\s+always\b", "intent"),
)

_GLOBAL_RULE: Final = _Rule(
    (
        rf"\b(?:before|after|whenever|every\s+time|each\s+time|any\s+time|prior\s+to)\b{_WIN}{{0,30}}?\b(?:using|calling|invoking|running|executing|use|call|invoke|run|execute|send|sending|write|writing|open|opening)\b{_WIN}{{0,20}}?\b(?:any|every|all|each|another|other)\b{_WIN}{{0,25}}?\b(?:tools?|functions?|commands?|calls?|requests?|actions?|operations?|messages?|emails?|files?)\b",
        "before after whenever time prior",
    ),
    (
        r"\b(?:every|each|all|any)\s+(?:\w+\s+){0,2}?(?:tool\s+calls?|commands?|requests?|messages?|emails?|queries|files?)\s+(?:\S+\s+){0,3}?(?:must|should|has\s+to|have\s+to|needs?\s+to|is\s+required\s+to|are\s+required\s+to)\s+(?:be\s+|also\s+)?(?:prefixed|suffixed|prepended|appended|sent|copied|cc'?d|bcc'?d|forwarded|include|contain|start|end|begin|go)\b",
        "must should has have need required",
    ),
    (r"\b(?:always|must|first)\s+(?:\w+\s+){0,3}?call\s+this\s+tool\s+(?:first|before)\b", "call"),
)

_DECODE_AND_FOLLOW: Final = _Rule(
    (
        rf"\bdecode\b{_WIN}{{0,60}}?\b(?:follow|obey|execute|run|do\s+what|carry\s+out|apply)\b",
        "decode",
    ),
    (
        rf"\b(?:follow|obey|execute|run)\b{_WIN}{{0,30}}?\b(?:decoded|base64|hex|rot13)\b",
        "decoded base64 hex rot13",
    ),
)

_DANGER: Final = _Rule(
    (r"\b(?:curl|wget)\b[^|\n]{0,200}\|\s*(?:sudo\s+)?(?:ba|z|k|da)?sh\b", "curl wget"),
    (r"\bchmod\s+(?:-R\s+)?0?777\s+(?:~|/|\$HOME)", "chmod"),
    (r"\brm\s+-(?:rf|fr|r)\s+(?:~|/|\$HOME|\*)", "rm"),
    (r"\bbase64\s+(?:-d|--decode)\b[^|\n]{0,80}\|\s*(?:ba)?sh\b", "base64"),
    (r"\b(?:powershell|pwsh)(?:\.exe)?\s+(?:-\w+\s+)*-(?:enc|encodedcommand)\b", "powershell pwsh"),
    (r"\bInvoke-Expression\b", "invoke-expression"),
)
_BACKDOOR: Final = _Rule((r"/dev/tcp/", "/dev/tcp/"), (r"\bnc(?:at)?\s+(?:-\w+\s+)*-e\b", "nc"))
_GRANTS_ACCESS: Final = _Rule(
    (r"\bauthorized_keys\b|/etc/sudoers\b", "authorized_keys /etc/sudoers")
)
_HTML_COMMENT: Final = _Rule((r"<!--", "<!--"))

# Sensitive things a tool has no honest reason to ask the model for.
_HOME = r"(?:(?:~|\$HOME|%USERPROFILE%)?/)?"
_SECRET_FILE: Final = _Rule(
    (rf"{_HOME}\.ssh\b(?:/[\w.-]+)?", ".ssh"),
    (r"\bid_(?:rsa|dsa|ecdsa|ed25519)\b", "id_"),
    (r"\bauthorized_keys\b", "authorized_keys"),
    (rf"{_HOME}\.aws/(?:credentials|config)\b", ".aws/"),
    (
        rf"{_HOME}\.azure/[\w./-]*|{_HOME}\.config/gcloud\b[\w./-]*|\bapplication_default_credentials\.json",
        ".azure/ gcloud application_default",
    ),
    (rf"{_HOME}(?:\.kube/config\b|\.docker/config\.json\b)", ".kube/ .docker/"),
    (
        rf"{_HOME}(?:\.cursor|\.codeium)/[\w./-]*|\bmcp\.json\b|\bclaude_desktop_config\.json\b",
        "mcp.json claude_desktop .cursor/ .codeium/",
    ),
    (r"(?<![\w.])\.env(?![\w.-])", ".env"),
    (
        r"\.netrc\b|\.npmrc\b|\.pypirc\b|\.git-credentials\b|\.gnupg\b|\.password-store\b",
        ".netrc .npmrc .pypirc .git-credentials .gnupg .password-store",
    ),
    (r"\.(?:bash|zsh)_history\b", "_history"),
    (r"/etc/(?:shadow|passwd|sudoers)\b", "/etc/"),
    (r"\bwallet\.dat\b|\blogin\.keychain\b", "wallet.dat login.keychain"),
)
_SECRET_DATA: Final = _Rule(
    (
        r"\b(?:the\s+user'?s|users'|your|their|saved|stored|cached|the\s+person'?s|the\s+customer'?s)\s+(?:[\w-]+\s+){0,2}?(?:api[\s_-]?keys?|access[\s_-]?keys?|secret[\s_-]?keys?|tokens?|passwords?|passphrases?|credentials?|secrets?|private[\s_-]?keys?|ssh[\s_-]?keys?|session[\s_-]?(?:cookies|tokens?)|cookies|seed[\s_-]?phrases?|recovery[\s_-]?phrases?|mnemonics?|social\s+security\s+numbers?|credit[\s_-]?card(?:\s+numbers?)?|card\s+numbers?|bank\s+(?:account|details)|account\s+numbers?|environment\s+variables|env\s+vars|2fa\s+codes?|one-time\s+(?:codes?|passwords?))\b",
        "user your their saved stored cached person customer",
    ),
    (
        r"\b(?:values?|contents?)\s+of\s+(?:the\s+|all\s+)?(?:environment\s+variables|env\s+vars|secrets)\b",
        "value content",
    ),
)
_SECRET_NAME: Final = _Rule(
    (
        r"\b[A-Z][A-Z0-9]*_(?:API_KEY|TOKEN|SECRET|SECRET_KEY|PASSWORD|ACCESS_KEY|ACCESS_KEY_ID|PRIVATE_KEY)\b",
        "_api_key _token _secret _password _access_key _private_key",
    ),
    flags=0,
)
_CONVERSATION: Final = _Rule(
    (
        r"\b(?:entire|full|whole|complete)\s+(?:[\w-]+\s+)?(?:conversation|chat|dialog(?:ue)?|transcript|message\s+history|history|context(?:\s+window)?)\b",
        "entire full whole complete",
    ),
    (
        r"\b(?:conversation|chat|dialog(?:ue)?|message|session)\s+(?:history|so\s+far|log|transcript|up\s+to\s+(?:this|that)\s+point)\b",
        "conversation chat dialog message session",
    ),
    (
        r"\b(?:last|previous|earlier|prior|recent|past)\s+(?:[\w-]+\s+){0,2}?(?:user\s+)?messages?\b",
        "message",
    ),
    (
        r"\b(?:everything|whatever|anything)\s+(?:that\s+)?the\s+(?:user|person)\s+(?:has\s+)?(?:said|written|typed|told\s+you|shared|asked)\b",
        "said written typed told shared asked",
    ),
    (r"\b(?:your|the)\s+(?:full\s+|complete\s+|entire\s+)?system\s+prompt\b", "system"),
    (r"\binstructions\s+you\s+(?:were|have\s+been)\s+given\b", "instructions"),
)
_SECRET_IDENTIFIER: Final = _Rule(
    (
        r"\b(?:ssh|id\s?(?:rsa|dsa|ecdsa|ed25519)|private\s+key|secret\s+key|aws\s+(?:credentials|secret)|mcp\s+json|env\s+file|dotenv|netrc|npmrc|pypirc|(?:conversation|chat|message)\s+history|system\s+prompt)\b",
        "ssh id private secret aws mcp env netrc npmrc pypirc history system",
    )
)
_CONTENT_WORD: Final = _Rule(
    (
        r"\b(?:content|contents|reading|read|dump|copy|text|from)\b",
        "content read dump copy text from",
    )
)

# The model being told to do something with what it found (negated ones are skipped).
_ACT: Final = _Rule(
    (
        r"\b(?<!')(?:read|open|cat|copy|include|attach|append|send|upload|pass|put|paste|insert|embed|provide|fill|fills|print|dump|add|post|email|forward|take|supply|give|share|submit|enter|place|report|encode|set|load|grab|collect|gather|extract|output|echo|write|store)\b",
        """read open cat copy include attach append send upload pass put paste insert embed
        provide fill print dump add post email forward take supply give share submit enter
        place report encode set load grab collect gather extract output echo write store""",
    ),
    (
        r"\b(?:needs?|requires?|wants?|expects?)\s+(?:also\s+)?(?:the\s+|a\s+)?(?:full\s+)?(?:contents?|text|value|copy)\s+of\b",
        "need require want expect",
    ),
    (r"\b(?:needs?|requires?)\s+(?:also\s+)?(?:the\s+user'?s|your)\b", "need require"),
    (r"\bwith\s+(?:the\s+)?(?:full\s+)?(?:contents?|text)\s+of\b", "with"),
    (r"\bcall(?:ing)?\s+(?:it|this\s+tool|again|[`'\"]?\w+[`'\"]?)(?:\s+again)?\s+with\b", "call"),
    (
        r"\b(?<!')(?:lee|leer|pasa|pásalo|pasalo|envía|envia|incluye|copia|pon|adjunta|lis|lisez|lire|envoyez|envoie|envoyer|incluez|inclure|copiez|mettez|joignez|lies|lese|sende|schicke|füge|kopiere|leia|envie|inclua|copie|прочитай|отправь|скопируй|включи)\b",
        """lee leer pasa pásalo pasalo envía envia incluye copia pon adjunta lis lire envo
        inclu copiez mettez joignez lies lese sende schicke füge kopiere leia envie copie
        прочитай отправь скопируй включи""",
    ),
    (r"(?:读取|讀取|发送|發送|复制|複製|読み取|送信)", "读取 讀取 发送 發送 复制 複製 読み取 送信"),
)
_NEGATED: Final = re.compile(r"(?:\bnot|\bnever|n't|\bno)\s+$", _I)
_INTO_PARAMETER: Final = _Rule(
    (r"`[^`\n]{1,40}`", "`"),
    (
        r"\b(?:field|parameter|param|argument|arg|property|campo|champ|feld|parámetro|paramètre|parâmetro)\b",
        "field param arg property campo champ feld parámetro paramètre parâmetro",
    ),
    (r"\b(?:this|that|the\s+same)\s+(?:value|input)\b", "value input"),
    (r"\bhere\b", "here"),
    (
        r"\b(?:in|into)\s+(?:your|the|its)\s+(?:next|first|following)\s+(?:tool\s+)?(?:call|request|argument|parameters?)\b",
        "next first following",
    ),
    (r"\bcall(?:ing)?\s+(?:it|this\s+tool|again|[`'\"]?\w+[`'\"]?)(?:\s+again)?\s+with\b", "call"),
    (r"\bset\s+[`'\"]?\w+[`'\"]?\s+to\b", "set"),
    (r"参数", "参数"),
)
_FIRST: Final = _Rule(
    (
        r"\b(?:before|first|prior\s+to|then|also|too|as\s+well|additionally|in\s+the\s+same\s+(?:step|call)|otherwise|must|required|need\s+to|needs\s+to)\b",
        "before first prior then also too well additionally same otherwise must required need",
    ),
    (
        rf"\bor\s+(?:else\s+)?(?:the|this|it)\b{_WIN}{{0,30}}?\b(?:fail|fails|won'?t\s+work|will\s+not\s+work|breaks?)\b",
        "fail work break",
    ),
    (r"\bso\s+(?:that\s+)?(?:the|this)\s+(?:server|tool)\b", "server tool"),
    (
        r"\b(?:antes\s+de|avant\s+de|d'abord|bevor|zuerst|primero)\b|首先|之前",
        "antes avant d'abord bevor zuerst primero 首先 之前",
    ),
)

_DESTINATION: Final = _Rule(
    (r"\b(?:https?|ftp|wss?)://[^\s'\"<>)\]`]+", "://"),
    (r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", "@"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", re.compile(r"\d\.\d")),
)
_SEND: Final = _Rule(
    (
        r"\b(?:send|sends|sending|post|posts|posting|upload|uploads|uploading|forward|forwards|forwarding|transmit|exfiltrate|report|beacon|mirror|sync|push|pushes|relay|deliver|leak|email|mail|copy|cc|bcc|share|submit)\b",
        """send post upload forward transmit exfiltrate report beacon mirror sync push relay
        deliver leak mail copy cc share submit""",
    )
)
_ON_THE_SIDE: Final = _Rule(
    (
        r"\b(?:also|as\s+well|too|additionally|in\s+addition|a\s+copy|copies|copy\s+of|every|each|always|quietly|silently|secretly|instead\s+of|followed\s+by|plus)\b",
        """also well too additionally addition cop every each always quietly silently secretly
        instead followed plus""",
    )
)
_APPENDED_TO_ADDRESS: Final = _Rule(
    (r"\bfollowed\s+by\b|\bappend(?:ed)?\s+to\b", "followed append"), (r"\?\w+=", "?")
)
_HIDDEN_COPY: Final = _Rule(
    (
        rf"\b(?:bcc|cc|blind[\s-]+cop(?:y|ies)|carbon[\s-]+cop(?:y|ies)|copy|copies)(?:'d)?\b{_WIN}{{0,60}}?\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
        "@",
    ),
    (rf"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+{_WIN}{{0,30}}?\b(?:in\s+)?(?:bcc|cc)\b", "@"),
)

# Rules about other tools.
_SHADOW_CUE: Final = _Rule(
    (
        r"\b(?:when|whenever|every\s+time|each\s+time|any\s+time|before|after|instead|rather\s+than|in\s+place\s+of|always|never|must|should|shall|has\s+to|have\s+to|needs?\s+to|required|do\s+not|don'?t|avoid|replaces?|replaced|overrides?|deprecated|broken|compromised|unsafe|leaks?|obsolete|only\s+ever|prefer|redirect|as\s+well|make\s+sure|ensure|be\s+sure|bcc|prepend|append|also|too|until|unless)\b",
        """when time before after instead rather place always never must should shall has have
        need required not dont don't avoid replace override deprecated broken compromised
        unsafe leak obsolete only prefer redirect well sure bcc prepend append also too
        until unless""",
    )
)
_OTHER_TOOLS: Final = _Rule(
    (
        r"\b(?:(?:any|all|every|each|the)\s+)?other\s+(?:[\w-]+\s+){0,2}?(?:tools?|servers?|server'?s\s+tools?|reviewers?|functions?|sources?|integrations?|plugins?|extensions?)\b",
        "other",
    ),
    (r"\btools?\s+on\s+this\s+(?:machine|computer|system|workstation|host|device)\b", "tool"),
    (r"\btrusted\s+(?:above|over|more\s+than)\s+(?:all|any|every)\b", "trusted"),
)
_OTHER_TOOLS_CUE: Final = _Rule(
    (
        r"\b(?:instead|rather\s+than|over|above|compromised|broken|deprecated|unsafe|manipulated|malicious|leaks?|never|do\s+not|don'?t|must|always|only|forward|copy|required|replace|trust|distrust)\b",
        """instead rather over above compromised broken deprecated unsafe manipulated malicious
        leak never not dont don't must always only forward copy required replace trust""",
    )
)
_NAMED_TOOL_USED: Final = _Rule(
    (
        r"\b(?:when|whenever|every\s+time|each\s+time|before|after|if)\s+(?:the\s+|a\s+|any\s+)?[`'\"]?([A-Za-z][\w-]*)[`'\"]?\s+tool\s+(?:is|gets|was|has\s+been)\s+(?:used|called|invoked|run|executed)\b",
        "tool",
    )
)
_SAME_NAME: Final = _Rule(
    (
        r"\b(?:other|another|second|fake|real|official|secure\s+version\s+of|original)\s+[`'\"]?([A-Za-z0-9_][\w.-]*)",
        "other second fake real official version original",
    )
)
_TOOL_TOKEN: Final = re.compile(r"[A-Za-z0-9_][\w.-]*")
_LIKE_AN_IDENTIFIER: Final = re.compile(r"[_\d-]|[a-z][A-Z]")
_TOOL_FRAMING_BEFORE: Final = re.compile(
    r"\b(?:call|calls|calling|use|uses|using|invoke|invoking|run|via|through|with)\s+[`'\"]?$", _I
)
_TOOL_FRAMING_AFTER: Final = re.compile(r"^[`'\"]?\s*(?:\(|tool\b|function\b|command\b)", _I)

_ADDRESSES_MODEL: Final = _Rule(
    (
        r"(?:^|(?<=[\s(\[{\"'>]))(?:note|message|instructions?|reminder|notice)\s+(?:to|for)\s+(?:the\s+)?(?:ai|assistant|model|llm|agent|claude|gpt|chatgpt|copilot|gemini)\b",
        "ai assistant model llm agent claude gpt copilot gemini",
    ),
    (
        r"(?:^|(?<=[\s(\[{\"'>]))(?:assistant|claude|ai|llm|agent|model|chatgpt|gpt|gemini|copilot)\s*[:,]\s",
        "ai assistant model llm agent claude gpt copilot gemini",
    ),
    (
        r"\b(?:dear|hey|hi|attention)\s+(?:ai|assistant|claude|llm|model|agent)\b",
        "ai assistant model llm agent claude",
    ),
    flags=_I | re.MULTILINE,
)
_ORDER: Final = _Rule(
    (
        r"\b(?:must|always|never|first|do\s+not|don'?t|ignore|send|read|call|run|mark|delete|include|quietly|required|should|need\s+to|make\s+sure|after|before|also|set)\b",
        """must always never first not dont don't ignore send read call run mark delete include
        quietly required should need sure after before also set""",
    )
)

_SENTENCE_END: Final = re.compile(r"[.!?。！？]+(?=\s|$)|\n+")  # noqa: RUF001
_MAX_SENTENCE: Final = 800
_MAX_SENTENCES: Final = 512  # sentences of one text looked at closely
_BASE64: Final = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{32,}={0,2}(?![A-Za-z0-9+/=])")
_HEX: Final = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){16,}(?![0-9A-Fa-f])")
_LONG_RUN: Final = re.compile(r"[A-Za-z0-9+/]{32}")  # where base64 and hex start
_MAX_BLOBS: Final = 8
_MAX_BLOB: Final = 20_000

_WHY_OVERRIDE: Final = "tells the model to ignore the instructions it was given"
_WHY_CONCEAL: Final = "asks the model to keep something from the user"
_WHY_MARKUP: Final = "imitates a system prompt or an urgent notice to give its text authority"
_WHY_ROLE: Final = (
    "tries to give the model a new role, or to put the server's wishes above the user's"
)
_WHY_GLOBAL: Final = "sets a rule for everything the model does, not just for this tool"
_WHY_DECODE: Final = "asks the model to decode hidden text and do what it says"
_WHY_DANGER: Final = "contains a dangerous command for the model to run"
_WHY_BACKDOOR: Final = "contains a command that opens a connection out to another machine"
_WHY_ACCESS: Final = "asks the model to give someone access to this machine"
_WHY_COMMENT: Final = "hides text in an HTML comment, which a rendered view does not show"
_WHY_ADDRESS: Final = "addresses the model directly with orders"
_WHY_READ_FIRST: Final = "asks the model to read a sensitive file as a step of using this tool"
_WHY_INTO_ARGUMENT: Final = (
    "asks the model to put secrets, private files or the conversation into a parameter"
)
_WHY_PARAMETER_NAME: Final = "a parameter's name asks for the contents of something private"
_WHY_SEND: Final = "asks for data to be sent to an address written in the text"
_WHY_HIDDEN_COPY: Final = "asks for a hidden copy of messages to an address written in the text"
_WHY_OTHER_TOOLS: Final = "sets rules for how other tools must be used"
_WHY_SAME_NAME: Final = "claims another tool of the same name must not be used"

# Rules that find something on their own, and what they find.
_ALONE: Final = (
    (_OVERRIDE, "model_instruction", _WHY_OVERRIDE),
    (_CONCEAL, "model_instruction", _WHY_CONCEAL),
    (_MARKUP, "model_instruction", _WHY_MARKUP),
    (_ROLE, "model_instruction", _WHY_ROLE),
    (_GLOBAL_RULE, "model_instruction", _WHY_GLOBAL),
    (_DECODE_AND_FOLLOW, "model_instruction", _WHY_DECODE),
    (_DANGER, "model_instruction", _WHY_DANGER),
    (_BACKDOOR, "exfiltration", _WHY_BACKDOOR),
    (_HIDDEN_COPY, "exfiltration", _WHY_HIDDEN_COPY),
)
# What makes a sentence worth a closer look: the rules that need two things in one
# sentence only apply near one of these.
_ANCHORS: Final = (
    _SECRET_FILE,
    _SECRET_DATA,
    _SECRET_NAME,
    _CONVERSATION,
    _GRANTS_ACCESS,
    _DESTINATION,
    _ADDRESSES_MODEL,
    _OTHER_TOOLS,
)
_STARTS: Final = (
    *(rule for rule, _, _ in _ALONE),
    *_ANCHORS,
    _HTML_COMMENT,
    _NAMED_TOOL_USED,
    _SAME_NAME,
    _SECRET_IDENTIFIER,
)
# Any of the words the rules above start from, in one pattern: if a text holds one of
# them anywhere, this finds a match at or before it.
_START_WORDS: Final = re.compile(
    "|".join(
        re.escape(w)
        for w in sorted(
            {
                w
                for rule in _STARTS
                for _, words in rule.parts
                if not isinstance(words, re.Pattern)
                for w in words
            },
            key=lambda w: (-len(w), w),
        )
    )
)
_START_PATTERNS: Final = tuple(
    words for rule in _STARTS for _, words in rule.parts if isinstance(words, re.Pattern)
)


def _worth_reading(text: str) -> bool:
    """Whether any rule could find something in this text (not counting other tools'
    names, looked for on their own)."""
    return (
        _START_WORDS.search(text.lower()) is not None
        or _LONG_RUN.search(text) is not None
        or any(p.search(text) is not None for p in _START_PATTERNS)
    )


_Hit = tuple[str, int, int, str]  # kind, start, end, why (offsets into the skeleton)
_MAX_MATCHES: Final = 4096  # matches of one rule in one text that are looked at


class _Matches:
    """Every match of each rule in one text, found in one pass and looked up by position,
    so that checking many sentences costs no more than reading the text once."""

    __slots__ = ("_found", "present", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.present = _present(text)
        self._found: dict[int, tuple[list[int], list[re.Match[str]]]] = {}

    def all(self, rule: _Rule) -> list[re.Match[str]]:
        return self._get(rule)[1]

    def first(
        self, rule: _Rule, start: int, end: int, *, unless_negated: bool = False
    ) -> re.Match[str] | None:
        """The first match that starts in [start, end) (and is not "not ..." or "never ...")."""
        starts, matches = self._get(rule)
        for i in range(bisect_left(starts, start), len(starts)):
            if starts[i] >= end:
                break
            found = matches[i]
            if not (
                unless_negated and _NEGATED.search(self.text, max(0, starts[i] - 8), starts[i])
            ):
                return found
        return None

    def _get(self, rule: _Rule) -> tuple[list[int], list[re.Match[str]]]:
        found = self._found.get(id(rule))
        if found is None and rule.gated and rule.words.isdisjoint(self.present):
            found = self._found[id(rule)] = ([], [])
        if found is None:
            matches = sorted(
                (
                    m
                    for p in rule.may_match(self.text, self.present)
                    for m in islice(p.finditer(self.text), _MAX_MATCHES)
                ),
                key=lambda m: m.start(),
            )[:_MAX_MATCHES]
            found = self._found[id(rule)] = ([m.start() for m in matches], matches)
        return found


def _hits(
    text: str, *, role: str, others: Mapping[str, str], own: str, decoded: bool = False
) -> list[_Hit]:
    """What the phrase rules find in one (skeleton) text."""
    hits: list[_Hit] = []
    mentions = _mentions(text, others)
    if not mentions and not _worth_reading(text):
        return hits  # most texts: nothing any rule starts from
    matches = _Matches(text)
    for rule, kind, why in _ALONE:
        hits.extend((kind, m.start(), m.end(), why) for m in matches.all(rule))
    for m in matches.all(_HTML_COMMENT):
        close = text.find("-->", m.end(), m.end() + 2000)
        end = close + 3 if close >= 0 else min(len(text), m.end() + 2000)
        if len(text[m.end() : end].split()) >= 3:
            hits.append(("model_instruction", m.start(), end, _WHY_COMMENT))
    for used in matches.all(_NAMED_TOOL_USED):
        if used.group(1).lower() not in (own.lower(), "this"):
            hits.append(("shadowing", used.start(), used.end(), _WHY_OTHER_TOOLS))
    if own:
        hits.extend(
            ("shadowing", m.start(), m.end(), _WHY_SAME_NAME)
            for m in matches.all(_SAME_NAME)
            if m.group(1).rstrip(".-").lower() == own.lower()
        )
    hits.extend(_sentence_hits(matches, mentions, role=role))
    if role == "key":
        secret = matches.first(_SECRET_IDENTIFIER, 0, len(text))
        content = matches.first(_CONTENT_WORD, 0, len(text))
        if secret is not None and content is not None:
            hits.append(("exfiltration", *_cover(secret, content), _WHY_PARAMETER_NAME))
    if not decoded:
        hits.extend(_decoded_hits(text, role=role, others=others, own=own))
    return hits


def _sentence_bounds(text: str) -> list[int]:
    """Where each sentence starts (long ones cut into pieces), and the text's end."""
    bounds = [0]
    for boundary in islice(_SENTENCE_END.finditer(text), _MAX_MATCHES):
        while boundary.end() - bounds[-1] > _MAX_SENTENCE:
            bounds.append(bounds[-1] + _MAX_SENTENCE)
        bounds.append(boundary.end())
    while len(text) - bounds[-1] > _MAX_SENTENCE:
        bounds.append(bounds[-1] + _MAX_SENTENCE)
    if bounds[-1] < len(text):
        bounds.append(len(text))
    return bounds


def _cover(*matches: re.Match[str]) -> tuple[int, int]:
    return min(m.start() for m in matches), max(m.end() for m in matches)


def _sentence_hits(
    matches: _Matches, mentions: list[tuple[re.Match[str], str]], *, role: str
) -> Iterator[_Hit]:
    """The rules that need two things in one sentence: a secret and an order to pass it
    on, an address and an order to send, another tool's name and a rule for it."""
    text = matches.text
    bounds = _sentence_bounds(text)
    wanted = {bisect_right(bounds, m.start()) - 1 for rule in _ANCHORS for m in matches.all(rule)}
    by_sentence: dict[int, list[tuple[re.Match[str], str]]] = {}
    for named_at in mentions:
        sentence = bisect_right(bounds, named_at[0].start()) - 1
        by_sentence.setdefault(sentence, []).append(named_at)
        wanted.add(sentence)
    for sentence in sorted(wanted)[:_MAX_SENTENCES]:
        start, end = bounds[sentence], bounds[sentence + 1]

        def find(rule: _Rule, start: int = start, end: int = end) -> re.Match[str] | None:
            return matches.first(rule, start, end)

        secret_file = find(_SECRET_FILE)
        private = secret_file or find(_SECRET_DATA) or find(_SECRET_NAME) or find(_CONVERSATION)
        act = matches.first(_ACT, start, end, unless_negated=True)
        if private is not None and act is not None:
            if role in ("schema", "key") or find(_INTO_PARAMETER) is not None:
                yield "exfiltration", *_cover(private, act), _WHY_INTO_ARGUMENT
            if secret_file is not None and find(_FIRST) is not None:
                yield "model_instruction", *_cover(secret_file, act), _WHY_READ_FIRST
        access = find(_GRANTS_ACCESS)
        if access is not None and act is not None:
            yield "model_instruction", *_cover(access, act), _WHY_ACCESS

        destination = find(_DESTINATION)
        if destination is not None:
            send = find(_SEND)
            if send is not None and (private is not None or find(_ON_THE_SIDE) is not None):
                yield "exfiltration", *_cover(destination, send), _WHY_SEND
            elif private is not None and find(_APPENDED_TO_ADDRESS) is not None:
                yield "exfiltration", *_cover(destination, private), _WHY_SEND

        address = find(_ADDRESSES_MODEL)
        if address is not None:
            order = find(_ORDER, address.end())
            if order is not None:
                yield "model_instruction", *_cover(address, order), _WHY_ADDRESS

        named = by_sentence.get(sentence)
        cue = find(_SHADOW_CUE) if named else None
        if named and cue is not None:
            for mention, name in named:
                why = f'sets rules for how another server\'s tool, "{name}", must be used'
                yield "shadowing", *_cover(mention, cue), why
        general = find(_OTHER_TOOLS)
        if general is not None:
            general_cue = find(_OTHER_TOOLS_CUE)
            if general_cue is not None:
                yield "shadowing", *_cover(general, general_cue), _WHY_OTHER_TOOLS


def _mentions(text: str, others: Mapping[str, str]) -> list[tuple[re.Match[str], str]]:
    """Where another server's tool is named: identifiers (``send_email``) anywhere, plain
    words (``fetch``) only where the text treats them as a tool (``call fetch``)."""
    found: list[tuple[re.Match[str], str]] = []
    if not others:
        return found
    for token in islice(_TOOL_TOKEN.finditer(text), 50 * _MAX_MATCHES):
        word = token.group(0).rstrip(".-")
        name = others.get(word.lower())
        if name is None:
            continue
        if _LIKE_AN_IDENTIFIER.search(name) is None:
            before = text[max(0, token.start() - 20) : token.start()]
            after = text[token.start() + len(word) : token.start() + len(word) + 12]
            if not (_TOOL_FRAMING_BEFORE.search(before) or _TOOL_FRAMING_AFTER.search(after)):
                continue
        found.append((token, name))
        if len(found) == _MAX_MATCHES:
            break
    return found


def _decoded_hits(text: str, *, role: str, others: Mapping[str, str], own: str) -> Iterator[_Hit]:
    """Instructions written in base64 or hex: decoded, read, reported at the encoded span."""
    if _LONG_RUN.search(text) is None:
        return
    blobs = 0
    for pattern, encoding in ((_BASE64, "base64"), (_HEX, "hex")):
        for blob in pattern.finditer(text):
            if blobs == _MAX_BLOBS:
                return
            blobs += 1
            plain = _decode(blob.group(0)[:_MAX_BLOB], encoding)
            if plain is None:
                continue
            found = _hits(_Skeleton(plain).text, role=role, others=others, own=own, decoded=True)
            for kind, why in dict.fromkeys((kind, why) for kind, _, _, why in found):
                yield kind, blob.start(), blob.end(), f"{why} (hidden in {encoding})"


def _decode(blob: str, encoding: str) -> str | None:
    try:
        data = (
            bytes.fromhex(blob)
            if encoding == "hex"
            else base64.b64decode(blob + "=" * (-len(blob) % 4))
        )
        plain = data.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    printable = sum(1 for c in plain if c.isprintable() or c in "\n\t")
    return plain if " " in plain and printable >= 0.95 * len(plain) else None


# --- the scan -----------------------------------------------------------------------------------

_SCHEMA_KEYWORDS: Final = frozenset(
    """type properties items required description title default enum examples const format
    pattern minimum maximum minLength maxLength minItems maxItems additionalProperties
    patternProperties $schema $id $ref $defs definitions anyOf allOf oneOf not if then else
    exclusiveMinimum exclusiveMaximum multipleOf uniqueItems contains propertyNames
    dependentRequired dependentSchemas prefixItems unevaluatedProperties unevaluatedItems
    readOnly writeOnly deprecated contentMediaType contentEncoding $comment nullable
    minProperties maxProperties $anchor $dynamicRef $dynamicAnchor $vocabulary""".split()
)
_NAME_MAPS: Final = frozenset(
    ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
)
_LABELS: Final = {
    "name": "name",
    "key": "name",
    "title": "title",
    "description": "description",
    "schema": "schema text",
    "instructions": "server instructions",
}


class _Scanner:
    """The findings of one tool (or one server's instructions), within the bounds."""

    def __init__(self, other_tools: Iterable[str], *, own: str) -> None:
        own_folded = own.lower()
        self.others = {
            name.lower(): name
            for name in other_tools
            if isinstance(name, str) and name and name.lower() != own_folded
        }
        self.own = own
        self.findings: list[Finding] = []
        self.nodes = 0
        self.scanned = 0
        self.truncated = False
        self._seen: dict[tuple[str, str], list[tuple[str, int, int, str]]] = {}

    def tree(self, node: Any, where: str, role: str, depth: int = 0, parent: str = "") -> None:
        if self._full(where):
            return
        if isinstance(node, str):
            self.text(where, node, role)
        elif depth >= MAX_DEPTH and isinstance(node, (Mapping, list)):
            self._structure(
                where,
                f"nests deeper than {MAX_DEPTH} levels; Lockgate did not read past this point",
            )
        elif isinstance(node, Mapping):
            for key, value in node.items():
                if self.truncated:
                    return
                if not isinstance(key, str):
                    continue
                path = where + _segment(key)
                if (parent in _NAME_MAPS or key not in _SCHEMA_KEYWORDS) and not self._full(path):
                    self.text(path + "#key", key, "key")
                self.tree(value, path, role, depth + 1, key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if self.truncated:
                    return
                self.tree(value, f"{where}[{i}]", role, depth + 1, "")

    def _full(self, where: str) -> bool:
        """Count one more value; past MAX_NODES, say so once and read no further."""
        self.nodes += 1
        if self.nodes > MAX_NODES and not self.truncated:
            self.truncated = True
            self._structure(
                where,
                f"holds more than {MAX_NODES:,} values; Lockgate did not read past this point",
            )
        return self.truncated

    def text(self, where: str, text: str, role: str) -> None:
        if len(self.findings) >= MAX_FINDINGS:
            return
        # A text longer than MAX_SCAN is read that far: it is overlong anyway.
        head = text[:MAX_SCAN]
        found = self._seen.get((head, role))
        if found is None:
            found = [("hidden_unicode", s, e, why) for s, e, why in _hidden(head)]
            budget = min(len(head), max(0, MAX_TOTAL_SCAN - self.scanned))
            self.scanned += budget
            if budget:
                skeleton = _Skeleton(head[:budget], identifier=role in ("name", "key"))
                hits = _hits(skeleton.text, role=role, others=self.others, own=self.own)
                found.extend((kind, *skeleton.span(s, e), why) for kind, s, e, why in hits)
            if len(self._seen) < 1024:
                self._seen[head, role] = found
        kept = _merged(list(found))[:MAX_FINDINGS_PER_TEXT]
        limit = LIMITS[role]
        if len(text) > limit:
            why = (
                f"this {_LABELS[role]} is {len(text):,} characters long, past the {limit:,} "
                "honest ones stay within: room to bury text a person will not read"
            )
            kept.append(("overlong", limit, len(text), why))
        for kind, start, end, why in kept:
            self.findings.append(Finding(kind, where, start, end, _excerpt(text, start, end), why))

    def _structure(self, where: str, why: str) -> None:
        self.findings.append(Finding("overlong", where, 0, 0, "", f"this part of the tool {why}"))


def _merged(found: list[tuple[str, int, int, str]]) -> list[tuple[str, int, int, str]]:
    """One finding per kind and overlapping stretch of text, in the order of the text."""
    found.sort(key=lambda f: (KINDS.index(f[0]), f[1], -f[2]))
    merged: list[tuple[str, int, int, str]] = []
    for kind, start, end, why in found:
        if merged and merged[-1][0] == kind and start < merged[-1][2]:
            last = merged[-1]
            merged[-1] = (kind, last[1], max(last[2], end), last[3])
        else:
            merged.append((kind, start, end, why))
    merged.sort(key=lambda f: (f[1], KINDS.index(f[0])))
    return merged


def _show(ch: str) -> str:
    cp = ord(ch)
    if _HIDDEN_CHAR.match(ch) is not None or ch in "\n\r\t":
        return f"\\u{{{cp:X}}}"
    return ch


def _excerpt(text: str, start: int, end: int) -> str:
    """The offending part for a person: invisible characters as escapes, long runs of one
    character counted, at most about MAX_EXCERPT characters."""
    pieces: list[str] = []
    size = 0
    position = start
    stop = min(end, start + 4 * MAX_EXCERPT)
    while position < stop and size <= MAX_EXCERPT:
        ch = text[position]
        run = position + 1
        while run < stop and text[run] == ch:
            run += 1
        count = run - position
        shown = _show(ch)
        piece = (
            f"{shown}\u00d7{count}"
            if count >= 4 and (shown != ch or ch.isspace())
            else shown * count
        )
        pieces.append(piece)
        size += len(piece)
        position = run
    excerpt = "".join(pieces)
    if size > MAX_EXCERPT or position < end:
        excerpt = excerpt[: MAX_EXCERPT - 1] + "…"
    return excerpt
