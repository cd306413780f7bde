"""servers.json in the mcpServers shape, and keyring references."""

from __future__ import annotations

import json
import uuid

import pytest

from proxy.config.secrets import SecretError, SecretStore
from proxy.config.servers import (
    HttpServer,
    OAuthSettings,
    ServersError,
    StdioServer,
    load_servers,
    oauth_applies,
    parse_servers,
    resolve_secrets,
    secret_references,
    secret_values,
)

# The shape Claude Desktop writes, with fields that belong to other clients.
CLAUDE_DESKTOP = {
    "mcpServers": {
        "filesystem": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/ann/projects"],
        },
        "github": {
            "command": "docker",
            "args": ["run", "-i", "--rm", "ghcr.io/github/github-mcp-server"],
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "keyring:github"},
            "disabled": False,
            "autoApprove": [],
        },
        "docs": {
            "url": "https://docs.example.test/mcp",
            "headers": {"Authorization": "keyring:docs"},
        },
        "legacy": {"url": "https://old.example.test/sse", "type": "sse"},
        "local": {"command": "python", "args": ["server.py"], "cwd": "/srv/mcp"},
    }
}


def test_client_config_shapes_load_as_they_are():
    servers = parse_servers(json.dumps(CLAUDE_DESKTOP))
    assert servers["filesystem"] == StdioServer(
        "filesystem", "npx", ("-y", "@modelcontextprotocol/server-filesystem", "/home/ann/projects")
    )
    github = servers["github"]
    assert isinstance(github, StdioServer)
    assert github.env == {"GITHUB_PERSONAL_ACCESS_TOKEN": "keyring:github"}
    assert servers["docs"] == HttpServer(
        "docs", "https://docs.example.test/mcp", {"Authorization": "keyring:docs"}
    )
    assert servers["legacy"].transport == "sse"
    assert servers["docs"].transport == "http"
    local = servers["local"]
    assert isinstance(local, StdioServer)
    assert local.cwd == "/srv/mcp"


def test_vs_code_servers_key_and_type_field():
    text = json.dumps(
        {
            "servers": {
                "x": {"type": "stdio", "command": "node", "args": ["s.js"]},
                "y": {"type": "http", "url": "http://127.0.0.1:9/mcp"},
            }
        }
    )
    servers = parse_servers(text)
    assert servers["x"].transport == "stdio"
    assert servers["y"].transport == "http"


def test_disabled_true_turns_a_server_off_and_it_is_still_parsed():
    servers = parse_servers(
        json.dumps(
            {
                "mcpServers": {
                    "off": {"command": "a", "disabled": True},
                    "remote": {"url": "http://h/mcp", "disabled": True},
                    "on": {"command": "b", "disabled": False},
                    "plain": {"command": "c"},
                }
            }
        )
    )
    assert servers["off"] == StdioServer("off", "a", disabled=True)
    assert servers["remote"] == HttpServer("remote", "http://h/mcp", disabled=True)
    assert servers["on"] == StdioServer("on", "b")  # false is the same as no field
    assert not servers["plain"].disabled


@pytest.mark.parametrize("value", ["true", 1, None, [], {}])
def test_disabled_must_be_a_boolean_and_says_where(value):
    text = '{"mcpServers": {\n  "x": {"command": "a",\n        "disabled": ' + json.dumps(value)
    text += "}}}"
    with pytest.raises(ServersError) as info:
        parse_servers(text, "servers.json")
    assert str(info.value) == (
        "servers.json:3:21: mcpServers.x.disabled: must be true or false (true turns the "
        "server off in Lockgate)"
    )


