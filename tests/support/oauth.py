"""A real OAuth-protected MCP server for the tests: tests/servers/oauth_server.py in a
subprocess (its authorization server and its MCP server on two loopback ports), the
test switches it has, and what a person's browser does with an authorization URL.

    with OAuthServer(access_lifetime=2) as server:
        ...  # connect to server.mcp_url; server.stats()["refreshes"], server.expire_access()

or the fixtures ``oauth_server`` (default options) and ``oauth_server_factory``
(options → a started :class:`OAuthServer`, every one stopped at teardown).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from keyring.backend import KeyringBackend
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from proxy.config.secrets import SecretStore
from tests.support.waiting import eventually_sync

__all__ = [
    "SIGNED_IN_SERVERS",
    "MemoryTokenStorage",
    "OAuthServer",
    "OAuthServerFactory",
    "callback_port",
    "follow_authorization",
    "follow_authorization_async",
    "keyring_for_docs",
    "listening",
    "oauth_server",
    "oauth_server_factory",
]

SERVER_PY = Path(__file__).resolve().parents[1] / "servers" / "oauth_server.py"


class MemoryTokenStorage:
    """The SDK client's `TokenStorage`, in memory; it notes when tokens last arrived."""

    def __init__(self, client_info: OAuthClientInformationFull | None = None) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info = client_info
        self.stored_at = 0.0

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.stored_at = time.time()

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class OAuthServer:
    """tests/servers/oauth_server.py with the given options (None: the server's default:
    access tokens live 3600 s, refresh tokens 86400 s, dynamic client registration on, no
    pre-registered client, scopes "mcp:read mcp:write")."""

    def __init__(
        self,
        *,
        access_lifetime: int | None = None,
        refresh_lifetime: int | None = None,
        dcr: bool = True,
        client_id: str | None = None,
        client_secret: str | None = None,
        scopes: str | None = None,
        start_timeout: float = 30,
    ) -> None:
        if (client_id is None) != (client_secret is None):
            raise ValueError("client_id and client_secret go together")
        self.args: list[str] = []
        if access_lifetime is not None:
            self.args += ["--access-lifetime", str(access_lifetime)]
        if refresh_lifetime is not None:
            self.args += ["--refresh-lifetime", str(refresh_lifetime)]
        if not dcr:
            self.args.append("--no-dcr")
        if client_id is not None and client_secret is not None:
            self.args += ["--client-id", client_id, "--client-secret", client_secret]
        if scopes is not None:
            self.args += ["--scopes", scopes]
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._addresses: dict[str, str] | None = None

    # running

    def start(self) -> OAuthServer:
        """Start the subprocess and wait for the line with its addresses."""
        if self.proc is not None:
            raise RuntimeError("this OAuthServer is already started")
        # stderr is inherited: pytest shows the server's log with a failing test
        proc = subprocess.Popen(
            [sys.executable, str(SERVER_PY), *self.args], stdout=subprocess.PIPE
        )
        self.proc = proc
        assert proc.stdout is not None
        stdout = proc.stdout
        lines: list[bytes] = []
        reader = threading.Thread(
            target=lambda: lines.append(stdout.readline()), name="oauth-server-line", daemon=True
        )
        reader.start()

        def announced() -> bool:
            if lines:
                return True
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{SERVER_PY.name} exited with {proc.returncode} before starting"
                )
            return False

        try:
            eventually_sync(
                announced, f"{SERVER_PY.name} to print its addresses", timeout=self.start_timeout
            )
            reader.join()
            if not lines[0]:
                raise RuntimeError(f"{SERVER_PY.name} closed its output without its addresses")
            self._addresses = json.loads(lines[0])
        except BaseException:
            self.stop()
            raise
        stdout.close()
        return self

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; the exit status (None: never
        started)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # where it is

    def _address(self, key: str) -> str:
        if self._addresses is None:
            raise RuntimeError("the OAuthServer is not started")
        return self._addresses[key]

    @property
    def issuer(self) -> str:
        """The authorization server's issuer, e.g. ``http://127.0.0.1:A`` (no slash)."""
        return self._address("issuer")

    @property
    def mcp_url(self) -> str:
        """The protected MCP server (streamable HTTP), e.g. ``http://127.0.0.1:R/mcp``."""
        return self._address("mcp")

    @property
    def control_url(self) -> str:
        """Base of the test switches, ``{issuer}/_test``."""
        return self._address("control")

    # the test switches

    def answer_tokens(
        self,
        status: int,
        body: str,
        *,
        content_type: str = "application/json",
        times: int = 1,
        latin1: bool = False,
    ) -> None:
        """Answer the next ``times`` token requests with ``status`` and ``body`` (as a
        misbehaving authorization server would), whatever they ask."""
        self._control(
            "POST",
            "answer_tokens",
            {
                "status": status,
                "body": body,
                "content_type": content_type,
                "times": times,
                "latin1": latin1,
            },
        )

    def _control(
        self, method: str, name: str, payload: dict[str, Any] | None = None
    ) -> httpx2.Response:
        with httpx2.Client(timeout=30) as http:
            response = http.request(method, f"{self.control_url}/{name}", json=payload)
        response.raise_for_status()
        return response

    def stats(self) -> dict[str, Any]:
        """``token_requests`` (every POST /token), ``refreshes`` (refresh grants that issued
        tokens), ``refresh_reuses`` (rotated refresh tokens presented again),
        ``authorizations`` (every /authorize request), ``registrations`` (DCR),
        ``active_access_tokens`` (unexpired, unrevoked) and ``last_authorize`` (the query
        parameters of the last /authorize, as sent)."""
        result: dict[str, Any] = self._control("GET", "stats").json()
        return result

    def revoke_access(self) -> None:
        """Every access token issued so far stops working now."""
        self._control("POST", "revoke_access")

    def revoke_refresh(self) -> None:
        """Every refresh token issued so far stops working now."""
        self._control("POST", "revoke_refresh")

    def expire_access(self) -> None:
        """Every access token issued so far expires now (the client still thinks it good)."""
        self._control("POST", "expire_access")

    def deny_next(self) -> None:
        """The next authorization the person is asked for is refused: its redirect
        carries ``error=access_denied``."""
        self._control("POST", "deny_next")


