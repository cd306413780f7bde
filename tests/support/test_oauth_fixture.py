"""The OAuth test server (tests/servers/oauth_server.py, through tests/support/oauth.py)
is a real authorization server: the mcp SDK's own OAuth client signs in to it, calls the
protected MCP server and refreshes, and the rules the Lockgate tests rely on hold when
spoken to over plain HTTP (PKCE, resource binding, refresh rotation, the switches).

Nothing is a double: the server is a subprocess, the clients are the SDK's
`OAuthClientProvider` with httpx2 and plain httpx2, and the "browser" is
:func:`~tests.support.oauth.follow_authorization` against a loopback callback served here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
)
from mcp_types import TextContent
from pydantic import AnyUrl

from tests.support.oauth import (
    MemoryTokenStorage,
    OAuthServer,
    OAuthServerFactory,
    follow_authorization,
    follow_authorization_async,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

UNUSED_REDIRECT = "http://127.0.0.1:9/callback"  # for requests whose redirect is only read


class LoopbackCallback:
    """The OAuth client's redirect target, as a desktop client runs it: a loopback HTTP
    server that takes the authorization response off the query."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/callback":
                    self.send_error(404)
                    return
                received.append(dict(parse_qsl(parts.query)))
                body = b"You can close this window."
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.taken = 0

    async def next_result(self) -> AuthorizationCodeResult:
        """The SDK's `callback_handler`: the next authorization response that arrived."""
        await eventually(lambda: len(self.received) > self.taken, "the OAuth callback")
        params = self.received[self.taken]
        self.taken += 1
        if "code" not in params:
            raise RuntimeError(f"the authorization was refused: {params}")
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def callback() -> Iterator[LoopbackCallback]:
    server = LoopbackCallback()
    try:
        yield server
    finally:
        server.close()


def client_metadata(callback: LoopbackCallback) -> OAuthClientMetadata:
    return OAuthClientMetadata(
        redirect_uris=[AnyUrl(callback.url)],
        client_name="lockgate oauth self-test",
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )


async def open_in_browser(url: str) -> None:
    """The SDK's `redirect_handler`: the sync "browser", off the loop."""
    status = await asyncio.to_thread(follow_authorization, url)
    assert status == 200, f"the callback answered {status}"


def sdk_auth(
    server: OAuthServer, callback: LoopbackCallback, storage: MemoryTokenStorage
) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=server.mcp_url,
        client_metadata=client_metadata(callback),
        storage=storage,
        redirect_handler=open_in_browser,
        callback_handler=callback.next_result,
    )


async def call_text(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> str:
    result = await client.call_tool(tool, arguments or {})
    assert not result.is_error, result
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


# the SDK's OAuth client against it


async def test_the_sdk_client_signs_in_with_dcr_and_calls_the_tools(
    oauth_server: OAuthServer, callback: LoopbackCallback
) -> None:
    storage = MemoryTokenStorage()
    auth = sdk_auth(oauth_server, callback, storage)
    async with (
        httpx2.AsyncClient(auth=auth, timeout=60) as http,
        Client(
            streamable_http_client(oauth_server.mcp_url, http_client=http), mode="legacy"
        ) as client,
    ):
        who = json.loads(await call_text(client, "whoami"))
        assert await call_text(client, "echo", {"message": "hello"}) == "Echo: hello"

    assert storage.client_info is not None
    client_id = storage.client_info.client_id
    assert who == {
        "client_id": client_id,
        "scopes": ["mcp:read", "mcp:write"],
        "resource": oauth_server.mcp_url,
    }
    stats = oauth_server.stats()
    assert stats["registrations"] == 1
    assert stats["authorizations"] == 1
    assert stats["token_requests"] == 1
    assert stats["refreshes"] == 0
    assert stats["active_access_tokens"] == 1
    last = stats["last_authorize"]
    assert last["code_challenge_method"] == "S256"
    assert last["resource"] == oauth_server.mcp_url
    assert last["redirect_uri"] == callback.url
    assert last["client_id"] == client_id
    assert last["scope"] == "mcp:read mcp:write"
    assert last["response_type"] == "code"


async def test_the_sdk_client_refreshes_when_the_access_token_lifetime_ends(
    oauth_server_factory: OAuthServerFactory, callback: LoopbackCallback
) -> None:
    lifetime = 3  # seconds: room for the sign-in and a call on a busy machine
    server = oauth_server_factory(access_lifetime=lifetime)
    storage = MemoryTokenStorage()
    auth = sdk_auth(server, callback, storage)
    async with (
        httpx2.AsyncClient(auth=auth, timeout=60) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), mode="legacy") as client,
    ):
        assert await call_text(client, "echo", {"message": "one"}) == "Echo: one"
        before = server.stats()
        assert storage.tokens is not None
        first_refresh_token = storage.tokens.refresh_token
        deadline = storage.stored_at + lifetime
        await eventually(lambda: time.time() > deadline, "the access token's lifetime to end")

        assert await call_text(client, "echo", {"message": "two"}) == "Echo: two"
        after = server.stats()

    assert after["refreshes"] > before["refreshes"]
    assert after["authorizations"] == before["authorizations"]  # no second sign-in
    assert storage.tokens.refresh_token != first_refresh_token  # rotated


