"""The policy in force, and reloading it the moment policy.json changes.

Reload is parse, validate, swap: a valid file is in force for the next call; an invalid
one never replaces a valid one: the last good policy stays, and the error (file, line,
JSON path) is emitted as :class:`~proxy.gateway.events.PolicyRejected` until the file is fixed. A
missing file means the built-in default policy.

Watching is :class:`proxy.config.watch.FileWatcher`'s: the file is read and parsed on a
worker thread, and swapped on the loop, which owns all proxy state. A change whose
content hash equals the policy in force does nothing, so the app's own writes and
repeated events cause no second reload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.config.atomic import write_atomic
from proxy.config.watch import DEBOUNCE_SECONDS, FileWatcher
from proxy.gateway.events import Event, PolicyRejected, PolicyReloaded
from proxy.policy.model import (
    Policy,
    PolicyError,
    PolicyIssue,
    default_policy,
    parse_policy_bytes,
    read_policy_bytes,
)

__all__ = [
    "DEBOUNCE_SECONDS",
    "FileWatcher",
    "PolicyStore",
    "PolicyWatcher",
    "ReadResult",
    "read_policy",
    "restore_last_good",
    "team_unreadable",
]

log = logging.getLogger(__name__)
_MISSING = "missing"
_DELETED = "deleted"  # missing, with a kept copy of the last policy in force


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What reading policy.json found: a policy, or the error; and the content's hash."""

    digest: str
    policy: Policy | None = None
    error: PolicyError | None = None
    data: bytes | None = None  # the bytes parsed, for a valid file


def read_policy(path: Path) -> ReadResult:
    """Read and parse ``path`` (blocking: call it off the event loop).

    The hash is of exactly the bytes parsed, so a write racing the read cannot pair one
    version's hash with another's policy.
    """
    if not path.exists() and not path.is_symlink():
        return ReadResult(_MISSING, policy=default_policy())
    try:
        data = read_policy_bytes(path)
    except PolicyError as exc:
        return ReadResult(f"unreadable:{exc}", error=exc)
    digest = hashlib.sha256(data).hexdigest()
    try:
        return ReadResult(digest, policy=parse_policy_bytes(data, str(path)), data=data)
    except PolicyError as exc:
        return ReadResult(digest, error=exc)