def test_missing_file_means_no_servers(tmp_path):
    assert load_servers(tmp_path / "servers.json") == {}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"mcpServers": {"bad name": {"command": "x"}}}, 'mcpServers."bad name": a server name'),
        ({"mcpServers": {"a/b": {"command": "x"}}}, "appears in URLs"),
        ({"mcpServers": {"x": {}}}, 'needs "command" (a program to start) or "url"'),
        ({"mcpServers": {"x": {"comand": "node"}}}, 'needs "command"'),
        (
            {"mcpServers": {"x": {"comand": "node"}}},
            "servers.json:4:17: mcpServers.x.comand: unknown field (did you mean 'command'?)",
        ),
        (
            {"mcpServers": {"x": {"command": "node", "evn": {"KEY": "v"}}}},
            "unknown field (did you mean 'env'?)",  # never started without its env
        ),
        ({"mcpServers": {"x": {"command": "a", "url": "http://h/"}}}, "one or the other"),
        ({"mcpServers": {"x": {"command": ""}}}, "x.command: must be a non-empty string"),
        ({"mcpServers": {"x": {"command": "a", "args": "b"}}}, "x.args: must be a list of strings"),
        ({"mcpServers": {"x": {"command": "a", "env": {"K": 1}}}}, "x.env: must be an object"),
        ({"mcpServers": {"x": {"url": "ftp://h/"}}}, "x.url: must be an http:// or https://"),
        ({"mcpServers": {"x": {"url": "http://h/", "type": "ws"}}}, 'is not "http" or "sse"'),
        ({"mcpServers": {"x": {"command": "a", "type": "sse"}}}, 'does not go with "command"'),
        ({"mcpServers": []}, "mcpServers: must be an object"),
        ({"other": {}}, 'no "mcpServers" object'),
        ([], "expected an object"),
    ],
)
def test_errors_are_clear_and_located(document, message):
    with pytest.raises(ServersError) as info:
        parse_servers(json.dumps(document, indent=2), "servers.json")
    assert message in str(info.value)
    if isinstance(document, dict) and "other" not in document:
        assert str(info.value).startswith("servers.json:")


def test_invalid_json(tmp_path):
    path = tmp_path / "servers.json"
    path.write_text('{"mcpServers": {,}}')
    with pytest.raises(ServersError, match=r"servers.json:1:17: not valid JSON"):
        load_servers(path)


def test_keyring_references_resolve_only_in_memory(os_keyring, tmp_path):
    store = SecretStore(os_keyring)
    name = f"gh-{uuid.uuid4().hex}"
    store.set(name, "ghp_real_value")
    path = tmp_path / "servers.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "gh": {
                        "command": "srv",
                        "args": ["--verbose"],
                        "env": {"TOKEN": f"keyring:{name}", "PLAIN": "x"},
                    },
                    "web": {
                        "url": "http://127.0.0.1:1/mcp",
                        "headers": {"Authorization": f"keyring:{name}"},
                    },
                }
            }
        )
    )
    servers = load_servers(path)
    assert secret_references(servers["gh"]) == [name]
    resolved = resolve_secrets(servers["gh"], store)
    assert isinstance(resolved, StdioServer)
    assert resolved.env == {"TOKEN": "ghp_real_value", "PLAIN": "x"}
    assert resolved.args == ("--verbose",)
    web = resolve_secrets(servers["web"], store)
    assert isinstance(web, HttpServer)
    assert web.headers == {"Authorization": "ghp_real_value"}
    assert "ghp_real_value" not in path.read_text()
    assert "ghp_real_value" not in repr(servers["gh"])


def test_a_keyring_reference_in_args_is_refused_at_load(tmp_path):
    """A command line is readable by every local user (ps, /proc/PID/cmdline): a secret
    must never be put there, so servers.json may not ask for it."""
    path = tmp_path / "servers.json"
    path.write_text(
        '{"mcpServers": {"gh": {"command": "srv",\n  "args": ["--token", "keyring:gh"]}}}'
    )
    with pytest.raises(ServersError) as info:
        load_servers(path)
    message = str(info.value)
    assert ":2:23: mcpServers.gh.args[1]: a keyring: secret cannot go in args" in message
    assert "Pass it in env instead" in message


def test_resolving_never_puts_a_secret_in_args(os_keyring):
    """Even a spec built in code (not read from servers.json) is refused, not resolved."""
    spec = StdioServer("x", "srv", args=("keyring:anything",))
    with pytest.raises(SecretError, match="cannot go in args"):
        resolve_secrets(spec, SecretStore(os_keyring))


def test_a_missing_secret_names_the_command_that_stores_it(os_keyring):
    spec = StdioServer("x", "srv", env={"T": "keyring:never-stored"})
    with pytest.raises(SecretError, match="lockgate secret set never-stored"):
        resolve_secrets(spec, SecretStore(os_keyring))


