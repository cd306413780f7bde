"""Redaction: what of a call's arguments may be kept in a log or shown at length.

Values under secret-looking keys and strings that look like credentials (bearer tokens,
API keys, private keys, passwords in URLs...) are replaced with ``[redacted]``, and the
JSON is capped in size, long strings first. The result is what the audit log stores and
the app shows; the agent's real arguments go to the server untouched.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "DEFAULT_MAX_ARGUMENT_BYTES",
    "MIN_BYTES",
    "REDACTED",
    "dumps",
    "redact",
    "scrub_text",
    "storable",
]

REDACTED: Final = "[redacted]"
DEFAULT_MAX_ARGUMENT_BYTES: Final = 4096
MIN_BYTES: Final = 128  # room for {"_truncated":true,"_preview":"..."} itself
_MIN_BYTES: Final = MIN_BYTES
_SCAN_MARGIN: Final = 1024  # a long string is scanned this far past what can be kept
_MAX_DEPTH: Final = 32
_MAX_INT_BITS: Final = 4096  # far below int->str's digit limit, which would raise


# A key is secret when, lower-cased and with separators dropped, it contains one of these
# ("X-Api-Key" -> "xapikey"). Over-redacting ("secretary") is the safe side to err on.
_SECRET_STEMS: Final = (
    "password passwd passphrase secret credential apikey privatekey accesskey signingkey "
    "authorization cookie"
).split()
# Shorter stems are false alarms as substrings ("author", "tokenizer"), so they are matched
# against the key's words ("accessToken" -> access, token) ...
_SECRET_WORDS: Final = frozenset("auth oauth authn authz bearer jwt otp csrf xsrf".split())
# ... and not at all in a key that counts something ("token_count", "max_tokens").
_COUNT_WORDS: Final = frozenset(
    "count counts used limit limits max min num number total usage length len size "
    "remaining budget".split()
)
_WORD: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

# Credentials recognised by their look, anywhere in any string. A group, where there is one,
# is kept (a header's name, a URL's user) and what follows it becomes REDACTED. Each pattern
# comes with the (lower-case) text it cannot match without, so that a string is searched
# only with the few patterns that can match it: a search with all of them costs about
# 0.3 microseconds a character, a look for the needles next to nothing.
_SECRET_PATTERNS: Final = (
    (
        ("private key-----",),
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)"
        r"(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",  # to the end, if it was cut
    ),
    (
        ("authorization",),
        r"((?i:\b(?:proxy-)?authorization)\s*[:=]\s*)"
        r"(?:(?i:basic|bearer|token|digest|negotiate)\s+)?[^\s\"',;]+",
    ),
    (("cookie",), r"((?i:\b(?:set-)?cookie)\s*:\s*)[^\r\n\"']+"),
    (("bearer",), r"((?i:\bbearer)\s+)[A-Za-z0-9\-._~+/]{16,}=*"),
    (("sk-", "rk-"), r"\b(?:sk|rk)-[A-Za-z0-9_\-]{16,}"),  # OpenAI, Anthropic
    (("_live_", "_test_"), r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    (("github_pat_",), r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    (("xox",), r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),  # Slack
    (("akia", "asia"), r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    (("aiza",), r"\bAIza[0-9A-Za-z_\-]{35}"),  # Google API keys
    (("eyj",), r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),  # JWTs
    (("://",), r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]+:)[^/\s@]+(?=@)"),  # user:password@
    (
        ("token=", "key=", "password=", "secret=", "sig=", "signature="),
        r"([?&](?i:access_token|id_token|refresh_token|token|api_key|apikey|key|password"
        r"|secret|client_secret|sig|signature)=)[^&\s#\"']+",
    ),
)


_NEEDLES: Final = tuple(
    (needle, n) for n, (needles, _) in enumerate(_SECRET_PATTERNS) for needle in needles
)
_ANY_NEEDLE: Final = re.compile("|".join(re.escape(needle) for needle, _ in _NEEDLES))


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[int, ...]) -> re.Pattern[str]:
    return re.compile("|".join(_SECRET_PATTERNS[n][1] for n in patterns))


def _secret_text(text: str) -> re.Pattern[str] | None:
    """The search for the credentials that ``text`` may hold; None when it holds none."""
    lower = text.lower()
    if _ANY_NEEDLE.search(lower) is None:  # the common case, decided by one quick search
        return None
    patterns = sorted({n for needle, n in _NEEDLES if needle in lower})
    return _compiled(tuple(patterns))


def redact(arguments: object, max_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES) -> dict[str, Any]:
    """A call's arguments made fit for the log: secrets hidden, size capped. Pure.

    1. The value under a secret-looking key becomes ``"[redacted]"``, whatever it is (an
       object under ``"session"`` goes whole). A key is secret-looking when it contains
       password, passwd, passphrase, secret, credential, api key, private key, access key,
       signing key, authorization or cookie (case and separators ignored), or has a word
       that is or ends in "token", starts with "auth" (not "author"), starts with
       "session", or is oauth, bearer, jwt, otp, csrf. The word rules do not apply to a key
       that counts (with a word like count, used, max, limit, total): "tokens_used",
       "max_tokens", "session_count", "author" and "tokenizer" are kept.
    2. Anywhere in any string, what looks like a credential becomes ``"[redacted]"``:
       ``Bearer`` tokens, Authorization and Cookie header values, ``sk-``, ``ghp_``,
       ``github_pat_``, ``xox?-``, AWS ``AKIA...``, Google ``AIza...`` keys, JWTs, PEM
       private keys, the password in ``scheme://user:password@``, and token-like query
       parameters. This is best effort: a bare password under an innocent key stays.
    3. If the JSON text (UTF-8, compact) is over ``max_bytes``, the longest strings are cut
       to a common length, each marked ``"…[+N chars]"``; if that is not enough, the result
       is ``{"_truncated": true, "_preview": <the first part of the JSON text>}``.

    The result is plain JSON data (``json.dumps`` cannot fail on it) of at most
    ``max_bytes`` bytes. Arguments that are not a mapping are kept under ``"_value"``;
    values that are not JSON become their ``repr``; nesting past 32 levels is cut.

    Raises:
        ValueError: ``max_bytes`` is below 128, too small to say anything.
    """
    if max_bytes < _MIN_BYTES:
        raise ValueError(f"max_bytes must be at least {_MIN_BYTES}, not {max_bytes}")
    value = arguments if isinstance(arguments, Mapping) else {"_value": arguments}
    tree = _scrub_mapping(value, 0, max_bytes + _SCAN_MARGIN)
    return _cap(tree, max_bytes)


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    squashed = re.sub(r"[^a-z0-9]", "", key.lower())
    if any(stem in squashed for stem in _SECRET_STEMS):
        return True
    words = [word.lower() for word in _WORD.findall(key)]
    if _COUNT_WORDS.intersection(words):
        return False
    return any(
        word in _SECRET_WORDS
        or word.endswith("token")
        or word.startswith("session")
        or (word.startswith("auth") and not word.startswith("author"))
        for word in words
    )


def storable(text: str) -> str:
    """``text`` as UTF-8 (and so SQLite and Qt) can hold it: a lone surrogate, which JSON
    can carry as ``"\\ud800"``, becomes the six characters ``\\ud800``."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _scrub_text(text: str) -> str:
    search = None if len(text) < 8 else _secret_text(text)  # nothing shorter is a secret
    return storable(text if search is None else search.sub(_hide, text))


