"""A real OAuth 2.1 authorization server and the MCP server it protects, for the tests of
Lockgate's sign-in to remote servers.

    python oauth_server.py [--access-lifetime SECONDS] [--refresh-lifetime SECONDS]
                           [--no-dcr] [--client-id ID --client-secret SECRET]
                           [--scopes "mcp:read mcp:write"]

One process, two HTTP servers on two loopback ports, so the authorization server (the
issuer) and the resource server (the MCP server) are different origins, as they are in
the world. They share their token state in memory. Once both sockets are bound the
process prints one JSON line and serves until SIGTERM::

    {"issuer": "http://127.0.0.1:A", "mcp": "http://127.0.0.1:R/mcp",
     "control": "http://127.0.0.1:A/_test"}

The authorization server is the mcp SDK's own endpoints (``create_auth_routes``: RFC 8414
metadata, /authorize, /token with PKCE S256, /register, /revoke) over the provider below:

- /authorize approves at once, as if the person had clicked Allow: it redirects to the
  client's redirect_uri with ``code`` and ``state`` (or, after ``POST /_test/deny_next``,
  with ``error=access_denied`` once). It needs ``resource`` (RFC 8707) naming the MCP
  URL, as the MCP specification requires of clients; anything else answers
  ``invalid_target``. Loopback redirect URIs may change port (RFC 8252 §7.3).
- /token issues an access token bound to that resource, expiring after
  ``--access-lifetime``, and a refresh token that works once: each refresh rotates it,
  and presenting a used one again is refused ``invalid_grant`` and counted as a reuse.
  Clients authenticate the way they registered; the pre-registered client
  (``--client-id``/``--client-secret``) may use client_secret_basic or client_secret_post.
- /register (dynamic client registration) is off with ``--no-dcr``.

The resource server is an ``MCPServer`` over streamable HTTP, with the SDK's bearer
middleware: no token, or an expired, revoked or other-resource token, answers 401 with
``WWW-Authenticate: Bearer ... resource_metadata="http://127.0.0.1:R/.well-known/
oauth-protected-resource/mcp"``, whose metadata names the issuer. Its tools: ``whoami``
(the token's client_id, scopes and resource, as JSON text) and ``echo`` (``message`` →
``Echo: MESSAGE``).

Test-only switches, under the ``control`` URL:
``GET /_test/stats`` (the counters of :class:`Stats` and ``last_authorize``, the query of
the last /authorize request), ``POST /_test/revoke_access``, ``POST /_test/revoke_refresh``,
``POST /_test/expire_access``, ``POST /_test/deny_next`` (each answers 204), and
``POST /_test/answer_tokens`` with ``{"status", "body", "content_type", "times"}``: the next
``times`` POST /token requests are counted and answered with exactly that (``body`` as
text, sent in Latin-1 when ``"latin1": true``), as a misbehaving authorization server
would answer: a form-encoded token, a 503, a megabyte, words with terminal escapes.

Written for Lockgate's tests, on the SDK's server-side OAuth pieces; no code of the SDK's
examples is reused.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import contextvars
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import create_auth_routes
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CODE_LIFETIME = 300  # seconds an authorization code may wait for its exchange
SUBJECT = "test-user"  # the one person who ever signs in here
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
LIFESPAN_OFF: Literal["off"] = "off"  # the authorization server has no lifespan
LIFESPAN_ON: Literal["on"] = "on"  # the MCP server's runs its session manager

# Whether the request being served carries HTTP Basic client credentials: the
# pre-registered client is then read as client_secret_basic, otherwise as _post.
basic_credentials_sent: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "basic_credentials_sent", default=False
)


def is_loopback(url: AnyUrl) -> bool:
    return url.scheme == "http" and (url.host or "") in LOOPBACK_HOSTS


def same_resource(a: str, b: str) -> bool:
    """RFC 8707 resource indicators compared as URLs: case of scheme and host, and one
    trailing slash, do not matter."""

    def canonical(url: str) -> tuple[str, str, str, str]:
        parts = urlsplit(url)
        return (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query)

    return canonical(a) == canonical(b)


class RegisteredClient(OAuthClientInformationFull):
    """A dynamically registered client. A native app's loopback redirect URI may come
    back on another port than the one registered (RFC 8252 §7.3); the SDK's own check
    compares exactly."""

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is not None and is_loopback(redirect_uri):
            for registered in self.redirect_uris or []:
                if (
                    is_loopback(registered)
                    and registered.host == redirect_uri.host
                    and registered.path == redirect_uri.path
                    and registered.query == redirect_uri.query
                ):
                    return redirect_uri
        return super().validate_redirect_uri(redirect_uri)


class PreRegisteredClient(RegisteredClient):
    """The client configured with --client-id/--client-secret: no redirect URI was
    registered for it, so any loopback one is accepted, as a desktop app's would be."""

    def validate_redirect_uri(self, redirect_uri: AnyUrl | None) -> AnyUrl:
        if redirect_uri is not None and is_loopback(redirect_uri):
            return redirect_uri
        return super().validate_redirect_uri(redirect_uri)


