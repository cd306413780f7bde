"""Lockgate as the OAuth client of a remote MCP server: the sign-in (the SDK's provider,
a loopback callback, the keyring), and the keeper that live connections use (the token
on each request, one refresh at a time at the saved token endpoint, what a refusal or a
fault leaves).

Nothing is a double: the authorization server and the MCP server it protects are
tests/servers/oauth_server.py in a subprocess, the keyring is GNOME Keyring on a private
D-Bus (``os_keyring``), connections are :class:`proxy.upstream.connection.Upstream`, and
the "browser" is :func:`tests.support.oauth.follow_authorization`, which does what a
person's browser does when they click Allow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import httpx2
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from mcp.shared.exceptions import MCPError

from proxy.config.oauth_store import OAuthRecord, OAuthStore
from proxy.config.secrets import SecretStore
from proxy.config.servers import HttpServer, OAuthSettings, parse_servers
from proxy.upstream.catalog import list_tools
from proxy.upstream.connection import Upstream
from proxy.upstream.oauth import (
    TOKENS_SCRUBBED,
    AuthState,
    KeeperAuth,
    SignInFailed,
    TokenKeeper,
    sign_in,
)
from tests.support.live import free_port
from tests.support.oauth import OAuthServer, OAuthServerFactory, follow_authorization

pytestmark = pytest.mark.slow

PROTOCOL = "2025-06-18"


class Clock:
    """Wall-clock seconds that move only when the test says."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def unique(prefix: str = "docs") -> str:
    """A server name of the test's own: the keyring outlives each test."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def browser(url: str) -> None:
    """The person clicks Allow (the callback is served on this loop: off it)."""
    status = await asyncio.to_thread(follow_authorization, url)
    assert status == 200, f"the callback answered {status}"


def spec_from(text: dict[str, Any], name: str) -> HttpServer:
    """A server as servers.json gives it (parsed by the gateway's own parser)."""
    spec = parse_servers(json.dumps({"mcpServers": {name: text}}))[name]
    assert isinstance(spec, HttpServer)
    return spec


async def call(
    spec: HttpServer, keeper: TokenKeeper, tool: str, arguments: Mapping[str, Any], errlog: Path
) -> dict[str, Any]:
    """One connection (as a session's), the handshake and one tools/call."""

    async def no_requests(_method: str, _params: Mapping[str, Any] | None) -> dict[str, Any]:
        raise AssertionError("the server asked something of the client")

    async def ignore(_method: str, _params: Mapping[str, Any] | None) -> None:
        return None

    with errlog.open("a") as log:
        upstream = Upstream(
            spec,
            on_request=no_requests,
            on_notify=ignore,
            errlog=log,
            auth=KeeperAuth(keeper),
            live_secrets=keeper.secrets,
        )
        failure: MCPError | None = None
        result: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            await tg.start(upstream.supervise)
            try:
                await upstream.request(
                    "initialize",
                    {
                        "protocolVersion": PROTOCOL,
                        "capabilities": {},
                        "clientInfo": {"name": "test", "version": "1"},
                    },
                )
                await upstream.notify("notifications/initialized", None)
                result = await upstream.request(
                    "tools/call", {"name": tool, "arguments": dict(arguments)}
                )
            except MCPError as exc:
                failure = exc  # raised out of the task group, as itself
            finally:
                await upstream.aclose()
        if failure is not None:
            raise failure
        return result


def text_of(result: Mapping[str, Any]) -> str:
    return "".join(c.get("text", "") for c in result["content"])


@pytest.fixture
def store(os_keyring: KeyringBackend) -> OAuthStore:
    return OAuthStore(SecretStore(os_keyring))


async def test_a_401_asks_for_a_sign_in_without_a_browser(
    oauth_server: OAuthServer, store: OAuthStore, tmp_path: Path
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    states: list[AuthState] = []
    keeper = TokenKeeper(spec, store, on_change=states.append)
    await keeper.load()
    assert keeper.status() == AuthState("not_signed_in")
    assert keeper.refusal() is None  # a server may need no sign-in: it is asked

    with pytest.raises(MCPError) as raised:
        await call(spec, keeper, "whoami", {}, tmp_path / "err.log")

    assert raised.value.error.message == "Server returned an error response"  # the 401
    assert keeper.status().state == "needs_sign_in"
    assert keeper.explain(raised.value) == (
        f"server {spec.name!r} needs sign-in: the server asks for an OAuth sign-in. A person "
        f"can sign in from Lockgate's Servers tab or run: lockgate auth login {spec.name}"
    )
    assert [s.state for s in states] == ["needs_sign_in"]
    stats = oauth_server.stats()
    assert (stats["authorizations"], stats["registrations"], stats["token_requests"]) == (0, 0, 0)
    # the catalog is refused at once, asking nothing of the server
    with (tmp_path / "err.log").open("a") as errlog:
        listed = await list_tools(spec, store.secrets, errlog, keeper)
    assert listed.error == keeper.refusal()


async def test_sign_in_with_dynamic_registration_then_calls_with_the_token(
    oauth_server: OAuthServer, store: OAuthStore, tmp_path: Path
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    opened: list[str] = []

    async def person(url: str) -> None:
        opened.append(url)
        await browser(url)

    record = await sign_in(spec, store, person)

    stats = oauth_server.stats()
    assert (stats["registrations"], stats["authorizations"], stats["token_requests"]) == (1, 1, 1)
    last = stats["last_authorize"]
    assert last["code_challenge_method"] == "S256"
    assert last["resource"] == oauth_server.mcp_url
    assert last["redirect_uri"].startswith("http://127.0.0.1:")
    assert last["redirect_uri"].endswith("/callback")
    assert opened
    assert opened[0].startswith(oauth_server.issuer + "/authorize?")
    # what was discovered is kept, so a refresh after a restart goes to the issuer
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is not None
    assert record.tokens is not None
    assert stored.tokens.access_token == record.tokens.access_token
    assert stored.tokens.resource == oauth_server.mcp_url
    assert stored.server is not None
    assert stored.server.token_endpoint == oauth_server.issuer + "/token"
    assert stored.server.auth_server_url is not None
    assert stored.server.auth_server_url.rstrip("/") == oauth_server.issuer
    assert stored.client is not None
    assert stored.client["client_id"] == stored.tokens.client_id
    for kind in ("tokens", "client", "server"):
        raw = store.secrets.find(f"{spec.name}.oauth.{kind}")
        assert raw is not None
        assert json.loads(raw)["v"] == 1

    keeper = TokenKeeper(spec, store)
    await keeper.load()
    assert keeper.status().state == "signed_in"
    result = await call(spec, keeper, "whoami", {}, tmp_path / "err.log")
    who = json.loads(text_of(result))
    assert who["client_id"] == stored.tokens.client_id
    assert who["resource"] == oauth_server.mcp_url
    # another url under the same name is another server: its sign-in is not this one's
    moved = await asyncio.to_thread(store.load, spec.name, spec.url + "/other")
    assert (moved.tokens, moved.client, moved.server) == (None, None, None)


async def test_a_client_registered_by_hand_signs_in_with_its_secret_from_the_keyring(
    oauth_server_factory: OAuthServerFactory, store: OAuthStore, tmp_path: Path
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    server = oauth_server_factory(dcr=False, client_id="lockgate-desktop", client_secret=secret)
    name = unique()
    store.secrets.set(f"{name}-client", secret)
    spec = spec_from(
        {
            "url": server.mcp_url,
            "oauth": {"client_id": "lockgate-desktop", "client_secret": f"keyring:{name}-client"},
        },
        name,
    )
    clock = Clock(1_000_000.0)
    keeper = TokenKeeper(spec, store, clock=clock)

    await keeper.sign_in(browser)

    stats = server.stats()
    assert (stats["registrations"], stats["authorizations"]) == (0, 1)
    assert stats["last_authorize"]["client_id"] == "lockgate-desktop"
    stored = await asyncio.to_thread(store.load, name, spec.url)
    assert stored.tokens is not None
    assert stored.tokens.expires_at == clock.now + 3600
    assert stored.client is not None
    assert "client_secret" not in stored.client  # it stays in the person's own entry
    for kind in ("tokens", "client", "server"):
        assert secret not in (store.secrets.find(f"{name}.oauth.{kind}") or "")

    who = json.loads(text_of(await call(spec, keeper, "whoami", {}, tmp_path / "err.log")))
    assert who["client_id"] == "lockgate-desktop"
    assert secret in keeper.secrets  # scrubbed from whatever the connection says
    clock.now += 3600 - 59  # within a minute of expiry: renewed, with the secret
    echoed = await call(spec, keeper, "echo", {"message": "hi"}, tmp_path / "err.log")
    assert text_of(echoed) == "Echo: hi"
    stats = server.stats()
    assert (stats["refreshes"], stats["refresh_reuses"], stats["authorizations"]) == (1, 0, 1)
    current = await keeper.bearer()

    await keeper.sign_out()  # revoked at the issuer, with the client's secret

    async with httpx2.AsyncClient(timeout=30) as http:
        answer = await http.post(
            server.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Authorization": f"Bearer {current}", "Accept": "application/json"},
        )
    assert answer.status_code == 401
    assert server.stats()["active_access_tokens"] == stats["active_access_tokens"] - 1
    assert keeper.status() == AuthState("needs_sign_in", "it was signed out of in Lockgate")
    assert store.secrets.find(f"{name}.oauth.tokens") is None


async def test_many_requests_at_once_renew_once_and_never_reuse_a_refresh_token(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    clock = Clock(2_000_000.0)
    await sign_in(spec, store, browser, clock=clock)
    keeper = TokenKeeper(spec, store, clock=clock)
    first = await keeper.bearer()

    for jump in range(1, 4):
        clock.now += 3600 - 50  # each time within the margin of the newest token's expiry
        tokens = await asyncio.gather(*(keeper.bearer() for _ in range(20)))
        assert len(set(tokens)) == 1
        assert tokens[0] != first
        first = tokens[0]
        assert oauth_server.stats()["refreshes"] == jump
    stats = oauth_server.stats()
    assert (stats["refreshes"], stats["refresh_reuses"]) == (3, 0)
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is not None
    assert stored.tokens.access_token == first  # the keyring holds the newest (rotated)


async def test_the_secrets_scrubbed_are_the_newest_tokens_and_stay_bounded(
    oauth_server_factory: OAuthServerFactory, store: OAuthStore
) -> None:
    """Renewed every hour for weeks: each scrub must not grow slower, and what is live
    (the tokens in use, the registration's secret) is always scrubbed."""
    server = oauth_server_factory(client_id="hand-made", client_secret="s3cret-by-hand")
    secret_name = f"client-{uuid.uuid4().hex}"
    await asyncio.to_thread(store.secrets.set, secret_name, "s3cret-by-hand")
    spec = spec_from(
        {
            "url": server.mcp_url,
            "oauth": {"client_id": "hand-made", "client_secret": f"keyring:{secret_name}"},
        },
        unique(),
    )
    clock = Clock(2_000_000.0)
    await sign_in(spec, store, browser, clock=clock)
    keeper = TokenKeeper(spec, store, clock=clock)
    held = keeper.secrets  # the live collection a connection is handed
    for _ in range(TOKENS_SCRUBBED):  # twice the tokens it keeps
        clock.now += 3600
        await keeper.bearer()
    assert server.stats()["refreshes"] == TOKENS_SCRUBBED
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is not None
    assert len(held) == TOKENS_SCRUBBED + 1
    assert stored.tokens.access_token in held
    assert stored.tokens.refresh_token in held
    assert "s3cret-by-hand" in held


async def test_a_revoked_access_token_is_renewed_on_the_401_and_the_request_goes_through(
    oauth_server: OAuthServer, store: OAuthStore, tmp_path: Path
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    await sign_in(spec, store, browser)
    keeper = TokenKeeper(spec, store)
    oauth_server.revoke_access()

    result = await call(spec, keeper, "echo", {"message": "again"}, tmp_path / "err.log")

    assert text_of(result) == "Echo: again"
    stats = oauth_server.stats()
    assert (stats["refreshes"], stats["refresh_reuses"], stats["authorizations"]) == (1, 0, 1)
    assert keeper.status().state == "signed_in"


async def test_sign_out_of_a_dynamically_registered_client_revokes_its_tokens_at_the_issuer(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    """A public client (registered by Lockgate itself, no secret): its sign-out still ends
    the grant at the authorization server, not only in the keyring."""
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    await sign_in(spec, store, browser)
    keeper = TokenKeeper(spec, store)
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is not None
    assert stored.client is not None
    assert stored.client.get("token_endpoint_auth_method") == "none"

    await keeper.sign_out()

    stats = oauth_server.stats()
    assert stats["revocations"] >= 1
    assert stats["active_access_tokens"] == 0
    async with httpx2.AsyncClient(timeout=30) as http:
        answer = await http.post(
            oauth_server.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Authorization": f"Bearer {stored.tokens.access_token}"},
        )
        assert answer.status_code == 401
        refreshed = await http.post(
            oauth_server.issuer + "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": stored.tokens.refresh_token or "",
                "client_id": stored.tokens.client_id,
            },
        )
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"


async def test_a_refused_refresh_forgets_the_tokens_keeps_the_registration(
    oauth_server: OAuthServer, store: OAuthStore, tmp_path: Path
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    await sign_in(spec, store, browser)
    keeper = TokenKeeper(spec, store)
    await keeper.load()
    oauth_server.revoke_refresh()
    oauth_server.expire_access()

    with pytest.raises(MCPError) as raised:
        await call(spec, keeper, "whoami", {}, tmp_path / "err.log")

    status = keeper.status()
    assert status.state == "needs_sign_in"
    assert status.why is not None
    assert status.why.startswith("the authorization server refused to renew it (invalid_grant")
    assert keeper.explain(raised.value) == keeper.refusal()
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is None
    assert stored.client is not None
    assert stored.server is not None
    # signing in again reuses the registration and works at once, for the same keeper
    await keeper.sign_in(browser)
    assert keeper.status().state == "signed_in"
    assert oauth_server.stats()["registrations"] == 1
    result = await call(spec, keeper, "echo", {"message": "back"}, tmp_path / "err.log")
    assert text_of(result) == "Echo: back"


async def test_an_unreachable_authorization_server_keeps_the_tokens_and_fails_for_now(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    clock = Clock(3_000_000.0)
    record = await sign_in(spec, store, browser, clock=clock)
    assert record.tokens is not None
    keeper = TokenKeeper(spec, store, clock=clock)
    await keeper.load()
    oauth_server.stop()
    clock.now += 3600 - 30

    token = await keeper.bearer()

    assert token == record.tokens.access_token  # still good for half a minute
    status = keeper.status()
    assert status.state == "signed_in"
    assert status.why is not None
    assert status.why.startswith("could not renew the sign-in just now")
    assert keeper.refusal() is None
    assert keeper.trouble is not None
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is not None
    assert stored.tokens.refresh_token == record.tokens.refresh_token


async def test_a_refused_sign_in_leaves_the_earlier_one(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    await sign_in(spec, store, browser)
    before = await asyncio.to_thread(store.load, spec.name, spec.url)
    oauth_server.deny_next()

    with pytest.raises(SignInFailed, match="access_denied"):
        await sign_in(spec, store, browser)

    after = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert after == before
    assert oauth_server.stats()["token_requests"] == 1


async def test_a_callback_with_another_state_is_refused_and_the_real_one_still_signs_in(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    """A forged callback (a web page's image, a local program: the port can be known) is
    refused without ending the person's sign-in, which the real callback then ends."""
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    await sign_in(spec, store, browser)
    before = await asyncio.to_thread(store.load, spec.name, spec.url)
    answered: list[int] = []

    def forged_then_real(url: str) -> None:
        """The authorization server's redirect, first with its state replaced, then as
        it is (the person's browser arriving after the forgery)."""
        with httpx2.Client(timeout=30) as http:
            location = http.get(url).headers["location"]
            parts = urlsplit(location)
            query = dict(parse_qsl(parts.query)) | {"state": "not-the-one-lockgate-sent"}
            answered.append(
                http.get(urlunsplit(parts._replace(query=urlencode(query)))).status_code
            )
            answered.append(http.get(location).status_code)

    async def person(url: str) -> None:
        await asyncio.to_thread(forged_then_real, url)

    record = await sign_in(spec, store, person)

    assert answered == [400, 200]
    assert before.tokens is not None
    assert record.tokens is not None
    assert record.tokens.access_token != before.tokens.access_token
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens == record.tokens
    assert oauth_server.stats()["token_requests"] == 2  # one exchange each sign-in


async def test_a_sign_in_no_one_finishes_times_out_and_changes_nothing(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    opened: list[str] = []

    with pytest.raises(SignInFailed, match=r"not finished within 0\.5 s"):
        await sign_in(spec, store, opened.append, timeout=0.5)

    assert len(opened) == 1
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is None
    assert stored.server is None


async def test_a_server_that_asks_for_no_sign_in_is_said_so(
    remote_everything: str, store: OAuthStore
) -> None:
    spec = spec_from({"url": remote_everything}, unique())
    opened: list[str] = []

    with pytest.raises(SignInFailed, match="did not ask for a sign-in"):
        await sign_in(spec, store, opened.append)

    assert opened == []


async def test_an_authorization_server_gone_from_its_address_fails_the_call_for_now(
    oauth_server: OAuthServer, store: OAuthStore, tmp_path: Path
) -> None:
    """The token endpoint refuses connections (the issuer moved or is down) while the MCP
    server still answers 401: the call fails as a temporary fault, saying why, and the
    tokens stay for when it is back."""
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    record = await sign_in(spec, store, browser)
    assert record.server is not None
    assert record.server.authorization_server is not None
    gone = f"http://127.0.0.1:{free_port()}/token"
    moved = replace(
        record.server,
        authorization_server={**record.server.authorization_server, "token_endpoint": gone},
    )
    await asyncio.to_thread(store.save, spec.name, spec.url, OAuthRecord(server=moved))
    keeper = TokenKeeper(spec, store)
    oauth_server.expire_access()

    with pytest.raises(MCPError) as raised:
        await call(spec, keeper, "whoami", {}, tmp_path / "err.log")

    why = keeper.explain(raised.value)
    assert why is not None
    assert why.startswith(
        f"server {spec.name!r}: Lockgate could not renew its sign-in just now ({gone} cannot "
        "be reached"
    )
    assert why.endswith("try again in a moment")
    assert keeper.refusal() is None
    assert keeper.status().state == "signed_in"
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is not None
    assert record.tokens is not None
    assert stored.tokens.refresh_token == record.tokens.refresh_token
    assert oauth_server.stats()["token_requests"] == 1


async def test_without_a_usable_keyring_a_server_that_needs_a_sign_in_says_so() -> None:
    """keyring's own "fail" backend: what it picks on a machine with no keyring."""
    store = OAuthStore(SecretStore(fail.Keyring()))
    configured = TokenKeeper(
        HttpServer("docs", "https://docs.example.test/mcp", oauth=OAuthSettings()), store
    )
    await configured.load()
    assert configured.status().state == "needs_sign_in"
    refusal = configured.refusal()
    assert refusal is not None
    assert refusal.startswith("server 'docs' needs sign-in: the OS keyring cannot be used")
    assert await configured.bearer() is None

    unsaid = TokenKeeper(HttpServer("open", "https://open.example.test/mcp"), store)
    await unsaid.load()
    status = unsaid.status()
    assert (status.state, status.checked) == ("not_signed_in", False)
    assert status.why is not None
    assert "cannot be used" in status.why
    assert unsaid.refusal() is None  # it may need no sign-in at all: it is asked


async def test_the_scopes_servers_json_names_are_asked_for_and_a_new_client_id_signs_in_anew(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    name = unique()
    spec = spec_from(
        {"url": oauth_server.mcp_url, "oauth": {"scopes": ["mcp:write", "mcp:read"]}}, name
    )
    await sign_in(spec, store, browser)
    assert oauth_server.stats()["last_authorize"]["scope"] == "mcp:write mcp:read"
    keeper = TokenKeeper(spec, store)
    await keeper.load()
    assert keeper.status().state == "signed_in"

    named = spec_from({"url": oauth_server.mcp_url, "oauth": {"client_id": "another"}}, name)
    other = TokenKeeper(named, store)
    await other.load()
    assert other.status() == AuthState(
        "needs_sign_in", "no one has signed in to it in Lockgate yet"
    )  # the tokens were issued to the client Lockgate registered, not this one


async def test_one_sign_in_at_a_time(oauth_server: OAuthServer, store: OAuthStore) -> None:
    keeper = TokenKeeper(spec_from({"url": oauth_server.mcp_url}, unique()), store)
    opened, release = asyncio.Event(), asyncio.Event()

    async def slow_person(url: str) -> None:
        opened.set()
        await release.wait()
        await browser(url)

    first = asyncio.create_task(keeper.sign_in(slow_person, timeout=60))
    await asyncio.wait_for(opened.wait(), 30)
    with pytest.raises(SignInFailed, match="already under way; finish it in the browser"):
        await keeper.sign_in(slow_person)
    release.set()
    await first
    assert keeper.status().state == "signed_in"
    assert oauth_server.stats()["authorizations"] == 1


async def test_what_cannot_be_signed_in_to_says_what_to_do(
    oauth_server_factory: OAuthServerFactory, store: OAuthStore
) -> None:
    server = oauth_server_factory(dcr=False)
    opened: list[str] = []
    spec = spec_from({"url": server.mcp_url}, unique())

    with pytest.raises(SignInFailed) as failed:
        await sign_in(spec, store, opened.append)

    assert "Registration failed" in failed.value.message
    assert 'name it in servers.json: "oauth": {"client_id"' in failed.value.message
    assert opened == []
    keyed = spec_from({"url": server.mcp_url, "headers": {"Authorization": "Bearer x"}}, unique())
    with pytest.raises(SignInFailed, match="sets its own Authorization header"):
        await sign_in(keyed, store, opened.append)


class ScriptedTokenEndpoint:
    """A token endpoint that answers what the test scripts, in order: the faults the
    real authorization server of tests/servers cannot be made to show (a 503, an answer
    that is no token, invalid_client). A real HTTP server on a loopback port."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        self.answers = answers
        self.forms: list[dict[str, str]] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedTokenEndpoint:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/token"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        self.forms.append(dict(parse_qsl((await reader.readexactly(length)).decode())))
        status, body = self.answers.pop(0)
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


async def test_what_each_answer_of_the_token_endpoint_does_to_the_sign_in(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    clock = Clock(4_000_000.0)
    record = await sign_in(spec, store, browser, clock=clock)
    assert record.server is not None
    assert record.server.authorization_server is not None
    assert record.tokens is not None
    answers = [
        (503, b"down for maintenance"),
        (200, b'{"not": "a token"}'),
        (400, b'{"error": "invalid_client", "error_description": "unknown client"}'),
    ]
    async with ScriptedTokenEndpoint(answers) as endpoint:
        scripted = replace(
            record.server,
            authorization_server={
                **record.server.authorization_server,
                "token_endpoint": endpoint.url,
            },
        )
        await asyncio.to_thread(store.save, spec.name, spec.url, OAuthRecord(server=scripted))
        keeper = TokenKeeper(spec, store, clock=clock)
        clock.now += 3600 - 30

        assert await keeper.bearer() == record.tokens.access_token  # 503: for now
        assert keeper.status().why == (
            "could not renew the sign-in just now: the authorization server answered HTTP 503"
        )
        assert await keeper.bearer() == record.tokens.access_token  # not again at once
        assert len(endpoint.forms) == 1
        clock.now += 11
        assert await keeper.bearer() == record.tokens.access_token  # no token in the answer
        assert keeper.trouble == "the authorization server's answer was not a token"
        clock.now += 11
        assert await keeper.bearer() is None  # the client is unknown there now

    assert [form["grant_type"] for form in endpoint.forms] == ["refresh_token"] * 3
    assert {form["refresh_token"] for form in endpoint.forms} == {record.tokens.refresh_token}
    assert {form["resource"] for form in endpoint.forms} == {oauth_server.mcp_url}
    status = keeper.status()
    assert status.state == "needs_sign_in"
    assert status.why == (
        "the authorization server refused to renew it (invalid_client: unknown client)"
    )
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    assert stored.tokens is None
    assert stored.client is None  # a registration it does not know: registered anew next time
    assert stored.server is not None
    with pytest.raises(RuntimeError, match="AsyncClient only"):
        next(KeeperAuth(keeper).sync_auth_flow(httpx2.Request("GET", oauth_server.mcp_url)))


async def test_the_loopback_callback_answers_only_its_own_sign_in(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    pages: list[tuple[int, str]] = []

    def browser_with_extras(url: str) -> None:
        """A browser asks for a favicon too, and a person may reload the page."""
        with httpx2.Client(timeout=30) as http:
            location = http.get(url).headers["location"]
            parts = urlsplit(location)
            for target in (
                urlunsplit(parts._replace(path="/favicon.ico", query="")),
                location,
                location,
            ):
                answer = http.get(target)
                pages.append((answer.status_code, answer.text))

    async def person(url: str) -> None:
        await asyncio.to_thread(browser_with_extras, url)

    await sign_in(spec, store, person)

    assert [status for status, _ in pages] == [404, 200, 200]
    assert f"Lockgate is signed in to {spec.name}. You can close this tab." in pages[1][1]
    assert "This sign-in is over" in pages[2][1]
    assert oauth_server.stats()["token_requests"] == 1


# -- what a misbehaving or hostile authorization server gets (red-team findings) ----------


async def test_a_client_secret_goes_only_to_the_authorization_server_it_is_for(
    oauth_server_factory: OAuthServerFactory, store: OAuthStore
) -> None:
    """A server's metadata names the authorization server; a compromised server could
    name one of its own and collect the secret a person registered elsewhere. The secret
    goes only to the issuer servers.json names or, naming none, the first one signed in
    with."""
    secret = f"s3cret-{uuid.uuid4().hex}"
    server = oauth_server_factory(dcr=False, client_id="corp", client_secret=secret)
    name = unique()
    await asyncio.to_thread(store.secrets.set, f"{name}-client", secret)
    oauth = {"client_id": "corp", "client_secret": f"keyring:{name}-client"}
    opened: list[str] = []

    async def watching(url: str) -> None:
        opened.append(url)
        await browser(url)

    elsewhere = spec_from(
        {"url": server.mcp_url, "oauth": {**oauth, "issuer": "https://idp.example.test"}}, name
    )
    with pytest.raises(SignInFailed, match=r"Lockgate did not send it.*\"issuer\": \""):
        await sign_in(elsewhere, store, watching)
    assert opened == []
    stats = server.stats()
    assert (stats["authorizations"], stats["token_requests"]) == (0, 0)

    # named rightly: signed in, and the issuer is kept with the sign-in
    named = spec_from({"url": server.mcp_url, "oauth": {**oauth, "issuer": server.issuer}}, name)
    await sign_in(named, store, watching)
    assert len(opened) == 1
    # naming none: the issuer first signed in with is the only one; metadata that now
    # says another (as a compromised server's would) is refused
    unnamed = spec_from({"url": server.mcp_url, "oauth": oauth}, name)
    record = await asyncio.to_thread(store.load, name, server.mcp_url)
    assert record.server is not None
    assert record.server.authorization_server is not None
    moved = replace(
        record.server,
        authorization_server={**record.server.authorization_server, "issuer": "https://x.test"},
    )
    await asyncio.to_thread(store.save, name, server.mcp_url, replace(record, server=moved))
    with pytest.raises(SignInFailed, match=r"but its client secret is for https://x\.test"):
        await sign_in(unnamed, store, watching)
    assert len(opened) == 1
    assert server.stats()["token_requests"] == 1


async def test_a_token_answer_lockgate_cannot_read_is_never_quoted(
    oauth_server: OAuthServer, store: OAuthStore, caplog: pytest.LogCaptureFixture
) -> None:
    """GitHub answers a token request form-encoded unless asked for JSON: the SDK's
    error quotes the answer, the token in it. Lockgate's words and its log do not."""
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    token = "gho_" + uuid.uuid4().hex
    oauth_server.answer_tokens(
        200,
        f"access_token={token}&scope=repo&token_type=bearer",
        content_type="application/x-www-form-urlencoded",
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SignInFailed) as failed:
        await sign_in(spec, store, browser)
    assert "not one Lockgate can read" in failed.value.message
    for part in (token, token[:16], token[-16:]):
        assert part not in failed.value.message
        assert part not in caplog.text
    assert (await asyncio.to_thread(store.load, spec.name, spec.url)).tokens is None


async def test_an_answer_in_another_encoding_fails_the_sign_in_in_words(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    oauth_server.answer_tokens(400, "Ungültiger Code", content_type="text/plain", latin1=True)
    with pytest.raises(SignInFailed, match=f"the sign-in to '{spec.name}' failed: "):
        await sign_in(spec, store, browser)


async def test_an_authorization_servers_words_are_repeated_clean_and_short(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    """What a server says reaches a terminal, an agent and the audit log: no escape
    sequence (it could rewrite what a person reads), no megabyte."""
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    clock = Clock(3_000_000.0)
    await sign_in(spec, store, browser, clock=clock)
    keeper = TokenKeeper(spec, store, clock=clock)
    await keeper.load()
    shout = "\x1b[2K\r\x1b[32mSigned in.\x1b[0m" + "x" * 20_000
    oauth_server.answer_tokens(
        400, json.dumps({"error": "invalid_grant", "error_description": shout})
    )
    clock.now += 3600
    assert await keeper.bearer() is None
    state = keeper.status()
    assert state.state == "needs_sign_in"
    assert state.why is not None
    assert "\x1b" not in state.why
    assert "invalid_grant:  [2K  [32mSigned in." in state.why
    assert len(state.why) < 400


async def test_a_failing_renewal_is_asked_once_for_every_call_waiting_on_it(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    """Ten calls waiting on one renewal that fails: one request, not one a call in a
    row (each one waiting for all the earlier ones)."""
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    clock = Clock(4_000_000.0)
    await sign_in(spec, store, browser, clock=clock)
    keeper = TokenKeeper(spec, store, clock=clock)
    stale = await keeper.bearer()
    before = oauth_server.stats()["token_requests"]
    oauth_server.answer_tokens(503, '{"error": "temporarily_unavailable"}', times=10)
    clock.now += 3600
    tokens = await asyncio.gather(*(keeper.bearer() for _ in range(10)))
    assert tokens == [stale] * 10  # tried with the old one; the server will say
    assert oauth_server.stats()["token_requests"] == before + 1
    assert keeper.trouble is not None
    assert "temporarily_unavailable" in keeper.trouble


async def test_an_endless_token_answer_is_not_read_to_its_end(
    oauth_server: OAuthServer, store: OAuthStore
) -> None:
    spec = spec_from({"url": oauth_server.mcp_url}, unique())
    clock = Clock(5_000_000.0)
    await sign_in(spec, store, browser, clock=clock)
    keeper = TokenKeeper(spec, store, clock=clock)
    await keeper.load()
    oauth_server.answer_tokens(200, '{"access_token": "' + "a" * 2_000_000 + '"}')
    clock.now += 3600
    await keeper.bearer()
    assert keeper.trouble is not None
    assert "longer than 65536 bytes" in keeper.trouble
    assert keeper.status().state == "signed_in"  # a fault for now, not a lost sign-in
