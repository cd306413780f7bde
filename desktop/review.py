"""Reviewing a held tool (or held instructions): what was accepted and what the server
says now, side by side, the differences and the poisoning findings marked.

A tool whose definition changed since a person accepted it is held by its pin
(:mod:`proxy.gateway.pins`): agents do not see it and its calls are refused. The
:class:`ReviewDialog` is where a person decides: "Accept change" makes the definition as
it is now the pin, "Keep blocked" leaves it held. It never blocks: it is shown, not
exec()'d, and its answer goes to the gateway through the app.

The texts are drawn so a person sees what a model reads: invisible characters (tag
characters, bidi controls, zero-width marks) are written out as ``⟨U+E0041⟩``, and lines
are wrapped at a fixed width before they are compared, so the two panes keep the same
lines side by side and scroll together.
"""

from __future__ import annotations

import difflib
import html
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from proxy.gateway.pins import DEFINING_FIELDS, InstructionsChange, ToolChange
from proxy.policy.poison import Finding, text_at

__all__ = [
    "WRAP",
    "DiffLine",
    "Rendered",
    "Review",
    "ReviewDialog",
    "findings_html",
    "held_badge",
    "held_sentence",
    "render_definition",
    "render_text",
    "review_of_instructions",
    "review_of_tool",
    "side_by_side",
    "visible",
]

WRAP = 72  # columns: two panes of it side by side fit a 1280-pixel screen
_CONTEXT = 80  # characters shown either side of a finding in the findings list

# colours: light backgrounds for whole lines, stronger ones for the characters that differ
REMOVED_LINE = "#fde7e9"
ADDED_LINE = "#e3f4e6"
FILLER_LINE = "#eeeeee"
REMOVED_CHARS = "#f5a3ab"
ADDED_CHARS = "#9fd8ab"
FINDING = "#ffb74d"  # amber: a poisoning finding's text
WARNING_TEXT = "#b23c00"

_HANGUL_FILLERS = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0})


def _invisible(ch: str) -> bool:
    """A character a person does not see (or sees as nothing) but a model reads."""
    if ch in "\n\t ":
        return False
    cp = ord(ch)
    if 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF or cp in _HANGUL_FILLERS:
        return True  # variation selectors, fillers
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp")


def _shown(ch: str) -> str:
    return f"⟨U+{ord(ch):04X}⟩" if _invisible(ch) else ch


def visible(text: str) -> str:
    """``text`` with every invisible character written out (``⟨U+200B⟩``)."""
    return "".join(_shown(ch) for ch in text)


# -- rendering a definition as lines ---------------------------------------------------------


@dataclass
class Rendered:
    """A definition drawn as lines; for the lines of a top-level text (``description``,
    ``name``, ``instructions``), which text and, per column, the offset in it."""

    lines: list[str] = field(default_factory=list)
    sources: list[tuple[str, list[int]] | None] = field(default_factory=list)

    def add(self, line: str, source: tuple[str, list[int]] | None = None) -> None:
        self.lines.append(line)
        self.sources.append(source)


_PADDING = 8  # a run of more spaces than this is written as "⟨N spaces⟩"

_Run = tuple[str, list[int], bool]  # shown text, source offset per column, is spaces


def _runs_of(pieces: Sequence[tuple[str, int]]) -> list[_Run]:
    """(shown text, source offset) pieces as runs of spaces and runs of the rest; a long
    run of spaces (padding that pushes text out of view) is written as its count."""
    runs: list[_Run] = []
    for shown, offset in pieces:
        space = shown == " "
        if runs and runs[-1][2] == space:
            text, offsets, _ = runs[-1]
            runs[-1] = (text + shown, offsets + [offset] * len(shown), space)
        else:
            runs.append((shown, [offset] * len(shown), space))
    out: list[_Run] = []
    for text, offsets, space in runs:
        if space and len(text) > _PADDING:
            label = f"⟨{len(text)} spaces⟩"
            out.append((label, [offsets[0]] * len(label), False))
        else:
            out.append((text, offsets, space))
    return out