@dataclass
class Stats:
    """What a test asks about: counted where it happens, served by GET /_test/stats."""

    token_requests: int = 0  # every POST /token, whatever its grant and outcome
    refreshes: int = 0  # refresh_token grants that issued tokens
    refresh_reuses: int = 0  # refresh tokens presented again after they were rotated
    authorizations: int = 0  # every GET or POST /authorize
    registrations: int = 0  # clients registered through /register
    revocations: int = 0  # tokens revoked through /revoke (the client authenticated)
    last_authorize: dict[str, str] = field(default_factory=dict)


@dataclass
class Issued:
    """An access token and when it stops working (to the sub-second, where the SDK's
    `AccessToken.expires_at` counts whole seconds)."""

    token: AccessToken
    expires: float
    refresh_token: str | None = None


@dataclass
class Options:
    issuer: str
    resource: str
    access_lifetime: int = 3600
    refresh_lifetime: int = 86400
    dcr: bool = True
    client_id: str | None = None
    client_secret: str | None = None
    scopes: list[str] = field(default_factory=lambda: ["mcp:read", "mcp:write"])


class InMemoryAuthority(
    OAuthAuthorizationServerProvider[AuthorizationCode, RefreshToken, AccessToken]
):
    """The authorization server's provider (`OAuthAuthorizationServerProvider`) and the
    resource server's `TokenVerifier` at once: one in-memory store both servers read."""

    def __init__(self, options: Options, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.clock = clock
        self.stats = Stats()
        self.deny_next = False
        # POST /_test/answer_tokens: what the next token requests are answered, in order
        self.canned_token_answers: list[dict[str, Any]] = []
        self.clients: dict[str, RegisteredClient] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, Issued] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.spent_refresh: dict[str, RefreshToken] = {}

    # the clients

    def preregistered(self) -> PreRegisteredClient | None:
        if self.options.client_id is None:
            return None
        method = "client_secret_basic" if basic_credentials_sent.get() else "client_secret_post"
        return PreRegisteredClient(
            client_id=self.options.client_id,
            client_secret=self.options.client_secret,
            client_secret_expires_at=0,
            token_endpoint_auth_method=method,
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            scope=" ".join(self.options.scopes) or None,
            client_name="pre-registered test client",
        )

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if client_id == self.options.client_id:
            return self.preregistered()
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.clients[client_info.client_id] = RegisteredClient.model_validate(
            client_info.model_dump()
        )
        self.stats.registrations += 1

    # authorization codes

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        if self.deny_next:
            self.deny_next = False
            raise AuthorizeError("access_denied", "the person clicked Deny (test switch)")
        if params.resource is None or not same_resource(params.resource, self.options.resource):
            raise AuthorizeError(
                "invalid_target",
                f"resource must name this MCP server ({self.options.resource}), "
                f"not {params.resource!r} (RFC 8707)",
            )
        scopes = params.scopes
        if scopes is None:
            scopes = client.scope.split() if client.scope else list(self.options.scopes)
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=scopes,
            expires_at=self.clock() + CODE_LIFETIME,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=SUBJECT,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        code = self.codes.get(authorization_code)
        return code if code is not None and code.client_id == client.client_id else None

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        if self.codes.pop(authorization_code.code, None) is None:
            raise TokenError("invalid_grant", "authorization code was already used")
        return self.issue(
            client.client_id,
            authorization_code.scopes,
            authorization_code.resource,
            new_refresh_scopes=authorization_code.scopes,
        )

    # tokens

    def issue(
        self,
        client_id: str,
        scopes: list[str],
        resource: str | None,
        *,
        new_refresh_scopes: list[str],
    ) -> OAuthToken:
        now = self.clock()
        access = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        self.refresh[refresh] = RefreshToken(
            token=refresh,
            client_id=client_id,
            scopes=new_refresh_scopes,
            expires_at=int(now + self.options.refresh_lifetime),
            resource=resource,
            subject=SUBJECT,
        )
        self.access[access] = Issued(
            AccessToken(
                token=access,
                client_id=client_id,
                scopes=scopes,
                expires_at=int(now + self.options.access_lifetime),
                resource=resource,
                subject=SUBJECT,
            ),
            expires=now + self.options.access_lifetime,
            refresh_token=refresh,
        )
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.options.access_lifetime,
            refresh_token=refresh,
            scope=" ".join(scopes) or None,
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        # A spent token is found too, so that its exchange can say it was reused.
        token = self.refresh.get(refresh_token) or self.spent_refresh.get(refresh_token)
        return token if token is not None and token.client_id == client.client_id else None

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        if self.refresh.pop(refresh_token.token, None) is None:
            self.stats.refresh_reuses += 1
            raise TokenError("invalid_grant", "refresh token was already used (it rotates)")
        self.spent_refresh[refresh_token.token] = refresh_token
        self.stats.refreshes += 1
        return self.issue(
            client.client_id,
            scopes,
            refresh_token.resource,
            new_refresh_scopes=refresh_token.scopes,
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        issued = self.access.get(token)
        if issued is None or self.clock() >= issued.expires:
            return None
        return issued.token

    async def verify_token(self, token: str) -> AccessToken | None:
        """The resource server's check (`TokenVerifier`), against the same store."""
        return await self.load_access_token(token)

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        """RFC 7009: revoking either half of a grant revokes the other half too."""
        self.stats.revocations += 1
        if isinstance(token, AccessToken):
            issued = self.access.pop(token.token, None)
            if issued is not None and issued.refresh_token is not None:
                self.refresh.pop(issued.refresh_token, None)
            return
        self.refresh.pop(token.token, None)
        for key, issued in list(self.access.items()):
            if issued.refresh_token == token.token:
                del self.access[key]

    # the test switches

    def active_access_tokens(self) -> int:
        now = self.clock()
        return sum(1 for issued in self.access.values() if now < issued.expires)

    def snapshot(self) -> dict[str, Any]:
        return {**asdict(self.stats), "active_access_tokens": self.active_access_tokens()}

    def revoke_all_access(self) -> None:
        self.access.clear()

    def revoke_all_refresh(self) -> None:
        self.refresh.clear()

    def expire_all_access(self) -> None:
        now = self.clock()
        for issued in self.access.values():
            issued.expires = min(issued.expires, now)
            issued.token.expires_at = int(issued.expires)


class AuthorizationServerFront:
    """What the authorization server does around the SDK's handlers: count and record
    /authorize and /token requests, refuse a token request for another resource (the
    handler does not pass `resource` on to the provider), and read HTTP Basic client
    credentials the way RFC 6749 §2.3.1 allows, without client_id repeated in the form
    (the SDK's authenticator and revocation form both want it there)."""

    def __init__(self, app: ASGIApp, authority: InMemoryAuthority) -> None:
        self.app = app
        self.authority = authority

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/authorize":
            self.authority.stats.authorizations += 1
            if method == "POST":
                body = await read_body(receive)
                self.authority.stats.last_authorize = dict(parse_qsl(body.decode("latin-1")))
                receive = replay(body, receive)
            else:
                query = scope.get("query_string", b"").decode("latin-1")
                self.authority.stats.last_authorize = dict(parse_qsl(query))
        elif path in ("/token", "/revoke") and method == "POST":
            if path == "/token":
                self.authority.stats.token_requests += 1
                canned = self.authority.canned_token_answers
                if canned:
                    answer = canned[0]
                    answer["times"] -= 1
                    if answer["times"] <= 0:
                        canned.pop(0)
                    await read_body(receive)
                    encoding = "latin-1" if answer.get("latin1") else "utf-8"
                    await Response(
                        str(answer["body"]).encode(encoding),
                        status_code=int(answer["status"]),
                        media_type=str(answer.get("content_type", "application/json")),
                    )(scope, receive, send)
                    return
            body = await read_body(receive)
            form = dict(parse_qsl(body.decode("latin-1")))
            resource = form.get("resource")
            if (
                path == "/token"
                and resource
                and not same_resource(resource, self.authority.options.resource)
            ):
                await JSONResponse(
                    {
                        "error": "invalid_target",
                        "error_description": f"this server issues tokens for "
                        f"{self.authority.options.resource} only",
                    },
                    status_code=400,
                    headers={"Cache-Control": "no-store"},
                )(scope, receive, send)
                return
            basic = basic_credentials(scope)
            if basic is not None:
                client_id, client_secret = basic
                form.setdefault("client_id", client_id)
                if path == "/revoke":
                    form.setdefault("client_secret", client_secret)
                body = urlencode(form).encode()
                scope = with_content_length(scope, len(body))
            token = basic_credentials_sent.set(basic is not None)
            try:
                await self.app(scope, replay(body, receive), send)
            finally:
                basic_credentials_sent.reset(token)
            return
        await self.app(scope, receive, send)


def basic_credentials(scope: Scope) -> tuple[str, str] | None:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization" and value[:6].lower() == b"basic ":
            try:
                decoded = base64.b64decode(value[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, sep, client_secret = decoded.partition(":")
            return (unquote(client_id), unquote(client_secret)) if sep else None
    return None


def with_content_length(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the client's own."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def control_routes(authority: InMemoryAuthority) -> list[Route]:
    async def stats(request: Request) -> Response:
        return JSONResponse(authority.snapshot())

    def switch(action: Callable[[], None]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            action()
            return Response(status_code=204)

        return endpoint

    def deny_next() -> None:
        authority.deny_next = True

    async def answer_tokens(request: Request) -> Response:
        authority.canned_token_answers.append(dict(await request.json()))
        return Response(status_code=204)

    return [
        Route("/_test/stats", stats, methods=["GET"]),
        Route("/_test/revoke_access", switch(authority.revoke_all_access), methods=["POST"]),
        Route("/_test/revoke_refresh", switch(authority.revoke_all_refresh), methods=["POST"]),
        Route("/_test/expire_access", switch(authority.expire_all_access), methods=["POST"]),
        Route("/_test/deny_next", switch(deny_next), methods=["POST"]),
        Route("/_test/answer_tokens", answer_tokens, methods=["POST"]),
    ]


def build_apps(authority: InMemoryAuthority) -> tuple[ASGIApp, ASGIApp]:
    """The authorization server's app and the resource server's."""
    options = authority.options
    scopes = options.scopes or None
    auth = AuthSettings(
        issuer_url=options.issuer,  # type: ignore[arg-type]  # pydantic parses the str
        resource_server_url=options.resource,  # type: ignore[arg-type]
        validate_token_resource=True,
        required_scopes=scopes,
    )
    routes = create_auth_routes(
        provider=authority,
        issuer_url=auth.issuer_url,
        client_registration_options=ClientRegistrationOptions(
            enabled=options.dcr, valid_scopes=scopes, default_scopes=scopes
        ),
        revocation_options=RevocationOptions(enabled=True),
    )
    authorization_server = AuthorizationServerFront(
        Starlette(routes=[*routes, *control_routes(authority)]), authority
    )

    mcp = MCPServer("lockgate-oauth-test", token_verifier=authority, auth=auth, log_level="WARNING")

    @mcp.tool(structured_output=False)
    def whoami() -> str:
        """Who the bearer token says is calling: its client_id, scopes and resource."""
        token = get_access_token()
        if token is None:  # the bearer middleware let no such request through
            return json.dumps({"client_id": None, "scopes": [], "resource": None})
        return json.dumps(
            {"client_id": token.client_id, "scopes": token.scopes, "resource": token.resource}
        )

    @mcp.tool(structured_output=False)
    def echo(message: str) -> str:
        """Answers with the message."""
        return f"Echo: {message}"

    return authorization_server, mcp.streamable_http_app(host="127.0.0.1")


class QuietServer(uvicorn.Server):
    """Two of these share one loop, so neither takes the process's signals: main() does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--access-lifetime", type=int, default=3600, metavar="SECONDS")
    parser.add_argument("--refresh-lifetime", type=int, default=86400, metavar="SECONDS")
    parser.add_argument(
        "--no-dcr", action="store_true", help="turn dynamic client registration off"
    )
    parser.add_argument("--client-id", help="a pre-registered confidential client")
    parser.add_argument("--client-secret", help="its secret (client_secret_basic or _post)")
    parser.add_argument("--scopes", default="mcp:read mcp:write", help="space-separated")
    args = parser.parse_args(argv)
    if (args.client_id is None) != (args.client_secret is None):
        parser.error("--client-id and --client-secret go together")
    return args


async def serve(servers: Sequence[tuple[uvicorn.Server, socket.socket]]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server, _ in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    as_sock, rs_sock = loopback_socket(), loopback_socket()
    issuer = f"http://127.0.0.1:{as_sock.getsockname()[1]}"
    resource = f"http://127.0.0.1:{rs_sock.getsockname()[1]}/mcp"
    authority = InMemoryAuthority(
        Options(
            issuer=issuer,
            resource=resource,
            access_lifetime=args.access_lifetime,
            refresh_lifetime=args.refresh_lifetime,
            dcr=not args.no_dcr,
            client_id=args.client_id,
            client_secret=args.client_secret,
            scopes=args.scopes.split(),
        )
    )
    authorization_app, resource_app = build_apps(authority)
    servers = [
        (
            QuietServer(
                uvicorn.Config(
                    app,
                    log_level="warning",
                    access_log=False,
                    lifespan=lifespan,
                    timeout_graceful_shutdown=2,
                )
            ),
            sock,
        )
        for app, sock, lifespan in (
            (authorization_app, as_sock, LIFESPAN_OFF),
            (resource_app, rs_sock, LIFESPAN_ON),
        )
    ]
    line = {"issuer": issuer, "mcp": resource, "control": f"{issuer}/_test"}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    os.dup2(2, 1)  # the reader may stop reading: nothing else goes to that pipe
    asyncio.run(serve(servers))


if __name__ == "__main__":
    main()
