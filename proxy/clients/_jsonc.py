"""JSON with comments and trailing commas (VS Code's ``mcp.json`` and settings are JSONC).

Comments become spaces and a trailing comma becomes a space, so every other character
keeps its offset: an error the JSON parser reports points at the right line and column.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads", "strip"]


def strip(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments and trailing commas blanked out."""
    out = list(text)
    i, n = 0, len(text)
    last_comma = -1  # index of a comma that may turn out to be trailing
    while i < n:
        c = text[i]
        if c == '"':
            last_comma = -1
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            end = text.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
            continue
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out[i:end] = ["\n" if ch == "\n" else " " for ch in text[i:end]]
            i = end
            continue
        if c == ",":
            last_comma = i
        elif c in "}]":
            if last_comma >= 0:
                out[last_comma] = " "
            last_comma = -1
        elif not c.isspace():
            last_comma = -1
        i += 1
    return "".join(out)


def loads(text: str) -> Any:
    """Parse JSONC; raises ``json.JSONDecodeError`` (with the right line and column)."""
    return json.loads(strip(text))