async def test_an_access_token_expired_by_the_server_is_refused_and_the_sdk_signs_in_again(
    oauth_server: OAuthServer, callback: LoopbackCallback
) -> None:
    """The SDK's client refreshes only on its own clock: a token the server has expired
    early answers 401, and the client goes through /authorize again."""
    storage = MemoryTokenStorage()
    auth = sdk_auth(oauth_server, callback, storage)
    async with (
        httpx2.AsyncClient(auth=auth, timeout=60) as http,
        Client(
            streamable_http_client(oauth_server.mcp_url, http_client=http), mode="legacy"
        ) as client,
    ):
        assert await call_text(client, "echo", {"message": "one"}) == "Echo: one"
        oauth_server.expire_access()
        assert oauth_server.stats()["active_access_tokens"] == 0
        assert await call_text(client, "echo", {"message": "two"}) == "Echo: two"

    stats = oauth_server.stats()
    assert stats["authorizations"] == 2
    assert stats["registrations"] == 1
    assert stats["active_access_tokens"] == 1


async def test_the_sdk_client_signs_in_as_the_pre_registered_client(
    oauth_server_factory: OAuthServerFactory, callback: LoopbackCallback
) -> None:
    server = oauth_server_factory(dcr=False, client_id="lockgate-test", client_secret="s3cret")
    storage = MemoryTokenStorage(
        OAuthClientInformationFull(
            client_id="lockgate-test",
            client_secret="s3cret",
            token_endpoint_auth_method="client_secret_basic",
            redirect_uris=[AnyUrl(callback.url)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        )
    )
    auth = sdk_auth(server, callback, storage)
    async with (
        httpx2.AsyncClient(auth=auth, timeout=60) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), mode="legacy") as client,
    ):
        who = json.loads(await call_text(client, "whoami"))

    assert who["client_id"] == "lockgate-test"
    stats = server.stats()
    assert stats["registrations"] == 0
    assert stats["last_authorize"]["client_id"] == "lockgate-test"
    with httpx2.Client(timeout=30) as plain:
        metadata = plain.get(f"{server.issuer}/.well-known/oauth-authorization-server").json()
        assert "registration_endpoint" not in metadata
        assert plain.post(f"{server.issuer}/register", json={}).status_code == 404


# the rules, over plain HTTP


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def register(http: httpx2.Client, server: OAuthServer, redirect: str = UNUSED_REDIRECT) -> dict:
    response = http.post(
        f"{server.issuer}/register",
        json={
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post",
        },
    )
    assert response.status_code == 201, response.text
    registered: dict = response.json()
    return registered


