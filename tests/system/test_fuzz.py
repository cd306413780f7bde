"""Fuzz both doors, from both sides (Hypothesis).

**Client side.** Random and mutated JSON-RPC goes into one real gateway per test
(tests/support/harness.py) with the recording upstream (tests/servers/recorder.py):

- on the local socket, as raw lines on one initialised session: the fast lane takes the
  well-formed ``tools/call`` requests, the SDK route everything else (requests with a
  progress token, other methods, notifications, answers, malformed lines, batches);
- over streamable HTTP, as POST bodies on one initialised session, and some without a
  session, with an unknown one or with bad headers.

The messages are well-formed JSON-RPC requests, notifications and answers with real MCP
methods and random ones, ids of every JSON type (huge integers, floats, booleans, null,
nested), params nesting a few hundred levels, huge strings, lone surrogate escapes written
as raw JSON text, ``NaN``/``Infinity`` tokens and duplicate keys; byte-level mutations of
such lines (truncated, bytes flipped, garbage inserted, invalid UTF-8); batches; and on the
local door lines up to :data:`proxy.config.settings.DEFAULT_MAX_MESSAGE_BYTES` and just
beyond it.

**Server side.** tests/servers/fuzzserver.py answers each ``tools/call`` with a script
Hypothesis wrote: wrong ids, duplicate answers, results that are not objects, malformed
errors, deep nesting, huge and unreadable lines, its own requests (sampling, roots,
elicitation) and notifications (progress with foreign tokens, cancellations, list
changes), garbage, and exits mid-call. The calls come in on both doors (the fast lane,
the local SDK route with a progress token, HTTP with and without one), and the client
answers the server's requests, refuses them or ignores them.

After every input:

- every request with a usable id (an integer or a string) got an answer (a result or a
  JSON-RPC error) within :data:`ANSWER_SECONDS`, every line that is not JSON-RPC at all
  an error, and on HTTP every POST an HTTP response (no 5xx) whose answer carries the id;
- the session is still there (only a line over the line limit may close it) and healthy:
  ``echo`` answers ``ran echo`` and ``ping`` answers, on the same session;
- the invariant: no call the policy blocks reached a server (what the servers recorded),
  and every call that reached one has its audit row, allowed or approved, found by the
  unique marker in its arguments; on the server side, every call's row is complete
  (not ``pending``) once its answer has arrived, and the answer is the server's own
  where the server answered plainly (its result, or its error code).

A violation does not stop the run: each one is recorded (the first input that showed it,
per kind, and the shortest), the run goes on, and the test fails at the end listing them
all (the inputs in full go to ``fuzz-findings.txt`` in the test's tmp_path), so one run
reports every finding and the full count. ``LOCKGATE_FUZZ_STRICT=1`` fails at the first
one instead, and lets Hypothesis shrink it.

Knobs: ``LOCKGATE_FUZZ_EXAMPLES`` (examples per test; the defaults keep ``./dev test``
within its budget, about 50 s for the three), ``LOCKGATE_FUZZ_RANDOM=1`` (a new random
run instead of the fixed, derandomised one; it prints its ``LOCKGATE_FUZZ_SEED``, which
runs it again), ``LOCKGATE_FUZZ_STRICT=1``. Run with ``-s`` to see the counts (lines
starting with ``FUZZ-COUNT``, and ``FUZZ-TOTAL`` at the end); ``bench/fuzz.py`` runs a long
profile and sums them.

The tests after the fuzz tests are what the fuzzing found, one input each, written so
they fail until the gateway is fixed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import gc
import itertools
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pydantic_core
import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from proxy.config.runinfo import LINE_LIMIT
from proxy.config.settings import DEFAULT_MAX_MESSAGE_BYTES
from proxy.doors.fastlane import FastLane
from proxy.gateway.core import Gateway
from proxy.gateway.events import UpstreamDown
from tests.support.harness import (
    PROTOCOL,
    Harness,
    HttpSession,
    LocalClient,
    recorder_servers,
    running,
    write_json,
)
from tests.support.waiting import eventually

T = TypeVar("T")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FUZZSERVER = REPO / "tests" / "servers" / "fuzzserver.py"

_EXAMPLES = int(os.environ.get("LOCKGATE_FUZZ_EXAMPLES", "0") or 0)
RANDOM = os.environ.get("LOCKGATE_FUZZ_RANDOM", "") not in ("", "0")
STRICT = os.environ.get("LOCKGATE_FUZZ_STRICT", "") not in ("", "0")

ANSWER_SECONDS = 10.0  # every request is answered within this
HTTP_BODY_LIMIT = 4 * 1024 * 1024  # the SDK's: a larger POST is refused with 413

# How many inputs ran, by door and side (printed with -s; bench/fuzz.py sums them).
COUNTS: collections.Counter[str] = collections.Counter()


def examples(default: int) -> int:
    return _EXAMPLES or default


SEED = int(os.environ.get("LOCKGATE_FUZZ_SEED") or random.randrange(1 << 32))


def fuzz_settings(default: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The tests' Hypothesis settings: derandomised unless LOCKGATE_FUZZ_RANDOM is set
    (then seeded with LOCKGATE_FUZZ_SEED, or a new seed that is printed, so a random run
    that found something can be run again)."""
    chosen = _settings(default)

    def apply(test: Callable[..., None]) -> Callable[..., None]:
        if RANDOM:
            print(f"\nLOCKGATE_FUZZ_SEED={SEED}")
            return seed(SEED)(chosen(test))
        return chosen(test)

    return apply


def _settings(default: int) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(
            (Phase.explicit, Phase.generate, Phase.shrink)
            if STRICT
            else (Phase.explicit, Phase.generate)
        ),
        report_multiple_bugs=False,
        print_blob=False,
    )


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    if COUNTS:
        print("\nFUZZ-TOTAL " + " ".join(f"{k}={v}" for k, v in sorted(COUNTS.items())))


# -- findings ---------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str
    where: str
    detail: str
    example: str
    full: str  # the whole input, for the findings file
    times: int = 1


@dataclass
class Findings:
    """Violations seen in one test, the first (shortest shown) input of each kind."""

    test: str
    seen: dict[tuple[str, str], Finding] = field(default_factory=dict)

    def add(self, kind: str, where: str, detail: str, example: Any) -> None:
        full = example if isinstance(example, str) else repr(example)
        key = (kind, where)
        found = self.seen.get(key)
        if found is None:
            self.seen[key] = Finding(kind, where, detail, _shown(full), full)
        else:
            found.times += 1
            if len(full) < len(found.full):
                found.example, found.full, found.detail = _shown(full), full, detail
        if STRICT:
            raise AssertionError(f"{kind} ({where}): {detail}\ninput: {full}")

    def report(self) -> str:
        lines = [f"{len(self.seen)} kinds of violation in {self.test}:"]
        for f in self.seen.values():
            lines.append(f"- {f.kind} [{f.where}] x{f.times}: {f.detail}\n    input: {f.example}")
        return "\n".join(lines)

    def check(self, folder: Path) -> None:
        """Fail if anything was seen; the whole inputs go to a file in ``folder``."""
        print(self.report() if self.seen else f"no violations in {self.test}")
        if self.seen:
            path = folder / "fuzz-findings.txt"
            path.write_text(
                "\n\n".join(
                    f"{f.kind} [{f.where}]: {f.detail}\n{f.full}" for f in self.seen.values()
                )
            )
            print(f"the inputs in full: {path}")
        assert not self.seen, self.report()


def _shown(example: Any, limit: int = 600) -> str:
    text = example if isinstance(example, str) else repr(example)
    return text if len(text) <= limit else text[: limit - 40] + f"... ({len(text)} chars)"


# -- running Hypothesis beside the gateway's loop ------------------------------------------


