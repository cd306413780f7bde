"""`lockgate clients route` / `unroute` on a fake home with every client's real-format file.

Nothing is a double: the commands are the installed `lockgate`; secrets go into the real
GNOME Keyring (the `os_keyring` fixture); the gateway is a real `lockgate serve`; the
upstreams are mcp-server-time (PyPI) and server-everything (npm, over stdio and over
HTTP); each rewritten entry is launched exactly as its client would launch it (its
command, args and env, through the SDK's stdio client, or its URL and headers over HTTP)
and a tool is called through it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from proxy.clients import _jsonc
from tests.support.live import BIN, EVERYTHING_JS, LiveGateway, lockgate_command
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.slow

TIME = str(BIN / "mcp-server-time")
SECRET = "sk-live-7c1f0e-do-not-copy"  # an API key as a user would paste it
HEADER_SECRET = "Bearer rk-remote-91b2"

# get-env's result would have the key redacted (it is a secret, from the keyring): the
# tests let it through, to see that the server got it
LET_THE_KEY_THROUGH = {
    "version": "1",
    "default": "allow",
    "tools": {"everything/get-env": {"results": {"secrets": "allow"}}},
}


def client_files(home: Path, remote: str) -> dict[str, tuple[Path, str]]:
    """Each client's file as that client writes it (formats from each client's docs)."""
    everything = json.dumps(str(EVERYTHING_JS))
    return {
        "claude-desktop": (
            home / ".config" / "Claude" / "claude_desktop_config.json",
            f"""{{
  "mcpServers": {{
    "time": {{
      "command": "{TIME}"
    }},
    "everything": {{
      "command": "node",
      "args": [{everything}, "stdio"],
      "env": {{
        "EVERYTHING_API_KEY": "{SECRET}"
      }}
    }}
  }},
  "globalShortcut": "Ctrl+Alt+Space"
}}
""",
        ),
        "claude-code": (
            home / ".claude.json",
            f"""{{
  "numStartups": 12,
  "mcpServers": {{
    "remote": {{"type": "http", "url": "{remote}", "headers": {{"X-Remote-Key": "{HEADER_SECRET}"}}}}
  }},
  "projects": {{
    "/home/ana/code/shop": {{
      "allowedTools": [],
      "mcpServers": {{
        "clock": {{"type": "stdio", "command": "{TIME}", "args": [], "env": {{}}}}
      }}
    }}
  }}
}}
""",
        ),
        "cursor": (
            home / ".cursor" / "mcp.json",
            f"""{{
    "mcpServers": {{
        "time": {{"command": "{TIME}"}},
        "everything": {{"command": "node", "args": [{everything}, "stdio"], "env": {{"EVERYTHING_API_KEY": "{SECRET}"}}}}
    }}
}}
""",
        ),
        "vscode": (
            home / ".config" / "Code" / "User" / "mcp.json",
            f"""{{
  // VS Code: "servers"; comments and trailing commas are allowed
  "inputs": [
    {{"type": "promptString", "id": "key", "description": "API key", "password": true}},
  ],
  "servers": {{
    "time": {{
      "type": "stdio",
      "command": "{TIME}", // the PyPI server
    }},
    "asks-for-key": {{
      "type": "stdio",
      "command": "node",
      "args": [{everything}, "stdio"],
      "env": {{"EVERYTHING_API_KEY": "${{input:key}}"}},
    }},
    /* a block
       comment */
  }},
}}
""",
        ),
        "windsurf": (
            home / ".codeium" / "windsurf" / "mcp_config.json",
            f"""{{"mcpServers": {{"remote": {{"serverUrl": "{remote}", "disabledTools": []}}}}}}
