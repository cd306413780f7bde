"""Changing one server of servers.json as a careful person would: on real files, every
other byte as it was, checked by the watcher's own parser, never over a change."""

from __future__ import annotations

import codecs
import json
import stat
from pathlib import Path

import pytest

from proxy.config.servers import SERVER_NAME_RULE, StdioServer, read_servers_file
from proxy.config.servers_edit import (
    EMPTY_SERVERS,
    UNNAMED,
    PasteError,
    ServersEditError,
    keyring_name_for,
    move_to_keyring,
    parse_pasted_entry,
    put_server,
    read_servers_text,
    remove_server,
    secret_like_values,
    servers_with,
    set_server_disabled,
    write_servers_text,
)

# A file as a person keeps it: four spaces, one entry on a line and one spread out, a
# field of another client, a key Lockgate does not know, a non-ASCII description.
TEXT = """{
    "mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"]},
        "git": {
            "command": "uvx",
            "args": ["mcp-server-git", "--repository", "/home/ann/src"],
            "autoApprove": []
        },
        "docs": {"url": "https://docs.example.test/mcp"}
    },
    "note": "für später"
}
"""


def servers_file(tmp_path: Path, text: str = TEXT, *, bom: bool = False) -> Path:
    path = tmp_path / "servers.json"
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8"))
    return path


def in_force(path: Path) -> dict[str, object]:
    """What the gateway's watcher reads from ``path`` (it must be valid)."""
    read = read_servers_file(path)
    assert read.error is None, read.error
    return dict(read.servers)


# -- adding ------------------------------------------------------------------------------