class Bridge:
    """Hypothesis runs on a worker thread (it cannot be awaited); each example hands its
    work to the test's event loop, where the gateway and the clients live."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


async def in_thread(test: Callable[[], None]) -> None:
    await asyncio.to_thread(test)


_markers = itertools.count(1)
_probes = itertools.count(1)


def new_marker() -> str:
    return f"fz{next(_markers)}z"


PROBE = b"\\u2603probe-"  # how a probe's id looks in a line


def probe_id() -> str:
    return f"\u2603probe-{next(_probes)}"  # no fuzzed id looks like this


# -- what the gateway owes a line ----------------------------------------------------------

NOTHING, ANY, NULL_ERROR, ANSWER = "nothing", "any", "null-error", "answer"
_MISSING: Any = object()


@dataclass(frozen=True)
class Owed:
    what: str  # NOTHING, ANY (no particular answer owed), NULL_ERROR, ANSWER
    key: tuple[type, Any] | None = None  # ANSWER: the id the answer must carry
    cancels: tuple[type, Any] | None = None  # a notifications/cancelled: the id it cancels


def usable(ident: Any) -> bool:
    return not isinstance(ident, bool) and isinstance(ident, int | str)


def key_of(ident: Any) -> tuple[type, Any] | None:
    try:
        hash(ident)
    except TypeError:
        return None
    return (type(ident), ident)


def _python(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return _MISSING


def owed(line: bytes) -> Owed:
    """What the gateway owes one physical line, read as it reads it: the SDK's parser
    first (what it accepts is a message), Python's for what the SDK refuses (the id it
    can still find is the one its error answer must carry)."""
    if not line.strip():
        return Owed(NOTHING)
    try:
        doc = pydantic_core.from_json(line)
    except ValueError:
        doc = _MISSING
    py = _python(line)
    cancels = None
    if isinstance(py, dict) and py.get("method") == "notifications/cancelled" and "id" not in py:
        params = py.get("params")
        if isinstance(params, dict) and usable(params.get("requestId")):
            cancels = key_of(params["requestId"])
    if doc is _MISSING:
        if isinstance(py, dict) and usable(py.get("id")):
            return Owed(ANSWER, key_of(py["id"]), cancels)
        return Owed(NULL_ERROR, cancels=cancels)
    if not isinstance(doc, dict):
        return Owed(NULL_ERROR)
    ident = doc.get("id", _MISSING)
    # With "result" or "error" it may be read as an answer (the SDK reads id + error as
    # one even with a "method"; the fast lane takes a tools/call with them): none owed.
    if usable(ident) and "result" not in doc and "error" not in doc:
        return Owed(ANSWER, key_of(ident), cancels)
    return Owed(ANY, cancels=cancels)


def is_answer(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and "method" not in message
        and "id" in message
        and ("result" in message or "error" in message)
    )


def malformed_answer(message: dict[str, Any]) -> str | None:
    """What is wrong with an answer the gateway sent, or None."""
    if message.get("jsonrpc") != "2.0":
        return "no jsonrpc 2.0"
    if ("result" in message) == ("error" in message):
        return "needs exactly one of result and error"
    if "result" in message and not isinstance(message["result"], dict):
        return "result is not an object"
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict):
            return "error is not an object"
        if not isinstance(error.get("code"), int) or isinstance(error.get("code"), bool):
            return "error code is not an integer"
        if not isinstance(error.get("message"), str):
            return "error message is not text"
    return None


# -- generating messages ---------------------------------------------------------------

MCP_METHODS = (
    "tools/call",
    "tools/list",
    "initialize",
    "ping",
    "notifications/cancelled",
    "notifications/initialized",
    "notifications/progress",
    "notifications/roots/list_changed",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "roots/list",
    "sampling/createMessage",
    "elicitation/create",
    "server/discover",
    "tasks/get",
)
# the recorder's tools ("exit" would kill it: not fuzzed from the client side)
TOOLS = (
    "echo",
    "fetch",
    "write_file",
    "delete_file",
    "ask_me",
    "limited",
    "checked",
    "hidden",
    "refuse",
    "leak",
)
NEVER = ("delete_file", "hidden", "ask_me")  # denied, hidden, asked with nobody to ask
LIMITED_MAX = 3
SAFE = re.compile(r"^/safe/[a-z]+$")
CLIENT_POLICY = {
    "default": "allow",
    "tools": {
        "delete_file": {"action": "deny", "reason": "fuzz: never"},
        "hidden": {"action": "deny", "hide": True},
        "ask_me": {"action": "ask"},
        "checked": {
            "arguments": {
                "type": "object",
                "properties": {"path": {"type": "string", "pattern": SAFE.pattern}},
                "required": ["path"],
            }
        },
        "limited": {"rate_limit": {"max": LIMITED_MAX, "window": 86400}},
    },
}

MARK = "@@MARK@@"  # replaced by a unique marker when the input runs
SURROGATES = (
    '"\\ud800"',
    '"\\udfff"',
    '"a\\udc00b"',
    '"\\ud83d\\ude00"',
    '"\\udbff\\udfff"',
    '"\\ud800\\ud800"',
    '"\\u0000"',
    '"\\u2028\\u2029"',
)
BIG = ("1" + "0" * 4299, "1" + "0" * 4300, "-" + "9" * 4000, "1" + "0" * 400)
NUMBERS = ("1e400", "-1e400", "1E-400", "-0", "0.0", "1.0", "NaN", "Infinity", "-Infinity")

json_strings = st.one_of(
    st.text(max_size=16).map(json.dumps),
    st.text(max_size=16).map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.sampled_from(SURROGATES),
)
leaves: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(["null", "true", "false", "[]", "{}"]),
    st.integers().map(str),
    st.integers(0, 300).map(lambda k: str(10**k)),
    st.sampled_from(BIG),
    st.floats(allow_nan=True, allow_infinity=True).map(json.dumps),
    st.sampled_from(NUMBERS),
    json_strings,
)
keys = st.one_of(
    st.sampled_from(["a", "b", "name", "path", "id", "method", "_meta", "progressToken", ""]),
    json_strings.filter(lambda s: s.startswith('"')),
)


def _key(text: str) -> str:
    return text if text.startswith('"') else json.dumps(text)


def json_object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{_key(k)}:{v}" for k, v in pairs) + "}"


json_texts = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(keys, inner), min_size=1, max_size=4).map(json_object),  # duplicates
    ),
    max_leaves=12,
)


@st.composite
def nested(draw: st.DrawFn, inner: st.SearchStrategy[str] = json_texts) -> str:
    """A value nested a few hundred levels deep, in arrays or objects."""
    depth = draw(st.sampled_from([2, 32, 64, 65, 127, 128, 129, 200, 254, 255, 256, 300, 500]))
    core = draw(inner)
    if draw(st.booleans()):
        return "[" * depth + core + "]" * depth
    return '{"a":' * depth + core + "}" * depth


@st.composite
def huge_string(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from([1 << 10, 1 << 16, 1 << 20, 3 << 20]))
    char = draw(st.sampled_from(["x", "é", "\\n", "\\u00e9"]))
    return '"' + char * (size // len(char)) + '"'


values = st.one_of(json_texts, json_texts, json_texts, nested(), huge_string())


@st.composite
def tool_arguments(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:  # not an object at all
        return draw(st.one_of(leaves, st.just("[]"), nested()))
    pairs: list[tuple[str, str]] = [('"marker"', json.dumps(MARK))]
    path = draw(
        st.sampled_from([None, "/safe/abc", "/safe/ABC", "/etc/passwd", "/safe/a/../b", 7, ""])
    )
    if path is not None:
        pairs.append(('"path"', json.dumps(path)))
    for _ in range(draw(st.integers(0, 3))):
        pairs.append((draw(keys), draw(values)))
    return json_object(draw(st.permutations(pairs)))


tool_names = st.one_of(
    st.sampled_from(TOOLS),
    st.sampled_from(TOOLS),
    st.text(max_size=12).filter(lambda s: s != "exit").map(json.dumps),
    st.sampled_from(
        ['"rec/echo"', '"*"', '"ECHO"', '"echo "', '"\\u0065cho"', '"delete_file\\u0000"']
    ),
    st.sampled_from(SURROGATES),
    st.sampled_from(["5", "null", "[]", "{}", '"' + "e" * 1025 + '"']),
)


@st.composite
def tool_call_params(draw: st.DrawFn) -> str:
    name = draw(tool_names)
    pairs: list[tuple[str, str]] = [
        (
            '"name"',
            name
            if name.startswith(('"', "[", "{")) or name[0].isdigit() or name == "null"
            else json.dumps(name),
        ),
    ]
    if draw(st.integers(0, 5)):
        pairs.append(('"arguments"', draw(tool_arguments())))
    meta = draw(st.sampled_from([None, None, "progress", "empty", "weird"]))
    if meta == "progress":
        pairs.append(('"_meta"', json_object([('"progressToken"', draw(ids))])))
    elif meta == "empty":
        pairs.append(('"_meta"', "{}"))
    elif meta == "weird":
        pairs.append(('"_meta"', draw(values)))
    if draw(st.integers(0, 7)) == 0:  # a second "name": the last one counts
        pairs.append(('"name"', json.dumps(draw(st.sampled_from(TOOLS)))))
    return json_object(draw(st.permutations(pairs)))


good_ids = st.one_of(st.integers(0, 10**6).map(str), st.text(max_size=8).map(json.dumps))
ids = st.one_of(
    good_ids,
    good_ids,
    good_ids,
    good_ids,
    st.integers(-(2**63), 2**63).map(str),
    st.integers(0, 50).map(str),
    st.text(max_size=8).map(json.dumps),
    st.sampled_from(['"1"', "1", '"0"', "0", "-1", '""']),
    st.sampled_from(["null", "true", "false", "1.0", "1.5", "1e3", "-0", "NaN"]),
    st.sampled_from(BIG),
    st.sampled_from(["[]", "[1]", "{}", '{"a":1}']),
    st.sampled_from(SURROGATES),
)


def _retyped(id_text: str) -> str:
    """An id written as JSON text, as the other type: ``7`` -> ``"7"``, ``"7"`` -> ``7``."""
    value = _python(id_text.encode("utf-8", "surrogatepass"))
    if isinstance(value, bool) or not isinstance(value, int | str):
        return id_text
    if isinstance(value, int):
        return json.dumps(str(value))
    return value.strip() if value.strip().lstrip("-").isdigit() else json.dumps(" " + value)


@st.composite
def params_for(draw: st.DrawFn, method: str, earlier_ids: list[str]) -> str | None:
    if method == "tools/call":
        return draw(tool_call_params())
    if method == "notifications/cancelled":
        target = draw(st.sampled_from(earlier_ids)) if earlier_ids else draw(ids)
        how = draw(st.sampled_from(["same", "same", "other", "retyped"]))
        if how == "other" or not earlier_ids:
            target = draw(ids)
        elif how == "retyped":  # the same id as another type: 7 as "7", "7" as 7
            target = _retyped(target)
        return json_object([('"requestId"', target), ('"reason"', '"fuzz"')])
    if method == "initialize" and draw(st.booleans()):
        return json.dumps(
            {
                "protocolVersion": draw(st.sampled_from([PROTOCOL, "2026-07-28", "x", ""])),
                "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "1"},
            }
        )
    if method == "notifications/progress":
        return json_object(
            [
                ('"progressToken"', draw(ids)),
                ('"progress"', draw(leaves)),
                ('"total"', draw(leaves)),
            ]
        )
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return None
    if choice == 1:
        return draw(leaves)  # params that are not an object
    return draw(
        st.one_of(json_texts, nested(), values).filter(lambda t: t.startswith("{")) | st.just("{}")
    )


@st.composite
def rpc_message(draw: st.DrawFn, earlier_ids: list[str] | None = None) -> str:
    """One JSON-RPC message as JSON text: mostly well-formed requests, some notifications
    and answers, with odd ids, versions, duplicate keys and field orders."""
    earlier = earlier_ids if earlier_ids is not None else []
    method = draw(
        st.one_of(
            st.just("tools/call"),
            st.just("tools/call"),
            st.sampled_from(MCP_METHODS),
            st.text(max_size=16),
        )
    )
    shape = draw(
        st.sampled_from(["request"] * 7 + ["notification"] * 2 + ["result", "error", "both"])
    )
    if method.startswith("notifications/") and draw(st.booleans()):
        shape = "notification"
    pairs: list[tuple[str, str]] = []
    version = draw(st.sampled_from(['"2.0"'] * 10 + ['"1.0"', "2.0", "null", "", '"2.0 "']))
    if version:
        pairs.append(('"jsonrpc"', version))
    if shape != "notification":
        ident = draw(ids)
        earlier.append(ident)
        pairs.append(('"id"', ident))
    if shape in ("request", "notification"):
        if draw(st.integers(0, 19)) == 0:
            pairs.append(('"method"', draw(st.sampled_from(["5", "null", '["tools/call"]', "{}"]))))
        else:
            pairs.append(('"method"', json.dumps(method)))
        params = draw(params_for(method, earlier))
        if params is not None:
            pairs.append(('"params"', params))
    if shape in ("result", "both"):
        pairs.append(('"result"', draw(values)))
    if shape in ("error", "both"):
        pairs.append(('"error"', draw(st.one_of(values, st.just('{"code":-1,"message":"x"}')))))
    if draw(st.integers(0, 9)) == 0:  # a duplicate key: the last one counts
        pairs.append(
            draw(
                st.sampled_from(
                    [
                        ('"method"', '"tools/call"'),
                        ('"method"', '"ping"'),
                        ('"id"', draw(ids)),
                        ('"jsonrpc"', '"2.0"'),
                        ('"params"', '{"name":"delete_file","arguments":{}}'),
                    ]
                )
            )
        )
    if draw(st.integers(0, 4)) == 0:
        pairs = list(draw(st.permutations(pairs)))
    return json_object(pairs)


def call_line(name: str, request_id: Any = 1, **params: Any) -> str:
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": {"marker": MARK}, **params},
    }
    return json.dumps(message)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid line with one to three byte-level mutations."""
    base = draw(
        st.one_of(
            rpc_message(),
            st.sampled_from([call_line("echo"), call_line("delete_file"), call_line("hidden")]),
            st.just('{"jsonrpc":"2.0","id":7,"method":"ping"}'),
        )
    )
    data = bytearray(base.encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "utf8", "nul", "dup"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[at:]
        elif op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "utf8":
            data[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88"]))
        elif op == "nul":
            data[at:at] = b"\x00"
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


@st.composite
def odd_line(draw: st.DrawFn) -> bytes:
    """Lines that are not one JSON-RPC object: batches, scalars, blanks, BOMs."""
    kind = draw(st.sampled_from(["batch", "empty-batch", "scalar", "blank", "bom", "text"]))
    if kind == "batch":
        items = draw(st.lists(rpc_message(), min_size=1, max_size=4))
        return ("[" + ",".join(items) + "]").encode("utf-8", "surrogatepass")
    if kind == "empty-batch":
        return b"[]"
    if kind == "scalar":
        return draw(leaves).encode("utf-8", "surrogatepass")
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"  \r"]))
    if kind == "bom":
        return b"\xef\xbb\xbf" + draw(rpc_message()).encode("utf-8", "surrogatepass")
    return draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class LongLine:
    """A line of ``size`` bytes (a ping padded out); past the message limit it must be
    refused with an error that gives the limit, the connection kept; at or under it, it
    must be answered."""

    size: int

    @property
    def over(self) -> bool:
        return self.size > DEFAULT_MAX_MESSAGE_BYTES

    def data(self, request_id: str) -> bytes:
        head = b'{"jsonrpc":"2.0","id":' + json.dumps(request_id).encode()
        head += b',"method":"ping","params":{"pad":"'
        tail = b'"}}'
        return head + b"x" * (self.size - len(head) - len(tail)) + tail


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def well_formed_call(draw: st.DrawFn, progress: bool = False) -> str:
    """A ``tools/call`` request as a client writes it (the fast lane's, or with a
    progress token the SDK route's), with random tools and arguments."""
    pairs: list[tuple[str, str]] = [
        ('"jsonrpc"', '"2.0"'),
        ('"id"', draw(good_ids)),
        ('"method"', '"tools/call"'),
    ]
    params: list[tuple[str, str]] = [
        ('"name"', json.dumps(draw(st.sampled_from(TOOLS)))),
        ('"arguments"', draw(tool_arguments())),
    ]
    if progress:
        params.append(('"_meta"', json_object([('"progressToken"', draw(good_ids))])))
    pairs.append(('"params"', json_object(params)))
    return json_object(draw(st.permutations(pairs)))


