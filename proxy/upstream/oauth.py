"""Lockgate as the OAuth client of remote MCP servers (the MCP authorization spec).

Two parts, because the SDK's ``OAuthClientProvider`` is good at one of them only:

- :func:`sign_in`, the interactive part, *is* the SDK's provider: a probe ``initialize``
  on an HTTP client of its own gets the server's 401, and the provider discovers the
  protected resource and its authorization server, registers (dynamic client
  registration) unless servers.json names a client, sends the person's browser to the
  authorization page (PKCE S256, ``resource``) and exchanges the code. The browser comes
  back to a loopback server of ours on 127.0.0.1 (a free port, ``/callback``), which
  checks ``state`` and tells the person they can close the tab. Only when all of it has
  worked are the tokens, the registration and what was discovered (the authorization
  server's metadata above all: its token endpoint) written to the keyring
  (:mod:`proxy.config.oauth_store`); a sign-in that fails, is refused or times out
  leaves the earlier one as it was.
- :class:`TokenKeeper` and :class:`KeeperAuth` are for live sessions, where the
  provider would not do: it holds a lock across every request (serialising all calls),
  on any 401 starts a browser authorization instead of a refresh, raises inside the
  transport (which fails every call in flight), and after a restart refreshes at the
  MCP server's origin. One keeper per server, shared by all its sessions, holds the
  tokens; :class:`KeeperAuth` (an ``httpx2.Auth``) puts the access token on each
  request, renews it a minute before it expires (half its life, for short ones) and
  once on a 401 Bearer challenge, at the saved token endpoint. Refresh tokens rotate
  (each works once), so one refresh runs at a time, under a lock held for the refresh
  only, in a task of its own that a cancelled call cannot cut short; a 401 for a token
  that is no longer the current one is retried with the current one.

The keeper never raises inside a transport. It says what it knows in its state
(:data:`AuthStateName`): ``signed_in``, ``refreshing``, ``not_signed_in`` (no tokens;
calls go without one), ``needs_sign_in`` (calls would fail: the server asked for a
sign-in, the authorization server refused to renew it, or servers.json names a client
no one has signed in with); the gateway asks before it starts or uses an upstream, and
refuses a call with :func:`needs_sign_in_message`. A refresh the authorization server
refuses (``invalid_grant``, ``invalid_client``, 401) deletes the tokens (the
registration stays); one that fails for the network, a 5xx or a 429 keeps them, and the
call fails as a temporary fault (:attr:`TokenKeeper.trouble`).

No token leaves the keeper except in an ``Authorization`` header to the server it is
for, or a token or revocation request to its authorization server: every value it has
held (its client secret, and its newest :data:`TOKENS_SCRUBBED` tokens: older ones are
dead at the server) is in :attr:`TokenKeeper.secrets`, which the gateway scrubs from
every text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import inspect
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthRegistrationError
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR
from pydantic import AnyUrl, ValidationError

from proxy.config.oauth_store import OAuthRecord, OAuthStore, StoredServer, StoredTokens
from proxy.config.secrets import SecretError
from proxy.config.servers import (
    HttpServer,
    OAuthSettings,
    oauth_applies,
    resolve_secrets,
    secret_values,
)
from proxy.errors import LockgateError
from proxy.upstream.connection import UpstreamUnavailable

__all__ = [
    "TOKENS_SCRUBBED",
    "AuthState",
    "AuthStateName",
    "HeldSecrets",
    "KeeperAuth",
    "OpenUrl",
    "SignInFailed",
    "SignInNeeded",
    "TokenKeeper",
    "bearer_challenge",
    "needs_sign_in_message",
    "sign_in",
]

log = logging.getLogger(__name__)


class _NoTracebacks(logging.Filter):
    """The SDK's auth client logs exceptions whose text quotes what the authorization
    server answered (tokens and client secrets included, when the answer was not the
    JSON it expected): its lines keep their words, never the exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is not None:
            record.exc_info, record.exc_text = None, None
            record.msg = f"{record.msg} (its details are left out: they may hold a token)"
        return True


logging.getLogger("mcp.client.auth.oauth2").addFilter(_NoTracebacks())  # its own logger

AuthStateName = Literal["not_signed_in", "needs_sign_in", "signed_in", "refreshing"]
# Where the person's browser is sent: the app opens it, the CLI prints it too.
OpenUrl = Callable[[str], Awaitable[None] | None]

PROBE_VERSION = "2025-11-25"  # the MCP-Protocol-Version of the sign-in probe
REFRESH_MARGIN = 60.0  # seconds before expiry a token is renewed (half its life if shorter)
RETRY_REFRESH_AFTER = 10.0  # seconds after a refresh failed for the network before another
RETRY_KEYRING_AFTER = 30.0  # seconds after the keyring failed before it is read again
SIGN_IN_TIMEOUT = 300.0
_HTTP_TIMEOUT = 30.0  # a whole token or revocation request, answer read included
_MAX_ANSWER = 64 * 1024  # an authorization server's answer, read at most
_MAX_SAID = 300  # characters of an authorization server's own words Lockgate repeats
_PERMANENT_REFUSALS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
CALLBACK_PATH = "/callback"


