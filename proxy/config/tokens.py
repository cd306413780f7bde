"""Client access tokens: one per client, stored only as hashes.

Each MCP client that reaches the gateway over HTTP presents its own bearer token; the
client's name is its *grant*, so ``scope: "grant"`` limits count per client and the audit
log shows who called. A token is shown once, when created, and only its SHA-256 is kept
(in ``clients.json`` in the config folder). Tokens carry 256 random bits, so a plain hash
is enough: there is nothing to brute-force that a slow hash would protect.

Lookups hash the presented token and compare it with every stored hash in constant time
(``hmac.compare_digest``), so neither the answer's timing nor an early exit tells which
client or how much of a token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy.config.atomic import write_atomic
from proxy.errors import LockgateError

__all__ = ["ClientInfo", "TokenError", "TokenStore", "valid_client_name"]

TOKEN_PREFIX = "lgt_"  # noqa: S105 - a prefix that marks Lockgate tokens, not a secret
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class TokenError(LockgateError):
    """A token operation that cannot be done, with a message for a person."""

    title = "The token was not changed"


def valid_client_name(name: str) -> bool:
    """Client names: 1-64 of letters, digits and ``. _ @ -``, starting with a letter or digit."""
    return _CLIENT_NAME.fullmatch(name) is not None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A client that holds a token (never the token itself)."""

    name: str
    created: str  # ISO 8601, UTC


class TokenStore:
    """The clients and their token hashes, in one JSON file.

    Reads the file on each lookup that finds it changed, so tokens created or revoked by
    the ``lockgate token`` command take effect in a running gateway at once.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._hashes: dict[str, str] = {}
        self._created: dict[str, str] = {}

    @property
    def path(self) -> Path:
        return self._path

    def create(self, client: str, *, replace: bool = False) -> str:
        """Make a new token for ``client`` and return it; it is not kept anywhere.

        Raises:
            TokenError: the name is not valid, or the client has a token and not ``replace``.
        """
        if not valid_client_name(client):
            raise TokenError(
                f"{client!r} is not a valid client name: use 1-64 letters, digits, '.', '_', "
                "'@' or '-', starting with a letter or digit"
            )
        with self._lock:
            self._refresh()
            if client in self._hashes and not replace:
                raise TokenError(
                    f"client {client!r} already has a token; revoke it first, or use --replace"
                )
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            self._hashes[client] = _digest(token)
            self._created[client] = datetime.now(UTC).isoformat(timespec="seconds")
            self._save()
            return token

    def revoke(self, client: str) -> None:
        """Forget ``client``'s token; calls presenting it are refused from now on.

        Raises:
            TokenError: no such client.
        """
        with self._lock:
            self._refresh()
            if client not in self._hashes:
                raise TokenError(f"no client named {client!r}")
            del self._hashes[client]
            del self._created[client]
            self._save()

    def clients(self) -> list[ClientInfo]:
        """Every client holding a token, by name."""
        with self._lock:
            self._refresh()
            return [ClientInfo(n, self._created[n]) for n in sorted(self._hashes)]

    def verify(self, token: str) -> str | None:
        """The client that ``token`` belongs to, or None. Constant time in the token."""
        digest = _digest(token)
        with self._lock:
            self._refresh()
            found: str | None = None
            for client, stored in self._hashes.items():
                if hmac.compare_digest(stored, digest):
                    found = client
            return found

    def _refresh(self) -> None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            self._stamp, self._hashes, self._created = None, {}, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            data: Any = json.loads(self._path.read_text("utf-8"))
            clients = data["clients"]
            hashes = {str(n): str(c["sha256"]) for n, c in clients.items()}
            created = {str(n): str(c.get("created", "")) for n, c in clients.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Fail closed: an unreadable file accepts no token at all.
            self._stamp, self._hashes, self._created = stamp, {}, {}
            raise TokenError(f"{self._path}: cannot read the client tokens ({exc})") from None
        self._stamp, self._hashes, self._created = stamp, hashes, created

    def _save(self) -> None:
        document = {
            "clients": {
                name: {"sha256": self._hashes[name], "created": self._created[name]}
                for name in sorted(self._hashes)
            }
        }
        write_atomic(self._path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
        stat = self._path.stat()
        self._stamp = (stat.st_mtime_ns, stat.st_size)