def authorize(
    http: httpx2.Client, server: OAuthServer, client_id: str, challenge: str, **extra: str
) -> dict[str, str]:
    """The query of the redirect /authorize answers."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": UNUSED_REDIRECT,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st4te",
        "resource": server.mcp_url,
        **extra,
    }
    params = {k: v for k, v in params.items() if v != ""}
    response = http.get(f"{server.issuer}/authorize", params=params)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(UNUSED_REDIRECT + "?")
    return dict(parse_qsl(urlsplit(location).query))


def token(http: httpx2.Client, server: OAuthServer, **form: str) -> httpx2.Response:
    return http.post(f"{server.issuer}/token", data=form)


def signed_in(http: httpx2.Client, server: OAuthServer) -> tuple[dict, dict]:
    """A registered client and its first tokens."""
    client = register(http, server)
    verifier, challenge = pkce()
    code = authorize(http, server, client["client_id"], challenge)["code"]
    response = token(
        http,
        server,
        grant_type="authorization_code",
        code=code,
        redirect_uri=UNUSED_REDIRECT,
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        code_verifier=verifier,
        resource=server.mcp_url,
    )
    assert response.status_code == 200, response.text
    return client, response.json()


def refresh(http: httpx2.Client, server: OAuthServer, client: dict, refresh_token: str):
    return token(
        http,
        server,
        grant_type="refresh_token",
        refresh_token=refresh_token,
        client_id=client["client_id"],
        client_secret=client["client_secret"],
    )


def initialize(http: httpx2.Client, server: OAuthServer, access_token: str | None):
    headers = {"Accept": "application/json, text/event-stream"}
    if access_token is not None:
        headers["Authorization"] = f"Bearer {access_token}"
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    return http.post(server.mcp_url, json=message, headers=headers)


def test_refresh_tokens_rotate_and_a_reused_one_is_refused(oauth_server: OAuthServer) -> None:
    with httpx2.Client(timeout=30) as http:
        client, first = signed_in(http, oauth_server)
        assert first["token_type"] == "Bearer"
        assert first["expires_in"] == 3600

        second = refresh(http, oauth_server, client, first["refresh_token"])
        assert second.status_code == 200, second.text
        rotated = second.json()
        assert rotated["refresh_token"] != first["refresh_token"]
        assert rotated["access_token"] != first["access_token"]

        reused = refresh(http, oauth_server, client, first["refresh_token"])
        assert reused.status_code == 400
        assert reused.json()["error"] == "invalid_grant"
        stats = oauth_server.stats()
        assert (stats["refreshes"], stats["refresh_reuses"]) == (1, 1)
        assert stats["token_requests"] == 3

        oauth_server.revoke_refresh()
        revoked = refresh(http, oauth_server, client, rotated["refresh_token"])
        assert revoked.status_code == 400
        assert revoked.json()["error"] == "invalid_grant"
        assert oauth_server.stats()["refresh_reuses"] == 1  # revoked is not reused


def test_the_resource_server_takes_only_live_tokens_for_itself(oauth_server: OAuthServer) -> None:
    with httpx2.Client(timeout=30) as http:
        anonymous = initialize(http, oauth_server, None)
        assert anonymous.status_code == 401
        challenge = anonymous.headers["www-authenticate"]
        origin = oauth_server.mcp_url.removesuffix("/mcp")
        metadata_url = f"{origin}/.well-known/oauth-protected-resource/mcp"
        assert challenge.startswith("Bearer ")
        assert f'resource_metadata="{metadata_url}"' in challenge
        metadata = http.get(metadata_url).json()
        assert metadata["resource"] == oauth_server.mcp_url
        assert metadata["authorization_servers"] == [oauth_server.issuer]

        client, tokens = signed_in(http, oauth_server)
        assert initialize(http, oauth_server, tokens["access_token"]).status_code == 200
        oauth_server.expire_access()
        assert initialize(http, oauth_server, tokens["access_token"]).status_code == 401
        assert oauth_server.stats()["active_access_tokens"] == 0

        fresh = refresh(http, oauth_server, client, tokens["refresh_token"]).json()
        assert initialize(http, oauth_server, fresh["access_token"]).status_code == 200
        oauth_server.revoke_access()
        assert initialize(http, oauth_server, fresh["access_token"]).status_code == 401

        # RFC 7009 revocation of a refresh token takes its access token with it
        again = refresh(http, oauth_server, client, fresh["refresh_token"]).json()
        revoked = http.post(
            f"{oauth_server.issuer}/revoke",
            data={
                "token": again["refresh_token"],
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
            },
        )
        assert revoked.status_code == 200
        assert initialize(http, oauth_server, again["access_token"]).status_code == 401


def test_pkce_and_the_resource_indicator_are_enforced(oauth_server: OAuthServer) -> None:
    with httpx2.Client(timeout=30) as http:
        client = register(http, oauth_server)
        verifier, challenge = pkce()
        code = authorize(http, oauth_server, client["client_id"], challenge)["code"]
        base = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": UNUSED_REDIRECT,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        }
        wrong = token(http, oauth_server, **base, code_verifier=pkce()[0])
        assert wrong.status_code == 400
        assert wrong.json()["error"] == "invalid_grant"
        elsewhere = token(
            http, oauth_server, **base, code_verifier=verifier, resource="http://127.0.0.1:9/mcp"
        )
        assert elsewhere.status_code == 400
        assert elsewhere.json()["error"] == "invalid_target"
        assert token(http, oauth_server, **base, code_verifier=verifier).status_code == 200
        replayed = token(http, oauth_server, **base, code_verifier=verifier)
        assert replayed.json()["error"] == "invalid_grant"  # a code works once

        plain = authorize(
            http, oauth_server, client["client_id"], challenge, code_challenge_method="plain"
        )
        assert plain["error"] == "invalid_request"
        assert oauth_server.stats()["last_authorize"]["code_challenge_method"] == "plain"
        no_resource = authorize(http, oauth_server, client["client_id"], challenge, resource="")
        assert no_resource["error"] == "invalid_target"
        other = authorize(
            http, oauth_server, client["client_id"], challenge, resource="http://127.0.0.1:9/mcp"
        )
        assert other["error"] == "invalid_target"
        assert oauth_server.stats()["authorizations"] == 4


def test_deny_next_refuses_one_authorization(
    oauth_server: OAuthServer, callback: LoopbackCallback
) -> None:
    with httpx2.Client(timeout=30) as http:
        client = register(http, oauth_server, redirect=callback.url)
    _, challenge = pkce()
    url = str(
        httpx2.URL(
            f"{oauth_server.issuer}/authorize",
            params={
                "response_type": "code",
                "client_id": client["client_id"],
                "redirect_uri": callback.url,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": "s1",
                "resource": oauth_server.mcp_url,
            },
        )
    )
    oauth_server.deny_next()
    assert follow_authorization(url) == 200
    assert callback.received[-1] == {
        "error": "access_denied",
        "error_description": "the person clicked Deny (test switch)",
        "state": "s1",
    }
    assert follow_authorization(url) == 200
    assert set(callback.received[-1]) == {"code", "state"}


async def test_follow_authorization_async_reaches_a_callback_on_the_callers_loop(
    oauth_server: OAuthServer,
) -> None:
    """The async browser GETs the callback from the loop that serves it, and says so when
    the authorization server answers without a redirect."""
    received: list[str] = []

    async def serve_callback(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        received.append(request_line.split()[1])
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(serve_callback, "127.0.0.1", 0)
    try:
        redirect = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/callback"
        with httpx2.Client(timeout=30) as http:
            client = register(http, oauth_server, redirect=redirect)
        _, challenge = pkce()
        params = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": redirect,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s2",
            "resource": oauth_server.mcp_url,
        }
        url = str(httpx2.URL(f"{oauth_server.issuer}/authorize", params=params))
        assert await follow_authorization_async(url) == 204
        assert received[0].startswith("/callback?code=")

        unknown = str(
            httpx2.URL(f"{oauth_server.issuer}/authorize", params={**params, "client_id": "nobody"})
        )
        assert await follow_authorization_async(unknown) == 400
        assert len(received) == 1
    finally:
        listener.close()
        await listener.wait_closed()


def test_the_pre_registered_client_may_use_basic_or_post(
    oauth_server_factory: OAuthServerFactory,
) -> None:
    server = oauth_server_factory(
        dcr=False, client_id="pre", client_secret="s3cret", scopes="mcp:read"
    )
    with httpx2.Client(timeout=30) as http:
        grants = []
        for credentials in ("basic", "post", "wrong"):
            verifier, challenge = pkce()
            code = authorize(http, server, "pre", challenge)["code"]
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": UNUSED_REDIRECT,
                "code_verifier": verifier,
                "resource": server.mcp_url,
            }
            if credentials == "basic":  # RFC 6749 §2.3.1: client_id need not be in the form
                response = http.post(f"{server.issuer}/token", data=form, auth=("pre", "s3cret"))
            else:
                secret = "s3cret" if credentials == "post" else "guess"
                response = token(http, server, **form, client_id="pre", client_secret=secret)
            grants.append(response)
        assert [g.status_code for g in grants] == [200, 200, 401]
        assert grants[0].json()["scope"] == "mcp:read"
        assert grants[2].json()["error"] == "invalid_client"
        assert server.stats()["token_requests"] == 3
