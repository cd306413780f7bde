"""The files routing changes: read whole, written all or nothing, never over a change."""

from __future__ import annotations

import json

import pytest

from proxy.clients import CLIENTS
from proxy.clients.files import (
    RouteError,
    check_writable,
    no_duplicate_keys,
    read_client_file,
    write_client_file,
)

CURSOR = next(c for c in CLIENTS if c.name == "cursor")
VSCODE = next(c for c in CLIENTS if c.name == "vscode")


def test_a_jsonc_file_keeps_its_text_and_parses_with_comments_blanked(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text('\ufeff{\r\n  // mine\r\n  "servers": {"a": {"command": "x"},},\r\n}\r\n')
    doc = read_client_file(VSCODE, path)
    assert doc.text == path.read_bytes().decode("utf-8")
    assert doc.doc == {"servers": {"a": {"command": "x"}}}
    assert doc.newline == "\r\n"
    start, end = doc.span(("servers", "a"))  # type: ignore[misc]
    assert doc.text[start:end] == '{"command": "x"}'


@pytest.mark.parametrize(
    ("content", "told"),
    [
        (b"\xff\xfe", "not UTF-8 text"),
        (b'{"mcpServers": ', "1:16: not valid JSON"),
        (b"[]", "not a JSON object"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_with_where_and_why(tmp_path, content, told):
    path = tmp_path / "mcp.json"
    path.write_bytes(content)
    with pytest.raises(RouteError, match=told) as info:
        read_client_file(CURSOR, path)
    assert info.value.told().startswith("Nothing changed: ")
    with pytest.raises(RouteError, match="no such file"):
        read_client_file(CURSOR, tmp_path / "missing.json")


def test_a_key_twice_in_a_server_table_is_refused_with_its_place(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {\n "a": {"command": "x"},\n "a": {"command": "y"}}}')
    with pytest.raises(RouteError, match=r":3:2: 'a' appears twice"):
        no_duplicate_keys(read_client_file(CURSOR, path), CURSOR, "user", path)


def test_a_write_is_refused_when_the_file_changed_since_it_was_read(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {}}')
    doc = read_client_file(CURSOR, path)
    check_writable(doc, path)
    path.write_text('{"mcpServers": {"theirs": {}}}')
    with pytest.raises(RouteError, match="changed while Lockgate was working on it"):
        write_client_file(doc, path, '{"mcpServers": {"mine": {}}}')
    assert json.loads(path.read_text()) == {"mcpServers": {"theirs": {}}}
    path.chmod(0o444)
    with pytest.raises(RouteError, match="read-only"):
        check_writable(read_client_file(CURSOR, path), path)
