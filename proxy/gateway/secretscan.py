"""Secrets in a tool's result, found with detect-secrets and removed before the agent sees them.

A tools/call result can carry what should never reach an agent: a file read shows an
``.env``, ``get-env`` returns the environment, a log line holds a token. :func:`scan_result`
finds them and gives the result back with each one replaced by
``[secret removed by Lockgate: <kind>]``; what to do then (redact, block, ask a person) is
the caller's policy. Pure: no I/O, no clock, the same answer for the same result.

**What is looked at.** Every string of the result, JSON keys included, except the bytes
of images and audio (``content[i].data``) and of binary resources
(``content[i].resource.blob``): base64 of bytes, not text. A string that holds JSON (what
``get-env`` returns, a file read of a ``.json``, JSON encoded twice) is parsed and looked
at as structure, its keys naming its values.

**How secrets are found.** With Yelp's detect-secrets 1.5 (its plugins and its heuristic
filters), in three ways:

1. Its provider detectors, on every line: AWS, Azure storage, GitHub, GitLab, Slack,
   Stripe, Twilio, SendGrid, Mailchimp, npm, PyPI, OpenAI, Discord, Telegram, Square,
   IBM Cloud and COS, SoftLayer, Cloudant, Artifactory, JSON web tokens, private keys,
   passwords in URLs. Not its public-IP detector: an address is not a secret.
2. Its keyword detector: its quoted patterns (``password = "..."``, ``"api_key": "..."``)
   on every line, but not for a value of lower-case words (``secret_command == "list"``);
   its config-file patterns (unquoted ``DB_PASSWORD=hunter2``) only on environment lines
   (``NAME=value``, upper case, as ``env`` and ``.env`` files write them), since on code and
   prose they take ``secret = make_secret()`` and "Password: 8 characters" for secrets; and
   for a JSON value under a key it would flag (``{"DB_PASSWORD": "hunter2"}``), the value,
   whatever it is, unless it is an absolute path (PWD) or the key says it is something
   else (``password_required``, ``secret_name``).
3. Its high-entropy base64 and hex detectors, only in key-like places: the value under a
   JSON key, or of an assignment in text (``NAME=``, ``name:``, ``Authorization: Bearer``),
   whose name says key, token, secret, password, credential, auth, cookie, session,
   signature... and not id, hash, public, fingerprint, page, cursor, gpg.... A result full
   of git SHAs, uuids and base64 is not cut to pieces.

What detect-secrets' filters rule out (templated ``{x}``/``<x>``/``${x}``, ``$VAR``,
``*****``, ``abcdef`` runs, and for the keyword and entropy detectors uuids, ``*_id``
names and ``x = get_secret()``) is not a secret. Its filters that read files or git do
not apply, nor its allowlist comments: ``# pragma: allowlist secret`` in a result is text
someone wrote, not a decision of this user's.

Not found: a password in prose or unquoted YAML/INI (``password: hunter2``) unless it
looks random; a uuid-shaped password; a GitHub fine-grained token (``github_pat_``), a
Google or Anthropic key, a bearer token that is not a JWT and not under a key-like name:
no plugin of detect-secrets 1.5 knows them (proxy.audit.redact does, for arguments).

**Where a secret is.** detect-secrets reports a value, not always the secret itself:
``"ghp"`` for a GitHub token, ``"BEGIN RSA PRIVATE KEY"`` for a private key, a JWT without
its signature, an Artifactory token with its quotes, an npm token with the rest of its
line. :data:`_PLUGINS` says per detector how the secret is cut from its match (the whole
match, the PEM block to its END line...). Every occurrence of every secret is then
replaced in every string of the result, keys included, and in its JSON-escaped forms
inside JSON text (JSON the replacement cannot reach, ``\\u`` escapes, is written anew); a
value under 8 characters or made of words only where it stands alone ("postgres" as a
password, not in "postgresql").

**Speed.** Every plugin on every line, detect-secrets' way, costs some 3 s a megabyte
(the keyword detector's 18-way case-blind alternations most). So the texts of a result
are joined into one, each plugin has *needles* (what any text its patterns match holds:
``T3BlbkFJ`` for OpenAI, ``PRIVATE KEY``, ``aws`` in any case...), found with ``str.find``
in the whole text, and the plugin runs only on the lines where one is. A needle never
spans a line, so no line with a match is skipped; the tests hold each plugin to its own
answer, line by line. About 10 ms for a 100 KB git log, 200 ms for a megabyte of source
code (bench/bench_secretscan.py).

**detect-secrets' settings are process-global** (``get_settings()`` is an lru_cache'd
singleton; ``transient_settings`` swaps it for the time of a ``with`` and is neither
reentrant nor thread-safe; ``scan_line`` even disables a filter in it for good). And
``BasePlugin.analyze_line`` reads them to decide whether to *verify* a secret, that is, to
send it over the network to its provider. So this module never touches them: it makes
its own plugin objects (none is configured through settings), uses only their patterns,
``analyze_string``, ``is_formally_valid`` and ``calculate_shannon_entropy``, which read
no settings and change nothing, and calls the heuristic filter functions directly.
Another use of detect-secrets in the process cannot change what is found here, nor is it
changed by it, on this thread or any other: scans may run on worker threads at once.

**Bounds.** At most 4 MiB of text is scanned (4 Mi characters), 200,000 JSON values and
keys, 32 levels deep, 1,000 different secrets. That is a million tokens, more than an
agent's context holds, and a few seconds at the worst. Past a bound the outcome says
``complete=False`` (the caller treats that like a finding under "block"); what was scanned
is still redacted, everywhere its secrets occur. Past 256 forms of secrets to look for,
the rest are looked up by the token runs of each string (one glued to other letters can
be missed), and the outcome says incomplete too.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Final

from detect_secrets.filters import heuristic
from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import BasePlugin, RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import (
    Base64HighEntropyString,
    HexHighEntropyString,
    HighEntropyStringsPlugin,
)
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import (
    CONFIG_DENYLIST_REGEX_TO_GROUP,
    DENYLIST,
    DENYLIST_REGEX,
    QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
    KeywordDetector,
)
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

__all__ = [
    "MAX_DEPTH",
    "MAX_SECRETS",
    "MAX_TEXT_CHARS",
    "MAX_VALUES",
    "REMOVED_PREFIX",
    "ScanOutcome",
    "SecretFinding",
    "removed",
    "scan_result",
]

MAX_TEXT_CHARS: Final = 4 * 1024 * 1024
MAX_VALUES: Final = 200_000
MAX_DEPTH: Final = 32
MAX_SECRETS: Final = 1000  # distinct; past that, a result is a dump of secrets
REMOVED_PREFIX: Final = "[secret removed by Lockgate: "
_SHORT: Final = 8  # a secret shorter (or made of words) is replaced only where it stands alone


def removed(kind: str) -> str:
    """What a secret of ``kind`` is replaced with."""
    return f"{REMOVED_PREFIX}{kind}]"


@dataclass(frozen=True, slots=True)
class SecretFinding:
    """A secret found in a result: its kind and where it was, never its value.

    ``kind`` is detect-secrets' name for it ("AWS Access Key", "Secret Keyword", "Base64
    High Entropy String"...). ``where`` is a path into the result ("content[0].text",
    "structuredContent.env.OPENAI_API_KEY"; inside a string that holds JSON, the string's
    path then the path in its JSON: "content[0].text.env.OPENAI_API_KEY"), with any
    secret in a key already replaced. Neither says anything of the value (not its length,
    nor a hash): findings go to the audit log and the screen.
    """

    kind: str
    where: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where}


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    """What :func:`scan_result` found.

    ``redacted`` is the result with every occurrence of every found secret replaced by
    ``[secret removed by Lockgate: <kind>]``: a new object (but for what lies past the
    depth bound and values that are not JSON, which are the result's own), None when
    nothing was found. ``complete`` is False when the result was too large, too deep or
    held too many secrets to be scanned whole (see the module's Bounds).
    """

    findings: tuple[SecretFinding, ...]
    redacted: dict[str, Any] | None
    complete: bool


# --- the detectors -------------------------------------------------------------------------


class _Line:
    """A line of the joined text: ``text`` right-stripped as detect-secrets reads lines,
    ``folded`` the same in lower case, where it starts in ``joined``, and where the text
    it belongs to ends (a private key runs on past its line, to its END)."""

    __slots__ = ("_long_run", "folded", "joined", "start", "stop", "text")

    def __init__(self, text: str, folded: str, joined: str, start: int, stop: int) -> None:
        self.text = text
        self.folded = folded
        self.joined = joined
        self.start = start
        self.stop = stop
        self._long_run: bool | None = None

    @property
    def long_run(self) -> bool:
        """Whether the line holds 24 letters, digits, ``_`` or ``-`` in a row."""
        if self._long_run is None:
            self._long_run = _LONG_RUN.search(self.text) is not None
        return self._long_run


_Found = tuple[BasePlugin, str]  # the plugin that found a secret, and the secret
_Finder = Callable[[_Line], Iterator[_Found]]


@dataclass(frozen=True, slots=True)
class _Needles:
    """What every line a detector finds something in contains: one of ``exact`` as it is
    written, one of ``anycase`` (lower case) in any case, as IGNORECASE reads it, or a match
    of one of ``shapes`` (each starting with a literal, which the regex engine looks for
    fast). None can span two lines."""

    exact: tuple[str, ...] = ()
    anycase: tuple[str, ...] = ()
    shapes: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True, slots=True)
class _Detector:
    needles: _Needles
    find: _Finder


_Cut = Callable[[re.Match[str], _Line], str]


def _captured(match: re.Match[str], line: _Line) -> str:
    """The group detect-secrets reports (AWS's secret key, a URL's password), or the match."""
    return next((group for group in match.groups() if group), match.group())


def _whole(match: re.Match[str], line: _Line) -> str:
    """The whole match: GitHub's and GitLab's group is the prefix ("ghp", "glpat")."""
    return match.group()


_ARTIFACTORY_CORE: Final = re.compile(r"AKC[a-zA-Z0-9]{10,}|AP[\dABCDEF][a-zA-Z0-9]{8,}")


def _artifactory(match: re.Match[str], line: _Line) -> str:
    """Without the space, quote, ``=`` or ``:`` on either side that the pattern includes."""
    core = _ARTIFACTORY_CORE.search(match.group())
    return match.group() if core is None else core.group()


def _azure(match: re.Match[str], line: _Line) -> str:
    """The key, without the ``AccountKey=`` the pattern begins with."""
    return match.group().removeprefix("AccountKey=")


_NPM_TOKEN: Final = re.compile(r"[\w\-]+")


def _npm(match: re.Match[str], line: _Line) -> str:
    """The token, not the rest of the line that the pattern's ``npm_.+`` runs on to."""
    token = _NPM_TOKEN.match(_captured(match, line))
    return match.group() if token is None else token.group()


_JWT_TAIL: Final = re.compile(r"[A-Za-z0-9_\-+/=]*")


def _jwt(match: re.Match[str], line: _Line) -> str:
    """With its signature: the pattern ends in a lazy ``*?``, so its match stops before."""
    tail = _JWT_TAIL.match(line.text, match.end())
    return match.group() + ("" if tail is None else tail.group())


_PEM_END: Final = re.compile(r"-----END[A-Z0-9 ]*(?:-----)?|Private-MAC:[^\n]*")
_PEM_REACH: Final = 64 * 1024  # an RSA key of 16384 bits is 12 KiB of PEM
# What follows a header without its END, in a text cut short: base64 lines, blank lines,
# the "Proc-Type: ..." and "Comment: ..." lines of a header.
_PEM_BODY: Final = re.compile(r"[ \t]*(?:[A-Za-z0-9+/=]{8,})?\r?|[A-Za-z][\w\-]*: [^\n]*")


def _pem_block(match: re.Match[str], line: _Line) -> str:
    """The whole key, from ``-----BEGIN`` to its END line (PuTTY's: its Private-MAC),
    where detect-secrets reports the words of the header. Without an END within 64 KiB,
    the header and the body lines after it (the text was cut, or is code that only says
    the words)."""
    joined = line.joined
    begin = line.start + match.start()
    if begin >= 5 and joined.startswith("-----", begin - 5):
        begin -= 5
    after = line.start + match.end()
    end = _PEM_END.search(joined, after, min(line.stop, after + _PEM_REACH))
    if end is not None:
        return joined[begin : end.end()].rstrip()
    block_end = None
    at = joined.find("\n", after, line.stop) + 1
    while 0 < at <= line.stop:
        newline = joined.find("\n", at, line.stop)
        line_end = line.stop if newline == -1 else newline
        if not _PEM_BODY.fullmatch(joined, at, line_end):
            break
        block_end, at = line_end, line_end + 1
    if block_end is None:  # no body: the header alone
        return joined[begin : after + 5 if joined.startswith("-----", after) else after]
    return joined[begin:block_end].rstrip()


_LONG_RUN: Final = re.compile(r"[\w\-]{24}")


def _regex_finder(plugin: RegexBasedDetector, cut: _Cut, needs_run: bool) -> _Finder:
    def find(line: _Line) -> Iterator[_Found]:
        text = line.text
        if needs_run and not line.long_run:
            return  # its secret is a run of 24 letters and digits at the least
        for regex in plugin.denylist:
            for match in regex.finditer(text):  # the matches of the plugin's findall
                if isinstance(plugin, JwtTokenDetector) and not plugin.is_formally_valid(
                    match.group()
                ):
                    continue
                yield plugin, cut(match, line)

    return find


def _shapes(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


# The assignments of IBM's, Cloudant's and SoftLayer's patterns ("ibm_api_key = ...")
# name one of these (key, pwd, pw, password, pass, token), in any case.
_ASSIGNED: Final = ("key", "pw", "pass", "token")

# Each plugin, what any line its patterns match contains (derived from the patterns, and
# held to them by test_secretscan), how its secret is cut from a match, and whether that
# secret is a long run (then a line without one is not looked at).
_PLUGINS: Final[tuple[tuple[RegexBasedDetector, _Needles, _Cut, bool], ...]] = (
    (
        ArtifactoryDetector(),
        _Needles(exact=("AKC",), shapes=_shapes(r"AP[\dABCDEF][a-zA-Z0-9]{8}")),
        _artifactory,
        False,
    ),
    (
        AWSKeyDetector(),
        _Needles(exact=("A3T", "ABIA", "ACCA", "AKIA", "ASIA"), anycase=("aws",)),
        _captured,
        False,
    ),
    (AzureStorageKeyDetector(), _Needles(exact=("AccountKey=",)), _azure, False),
    (BasicAuthDetector(), _Needles(exact=("://",)), _captured, False),
    (CloudantDetector(), _Needles(anycase=(*_ASSIGNED, "cloudant")), _captured, True),
    (
        DiscordBotTokenDetector(),
        _Needles(shapes=_shapes(r"\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}")),
        _captured,
        False,
    ),
    (
        GitHubTokenDetector(),
        _Needles(exact=("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
        _whole,
        False,
    ),
    (
        GitLabTokenDetector(),
        _Needles(
            exact=(
                "glpat-",
                "gldt-",
                "glft-",
                "glsoat-",
                "glrt-",
                "GR1348941",
                "glcbt-",
                "glimt-",
                "glptt-",
                "glagent-",
                "gloas-",
            )
        ),
        _whole,
        False,
    ),
    (IbmCloudIamDetector(), _Needles(anycase=_ASSIGNED), _captured, True),
    (IbmCosHmacDetector(), _Needles(anycase=("secret",)), _captured, True),
    (JwtTokenDetector(), _Needles(exact=("eyJ",)), _jwt, False),
    (MailchimpDetector(), _Needles(shapes=_shapes(r"-us[0-9]")), _captured, False),
    (NpmDetector(), _Needles(exact=(":_authToken=",)), _npm, False),
    (OpenAIDetector(), _Needles(exact=("T3BlbkFJ",)), _captured, False),
    (
        PrivateKeyDetector(),
        _Needles(exact=("PRIVATE KEY", "PuTTY-User-Key-File-2")),
        _pem_block,
        False,
    ),
    (PypiTokenDetector(), _Needles(exact=("pypi-AgE",)), _captured, False),
    (SendGridDetector(), _Needles(exact=("SG.",)), _captured, False),
    (SlackDetector(), _Needles(anycase=("xox", "hooks.slack.com")), _captured, False),
    (SoftlayerDetector(), _Needles(anycase=(*_ASSIGNED, "softlayer")), _captured, True),
    (SquareOAuthDetector(), _Needles(exact=("sq0csp-",)), _captured, False),
    (StripeDetector(), _Needles(exact=("k_live_",)), _captured, False),
    (
        TelegramBotTokenDetector(),
        _Needles(shapes=_shapes(r":[0-9A-Za-z_-]{35}")),
        _captured,
        False,
    ),
    (
        TwilioKeyDetector(),
        _Needles(shapes=_shapes(r"AC[a-z0-9]{32}", r"SK[a-z0-9]{32}")),
        _captured,
        False,
    ),
)

_KEYWORD: Final = KeywordDetector()
_LONG_LINE: Final = 2048
_BASE64: Final = Base64HighEntropyString()
_HEX: Final = HexHighEntropyString()

# Every word of the keyword detector's list (api_key, db_pass, pwd, secret...) holds one
# of these.
_KEYWORD_NEEDLES: Final = ("key", "pass", "pwd", "secret", "contrase")
_KEYWORD_WORDS: Final = tuple(
    spelled for word in DENYLIST for spelled in (word.replace("_?", "_"), word.replace("_?", ""))
)
_KEYWORD_WORD: Final = re.compile("|".join(sorted(_KEYWORD_WORDS, key=len, reverse=True)))

# The keyword detector's config-file patterns (``password: hunter2``, unquoted) read code
# and prose as secrets (``secret = make_secret()``, ``password: str``, "Password: at least
# 8 characters"), so they are used only on lines that are an environment variable:
# ``NAME=value``, upper case, no space around ``=`` (``env``, ``.env`` files, Dockerfiles).
_ENV_LINE: Final = re.compile(r"(?:export[ \t]+)?[A-Z][A-Z0-9_]*=\S.*")
# And in code, its quoted patterns take ``if secret_command == "list"`` and ``secrets =
# "redacted"`` for secrets: a value of lower-case words is a word, not a password.
_WORDS: Final = re.compile(r"[a-z]+(?:[ _\-][a-z]+)*")


def _keyword_matches(
    line: _Line, starts: list[int], patterns: Mapping[re.Pattern[str], int]
) -> Iterator[str]:
    """The values the keyword detector finds with ``patterns``, and more: where it searches
    once, every match (the second assignment on a line too).

    Its patterns cost some 350 ns a character, each. But all but one begin with a word of
    its list, so they are tried only where such a word begins (``starts``). The one that
    ends with it (``"value" == password``) begins with a quote, found fast: it searches
    the line, or on a long line (minified code) the 4 KiB before each word.
    """
    text = line.text
    for regex, group in patterns.items():
        if regex.pattern.startswith(DENYLIST_REGEX):
            for start in starts:
                match = regex.match(text, start)
                if match is not None:
                    yield match.group(group)
        elif len(text) <= _LONG_LINE:
            for match in regex.finditer(text):
                yield match.group(group)
        else:
            for start in starts:
                for match in regex.finditer(text, max(0, start - 4096), start + 32):
                    yield match.group(group)


def _keyword(line: _Line) -> Iterator[_Found]:
    # Where a word of the list begins (in any case, as the patterns' IGNORECASE reads it).
    # One start an identifier is enough: the patterns' \w* after the word runs to its end
    # from any of them, so "db_password" matches from "db_pass" as from "password".
    starts = [word.start() for word in _KEYWORD_WORD.finditer(line.folded)]
    if not starts:
        return
    for value in _keyword_matches(line, starts, QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP):
        if not _WORDS.fullmatch(value):
            yield _KEYWORD, value
    if _ENV_LINE.fullmatch(line.text):
        for value in _keyword_matches(line, starts, CONFIG_DENYLIST_REGEX_TO_GROUP):
            yield _KEYWORD, value


# A name and its value, in text: ``GITHUB_TOKEN=...``, ``"token": "..."``,
# ``Authorization: Bearer ...``. Matched from a needle in the name: the rest of the name,
# the assignment, the value; the name's start is looked for before the needle.
_NAME_NEEDLES: Final = tuple(
    "key token secret pass pw cred auth cookie session sig bearer jwt pat".split()
)
_NAME_NEEDLE: Final = re.compile("|".join(_NAME_NEEDLES))
_NAME_HEAD: Final = re.compile(r"[A-Za-z0-9_.\-]{1,100}\Z")
_NAMED_VALUE: Final = re.compile(
    r"(?P<rest>[A-Za-z0-9_.\-]*)[\"']?[ \t]*(?::=|=>|=|:)[ \t]*"
    r"(?:(?i:bearer|basic|token)[ \t]+)?[\"'`]?(?P<value>[A-Za-z0-9+/=_\-.~]{8,})"
)


# An entropy over the hex limit (3.0) takes 9 different hex digits at the least, over the
# base64 one (4.5) 23 different characters: a line without such a run has no value to test.
_RANDOM_ENOUGH: Final = re.compile(r"[0-9a-fA-F]{9}|[A-Za-z0-9+/=_\-]{23}")


def _named_values(line: _Line) -> Iterator[_Found]:
    text = line.text
    if _RANDOM_ENOUGH.search(text) is None:
        return
    done = 0
    for needle in _NAME_NEEDLE.finditer(line.folded):
        at = needle.start()
        if at < done:
            continue
        match = _NAMED_VALUE.match(text, at)
        if match is None:
            continue
        done = match.end()
        head = _NAME_HEAD.search(text, max(0, at - 100), at)
        name = (head.group() if head else "") + match["rest"]
        if _key_like(name):
            plugin = _high_entropy(match["value"])
            if plugin is not None:
                yield plugin, match["value"]


_DETECTORS: Final = (
    *(
        _Detector(needles, _regex_finder(plugin, cut, needs_run))
        for plugin, needles, cut, needs_run in _PLUGINS
    ),
    _Detector(_Needles(anycase=_KEYWORD_NEEDLES), _keyword),
    _Detector(_Needles(anycase=_NAME_NEEDLES), _named_values),
)


# --- names that say "secret" ---------------------------------------------------------------

_WORD: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# A name is key-like when one of its words is one of these, or it holds one of the stems
# (one-word names: "APIKEY", "githubtoken"). Each holds one of _NAME_NEEDLES.
_KEY_WORDS: Final = frozenset(
    "key keys apikey token tokens secret secrets password passwd passphrase pass pwd pw "
    "credential credentials cred creds auth authorization cookie cookies session sig "
    "signature bearer jwt pat privatekey secretkey accesskey".split()
)
_KEY_STEMS: Final = ("token", "secret", "passw", "apikey", "credential", "privatekey")
# ... unless another word says its value is something else: an id, a hash, a public key,
# a page cursor, a count, a name or place of a secret, a setting about one.
_NOT_SECRET_WORDS: Final = frozenset(
    "id ids uuid guid public pub fingerprint sha sha1 sha256 sha512 md5 digest checksum "
    "etag integrity gpg pgp page cursor continuation pagination next sync count max min "
    "length len size limit total used remaining required enabled disabled policy type "
    "changed expires expiry expiration reset rotation updated created url uri path file "
    "dir name names label field prompt format version mode arn manager store".split()
)


def _words(name: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(name)]


@lru_cache(maxsize=4096)
def _key_like(name: str) -> bool:
    """Whether a value under ``name`` is a secret if it looks random."""
    words = _words(name)
    if _NOT_SECRET_WORDS.intersection(words):
        return False
    squashed = "".join(words)
    return any(word in _KEY_WORDS for word in words) or any(stem in squashed for stem in _KEY_STEMS)


def _as_identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)  # "X-Api-Key" -> "X_Api_Key", as code would say it


@lru_cache(maxsize=4096)
def _keyword_name(name: str) -> bool:
    """Whether detect-secrets' keyword detector takes ``name`` for a secret's (password,
    api_key, secret, db_pass...): then any value under it is one."""
    if _NOT_SECRET_WORDS.intersection(_words(name)):
        return False
    probe = _as_identifier(name) + ' = "probe"'
    return any(True for _ in _KEYWORD.analyze_string(probe))


_RUN: Final = re.compile(r"[A-Za-z0-9+/=_\-]{8,}")  # the base64 plugin's alphabet
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def _high_entropy(value: str) -> HighEntropyStringsPlugin | None:
    """The entropy plugin that takes a run of ``value`` for a secret, if one does."""
    for run in _RUN.finditer(value):
        part = run.group()
        if _HEX_DIGITS.issuperset(part):
            if _HEX.calculate_shannon_entropy(part) > _HEX.entropy_limit:
                return _HEX
        elif _BASE64.calculate_shannon_entropy(part) > _BASE64.entropy_limit:
            return _BASE64
    return None


# An absolute path is what PWD, OLDPWD and the like hold, not a password: the keyword
# detector wants its values to begin with a letter or digit, for the same reason.
_PATH: Final = re.compile(r"(?:~|\.{1,2})?/[\w.\-/]*|[A-Za-z]:\\[\w.\-\\]*")


def _by_name(name: str, value: str) -> BasePlugin | None:
    """The plugin that takes the JSON value ``value`` under ``name`` for a secret."""
    keyword = _keyword_name(name)
    if not (keyword or _key_like(name)):
        return None
    if "\n" in value or not value.strip() or _PATH.fullmatch(value):
        return None
    return _KEYWORD if keyword else _high_entropy(value)


def _false_positive(plugin: BasePlugin, secret: str, line: str) -> bool:
    """detect-secrets' heuristic filters, as its scan applies them, but for the detectors
    of one provider (whose pattern asked for that very shape) neither the uuid filter
    (npm's legacy tokens are uuids) nor the indirect-reference one (``auth=Token("ghp_")``
    is a real token)."""
    if REMOVED_PREFIX in secret:
        return True  # what an earlier scan left
    if (
        heuristic.is_templated_secret(secret)
        or heuristic.is_prefixed_with_dollar_sign(secret)
        or heuristic.is_sequential_string(secret)
        or heuristic.is_not_alphanumeric_string(secret)
    ):
        return True
    if isinstance(plugin, RegexBasedDetector):
        return False
    return (
        heuristic.is_potential_uuid(secret)
        or heuristic.is_likely_id_string(secret, line, plugin)
        or heuristic.is_indirect_reference(line)
    )


# --- walking the result --------------------------------------------------------------------

_IDENTIFIER: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$\-]*")


def _path(where: str, key: object) -> str:
    if isinstance(key, str):
        if _IDENTIFIER.fullmatch(key):
            return f"{where}.{key}" if where else key
        return f"{where}[{json.dumps(key, ensure_ascii=False)}]"
    if (
        key is None
        or isinstance(key, bool | float)
        or (isinstance(key, int) and key.bit_length() <= 64)
    ):
        return f"{where}[{key!r}]"
    return f"{where}[{type(key).__name__}]"  # its repr may be long, or raise


_Place = tuple[Any, object] | None  # (the parent's place, the key or index), built as walked


def _where(place: _Place) -> str:
    keys: list[object] = []
    while place is not None:
        place, key = place
        keys.append(key)
    where = ""
    for key in reversed(keys):
        where = _path(where, key)
    return where


# Where a value sits says whether it is text: a content block's image or audio data and a
# resource's blob are base64 of bytes.
_RESULT, _CONTENT, _BLOCK, _RESOURCE, _ANY = range(5)
_BINARY: Final = -1


def _child_role(role: int, parent: Mapping[Any, Any], key: object) -> int:
    if role == _RESULT:
        return _CONTENT if key == "content" else _ANY
    if role == _BLOCK:
        if key == "data" and parent.get("type") in ("image", "audio"):
            return _BINARY
        return _RESOURCE if key == "resource" else _ANY
    if role == _RESOURCE and key == "blob":
        return _BINARY
    return _ANY


_JSON_START: Final = re.compile(r'\s*"?[\[{]')


def _parsed(text: str) -> Any:
    """The JSON ``text`` holds, if it is an object or array (or a JSON string of one:
    JSON encoded twice); None otherwise."""
    first = text[:1]
    if first not in ("{", "[") and not (
        first in ('"', " ", "\t", "\r", "\n") and _JSON_START.match(text)
    ):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, an integer too long, nested too deep
        return None
    if isinstance(value, str):
        return _parsed(value) if value[:1] in ("{", "[") else None
    return value if isinstance(value, dict | list) else None


def _twice(text: str) -> bool:
    """Whether ``text`` is a JSON string of JSON (which :func:`_parsed` has read through)."""
    return text.lstrip()[:1] == '"'


class _Collected:
    """The texts of a result, within the bounds, each once, ready to be scanned as one."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.places: list[list[_Place]] = []  # where each text is (the first, the others)
        self.names: list[tuple[int, str]] = []  # (text, the JSON key it is the value of)
        self.seen: dict[tuple[str, str | None], int] = {}
        self.size = 0
        self.values = 0
        self.complete = True

    def visit(self, value: object, place: _Place, depth: int, role: int) -> None:
        self.values += 1
        if self.values > MAX_VALUES:
            self.complete = False
        elif isinstance(value, str):
            self.text(value, place, depth, None)
        elif isinstance(value, Mapping | list | tuple):
            if depth >= MAX_DEPTH:
                self.complete = False
            elif isinstance(value, Mapping):
                self.mapping(value, place, depth, role)
            else:
                child = _BLOCK if role == _CONTENT else _ANY
                for index, item in enumerate(value):
                    self.visit(item, (place, index), depth + 1, child)

    def mapping(self, value: Mapping[Any, Any], place: _Place, depth: int, role: int) -> None:
        for key, item in value.items():
            here = (place, key)
            if isinstance(key, str):
                self.values += 1
                self.text(key, here, depth, None, parse=False)
            child = _child_role(role, value, key)
            if child == _BINARY:
                continue
            if isinstance(item, str) and isinstance(key, str):
                self.values += 1
                self.text(item, here, depth + 1, key)
            else:
                self.visit(item, here, depth + 1, child)

    def text(
        self, text: str, place: _Place, depth: int, name: str | None, parse: bool = True
    ) -> None:
        seen = self.seen.get((text, name))
        if seen is not None:
            self.places[seen].append(place)
            return
        room = MAX_TEXT_CHARS - self.size
        if room <= 0 or self.values > MAX_VALUES:
            self.complete = False
            return
        if parse and len(text) <= room and depth < MAX_DEPTH:
            parsed = _parsed(text)
            if parsed is not None:
                self.visit(parsed, place, depth + 1, _ANY)
                return
        if len(text) > room:
            text = text[:room]
            self.complete = False
        else:
            self.seen[(text, name)] = len(self.texts)
            if name is not None:
                self.names.append((len(self.texts), name))
        self.places.append([place])
        self.texts.append(text)
        self.size += len(text) + 1


@dataclass(frozen=True, slots=True, order=True)
class _Hit:
    text: int
    offset: int
    kind: str
    secret: str


# What IGNORECASE takes for an ASCII letter that lower() does not make one (or makes two).
_FOLD: Final = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


def _folded(text: str) -> str:
    """``text`` in lower case as IGNORECASE reads it, as long as the text (the one
    character that grows in lower case is folded first)."""
    if not text.isascii() and any(c in text for c in "\u0130\u0131\u017f\u212a"):
        text = text.translate(_FOLD)
    return text.lower()


class _Joined:
    """The texts as one, and the lines in it where each needle is."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.text = "\n".join(texts)
        self.starts = list(itertools.accumulate((len(text) + 1 for text in texts), initial=0))
        self.folded = _folded(self.text)
        self.cache: dict[object, list[tuple[int, int]]] = {}
        self.made: dict[int, _Line] = {}

    def _line(self, at: int) -> tuple[int, int]:
        start = self.text.rfind("\n", 0, at) + 1
        end = self.text.find("\n", at)
        return start, len(self.text) if end == -1 else end

    def _found(self, key: object, find: Callable[[int], int]) -> list[tuple[int, int]]:
        lines = self.cache.get(key)
        if lines is None:
            lines = []
            at = find(0)
            while at != -1:
                line = self._line(at)
                lines.append(line)
                at = find(line[1] + 1)
            self.cache[key] = lines
        return lines

    def lines(self, needles: _Needles) -> list[tuple[int, int]]:
        """The lines (start, end) that hold one of the needles, in order."""
        found: list[list[tuple[int, int]]] = []
        for literal in needles.exact:
            found.append(self._found(("exact", literal), partial(self.text.find, literal)))
        for literal in needles.anycase:
            found.append(self._found(("anycase", literal), partial(self.folded.find, literal)))
        for shape in needles.shapes:

            def search(at: int, shape: re.Pattern[str] = shape) -> int:
                match = shape.search(self.text, at)
                return -1 if match is None else match.start()

            found.append(self._found(shape, search))
        some = [lines for lines in found if lines]
        if len(some) == 1:
            return some[0]  # in order already
        return sorted({line for lines in some for line in lines})

    def line(self, start: int, end: int) -> _Line:
        line = self.made.get(start)
        if line is None:
            text = self.text[start:end].rstrip()
            index = bisect.bisect_right(self.starts, start) - 1
            stop = self.starts[index] + len(self.texts[index])
            line = _Line(text, self.folded[start : start + len(text)], self.text, start, stop)
            self.made[start] = line
        return line

    def index(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1


_ENTROPY_KINDS: Final = frozenset((_BASE64.secret_type, _HEX.secret_type))


# Every detector's needles at once, in lower case (found in the folded text, so more
# than each detector's own search, never less): most results hold none, and are done.
_ALL_LITERALS: Final = tuple(
    sorted(
        {
            literal.lower()
            for detector in _DETECTORS
            for literal in (*detector.needles.exact, *detector.needles.anycase)
        }
    )
)
_ALL_SHAPES: Final = tuple(shape for d in _DETECTORS for shape in d.needles.shapes)


def _no_needle(joined: _Joined) -> bool:
    folded = joined.folded
    if any(literal in folded for literal in _ALL_LITERALS):
        return False
    return not any(shape.search(joined.text) for shape in _ALL_SHAPES)


def _line_hits(joined: _Joined) -> Iterator[_Hit]:
    if _no_needle(joined):
        return
    for detector in _DETECTORS:
        for start, end in joined.lines(detector.needles):
            line = joined.line(start, end)
            for plugin, secret in detector.find(line):
                if not _false_positive(plugin, secret, line.text):
                    yield _Hit(joined.index(start), start, plugin.secret_type, secret)


def _name_hits(collected: _Collected, joined: _Joined, found: set[int]) -> Iterator[_Hit]:
    for index, name in collected.names:
        value = collected.texts[index]
        named = None if index in found else _by_name(name, value)
        if named is not None:
            assignment = f"{_as_identifier(name)} = {value}"  # what the filters read
            if not _false_positive(named, value, assignment):
                yield _Hit(index, joined.starts[index], named.secret_type, value)


_QUICK_BYTES: Final = 64 * 1024  # past it, the whole scan is cheaper than a second pass
_QUICK_LITERALS: Final = tuple(sorted({*_ALL_LITERALS, *_KEY_WORDS, *_KEY_STEMS}))


def _plainly_clean(result: Mapping[str, Any], known: list[str]) -> bool:
    """Whether a small result's JSON text holds nothing any detector starts from (no
    needle, no key-like word, no known secret): most results, done in microseconds. A
    secret written with JSON escapes inside a text that is itself JSON is read by the
    whole scan only; a server that means to hide a secret can hide it from any scan."""
    if not _smaller_than(result, _QUICK_BYTES):
        return False  # (not written out first only to be found too long)
    try:
        text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return False
    if any(form in text for value in known for form in _forms(value)):
        return False
    folded = _folded(text)
    if any(literal in folded for literal in _QUICK_LITERALS):
        return False
    return not any(shape.search(text) for shape in _ALL_SHAPES)


def _smaller_than(value: object, budget: int) -> bool:
    """Whether the texts in ``value`` add up to fewer than ``budget`` characters (roughly
    its JSON's size), looked at only until they do not."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item)
        elif isinstance(item, Mapping):
            budget -= len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            budget -= len(item)
            stack.extend(item)
        else:
            budget -= 8
        if budget <= 0:
            return False
    return True


def _known_hits(collected: _Collected, known: list[str], found: set[str]) -> Iterator[_Hit]:
    """Where the secrets Lockgate holds stand in the collected texts (longest first, so a
    value inside a longer one is not cut out of it first)."""
    offset = 0
    for index, text in enumerate(collected.texts):
        for value in known:
            if value not in found and value in text:
                yield _Hit(index, offset, KNOWN_KIND, value)
        offset += len(text) + 1


def _hits(collected: _Collected) -> tuple[list[_Hit], bool]:
    """The secrets in the collected texts, in order; and False if there were more than
    MAX_SECRETS (a dump of secrets: the rest is not looked for)."""
    joined = _Joined(collected.texts)
    hits: list[_Hit] = []
    secrets: set[str] = set()
    for hit in _line_hits(joined):
        secrets.add(hit.secret)
        if len(secrets) > MAX_SECRETS:
            return sorted(hits), False
        hits.append(hit)
    # an entropy plugin only seconds what a plugin that knows the secret's shape found
    shaped: dict[int, list[str]] = {}  # by line
    for hit in hits:
        if hit.kind not in _ENTROPY_KINDS:
            shaped.setdefault(hit.offset, []).append(hit.secret)
    hits = [
        hit
        for hit in hits
        if hit.kind not in _ENTROPY_KINDS
        or not any(
            other in hit.secret or hit.secret in other for other in shaped.get(hit.offset, ())
        )
    ]
    for hit in _name_hits(collected, joined, {hit.text for hit in hits}):
        secrets.add(hit.secret)
        if len(secrets) > MAX_SECRETS:
            return sorted(hits), False
        hits.append(hit)
    return sorted(hits), True


# --- redacting -----------------------------------------------------------------------------


def _forms(secret: str) -> set[str]:
    """``secret`` as it is written in a string, and in JSON text (escaped, ``\\/``)."""
    forms = {secret}
    for ascii_only in (False, True):
        escaped = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        forms |= {escaped, escaped.replace("/", "\\/")}
    return forms


_WORD_LIKE: Final = re.compile(r"[A-Za-z]+(?:[ _\-][A-Za-z]+)*")


def _word_like(secret: str) -> bool:
    """Whether ``secret`` is short or made of words: then it is replaced only where it
    stands alone ("postgres" as a password, not in "postgresql"; "dev", not in "/device")."""
    return len(secret) < _SHORT or _WORD_LIKE.fullmatch(secret) is not None


# Past this many forms of secrets to look for, each one more searched for in every string
# costs as much again. Those of the rest that are tokens are looked up by the token runs of
# each string instead (a set lookup: a run of token characters that is one of them), which
# misses one glued to other token characters: the outcome says incomplete.
_SEARCHED: Final = 256
# (both ways: "KEY=ghp_..." holds the run "ghp_...", and "AccountKey=a+b==" the run "a+b==")
_TOKEN: Final = re.compile(r"[A-Za-z0-9+/=_\-.~]+")
_WORD_TOKEN: Final = re.compile(r"[A-Za-z0-9_\-]+")


class _Redactor:
    """Replaces the found secrets, in every form, longest first; a short or word-like one
    only where no letter or digit touches it."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        marks: dict[str, str] = {}
        for secret, kind in kinds.items():
            for form in _forms(secret):
                marks.setdefault(form, removed(kind))
        self.marks = marks
        searched = list(marks)
        self.tokens: dict[str, str] = {}
        if len(searched) > _SEARCHED:
            tokens = [form for form in searched[_SEARCHED:] if _TOKEN.fullmatch(form)]
            self.tokens = {form: marks[form] for form in tokens}
            searched = [form for form in searched if form not in self.tokens]
        searched.sort(key=len, reverse=True)
        self.long = [(form, marks[form]) for form in searched if not _word_like(form)]
        short = [re.escape(form) for form in searched if _word_like(form)]
        self.short = re.compile("|".join(short)) if short else None

    @property
    def complete(self) -> bool:
        """Whether every form is searched for as a part of any string."""
        return not self.tokens

    def _stands_alone(self, match: re.Match[str]) -> bool:
        text, start, end = match.string, match.start(), match.end()
        return not (start > 0 and text[start - 1].isalnum()) and not (
            end < len(text) and text[end].isalnum()
        )

    def _short(self, match: re.Match[str]) -> str:
        return self.marks[match.group()] if self._stands_alone(match) else match.group()

    def _token(self, match: re.Match[str]) -> str:
        return self.tokens.get(match.group(), match.group())

    def sub(self, text: str) -> str:
        for form, mark in self.long:  # str.replace: far faster than one regex of them all
            if form in text:
                text = text.replace(form, mark)
        if self.tokens:
            text = _WORD_TOKEN.sub(self._token, _TOKEN.sub(self._token, text))
        return text if self.short is None else self.short.sub(self._short, text)

    def _holds(self, text: str) -> bool:
        if any(form in text for form, _ in self.long):
            return True
        if self.tokens and any(
            run.group() in self.tokens
            for pattern in (_TOKEN, _WORD_TOKEN)
            for run in pattern.finditer(text)
        ):
            return True
        short = self.short
        return short is not None and any(map(self._stands_alone, short.finditer(text)))

    def leaks(self, value: object, depth: int) -> bool:
        """Whether a found secret is still in ``value``, inside JSON text included."""
        if isinstance(value, str):
            if self._holds(value):
                return True
            return depth < MAX_DEPTH and self.leaks(_parsed(value), depth + 1)
        if depth >= MAX_DEPTH:
            return False
        if isinstance(value, Mapping):
            return any(
                self.leaks(key, depth + 1) or self.leaks(item, depth + 1)
                for key, item in value.items()
            )
        if isinstance(value, list | tuple):
            return any(self.leaks(item, depth + 1) for item in value)
        return False

    def string(self, text: str, depth: int) -> str:
        redacted = self.sub(text)
        if depth < MAX_DEPTH:
            parsed = _parsed(redacted)
            if parsed is not None and self.leaks(parsed, depth + 1):
                # written in a way the replacement did not catch (\u escapes, JSON in
                # JSON): the JSON redacted as structure, written anew
                rewritten = json.dumps(
                    self.value(parsed, depth + 1, _ANY),
                    ensure_ascii=False,
                    indent=2 if "\n" in text else None,
                )
                return json.dumps(rewritten, ensure_ascii=False) if _twice(text) else rewritten
        return redacted

    def value(self, value: Any, depth: int, role: int) -> Any:
        if isinstance(value, str):
            return self.string(value, depth)
        if depth >= MAX_DEPTH:
            return value
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                child = _child_role(role, value, key)
                new_key = self.sub(key) if isinstance(key, str) else key
                if new_key in out:  # two keys that were secrets of one kind
                    n = 2
                    while f"{new_key} ({n})" in out:
                        n += 1
                    new_key = f"{new_key} ({n})"
                out[new_key] = item if child == _BINARY else self.value(item, depth + 1, child)
            return out
        if isinstance(value, list | tuple):
            child = _BLOCK if role == _CONTENT else _ANY
            return [self.value(item, depth + 1, child) for item in value]
        return value


_MAX_WHERE: Final = 300


KNOWN_KIND: Final = "Secret from Lockgate's keyring"
_MIN_KNOWN: Final = 6  # a shorter keyring value would be found in ordinary words


def scan_result(result: Mapping[str, Any], known: Iterable[str] = ()) -> ScanOutcome:
    """The secrets in a tools/call ``result``, and the result without them. Pure.

    ``known`` are secrets Lockgate itself holds (the values the server was started with,
    from the keyring): found wherever they stand, whatever they look like.

    A ``result`` that is not a mapping is not scanned (``complete=False``). Never raises
    on odd input: values that are not JSON are kept as they are and not scanned.
    """
    given: object = result  # typed a Mapping, but it comes off the wire
    if not isinstance(given, Mapping):
        return ScanOutcome((), None, complete=False)
    values = sorted({k for k in known if len(k) >= _MIN_KNOWN}, key=len, reverse=True)
    if _plainly_clean(given, values):
        return ScanOutcome((), None, complete=True)
    collected = _Collected()
    collected.visit(given, None, 0, _RESULT)
    hits, all_found = _hits(collected)
    hits = sorted([*hits, *_known_hits(collected, values, {h.secret for h in hits})])
    if not hits:
        return ScanOutcome((), None, collected.complete and all_found)
    kinds: dict[str, str] = {}
    for hit in hits:
        kinds.setdefault(hit.secret, hit.kind)
    redactor = _Redactor(kinds)
    findings: dict[SecretFinding, None] = {}
    wheres: dict[int, list[str]] = {}
    for hit in hits:
        if hit.text not in wheres:
            wheres[hit.text] = []
            for place in collected.places[hit.text]:
                where = redactor.sub(_where(place))
                if len(where) > _MAX_WHERE:
                    where = where[: _MAX_WHERE - 1] + "…"
                wheres[hit.text].append(where)
        for where in wheres[hit.text]:
            findings.setdefault(SecretFinding(hit.kind, where), None)
    redacted: dict[str, Any] = redactor.value(given, 0, _RESULT)
    complete = collected.complete and all_found and redactor.complete
    return ScanOutcome(tuple(findings), redacted, complete)