def _next_hop(url: str, response: httpx2.Response) -> str | None:
    if response.status_code not in (301, 302, 303, 307, 308):
        return None
    location = response.headers.get("location")
    return urljoin(url, location) if location else None


def follow_authorization(url: str) -> int:
    """What a person's browser does with an authorization URL, the person clicking Allow:
    GET it, and GET the redirect the authorization server answers (the OAuth client's
    loopback callback, ``http://127.0.0.1:PORT/callback?code=..&state=..``, or with
    ``error=access_denied`` after :meth:`OAuthServer.deny_next`). The status of the last
    response: the callback's, or the authorization server's own when it did not redirect
    (a request it cannot send back, such as an unknown client_id, answers 400).

    Blocking: call it from a thread (``asyncio.to_thread``), never on the loop that serves
    the callback; there, use :func:`follow_authorization_async`.
    """
    with httpx2.Client(timeout=30, follow_redirects=False) as http:
        response = http.get(url)
        target = _next_hop(url, response)
        if target is None:
            return response.status_code
        return http.get(target).status_code


async def follow_authorization_async(url: str) -> int:
    """:func:`follow_authorization` for a coroutine (an SDK ``redirect_handler``, or a
    callback served on the caller's own loop)."""
    async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as http:
        response = await http.get(url)
        target = _next_hop(url, response)
        if target is None:
            return response.status_code
        return (await http.get(target)).status_code


class OAuthServerFactory(Protocol):
    def __call__(
        self,
        *,
        access_lifetime: int | None = ...,
        refresh_lifetime: int | None = ...,
        dcr: bool = ...,
        client_id: str | None = ...,
        client_secret: str | None = ...,
        scopes: str | None = ...,
    ) -> OAuthServer: ...


@pytest.fixture
def oauth_server_factory() -> Iterator[OAuthServerFactory]:
    """Start OAuth servers with options (the keywords of :class:`OAuthServer`); every one
    is stopped at teardown."""
    started: list[OAuthServer] = []

    def start(**options: Any) -> OAuthServer:
        server = OAuthServer(**options)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def oauth_server(oauth_server_factory: OAuthServerFactory) -> OAuthServer:
    """An OAuth server with the default options, started."""
    return oauth_server_factory()


# The servers the sign-in tests name; the keyring outlives each test, their entries not.
SIGNED_IN_SERVERS = ("docs", "gone")


@pytest.fixture
def keyring_for_docs(os_keyring: KeyringBackend) -> Iterator[KeyringBackend]:
    """The real keyring (``os_keyring``), with no sign-in of the servers the sign-in
    tests name (:data:`SIGNED_IN_SERVERS`) before the test or after it."""

    def forget() -> None:
        store = SecretStore(os_keyring)
        for server in SIGNED_IN_SERVERS:
            for kind in ("tokens", "client", "server"):
                store.discard(f"{server}.oauth.{kind}")

    forget()
    yield os_keyring
    forget()


def callback_port(authorization_url: str) -> int:
    """The loopback port the browser would come back to (the ``redirect_uri``)."""
    redirect = parse_qs(urlsplit(authorization_url).query)["redirect_uri"][0]
    port = urlsplit(redirect).port
    assert port is not None
    return port


def listening(port: int) -> bool:
    """Whether something takes connections on 127.0.0.1:``port`` (a sign-in's callback)."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
