"""The policy in force, and reloading it the moment policy.json changes.

Reload is parse, validate, swap: a valid file is in force for the next call; an invalid
one never replaces a valid one: the last good policy stays, and the error (file, line,
JSON path) is emitted as :class:`~proxy.events.PolicyRejected` until the file is fixed. A
missing file means the built-in default policy.

Watching follows maestral's lesson: the watchdog callback (on watchdog's thread) only
hands a poke to the event loop. The loop debounces (editors save in bursts: truncate,
write, rename), reads and parses the file on a worker thread, and swaps on the loop, which
owns all proxy state. The folder is watched, not the file, because editors save by
writing a new file and renaming it over the old one. A change whose content hash equals
the policy in force does nothing, so the app's own writes and repeated events cause no
second reload.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from proxy._atomic import write_atomic
from proxy.events import Event, PolicyRejected, PolicyReloaded
from proxy.policy import (
    Policy,
    PolicyError,
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
]

log = logging.getLogger(__name__)
R = TypeVar("R")

DEBOUNCE_SECONDS = 0.2
_MISSING = "missing"


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
    """

    def __init__(
        self,
        path: Path,
        emit: Callable[[Event], None],
        on_swap: Callable[[Policy], None] | None = None,
        last_good: Path | None = None,
    ) -> None:
        self._path = path
        self._emit = emit
        self._on_swap = on_swap
        self._last_good = last_good
        self._policy = default_policy()
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
        self._digest = result.digest
        now = time.time()
        if result.error is not None:
            self._error = result.error
            first = result.error.issues[0] if result.error.issues else None
            log.warning("policy not applied, the last good one stays in force:\n%s", result.error)
            self._emit(
                PolicyRejected(
                    now, str(self._path), str(result.error), first.line if first else None
                )
            )
            if first_read:
                self._put_in_force_last_good()
            return False
        assert result.policy is not None
        self._error = None
        if result.data is not None:
            self._keep_as_last_good(result.data)
        self._swap(result.policy, result.digest, now)
        return True

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
        self._emit(PolicyReloaded(now, source, len(policy.rules), policy.default.value))


class _Handler(FileSystemEventHandler):
    def __init__(self, name: str, poke: Callable[[], None]) -> None:
        self._name = name
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = (event.src_path, getattr(event, "dest_path", ""))
        if any(Path(str(p)).name == self._name for p in paths if p):
            self._poke()


class FileWatcher(Generic[R]):
    """Reads a file again when it changes, and applies what was read, on the loop: ``read``
    runs on a worker thread, ``apply`` on the event loop. Start and stop on the loop.

    Reads are numbered when they start, and a read is applied only if no read that
    started after it has been applied already: a slow read of the old content can never
    undo a newer one (:meth:`reload_now` and the watcher's own reloads race otherwise).
    """

    def __init__(
        self,
        path: Path,
        read: Callable[[Path], R],
        apply: Callable[[R], object],
        debounce: float = DEBOUNCE_SECONDS,
    ) -> None:
        self._path = path
        self._read = read
        self._apply = apply
        self._debounce = debounce
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: BaseObserver | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._reads = 0  # reads started so far
        self._applied = 0  # the number of the newest read applied

    @property
    def path(self) -> Path:
        return self._path

    async def start(self, *, load: bool = True) -> None:
        """Read the file once (unless not ``load``), then watch its folder (created if
        missing)."""
        self._loop = asyncio.get_running_loop()
        folder = self._path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if load:
            await self.reload_now()
        observer = Observer()
        observer.schedule(_Handler(self._path.name, self._poke_threadsafe), str(folder))
        observer.daemon = True
        observer.start()
        self._observer = observer

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            await asyncio.to_thread(observer.join, 5)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _poke_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(self._debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            self._again = True  # a read is running; read once more when it ends
            return
        assert self._loop is not None
        self._task = self._loop.create_task(self._reload())

    async def reload_now(self) -> R:
        """Read the file now and apply it (unless a newer read was applied meanwhile);
        returns what this read found."""
        number = self._start_read()
        result = await asyncio.to_thread(self._read, self._path)
        self._finish_read(number, result)
        return result

    def reload_now_blocking(self) -> R:
        """:meth:`reload_now`, reading on the calling thread (the event loop's): for a
        small file, when the caller cannot await."""
        number = self._start_read()
        result = self._read(self._path)
        self._finish_read(number, result)
        return result

    def _start_read(self) -> int:
        self._reads += 1
        return self._reads

    def _finish_read(self, number: int, result: R) -> None:
        if number > self._applied:
            self._applied = number
            self._apply(result)

    async def _reload(self) -> None:
        while True:
            self._again = False
            await self.reload_now()
            if not self._again:
                return


class PolicyWatcher(FileWatcher[ReadResult]):
    """Reloads a :class:`PolicyStore` when its file changes. Start and stop on the loop."""

    def __init__(self, store: PolicyStore, debounce: float = DEBOUNCE_SECONDS) -> None:
        super().__init__(store.path, read_policy, store.apply, debounce)
