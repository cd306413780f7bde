"""One error vocabulary: every error Lockgate tells a person about is a :class:`LockgateError`.

Each has a ``title`` (a few words: what went wrong) and a ``message`` (the whole story,
with what to do). :meth:`LockgateError.told` puts them together as a person is told:
the command line prints ``lockgate: TITLE: MESSAGE`` on stderr, the window shows the same
words, so one ``except LockgateError`` serves every command and every view, with no
per-type code.

Kept free of imports: ``lockgate connect`` loads it on every client launch.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["LockgateError"]


class LockgateError(Exception):
    """Base of Lockgate's errors: ``title`` says what went wrong, ``message`` the rest."""

    title: ClassVar[str] = "Lockgate could not do that"

    @property
    def message(self) -> str:
        """The text for a person (what ``str()`` gives)."""
        return str(self)

    def told(self, about: str | None = None) -> str:
        """The title (with what it was ``about``, if given), then the message."""
        title = self.title if about is None else f"{self.title} ({about})"
        return f"{title}: {self.message}"