""",
        ),
    }


@pytest.fixture
def home(tmp_path: Path, remote_everything: str) -> tuple[Path, dict[str, tuple[Path, str]]]:
    home = tmp_path / "home"
    files = client_files(home, remote_everything)
    for path, text in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
    return home, files


def env_for(home: Path, lockgate_dirs: tuple[Path, Path]) -> dict[str, str]:
    config, data = lockgate_dirs
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    return {
        **env,
        "HOME": str(home),
        "LOCKGATE_CONFIG_DIR": str(config),
        "LOCKGATE_DATA_DIR": str(data),
    }


def lockgate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [lockgate_command(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def entries(client: str, path: Path) -> dict[str, Any]:
    doc = _jsonc.loads(path.read_text())
    if client == "claude-code":
        return {**doc["mcpServers"], **doc["projects"]["/home/ana/code/shop"]["mcpServers"]}
    return doc["servers" if client == "vscode" else "mcpServers"]


async def call_through(entry: dict[str, Any], tool: str, arguments: dict[str, Any]) -> str:
    """Call ``tool`` through ``entry`` the way its client would reach the server."""
    if "command" in entry:
        params = StdioServerParameters(
            command=entry["command"], args=entry.get("args", []), env=entry.get("env")
        )
        async with Client(params, mode="legacy") as client:
            result = await client.call_tool(tool, arguments)
    else:
        url = entry.get("url") or entry["serverUrl"]
        async with (
            httpx2.AsyncClient(headers=entry.get("headers"), timeout=60) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    return "".join(getattr(block, "text", "") for block in result.content)


def every_file_under(*folders: Path) -> bytes:
    return b"".join(p.read_bytes() for f in folders for p in f.rglob("*") if p.is_file())


async def test_route_every_client_call_tools_through_it_then_unroute_byte_for_byte(
    home, lockgate_dirs, os_keyring, tmp_path
):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    config, data = lockgate_dirs

    for client in files:
        done = lockgate(env, "clients", "route", client)
        assert done.returncode == 0, done.stderr
        assert "routed" in done.stdout

    # Every entry now goes through Lockgate; the one VS Code fills in itself is left.
    listing = json.loads(lockgate(env, "clients", "--json").stdout)
    through = {
        (f["client"], s["name"]): s["through_lockgate"] for f in listing for s in f["servers"]
    }
    assert through.pop(("vscode", "asks-for-key")) is False
    assert all(through.values()), through
    vscode_out = lockgate(env, "clients", "route", "vscode").stdout
    assert "asks-for-key: uses ${input:key}, which VS Code fills in" in vscode_out

    # Equal servers from different clients share one entry; Windsurf's "remote" has no
    # key header, so it is another server under another name.
    servers = json.loads((config / "servers.json").read_text())["mcpServers"]
    assert sorted(servers) == ["clock", "everything", "remote", "remote-windsurf", "time"]
    assert servers["everything"]["env"] == {
        "EVERYTHING_API_KEY": "keyring:everything.env.EVERYTHING_API_KEY"
    }
    assert servers["remote"]["headers"] == {"X-Remote-Key": "keyring:remote.header.X-Remote-Key"}
    assert os_keyring.get_password("lockgate", "everything.env.EVERYTHING_API_KEY") == SECRET
    # The secret values are in the keyring only: not in servers.json, the routing
    # records, the backups, or any other file Lockgate wrote.
    written = every_file_under(config, data)
    assert SECRET.encode() not in written
    assert HEADER_SECRET.encode() not in written
    # Unrelated settings and comments are untouched.
    vscode_text = files["vscode"][0].read_text()
    assert "// VS Code: " in vscode_text
    assert "/* a block\n       comment */" in vscode_text
    assert '"globalShortcut": "Ctrl+Alt+Space"' in files["claude-desktop"][0].read_text()
    assert '"disabledTools": []' in files["windsurf"][0].read_text()

    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    gateway.write_policy(LET_THE_KEY_THROUGH)
    gateway.start()
    try:
        for client, (path, _) in files.items():
            for name, entry in entries(client, path).items():
                if name == "asks-for-key":
                    continue
                if name in ("time", "clock"):
                    text = await call_through(entry, "get_current_time", {"timezone": "UTC"})
                    assert '"timezone": "UTC"' in text
                elif name == "everything":
                    # The key reached the server from the keyring, not from a file.
                    text = await call_through(entry, "get-env", {})
                    assert SECRET in text
                else:
                    text = await call_through(entry, "echo", {"message": f"via {client}"})
                    assert f"via {client}" in text
        clients_seen = {row["client"] for row in _audit(gateway)}
        assert {"claude-desktop", "claude-code", "cursor", "vscode", "windsurf"} <= clients_seen
    finally:
        gateway.stop()

    for client, (path, original) in files.items():
        undone = lockgate(env, "clients", "unroute", client)
        assert undone.returncode == 0, undone.stderr
        assert "byte for byte" in undone.stdout
        assert path.read_bytes() == original.encode(), client
    assert not list((data / "routes").iterdir())
    # No client uses them any more: the servers routing added are gone, and their secrets.
    assert json.loads((config / "servers.json").read_text())["mcpServers"] == {}
    assert os_keyring.get_password("lockgate", "everything.env.EVERYTHING_API_KEY") is None
    assert os_keyring.get_password("lockgate", "remote.header.X-Remote-Key") is None


def _audit(gateway: LiveGateway) -> list[dict[str, Any]]:
    result = gateway.lockgate("log", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    "client", ["claude-desktop", "claude-code", "cursor", "vscode", "windsurf"]
)
def test_every_clients_unrelated_edit_survives_unrouting(home, lockgate_dirs, os_keyring, client):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    path, original = files[client]
    assert lockgate(env, "clients", "route", client).returncode == 0

    def edit(text: str) -> str:  # a setting of the client's own, added at the top
        return text.replace("{", '{"addedByHand": true, ', 1)

    path.write_text(edit(path.read_text()))
    undone = lockgate(env, "clients", "unroute", client)
    assert undone.returncode == 0, undone.stderr
    assert "restored" in undone.stdout
    assert path.read_text() == edit(original)


async def test_an_edit_made_after_routing_survives_unrouting(home, lockgate_dirs, os_keyring):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    path, original = files["cursor"]
    assert lockgate(env, "clients", "route", "cursor").returncode == 0
    routed = path.read_text()

    def edit(text: str) -> str:  # the person adds a setting and a server of their own
        return text.replace(
            '{\n    "mcpServers": {\n',
            '{\n    "theme": "dark",\n    "mcpServers": {\n    "mine": {"command": "my-server"},\n',
            1,
        )

    path.write_text(edit(routed))
    undone = lockgate(env, "clients", "unroute", "cursor")
    assert undone.returncode == 0, undone.stderr
    assert "byte for byte" not in undone.stdout
    assert path.read_text() == edit(original)

    # An entry the person changed after routing stays as they left it.
    assert lockgate(env, "clients", "route", "cursor").returncode == 0
    doc = json.loads(path.read_text())
    doc["mcpServers"]["time"]["args"].append("--mine")
    path.write_text(json.dumps(doc, indent=4))
    undone = lockgate(env, "clients", "unroute", "cursor")
    assert undone.returncode == 0, undone.stderr
    assert "left     time: changed since it was routed" in undone.stdout
    after = json.loads(path.read_text())["mcpServers"]
    assert after["time"]["args"][-1] == "--mine"
    assert after["everything"]["env"] == {"EVERYTHING_API_KEY": SECRET}


async def test_routing_twice_changes_nothing_the_second_time(home, lockgate_dirs, os_keyring):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    path, original = files["claude-desktop"]
    assert lockgate(env, "clients", "route", "claude-desktop").returncode == 0
    routed = path.read_bytes()
    servers = (lockgate_dirs[0] / "servers.json").read_bytes()
    again = lockgate(env, "clients", "route", "claude-desktop")
    assert again.returncode == 0, again.stderr
    assert "time: already goes through Lockgate" in again.stdout
    assert path.read_bytes() == routed
    assert (lockgate_dirs[0] / "servers.json").read_bytes() == servers
    assert lockgate(env, "clients", "unroute", "claude-desktop").returncode == 0
    assert path.read_bytes() == original.encode()
    nothing = lockgate(env, "clients", "unroute", "claude-desktop")
    assert nothing.returncode == 1
    assert "has not routed this file" in nothing.stderr


async def test_an_existing_servers_json_keeps_its_text_and_a_name_clash_gets_a_new_name(
    home, lockgate_dirs, os_keyring
):
    home_dir, _files = home
    env = env_for(home_dir, lockgate_dirs)
    servers_file = lockgate_dirs[0] / "servers.json"
    servers_file.parent.mkdir(parents=True, exist_ok=True)
    mine = '{\n  "mcpServers": {\n    "time": {"command": "something-else"}\n  },\n  "note": 1\n}\n'
    servers_file.write_text(mine)
    assert lockgate(env, "clients", "route", "cursor").returncode == 0
    text = servers_file.read_text()
    assert text.startswith('{\n  "mcpServers": {\n    "time": {"command": "something-else"},\n')
    assert text.endswith('  },\n  "note": 1\n}\n')
    servers = json.loads(text)["mcpServers"]
    assert sorted(servers) == ["everything", "time", "time-cursor"]
    assert servers["time-cursor"] == {"command": TIME}


@pytest.mark.parametrize("problem", ["broken", "read-only", "no-keyring"])
def test_a_file_that_cannot_be_routed_is_reported_and_left_whole(
    home, lockgate_dirs, os_keyring, problem
):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    path, original = files["cursor"]
    if problem == "broken":
        original = original.replace('"time":', '"time"', 1)
        path.write_text(original)
    elif problem == "read-only":
        path.chmod(0o444)
    else:  # no D-Bus session: the keyring cannot store the secrets
        env["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=/nonexistent"
    result = lockgate(env, "clients", "route", "cursor")
    assert result.returncode == 1
    assert result.stderr.startswith("lockgate: Nothing changed: ")
    assert {
        "broken": "not valid JSON",
        "read-only": "the file is read-only",
        "no-keyring": "the OS keyring cannot be used",
    }[problem] in result.stderr
    told = result.stderr.lower()
    assert told.count("nothing changed") + told.count("not changed") == 1  # in the title only
    assert str(path) in result.stderr or problem == "no-keyring"
    assert path.read_bytes() == original.encode()
    assert not (lockgate_dirs[0] / "servers.json").exists()
    assert not (lockgate_dirs[1] / "routes").exists() or not any(
        (lockgate_dirs[1] / "routes").iterdir()
    )


def test_a_missing_client_is_a_clear_error(tmp_path, lockgate_dirs):
    env = env_for(tmp_path / "empty-home", lockgate_dirs)
    result = lockgate(env, "clients", "route", "windsurf")
    assert result.returncode == 1
    assert "no configuration of windsurf found" in result.stderr


def test_http_routing_points_at_the_running_gateways_port_else_the_port_setting(
    home, lockgate_dirs, os_keyring, tmp_path
):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    config, data = lockgate_dirs
    config.mkdir()
    data.mkdir()
    path = files["cursor"][0]
    assert lockgate(env, "settings", "port", "6123").returncode == 0
    assert lockgate(env, "clients", "route", "cursor", "--via", "http").returncode == 0
    assert json.loads(path.read_text())["mcpServers"]["time"]["url"].startswith(
        "http://127.0.0.1:6123/mcp/"
    )
    assert lockgate(env, "clients", "unroute", "cursor").returncode == 0
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    gateway.start()  # on a free port for this run: not the setting
    try:
        assert gateway.port != 6123
        assert lockgate(env, "clients", "route", "cursor", "--via", "http").returncode == 0
        url = json.loads(path.read_text())["mcpServers"]["time"]["url"]
        assert url == f"http://127.0.0.1:{gateway.port}/mcp/time"
    finally:
        gateway.stop()


async def test_route_over_http_with_a_token_of_the_clients_own(
    home, lockgate_dirs, os_keyring, tmp_path
):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    config, data = lockgate_dirs
    config.mkdir()
    data.mkdir()
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    gateway.write_policy(LET_THE_KEY_THROUGH)
    gateway.start()  # before routing: the running gateway takes the new servers at once
    try:
        refused = lockgate(env, "clients", "route", "claude-desktop", "--via", "http")
        assert refused.returncode == 1
        assert "Claude Desktop starts its servers as commands only" in refused.stderr
        done = lockgate(
            env, "clients", "route", "cursor", "--via", "http", "--port", str(gateway.port)
        )
        assert done.returncode == 0, done.stderr
        routed = entries("cursor", files["cursor"][0])
        assert routed["time"]["url"] == f"http://127.0.0.1:{gateway.port}/mcp/time"
        token = routed["time"]["headers"]["Authorization"].removeprefix("Bearer ")
        assert routed["everything"]["headers"]["Authorization"] == f"Bearer {token}"
        text = await call_through(routed["time"], "get_current_time", {"timezone": "UTC"})
        assert '"timezone": "UTC"' in text
        assert SECRET in await call_through(routed["everything"], "get-env", {})
        assert {r["client"] for r in _audit(gateway)} == {"cursor@user"}
        listed = gateway.lockgate("token", "list").stdout
        assert "cursor@user" in listed

        undone = lockgate(env, "clients", "unroute", "cursor")
        assert undone.returncode == 0, undone.stderr
        assert "revoked the token of cursor@user" in undone.stdout
        assert files["cursor"][0].read_bytes() == files["cursor"][1].encode()
        assert "cursor@user" not in gateway.lockgate("token", "list").stdout
    finally:
        gateway.stop()


SETTINGS = """{
    // the person's own settings, with comments
    "editor.fontSize": 14,
    "mcp": {
        "servers": {
            "time": {"type": "stdio", "command": "TIME"},
        },
    },
    "workbench.colorTheme": "Default Dark Modern",
}
""".replace("TIME", TIME)


def test_vscode_settings_json_and_profiles_are_found_and_routed(
    tmp_path, lockgate_dirs, os_keyring
):
    home = tmp_path / "home"
    user = home / ".config" / "Code" / "User"
    (user / "profiles" / "6a2f1b").mkdir(parents=True)
    (user / "settings.json").write_text(SETTINGS)
    profile = user / "profiles" / "6a2f1b" / "mcp.json"
    profile_text = json.dumps({"servers": {"clock": {"command": TIME}}}) + "\n"
    profile.write_text(profile_text)
    env = env_for(home, lockgate_dirs)
    listing = {
        (f["scope"], s["name"]): s["through_lockgate"]
        for f in json.loads(lockgate(env, "clients", "--json").stdout)
        for s in f["servers"]
    }
    assert listing == {("settings", "time"): False, ("profile 6a2f1b", "clock"): False}

    done = lockgate(env, "clients", "route", "vscode")
    assert done.returncode == 0, done.stderr
    settings = (user / "settings.json").read_text()
    assert settings.startswith(
        '{\n    // the person\'s own settings, with comments\n    "editor.fontSize": 14,'
    )
    assert settings.endswith('"workbench.colorTheme": "Default Dark Modern",\n}\n')
    routed = _jsonc.loads(settings)["mcp"]["servers"]["time"]
    assert routed["args"][:2] == ["connect", "time"]
    assert _jsonc.loads(profile.read_text())["servers"]["clock"]["args"][:2] == ["connect", "clock"]

    assert lockgate(env, "clients", "unroute", "vscode").returncode == 0
    assert (user / "settings.json").read_text() == SETTINGS
    assert profile.read_text() == profile_text


def test_settings_json_without_mcp_servers_is_not_a_client_file(tmp_path, lockgate_dirs):
    home = tmp_path / "home"
    (home / ".config" / "Code" / "User").mkdir(parents=True)
    (home / ".config" / "Code" / "User" / "settings.json").write_text('{"editor.fontSize": 14}')
    env = env_for(home, lockgate_dirs)
    assert json.loads(lockgate(env, "clients", "--json").stdout) == []


def test_the_running_gateway_reloads_servers_json_and_keeps_the_last_good_one(
    lockgate_dirs, tmp_path
):
    from proxy.bridge.control import ControlError, control
    from proxy.config.paths import Paths

    config, data = lockgate_dirs
    config.mkdir()
    data.mkdir()
    servers = config / "servers.json"
    servers.write_text(json.dumps({"mcpServers": {"time": {"command": TIME}}}))
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    gateway.start()
    paths = Paths(config, data)
    try:
        # A hand edit is picked up by the gateway's watcher, as policy.json is.
        servers.write_text(
            json.dumps({"mcpServers": {"time": {"command": TIME}, "clock": {"command": TIME}}})
        )
        eventually_sync(
            lambda: control(paths, "status")["servers"] == ["clock", "time"],
            "the reload",
            timeout=10,
        )
        assert control(paths, "reload-servers")["servers"] == ["clock", "time"]
        servers.write_text('{"mcpServers": {"bad name!": {}}}')
        with pytest.raises(ControlError, match=r"servers\.json:1:30: .*a server name is"):
            control(paths, "reload-servers")
        assert control(paths, "status")["servers"] == ["clock", "time"]
        # the watcher keeps them too: another broken file, that only the watcher reads
        servers.write_text('{"mcpServers": {"worse name!": {}}}')
        eventually_sync(
            lambda: '"worse name!": a server name is' in gateway.serve_log(),
            "the watcher to read the broken file",
            timeout=10,
        )
        assert control(paths, "status")["servers"] == ["clock", "time"]
        assert "servers.json not applied, the servers in force stay" in gateway.serve_log()
    finally:
        gateway.stop()


def test_an_entry_put_back_by_hand_and_routed_again_unroutes_to_the_original(
    home, lockgate_dirs, os_keyring
):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    path, original = files["cursor"]
    assert lockgate(env, "clients", "route", "cursor").returncode == 0
    path.write_text(original)  # e.g. `git checkout` of a dotfile
    assert lockgate(env, "clients", "route", "cursor").returncode == 0
    undone = lockgate(env, "clients", "unroute", "cursor")
    assert undone.returncode == 0, undone.stderr
    assert path.read_text() == original


def test_nothing_but_a_hash_of_the_file_is_kept_beyond_the_routed_entries(
    tmp_path, lockgate_dirs, os_keyring
):
    home = tmp_path / "home"
    path = home / ".cursor" / "mcp.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "someOtherSetting": {"apiKey": "sk-OTHER-SETTING"},
                "mcpServers": {
                    "time": {"command": TIME},
                    "project": {
                        "command": "npx",
                        "args": ["${workspaceFolder}"],
                        "env": {"TOKEN": "sk-SKIPPED-ENTRY"},
                    },
                },
            }
        )
    )
    env = env_for(home, lockgate_dirs)
    done = lockgate(env, "clients", "route", "cursor")
    assert done.returncode == 0, done.stderr
    assert "left     project: uses ${workspaceFolder}" in done.stdout
    written = every_file_under(*lockgate_dirs)
    assert b"sk-OTHER-SETTING" not in written
    assert b"sk-SKIPPED-ENTRY" not in written


def test_a_key_twice_in_a_server_table_is_refused(tmp_path, lockgate_dirs, os_keyring):
    home = tmp_path / "home"
    path = home / ".cursor" / "mcp.json"
    path.parent.mkdir(parents=True)
    text = (
        '{"mcpServers": {"gh": {"command": "a", "env": {"TOKEN": "old"}},\n'
        '                "gh": {"command": "b", "env": {"TOKEN": "new"}}}}\n'
    )
    path.write_text(text)
    result = lockgate(env_for(home, lockgate_dirs), "clients", "route", "cursor")
    assert result.returncode == 1
    assert f"{path}:2:17: 'gh' appears twice here" in result.stderr
    assert path.read_text() == text


def test_an_entry_with_a_keyring_value_in_args_is_left_alone(tmp_path, lockgate_dirs, os_keyring):
    """servers.json refuses keyring: in args (a command line is public), so routing must
    not copy such an entry there: it is left in the client's file, with the reason."""
    home = tmp_path / "home"
    path = home / ".cursor" / "mcp.json"
    path.parent.mkdir(parents=True)
    text = '{"mcpServers": {"gh": {"command": "a", "args": ["--key", "keyring:gh"]}}}\n'
    path.write_text(text)
    result = lockgate(env_for(home, lockgate_dirs), "clients", "route", "cursor")
    assert 'gh: passes a "keyring:" value in "args"' in result.stdout + result.stderr
    assert path.read_text() == text
    servers = lockgate_dirs[0] / "servers.json"
    assert not servers.exists() or "keyring:gh" not in servers.read_text()