def test_a_new_server_goes_last_in_the_table_and_every_other_byte_stays(tmp_path):
    path = servers_file(tmp_path)
    written = put_server(
        path, "fetch", {"command": "uvx", "args": ["mcp-server-fetch"]}, replace=False
    )
    assert written == path.read_bytes()
    assert path.read_text() == TEXT.replace(
        '"docs": {"url": "https://docs.example.test/mcp"}\n',
        '"docs": {"url": "https://docs.example.test/mcp"},\n'
        '        "fetch": {\n'
        '            "command": "uvx",\n'
        '            "args": [\n'
        '                "mcp-server-fetch"\n'
        "            ]\n"
        "        }\n",
    )
    assert in_force(path)["fetch"] == StdioServer("fetch", "uvx", ("mcp-server-fetch",))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_missing_file_starts_as_an_empty_table(tmp_path):
    path = tmp_path / "config" / "servers.json"
    put_server(path, "time", {"command": "uvx"}, replace=False)
    assert (
        path.read_text()
        == '{\n  "mcpServers": {\n    "time": {\n      "command": "uvx"\n    }\n  }\n}\n'
    )
    assert json.loads(EMPTY_SERVERS) == {"mcpServers": {}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_table_opens_up_in_the_files_style(tmp_path):
    path = servers_file(tmp_path, '{\n\t"servers": {},\n\t"inputs": []\n}')
    put_server(path, "x", {"type": "stdio", "command": "node"}, replace=False)
    assert path.read_text() == (
        '{\n\t"servers": {\n\t\t"x": {\n\t\t\t"type": "stdio",\n\t\t\t"command": "node"\n'
        '\t\t}\n\t},\n\t"inputs": []\n}'
    )


def test_a_one_line_file_stays_one_line(tmp_path):
    path = servers_file(tmp_path, '{"mcpServers": {"a": {"command": "a"}}}')
    put_server(path, "b", {"command": "b"}, replace=False)
    assert path.read_text() == '{"mcpServers": {"a": {"command": "a"}, "b": {"command": "b"}}}'


def test_a_taken_name_is_refused_unless_replacing_and_a_bad_name_with_the_rule(tmp_path):
    path = servers_file(tmp_path)
    with pytest.raises(ServersEditError, match="already has a server named 'time'") as info:
        put_server(path, "time", {"command": "other"}, replace=False)
    assert info.value.told().startswith("servers.json was not changed: ")
    with pytest.raises(ServersEditError) as bad:
        put_server(path, "no spaces", {"command": "x"}, replace=False)
    assert bad.value.message == f"'no spaces': {SERVER_NAME_RULE}"
    assert path.read_text() == TEXT


# -- replacing ---------------------------------------------------------------------------


def test_replacing_changes_that_value_only_in_its_own_shape(tmp_path):
    path = servers_file(tmp_path)
    put_server(path, "time", {"command": "uvx", "args": ["mcp-server-time", "--utc"]}, replace=True)
    one_line = TEXT.replace('["mcp-server-time"]', '["mcp-server-time", "--utc"]')
    assert path.read_text() == one_line
    put_server(path, "git", {"command": "git-mcp"}, replace=True)
    start = one_line.index('"git": {') + len('"git": ')
    end = one_line.index('},\n        "docs"') + 1
    assert (
        path.read_text()
        == one_line[:start] + '{\n            "command": "git-mcp"\n        }' + one_line[end:]
    )
    put_server(path, "new", {"url": "https://new.example.test/mcp"}, replace=True)  # added
    assert set(in_force(path)) == {"time", "git", "docs", "new"}


# -- removing ----------------------------------------------------------------------------


def test_removing_takes_the_member_and_one_comma(tmp_path):
    path = servers_file(tmp_path)
    remove_server(path, "git")
    first = TEXT.replace(TEXT[TEXT.index('"git"') : TEXT.index('"docs"')], "")
    assert path.read_text() == first
    remove_server(path, "docs")  # the last one: the comma before it goes
    second = first.replace(',\n        "docs": {"url": "https://docs.example.test/mcp"}', "")
    assert path.read_text() == second
    remove_server(path, "time")  # the only one: the table is empty, the rest stays
    assert path.read_text() == '{\n    "mcpServers": {},\n    "note": "für später"\n}\n'
    assert in_force(path) == {}
    with pytest.raises(ServersEditError, match=r"servers\.json has no server named 'time'"):
        remove_server(path, "time")


# -- turning off and on ------------------------------------------------------------------


def test_turning_off_and_on_touches_only_that_entrys_field(tmp_path):
    path = servers_file(tmp_path)
    set_server_disabled(path, "time", True)
    time_off = TEXT.replace('["mcp-server-time"]}', '["mcp-server-time"], "disabled": true}')
    assert path.read_text() == time_off
    set_server_disabled(path, "git", True)
    both_off = time_off.replace(
        '"autoApprove": []\n', '"autoApprove": [],\n            "disabled": true\n'
    )
    assert path.read_text() == both_off
    spec = in_force(path)["git"]
    assert isinstance(spec, StdioServer)
    assert spec.disabled
    set_server_disabled(path, "git", False)
    assert path.read_text() == time_off
    set_server_disabled(path, "time", False)
    assert path.read_text() == TEXT


def test_disabled_false_becomes_true_and_a_change_to_nothing_writes_nothing(tmp_path):
    path = servers_file(tmp_path, '{"mcpServers": {"a": {"disabled": false, "command": "a"}}}')
    inode = path.stat().st_ino
    assert set_server_disabled(path, "a", False) == path.read_bytes()  # already on
    assert path.stat().st_ino == inode  # not written (a write renames a new file in)
    set_server_disabled(path, "a", True)
    assert path.read_text() == '{"mcpServers": {"a": {"disabled": true, "command": "a"}}}'
    inode = path.stat().st_ino
    set_server_disabled(path, "a", True)
    assert path.stat().st_ino == inode
    with pytest.raises(ServersEditError, match="no server named 'b'"):
        set_server_disabled(path, "b", True)


# -- the file's own bytes ----------------------------------------------------------------


def test_a_bom_and_crlf_stay(tmp_path):
    crlf = TEXT.replace("\n", "\r\n")
    path = servers_file(tmp_path, crlf, bom=True)
    put_server(path, "fetch", {"command": "f", "args": ["x"]}, replace=False)
    set_server_disabled(path, "git", True)
    raw = path.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert '"fetch": {\r\n            "command": "f",\r\n            "args": [\r\n' in raw.decode(
        "utf-8-sig"
    )
    remove_server(path, "fetch")
    set_server_disabled(path, "git", False)
    assert path.read_bytes() == codecs.BOM_UTF8 + crlf.encode()


# -- refusals, and the file left as it was -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "told"),
    [
        ('{"mcpServers": {,}}', r"fix servers.json first:\n.*servers.json:1:17: not valid JSON"),
        (
            '{"mcpServers": {"x": {"comand": "a"}}}',
            r"fix servers.json first:\n.*did you mean 'command'",
        ),
        (
            '{"mcpServers": {"x": {"command": "a", "disabled": "yes"}}}',
            "x.disabled: must be true or false",
        ),
    ],
)
def test_a_file_broken_now_is_never_edited(tmp_path, text, told):
    path = servers_file(tmp_path, text)
    for change in (
        lambda: put_server(path, "new", {"command": "n"}, replace=False),
        lambda: remove_server(path, "x"),
        lambda: set_server_disabled(path, "x", True),
    ):
        with pytest.raises(ServersEditError, match=told):
            change()
    assert path.read_text() == text


