"""Finding the MCP clients on a machine: a fake home per OS with real-format config files
(tests/support/clients_fixtures), read as `lockgate clients` reads them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.clients import _jsonc, find_clients

FIXTURES = Path(__file__).resolve().parents[2] / "support" / "clients_fixtures"


def fake_home(root: Path, system: str) -> Path:
    home = root / "home"
    if system == "darwin":
        desktop = home / "Library/Application Support/Claude"
        vscode = home / "Library/Application Support/Code/User"
    elif system == "win32":
        desktop = home / "AppData/Roaming/Claude"
        vscode = home / "AppData/Roaming/Code/User"
    else:
        desktop = home / ".config/Claude"
        vscode = home / ".config/Code/User"
    for folder in (desktop, vscode, home / ".cursor", home / ".codeium/windsurf"):
        folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "claude_desktop_config.json", desktop / "claude_desktop_config.json")
    shutil.copy(FIXTURES / "mcp.json.vscode", vscode / "mcp.json")
    shutil.copy(FIXTURES / "claude.json", home / ".claude.json")
    shutil.copy(FIXTURES / "mcp.json.cursor", home / ".cursor/mcp.json")
    shutil.copy(FIXTURES / "mcp_config.json", home / ".codeium/windsurf/mcp_config.json")
    return home


def summary(home: Path, system: str, project: Path | None = None) -> dict[str, object]:
    found = find_clients(home, system=system, environ={}, project=project)
    return {
        f"{f.client.name}/{f.scope}": f.error
        or {s.name: (s.transport, s.through_lockgate) for s in f.servers}
        for f in found
    }


@pytest.mark.parametrize("system", ["linux", "darwin", "win32"])
def test_every_client_is_found_where_its_os_keeps_it(tmp_path, system):
    home = fake_home(tmp_path, system)
    assert summary(home, system) == {
        "claude-desktop/user": {
            "filesystem": ("stdio", False),
            "github": ("stdio", False),
            "time": ("stdio", True),
        },
        "vscode/user": {"Perplexity": ("stdio", False), "fetch": ("http", True)},
        "claude-code/user": {
            "sentry": ("http", False),
            "airtable": ("stdio", False),
            "db": ("stdio", True),  # per project, in ~/.claude.json
        },
        "cursor/user": {"linear": ("http", False), "local-gateway": ("http", True)},
        "windsurf/user": {"figma": ("http", False), "git": ("stdio", False)},
    }


def test_project_files_are_read_when_asked(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "shop"
    (project / ".cursor").mkdir(parents=True)
    (project / ".vscode").mkdir()
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"a": {"command": "x"}}}))
    shutil.copy(FIXTURES / "mcp.json.cursor", project / ".cursor/mcp.json")
    shutil.copy(FIXTURES / "mcp.json.vscode", project / ".vscode/mcp.json")
    assert summary(home, "linux") == {}
    assert list(summary(home, "linux", project)) == [
        "claude-code/project",
        "cursor/project",
        "vscode/project",
    ]


def test_no_secret_value_is_kept_only_the_names(tmp_path):
    home = fake_home(tmp_path, "linux")
    github = next(
        s
        for f in find_clients(home, system="linux", environ={})
        for s in f.servers
        if s.name == "github"
    )
    assert github.env_names == ("GITHUB_PERSONAL_ACCESS_TOKEN",)
    assert "ghp_" not in repr(github)


def test_a_broken_or_unreadable_file_is_reported_not_fatal(tmp_path):
    home = tmp_path / "home"
    (home / ".cursor").mkdir(parents=True)
    (home / ".cursor/mcp.json").write_text('{"mcpServers": {"a": ')
    (home / ".claude.json").write_text("[1, 2]")
    errors = summary(home, "linux")
    assert str(errors["cursor/user"]).startswith("not valid JSON: ")
    assert "line 1" in str(errors["cursor/user"])
    assert errors["claude-code/user"] == "not a JSON object"


def test_jsonc_keeps_offsets_and_strings():
    text = '{"a": "// not a comment", /* x */ "b": [1, 2,], // end\n}'
    assert _jsonc.loads(text) == {"a": "// not a comment", "b": [1, 2]}
    assert len(_jsonc.strip(text)) == len(text)
    with pytest.raises(json.JSONDecodeError) as caught:
        _jsonc.loads('{\n  // one\n  "a": 1\n  "b": 2\n}')
    assert caught.value.lineno == 4


def test_lockgate_clients_lists_them(tmp_path):
    home = fake_home(tmp_path, "linux")
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    lockgate = [str(Path(sys.executable).parent / "lockgate")]
    shown = subprocess.run(
        [*lockgate, "clients"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert f"Claude Desktop (user): {home}/.config/Claude/claude_desktop_config.json" in shown
    assert any(line.split()[:3] == ["time", "through", "Lockgate"] for line in shown.splitlines())
    assert "ghp_" not in shown
    listed = json.loads(
        subprocess.run(
            [*lockgate, "clients", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert {c["client"] for c in listed} == {
        "claude-desktop",
        "claude-code",
        "cursor",
        "vscode",
        "windsurf",
    }
