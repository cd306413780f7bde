"""Tool patterns: ``tool`` or ``server/tool``, with ``*`` and ``?`` globs.

Which pattern is more specific (the README's policy.json section): exact ``server/tool``,
then exact ``tool``, then a glob scoped to one named server (``devtools/git_*``), then
any other glob (``*delete*``, ``*/write_file``); among globs more literal characters win;
a tie goes to the one written first. A glob in the server part (``*/write_file``) names
no server, so it ranks with the unscoped globs rather than above them: otherwise ``*/*``
would outrank every ``tool`` glob.

Matching is case-sensitive, as MCP tool names are. ``*`` matches any run of characters
(also none, also ``/``), ``?`` exactly one; every other character, ``[`` included, is
literal. The server part is everything before the first ``/``, so a tool whose own name
contains ``/`` is written ``server/a/b`` or ``*/a/b``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import IntEnum

from proxy.errors import LockgateError

__all__ = ["PatternError", "Specificity", "ToolPattern"]

_WILDCARDS = frozenset("*?")


class PatternError(LockgateError, ValueError):
    """A tool pattern that cannot be used, with a message a person can act on."""

    title = "A tool pattern cannot be used"


class Specificity(IntEnum):
    """Rank classes; a lower value wins."""

    EXACT_SCOPED = 0
    EXACT_TOOL = 1
    GLOB_SCOPED = 2
    GLOB = 3


def _glob_regex(glob: str) -> re.Pattern[str]:
    """A regex for ``glob`` that cannot backtrack catastrophically.

    Tool names come from the agent's side, so matching must stay fast on hostile input: a
    naive ``.*a.*a.*b`` takes seconds on a few hundred characters. ``fnmatch.translate``
    (Python 3.11+) emits atomic groups that match each run between stars once. ``[`` is
    escaped first so it stays a literal character, as policy globs have no classes.
    """
    return re.compile(fnmatch.translate(glob.replace("[", "[[]")))


@dataclass(frozen=True, slots=True)
class ToolPattern:
    """One parsed tool pattern."""

    text: str
    server: str | None
    tool: str
    specificity: Specificity
    literals: int
    _server_re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    _tool_re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> ToolPattern:
        """Parse ``text``.

        Raises:
            PatternError: the pattern is empty, has an empty part or stray spaces.
        """
        if not text:
            raise PatternError("a tool pattern must not be empty")
        if text != text.strip():
            raise PatternError("a tool pattern must not start or end with spaces")
        server: str | None
        if "/" in text:
            server, tool = text.split("/", 1)
            if not server:
                raise PatternError(
                    "the server part (before '/') is empty; write '*/tool' for any server"
                )
            if not tool:
                raise PatternError(
                    "the tool part (after '/') is empty; write 'server/*' for every tool"
                )
        else:
            server, tool = None, text
        server_glob = server is not None and any(c in _WILDCARDS for c in server)
        tool_glob = any(c in _WILDCARDS for c in tool)
        literals = sum(1 for c in text if c not in _WILDCARDS)
        if server is not None and not server_glob and not tool_glob:
            spec = Specificity.EXACT_SCOPED
        elif server is None and not tool_glob:
            spec = Specificity.EXACT_TOOL
        elif server is not None and not server_glob:
            spec = Specificity.GLOB_SCOPED
        else:
            spec = Specificity.GLOB
        return cls(
            text=text,
            server=server,
            tool=tool,
            specificity=spec,
            literals=literals,
            _server_re=_glob_regex(server) if server_glob and server is not None else None,
            _tool_re=_glob_regex(tool) if tool_glob else None,
        )

    @property
    def is_glob(self) -> bool:
        return self.specificity >= Specificity.GLOB_SCOPED

    def matches(self, server: str, tool: str) -> bool:
        """Whether a call to ``tool`` on ``server`` falls under this pattern."""
        if self.server is not None:
            if self._server_re is not None:
                if self._server_re.match(server) is None:
                    return False
            elif self.server != server:
                return False
        if self._tool_re is not None:
            return self._tool_re.match(tool) is not None
        return self.tool == tool

    def rank(self, index: int) -> tuple[int, int, int]:
        """Sort key: lower is more specific. ``index`` is the rule's place in the file."""
        return (int(self.specificity), -self.literals, index)
