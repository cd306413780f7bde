"""Where each value of a JSON text stands, and changing one value without touching the rest.

The standard ``json`` module parses but forgets positions, and silently keeps the last of
two equal keys. This module walks the text once more (after ``json`` has accepted it) and
records the position of every value by its path, and every duplicated key. The same
positions let a click's rule (:mod:`proxy.policy.edit`), a routed client entry
(:mod:`proxy.clients.route`) and a server changed from the window
(:mod:`proxy.config.servers_edit`) be spliced into a file in its own style, every other
byte left as it was.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field

__all__ = [
    "JsonPath",
    "Locations",
    "format_path",
    "indent_unit",
    "line_indent",
    "locate",
    "nesting_beyond",
    "render_at",
    "span",
    "splice",
    "value_end",
    "with_member",
    "without_member",
]

JsonPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"')
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


@dataclass
class Locations:
    """Positions (1-based line and column) of values in one JSON text.

    The text is walked on first use, not before: only error messages need positions,
    and for a valid file of a thousand rules the walk would cost more than the rest of
    loading it.
    """

    text: str
    _values: dict[JsonPath, int] = field(default_factory=dict)
    _keys: dict[JsonPath, int] = field(default_factory=dict)
    _duplicates: list[tuple[JsonPath, int]] = field(default_factory=list)
    _walked: bool = False

    def _walk(self) -> None:
        if not self._walked:
            self._walked = True
            with contextlib.suppress(ValueError, IndexError):
                _value(self.text, _skip(self.text, 0), (), self)

    @property
    def values(self) -> dict[JsonPath, int]:
        self._walk()
        return self._values

    @property
    def keys(self) -> dict[JsonPath, int]:
        self._walk()
        return self._keys

    @property
    def duplicates(self) -> list[tuple[JsonPath, int]]:
        """Keys that appear twice in one object, with the offset of the second."""
        self._walk()
        return self._duplicates

    def line_col(self, path: JsonPath) -> tuple[int, int] | None:
        """The line and column of the value at ``path``, or of its nearest ancestor."""
        for end in range(len(path), -1, -1):
            offset = self.values.get(path[:end])
            if offset is not None:
                return self.offset_to_line_col(offset)
        return None

    def key_line_col(self, path: JsonPath) -> tuple[int, int] | None:
        """The line and column of the key that names ``path`` (else as :meth:`line_col`)."""
        offset = self.keys.get(path)
        return self.offset_to_line_col(offset) if offset is not None else self.line_col(path)

    def offset_to_line_col(self, offset: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return line, column


def locate(text: str) -> Locations:
    """Where every value of ``text`` starts (found when first asked).

    ``text`` must already be valid JSON (parse it with ``json`` first); on text that is
    not, the result covers what could be walked.
    """
    return Locations(text)


_NESTING_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def nesting_beyond(text: str, limit: int) -> int | None:
    """The offset where ``text`` first nests arrays/objects deeper than ``limit``, or None.

    Checked before parsing, so no parser (json, this module, jsonschema) ever recurses
    into a hostile file until Python's recursion limit.
    """
    depth = 0
    for match in _NESTING_TOKENS.finditer(text):
        bracket = match.group(0)
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return match.start()
        elif bracket in "]}":
            depth -= 1
    return None


def value_end(text: str, start: int) -> int:
    """Just past the end of the JSON value that starts at ``start`` of valid ``text``."""
    return _value(text, start, (), Locations(text, _walked=True))


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _value(text: str, pos: int, path: JsonPath, locs: Locations) -> int:
    locs._values.setdefault(path, pos)
    char = text[pos]
    if char == "{":
        return _object(text, pos + 1, path, locs)
    if char == "[":
        return _array(text, pos + 1, path, locs)
    if char == '"':
        return _string(text, pos)[1]
    match = _SCALAR.match(text, pos)
    if match is None:
        raise ValueError(f"unexpected character at {pos}")
    return match.end()


def _string(text: str, pos: int) -> tuple[str, int]:
    match = _STRING.match(text, pos)
    if match is None:
        raise ValueError(f"expected a string at {pos}")
    value: str = json.loads(match.group(0))
    return value, match.end()


def _object(text: str, pos: int, path: JsonPath, locs: Locations) -> int:
    seen: set[str] = set()
    pos = _skip(text, pos)
    if text[pos] == "}":
        return pos + 1
    while True:
        key_pos = pos
        key, pos = _string(text, pos)
        locs._keys.setdefault((*path, key), key_pos)
        if key in seen:
            locs._duplicates.append(((*path, key), key_pos))
        seen.add(key)
        pos = _skip(text, _skip(text, pos) + 1)  # past the colon
        pos = _skip(text, _value(text, pos, (*path, key), locs))
        if text[pos] == "}":
            return pos + 1
        pos = _skip(text, pos + 1)  # past the comma


def _array(text: str, pos: int, path: JsonPath, locs: Locations) -> int:
    pos = _skip(text, pos)
    if text[pos] == "]":
        return pos + 1
    index = 0
    while True:
        pos = _skip(text, _value(text, pos, (*path, index), locs))
        if text[pos] == "]":
            return pos + 1
        pos = _skip(text, pos + 1)
        index += 1


def format_path(path: JsonPath) -> str:
    """A JSON path as a person reads it: ``tools."python_test".limits[0].window``.

    Tool patterns (the keys of ``tools``) and keys that are not plain names are quoted.
    """
    out: list[str] = []
    for i, part in enumerate(path):
        if isinstance(part, int):
            out.append(f"[{part}]")
            continue
        quoted = (i == 1 and path[0] == "tools") or not _IDENT.fullmatch(part)
        text = '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"' if quoted else part
        out.append(text if not out else "." + text)
    return "".join(out) or "(the whole file)"


# -- changing a text in place -----------------------------------------------------------


def span(text: str, where: JsonPath) -> tuple[int, int] | None:
    """Where the value at ``where`` starts and ends in ``text`` (None: there is none)."""
    start = locate(text).values.get(where)
    if start is None:
        return None
    return start, value_end(text, start)


def without_member(text: str, where: JsonPath) -> str:
    """``text`` without the object member at ``where`` (its key, value and one comma), the
    rest as it was. ``where`` must name a member of an object.

    Raises:
        KeyError: there is no member at ``where``.
    """
    locations = locate(text)
    start, value = locations.keys[where], locations.values[where]
    end = value_end(text, value)
    after = _skip(text, end)
    if text[after] == ",":  # a member follows: take the comma, keep its indentation
        end = _skip(text, after + 1)
        return text[:start] + text[end:]
    before = len(text[:start].rstrip())
    if text[before - 1] == ",":  # the last of several: take the comma before it
        return text[: before - 1] + text[end:]
    # the only member: the object becomes {}
    return text[:before] + text[after:]


def splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, new)`` replaced (spans from the original text)."""
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def line_indent(text: str, offset: int) -> str:
    """The blanks that start the line holding ``offset``."""
    start = text.rfind("\n", 0, offset) + 1
    end = start
    while end < len(text) and text[end] in " \t":
        end += 1
    return text[start:end]