def test_a_server_named_twice_is_refused_with_its_place(tmp_path):
    text = '{"mcpServers": {\n  "a": {"command": "x"},\n  "a": {"command": "y"}}}'
    path = servers_file(tmp_path, text)
    with pytest.raises(ServersEditError, match=r":3:3: 'a' appears twice here"):
        set_server_disabled(path, "a", True)
    assert path.read_text() == text


@pytest.mark.parametrize(
    ("entry", "told"),
    [
        ({"command": "a", "args": "not a list"}, "mcpServers.new.args: must be a list of strings"),
        ({"command": "a", "args": ["keyring:tok"]}, "a keyring: secret cannot go in args"),
        ({"command": "a", "disabled": "yes"}, "mcpServers.new.disabled: must be true or false"),
        ({"args": []}, 'needs "command"'),
    ],
)
def test_a_change_that_would_be_invalid_is_refused_and_nothing_is_written(tmp_path, entry, told):
    path = servers_file(tmp_path)
    with pytest.raises(ServersEditError, match=r"would make servers\.json invalid") as info:
        put_server(path, "new", entry, replace=False)
    assert told in info.value.message
    assert path.read_text() == TEXT


def test_a_file_changed_since_it_was_read_is_not_overwritten(tmp_path):
    path = servers_file(tmp_path)
    was = read_servers_text(path)
    theirs = TEXT.replace("für später", "theirs")
    path.write_text(theirs)  # another program (or a person) saved it meanwhile
    with pytest.raises(ServersEditError, match="changed meanwhile; try again"):
        write_servers_text(was, servers_with(was.text, was.key, {"mine": {"command": "m"}}))
    assert path.read_text() == theirs
    missing = read_servers_text(tmp_path / "other.json")
    (tmp_path / "other.json").write_text(EMPTY_SERVERS)  # created meanwhile
    with pytest.raises(ServersEditError, match="changed meanwhile"):
        write_servers_text(
            missing, servers_with(missing.text, missing.key, {"m": {"command": "m"}})
        )
    assert (tmp_path / "other.json").read_text() == EMPTY_SERVERS


def test_servers_are_added_at_the_end_of_the_table_with_the_rest_as_it_was():
    new = {"time": {"command": "t"}}
    assert json.loads(servers_with(EMPTY_SERVERS, "mcpServers", new)) == {"mcpServers": new}
    full = '{\n    "mcpServers": {\n        "a": {"command": "a"}\n    },\n    "x": 1\n}\n'
    added = servers_with(full, "mcpServers", {**new, "b": {"command": "b"}})
    assert added.startswith(
        '{\n    "mcpServers": {\n        "a": {"command": "a"},\n        "time": '
    )
    assert added.endswith('\n        }\n    },\n    "x": 1\n}\n')
    assert list(json.loads(added)["mcpServers"]) == ["a", "time", "b"]


# -- what a person pastes ----------------------------------------------------------------