class SignInFailed(LockgateError):
    """Signing in to a server did not work; what was stored before is unchanged."""

    title = "Sign-in did not work"


class SignInNeeded(UpstreamUnavailable):
    """A server's calls are refused until a person signs in to it."""

    title = "A server needs a sign-in"


def needs_sign_in_message(server: str, why: str) -> str:
    """What a client (and the audit log) is told when a call is refused for want of a
    sign-in: what is wrong and what a person does about it."""
    return (
        f"server {server!r} needs sign-in: {why}. A person can sign in from Lockgate's "
        f"Servers tab or run: lockgate auth login {server}"
    )


def bearer_challenge(response: httpx2.Response) -> bool:
    """Whether ``response`` is a 401 that asks for a Bearer token (RFC 6750)."""
    if response.status_code != 401:
        return False
    return any(
        value.strip().lower().startswith("bearer")
        for header in response.headers.get_list("www-authenticate")
        for value in header.split(",")
    )


@dataclass(frozen=True, slots=True)
class AuthState:
    """One server's sign-in as a person may see it (never a token)."""

    state: AuthStateName
    why: str | None = None
    expires_at: float | None = None  # of the access token, wall-clock seconds
    checked: bool = True  # False: the keyring has not been read for it yet this run


# -- the keeper --------------------------------------------------------------------------


TOKENS_SCRUBBED = 32  # a keeper's newest token values, scrubbed from every text


class HeldSecrets:
    """The secret values a keeper holds, to scrub from texts: its client secrets (few,
    kept while it lives) and its newest tokens. A live collection: a connection handed
    it sees every token renewed after it was made. Bounded, so a sign-in renewed every
    hour for months does not make each scrub slower."""

    def __init__(self) -> None:
        self._lasting: set[str] = set()
        self._tokens: deque[str] = deque(maxlen=TOKENS_SCRUBBED)

    def hold_client_secret(self, value: object) -> None:
        if isinstance(value, str) and value:
            self._lasting.add(value)

    def hold_tokens(self, tokens: StoredTokens) -> None:
        for value in (tokens.access_token, tokens.refresh_token):
            if not value:
                continue
            if value in self._tokens:
                self._tokens.remove(value)  # the newest again: the last to go
            self._tokens.append(value)

    def __iter__(self) -> Iterator[str]:
        return iter((*self._lasting, *self._tokens))

    def __len__(self) -> int:
        return len(self._lasting) + len(self._tokens)

    def __contains__(self, value: object) -> bool:
        return value in self._lasting or value in self._tokens


