"""``lockgate auth login|status|logout``, as a person uses them: the command in a
subprocess, its output read as it comes; the "browser" is this test, following the
address the command printed, as a person's browser does when they click Allow.

Nothing is a double: the gateway is a real ``lockgate serve``, the remote server is
tests/servers/oauth_server.py (an authorization server and the MCP server it protects),
the keyring is GNOME Keyring on a private D-Bus, and the command's own attempt to open a
browser goes to a ``$BROWSER`` of the test's that writes down the address it was given.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keyring.backend import KeyringBackend
from mcp import Client

from proxy.config.secrets import SecretStore
from tests.support.live import BIN, LiveGateway, lockgate_command
from tests.support.oauth import OAuthServer, callback_port, follow_authorization, listening
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.slow

ASKS = "Open this address in your browser to sign in to docs:"
SIGN_IN_MESSAGE = (
    "server 'docs' needs sign-in: it was signed out of in Lockgate. A person can sign in "
    "from Lockgate's Servers tab or run: lockgate auth login docs"
)


@pytest.fixture
def gateway(
    tmp_path: Path, oauth_server: OAuthServer, keyring_for_docs: KeyringBackend
) -> Iterator[LiveGateway]:
    """Lockgate's folders with a remote server that asks for a sign-in (``docs``), one
    that signs in its own way and a command server; its ``lockgate serve`` is started by
    the test (or not)."""
    config, data = tmp_path / "live-config", tmp_path / "live-data"
    config.mkdir()
    data.mkdir()
    live = LiveGateway(config, data, tmp_path / "unused-tee.jsonl")
    servers = {
        "docs": {"url": oauth_server.mcp_url},
        "own-auth": {"url": oauth_server.mcp_url, "headers": {"Authorization": "Bearer its-own"}},
        "clock": {"command": str(BIN / "mcp-server-time")},
        "resting": {"url": oauth_server.mcp_url, "disabled": True},
    }
    (config / "servers.json").write_text(json.dumps({"mcpServers": servers}))
    live.write_policy({"version": "1", "default": "allow"})
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def browser(tmp_path: Path) -> tuple[str, Path]:
    """A ``$BROWSER`` command that writes down each address it is asked to open (and
    opens nothing), and the file it writes to."""
    opened = tmp_path / "browser-opened.txt"
    command = tmp_path / "test-browser"
    command.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"with open({str(opened)!r}, 'a') as f:\n    f.write(sys.argv[1] + '\\n')\n"
    )
    command.chmod(0o755)
    return str(command), opened


class Command:
    """``lockgate ARGS`` running in a subprocess, its output collected as it comes."""

    def __init__(self, live: LiveGateway, *args: str, browser: str) -> None:
        # Ctrl-C as a terminal gives it: a run started in the background by a
        # non-interactive shell (a CI script's `&`) ignores SIGINT, and children inherit
        # an ignored signal, so the command would never hear it; a handled one is reset
        # to its default in the child
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.proc = subprocess.Popen(
                [lockgate_command(), *args],
                env={**live.env, "BROWSER": browser},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            signal.signal(signal.SIGINT, previous)
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._collect, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._collect, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def authorization_url(self) -> str:
        """The address the command asked the person to open, once it has printed it."""

        def printed() -> str | None:
            lines = [line.rstrip("\n") for line in self.out]
            if ASKS in lines and len(lines) > lines.index(ASKS) + 1:
                return lines[lines.index(ASKS) + 1]
            if self.proc.poll() is not None and not self._readers[0].is_alive():
                raise AssertionError(f"it exited without an address: {self.text()}")
            return None

        line = eventually_sync(printed, "the command to print the address", timeout=60)
        assert line.startswith("  http://"), line
        return line.strip()

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def close(self) -> None:
        """Kill it if it still runs, and let go of its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def lockgate(live: LiveGateway, *args: str) -> subprocess.CompletedProcess[str]:
    return live.lockgate(*args, timeout=60)


def follow(url: str) -> None:
    """The person's browser, the person clicking Allow."""
    assert follow_authorization(url) == 200