GITHUB = {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"]}


@pytest.mark.parametrize(
    ("pasted", "servers"),
    [
        # Claude Desktop, Cursor, Claude Code: a whole file
        (json.dumps({"mcpServers": {"github": GITHUB}}, indent=2), {"github": GITHUB}),
        # VS Code's mcp.json, with its inputs, a comment and trailing commas
        (
            '{\n  // from the docs\n  "inputs": [],\n  "servers": {\n    "gh": {"type": "http", '
            '"url": "https://api.example.test/mcp/",},\n  },\n}',
            {"gh": {"type": "http", "url": "https://api.example.test/mcp/"}},
        ),
        # VS Code's settings.json
        (json.dumps({"mcp": {"servers": {"github": GITHUB}}}), {"github": GITHUB}),
        # a bare mapping, and one copied without its braces
        (
            json.dumps({"github": GITHUB, "time": {"command": "uvx"}}),
            {"github": GITHUB, "time": {"command": "uvx"}},
        ),
        ('"github": ' + json.dumps(GITHUB) + ",\n", {"github": GITHUB}),
        ('"mcpServers": {"github": ' + json.dumps(GITHUB) + "}", {"github": GITHUB}),
        # one entry: the caller names it
        (json.dumps(GITHUB), {UNNAMED: GITHUB}),
        # Windsurf's serverUrl
        (
            '{"docs": {"serverUrl": "https://d.example.test/mcp"}}',
            {"docs": {"url": "https://d.example.test/mcp"}},
        ),
        # a server that happens to be named "servers"
        ('{"servers": {"command": "x"}}', {"servers": {"command": "x"}}),
    ],
)
def test_a_pasted_config_gives_its_servers(pasted, servers):
    assert parse_pasted_entry(pasted) == servers


@pytest.mark.parametrize(
    ("pasted", "told"),
    [
        ("", "nothing was pasted"),
        (
            '{"mcpServers": {"a": {"command": "x"}',
            "not JSON (line 1, column 38: Expecting ',' delimiter)",
        ),
        ('"a": {"command": "x",\n "args": [}', "not JSON (line 2, column 11:"),
        ("[1, 2]", "expected an object"),
        ('{"mcpServers": {}}', "holds no server"),
        ('{"github": {"args": []}}', "'github' is not a server entry"),
        ('{"note": "hello"}', "'note' is not a server entry"),
    ],
)
def test_a_paste_that_is_not_a_server_says_why(pasted, told):
    with pytest.raises(PasteError) as info:
        parse_pasted_entry(pasted)
    assert told in info.value.message
    assert isinstance(info.value, ServersEditError)
    assert info.value.told().startswith("That is not a server entry: ")


def test_a_pasted_entry_goes_into_the_file_as_pasted(tmp_path):
    path = servers_file(tmp_path)
    pasted = parse_pasted_entry('{"mcpServers": {"off": {"command": "x", "disabled": true}}}')
    put_server(path, "off", pasted["off"], replace=False)
    spec = in_force(path)["off"]
    assert isinstance(spec, StdioServer)
    assert spec.disabled


# -- secrets -----------------------------------------------------------------------------


def test_values_that_look_like_secrets_are_named_and_references_are_not():
    entry = {
        "command": "x",
        "env": {
            "GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_not_a_real_one",
            "OPENAI_API_KEY": "x",
            "STRIPE_KEY": "y",
            "DB_PASSWORD": "hunter2",
            "CLIENT_SECRET": "s",
            "SAFE_TOKEN": "keyring:safe",
            "EMPTY_TOKEN": "",
            "LOG_LEVEL": "debug",
            "MAX_TOKENS": "100",
            "KEYBOARD": "us",
            "ANYTHING": "sk-" + "a" * 24,  # a credential by its look
        },
        "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Accept": "text/plain"},
    }
    assert secret_like_values(entry) == [
        ("env", "GITHUB_PERSONAL_ACCESS_TOKEN"),
        ("env", "OPENAI_API_KEY"),
        ("env", "STRIPE_KEY"),
        ("env", "DB_PASSWORD"),
        ("env", "CLIENT_SECRET"),
        ("env", "ANYTHING"),
        ("headers", "Authorization"),
        ("headers", "X-Api-Key"),
    ]
    assert secret_like_values({"command": "x"}) == []
    assert secret_like_values({"command": "x", "env": "not an object"}) == []


def test_moved_secrets_become_references_and_never_reach_the_file(tmp_path):
    entry = {"url": "https://d.example.test/mcp", "headers": {"Authorization": "Bearer abc123"}}
    moved, secrets = move_to_keyring("docs", entry, secret_like_values(entry))
    assert moved == {
        "url": entry["url"],
        "headers": {"Authorization": "keyring:docs.header.Authorization"},
    }
    assert secrets == {"docs.header.Authorization": "Bearer abc123"}
    assert entry["headers"] == {"Authorization": "Bearer abc123"}  # the caller's, untouched
    assert keyring_name_for("git", "env", "TOKEN") == "git.env.TOKEN"
    path = servers_file(tmp_path)
    put_server(path, "docs", moved, replace=True)
    assert b"abc123" not in path.read_bytes()
    assert secret_like_values(json.loads(path.read_text())["mcpServers"]["docs"]) == []