def _wrap(runs: Sequence[_Run], width: int, indent: str) -> list[tuple[str, list[int]]]:
    """Greedy word wrap: each line's text and the source offset of each of its columns
    (-1 for the indent). Spaces at a break go; a paragraph's own leading spaces stay; a
    word longer than a line is cut."""
    width = max(width, len(indent) + 8)
    lines: list[tuple[str, list[int]]] = []
    line, offsets = indent, [-1] * len(indent)
    fresh = True  # nothing on the line yet but its indent
    pending: tuple[str, list[int]] | None = None  # spaces waiting for the next word

    def emit() -> None:
        nonlocal line, offsets, fresh
        lines.append((line, offsets))
        line, offsets, fresh = indent, [-1] * len(indent), True

    for run_text, run_where, space in runs:
        text, where = run_text, run_where
        if space:
            if fresh and not lines:  # the paragraph's own indentation
                line, offsets = line + text, offsets + where
            else:
                pending = (text, where)
            continue
        gap, gap_offsets = pending or ("", [])
        pending = None
        if not fresh and len(line) + len(gap) + len(text) > width:
            emit()
            gap, gap_offsets = "", []
        line, offsets = line + gap, offsets + gap_offsets
        while len(line) + len(text) > width:
            room = width - len(line)
            line, offsets = line + text[:room], offsets + where[:room]
            text, where = text[room:], where[room:]
            emit()
        if text:
            line, offsets, fresh = line + text, offsets + where, False
    if not fresh or not lines:
        lines.append((line, offsets))
    return lines


def _text_lines(text: str, width: int, indent: str) -> list[tuple[str, list[int]]]:
    """``text`` wrapped at ``width``, its invisible characters written out, each of its
    own line breaks kept; with the source offset of every column."""
    paragraphs: list[list[tuple[str, int]]] = [[]]
    for index, ch in enumerate(text):
        if ch == "\n":
            paragraphs.append([])
        elif ch == "\r" and text[index + 1 : index + 2] == "\n":
            continue
        elif ch == "\t":
            paragraphs[-1].append(("    ", index))
        else:
            paragraphs[-1].append((_shown(ch), index))
    lines: list[tuple[str, list[int]]] = []
    for paragraph in paragraphs:
        if not paragraph:
            lines.append(("", []))
            continue
        lines += _wrap(_runs_of(paragraph), width, indent)
    return lines