def held_tokens(os_keyring: KeyringBackend) -> list[str]:
    stored = json.loads(SecretStore(os_keyring).find("docs.oauth.tokens") or "null")
    assert stored is not None, "no tokens in the keyring"
    return [stored["access_token"], stored["refresh_token"]]


async def echo(client: Client, message: str) -> tuple[bool, str]:
    result = await client.call_tool("echo", {"message": message})
    return result.is_error, "".join(getattr(block, "text", "") for block in result.content)


async def test_login_through_the_running_gateway_then_status_then_logout(
    gateway: LiveGateway,
    oauth_server: OAuthServer,
    keyring_for_docs: KeyringBackend,
    browser: tuple[str, Path],
) -> None:
    command, opened = browser
    gateway.start()
    login = Command(gateway, "auth", "login", "docs", browser=command)
    try:
        url = await asyncio.to_thread(login.authorization_url)
        await asyncio.to_thread(follow, url)
        assert await asyncio.to_thread(login.finish) == 0, login.text()
    finally:
        login.close()
    assert opened.read_text() == url + "\n"  # the browser was asked to open it, too
    assert "".join(login.out).endswith("Signed in to docs.\n")
    assert "Lockgate is not running" not in login.text()  # the gateway signed in

    async with gateway.client("docs") as agent:
        assert await echo(agent, "through Lockgate") == (False, "Echo: through Lockgate")

        shown = await asyncio.to_thread(lockgate, gateway, "auth", "status")
        assert shown.returncode == 0, shown.stderr
        (line,) = shown.stdout.splitlines()  # only the server Lockgate signs in to
        assert line.startswith("docs  signed in (its access token expires at ")
        listed = json.loads(
            (await asyncio.to_thread(lockgate, gateway, "auth", "status", "--json")).stdout
        )
        assert [(s["server"], s["state"]) for s in listed] == [("docs", "signed_in")]
        assert listed[0]["expires_at"] > time.time() + 3000  # the server's hour
        told = login.text() + shown.stdout + shown.stderr + json.dumps(listed)
        for token in held_tokens(keyring_for_docs):
            assert token not in told

        out = await asyncio.to_thread(lockgate, gateway, "auth", "logout", "docs")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "Signed out of docs.\n"
        shown = await asyncio.to_thread(lockgate, gateway, "auth", "status")
        assert shown.stdout == (
            "docs  needs sign-in: it was signed out of in Lockgate; run: lockgate auth login docs\n"
        )
        assert SecretStore(keyring_for_docs).find("docs.oauth.tokens") is None
        # the agent's open session is refused from its next call, with words that say how
        refused, text = await echo(agent, "after")
        assert refused
        assert text == f"Lockgate blocked this call to docs/echo: {SIGN_IN_MESSAGE}."
    assert oauth_server.stats()["authorizations"] == 1


async def test_a_refused_sign_in_fails_and_ctrl_c_cancels_the_gateways_sign_in(
    gateway: LiveGateway, oauth_server: OAuthServer, browser: tuple[str, Path]
) -> None:
    command, _opened = browser
    gateway.start()

    oauth_server.deny_next()
    refused = Command(gateway, "auth", "login", "docs", browser=command)
    try:
        url = await asyncio.to_thread(refused.authorization_url)
        await asyncio.to_thread(follow, url)  # the person clicked Deny
        assert await asyncio.to_thread(refused.finish) == 1
    finally:
        refused.close()
    assert (
        "lockgate: The gateway could not sign in: the authorization server did not sign in to "
        in ("".join(refused.err))
    )
    assert "access_denied" in "".join(refused.err)

    cancelled = Command(gateway, "auth", "login", "docs", browser=command)
    try:
        url = await asyncio.to_thread(cancelled.authorization_url)
        port = callback_port(url)
        assert listening(port)
        cancelled.proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(cancelled.finish) == 1
    finally:
        cancelled.close()
    assert "lockgate: the sign-in to docs was cancelled; nothing was changed\n" in cancelled.err
    assert "Traceback" not in cancelled.text()
    # the gateway let go of it: the page it asked the person to open leads nowhere now
    await asyncio.to_thread(eventually_sync, lambda: not listening(port), "the sign-in to end")
    shown = await asyncio.to_thread(lockgate, gateway, "auth", "status", "--json")
    assert json.loads(shown.stdout)[0]["state"] == "not_signed_in"  # as it was