lines = st.one_of(
    well_formed_call().map(_encoded),
    well_formed_call(progress=True).map(_encoded),
    rpc_message().map(_encoded),
    rpc_message().map(_encoded),
    mutated(),
    odd_line(),
)


@st.composite
def cases(draw: st.DrawFn, long_lines: bool) -> list[bytes] | LongLine:
    """One input: a few lines sent together, or (rarely) one line near the line limit."""
    if long_lines and draw(st.integers(0, 79)) == 0:
        return LongLine(DEFAULT_MAX_MESSAGE_BYTES + draw(st.sampled_from([-64, 0, 1, 64, 4096])))
    earlier: list[str] = []
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:  # (cancellations may name the ids before them)
            out.append(_encoded(draw(rpc_message(earlier))))
        else:
            out.append(draw(lines))
    return out


def physical_lines(case: list[bytes], marker: Callable[[], str]) -> list[bytes]:
    """The lines the gateway reads (a mutation may have inserted a newline), with every
    marker made unique."""
    out: list[bytes] = []
    for item in case:
        line = item
        while MARK.encode() in line:
            line = line.replace(MARK.encode(), marker().encode(), 1)
        out.extend(line.split(b"\n"))
    return out


# -- the local door ----------------------------------------------------------------------


class FuzzLocal(LocalClient):
    """The harness's local client, reading everything the gateway sends: every message
    in order, lines that are not JSON, and the connection's end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.received: list[Any] = []
        self.unreadable: list[bytes] = []
        self.eof = asyncio.Event()
        self.read_error: BaseException | None = None
        self.on_request: Callable[[dict[str, Any]], None] | None = None

    async def _read(self) -> None:
        try:
            while line := await self.reader.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    self.unreadable.append(line[:300])
                    continue
                self.received.append(message)
                if isinstance(message, dict) and "id" in message:
                    key = key_of(message["id"])
                    if "method" not in message and key is not None:
                        self.answers[key] = message
                    elif "method" in message:
                        self.requests.append(message)
                        if self.on_request is not None:
                            self.on_request(message)
                self._arrived.set()
        except (ConnectionError, ValueError) as exc:  # ValueError: a line over our limit
            self.read_error = exc
        finally:
            self.eof.set()
            self._arrived.set()

    async def until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds (True), the connection ends or time is up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not condition():
                    if self.eof.is_set():
                        return condition()
                    self._arrived.clear()
                    await self._arrived.wait()
        return condition()

    def answers_since(self, start: int) -> list[dict[str, Any]]:
        return [m for m in self.received[start:] if is_answer(m)]

    async def answer_to(self, request_id: Any, timeout: float = ANSWER_SECONDS) -> Any:
        key = key_of(request_id)
        start = len(self.received)
        found: list[Any] = []

        def arrived() -> bool:
            found[:] = [m for m in self.received[start:] if is_answer(m) and key_of(m["id"]) == key]
            return bool(found)

        return found[0] if await self.until(arrived, timeout) else None

    async def ask(
        self, message: dict[str, Any], timeout: float = ANSWER_SECONDS
    ) -> dict[str, Any] | None:
        start = len(self.received)
        key = key_of(message["id"])
        self.send(message)
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = [m for m in self.answers_since(start) if key_of(m["id"]) == key]
            return bool(found)

        return found[0] if await self.until(arrived, timeout) else None


@contextlib.asynccontextmanager
async def local_session(
    harness: Harness, gateway: Gateway, server: str = "rec", client: str = "local-fuzz"
) -> Any:
    async with FuzzLocal.open(harness, server=server, client=client) as local:
        assert isinstance(local, FuzzLocal)
        await local.handshake(gateway)
        yield local


def ran_echo(answer: Any) -> bool:
    try:
        return "".join(c.get("text", "") for c in answer["result"]["content"]) == "ran echo"
    except (KeyError, TypeError, AttributeError):
        return False


# -- the invariant -------------------------------------------------------------------------


class Invariant:
    """What the servers recorded against the policy and the audit log."""

    def __init__(self, gateway: Gateway, log: Path, never: tuple[str, ...]) -> None:
        self.gateway = gateway
        self.log = log
        self.never = never
        self._offset = 0
        self._partial = b""
        self.recorded: collections.Counter[str] = collections.Counter()
        self.entries = 0

    def _new_entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        with self.log.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [json.loads(line) for line in complete if line.strip()]

    def problems(self, server: str) -> list[str]:
        out: list[str] = []
        audit = self.gateway.audit
        touched: set[str] = set()
        for entry in self._new_entries():
            self.entries += 1
            name, arguments = entry.get("name"), entry.get("arguments")
            if not isinstance(name, str):
                out.append(f"the server got a call whose name is not text: {entry!r:.200}")
                continue
            self.recorded[name] += 1
            touched.add(name)
            if name in self.never:
                out.append(f"blocked tool {name!r} reached the server: {entry!r:.300}")
            if name == "checked":
                path = arguments.get("path") if isinstance(arguments, dict) else None
                if not (isinstance(path, str) and SAFE.match(path)):
                    out.append(
                        f"'checked' reached the server with bad arguments: {arguments!r:.300}"
                    )
            if name == "limited" and self.recorded[name] > LIMITED_MAX:
                out.append(f"'limited' ran {self.recorded[name]} times (limit {LIMITED_MAX})")
            marker = arguments.get("marker") if isinstance(arguments, dict) else None
            if isinstance(marker, str):
                rows = audit.query(limit=1000, server=server, tool=name)
                mine = [r for r in rows if marker in json.dumps(r.arguments)]
                if not any(r.decision.value in ("allowed", "approved") for r in mine):
                    out.append(
                        f"call {name!r} (marker {marker}) reached the server without an "
                        f"allowed/approved audit row (rows: {[r.decision.value for r in mine]})"
                    )
        for name in touched:
            times = self.recorded[name]
            allowed = audit.count(server=server, tool=name, decision="allowed") + audit.count(
                server=server, tool=name, decision="approved"
            )
            if allowed < times:
                out.append(f"{name!r} reached the server {times} times; {allowed} audit rows")
        return out


# -- client side, the local door -------------------------------------------------------------


async def test_fuzz_client_side_local_door(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random and mutated lines on an initialised local session (fast lane and SDK route)."""
    harness = Harness(tmp_path)
    harness.write_policy(CLIENT_POLICY)
    findings = Findings("client side, local door")
    lanes: collections.Counter[str] = collections.Counter()
    original_take = FastLane.take

    def take(lane: FastLane, line: bytes) -> bool:
        taken = original_take(lane, line)
        fuzzed = lane.session is not None and lane.session.initialized
        if fuzzed and PROBE not in line:  # the fuzzed lines, not the health probes
            lanes["fast-lane" if taken else "sdk"] += 1
        return taken

    monkeypatch.setattr(FastLane, "take", take)
    started = time.monotonic()
    inputs = 0
    kinds: collections.Counter[str] = collections.Counter()
    async with running(harness) as gateway:
        stack = contextlib.AsyncExitStack()
        local = await stack.enter_async_context(local_session(harness, gateway))
        invariant = Invariant(gateway, harness.record, NEVER)
        bridge = Bridge(asyncio.get_running_loop())
        lanes.clear()

        async def reopen() -> FuzzLocal:
            nonlocal stack
            await stack.aclose()
            stack = contextlib.AsyncExitStack()
            return await stack.enter_async_context(local_session(harness, gateway))

        async def healthy(client: FuzzLocal, example: Any) -> None:
            marker = new_marker()
            params = {"name": "echo", "arguments": {"marker": marker}}
            answer = await client.ask({"id": probe_id(), "method": "tools/call", "params": params})
            if not ran_echo(answer):
                down = [e for e in harness.events if isinstance(e, UpstreamDown) and e.error]
                findings.add(
                    "unhealthy after input",
                    "local fast lane",
                    f"echo answered {answer!r:.300}; upstream deaths: {[e.error for e in down]}",
                    example,
                )
                await gateway.restart_server("rec")
            sdk = {**params, "_meta": {"progressToken": "p"}}
            answer = await client.ask({"id": probe_id(), "method": "tools/call", "params": sdk})
            if not ran_echo(answer):
                findings.add(
                    "unhealthy after input", "local SDK route", f"{answer!r:.300}", example
                )
            pong = await client.ask({"id": probe_id(), "method": "ping"})
            if not (isinstance(pong, dict) and pong.get("result") == {}):
                findings.add("unhealthy after input", "local ping", f"{pong!r:.300}", example)

        async def one(case: list[bytes] | LongLine) -> None:
            nonlocal local, inputs
            if isinstance(case, LongLine):
                inputs += 1
                COUNTS["client/local/long-line"] += 1
                request_id = probe_id()
                local.writer.write(case.data(request_id) + b"\n")
                with contextlib.suppress(ConnectionError):
                    await local.writer.drain()
                if case.over:
                    answer = await local.answer_to(request_id, 60)
                    error = answer.get("error", {}) if isinstance(answer, dict) else {}
                    if "over Lockgate's limit" not in str(error.get("message")):
                        findings.add(
                            "over-limit line not refused with the limit",
                            "local",
                            f"eof={local.eof.is_set()} answer={answer!r:.200}",
                            case,
                        )
                    if local.eof.is_set():
                        findings.add("over-limit line closed the session", "local", "", case)
                        local = await reopen()
                else:
                    answer = await local.answer_to(request_id, 60)
                    if not (isinstance(answer, dict) and answer.get("result") == {}):
                        findings.add(
                            "line at the limit not answered",
                            "local",
                            f"eof={local.eof.is_set()} answer={answer!r:.200}",
                            case,
                        )
                    if local.eof.is_set():
                        local = await reopen()
                await healthy(local, case)
                return
            physical = physical_lines(case, new_marker)
            inputs += len(physical)
            COUNTS["client/local/lines"] += len(physical)
            start = len(local.received)
            local.writer.write(b"".join(line + b"\n" for line in physical))
            await local.writer.drain()
            owes = [owed(line) for line in physical]
            kinds.update(o.what for o in owes)
            cancelled = {o.cancels for o in owes if o.cancels is not None}
            want = {o.key for o in owes if o.what == ANSWER and o.key not in cancelled}
            nulls = sum(1 for o in owes if o.what == NULL_ERROR)

            def settled() -> bool:
                got = collections.Counter(key_of(m["id"]) for m in local.answers_since(start))
                return all(got[k] for k in want) and got[(type(None), None)] >= nulls

            if not await local.until(settled, ANSWER_SECONDS):
                got = collections.Counter(key_of(m["id"]) for m in local.answers_since(start))
                missing = [k[1] for k in want if k is not None and not got[k]]
                findings.add(
                    "unanswered" if not local.eof.is_set() else "session closed",
                    "local",
                    f"no answer for ids {missing!r:.200}; null-id errors {got[(type(None), None)]}"
                    f" of {nulls}; eof={local.eof.is_set()} read_error={local.read_error!r}",
                    physical,
                )
            for message in local.answers_since(start):
                problem = malformed_answer(message)
                if problem is not None:
                    findings.add(
                        "malformed answer", "local", f"{problem}: {message!r:.300}", physical
                    )
            if local.unreadable:
                findings.add(
                    "line that is not JSON", "local", f"{local.unreadable[0]!r:.200}", physical
                )
                local.unreadable.clear()
            if local.eof.is_set():
                findings.add(
                    "session closed by a line under the limit",
                    "local",
                    f"read_error={local.read_error!r}",
                    physical,
                )
                local = await reopen()
            await healthy(local, physical)
            for problem in invariant.problems("rec"):
                findings.add("invariant", "local", problem, physical)

        @fuzz_settings(200)
        @given(case=cases(long_lines=True))
        @example(case=LongLine(DEFAULT_MAX_MESSAGE_BYTES))  # the longest line: answered
        @example(case=LongLine(DEFAULT_MAX_MESSAGE_BYTES + 1))  # one more: refused, kept
        def check(case: list[bytes] | LongLine) -> None:
            bridge.run(one(case))

        await in_thread(check)
        await stack.aclose()
    elapsed = time.monotonic() - started
    COUNTS["client/local"] += inputs
    COUNTS["client/local/fast-lane"] += lanes["fast-lane"]
    COUNTS["client/local/sdk"] += lanes["sdk"]
    print(
        f"\nFUZZ-COUNT side=client door=local inputs={inputs} fast_lane={lanes['fast-lane']} "
        f"sdk={lanes['sdk']} long_lines={COUNTS['client/local/long-line']} "
        f"server_calls={invariant.entries} seconds={elapsed:.1f}"
    )
    print(f"  owed: {dict(kinds)}")
    findings.check(tmp_path)