def test_oauth_on_a_url_server_is_read_with_its_secret_as_a_reference(os_keyring):
    servers = parse_servers(
        json.dumps(
            {
                "mcpServers": {
                    "docs": {
                        "url": "https://docs.example.test/mcp",
                        "headers": {"X-Team": "a"},
                        "oauth": {
                            "client_id": "lockgate",
                            "client_secret": "keyring:docs-client",
                            "scopes": ["read", "write"],
                        },
                    },
                    "open": {"url": "https://open.example.test/mcp", "oauth": {}},
                    "plain": {"url": "https://plain.example.test/mcp"},
                    "keyed": {
                        "url": "https://keyed.example.test/mcp",
                        "headers": {"authorization": "keyring:keyed"},
                    },
                }
            }
        )
    )
    docs = servers["docs"]
    assert isinstance(docs, HttpServer)
    assert docs.oauth == OAuthSettings("lockgate", "keyring:docs-client", ("read", "write"))
    assert servers["open"] == HttpServer(
        "open", "https://open.example.test/mcp", oauth=OAuthSettings()
    )
    assert [oauth_applies(s) for s in servers.values()] == [True, True, True, False]
    assert secret_references(docs) == ["docs-client"]

    store = SecretStore(os_keyring)
    name = f"client-{uuid.uuid4().hex}"
    store.set(name, "cs_real_value")
    spec = HttpServer("d", "https://d.test/mcp", oauth=OAuthSettings("id", f"keyring:{name}"))
    resolved = resolve_secrets(spec, store)
    assert isinstance(resolved, HttpServer)
    assert resolved.oauth == OAuthSettings("id", "cs_real_value")
    assert secret_values(spec, resolved) == ["cs_real_value"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"command": "srv", "oauth": {}},
            'x.oauth: goes only with a "url" server',
        ),
        (
            {"url": "https://h/mcp", "headers": {"Authorization": "keyring:t"}, "oauth": {}},
            'x.oauth: cannot go with an "Authorization" header',
        ),
        (
            {"url": "https://h/mcp", "oauth": {"client_id": "a", "client_secret": "hunter2"}},
            "x.oauth.client_secret: must be a keyring: reference, not the secret itself: store "
            'it with "lockgate secret set NAME"',
        ),
        (
            {"url": "https://h/mcp", "oauth": {"client_secret": "keyring:s"}},
            'x.oauth.client_secret: needs the "client_id" it belongs to',
        ),
        ({"url": "https://h/mcp", "oauth": {"client_id": ""}}, "x.oauth.client_id: must be a"),
        ({"url": "https://h/mcp", "oauth": {"scopes": "read"}}, "x.oauth.scopes: must be a list"),
        ({"url": "https://h/mcp", "oauth": {"scopes": ["a b"]}}, "without spaces"),
        ({"url": "https://h/mcp", "oauth": []}, "x.oauth: must be an object"),
        (
            {"url": "https://h/mcp", "oauth": {"clientid": "a"}},
            "x.oauth.clientid: unknown field (did you mean 'client_id'?)",
        ),
        ({"url": "https://h/mcp", "oath": {}}, "x.oath: unknown field (did you mean 'oauth'?)"),
    ],
)
def test_oauth_mistakes_are_located_and_say_what_to_do(entry, message):
    document = {"mcpServers": {"x": entry}}
    with pytest.raises(ServersError) as info:
        parse_servers(json.dumps(document, indent=2), "servers.json")
    text = str(info.value)
    assert message in text
    assert text.startswith("servers.json:")
    assert "hunter2" not in text


@pytest.mark.parametrize("kind", ["tokens", "client", "server"])
def test_a_reference_to_a_sign_in_entry_is_refused_never_resolved(os_keyring, kind):
    """A pasted servers.json snippet must not hand one server's OAuth tokens to another
    server (a header) or a process (its environment)."""
    store = SecretStore(os_keyring)
    entry = f"victim-{uuid.uuid4().hex[:8]}.oauth.{kind}"
    store.set(entry, '{"access_token": "AT-victim"}')
    text = {
        "mcpServers": {
            "notes": {"url": "http://127.0.0.1:1/mcp", "headers": {"X-Key": f"keyring:{entry}"}},
            "tool": {"command": "srv", "env": {"TOKEN": f"keyring:{entry}"}},
        }
    }
    servers = parse_servers(json.dumps(text))
    for name in ("notes", "tool"):
        with pytest.raises(SecretError, match="where Lockgate keeps a server's sign-in"):
            resolve_secrets(servers[name], store)
    store.delete(entry)
