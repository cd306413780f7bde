"""A client's remote server that signs in with OAuth, routed through Lockgate from the
Connect tab and signed in to by clicking, on a real X server (Xvfb) with a tray (trayer):
the agent is told to sign in until someone does, the tray says so, one click and the
browser's Allow make its calls go through, and a restart of the app does not ask again.

Nothing is a double: the app runs in a subprocess on that display (_signin_probe.py), the
server is tests/servers/oauth_server.py (an authorization server built with the SDK's own
auth modules and the MCP server it protects), the keyring is GNOME Keyring on a private
bus, the agent is the MCP SDK's client launching what Cursor's file now says, and the
"browser" is QDesktopServices' URL handler following the sign-in page as a browser would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.config.secrets import SecretStore
from tests.desktop.conftest import run_probe, start_trayer
from tests.support.live import lockgate_command

PROBE = Path(__file__).with_name("_signin_probe.py")

pytestmark = pytest.mark.slow


def test_route_a_remote_server_sign_in_from_the_connect_tab_and_keep_it_across_a_restart(
    display, tmp_path, os_keyring, oauth_server
):
    config, data, home, shots = (tmp_path / n for n in ("config", "data", "home", "shots"))
    for folder in (config, home / ".cursor", shots):
        folder.mkdir(parents=True)
    (config / "policy.json").write_text(json.dumps({"version": "1", "default": "allow"}))
    cursor = home / ".cursor" / "mcp.json"
    cursor.write_text(json.dumps({"mcpServers": {"tracker": {"url": oauth_server.mcp_url}}}))
    args = [str(config), str(data), str(home), lockgate_command(), str(shots)]
    trayer = start_trayer(display)
    try:
        out = run_probe(PROBE, args, display)
    finally:
        trayer.terminate()
        trayer.wait(10)
    facts = dict(line.split(": ", 1) for line in out if ": " in line)
    menu = [line for line in out if line.startswith("tray menu: ")]

    # routed: Cursor now launches the bridge; servers.json has the server, no credentials
    assert facts["routed"].startswith("connect tracker --client cursor")
    imported = json.loads((config / "servers.json").read_text())["mcpServers"]["tracker"]
    assert imported == {"url": oauth_server.mcp_url}
    assert facts["offered"] == "Sign in to tracker…"
    # before the sign-in: the agent is told what to do, the tray says it and offers it
    assert "needs sign-in" in facts["before"]
    assert "lockgate auth login tracker" in facts["before"]
    assert "sign in to tracker" in facts["tray"]
    assert menu == ["tray menu: Sign in to tracker…"]
    assert facts["icon"] == "lockgate-attention.svg"
    # one click, the browser's Allow, and the calls go through
    assert facts["browser"] == "[200]"
    assert facts["button"] == "Signed in to tracker"
    assert facts["after"] == "Echo: hi"
    assert "sign in" not in facts["tray after"]
    assert facts["tray menu after"] == "[]"
    # after a restart of the app: the sign-in from the keyring, no browser again
    assert facts["restarted"] == "Echo: again"
    stats = oauth_server.stats()
    assert stats["authorizations"] == 1
    assert stats["registrations"] == 1
    for name in ("connect-needs-sign-in.png", "connect-signed-in.png"):
        assert (shots / name).stat().st_size > 10_000

    # the tokens are in the keyring, in no file Lockgate or the client has
    stored = SecretStore(os_keyring).find("tracker.oauth.tokens")
    assert stored is not None
    access = json.loads(stored)["access_token"]
    for file in tmp_path.rglob("*"):
        if file.is_file() and file.suffix != ".png":
            assert access.encode() not in file.read_bytes(), file
