"""Secrets in the OS keyring, behind one small class.

Config files hold secret *names* (``"keyring:github_token"``), never values; the value is
read from the keyring when a server starts and is never written to a file or the log.
Every failure says what to do: a missing secret names the command that stores it; a
keyring that is locked or absent says so instead of surfacing a backend's traceback.
"""

from __future__ import annotations

import threading
from typing import Any

import keyring
import keyring.errors
from keyring.backend import KeyringBackend

from proxy.errors import LockgateError

__all__ = ["KEYRING_PREFIX", "SERVICE", "SecretError", "SecretStore", "secret_name"]

SERVICE = "lockgate"
KEYRING_PREFIX = "keyring:"


class SecretError(LockgateError):
    """A secret that cannot be read or stored, with what to do about it."""

    title = "The OS keyring cannot be used"


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
        with self._lock:
            try:
                value = self._keyring().get_password(self._service, name)
            except keyring.errors.KeyringError as exc:
                raise SecretError(self._unusable(exc)) from None
        if value is None:
            raise SecretError(
                f"secret {name!r} is not in the keyring; store it with: lockgate secret set {name}"
            )
        return value

    def find(self, name: str) -> str | None:
        """The secret ``name``, or None if it is not stored.

        Raises:
            SecretError: the keyring cannot be used.
        """
        with self._lock:
            try:
                return self._keyring().get_password(self._service, name)
            except keyring.errors.KeyringError as exc:
                raise SecretError(self._unusable(exc)) from None

    def set(self, name: str, value: str) -> None:
        """Store ``value`` as the secret ``name``, replacing any earlier value.

        Raises:
            SecretError: the name is empty or the keyring cannot be used.
        """
        if not name or name != name.strip():
            raise SecretError("a secret name must not be empty or start or end with spaces")
        with self._lock:
            try:
                self._keyring().set_password(self._service, name, value)
            except keyring.errors.KeyringError as exc:
                raise SecretError(self._unusable(exc)) from None

    def delete(self, name: str) -> None:
        """Remove the secret ``name``.

        Raises:
            SecretError: it is not stored, or the keyring cannot be used.
        """
        with self._lock:
            try:
                self._keyring().delete_password(self._service, name)
            except keyring.errors.PasswordDeleteError:
                raise SecretError(f"secret {name!r} is not in the keyring") from None
            except keyring.errors.KeyringError as exc:
                raise SecretError(self._unusable(exc)) from None

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

    def _unusable(self, exc: Exception) -> str:
        backend = type(self._backend).__name__ if self._backend is not None else "none"
        return (
            f"the OS keyring cannot be used ({backend}: {exc}). On Linux, a Secret Service "
            "provider (GNOME Keyring, KWallet, KeePassXC) must be running and unlocked"
        )
