"""Positions of values in a JSON text, and changing one value in place: what the policy
editor (a click's rule), client routing (a client's entry) and the servers editor share."""

from __future__ import annotations

import json

import pytest

from proxy.config.jsontext import (
    indent_unit,
    line_indent,
    locate,
    render_at,
    span,
    splice,
    with_member,
    without_member,
)

TEXT = '{\n    "tools": {\n        "echo": {"action": "allow"},\n        "x": 1\n    }\n}\n'


def test_span_is_where_a_value_starts_and_ends():
    where = span(TEXT, ("tools", "echo"))
    assert where is not None
    assert TEXT[where[0] : where[1]] == '{"action": "allow"}'
    assert span(TEXT, ("tools", "nothing")) is None


def test_splice_replaces_spans_of_the_original_text_whatever_their_order():
    echo, x = span(TEXT, ("tools", "echo")), span(TEXT, ("tools", "x"))
    assert echo is not None
    assert x is not None
    out = splice(TEXT, [(*echo, '"deny"'), (*x, "2")])
    assert json.loads(out) == {"tools": {"echo": "deny", "x": 2}}
    assert out.replace('"deny"', '{"action": "allow"}').replace(": 2", ": 1") == TEXT


def test_a_value_is_rendered_in_the_files_own_style():
    offset = locate(TEXT).values[("tools", "echo")]
    assert indent_unit(TEXT) == "    "
    assert line_indent(TEXT, offset) == "        "
    rendered = render_at({"a": [1]}, TEXT, offset, "\n")
    assert rendered == '{\n            "a": [\n                1\n            ]\n        }'
    crlf = TEXT.replace("\n", "\r\n")
    assert "\r\n" in render_at({"a": 1}, crlf, offset, "\r\n")
    assert render_at({"a": 1}, '{"x": 1}', 6, "\n") == '{"a": 1}'  # a one-line file


def test_tabs_stay_tabs():
    text = '{\n\t"a": 1\n}'
    assert indent_unit(text) == "\t"
    assert render_at({"b": 2}, text, locate(text).values[("a",)], "\n") == '{\n\t\t"b": 2\n\t}'


@pytest.mark.parametrize(
    ("text", "name", "left"),
    [
        ('{"t": {"a": 1, "b": 2, "c": 3}}', "a", '{"t": {"b": 2, "c": 3}}'),
        ('{"t": {"a": 1, "b": 2, "c": 3}}', "b", '{"t": {"a": 1, "c": 3}}'),
        ('{"t": {"a": 1, "b": 2, "c": 3}}', "c", '{"t": {"a": 1, "b": 2}}'),
        ('{\n  "t": {\n    "a": {"x": [1]}\n  }\n}\n', "a", '{\n  "t": {}\n}\n'),
        (
            '{\n  "t": {\n    "a": 1,\n    "b": 2\n  },\n  "u": 0\n}',
            "b",
            '{\n  "t": {\n    "a": 1\n  },\n  "u": 0\n}',
        ),
    ],
)
def test_a_member_is_cut_out_with_its_comma_and_the_rest_stays(text, name, left):
    assert without_member(text, ("t", name)) == left


@pytest.mark.parametrize(
    ("text", "where", "added"),
    [
        # members one a line: a line of its own, at the members' indentation
        (
            '{\n  "t": {\n      "a": 1\n  },\n  "u": 0\n}\n',
            ("t",),
            '{\n  "t": {\n      "a": 1,\n      "b": {\n        "x": [\n          1\n        ]\n'
            '      }\n  },\n  "u": 0\n}\n',
        ),
        # an object on one line stays on one line, in a file of several
        ('{\n  "t": {"a": 1}\n}', ("t",), '{\n  "t": {"a": 1, "b": {"x": [1]}}\n}'),
        # an empty object in a file of several lines opens up
        (
            '{\n  "t": {}\n}',
            ("t",),
            '{\n  "t": {\n    "b": {\n      "x": [\n        1\n      ]\n    }\n  }\n}',
        ),
        # a one-line file stays one line
        ('{"t": {}}', ("t",), '{"t": {"b": {"x": [1]}}}'),
        ('{"t": {"a": 1}}', (), '{"t": {"a": 1}, "b": {"x": [1]}}'),
        # CRLF and tabs are the file's
        (
            '{\r\n\t"t": {\r\n\t\t"a": 1\r\n\t}\r\n}',
            ("t",),
            '{\r\n\t"t": {\r\n\t\t"a": 1,\r\n\t\t"b": {\r\n\t\t\t"x": [\r\n\t\t\t\t1\r\n'
            "\t\t\t]\r\n\t\t}\r\n\t}\r\n}",
        ),
    ],
)
def test_a_member_is_added_last_in_the_objects_own_style(text, where, added):
    out = with_member(text, where, "b", {"x": [1]})
    assert out == added
    document = json.loads(text)
    inner = document[where[0]] if where else document
    inner["b"] = {"x": [1]}
    assert json.loads(out) == document


def test_a_member_cannot_be_added_to_what_is_not_an_object():
    with pytest.raises(KeyError):
        with_member('{"t": [1]}', ("t",), "b", 1)
    with pytest.raises(KeyError):
        with_member('{"t": {}}', ("nothing",), "b", 1)