def indent_unit(text: str) -> str:
    """One level of the file's indentation (its first indented line's), else two spaces."""
    match = re.search(r"\n([ \t]+)\S", text)
    return match.group(1) if match else "  "


def render_at(value: object, text: str, offset: int, newline: str) -> str:
    """``value`` as JSON text to put at ``offset`` of ``text``, in the file's style: its
    indentation unit, its line endings, on one line if the file is one line."""
    return _rendered(value, text, line_indent(text, offset), newline)


def _rendered(value: object, text: str, indent: str, newline: str) -> str:
    """``value`` as JSON text in ``text``'s style, its lines after the first at ``indent``."""
    if "\n" not in text:
        return json.dumps(value, ensure_ascii=False)
    unit = indent_unit(text)
    rendered = json.dumps(value, ensure_ascii=False, indent=len(unit) if " " in unit else "\t")
    return rendered.replace("\n", newline + indent)


def with_member(text: str, where: JsonPath, key: str, value: object) -> str:
    """``text`` with ``"key": value`` added as the last member of the object at ``where``,
    in the object's style: on a line of its own at its members' indentation when they
    are one a line (or the object is empty, in a file of several lines), else on the
    same line after a comma. The rest of the text stays as it was. ``key`` must not be
    in the object yet.

    Raises:
        KeyError: there is no value at ``where``.
    """
    start = locate(text).values[where]
    if text[start] != "{":
        raise KeyError(where)
    close = value_end(text, start) - 1
    newline = "\r\n" if "\r\n" in text else "\n"
    name = json.dumps(key, ensure_ascii=False)
    last = len(text[:close].rstrip(" \t\r\n"))  # just past the last member (or the "{")
    if last == start + 1:  # an empty object
        if "\n" not in text:
            return f"{text[:last]}{name}: {_rendered(value, text, '', newline)}{text[close:]}"
        outer = line_indent(text, start)
        inner = outer + indent_unit(text)
        member = f"{name}: {_rendered(value, text, inner, newline)}"
        return f"{text[:last]}{newline}{inner}{member}{newline}{outer}{text[close:]}"
    first = _skip(text, start + 1)
    if "\n" in text[start + 1 : first]:  # its members are one a line
        inner = line_indent(text, first)
        member = f"{name}: {_rendered(value, text, inner, newline)}"
        return f"{text[:last]},{newline}{inner}{member}{text[last:]}"
    return f"{text[:last]}, {name}: {json.dumps(value, ensure_ascii=False)}{text[last:]}"