class TokenKeeper:
    """The tokens of one remote server, for every session of it (see the module's text).

    ``clock`` is wall-clock seconds (expiry times outlive the process). ``on_change`` is
    called on the gateway's loop with each new :class:`AuthState`.
    """

    def __init__(
        self,
        spec: HttpServer,
        store: OAuthStore,
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[AuthState], None] | None = None,
    ) -> None:
        self.spec = spec
        self.server = spec.name
        self._store = store
        self._clock = clock
        self._on_change = on_change
        self._lock = asyncio.Lock()  # around a refresh, never around a request
        self._load_lock = asyncio.Lock()
        self._loaded = False
        self._load_again_after = -math.inf
        self._tokens: StoredTokens | None = None
        self._client: dict[str, Any] | None = None  # the registration, secret resolved
        self._client_secret: str | None = None  # servers.json's, from the keyring
        self._discovered: StoredServer | None = None
        self._state: AuthStateName = "not_signed_in"
        self._why: str | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._generation = 0  # a sign-in or sign-out since a refresh began makes it moot
        self._unproven = 0  # refreshes since the server last accepted a token of ours
        self._retry_after = -math.inf
        self._signing_in = False
        self.trouble: str | None = None  # the last refresh failed for a while (temporary)
        # the secret values this keeper holds: none may appear in a text that leaves
        self.secrets = HeldSecrets()

    @property
    def identity(self) -> tuple[str, OAuthSettings | None]:
        """What a keeper is for: a server whose url or ``oauth`` changes gets a new one."""
        return (self.spec.url, self.spec.oauth)

    # -- what it knows ---------------------------------------------------------------

    def status(self) -> AuthState:
        expires = self._tokens.expires_at if self._tokens is not None else None
        return AuthState(self._state, self._why, expires, checked=self._loaded)

    def refusal(self) -> str | None:
        """The message a call is refused with now (None: calls may go)."""
        if self._state != "needs_sign_in":
            return None
        return needs_sign_in_message(self.server, self._why or "no one has signed in to it")

    def explain(self, exc: BaseException) -> str | None:
        """Why a request this keeper authorised failed with ``exc``, if the keeper knows:
        the sign-in is gone, or (for the transport's word for an HTTP error, which a 401
        is) it could not be renewed just now. None: ``exc`` says it."""
        refused = self.refusal()
        if refused is not None:
            return refused
        http_error = (
            isinstance(exc, MCPError)
            and exc.error.code == INTERNAL_ERROR
            and exc.error.message == "Server returned an error response"
        )
        if self.trouble is not None and http_error:
            return (
                f"server {self.server!r}: Lockgate could not renew its sign-in just now "
                f"({self.trouble}); try again in a moment"
            )
        return None

    def _set(self, state: AuthStateName, why: str | None) -> None:
        if (state, why) == (self._state, self._why):
            return
        self._state, self._why = state, why
        log.info("sign-in of %s: %s%s", self.server, state, f" ({why})" if why else "")
        if self._on_change is not None:
            self._on_change(self.status())

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "[secret]")
        return text

    # -- loading -----------------------------------------------------------------------

    async def load(self) -> None:
        """Read the keyring once (again after it failed, at most every
        :data:`RETRY_KEYRING_AFTER` s: a locked keyring may ask the person each time).
        Never raises: a keyring that cannot be used leaves the server not signed in,
        saying why."""
        async with self._load_lock:
            if self._loaded or self._clock() < self._load_again_after:
                return  # read by whoever waited first, or failed a moment ago
            try:
                record, secret = await asyncio.to_thread(self._read)
            except SecretError as exc:
                self._load_again_after = self._clock() + RETRY_KEYRING_AFTER
                self._set(
                    "needs_sign_in" if self.spec.oauth is not None else "not_signed_in",
                    str(exc),
                )
                return
            self._client_secret = secret
            self.secrets.hold_client_secret(secret)
            self._take(record)
            self._loaded = True

    def _read(self) -> tuple[OAuthRecord, str | None]:
        secret: str | None = None
        if self.spec.oauth is not None and self.spec.oauth.client_secret is not None:
            resolved = resolve_secrets(self.spec, self._store.secrets)
            assert isinstance(resolved, HttpServer)
            assert resolved.oauth is not None
            secret = resolved.oauth.client_secret
        return self._store.load(self.server, self.spec.url), secret

    def _take(self, record: OAuthRecord) -> None:
        """Put ``record`` (from the keyring, or a sign-in) in force."""
        self._generation += 1
        self._discovered = record.server
        self._client = self._registration(record.client)
        tokens = record.tokens
        client_id = self._client.get("client_id") if self._client is not None else None
        if tokens is not None and client_id is not None and tokens.client_id != client_id:
            tokens = None  # issued to another client than servers.json names now
        self._tokens = tokens
        self._unproven = 0
        self.trouble = None
        self._retry_after = -math.inf
        if tokens is not None:
            self.secrets.hold_tokens(tokens)
            self._set("signed_in", None)
        elif self.spec.oauth is not None:
            self._set("needs_sign_in", "no one has signed in to it in Lockgate yet")
        elif record.server is not None:
            self._set("needs_sign_in", "it was signed out of (or its sign-in ended)")
        else:
            self._set("not_signed_in", None)

    def _registration(self, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """The client to refresh as: servers.json's own, or the one Lockgate registered."""
        settings = self.spec.oauth
        if settings is not None and settings.client_id is not None:
            client: dict[str, Any] = {"client_id": settings.client_id}
            if stored is not None and stored.get("client_id") == settings.client_id:
                client["token_endpoint_auth_method"] = stored.get("token_endpoint_auth_method")
            if self._client_secret is not None:
                client["client_secret"] = self._client_secret
            return client
        if stored is not None:
            self.secrets.hold_client_secret(stored.get("client_secret"))
        return stored

    # -- for the requests --------------------------------------------------------------

    async def bearer(self) -> str | None:
        """The access token to send now, renewed first if it expires within the margin.
        None: there is none (the request goes without). Never raises."""
        try:
            if not self._loaded:
                await self.load()
            tokens = self._tokens
            if tokens is None or not self._due(tokens):
                return tokens.access_token if tokens is not None else None
            if self._clock() < self._retry_after:
                return tokens.access_token  # it failed a moment ago: not again yet
            renewed = await self._renew(tokens.access_token)
            return renewed.access_token if renewed is not None else None
        except Exception:
            log.exception("the sign-in of %s could not be read", self.server)
            return None

    async def unauthorized(self, sent: str | None) -> str | None:
        """The server answered 401 with a Bearer challenge to a request sent with
        ``sent``: the token to send it again with, or None (it fails as it is, and the
        keeper's state says why). Never raises."""
        try:
            return await self._unauthorized(sent)
        except Exception:
            log.exception("the sign-in of %s could not be renewed", self.server)
            return None

    async def _unauthorized(self, sent: str | None) -> str | None:
        if not self._loaded:
            await self.load()
        tokens = self._tokens
        if tokens is None:
            if self._state != "needs_sign_in":  # else it knows better why already
                self._set("needs_sign_in", "the server asks for an OAuth sign-in")
            return None
        if tokens.access_token != sent:
            return tokens.access_token  # renewed (or signed in anew) since it was sent
        if self._unproven >= 2:
            await self._lose("the server refuses the tokens its authorization server issues")
            return None
        if self._clock() < self._retry_after:
            return None
        renewed = await self._renew(sent)
        if renewed is None or renewed.access_token == sent:
            return None
        return renewed.access_token

    def accepted(self, token: str) -> None:
        """The server took ``token`` (it answered other than 401)."""
        if self._tokens is not None and self._tokens.access_token == token:
            self._unproven = 0

    def _due(self, tokens: StoredTokens) -> bool:
        if tokens.expires_at is None:
            return False
        life = tokens.expires_at - tokens.obtained_at
        margin = min(REFRESH_MARGIN, life / 2) if life > 0 else REFRESH_MARGIN
        return self._clock() >= tokens.expires_at - margin

    async def _renew(self, stale: str) -> StoredTokens | None:
        """The tokens after renewing ``stale`` (once, whoever asks meanwhile)."""
        async with self._lock:
            tokens = self._tokens
            if tokens is None or tokens.access_token != stale:
                return tokens  # someone renewed it (or it is gone) while this waited
            if self._clock() < self._retry_after:
                return tokens  # it failed just now for those before: not once a caller
            if self._refresh_task is None:
                self._refresh_task = asyncio.get_running_loop().create_task(
                    self._refresh(tokens), name=f"lockgate-oauth-refresh-{self.server}"
                )
            # shielded: a call cancelled meanwhile must not cut the refresh short, or the
            # rotated refresh token would be lost with its answer
            await asyncio.shield(self._refresh_task)
            return self._tokens

    async def _refresh(self, tokens: StoredTokens) -> None:
        generation = self._generation
        try:
            if tokens.refresh_token is None:
                await self._lose("the sign-in expired and the server gave no way to renew it")
                return
            self._set("refreshing", None)
            outcome = await self._post_refresh(tokens, tokens.refresh_token)
            if generation != self._generation:
                return  # signed in anew or out meanwhile: that one stands
            if isinstance(outcome, StoredTokens):
                await self._renewed(outcome)
            elif outcome[0] == "permanent":
                await self._lose(outcome[1], client_refused=outcome[2] == "invalid_client")
            else:
                self.trouble = outcome[1]
                self._retry_after = self._clock() + RETRY_REFRESH_AFTER
                self._set("signed_in", f"could not renew the sign-in just now: {outcome[1]}")
        except Exception as exc:  # never out of the task: its waiters only read the state
            log.exception("refreshing the sign-in of %s failed", self.server)
            self.trouble = self._scrub(f"{type(exc).__name__}: {exc}")
            self._retry_after = self._clock() + RETRY_REFRESH_AFTER
            if self._state == "refreshing":
                self._set("signed_in", f"could not renew the sign-in just now: {self.trouble}")
        finally:
            self._refresh_task = None

    async def _post_refresh(
        self, tokens: StoredTokens, refresh_token: str
    ) -> StoredTokens | tuple[str, str, str | None]:
        """POST the refresh; the new tokens, or ("permanent" | "temporary", why, error)."""
        client = self._client or {"client_id": tokens.client_id}
        data = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": str(client.get("client_id") or tokens.client_id),
        }
        if tokens.resource:
            data["resource"] = tokens.resource
        data, headers = _client_auth(client, data, self._discovered)
        endpoint = self._token_endpoint()
        asked_at = self._clock()
        try:
            status, body = await _post_form(endpoint, data, headers)
        except (httpx2.HTTPError, TimeoutError, _TooLong) as exc:
            why = _printable(self._scrub(str(exc))) or type(exc).__name__
            return ("temporary", f"{endpoint} cannot be reached: {why}", None)
        if status == 200:
            try:
                token = OAuthToken.model_validate_json(body)
            except ValidationError:
                return ("temporary", "the authorization server's answer was not a token", None)
            expires = asked_at + token.expires_in if token.expires_in else None
            return replace(
                tokens,
                access_token=token.access_token,
                refresh_token=token.refresh_token or refresh_token,
                token_type=token.token_type,
                scope=token.scope or tokens.scope,
                expires_at=expires,
                obtained_at=asked_at,
            )
        error, description = _oauth_error(body)
        said = _printable(
            self._scrub(
                f"{error or f'HTTP {status}'}" + (f": {description}" if description else "")
            )
        )
        temporary = status >= 500 or status in (408, 429)
        if temporary and error not in _PERMANENT_REFUSALS:
            return ("temporary", f"the authorization server answered {said}", error)
        return ("permanent", f"the authorization server refused to renew it ({said})", error)

    def _token_endpoint(self) -> str:
        endpoint = self._discovered.token_endpoint if self._discovered is not None else None
        if endpoint is not None:
            return endpoint
        parts = urlsplit(self.spec.url)  # the 2025-03-26 spec's default, with no metadata
        return urljoin(f"{parts.scheme}://{parts.netloc}", "/token")

    async def _renewed(self, tokens: StoredTokens) -> None:
        self.secrets.hold_tokens(tokens)
        self._tokens = tokens
        self._unproven += 1
        self.trouble = None
        self._retry_after = -math.inf
        try:
            # the old refresh token is spent: the keyring must hold the new one
            await asyncio.to_thread(self._store.save_tokens, self.server, tokens)
        except SecretError as exc:
            log.warning("the renewed sign-in of %s is not in the keyring: %s", self.server, exc)
            self._set("signed_in", f"renewed, but the keyring could not keep it: {exc}")
            return
        self._set("signed_in", None)

    async def _lose(self, why: str, *, client_refused: bool = False) -> None:
        """The tokens cannot be used any more: forget them (and a registration the
        authorization server no longer knows); a person must sign in again."""
        self._tokens = None
        self._generation += 1
        self.trouble = None
        registered = self.spec.oauth is None or self.spec.oauth.client_id is None
        try:
            await asyncio.to_thread(self._store.delete_tokens, self.server)
            if client_refused and registered:
                self._client = None
                await asyncio.to_thread(self._store.delete_client, self.server)
        except SecretError as exc:
            log.warning("the keyring still holds the dead sign-in of %s: %s", self.server, exc)
        self._set("needs_sign_in", why)

    # -- a person's doing ----------------------------------------------------------------

    async def sign_in(self, open_url: OpenUrl, *, timeout: float = SIGN_IN_TIMEOUT) -> None:
        """Sign in (:func:`sign_in`) and put the new tokens in force for every session.

        Raises:
            SignInFailed: it did not work; the earlier sign-in stays.
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        if self._signing_in:
            raise SignInFailed(
                f"a sign-in to {self.server!r} is already under way; finish it in the browser"
            )
        self._signing_in = True
        try:
            record = await sign_in(
                self.spec, self._store, open_url, timeout=timeout, clock=self._clock
            )
            if self.spec.oauth is not None and self.spec.oauth.client_secret is not None:
                resolved = await asyncio.to_thread(resolve_secrets, self.spec, self._store.secrets)
                assert isinstance(resolved, HttpServer)
                assert resolved.oauth is not None
                self._client_secret = resolved.oauth.client_secret
                self.secrets.hold_client_secret(self._client_secret)
            self._take(record)
            self._loaded = True
        finally:
            self._signing_in = False

    async def sign_out(self) -> None:
        """Revoke the tokens at the authorization server (if it has a revocation
        endpoint; best effort) and forget them here; the registration stays.

        Raises:
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        await self.load()
        await self.aclose()  # a refresh under way: its rotated tokens are the ones to revoke
        tokens, self._tokens = self._tokens, None
        self._generation += 1
        if tokens is not None:
            await self._revoke(tokens)
        await asyncio.to_thread(self._store.delete_tokens, self.server)
        self.trouble = None
        self._set("needs_sign_in", "it was signed out of in Lockgate")

    async def _revoke(self, tokens: StoredTokens) -> None:
        endpoint = self._discovered.revocation_endpoint if self._discovered else None
        if endpoint is None:
            return
        client = self._client or {"client_id": tokens.client_id}
        for token, hint in (
            (tokens.refresh_token, "refresh_token"),
            (tokens.access_token, "access_token"),
        ):
            if token is None:
                continue
            data = {
                "token": token,
                "token_type_hint": hint,
                "client_id": str(client.get("client_id")),
            }
            data, headers = _client_auth(client, data, self._discovered)
            try:
                status, _ = await _post_form(endpoint, data, headers)
                if status == 400 and not client.get("client_secret"):
                    # A public client's request as RFC 7009 has it; an authorization
                    # server built with the MCP SDK's modules wants the field all the
                    # same, and RFC 6749 §2.3.1 lets it be sent empty.
                    status, _ = await _post_form(endpoint, {**data, "client_secret": ""}, headers)
            except (httpx2.HTTPError, TimeoutError, _TooLong) as exc:
                why = _printable(self._scrub(str(exc))) or type(exc).__name__
                log.warning("could not revoke the %s of %s: %s", hint, self.server, why)
                continue
            if status != 200:
                log.warning("revoking the %s of %s: HTTP %d", hint, self.server, status)

    async def aclose(self) -> None:
        """Let a refresh under way finish (its rotated token must reach the keyring)."""
        task = self._refresh_task
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 10)