def test_routes_at_once_keep_every_server(tmp_path, lockgate_dirs, os_keyring):
    # The app routes on two worker threads; servers.json must get both clients' servers.
    import threading

    from proxy.clients import CLIENTS, read_file
    from proxy.clients.route import route
    from proxy.config.paths import Paths
    from proxy.config.secrets import SecretStore

    config, data = lockgate_dirs
    paths, store = Paths(config, data), SecretStore(os_keyring)
    cursor = next(c for c in CLIENTS if c.name == "cursor")
    found = []
    for name in ("alpha", "beta", "gamma", "delta"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"mcpServers": {name: {"command": TIME}}}))
        found.append(read_file(cursor, "user", path))
    threads = [
        threading.Thread(
            target=route, args=(f, paths), kwargs={"store": store, "launcher": ["/bin/lockgate"]}
        )
        for f in found
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    servers = json.loads(paths.servers_file.read_text())["mcpServers"]
    assert sorted(servers) == ["alpha", "beta", "delta", "gamma"]


async def test_http_edits_to_the_clients_own_settings_survive_and_the_token_stays(
    home, lockgate_dirs, os_keyring
):
    home_dir, files = home
    env = env_for(home_dir, lockgate_dirs)
    path = files["cursor"][0]
    assert lockgate(env, "clients", "route", "cursor", "--via", "http").returncode == 0
    doc = json.loads(path.read_text())
    token = doc["mcpServers"]["time"]["headers"]["Authorization"]
    doc["mcpServers"]["time"]["disabled"] = True  # Cursor's own toggle
    doc["mcpServers"]["everything"]["url"] += "-moved"  # the person changed where it goes
    path.write_text(json.dumps(doc, indent=4))
    undone = lockgate(env, "clients", "unroute", "cursor")
    assert undone.returncode == 0, undone.stderr
    assert "restored time (with your later changes to its settings)" in undone.stdout
    assert "left     everything: changed since it was routed" in undone.stdout
    assert "revoked" not in undone.stdout  # "everything" still uses the token
    after = json.loads(path.read_text())["mcpServers"]
    assert after["time"] == {"command": TIME, "disabled": True}
    # Routed again: the token the kept entry carries stays valid.
    assert lockgate(env, "clients", "route", "cursor", "--via", "http").returncode == 0
    assert json.loads(path.read_text())["mcpServers"]["time"]["headers"]["Authorization"] == token
    # The entry left as edited is still in the record, with its original, beside the one
    # routed again.
    [record_file] = [  # beside imported.json, the registry of what routing added
        f for f in (lockgate_dirs[1] / "routes").iterdir() if f.name != "imported.json"
    ]
    record = json.loads(record_file.read_text())
    assert sorted(e["path"][1] for e in record["entries"]) == ["everything", "time"]


def test_a_projects_file_is_never_given_a_token(tmp_path, lockgate_dirs, os_keyring):
    project = tmp_path / "shop"
    (project / ".cursor").mkdir(parents=True)
    (project / ".cursor" / "mcp.json").write_text(
        json.dumps({"mcpServers": {"t": {"command": TIME}}})
    )
    env = env_for(tmp_path / "home", lockgate_dirs)
    result = lockgate(env, "clients", "route", "cursor", "--project", str(project), "--via", "http")
    assert result.returncode == 1
    assert "a token must not be: use stdio" in result.stderr


@pytest.mark.parametrize("servers_before", [None, {"mcpServers": {"mine": {"command": "x"}}}])
def test_a_client_file_that_cannot_be_written_takes_everything_back(
    tmp_path, lockgate_dirs, os_keyring, monkeypatch, servers_before
):
    # A double for the one thing that cannot be made to happen here on cue: the write of
    # the client's file failing after servers.json was written (a full disk, say).
    from proxy.clients import CLIENTS, read_file
    from proxy.clients import route as routing
    from proxy.config.paths import Paths
    from proxy.config.secrets import SecretStore
    from proxy.config.tokens import TokenStore

    def disk_full(doc, shown, text):
        raise routing.RouteError(f"{shown}: cannot write it: No space left on device")

    monkeypatch.setattr(routing, "write_client_file", disk_full)
    config, data = lockgate_dirs
    paths = Paths(config, data)
    if servers_before is not None:
        config.mkdir(parents=True)
        paths.servers_file.write_text(json.dumps(servers_before))
    path = tmp_path / "mcp.json"
    original = json.dumps({"mcpServers": {"time": {"command": TIME}}})
    path.write_text(original)
    cursor = read_file(next(c for c in CLIENTS if c.name == "cursor"), "user", path)
    with pytest.raises(routing.RouteError, match="No space left on device"):
        routing.route(
            cursor, paths, store=SecretStore(os_keyring), via="http", launcher=["/x/lockgate"]
        )
    assert path.read_text() == original
    if servers_before is None:
        assert not paths.servers_file.exists()
    else:
        assert json.loads(paths.servers_file.read_text()) == servers_before
    assert TokenStore(paths.clients_file).clients() == []
    assert not (data / "routes").exists() or not any((data / "routes").iterdir())


async def test_a_projects_file_names_lockgate_as_others_would_find_it(
    tmp_path, lockgate_dirs, os_keyring
):
    # A project's .mcp.json is often committed: it gets `lockgate`, found on PATH, when
    # that is the command routing would write; otherwise the path, and a note that says so.
    project = tmp_path / "shop"
    project.mkdir()
    mcp = project / ".mcp.json"
    original = json.dumps({"mcpServers": {"clock": {"command": TIME}}}, indent=2)
    mcp.write_text(original)
    env = env_for(tmp_path / "home", lockgate_dirs)
    bare_path = "/usr/local/bin:/usr/bin:/bin"

    elsewhere = lockgate(
        {**env, "PATH": bare_path}, "clients", "route", "claude-code", "--project", str(project)
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "note: the entries name /" in elsewhere.stdout
    assert json.loads(mcp.read_text())["mcpServers"]["clock"]["command"] == lockgate_command()
    assert (
        lockgate(env, "clients", "unroute", "claude-code", "--project", str(project)).returncode
        == 0
    )
    assert mcp.read_text() == original

    on_path = {**env, "PATH": f"{BIN}:{bare_path}"}
    done = lockgate(on_path, "clients", "route", "claude-code", "--project", str(project))
    assert done.returncode == 0, done.stderr
    assert "note:" not in done.stdout
    entry = json.loads(mcp.read_text())["mcpServers"]["clock"]
    assert entry["command"] == "lockgate"
    config, data = lockgate_dirs
    gateway = LiveGateway(config, data, tmp_path / "tee.jsonl")
    gateway.write_policy({"version": "1", "default": "allow"})
    gateway.start()
    try:  # launched as Claude Code would, with the person's PATH
        entry["env"] = {"PATH": on_path["PATH"]}
        text = await call_through(entry, "get_current_time", {"timezone": "UTC"})
        assert '"timezone": "UTC"' in text
    finally:
        gateway.stop()


def test_a_shared_server_goes_only_with_the_last_client_and_never_one_edited_or_your_own(
    tmp_path, lockgate_dirs, os_keyring
):
    home = tmp_path / "home"
    (home / ".cursor").mkdir(parents=True)
    same = {"command": TIME, "env": {"TZ": "Europe/Paris"}}
    (home / ".cursor" / "mcp.json").write_text(
        json.dumps({"mcpServers": {"time": same, "mine-too": {"command": "mine"}}})
    )
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"time": same}}))
    config, _data = lockgate_dirs
    config.mkdir()
    (config / "servers.json").write_text(
        json.dumps({"mcpServers": {"mine-too": {"command": "mine"}}})
    )
    env = env_for(home, lockgate_dirs)
    for client in ("cursor", "claude-code"):
        assert lockgate(env, "clients", "route", client).returncode == 0
    servers = lambda: json.loads((config / "servers.json").read_text())["mcpServers"]  # noqa: E731
    assert sorted(servers()) == ["mine-too", "time"]  # one "time" for both clients
    listed = lockgate(env, "secret", "list")
    assert listed.stdout == "time.env.TZ\tused by time\tstored\n"  # its name, never its value

    first = lockgate(env, "clients", "unroute", "cursor")
    assert first.returncode == 0, first.stderr
    assert "removed from servers.json" not in first.stdout  # Claude Code still uses it
    assert sorted(servers()) == ["mine-too", "time"]  # and "mine-too" was yours already
    assert os_keyring.get_password("lockgate", "time.env.TZ") == "Europe/Paris"

    last = lockgate(env, "clients", "unroute", "claude-code")
    assert last.returncode == 0, last.stderr
    assert "removed from servers.json (no client uses them): time" in last.stdout
    assert "removed from the keyring: time.env.TZ" in last.stdout
    assert sorted(servers()) == ["mine-too"]
    assert os_keyring.get_password("lockgate", "time.env.TZ") is None

    # Routed again, then edited by hand in servers.json: unrouting leaves it as edited.
    assert lockgate(env, "clients", "route", "claude-code").returncode == 0
    edited = servers()
    edited["time"]["args"] = ["--local-timezone", "UTC"]
    (config / "servers.json").write_text(json.dumps({"mcpServers": edited}))
    kept = lockgate(env, "clients", "unroute", "claude-code")
    assert "kept server 'time': it was changed in servers.json since" in kept.stdout
    assert servers()["time"]["args"] == ["--local-timezone", "UTC"]


def test_a_remote_entry_without_a_header_is_flagged_for_sign_in(
    tmp_path, lockgate_dirs, os_keyring
):
    home_dir = tmp_path / "home"
    path = home_dir / ".cursor" / "mcp.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "tracker": {"url": "https://tracker.example/mcp"},
                    "keyed": {
                        "url": "https://keyed.example/mcp",
                        "headers": {"Authorization": "Bearer sk-route-77"},
                    },
                }
            }
        )
    )
    result = lockgate(env_for(home_dir, lockgate_dirs), "clients", "route", "cursor")
    assert result.returncode == 0, result.stderr
    assert "sign in: tracker is a remote server" in result.stdout
    assert "lockgate auth login tracker" in result.stdout
    assert "sign in: keyed" not in result.stdout  # its header is its credential