# -- client side, the HTTP door ------------------------------------------------------------

HEADER_VARIANTS = (
    "good",
    "good",
    "good",
    "good",
    "good",
    "good",
    "no-session",
    "unknown-session",
    "bad-token",
    "no-auth",
    "accept-json-only",
    "no-accept",
    "text-plain",
    "bad-version",
    "modern-version",
    "dup-auth",
    "dup-session",
    "evil-host",
    "evil-origin",
)


def headers_for(variant: str, session: HttpSession) -> list[tuple[str, str]]:
    good = list(session.headers().items())
    drop: set[str] = set()
    extra: list[tuple[str, str]] = []
    if variant == "no-session":
        drop = {"mcp-session-id", "mcp-protocol-version"}
    elif variant == "unknown-session":
        drop, extra = {"mcp-session-id"}, [("mcp-session-id", "0" * 32)]
    elif variant == "bad-token":
        drop, extra = {"Authorization"}, [("Authorization", "Bearer not-a-token")]
    elif variant == "no-auth":
        drop = {"Authorization"}
    elif variant == "accept-json-only":
        drop, extra = {"Accept"}, [("Accept", "application/json")]
    elif variant == "no-accept":
        drop = {"Accept"}
    elif variant == "text-plain":
        drop, extra = {"Content-Type"}, [("Content-Type", "text/plain")]
    elif variant == "bad-version":
        drop, extra = {"mcp-protocol-version"}, [("mcp-protocol-version", "1999-01-01")]
    elif variant == "modern-version":
        drop, extra = {"mcp-protocol-version"}, [("mcp-protocol-version", "2026-07-28")]
    elif variant == "dup-auth":
        extra = [("Authorization", "Bearer another")]
    elif variant == "dup-session":
        extra = [("mcp-session-id", "0" * 32)]
    elif variant == "evil-host":
        extra = [("Host", "evil.example")]
    elif variant == "evil-origin":
        extra = [("Origin", "http://evil.example")]
    return [(k, v) for k, v in good if k not in drop] + extra