async def test_login_with_no_gateway_running_then_the_gateway_uses_the_sign_in(
    gateway: LiveGateway,
    oauth_server: OAuthServer,
    keyring_for_docs: KeyringBackend,
    browser: tuple[str, Path],
) -> None:
    command, opened = browser
    login = Command(gateway, "auth", "login", "docs", "--no-browser", browser=command)
    try:
        url = await asyncio.to_thread(login.authorization_url)
        await asyncio.to_thread(follow, url)
        assert await asyncio.to_thread(login.finish) == 0, login.text()
    finally:
        login.close()
    assert "Lockgate is not running: signing in from here" in "".join(login.err)
    assert "".join(login.out).endswith("Signed in to docs.\n")
    assert not opened.exists()  # --no-browser: printed, never opened

    shown = await asyncio.to_thread(lockgate, gateway, "auth", "status")
    assert "Lockgate is not running" in shown.stderr
    assert shown.stdout.startswith("docs  signed in (its access token expires at ")
    for token in held_tokens(keyring_for_docs):
        assert token not in login.text() + shown.stdout + shown.stderr

    gateway.start()
    async with gateway.client("docs") as agent:
        assert await echo(agent, "signed in before") == (False, "Echo: signed in before")
    assert oauth_server.stats()["authorizations"] == 1  # no second sign-in
    gateway.stop()

    out = await asyncio.to_thread(lockgate, gateway, "auth", "logout", "docs")
    assert (out.returncode, out.stdout) == (0, "Signed out of docs.\n")
    assert "Lockgate is not running: signing out from here." in out.stderr
    assert SecretStore(keyring_for_docs).find("docs.oauth.tokens") is None
    assert SecretStore(keyring_for_docs).find("docs.oauth.client") is not None
    listed = json.loads(
        (await asyncio.to_thread(lockgate, gateway, "auth", "status", "--json")).stdout
    )
    assert listed == [
        {
            "server": "docs",
            "state": "needs_sign_in",
            "why": "it was signed out of (or its sign-in ended)",
            "expires_at": None,
            "checked": True,
        }
    ]


@pytest.mark.parametrize(
    ("args", "told"),
    [
        (
            ("login", "nope"),
            "No such server: servers.json has no server named 'nope'; the remote servers "
            "Lockgate signs in to: docs, resting",
        ),
        (("logout", "nope"), "No such server: servers.json has no server named 'nope'"),
        (
            ("login", "clock"),
            "Lockgate does not sign in to that server: 'clock' is a command server, which "
            'Lockgate starts on this machine; only a remote server (one with a "url" in '
            "servers.json) asks for a sign-in",
        ),
        (
            ("logout", "own-auth"),
            "Lockgate does not sign in to that server: 'own-auth' sets its own Authorization "
            "header in servers.json, so it signs in its own way",
        ),
        (
            ("login", "resting"),
            "Lockgate does not sign in to that server: server 'resting' is turned off in "
            "Lockgate; turn it on first",
        ),
    ],
)
def test_a_server_lockgate_does_not_sign_in_to_is_told_plainly(
    gateway: LiveGateway, args: tuple[str, ...], told: str
) -> None:
    result = lockgate(gateway, "auth", *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"lockgate: {told}"), result.stderr


def test_logout_forgets_the_sign_in_of_a_server_no_longer_in_servers_json(
    gateway: LiveGateway, keyring_for_docs: KeyringBackend
) -> None:
    store = SecretStore(keyring_for_docs)
    store.set("gone.oauth.client", json.dumps({"v": 1, "server_url": "http://x", "client_id": "c"}))
    out = lockgate(gateway, "auth", "logout", "gone")
    assert (out.returncode, out.stdout) == (0, "Signed out of gone.\n"), out.stderr
    assert store.find("gone.oauth.client") is None
    assert lockgate(gateway, "auth", "logout", "gone").returncode == 1  # nothing left of it