class KeeperAuth(httpx2.Auth):
    """The ``httpx2.Auth`` of a live session's HTTP client: the keeper's token on every
    request, renewed once on a 401 Bearer challenge. It never raises: what went wrong is
    the keeper's state, which the gateway reads."""

    requires_request_body = False
    requires_response_body = False  # an event stream must not be read to its end here

    def __init__(self, keeper: TokenKeeper) -> None:
        self.keeper = keeper

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response]:
        raise RuntimeError("KeeperAuth works with httpx2.AsyncClient only")

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self.keeper.bearer()
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if bearer_challenge(response):
            retry = await self.keeper.unauthorized(token)
            if retry is None:
                return
            request.headers["Authorization"] = f"Bearer {retry}"
            response = yield request
            token = retry
            if bearer_challenge(response):
                return
        if token is not None:
            self.keeper.accepted(token)


def _client_auth(
    client: dict[str, Any], data: dict[str, str], discovered: StoredServer | None
) -> tuple[dict[str, str], dict[str, str]]:
    """``data`` and the headers of a token or revocation request, with the client's
    authentication as it registered (RFC 6749 §2.3.1)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    secret = client.get("client_secret")
    if not isinstance(secret, str) or not secret:
        return data, headers
    method = client.get("token_endpoint_auth_method") or _secret_method(discovered)
    if method == "client_secret_post":
        return {**data, "client_secret": secret}, headers
    if method == "client_secret_basic":
        credentials = f"{quote(str(client['client_id']), safe='')}:{quote(secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return data, headers


def _secret_method(discovered: StoredServer | None) -> str:
    """How a client registered by hand sends its secret: basic if the authorization
    server takes it (RFC 8414's default when it does not say), else post."""
    supported = (
        (discovered.authorization_server or {}).get("token_endpoint_auth_methods_supported")
        if discovered is not None
        else None
    )
    if not isinstance(supported, list) or "client_secret_basic" in supported:
        return "client_secret_basic"
    return "client_secret_post" if "client_secret_post" in supported else "client_secret_basic"


class _TooLong(LockgateError):
    """An authorization server's answer longer than :data:`_MAX_ANSWER`."""

    title = "An authorization server's answer is too long"


async def _post_form(url: str, data: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
    """POST a token or revocation request: the status and at most :data:`_MAX_ANSWER`
    bytes of the answer, all of it within :data:`_HTTP_TIMEOUT` (a server that drips
    its answer a byte at a time is not waited for byte after byte).

    Raises:
        httpx2.HTTPError: it could not be sent or read.
        TimeoutError: it took longer than that.
        _TooLong: the answer is longer.
    """
    async with (
        asyncio.timeout(_HTTP_TIMEOUT),
        httpx2.AsyncClient(timeout=_HTTP_TIMEOUT) as http,
        http.stream("POST", url, data=data, headers=headers) as response,
    ):
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _MAX_ANSWER:
                raise _TooLong(f"its answer is longer than {_MAX_ANSWER} bytes")
        return response.status_code, bytes(body)


def _printable(text: str, limit: int = _MAX_SAID) -> str:
    """``text`` fit to repeat to a person, a client or a log: no control characters (a
    terminal would obey them), at most ``limit`` characters."""
    cleaned = "".join(c if c.isprintable() else " " for c in text).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _oauth_error(body: bytes) -> tuple[str | None, str | None]:
    """An OAuth error answer's ``error`` and ``error_description`` (RFC 6749 §5.2)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    error, description = answer.get("error"), answer.get("error_description")
    return (
        error if isinstance(error, str) else None,
        description if isinstance(description, str) else None,
    )


# -- signing in ---------------------------------------------------------------------------


async def sign_in(
    spec: HttpServer,
    store: OAuthStore,
    open_url: OpenUrl,
    *,
    timeout: float = SIGN_IN_TIMEOUT,
    clock: Callable[[], float] = time.time,
) -> OAuthRecord:
    """Sign in to ``spec`` in the person's browser and keep the result in the keyring.

    ``open_url`` is given the authorization page's address (the app opens it; the CLI
    prints it as well). ``timeout`` is for all of it, the person's part included.
    Returns what was stored.

    Raises:
        SignInFailed: it did not work (refused, timed out, the server asked for no
            sign-in, a discovery or exchange failed); nothing stored was changed.
        proxy.config.secrets.SecretError: the keyring cannot be used, or servers.json's
            client secret is not in it.
    """
    if not oauth_applies(spec):
        raise SignInFailed(
            f"server {spec.name!r} sets its own Authorization header in servers.json; "
            "Lockgate signs in only to remote servers that leave it to Lockgate"
        )
    resolved = await asyncio.to_thread(resolve_secrets, spec, store.secrets)
    assert isinstance(resolved, HttpServer)
    hidden = [v for v in secret_values(spec, resolved) if v]
    stored = await asyncio.to_thread(store.load, spec.name, spec.url)
    settings = resolved.oauth or OAuthSettings()
    configured = settings.client_id is not None
    old_client = None if configured else stored.client

    def scrub(text: str) -> str:
        for secret in hidden:
            text = text.replace(secret, "[secret]")
        return text

    try:
        async with asyncio.timeout(timeout):
            async with _Callback.listening(spec.name, _registered_port(old_client)) as callback:
                record = await _authorize(
                    spec,
                    resolved,
                    settings,
                    old_client,
                    callback=callback,
                    open_url=open_url,
                    pinned=_pinned_issuer(settings, stored.server),
                )
    except TimeoutError:
        raise SignInFailed(
            f"the sign-in to {spec.name!r} was not finished within {timeout:g} s; "
            "nothing was changed"
        ) from None
    except SignInFailed as exc:
        raise SignInFailed(scrub(exc.message)) from None
    except OAuthRegistrationError as exc:
        advice = (
            ""
            if configured
            else "; if its authorization server lets no client register itself, register "
            'one there and name it in servers.json: "oauth": {"client_id": "...", '
            '"client_secret": "keyring:NAME"}'
        )
        said = scrub(_told(exc))
        raise SignInFailed(f"the sign-in to {spec.name!r} failed: {said}{advice}") from None
    except Exception as exc:  # the SDK's, httpx's, a server's odd answer: in plain words
        said = scrub(_told(exc))
        raise SignInFailed(f"the sign-in to {spec.name!r} failed: {said}") from None
    now = clock()
    tokens = record.tokens
    assert tokens is not None
    if tokens.expires_at is not None:  # it was a lifetime until now (see _authorize)
        tokens = replace(tokens, expires_at=now + tokens.expires_at, obtained_at=now)
    else:
        tokens = replace(tokens, obtained_at=now)
    record = replace(record, tokens=tokens)
    await asyncio.to_thread(store.save, spec.name, spec.url, record)
    return record


async def _authorize(
    spec: HttpServer,
    resolved: HttpServer,
    settings: OAuthSettings,
    old_client: dict[str, Any] | None,
    *,
    callback: _Callback,
    open_url: OpenUrl,
    pinned: str | None = None,
) -> OAuthRecord:
    """The SDK's provider, on a probe of its own: the record to store, with the access
    token's lifetime (not yet a time) in ``expires_at``. A client secret from
    servers.json goes only to the authorization server ``pinned`` names (when it names
    one), checked before the browser opens and before anything is sent with it."""
    configured = settings.client_id is not None
    client_info: OAuthClientInformationFull | None = None
    if configured:
        client_info = OAuthClientInformationFull(
            client_id=settings.client_id or "",
            client_secret=settings.client_secret,
            redirect_uris=[AnyUrl(callback.uri)],
            token_endpoint_auth_method="client_secret_basic" if settings.client_secret else "none",
        )
    elif old_client is not None:
        try:
            reused = OAuthClientInformationFull.model_validate(old_client)
        except ValidationError:
            reused = None
        # the authorization server may compare redirect URIs exactly, port included
        if reused is not None and callback.uri in [str(u) for u in reused.redirect_uris or []]:
            client_info = reused
    storage = _SignInStorage(client_info)
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(callback.uri)],
        client_name="Lockgate",
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",  # noqa: S106 - a native app: PKCE, no secret (RFC 8252)
        scope=" ".join(settings.scopes) or None,
    )
    provider: OAuthClientProvider

    async def redirect(url: str) -> None:
        context = provider.context
        if configured and settings.client_secret and pinned is not None:
            found = str(context.oauth_metadata.issuer) if context.oauth_metadata else None
            if found is None or _issuer(found) != _issuer(pinned):
                raise SignInFailed(
                    f"server {spec.name!r} sends the sign-in to {found or 'an unknown'} "
                    f"authorization server, but its client secret is for {pinned}; "
                    "Lockgate did not send it. If the server really moved, set "
                    f'"issuer": "{found}" in its "oauth" in servers.json'
                )
        if settings.scopes:  # the provider puts the challenge's scopes in: the person's win
            url = _with_query(url, scope=" ".join(settings.scopes))
            context.client_metadata.scope = " ".join(settings.scopes)
        if configured and context.client_info is not None and settings.client_secret:
            method = _secret_method(_discovered(provider))
            context.client_info.token_endpoint_auth_method = method
        callback.expect(dict(parse_qsl(urlsplit(url).query)).get("state"))
        opened = open_url(url)
        if inspect.isawaitable(opened):
            await opened

    provider = OAuthClientProvider(
        spec.url,
        metadata,
        storage,
        redirect_handler=redirect,
        callback_handler=callback.result,
    )
    headers = {
        **resolved.headers,
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROBE_VERSION,
    }
    probe = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROBE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "lockgate-sign-in", "version": "1"},
        },
    }
    async with httpx2.AsyncClient(auth=provider, timeout=_HTTP_TIMEOUT) as http:
        response = await http.post(spec.url, json=probe, headers=headers)
        session = response.headers.get("mcp-session-id")
        if session is not None and storage.tokens is not None:
            with contextlib.suppress(httpx2.HTTPError):  # the probe's session is not wanted
                await http.delete(spec.url, headers={"mcp-session-id": session, **headers})
    token, context = storage.tokens, provider.context
    if token is None or context.client_info is None:
        raise SignInFailed(
            f"server {spec.name!r} did not ask for a sign-in (it answered HTTP "
            f"{response.status_code}); nothing was changed"
        )
    client = context.client_info.model_dump(mode="json", exclude_none=True)
    if configured:
        client.pop("client_secret", None)  # it stays in the person's own keyring entry
    resource = (
        context.get_resource_url()
        if context.should_include_resource_param(context.protocol_version)
        else None
    )
    prm, asm = context.protected_resource_metadata, context.oauth_metadata
    return OAuthRecord(
        tokens=StoredTokens(
            access_token=token.access_token,
            refresh_token=token.refresh_token,
            token_type=token.token_type,
            scope=token.scope,
            expires_at=float(token.expires_in) if token.expires_in else None,
            obtained_at=0.0,
            server_url=spec.url,
            resource=resource,
            client_id=context.client_info.client_id,
        ),
        client=client,
        server=StoredServer(
            server_url=spec.url,
            auth_server_url=context.auth_server_url,
            protected_resource=prm.model_dump(mode="json", exclude_none=True) if prm else None,
            authorization_server=asm.model_dump(mode="json", exclude_none=True) if asm else None,
        ),
    )


def _discovered(provider: OAuthClientProvider) -> StoredServer | None:
    asm = provider.context.oauth_metadata
    if asm is None:
        return None
    return StoredServer(
        server_url=provider.context.server_url,
        authorization_server=asm.model_dump(mode="json", exclude_none=True),
    )


def _pinned_issuer(settings: OAuthSettings, stored: StoredServer | None) -> str | None:
    """Where a client secret from servers.json may go: the ``issuer`` servers.json
    names, else the authorization server it was first signed in with (kept in the
    keyring); None for the first sign-in of a server that names none."""
    if settings.issuer is not None:
        return settings.issuer
    if stored is not None and stored.authorization_server is not None:
        issuer = stored.authorization_server.get("issuer")
        if isinstance(issuer, str):
            return issuer
    return None


def _issuer(url: str) -> str:
    """An issuer URL as compared: without a trailing slash (pydantic adds one)."""
    return url.rstrip("/")


def _told(exc: BaseException) -> str:
    """What went wrong, in words safe to repeat. A server's answer Lockgate could not
    read is not quoted: the SDK's message holds the answer itself, and a token or a
    client secret can be in it (an answer in another format than JSON)."""
    text = str(exc)
    if isinstance(exc, ValidationError) or text.startswith(
        ("Invalid token response", "Invalid registration response", "Invalid refresh response")
    ):
        return "the authorization server's answer was not one Lockgate can read"
    return _printable(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _with_query(url: str, **values: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(values)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _registered_port(client: dict[str, Any] | None) -> int | None:
    """The loopback port of the redirect URI a stored registration was made with: using
    it again lets the registration be reused where redirect URIs are compared exactly."""
    for uri in (client or {}).get("redirect_uris") or []:
        parts = urlsplit(str(uri))
        if parts.hostname == "127.0.0.1" and parts.path == CALLBACK_PATH and parts.port:
            return parts.port
    return None


class _SignInStorage:
    """The provider's ``TokenStorage`` during a sign-in: in memory, so nothing reaches
    the keyring before the whole sign-in has worked. It offers no tokens, so the
    provider authorizes in full instead of refreshing."""

    def __init__(self, client: OAuthClientInformationFull | None) -> None:
        self.tokens: OAuthToken | None = None
        self.client = client

    async def get_tokens(self) -> OAuthToken | None:
        return None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Lockgate</title></head>
<body style="font-family: sans-serif; margin: 3em"><h1>{title}</h1><p>{text}</p></body></html>
"""
_MAX_REQUEST = 16 * 1024


class _Callback:
    """The loopback server the authorization server sends the browser back to: one
    ``GET /callback`` with the code and the ``state`` of the sign-in it belongs to."""

    def __init__(self, server: str) -> None:
        self.server_name = server
        self.uri = ""
        self._state: str | None = None
        self._result: asyncio.Future[AuthorizationCodeResult] = (
            asyncio.get_running_loop().create_future()
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def listening(cls, server: str, port: int | None) -> AsyncGenerator[_Callback]:
        callback = cls(server)
        listener: asyncio.Server | None = None
        if port is not None:
            with contextlib.suppress(OSError):  # taken: another port, and a new registration
                listener = await asyncio.start_server(callback._serve, "127.0.0.1", port)
        if listener is None:
            listener = await asyncio.start_server(callback._serve, "127.0.0.1", 0)
        bound = listener.sockets[0].getsockname()[1]
        callback.uri = f"http://127.0.0.1:{bound}{CALLBACK_PATH}"
        try:
            yield callback
        finally:
            listener.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.wait_closed(), 2)
            if not callback._result.done():
                callback._result.cancel()
            elif not callback._result.cancelled():
                callback._result.exception()  # a refusal nobody waited for is not an error

    def expect(self, state: str | None) -> None:
        self._state = state

    async def result(self) -> AuthorizationCodeResult:
        return await asyncio.shield(self._result)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status, title, text = self._answer(head[:_MAX_REQUEST].decode("latin-1"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, title, text = "400 Bad Request", "Not understood", "Lockgate could not read it."
        page = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(page)}\r\nCache-Control: no-store\r\n"
            "Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n".encode()
            + page
        )
        with contextlib.suppress(OSError):
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    def _answer(self, head: str) -> tuple[str, str, str]:
        method, _, rest = head.partition(" ")
        target = rest.partition(" ")[0]
        parts = urlsplit(target)
        if method != "GET" or parts.path != CALLBACK_PATH:
            return "404 Not Found", "Not found", "This is Lockgate's sign-in page; nothing here."
        if self._result.done():
            return "200 OK", "Already done", "This sign-in is over; you can close this tab."
        query = dict(parse_qsl(parts.query))
        name = self.server_name
        if query.get("state") is None or query.get("state") != self._state:
            # refused, and the sign-in goes on: a page or a program that knows the port
            # must not be able to end a person's sign-in with one request
            log.warning("sign-in to %s: a callback with another state was refused", name)
            return (
                "400 Bad Request",
                "Not this sign-in",
                (
                    "Lockgate did not start this sign-in; nothing was changed. "
                    "You can close this tab."
                ),
            )
        if "error" in query:
            said = _printable(
                query["error"]
                + (f": {query['error_description']}" if query.get("error_description") else "")
            )
            self._result.set_exception(
                SignInFailed(
                    f"the authorization server did not sign in to {name!r} ({said}); "
                    "nothing was changed"
                )
            )
            return (
                "200 OK",
                "Not signed in",
                (f"The sign-in to {name} was not completed ({said}). You can close this tab."),
            )
        if not query.get("code"):
            self._result.set_exception(
                SignInFailed(f"the browser came back from {name!r} without a code")
            )
            return "400 Bad Request", "Not signed in", "No code came back. You can close this tab."
        self._result.set_result(
            AuthorizationCodeResult(code=query["code"], state=query["state"], iss=query.get("iss"))
        )
        return "200 OK", "Signed in", (f"Lockgate is signed in to {name}. You can close this tab.")