_SSE_LINES = re.compile(r"\r\n|\r|\n")  # only these end an SSE line (not U+2028...)


def sse_messages(text: str) -> list[Any]:
    out: list[Any] = []
    for line in _SSE_LINES.split(text):
        if line.startswith("data:") and (data := line.removeprefix("data:").strip()):
            try:
                out.append(json.loads(data))
            except ValueError:
                out.append(_MISSING)
    return out


def messages_of(response: httpx2.Response) -> list[Any]:
    """Every JSON-RPC message in a response (SSE events or a JSON body); _MISSING for
    what is not JSON."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return sse_messages(response.text)
    if not response.content:
        return []
    try:
        return [json.loads(response.content)]
    except ValueError:
        return [_MISSING]


@st.composite
def http_cases(draw: st.DrawFn) -> list[tuple[bytes, str]]:
    """One to three POST bodies, sent at once, each with its headers."""
    out: list[tuple[bytes, str]] = []
    earlier: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 9))
        if kind < 6:
            body = _encoded(draw(rpc_message(earlier)))
        elif kind < 8:
            body = draw(lines)
        elif kind == 8:
            body = _encoded(draw(rpc_message()))
            size = draw(st.sampled_from([HTTP_BODY_LIMIT - 64, HTTP_BODY_LIMIT + 1]))
            body = _encoded(call_line("echo", 1, pad="x" * max(0, size - len(body) - 10)))
        else:
            body = draw(odd_line())
        out.append((body, draw(st.sampled_from(HEADER_VARIANTS))))
    return out


def _text_id(body: bytes) -> str | None:
    doc = _python(body)
    return str(doc.get("id")) if isinstance(doc, dict) and "id" in doc else None


def concurrent_groups(bodies: list[tuple[bytes, str]]) -> list[list[tuple[bytes, str]]]:
    """The bodies in groups sent at once. Requests whose ids are equal as text (1 and
    "1", or a repeated id) go one after another: the SDK's HTTP transport keys each POST's
    stream by ``str(id)``, so one of them would wait for ever (a finding of its own:
    test_http_requests_with_ids_equal_as_text_are_each_answered)."""
    groups: list[list[tuple[bytes, str]]] = [[]]
    for body, variant in bodies:
        ident = _text_id(body)
        if ident is not None and ident in {_text_id(b) for b, _ in groups[-1]}:
            groups.append([])
        groups[-1].append((body, variant))
    return groups


async def test_fuzz_client_side_http_door(tmp_path: Path) -> None:
    """Random and mutated POST bodies on an initialised HTTP session, and with bad
    headers, without a session or with an unknown one."""
    harness = Harness(tmp_path)
    harness.write_policy(CLIENT_POLICY)
    findings = Findings("client side, HTTP door")
    started = time.monotonic()
    inputs = 0
    statuses: collections.Counter[int] = collections.Counter()
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=60) as http:
        url = harness.http_url + "rec"
        session = HttpSession(http, url, harness.token("web-fuzz"))
        await session.open()
        invariant = Invariant(gateway, harness.record, NEVER)
        bridge = Bridge(asyncio.get_running_loop())

        async def reopen() -> None:
            nonlocal session
            session = HttpSession(http, url, harness.token("web-fuzz"))
            await session.open()

        async def post(body: bytes, variant: str) -> httpx2.Response | str:
            try:
                async with asyncio.timeout(ANSWER_SECONDS):
                    return await http.post(url, content=body, headers=headers_for(variant, session))
            except TimeoutError:
                return f"no HTTP response within {ANSWER_SECONDS} s"
            except httpx2.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"

        async def healthy(example: Any) -> None:
            async def ask(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
                try:
                    return await asyncio.wait_for(work, ANSWER_SECONDS)
                except (TimeoutError, httpx2.HTTPError, ValueError, AssertionError) as exc:
                    return {"exception": repr(exc)}

            # both at once: each is its own POST on the session
            answer, pong = await asyncio.gather(
                ask(session.call("echo", {"marker": new_marker()})), ask(session.request("ping"))
            )
            if pong.get("result") != {}:
                findings.add("unhealthy after input", "http ping", f"{pong!r:.300}", example)
            if not ran_echo(answer):
                findings.add(
                    "unhealthy after input", "http", f"echo answered {answer!r:.300}", example
                )
                await reopen()

        async def one(case: list[tuple[bytes, str]]) -> None:
            nonlocal inputs
            bodies = [(body.replace(MARK.encode(), new_marker().encode()), v) for body, v in case]
            inputs += len(bodies)
            COUNTS["client/http"] += len(bodies)
            responses: list[httpx2.Response | str] = []
            for group in concurrent_groups(bodies):
                responses.extend(await asyncio.gather(*(post(body, v) for body, v in group)))
            for (body, variant), response in zip(bodies, responses, strict=True):
                example = (variant, body)
                if isinstance(response, str):
                    findings.add("no HTTP response", "http", response, example)
                    continue
                status = response.status_code
                statuses[status] += 1
                if status >= 500:
                    findings.add("HTTP 5xx", "http", f"{status}: {response.text[:300]}", example)
                messages = messages_of(response)
                if status >= 400 and not any(
                    isinstance(m, dict) and "error" in m for m in messages
                ):
                    findings.add(
                        "refusal that is not a JSON-RPC error",
                        "http",
                        f"{status} {response.headers.get('content-type')}: {response.text[:200]!r}",
                        example,
                    )
                elif any(m is _MISSING for m in messages):
                    findings.add("body that is not JSON", "http", response.text[:300], example)
                for message in messages:
                    if is_answer(message) and (problem := malformed_answer(message)):
                        findings.add(
                            "malformed answer", "http", f"{problem}: {message!r:.300}", example
                        )
                promise = owed(body)
                if variant != "good" or promise.what != ANSWER or len(body) > HTTP_BODY_LIMIT:
                    continue
                if status == 202:
                    findings.add("request taken as a notification", "http", "202 Accepted", example)
                elif status == 200 and not any(
                    is_answer(m) and key_of(m["id"]) == promise.key for m in messages
                ):
                    findings.add(
                        "200 without the answer",
                        "http",
                        f"{response.headers.get('content-type')}: {response.text[:300]!r}",
                        example,
                    )
            await healthy(case)
            for problem in invariant.problems("rec"):
                findings.add("invariant", "http", problem, case)

        @fuzz_settings(120)
        @given(case=http_cases())
        def check(case: list[tuple[bytes, str]]) -> None:
            bridge.run(one(case))

        await in_thread(check)
        await session.close()
    elapsed = time.monotonic() - started
    print(
        f"\nFUZZ-COUNT side=client door=http inputs={inputs} "
        f"server_calls={invariant.entries} seconds={elapsed:.1f}"
    )
    print(f"  statuses: {dict(sorted(statuses.items()))}")
    findings.check(tmp_path)


# -- server side: tests/servers/fuzzserver.py answers with what Hypothesis wrote ------------

SERVER_POLICY = {"default": "allow", "tools": {"fuzz/forbidden": {"action": "deny"}}}
OK_RESULT = {"content": [{"type": "text", "text": "fuzz ok"}]}
HOW_WORDS = ("call", "str", "float", "bool", "list", "null")
# text that is not text: valid in JSON as escapes ("\ud800"), not encodable as UTF-8
LONE_SURROGATES = ("\ud800", "a\udfffb", "\udbff", "\udc00\ud800")

plain_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([[], {}])
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(LONE_SURROGATES),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3)
        | st.dictionaries(st.text(max_size=6), inner, min_size=1, max_size=3)
    ),
    max_leaves=8,
)
# ids that name no call in flight: the server's answers to them must go nowhere
wrong_ids = st.one_of(
    st.sampled_from(["plus:1", "plus:-1", "plus:1000", "float", "bool", "list", "null"]),
    st.integers(10**12, 10**15),
    st.text(min_size=1, max_size=4).filter(
        lambda s: not s.isdigit() and s not in HOW_WORDS and not s.startswith("plus:")
    ),
)
SERVER_REQUESTS = (
    "sampling/createMessage",
    "roots/list",
    "elicitation/create",
    "ping",
    "tools/call",
    "unknown/thing",
)
NOTIFICATIONS = (
    "notifications/progress",
    "notifications/progress",
    "notifications/cancelled",
    "notifications/tools/list_changed",
    "notifications/message",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/whatever",
)
request_params = st.one_of(
    plain_values,
    st.just(
        {
            "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}],
            "maxTokens": 5,
        }
    ),
    st.just({"message": "name?", "requestedSchema": {"type": "object", "properties": {}}}),
    st.dictionaries(st.text(max_size=6), plain_values, max_size=3),
)
numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -(10**400), 10**30, 0, 1]),
    st.text(max_size=3),
    st.none(),
)
notification_params = st.one_of(
    st.fixed_dictionaries(
        {"progressToken": st.one_of(st.just("call"), plain_values), "progress": numbers},
        optional={"total": numbers, "message": plain_values},
    ),
    st.fixed_dictionaries(
        {"requestId": st.one_of(plain_values, st.sampled_from(["s1", "s2", 0, 1, 2]))},
        optional={"reason": plain_values},
    ),
    plain_values,
)
depths = st.sampled_from([1, 64, 127, 128, 129, 200, 255, 256, 300, 1000, 100_000])
garbage = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            '{"jsonrpc":"2.0","id":',
            '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":0,',
            "[1,2,3]",
            '"just a string"',
            "null",
            '{"jsonrpc":"2.0","method":"roots/list","id":"s9","params":[1]}',
            '{"jsonrpc":"2.0","method":"sampling/createMessage","id":"s8","params":{"a":"\\ud800"}}',
            '{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"\\udfff"}}',
            "\x1b[31mred\x1b[0m",
        ]
    ),
)
noise = st.one_of(
    st.builds(lambda v, i: {"send": {"result": v}, "id": i}, plain_values, wrong_ids),
    st.builds(lambda v, i: {"send": {"error": v}, "id": i}, plain_values, wrong_ids),
    st.builds(
        lambda m, p, i: {"send": {"method": m, "params": p}, "id": i},
        st.sampled_from(SERVER_REQUESTS),
        request_params,
        wrong_ids,
    ),
    st.builds(
        lambda m, p, w: {"request": m, "params": p, **({"wait": w} if w else {})},
        st.sampled_from(SERVER_REQUESTS),
        request_params,
        st.sampled_from([0, 0, 0, 0.5]),
    ),
    st.builds(
        lambda m, p: {"notify": m, "params": p}, st.sampled_from(NOTIFICATIONS), notification_params
    ),
    st.builds(
        lambda m, p: {"notify": m, "params": p}, st.sampled_from(NOTIFICATIONS), notification_params
    ),
    st.builds(lambda t: {"raw": t}, garbage),
    st.builds(lambda b: {"bytes": b.hex()}, st.binary(max_size=40)),
    st.builds(
        lambda d, k: {"deep": d, "kind": k}, depths, st.sampled_from(["request", "notification"])
    ),
    st.builds(lambda n, i: {"huge": n, "id": i}, st.sampled_from([1 << 16, 1 << 20]), wrong_ids),
    st.just({"sleep": 0.01}),
    st.builds(lambda v: {"send": v}, plain_values),
)
UNREADABLE = (
    '{"jsonrpc":"2.0","id":{ID},"result":',
    '{"id":{ID},"result":{"a":[1,2',
    '{"jsonrpc":"2.0","id":{ID},"result":{}}} trailing',
    '{"jsonrpc":"2.0","id":{ID},"result":{"content":[{"type":"text","text":"\\ud800"}]}}',
    '{"jsonrpc":"2.0","id":{ID},"result":{"content":[{"type":"text","text":"\\udc00"}],"x":NaN}}',
    '{"jsonrpc":"2.0","id":{ID},"error":{"code":-32000,"message":"\\ud800 bad"}}',
    '{"jsonrpc":"2.0","id":{ID},"result":{"content":[],"n":1' + "0" * 5000 + "}}",
    '{"jsonrpc":"2.0","id":{ID},"result":{"content":[],"n":1' + "0" * 4000 + "}}",
    '{"jsonrpc":"2.0","id":{ID},"result":{"content":[],"x":Infinity,"y":-Infinity}}',
    '{"jsonrpc":"2.0","id":{ID},"result":{"a":1},"result":{"b":2}}',
    '{"jsonrpc":"2.0","id":{ID},"result":{"content":[{"type":"text","text":"\u2028\u2029"}]}}',
    '\ufeff{"jsonrpc":"2.0","id":{ID},"result":{}}',  # a UTF-8 byte order mark first
)


@dataclass(frozen=True)
class Expect:
    """What the client must get: ``ok`` (OK_RESULT), ``code`` (a JSON-RPC error with
    that code), ``any`` (an answer, whatever it says)."""

    what: str
    code: int | None = None
    message: str | None = None


finales = st.one_of(
    st.sampled_from(["call", "call", "str"]).map(
        lambda how: ({"send": {"result": OK_RESULT}, "id": how}, Expect("ok"))
    ),
    plain_values.map(lambda v: ({"send": {"result": v}, "id": "call"}, Expect("any"))),
    st.builds(
        lambda c, m, d: (
            {"send": {"error": {"code": c, "message": m, "data": d}}, "id": "call"},
            Expect("code", c, m),
        ),
        st.one_of(
            st.integers(-(2**31), 2**31),
            st.sampled_from([-32000, -32001, -32099, -32600, -32601, -32602, -32603, 0, 1]),
        ),
        st.text(max_size=20),
        plain_values,
    ),
    plain_values.map(lambda e: ({"send": {"error": e}, "id": "call"}, Expect("any"))),
    st.builds(
        lambda r, e: ({"send": {"result": r, "error": e}, "id": "call"}, Expect("any")),
        plain_values,
        plain_values,
    ),
    st.sampled_from(UNREADABLE).map(lambda r: ({"raw": r}, Expect("any"))),
    st.builds(
        lambda d, k: ({"deep": d, "kind": k, "id": "call"}, Expect("any")),
        depths,
        st.sampled_from(["result", "error"]),
    ),
    st.sampled_from([1 << 20, 4 << 20, 8 << 20]).map(
        lambda n: ({"huge": n, "id": "call"}, Expect("any"))
    ),
    st.sampled_from([1 << 20, 2 << 20]).map(
        lambda n: ({"huge": n, "valid": False, "id": "call"}, Expect("any"))
    ),
    st.just(({"huge": LINE_LIMIT + 16, "id": "call"}, Expect("any"))),
    st.integers(0, 255).map(lambda code: ({"exit": code}, Expect("any"))),
    st.just(({"close_stdout": True}, Expect("any"))),
    st.just(
        (
            {
                "send": {"result": {"content": [{"type": "text", "text": "no"}], "isError": True}},
                "id": "call",
            },
            Expect("any"),
        )
    ),
)
after = st.one_of(
    st.just({"send": {"result": OK_RESULT}, "id": "call"}),  # a duplicate answer
    st.builds(
        lambda m, p: {"request": m, "params": p}, st.sampled_from(SERVER_REQUESTS), request_params
    ),
    st.builds(
        lambda m, p: {"notify": m, "params": p}, st.sampled_from(NOTIFICATIONS), notification_params
    ),
    st.builds(lambda t: {"raw": t}, garbage),
)
ROUTES = ("local-fast", "local-sdk", "http", "http-progress")


@dataclass(frozen=True)
class ServerCase:
    script: dict[str, Any]
    expect: Expect
    route: str
    reply: str  # how the client answers the server's requests: result, error, ignore
    tool: str
    restart: bool  # if the server went down: restart it now (else the backoff stands)

    def seconds(self) -> float:
        waits = sum(
            min(3.0, float(s.get("wait", 0))) for s in self.script["steps"] if "request" in s
        )
        return ANSWER_SECONDS + waits


@st.composite
def server_cases(draw: st.DrawFn) -> ServerCase:
    finale, expect = draw(finales)
    script = {
        "steps": draw(st.lists(noise, max_size=5)),
        "finale": finale,
        "after": draw(st.lists(after, max_size=2)),
    }
    return ServerCase(
        script=script,
        expect=expect,
        route=draw(st.sampled_from(ROUTES)),
        reply=draw(st.sampled_from(["result", "result", "error", "ignore"])),
        tool=draw(st.sampled_from(["run"] * 9 + ["forbidden"])),
        restart=draw(st.integers(0, 4)) > 0,
    )


def reply_to(request: dict[str, Any], how: str) -> dict[str, Any] | None:
    """The client's answer to a server's request, or None (ignored)."""
    if how == "ignore":
        return None
    if how == "error":
        return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -1, "message": "no"}}
    results: dict[str, dict[str, Any]] = {
        "sampling/createMessage": {
            "role": "assistant",
            "content": {"type": "text", "text": "fuzz"},
            "model": "fuzz",
        },
        "roots/list": {"roots": []},
        "elicitation/create": {"action": "decline"},
    }
    result = results.get(str(request.get("method")), {})
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


async def http_call(
    session: HttpSession, message: dict[str, Any], how: str, timeout: float
) -> tuple[int | None, list[Any], str | None]:
    """POST ``message`` and read its SSE stream as it comes, answering the server's
    requests on it (as ``how`` says), until the answer to ``message`` arrives. Returns
    the status, every message, and what went wrong (None: answered)."""
    body = json.dumps({"jsonrpc": "2.0", **message})
    got: list[Any] = []
    replies: list[asyncio.Task[httpx2.Response]] = []
    status: int | None = None
    problem: str | None = "no answer"
    try:
        async with asyncio.timeout(timeout):
            async with session.http.stream(
                "POST", session.url, content=body, headers=session.headers()
            ) as response:
                status = response.status_code
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    data = await response.aread()
                    got.extend([json.loads(data)] if data else [])
                    answered = any(is_answer(m) and m["id"] == message["id"] for m in got)
                    return status, got, None if answered else f"{status}: {data[:300]!r}"
                pending = ""
                async for text in response.aiter_text():
                    *complete, pending = _SSE_LINES.split(pending + text)
                    for line in complete:
                        if not line.startswith("data:"):
                            continue
                        try:
                            event = json.loads(line.removeprefix("data:").strip())
                        except ValueError:
                            got.append(_MISSING)
                            continue
                        got.append(event)
                        if isinstance(event, dict) and "method" in event and "id" in event:
                            answer = reply_to(event, how)
                            if answer is not None:
                                reply = session.post(
                                    {k: v for k, v in answer.items() if k != "jsonrpc"}
                                )
                                replies.append(asyncio.create_task(reply))
                        if is_answer(event) and event["id"] == message["id"]:
                            problem = None
                            break
                    if problem is None:
                        break
                if problem is not None:
                    problem = f"the stream ended without the answer ({len(got)} messages)"
    except TimeoutError:
        problem = f"no answer within {timeout:g} s ({len(got)} messages)"
    except httpx2.HTTPError as exc:
        problem = f"{type(exc).__name__}: {exc}"
    finally:
        for task in replies:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
    return status, got, problem


def _fuzz_upstream_down(gateway: Gateway, client: str) -> bool:
    for session in gateway.sessions.values():
        if session.server == "fuzz" and session.client == client:
            return session.upstream is None or session.upstream.dead.is_set()
    return False


def _backoff_refusal(answer: Any) -> bool:
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, dict) and "restarts it in" in str(error.get("message"))


def _not_passed_on(answer: Any) -> bool:
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, dict) and str(error.get("message")).startswith(
        "Lockgate could not pass on the answer"
    )


async def test_fuzz_server_side(tmp_path: Path) -> None:
    """The fuzz server's scripted answers to calls from both doors."""
    harness = Harness(tmp_path)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    fuzz_log = tmp_path / "fuzz-received.jsonl"
    fuzz = {"command": sys.executable, "args": [str(FUZZSERVER), str(scripts), str(fuzz_log)]}
    write_json(harness.paths.servers_file, recorder_servers(harness.record, fuzz=fuzz))
    harness.write_policy(SERVER_POLICY)
    findings = Findings("server side")
    started = time.monotonic()
    routes: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    async with (
        running(harness) as gateway,
        httpx2.AsyncClient(timeout=60) as http,
        contextlib.AsyncExitStack() as stack,
    ):
        local = await stack.enter_async_context(
            local_session(harness, gateway, server="fuzz", client="local-fuzz")
        )
        rec_local = await stack.enter_async_context(
            local_session(harness, gateway, client="rec-fuzz")
        )
        web = HttpSession(http, harness.http_url + "fuzz", harness.token("web-fuzz"))
        await web.open()
        rec_web = HttpSession(http, harness.http_url + "rec", harness.token("rec-web"))
        await rec_web.open()
        invariant = Invariant(gateway, fuzz_log, ("forbidden",))
        rec_invariant = Invariant(gateway, harness.record, NEVER)
        bridge = Bridge(asyncio.get_running_loop())

        async def healthy(case: ServerCase) -> None:
            async def http(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
                try:
                    return await asyncio.wait_for(work, ANSWER_SECONDS)
                except (TimeoutError, httpx2.HTTPError, ValueError, AssertionError) as exc:
                    return {"exception": repr(exc)}

            echo = {"id": probe_id(), "method": "tools/call", "params": {"name": "echo"}}
            local_echo, web_echo, local_pong, web_pong = await asyncio.gather(
                rec_local.ask(echo),
                http(rec_web.call("echo")),
                local.ask({"id": probe_id(), "method": "ping"}),
                http(web.request("ping")),
            )
            if not ran_echo(local_echo):
                findings.add("unhealthy after input", "local rec", f"{local_echo!r:.300}", case)
            if not ran_echo(web_echo):
                findings.add("unhealthy after input", "http rec", f"{web_echo!r:.300}", case)
            if not (isinstance(local_pong, dict) and local_pong.get("result") == {}):
                findings.add(
                    "unhealthy after input", "local fuzz ping", f"{local_pong!r:.300}", case
                )
            if web_pong.get("result") != {}:
                findings.add("unhealthy after input", "http fuzz ping", f"{web_pong!r:.300}", case)

        async def one(case: ServerCase) -> None:
            nonlocal local
            marker = new_marker()
            write_json(scripts / f"{marker}.json", case.script)
            routes[case.route] += 1
            COUNTS[f"server/{case.route}"] += 1
            params: dict[str, Any] = {"name": case.tool, "arguments": {"marker": marker}}
            token = f"tok-{marker}" if case.route in ("local-sdk", "http-progress") else None
            if token is not None:
                params["_meta"] = {"progressToken": token}
            request = {"id": probe_id(), "method": "tools/call", "params": params}
            client = "local-fuzz" if case.route.startswith("local") else "web-fuzz"
            was_down = _fuzz_upstream_down(gateway, client)
            answer: Any = None
            if case.route.startswith("local"):
                local.on_request = lambda r: (
                    local.send_line(json.dumps(a).encode())
                    if (a := reply_to(r, case.reply)) is not None
                    else None
                )
                start = len(local.received)
                answer = await local.ask(request, case.seconds())
                got = local.received[start:]
                problem = None if answer is not None else f"no answer (eof={local.eof.is_set()})"
            else:
                status, got, problem = await http_call(web, request, case.reply, case.seconds())
                answer = next((m for m in got if is_answer(m) and m["id"] == request["id"]), None)
                if status is not None and status != 200:
                    findings.add("HTTP status", case.route, f"{status}", case)
            if problem is not None or answer is None:
                findings.add("unanswered", case.route, str(problem), case)
            else:
                outcomes["error" if "error" in answer else "result"] += 1
                bad = malformed_answer(answer)
                if bad is not None:
                    findings.add("malformed answer", case.route, f"{bad}: {answer!r:.300}", case)
                # Refused during the restart backoff, or (local SDK route) an answer the
                # SDK's models cannot write replaced by an error (local.py, documented):
                # answers, though not the server's own.
                refused = _backoff_refusal(answer) or _not_passed_on(answer)
                outcomes["refused during the restart backoff"] += _backoff_refusal(answer)
                outcomes["not passed on (cannot be written)"] += _not_passed_on(answer)
                if case.tool == "forbidden":
                    result = answer.get("result")
                    if not (isinstance(result, dict) and result.get("isError") is True):
                        findings.add(
                            "blocked call not refused", case.route, f"{answer!r:.300}", case
                        )
                elif case.expect.what == "ok" and not refused and answer.get("result") != OK_RESULT:
                    findings.add(
                        "wrong answer",
                        case.route,
                        f"want {OK_RESULT}, got {answer!r:.300} (down before: {was_down})",
                        case,
                    )
                elif case.expect.what == "code" and not refused:
                    error = answer.get("error")
                    code = error.get("code") if isinstance(error, dict) else None
                    said = error.get("message") if isinstance(error, dict) else None
                    if code != case.expect.code:
                        findings.add(
                            "wrong error code",
                            case.route,
                            f"want {case.expect.code}, got {answer!r:.300}",
                            case,
                        )
                    elif said != case.expect.message:
                        findings.add(
                            "the server's error message changed",
                            case.route,
                            f"want {case.expect.message!r}, got {answer!r:.300}",
                            case,
                        )
            for message in got:
                if message is _MISSING:
                    findings.add("message that is not JSON", case.route, "", case)
                elif (
                    isinstance(message, dict) and message.get("method") == "notifications/progress"
                ):
                    theirs = (message.get("params") or {}).get("progressToken")
                    if token is None or theirs != token:
                        findings.add(
                            "progress with a token the client never gave",
                            case.route,
                            f"client's token {token!r}, got {message!r:.200}",
                            case,
                        )
            rows = [
                r
                for r in gateway.audit.query(limit=50, server="fuzz", tool=case.tool)
                if r.arguments.get("marker") == marker
            ]
            want = "denied" if case.tool == "forbidden" else "allowed"
            # complete once answered; a call left unanswered may still be in flight
            if (
                len(rows) != 1
                or rows[0].decision.value != want
                or (answer is not None and rows[0].outcome.value == "pending")
            ):
                findings.add(
                    "audit row",
                    case.route,
                    f"want one {want} row, complete; got "
                    f"{[(r.decision.value, r.outcome.value) for r in rows]}",
                    case,
                )
            if local.eof.is_set():
                findings.add("local session closed", case.route, f"{local.read_error!r}", case)
                local = await stack.enter_async_context(
                    local_session(harness, gateway, server="fuzz", client="local-fuzz")
                )
            await healthy(case)
            for problem in invariant.problems("fuzz"):
                findings.add("invariant", case.route, problem, case)
            for problem in rec_invariant.problems("rec"):
                findings.add("invariant", "rec", problem, case)
            if case.restart and _fuzz_upstream_down(gateway, client):
                await gateway.restart_server("fuzz")

        @fuzz_settings(120)
        @given(case=server_cases())
        def check(case: ServerCase) -> None:
            bridge.run(one(case))

        await in_thread(check)
        await web.close()
        await rec_web.close()
    elapsed = time.monotonic() - started
    print(
        f"\nFUZZ-COUNT side=server inputs={sum(routes.values())} "
        + " ".join(f"{route}={routes[route]}" for route in ROUTES)
        + f" seconds={elapsed:.1f}"
    )
    print(f"  answers: {dict(outcomes)}")
    findings.check(tmp_path)


# -- what the fuzzing found, one input each (these fail until the gateway is fixed) ----------


@contextlib.asynccontextmanager
async def fuzz_upstream(tmp_path: Path, policy: dict[str, Any] | None = None) -> Any:
    """A gateway whose server ``fuzz`` is tests/servers/fuzzserver.py (and ``rec`` the
    recorder); yields the harness, the gateway and the folder the scripts go in."""
    harness = Harness(tmp_path)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    fuzz = {
        "command": sys.executable,
        "args": [str(FUZZSERVER), str(scripts), str(tmp_path / "fuzz-received.jsonl")],
    }
    write_json(harness.paths.servers_file, recorder_servers(harness.record, fuzz=fuzz))
    harness.write_policy(policy or {"default": "allow"})
    async with running(harness) as gateway:
        yield harness, gateway, scripts


def scripted_call(scripts: Path, finale: dict[str, Any], steps: list[Any] | None = None) -> str:
    """Write a script for the next call; returns the marker its arguments must carry."""
    marker = new_marker()
    write_json(scripts / f"{marker}.json", {"steps": steps or [], "finale": finale})
    return marker


async def test_http_requests_with_ids_equal_as_text_are_each_answered(tmp_path: Path) -> None:
    """1 and "1" are two requests (JSON-RPC ids keep their type; the local door's fast
    lane tells them apart). On one HTTP session, with both in flight, each POST must get
    an answer of its own. The SDK's transport keys each POST's stream by ``str(id)``:
    before, the second POST's stream replaced the first's, the first POST never got an
    answer, and the second got the first one's (with the integer id). Now the second is
    refused while the first is in flight (MCP forbids reusing an id in a session), with
    an error that names it, and the first gets its own answer."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow", "tools": {"ask_me": {"action": "ask"}}})
    async with running(harness) as gateway, httpx2.AsyncClient(timeout=30) as http:
        gateway.approvals.attach()  # someone to ask: each call waits for a person
        session = HttpSession(http, harness.http_url + "rec", harness.token("web-agent"))
        await session.open()

        async def call(request_id: Any) -> httpx2.Response:
            message = {"id": request_id, "method": "tools/call", "params": {"name": "ask_me"}}
            return await session.post(message)

        async def waiting(count: int) -> None:
            await eventually(
                lambda: len(gateway.approvals.pending()) >= count,
                f"{count} calls waiting",
                timeout=10,
            )

        first = asyncio.create_task(call(1))
        await waiting(1)
        second = asyncio.create_task(call("1"))
        await asyncio.wait({second}, timeout=10)  # refused at once: nothing else waits
        assert len(gateway.approvals.pending()) == 1
        for pending in gateway.approvals.pending():
            gateway.approvals.answer(pending.id, True, digest=pending.digest)
        done, _ = await asyncio.wait({first, second}, timeout=10)
        answers: dict[str, Any] = {}
        for name, task in (("1", first), ('"1"', second)):
            if task in done:
                answers[name] = [m.get("id") for m in messages_of(task.result()) if is_answer(m)]
            else:
                task.cancel()
                answers[name] = "no HTTP response within 10 s"
        await session.close()
    gc.collect()  # an abandoned POST's streams would be reported here, not in a later test
    assert answers == {"1": [1], '"1"': ["1"]}
    refused = second.result()
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "a request with this id is already in flight"


async def test_http_refuses_a_wrong_content_type_with_a_json_rpc_error(tmp_path: Path) -> None:
    """proxy/doors/http.py: "Every refusal is a JSON-RPC error object, so MCP clients show its
    message". A POST whose Content-Type is not application/json gets a 400 whose body is
    the plain text ``Invalid Content-Type header`` (the SDK's transport security check,
    behind Lockgate's gate), which no MCP client can show."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow"})
    async with running(harness) as _gateway, httpx2.AsyncClient(timeout=30) as http:
        session = HttpSession(http, harness.http_url + "rec", harness.token("web-agent"))
        await session.open()
        response = await http.post(
            session.url,
            content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
            headers=headers_for("text-plain", session),
        )
        assert response.status_code >= 400
        assert response.headers.get("content-type", "").startswith("application/json"), (
            response.status_code,
            response.headers.get("content-type"),
            response.text,
        )
        assert "error" in response.json()
        await session.close()


@pytest.mark.parametrize("door", ["local fast lane", "local SDK route", "http"])
async def test_a_result_holding_a_lone_surrogate_still_completes_its_audit_record(
    tmp_path: Path, door: str
) -> None:
    """A server's result with a lone surrogate escape (``"\\ud800"``: valid JSON, not
    text) ran on the server, so its record must be completed before the answer leaves
    (pipeline.py: "complete before its answer leaves"). ``_size(result)`` encodes the
    result as UTF-8 before ``_complete`` is called, raises UnicodeEncodeError, and the
    client is told "Lockgate failed to handle this request" while the record stays
    ``pending`` for good (until the next start marks it interrupted)."""
    async with (
        fuzz_upstream(tmp_path) as (harness, gateway, scripts),
        httpx2.AsyncClient(timeout=30) as http,
    ):
        finale = {
            "raw": '{"jsonrpc":"2.0","id":{ID},"result":{"content":[{"type":"text","text":"\\ud800"}]}}'
        }
        marker = scripted_call(scripts, finale)
        params: dict[str, Any] = {"name": "run", "arguments": {"marker": marker}}
        if door == "http":
            session = HttpSession(http, harness.http_url + "fuzz", harness.token("web-agent"))
            await session.open()
            answer = await session.request("tools/call", params)
            await session.close()
        else:
            async with local_session(harness, gateway, server="fuzz") as local:
                if door == "local SDK route":
                    params["_meta"] = {"progressToken": "p"}
                answer = await local.ask({"id": 1, "method": "tools/call", "params": params})
        assert answer is not None
        rows = [
            r
            for r in gateway.audit.query(server="fuzz", tool="run")
            if r.arguments == {"marker": marker}
        ]
        assert [(r.decision.value, r.outcome.value != "pending") for r in rows] == [
            ("allowed", True)
        ], (answer, [(r.decision.value, r.outcome.value) for r in rows])


async def test_a_server_error_with_code_32000_is_not_reported_as_the_server_going_down(
    tmp_path: Path,
) -> None:
    """-32000 is the first of JSON-RPC's server-error codes, the one servers use for a
    generic failure. Lockgate takes every -32000 for the SDK's "Connection closed"
    (pipeline.py: ``_connection_closed``): a server that answers
    "file not found" with -32000 is reported to the agent as "server 'fuzz' went down
    during the call: file not found", audited as ``upstream_down``, and its rate-limit
    charge is kept as if the call may have run. The server is up and answered."""
    async with (
        fuzz_upstream(tmp_path) as (harness, gateway, scripts),
        local_session(harness, gateway, server="fuzz") as local,
    ):
        finale = {"send": {"error": {"code": -32000, "message": "file not found"}}, "id": "call"}
        marker = scripted_call(scripts, finale)
        params = {"name": "run", "arguments": {"marker": marker}}
        answer = await local.ask({"id": 1, "method": "tools/call", "params": params})
        assert answer is not None
        rows = [r for r in gateway.audit.query(server="fuzz") if r.arguments == {"marker": marker}]
        said = answer["error"]["message"], [r.outcome.value for r in rows]
        assert said == ("file not found", ["protocol_error"])


@pytest.mark.parametrize(
    "what",
    [
        "error data",
        "progress message",
        "request from the server",
    ],
)
async def test_http_a_message_the_sdk_cannot_write_does_not_lose_the_answer(
    tmp_path: Path, what: str
) -> None:
    """On the HTTP door, a message for the client that holds a lone surrogate (valid JSON
    from the server: ``"\\ud800"``) makes the SDK's SSE writer fail ("Error in SSE
    writer: surrogates not allowed"), and the POST's stream ends without the answer to
    the call: the agent never learns how its call ended. The local door turns such a
    message into an error for its request, or drops a notification (local.py
    ``_line_or_error``); the HTTP door has no such guard."""
    steps: list[Any] = []
    finale: dict[str, Any] = {"send": {"result": OK_RESULT}, "id": "call"}
    if what == "error data":
        finale = {
            "raw": '{"jsonrpc":"2.0","id":{ID},"error":{"code":-32001,"message":"no","data":"\\ud800"}}'
        }
    elif what == "progress message":
        steps = [
            {
                "raw": '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":{ID},"progress":1,"message":"\\ud800"}}'
            }
        ]
    else:
        steps = [
            {
                "raw": '{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"a":"\\ud800"}}'
            }
        ]
    async with (
        fuzz_upstream(tmp_path) as (harness, _gateway, scripts),
        httpx2.AsyncClient(timeout=30) as http,
    ):
        session = HttpSession(http, harness.http_url + "fuzz", harness.token("web-agent"))
        await session.open()
        marker = scripted_call(scripts, finale, steps)
        params = {"name": "run", "arguments": {"marker": marker}, "_meta": {"progressToken": "p"}}
        request = {"id": 1, "method": "tools/call", "params": params}
        status, got, problem = await http_call(session, request, "ignore", ANSWER_SECONDS)
        assert problem is None, (status, problem, got)
        await session.close()


@pytest.mark.parametrize("other", ['"7"', '" 7"'])
async def test_a_cancellation_for_another_id_does_not_cancel_a_call_on_the_sdk_route(
    tmp_path: Path, other: str
) -> None:
    """A ``notifications/cancelled`` names its request by id, and ids keep their type:
    ``"7"`` is not request 7 (the fast lane keys its calls by type and value, and leaves
    call 7 alone). On the local door's SDK route (a call with a progress token) the SDK's
    dispatcher coerces the id with ``int()``, so a cancellation of ``"7"``, or of
    ``" 7"``, cancels call 7, which is then never answered. The same line on the same
    connection does two different things depending on the lane the call took."""
    harness = Harness(tmp_path)
    harness.write_policy({"default": "allow", "tools": {"ask_me": {"action": "ask"}}})
    async with running(harness) as gateway, local_session(harness, gateway) as local:
        gateway.approvals.attach()  # the call waits for a person, so it is in flight
        params = {"name": "ask_me", "arguments": {}, "_meta": {"progressToken": "p"}}
        local.send({"id": 7, "method": "tools/call", "params": params})
        await eventually(gateway.approvals.pending, "the call to wait", timeout=10)
        cancel = '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%s}}'
        local.send_line((cancel % other).encode())
        pong = await local.ask({"id": "after", "method": "ping"})  # the line has been read
        assert pong is not None
        for pending in gateway.approvals.pending():
            gateway.approvals.answer(pending.id, False, digest=pending.digest, reason="no")
        answer = await local.answer_to(7, 5)  # refused by the person: answered at once
        assert answer is not None, f"call 7 was cancelled by a cancellation of {other}"
