"""JSON with comments and trailing commas, as VS Code writes its mcp.json: comments and
trailing commas become blanks, so every other character keeps its line and column."""

from __future__ import annotations

import json

import pytest

from proxy.clients._jsonc import loads, strip

TEXT = """{
  // the servers
  "servers": {
    "a": {"url": "http://x/y//z", "note": "/* not a comment */", "q": "say \\"hi\\","}, /* b
    next */ "b": [1, 2,],
  },
}"""


def test_comments_and_trailing_commas_are_blanked_and_strings_are_kept() -> None:
    assert loads(TEXT) == {
        "servers": {
            "a": {"url": "http://x/y//z", "note": "/* not a comment */", "q": 'say "hi",'},
            "b": [1, 2],
        }
    }
    stripped = strip(TEXT)
    assert len(stripped) == len(TEXT)
    assert stripped.count("\n") == TEXT.count("\n")


def test_an_error_points_at_the_line_and_column_of_the_file() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        loads('{\n  // a comment\n  "a": 1\n  "b": 2\n}')
    assert (caught.value.lineno, caught.value.colno) == (4, 3)


def test_an_unclosed_comment_runs_to_the_end() -> None:
    assert strip('{"a": 1} // end') == '{"a": 1}       '
    assert strip('{"a": 1} /* end') == '{"a": 1}       '
