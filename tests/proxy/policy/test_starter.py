"""`lockgate init`: a starting policy from the real servers' tools (server-everything from
npm, mcp-server-time from PyPI), shown before it is written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from proxy.policy.model import load_policy
from tests.support.live import BIN, EVERYTHING_JS, lockgate_command


def setup(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config"
    config.mkdir()
    servers = {
        "everything": {"command": "node", "args": [str(EVERYTHING_JS), "stdio"]},
        "time": {"command": str(BIN / "mcp-server-time")},
        "broken": {"command": str(tmp_path / "no-such-server")},
    }
    (config / "servers.json").write_text(json.dumps({"mcpServers": servers}))
    return {
        "LOCKGATE_CONFIG_DIR": str(config),
        "LOCKGATE_DATA_DIR": str(tmp_path / "data"),
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
    }


def init(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [lockgate_command(), "init", *args],
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_init_shows_the_policy_and_writes_it_only_when_told(tmp_path):
    env = setup(tmp_path)
    policy_file = tmp_path / "config" / "policy.json"
    shown = init(env)
    assert shown.returncode == 0, shown.stderr
    assert "Not written: run `lockgate init --yes`" in shown.stdout
    assert not policy_file.exists()
    assert "allow  time/get_current_time" in shown.stdout
    assert "broken: could not list its tools" in shown.stdout

    written = init(env, "--yes")
    assert written.returncode == 0, written.stderr
    policy = load_policy(policy_file)  # the real loader accepts it
    document = json.loads(policy_file.read_text())
    rules = document["tools"]
    assert document["default"] == "ask"
    assert rules["time/get_current_time"]["action"] == "allow"
    assert rules["time/convert_time"]["action"] == "allow"
    everything = {k: v for k, v in rules.items() if k.startswith("everything/")}
    assert len(everything) >= 5
    for rule in rules.values():  # read -> allow; write, network, execute, destructive -> ask
        category = rule["description"].split(",")[0]
        reveals = "may reveal secrets" in rule["description"]
        assert rule["action"] == ("allow" if category == "read" and not reveals else "ask"), rule
    # server-everything's get-env says it is read-only, and returns the environment
    assert rules["everything/get-env"]["action"] == "ask"
    assert "may reveal secrets" in rules["everything/get-env"]["description"]
    assert {r["action"] for r in everything.values()} == {"allow", "ask"}
    assert not any(k.startswith("broken/") for k in rules)  # its tools fall to the default
    assert len(policy.rules) == len(rules)
    logs = sorted((tmp_path / "data" / "logs").glob("server-*.log"))  # the servers' stderr
    assert [p.name for p in logs] == [
        "server-broken.log",
        "server-everything.log",
        "server-time.log",
    ]
    assert {p.stat().st_mode & 0o777 for p in logs} == {0o600}


def test_init_never_overwrites_a_policy(tmp_path):
    env = setup(tmp_path)
    policy_file = tmp_path / "config" / "policy.json"
    policy_file.write_text('{"version": "1", "default": "deny"}\n')
    again = init(env, "--yes")
    assert again.returncode == 1
    assert "already exists; nothing written" in again.stdout
    assert policy_file.read_text() == '{"version": "1", "default": "deny"}\n'