class PolicyStore:
    """Holds the policy in force and the current error; swaps on valid changes only.

    With ``last_good``, every policy.json put in force is also copied there; a store whose
    first read finds policy.json broken (the gateway starts after a bad edit) puts that
    copy in force instead of the built-in default, so a restart never loosens the rules
    the person had. The error is reported all the same.

    A policy.json deleted once a policy was in force is the same: the last one stays in
    force (a sync tool or a checkout that removed it must not turn a blocked tool into
    an approvable one) and the deletion is reported as the error, until policy.json is
    back (:meth:`restore` puts the kept copy back) or a new one is written.
    """

    def __init__(
        self,
        path: Path,
        emit: Callable[[Event], None],
        on_swap: Callable[[Policy], None] | None = None,
        last_good: Path | None = None,
        *,
        missing: Policy | None = None,
        layer: str | None = None,
    ) -> None:
        """``missing`` is the policy in force while the file is missing and no copy of
        it is kept (and before the first read); None: the built-in default."""
        self._path = path
        self._emit = emit
        self._on_swap = on_swap
        self._last_good = last_good
        self._missing = missing
        self._layer = layer  # named in its events: "team" for the team's file
        self._policy = default_policy() if missing is None else missing
        self._digest: str | None = None
        self._error: PolicyError | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def digest(self) -> str | None:
        """The hash of the policy.json content last applied (the app compares it with
        what it wrote to know its change is in force); None before the first load."""
        return self._digest

    @property
    def error(self) -> PolicyError | None:
        """The problem with policy.json while it is broken (the last good policy applies)."""
        return self._error

    def load(self) -> bool:
        """Read the file now (blocking) and apply it; True if the policy in force changed."""
        return self.apply(read_policy(self._path))

    def apply(self, result: ReadResult) -> bool:
        """Apply a read result: swap on a new valid policy, keep the old one on an error."""
        if result.digest == self._digest:
            return False
        first_read = self._digest is None
        if result.digest == _MISSING and self._kept_copy_usable():
            result = ReadResult(_DELETED, error=self._deleted_error())
        self._digest = result.digest
        now = time.time()
        if result.error is not None:
            self._error = result.error
            first = result.error.issues[0] if result.error.issues else None
            log.warning("policy not applied, the last good one stays in force:\n%s", result.error)
            self._emit(
                PolicyRejected(
                    now,
                    str(self._path),
                    str(result.error),
                    first.line if first else None,
                    layer=self._layer,
                )
            )
            if first_read:
                self._put_in_force_last_good()
            return False
        assert result.policy is not None
        policy = result.policy
        if result.digest == _MISSING and self._missing is not None:
            policy = self._missing
        self._error = None
        if result.data is not None:
            self._keep_as_last_good(result.data)
        self._swap(policy, result.digest, now)
        return True

    @property
    def deleted(self) -> bool:
        """policy.json is gone and the last policy in force stays (see the class)."""
        return self._digest == _DELETED

    def _kept_copy_usable(self) -> bool:
        if self._last_good is None or not self._last_good.exists():
            return False  # (read_policy of a missing file is the built-in policy)
        return read_policy(self._last_good).policy is not None

    def _deleted_error(self) -> PolicyError:
        message = (
            "policy.json was deleted; the last policy in force stays in force until it is "
            "restored (the app's Policy tab, or copy "
            f"{self._last_good} back) or a new policy.json is written"
        )
        return PolicyError(str(self._path), [PolicyIssue((), message)])

    def _keep_as_last_good(self, data: bytes) -> None:
        if self._last_good is None:
            return
        try:
            if not self._last_good.exists() or self._last_good.read_bytes() != data:
                write_atomic(self._last_good, data)
        except OSError as exc:
            log.warning("could not keep a copy of the policy in force: %s", exc)

    def _put_in_force_last_good(self) -> None:
        if self._last_good is None or not self._last_good.exists():
            return
        kept = read_policy(self._last_good)
        if kept.policy is None:
            log.warning("the last good copy of policy.json cannot be used: %s", kept.error)
            return
        log.warning("policy.json is broken: the last good copy of it is in force")
        self._swap(kept.policy, kept.digest, time.time())

    def _swap(self, policy: Policy, digest: str, now: float) -> None:
        self._policy = policy
        if self._on_swap is not None:
            self._on_swap(policy)
        source = None if digest == _MISSING else policy.source
        log.info("policy in force: %s (%d rules)", source or "built-in default", len(policy.rules))
        self._emit(
            PolicyReloaded(now, source, len(policy.rules), policy.default.value, layer=self._layer)
        )


def team_unreadable(path: Path) -> Policy:
    """The team's layer while its file cannot be read and no copy of it is kept: every
    call refused, saying why (a team's rules are never dropped for a missing file)."""
    reason = (
        f"the team policy {path} cannot be read, so Lockgate refuses every call until it "
        "can (ask whoever keeps it, or check the team_policy setting)"
    )
    document = {"version": "1", "tools": {"*": {"action": "deny", "reason": reason}}}
    return parse_policy_bytes(json.dumps(document).encode(), f"{path} (unreadable)")


class PolicyWatcher(FileWatcher[ReadResult]):
    """Reloads a :class:`PolicyStore` when its file changes. Start and stop on the loop."""

    def __init__(self, store: PolicyStore, debounce: float = DEBOUNCE_SECONDS) -> None:
        super().__init__(store.path, read_policy, store.apply, debounce)


def restore_last_good(path: Path, last_good: Path) -> None:
    """Put the kept copy of the last policy in force back as ``path`` (policy.json), if it
    is missing: never over a policy.json the person wrote meanwhile.

    Raises:
        OSError: there is nothing to restore, policy.json exists, or it cannot be written.
    """
    if not last_good.exists():
        raise OSError("Lockgate keeps no copy of a policy in force yet")
    if path.exists() or path.is_symlink():
        raise OSError(f"{path} exists; not overwritten")
    write_atomic(path, last_good.read_bytes())
