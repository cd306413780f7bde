"""Secrets in the OS keyring, behind one small class.

Config files hold secret *names* (``"keyring:github_token"``), never values; the value is
read from the keyring when a server starts and is never written to a file or the log.
Every failure says what to do: a missing secret names the command that stores it; a
keyring that is locked or absent says so instead of surfacing a backend's traceback.

A value longer than :data:`PART_CHARS` is kept in parts, because Windows' Credential
Manager takes at most 2,560 bytes (1,280 UTF-16 characters) per entry and an OAuth sign-in
(two tokens and the authorization server's metadata) is longer. ``NAME`` then holds a
header (``lockgate-parts:v1:COUNT:CHECKSUM``), and the entries ``NAME#1`` …
``NAME#COUNT`` of the service ``lockgate:parts`` the text (another service, so no name a
person picks can meet them). The same on every system, so the way Windows needs is the
way every test takes.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any

import keyring
import keyring.errors
from keyring.backend import KeyringBackend

from proxy.errors import LockgateError

__all__ = [
    "KEYRING_PREFIX",
    "PART_CHARS",
    "SERVICE",
    "SecretError",
    "SecretStore",
    "secret_name",
    "sign_in_entry",
]

SERVICE = "lockgate"
KEYRING_PREFIX = "keyring:"
# At most 4 UTF-16 bytes a character: 600 characters stay under Windows' 2,560 bytes.
PART_CHARS = 600
_PARTS_HEADER = "lockgate-parts:v1:"
_PARTS = re.compile(r"lockgate-parts:v1:([1-9][0-9]{0,4}):([0-9a-f]{16})")


class SecretError(LockgateError):
    """A secret that cannot be read or stored, with what to do about it."""

    title = "The OS keyring cannot be used"


_SIGN_IN_ENTRY = re.compile(r".+\.oauth\.(?:tokens|client|server)")


def sign_in_entry(name: str) -> bool:
    """Whether ``name`` is where Lockgate keeps a remote server's sign-in
    (``SERVER.oauth.tokens|client|server``): only the sign-in code reads or writes it,
    never a ``keyring:`` reference or ``lockgate secret``."""
    return _SIGN_IN_ENTRY.fullmatch(name) is not None


def secret_name(value: Any) -> str | None:
    """The secret name in a ``"keyring:NAME"`` value, or None for any other value."""
    if isinstance(value, str) and value.startswith(KEYRING_PREFIX):
        return value[len(KEYRING_PREFIX) :]
    return None


class SecretStore:
    """Lockgate's secrets in the keyring, under the service name ``lockgate``.

    The backend is looked up lazily (on first use, not at import), and all access is
    serialised: some backends (D-Bus Secret Service) are not thread-safe.
    """

    def __init__(self, backend: KeyringBackend | None = None, service: str = SERVICE) -> None:
        self._backend = backend
        self._service = service
        self._lock = threading.Lock()

    def _keyring(self) -> KeyringBackend:
        if self._backend is None:
            self._backend = keyring.get_keyring()
        return self._backend

    def get(self, name: str) -> str:
        """The secret ``name``.

        Raises:
            SecretError: it is not stored, or the keyring cannot be used.
        """
        value = self.find(name)
        if value is None:
            raise SecretError(
                f"secret {name!r} is not in the keyring; store it with: lockgate secret set {name}"
            )
        return value

    def find(self, name: str) -> str | None:
        """The secret ``name``, or None if it is not stored.

        Raises:
            SecretError: the keyring cannot be used, or a long value's parts are not all
                there (another program changed them).
        """
        with self._lock:
            value = self._read(name)
            parts = _PARTS.fullmatch(value) if value is not None else None
            if parts is None:
                return value
            pieces = [self._read(_part(name, n), part=True) for n in range(1, int(parts[1]) + 1)]
        whole = "".join(p for p in pieces if p is not None)
        if None in pieces or _checksum(whole) != parts[2]:
            raise SecretError(
                f"secret {name!r} is stored in parts and some are missing or changed; "
                f"store it again (lockgate secret set {name}, or sign in again)"
            )
        return whole

    def set(self, name: str, value: str) -> None:
        """Store ``value`` as the secret ``name``, replacing any earlier value; a long one
        in parts, written before the header that names them.

        Raises:
            SecretError: the name is empty or the keyring cannot be used.
        """
        if not name or name != name.strip():
            raise SecretError("a secret name must not be empty or start or end with spaces")
        with self._lock:
            before = self._part_count(name)
            if len(value) <= PART_CHARS and not value.startswith(_PARTS_HEADER):
                self._write(name, value)
                count = 0
            else:
                pieces = [value[i : i + PART_CHARS] for i in range(0, len(value), PART_CHARS)]
                for number, piece in enumerate(pieces, 1):
                    self._write(_part(name, number), piece, part=True)
                count = len(pieces)
                self._write(name, f"{_PARTS_HEADER}{count}:{_checksum(value)}")
            for number in range(count + 1, before + 1):  # a longer value's parts beyond
                self._remove(_part(name, number), part=True)

    def delete(self, name: str) -> None:
        """Remove the secret ``name`` (and its parts).

        Raises:
            SecretError: it is not stored, or the keyring cannot be used.
        """
        with self._lock:
            count = self._part_count(name)
            if not self._remove(name):
                raise SecretError(f"secret {name!r} is not in the keyring")
            for number in range(1, count + 1):
                self._remove(_part(name, number), part=True)

    def discard(self, name: str) -> bool:
        """Remove the secret ``name`` if it is stored; returns whether it was.

        Raises:
            SecretError: the keyring cannot be used.
        """
        try:
            self.delete(name)
        except SecretError:
            if self.find(name) is None:
                return False
            raise
        return True

    # -- the keyring's own entries, under the lock ------------------------------------

    def _part_count(self, name: str) -> int:
        value = self._read(name)
        parts = _PARTS.fullmatch(value) if value is not None else None
        return int(parts[1]) if parts is not None else 0

    def _service_of(self, part: bool) -> str:
        return f"{self._service}:parts" if part else self._service

    def _read(self, entry: str, *, part: bool = False) -> str | None:
        try:
            return self._keyring().get_password(self._service_of(part), entry)
        except keyring.errors.KeyringError as exc:
            raise SecretError(self._unusable(exc)) from None

    def _write(self, entry: str, value: str, *, part: bool = False) -> None:
        try:
            self._keyring().set_password(self._service_of(part), entry, value)
        except keyring.errors.KeyringError as exc:
            raise SecretError(self._unusable(exc)) from None

    def _remove(self, entry: str, *, part: bool = False) -> bool:
        """Delete one entry; False when it was not there."""
        try:
            self._keyring().delete_password(self._service_of(part), entry)
        except keyring.errors.PasswordDeleteError:
            return False
        except keyring.errors.KeyringError as exc:
            raise SecretError(self._unusable(exc)) from None
        return True

    def _unusable(self, exc: Exception) -> str:
        backend = type(self._backend).__name__ if self._backend is not None else "none"
        return (
            f"the OS keyring cannot be used ({backend}: {exc}). On Linux, a Secret Service "
            "provider (GNOME Keyring, KWallet, KeePassXC) must be running and unlocked"
        )


def _checksum(value: str) -> str:
    """Tells a whole long value from parts of two different ones (not a secret: a hash)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _part(name: str, number: int) -> str:
    return f"{name}#{number}"
