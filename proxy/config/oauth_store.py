"""A remote server's OAuth sign-in, kept in the OS keyring and nowhere else.

Three keyring entries per server, each a JSON object with ``"v": 1`` and the
``server_url`` it was made for:

- ``NAME.oauth.tokens``: the access and refresh tokens, their type and scope, when the
  access token expires (``expires_at``, absolute wall-clock seconds, so a restart knows),
  when it was obtained, the ``resource`` it was asked for (RFC 8707) and the ``client_id``
  it was issued to;
- ``NAME.oauth.client``: the client registration (dynamic registration's answer, secret
  included; for a client registered by hand, without its secret, which stays in the
  person's own keyring entry);
- ``NAME.oauth.server``: what sign-in discovered: the authorization server's URL and
  metadata (its token and revocation endpoints) and the protected resource metadata, so
  a refresh after a restart goes to the authorization server, not to the MCP server's
  own origin.

An entry whose ``server_url`` is not the url servers.json gives the server now, or whose
version Lockgate does not know, is ignored (it belonged to another server of that name).
Tokens issued to another client than the registration's are ignored too.

Every method blocks on the keyring: call them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from proxy.config.secrets import SecretStore

__all__ = ["STORE_VERSION", "OAuthRecord", "OAuthStore", "StoredServer", "StoredTokens"]

log = logging.getLogger(__name__)

STORE_VERSION = 1
_KINDS = ("tokens", "client", "server")


@dataclass(frozen=True, slots=True)
class StoredTokens:
    """The tokens of one sign-in. ``expires_at`` None: the server gave no lifetime."""

    access_token: str
    refresh_token: str | None
    token_type: str
    scope: str | None
    expires_at: float | None
    obtained_at: float
    server_url: str
    resource: str | None
    client_id: str

    def __repr__(self) -> str:  # never a token in a traceback or a log line
        return (
            f"StoredTokens(server_url={self.server_url!r}, client_id={self.client_id!r}, "
            f"expires_at={self.expires_at!r}, scope={self.scope!r})"
        )


@dataclass(frozen=True, slots=True)
class StoredServer:
    """What sign-in discovered about where to sign in (JSON objects as the servers sent
    them, after the SDK's validation)."""

    server_url: str
    auth_server_url: str | None = None
    protected_resource: dict[str, Any] | None = None
    authorization_server: dict[str, Any] | None = None

    @property
    def token_endpoint(self) -> str | None:
        value = (self.authorization_server or {}).get("token_endpoint")
        return value if isinstance(value, str) else None

    @property
    def revocation_endpoint(self) -> str | None:
        value = (self.authorization_server or {}).get("revocation_endpoint")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class OAuthRecord:
    """Everything the keyring holds for one server (each part None when absent or not
    this server's)."""

    tokens: StoredTokens | None = None
    client: dict[str, Any] | None = field(default=None, repr=False)  # the registration
    server: StoredServer | None = None


class OAuthStore:
    """One server's sign-in in the keyring, through :class:`SecretStore`."""

    def __init__(self, secrets: SecretStore) -> None:
        self.secrets = secrets

    @staticmethod
    def entry(server: str, kind: str) -> str:
        """The keyring name of ``server``'s ``kind`` (tokens, client, server)."""
        return f"{server}.oauth.{kind}"

    def load(self, server: str, server_url: str) -> OAuthRecord:
        """What the keyring holds for ``server`` at ``server_url``.

        Raises:
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        parts = {kind: self._read(server, kind, server_url) for kind in _KINDS}
        client = parts["client"]
        tokens = _tokens(parts["tokens"], server_url)
        if (
            tokens is not None
            and client is not None
            and client.get("client_id") != tokens.client_id
        ):
            log.info("the stored tokens of %s were issued to another client: ignored", server)
            tokens = None
        return OAuthRecord(tokens, client, _server(parts["server"], server_url))

    def save(self, server: str, server_url: str, record: OAuthRecord) -> None:
        """Store every part of ``record`` that is set, for ``server_url``; the tokens
        last, so a sign-in cut short leaves no tokens without the registration and the
        endpoints they need.

        Raises:
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        if record.server is not None:
            self._write(server, "server", server_url, asdict(record.server))
        if record.client is not None:
            self._write(server, "client", server_url, record.client)
        if record.tokens is not None:
            self._write(server, "tokens", server_url, asdict(record.tokens))

    def save_tokens(self, server: str, tokens: StoredTokens) -> None:
        """Replace ``server``'s tokens (after a refresh: the old refresh token is spent).

        Raises:
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        self._write(server, "tokens", tokens.server_url, asdict(tokens))

    def delete_tokens(self, server: str) -> None:
        """Forget ``server``'s tokens; its registration and endpoints stay for the next
        sign-in.

        Raises:
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        self.secrets.discard(self.entry(server, "tokens"))

    def delete_client(self, server: str) -> None:
        """Forget ``server``'s client registration (the authorization server refused it).

        Raises:
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        self.secrets.discard(self.entry(server, "client"))

    def delete(self, server: str) -> None:
        """Forget everything of ``server`` (signed out for good, or removed).

        Raises:
            proxy.config.secrets.SecretError: the keyring cannot be used.
        """
        for kind in ("tokens", "client", "server"):
            self.secrets.discard(self.entry(server, kind))

    def _read(self, server: str, kind: str, server_url: str) -> dict[str, Any] | None:
        text = self.secrets.find(self.entry(server, kind))
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            log.warning("the keyring's %s of %s is not JSON: ignored", kind, server)
            return None
        if not isinstance(value, dict) or value.get("v") != STORE_VERSION:
            log.warning("the keyring's %s of %s is of an unknown version: ignored", kind, server)
            return None
        if value.get("server_url") != server_url:
            log.info("the keyring's %s of %s is for another url: ignored", kind, server)
            return None
        return {k: v for k, v in value.items() if k not in ("v", "server_url")}

    def _write(self, server: str, kind: str, server_url: str, value: dict[str, Any]) -> None:
        document = {**value, "v": STORE_VERSION, "server_url": server_url}
        self.secrets.set(self.entry(server, kind), json.dumps(document, separators=(",", ":")))


def _tokens(value: dict[str, Any] | None, server_url: str) -> StoredTokens | None:
    if value is None:
        return None
    try:
        tokens = StoredTokens(
            access_token=value["access_token"],
            refresh_token=value.get("refresh_token"),
            token_type=value.get("token_type") or "Bearer",
            scope=value.get("scope"),
            expires_at=value.get("expires_at"),
            obtained_at=float(value.get("obtained_at") or 0.0),
            server_url=server_url,
            resource=value.get("resource"),
            client_id=value["client_id"],
        )
    except (KeyError, TypeError, ValueError):
        log.warning("the keyring's tokens are incomplete: ignored")
        return None
    if not isinstance(tokens.access_token, str) or not tokens.access_token:
        return None
    return tokens


def _server(value: dict[str, Any] | None, server_url: str) -> StoredServer | None:
    if value is None:
        return None
    prm, asm = value.get("protected_resource"), value.get("authorization_server")
    auth_url = value.get("auth_server_url")
    return StoredServer(
        server_url=server_url,
        auth_server_url=auth_url if isinstance(auth_url, str) else None,
        protected_resource=prm if isinstance(prm, dict) else None,
        authorization_server=asm if isinstance(asm, dict) else None,
    )