def _hide(match: re.Match[str]) -> str:
    return "".join(kept for kept in match.groups() if kept) + REDACTED


class _Cut(str):
    """A string cut short before it was scanned; ``dropped`` characters are gone."""

    dropped: int


def _scrub_string(text: str, longest: int) -> str:
    if len(text) <= longest:
        return _scrub_text(text)
    # Only the start of a long string can be kept, so only that much is scanned. The last
    # _SCAN_MARGIN characters scanned may end in the front half of a credential cut in two,
    # so they are only scanned, never kept: what is kept ends before them, or after a
    # credential that begins before them.
    head = text[:longest]
    end = longest - _SCAN_MARGIN
    pieces: list[str] = []
    at = 0
    search = _secret_text(head)
    for match in () if search is None else search.finditer(head):
        if match.start() >= end:
            break
        pieces += (head[at : match.start()], _hide(match))
        at = match.end()
    pieces.append(head[at:end])
    cut = _Cut(storable("".join(pieces)))
    cut.dropped = len(text) - max(at, end)
    return cut


def _scrub_mapping(value: Mapping[Any, Any], depth: int, longest: int) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, item in value.items():
        name = key if isinstance(key, str) else str(key)
        secret = _secret_key(name)
        clean[_scrub_text(name)] = REDACTED if secret else _scrub(item, depth + 1, longest)
    return clean


def _scrub(value: object, depth: int, longest: int) -> Any:
    if isinstance(value, str):
        return _scrub_string(value, longest)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        bits = value.bit_length()
        return value if bits <= _MAX_INT_BITS else f"[integer of {bits} bits]"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return "[nested too deep]"
    if isinstance(value, Mapping):
        return _scrub_mapping(value, depth, longest)
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item, depth + 1, longest) for item in value]
    return _scrub_string(repr(value), longest)


def _marker(dropped: int) -> str:
    return f"…[+{dropped} chars]"


def _shorten(value: Any, keep: int | None) -> Any:
    """``value`` with every string cut to ``keep`` characters (None: only the cut ones)."""
    if isinstance(value, _Cut):
        if keep is None or keep >= len(value):
            return str(value) + _marker(value.dropped)
        return value[:keep] + _marker(value.dropped + len(value) - keep)
    if isinstance(value, str):
        if keep is None or len(value) <= keep:
            return value
        short = value[:keep] + _marker(len(value) - keep)
        return short if len(short) < len(value) else value
    if isinstance(value, dict):
        return {key: _shorten(item, keep) for key, item in value.items()}
    if isinstance(value, list):
        return [_shorten(item, keep) for item in value]
    return value


def _longest_string(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max(map(_longest_string, value.values()), default=0)
    if isinstance(value, list):
        return max(map(_longest_string, value), default=0)
    return 0


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _size(value: Any) -> int:
    return len(_dumps(value).encode("utf-8"))


def _cap(tree: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    whole: dict[str, Any] = _shorten(tree, None)
    if _size(whole) <= max_bytes:
        return whole
    if _size(_shorten(tree, 0)) <= max_bytes:
        fits, too_long = 0, _longest_string(tree) + 1  # the longest common length that fits
        while too_long - fits > 1:
            keep = (fits + too_long) // 2
            if _size(_shorten(tree, keep)) <= max_bytes:
                fits = keep
            else:
                too_long = keep
        capped: dict[str, Any] = _shorten(tree, fits)
        return capped
    text = _dumps(whole)  # too many keys or values to cut: show how it starts
    fits, too_long = 0, min(len(text), max_bytes) + 1
    while too_long - fits > 1:
        keep = (fits + too_long) // 2
        if _size({"_truncated": True, "_preview": text[:keep]}) <= max_bytes:
            fits = keep
        else:
            too_long = keep
    return {"_truncated": True, "_preview": text[:fits]}


scrub_text = _scrub_text
dumps = _dumps