def _json_lines(value: Any, width: int, indent: str) -> list[str]:
    """``value`` as indented JSON, its invisible characters written out, a long line
    going on under its start, two columns in."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    out: list[str] = []
    for raw in text.splitlines():
        shown = visible(raw)
        lead = len(shown) - len(shown.lstrip(" "))
        pieces = [(ch, 0) for ch in shown[lead:]]
        wrapped = _wrap(_runs_of(pieces), width, indent + " " * (lead + 2))
        first, *rest = (line for line, _ in wrapped)
        out.append(indent + " " * lead + first[len(indent) + lead + 2 :])
        out += rest
    return out


def render_text(name: str, text: str | None, width: int = WRAP) -> Rendered:
    """A text of its own (a server's instructions) as lines."""
    rendered = Rendered()
    if text is None:
        return rendered
    for line, offsets in _text_lines(text, width, ""):
        rendered.add(line, (name, offsets))
    return rendered


def render_definition(definition: Mapping[str, Any] | None, width: int = WRAP) -> Rendered:
    """A tool definition as lines: its name and title, its description as text, its
    schemas and annotations as indented JSON; the fields in the order agents meet them."""
    rendered = Rendered()
    if definition is None:
        return rendered
    keys = [k for k in DEFINING_FIELDS if k in definition]
    keys += sorted(k for k in definition if k not in DEFINING_FIELDS)
    for number, key in enumerate(keys):
        value = definition[key]
        if number:
            rendered.add("")
        if isinstance(value, str) and key != "description":
            label = f"{key}: "
            lines = _text_lines(value, width, " " * len(label))
            first, offsets = lines[0]
            rendered.add(label + first[len(label) :], (key, offsets))
            for line, more in lines[1:]:
                rendered.add(line, (key, more))
        elif isinstance(value, str):
            rendered.add(f"{key}:")
            for line, offsets in _text_lines(value, width, "  "):
                rendered.add(line, (key, offsets))
        else:
            rendered.add(f"{key}:")
            for line in _json_lines(value, width, "  "):
                rendered.add(line)
    return rendered


# -- the two sides ----------------------------------------------------------------------------

LineState = Literal["same", "removed", "added", "filler"]


@dataclass(frozen=True)
class DiffLine:
    """One line of one side: its text, whether it differs, the columns that differ, and
    which line of its side's rendering it is (None: a filler where the other side has
    lines this one has not)."""

    text: str
    state: LineState
    changed: tuple[tuple[int, int], ...] = ()  # column ranges that differ within the line
    source: int | None = None


def side_by_side(
    old: Sequence[str], new: Sequence[str], *, compare: bool = True
) -> tuple[list[DiffLine], list[DiffLine]]:
    """The two sides, line for line: what is on one side only faces a filler, so both
    have as many lines and stay aligned. ``compare`` False: nothing is marked (a new tool
    has nothing to differ from)."""
    if not compare:
        left = [DiffLine(t, "same", source=i) for i, t in enumerate(old)]
        right = [DiffLine(t, "same", source=i) for i, t in enumerate(new)]
        left += [DiffLine("", "filler")] * (len(right) - len(left))
        right += [DiffLine("", "filler")] * (len(left) - len(right))
        return left, right
    left, right = [], []
    matcher = difflib.SequenceMatcher(None, list(old), list(new), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            left += [DiffLine(old[i], "same", source=i) for i in range(i1, i2)]
            right += [DiffLine(new[j], "same", source=j) for j in range(j1, j2)]
            continue
        removed = list(range(i1, i2))
        added = list(range(j1, j2))
        for k in range(max(len(removed), len(added))):
            a = removed[k] if k < len(removed) else None
            b = added[k] if k < len(added) else None
            if a is not None and b is not None:
                ca, cb = _changed_columns(old[a], new[b])
                left.append(DiffLine(old[a], "removed", ca, a))
                right.append(DiffLine(new[b], "added", cb, b))
            elif a is not None:
                left.append(DiffLine(old[a], "removed", ((0, len(old[a])),), a))
                right.append(DiffLine("", "filler"))
            elif b is not None:
                left.append(DiffLine("", "filler"))
                right.append(DiffLine(new[b], "added", ((0, len(new[b])),), b))
    return left, right


_WORD = re.compile(r"\s+|\w+|[^\w\s]")


def _changed_columns(
    a: str, b: str
) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """The column ranges of ``a`` and of ``b`` whose words differ (the whole lines when
    they have little in common: a diff of unrelated lines is confetti)."""
    words_a = [m.span() for m in _WORD.finditer(a)]
    words_b = [m.span() for m in _WORD.finditer(b)]
    matcher = difflib.SequenceMatcher(
        None, [a[i:j] for i, j in words_a], [b[i:j] for i, j in words_b], autojunk=False
    )
    if matcher.ratio() < 0.5:
        return ((0, len(a)),), ((0, len(b)),)
    left: list[tuple[int, int]] = []
    right: list[tuple[int, int]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if i2 > i1:
            left.append((words_a[i1][0], words_a[i2 - 1][1]))
        if j2 > j1:
            right.append((words_b[j1][0], words_b[j2 - 1][1]))
    return tuple(left), tuple(right)


# -- what is held, in words -----------------------------------------------------------------


def held_badge(change: ToolChange) -> str:
    """The few words of the Tools table: "held: changed", "held: renamed from read"."""
    if change.kind == "renamed" and change.renamed_from:
        return f"held: renamed from {change.renamed_from}"
    return "held: " + {
        "changed": "changed",
        "new": "new",
        "new_server": "new server",
        "findings": "looks poisoned",
        "too_large": "too large",
        "unseen": "not seen yet",
        "unpinned": "record lost",
    }.get(change.kind, change.kind)


def held_sentence(kind: str, renamed_from: str | None = None, *, what: str = "its") -> str:
    """Why it is held, as the start of a sentence: "its definition changed since it was
    accepted" (``what`` "their" for instructions)."""
    if what == "their":
        return {
            "changed": "they changed since they were accepted",
            "new_server": "their server is new, and the policy holds a new server's "
            "instructions until a person accepts them",
            "findings": "they look poisoned",
        }.get(kind, kind)
    return {
        "changed": "its definition changed since it was accepted",
        "renamed": f"it is the tool {renamed_from!r} under a new name",
        "new": "it is new, and the policy holds new tools until a person accepts them",
        "new_server": "its server is new, and the policy holds a new server's tools until "
        "a person accepts them",
        "findings": "its definition looks poisoned",
        "too_large": "its definition is too large to pin",
        "unseen": "Lockgate has not seen its definition yet",
        "unpinned": "Lockgate lost its record of accepted tools (tool-pins.json could not "
        "be read), so it holds every tool until a person accepts it again",
    }.get(kind, kind)


# -- findings ---------------------------------------------------------------------------------


def _marked_html(text: str, start: int, end: int, context: int | None) -> str:
    start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
    if context is None:
        before, after = text[:start], text[end:]
        lead = trail = ""
    else:
        before = text[max(0, start - context) : start]
        after = text[end : end + context]
        lead = "…" if start > context else ""
        trail = "…" if end + context < len(text) else ""
    marked = text[start:end]

    def shown(part: str) -> str:
        return html.escape(visible(part)).replace("\n", "<br>")

    return (
        f"{lead}{shown(before)}<span style='background:{FINDING}; color:#000;"
        f" font-weight:bold;'>{shown(marked) or '⟨here⟩'}</span>{shown(after)}{trail}"
    )


def findings_html(
    source: Mapping[str, Any] | None, findings: Iterable[Finding], *, context: int = _CONTEXT
) -> str:
    """The findings as rich text: each one's kind, where, why, and its text with the
    offending part marked (invisible characters written out)."""
    items = []
    for finding in findings:
        text = text_at(source, finding.where) if source is not None else None
        if text is not None:
            quoted = _marked_html(text, finding.start, finding.end, context)
        else:
            quoted = html.escape(finding.excerpt)
        items.append(
            f"<p style='margin:0 0 8px 0;'><b style='color:{WARNING_TEXT};'>"
            f"{html.escape(finding.kind.replace('_', ' '))}</b> in "
            f"<code>{html.escape(finding.where)}</code>: {html.escape(finding.why)}<br>"
            f"<span style='font-family:monospace; color:#333;'>{quoted}</span></p>"
        )
    return "".join(items)


# -- one review -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Review:
    """What one review dialog shows, made from a held tool or held instructions: the
    rendering and the comparison are done here, off the GUI thread for a large one."""

    server: str
    tool: str | None  # None: the server's instructions
    kind: str
    why: str  # why it is held, as a sentence without its subject
    reason: str
    seen: float
    old: Rendered
    new: Rendered
    compare: bool  # there is an accepted version to compare with
    old_note: str  # what the left pane says when it is empty
    new_note: str
    source: Mapping[str, Any] | None  # what the findings' "where" point into
    findings: tuple[Finding, ...]
    can_accept: bool
    held: ToolChange | InstructionsChange  # what the review was made of
    cannot_accept: str = ""
    accept_label: str = "Accept change"
    left: list[DiffLine] = field(default_factory=list)  # the two sides, line for line
    right: list[DiffLine] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.left and not self.right:
            left, right = side_by_side(self.old.lines, self.new.lines, compare=self.compare)
            object.__setattr__(self, "left", left)
            object.__setattr__(self, "right", right)

    @property
    def subject(self) -> str:
        return f"{self.server}/{self.tool}" if self.tool else f"{self.server}'s instructions"


def review_of_tool(change: ToolChange) -> Review:
    old = change.old
    if old is None and change.kind == "renamed" and change.new and change.renamed_from:
        # A rename is held only when the definition, but for its name, is the pinned one
        # of the old name (pins._renamed_from): so this is what was accepted.
        old = {**change.new, "name": change.renamed_from}
    compare = old is not None
    cannot = ""
    if change.kind == "too_large":
        cannot = "Its definition is too large for Lockgate to pin, so it cannot be accepted."
    elif change.new is None:
        cannot = "Lockgate has not seen its definition: list the tools first."
    return Review(
        server=change.server,
        tool=change.tool,
        kind=change.kind,
        why=held_sentence(change.kind, change.renamed_from),
        reason=change.reason(),
        seen=change.seen,
        old=render_definition(old),
        new=render_definition(change.new),
        compare=compare,
        old_note="Nothing was accepted before." if old is None else "",
        new_note="Lockgate has not seen its definition." if change.new is None else "",
        source=change.new,
        findings=change.findings,
        can_accept=not cannot,
        held=change,
        cannot_accept=cannot,
        accept_label="Accept change" if change.kind == "changed" else "Accept tool",
    )


def review_of_instructions(change: InstructionsChange) -> Review:
    return Review(
        server=change.server,
        tool=None,
        kind=change.kind,
        why=held_sentence(change.kind, what="their"),
        reason=(
            f"Until you accept them, Lockgate leaves {change.server}'s instructions out of "
            "what agents are told when they connect."
        ),
        seen=change.seen,
        old=render_text("instructions", change.old),
        new=render_text("instructions", change.new),
        compare=change.old is not None,
        old_note="No instructions were accepted before." if change.old is None else "",
        new_note="",
        source={"instructions": change.new},
        findings=change.findings,
        can_accept=True,
        held=change,
        accept_label="Accept instructions",
    )


# -- the dialog ----------------------------------------------------------------------------


class DiffPane(QPlainTextEdit):
    """One side: the lines, not wrapped (they were wrapped before the comparison), the
    differing lines and characters coloured, the findings' characters marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.setFont(font)
        self.lines: list[DiffLine] = []
        self.marked: list[tuple[int, int, int]] = []  # (line, first column, end column)

    def show_lines(
        self,
        lines: list[DiffLine],
        rendered: Rendered,
        findings: Sequence[Finding],
        note: str,
    ) -> None:
        self.lines = lines
        self.setPlainText("\n".join(line.text for line in lines))
        self.setPlaceholderText(note)
        selections: list[QTextEdit.ExtraSelection] = []
        document = self.document()
        backgrounds = {"removed": REMOVED_LINE, "added": ADDED_LINE, "filler": FILLER_LINE}
        strong = {"removed": REMOVED_CHARS, "added": ADDED_CHARS}
        for number, line in enumerate(lines):
            block = document.findBlockByNumber(number)
            colour = backgrounds.get(line.state)
            if colour is not None:
                selection = QTextEdit.ExtraSelection()
                selection.format.setBackground(QColor(colour))
                selection.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
                cursor = QTextCursor(block)
                selection.cursor = cursor
                selections.append(selection)
            for first, end in line.changed if line.state in strong else ():
                selections.append(
                    _span(block, first, end, _char_format(strong[line.state], bold=False))
                )
        self.marked = []
        for number, line in enumerate(lines):
            if line.source is None:
                continue
            source = rendered.sources[line.source]
            if source is None:
                continue
            name, offsets = source
            for finding in findings:
                if finding.where != name:
                    continue
                for first, end in _columns_within(offsets, finding.start, finding.end):
                    self.marked.append((number, first, end))
                    block = document.findBlockByNumber(number)
                    selections.append(_span(block, first, end, _char_format(FINDING, bold=True)))
        self.setExtraSelections(selections)


def _columns_within(offsets: Sequence[int], start: int, end: int) -> list[tuple[int, int]]:
    """Column ranges whose source offsets fall in [start, end)."""
    runs: list[tuple[int, int]] = []
    first = None
    for column, offset in enumerate([*offsets, -1]):
        inside = start <= offset < end or (start == end and offset == start)
        if inside and first is None:
            first = column
        elif not inside and first is not None:
            runs.append((first, column))
            first = None
    return runs


def _char_format(colour: str, *, bold: bool) -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setBackground(QColor(colour))
    fmt.setForeground(QColor("#000000"))
    if bold:
        fmt.setFontWeight(QFont.Weight.Bold)
        fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.SingleUnderline)
        fmt.setUnderlineColor(QColor("#c62828"))
    return fmt


def _span(block: Any, first: int, end: int, fmt: QTextCharFormat) -> QTextEdit.ExtraSelection:
    cursor = QTextCursor(block)
    cursor.setPosition(block.position() + first)
    cursor.setPosition(block.position() + end, QTextCursor.MoveMode.KeepAnchor)
    selection = QTextEdit.ExtraSelection()
    selection.cursor = cursor
    selection.format = fmt
    return selection


class ReviewDialog(QDialog):
    """The accepted definition and the new one, side by side, and the person's answer.

    ``on_accept`` is called with the review when "Accept change" is clicked; the app
    answers with :meth:`accept_succeeded` (closes) or :meth:`accept_failed` (says why,
    stays open).
    "Keep blocked" only closes: the tool stays held.
    """

    def __init__(
        self,
        review: Review,
        on_accept: Callable[[Review], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setModal(False)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self._on_accept = on_accept
        self.review = review
        self.heading = QLabel()
        self.heading.setObjectName("reviewHeading")
        self.heading.setWordWrap(True)
        self.heading.setTextFormat(Qt.TextFormat.RichText)
        self.seen = QLabel()
        self.seen.setStyleSheet("color: #555;")
        self.reason = QLabel()
        self.reason.setWordWrap(True)
        self.reason.setStyleSheet("color: #555;")
        self.reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.old_title = QLabel("<b>Accepted</b> (what agents were shown before)")
        self.new_title = QLabel("<b>Now</b> (what the server says; held)")
        self.old = DiffPane()
        self.old.setObjectName("acceptedPane")
        self.new = DiffPane()
        self.new.setObjectName("newPane")
        self._link(self.old, self.new)
        left, right = QWidget(), QWidget()
        for box, title, pane in (
            (left, self.old_title, self.old),
            (right, self.new_title, self.new),
        ):
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            column.addWidget(title)
            column.addWidget(pane, 1)
        sides = QSplitter(Qt.Orientation.Horizontal)
        sides.addWidget(left)
        sides.addWidget(right)
        sides.setChildrenCollapsible(False)
        self.findings = QTextBrowser()
        self.findings.setObjectName("reviewFindings")
        self.findings.setOpenLinks(False)
        self.findings_title = QLabel()
        below = QWidget()
        column = QVBoxLayout(below)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.findings_title)
        column.addWidget(self.findings, 1)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(sides)
        self.split.addWidget(below)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 1)
        self.split.setChildrenCollapsible(False)
        self.next_difference = QPushButton("Next difference")
        self.next_difference.setObjectName("nextDifference")
        self.next_difference.setToolTip("Scroll both sides to the next place where they differ")
        self.next_difference.clicked.connect(self._to_next_difference)
        self.differences = QLabel()
        self.differences.setStyleSheet("color: #555;")
        self._blocks: list[int] = []  # the first line of each place where the sides differ
        self._shown_block = -1
        self.status = QLabel()
        self.status.setObjectName("reviewStatus")
        self.status.setWordWrap(True)
        self.accept_button = QPushButton()
        self.accept_button.setObjectName("acceptChange")
        self.accept_button.clicked.connect(self._accept_clicked)
        self.keep_button = QPushButton("Keep blocked")
        self.keep_button.setObjectName("keepBlocked")
        self.keep_button.setToolTip("Close; agents still do not see it and its calls are refused")
        self.keep_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.next_difference)
        buttons.addWidget(self.differences)
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.keep_button)
        buttons.addWidget(self.accept_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.seen)
        layout.addWidget(self.reason)
        layout.addWidget(self.split, 1)
        layout.addLayout(buttons)
        self.show_review(review)
        self.resize(1180, 700)

    @staticmethod
    def _link(a: QPlainTextEdit, b: QPlainTextEdit) -> None:
        """The panes scroll together (setValue of the value it has emits nothing, so
        the two do not chase each other)."""
        for one, other in ((a, b), (b, a)):
            one.verticalScrollBar().valueChanged.connect(other.verticalScrollBar().setValue)
            one.horizontalScrollBar().valueChanged.connect(other.horizontalScrollBar().setValue)

    def show_review(self, review: Review, *, note: str = "") -> None:
        self.review = review
        self.setWindowTitle(f"Lockgate: review {review.subject}")
        self.heading.setText(
            f"<span style='font-size:large;'><b>{html.escape(review.subject)}</b></span>"
            f" <span style='color:{WARNING_TEXT};'>{'is' if review.tool else 'are'} held: "
            f"{html.escape(review.why)}</span>"
        )
        seen = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(review.seen)) if review.seen else ""
        )
        self.seen.setText(f"Seen like this since {seen}" if seen else "")
        self.seen.setVisible(bool(seen))
        self.reason.setText(review.reason)
        left, right = review.left, review.right
        self.old.show_lines(left, review.old, (), review.old_note)
        self.new.show_lines(right, review.new, review.findings, review.new_note)
        if not review.old.lines:  # nothing to show but what the placeholder says
            self.old.lines, self.old.marked = [], []
            self.old.setPlainText("")
            self.old.setExtraSelections([])
        self._blocks = [
            n
            for n, line in enumerate(right)
            if line.state != "same" and (n == 0 or right[n - 1].state == "same")
        ]
        self._shown_block = -1
        count = len(self._blocks)
        self.differences.setText(
            f"{count} place{'s' if count != 1 else ''} differ{'s' if count == 1 else ''}"
            if review.compare
            else ""
        )
        self.next_difference.setVisible(review.compare and count > 0)
        if review.findings:
            self.findings_title.setText(
                f"<b style='color:{WARNING_TEXT};'>{len(review.findings)} poisoning "
                f"finding{'s' if len(review.findings) != 1 else ''}</b> (marked in amber)"
            )
            self.findings.setHtml(findings_html(review.source, review.findings))
        else:
            self.findings_title.setText(
                "<b>No poisoning findings</b> <span style='color:#555;'>(Lockgate found "
                "nothing suspicious in it)</span>"
            )
            self.findings.clear()
        self.findings.setVisible(bool(review.findings))
        # the findings' room, or none: the two sides take the rest
        below = 200 if review.findings else self.findings_title.sizeHint().height()
        self.split.setSizes([max(1, self.split.height() - below), below])
        self.accept_button.setText(review.accept_label)
        self.accept_button.setEnabled(review.can_accept)
        self.accept_button.setToolTip(
            review.cannot_accept
            or "Agents see it as it is now, and its calls are decided by the policy again"
        )
        self.status.setText(note or review.cannot_accept)
        self.status.setStyleSheet(f"color: {WARNING_TEXT};" if note else "color: #555;")

    def _to_next_difference(self) -> None:
        """Both panes to the next place that differs (after the last, the first again)."""
        if not self._blocks:
            return
        self._shown_block = (self._shown_block + 1) % len(self._blocks)
        line = self._blocks[self._shown_block]
        self.new.verticalScrollBar().setValue(max(0, line - 2))  # the other pane follows

    def gone(self) -> None:
        """It is no longer held (accepted elsewhere, or changed back): nothing to accept."""
        self.accept_button.setEnabled(False)
        self.status.setStyleSheet("color: #1b7f3b;")
        self.status.setText(
            "It is no longer held: accepted elsewhere, or the server changed it back."
        )

    def _accept_clicked(self) -> None:
        self.accept_button.setEnabled(False)
        self.status.setStyleSheet("color: #555;")
        self.status.setText("Accepting…")
        self._on_accept(self.review)

    def accept_succeeded(self) -> None:
        self.close()

    def accept_failed(self, message: str) -> None:
        self.status.setStyleSheet(f"color: {WARNING_TEXT};")
        self.status.setText(message)
        self.accept_button.setEnabled(self.review.can_accept)
