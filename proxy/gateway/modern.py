"""The 2026-07-28 era of MCP, served to clients in front of servers of either era.

At 2026-07-28 there is no ``initialize`` and no session: every request carries its own
envelope in ``params._meta`` (the protocol version, the client's capabilities and
information), and every result says what it is (``resultType``). The SDK parses and
checks the envelope and its headers before the gateway sees a request, and builds a
fresh connection for each one; this module holds what the gateway adds, pure functions
of a request or a result:

- which requests the era has (:func:`check_request`: ``ping`` and the handshake's
  methods do not exist at 2026 and are answered "method not found", as the SDK does);
- the request as a handshake-era server takes it (:func:`without_envelope`: the
  envelope's reserved keys go; a server of that era refuses them);
- the upstream handshake a pooled connection opens with (:func:`upstream_handshake`);
- the answer to ``server/discover`` of a server that speaks the era too
  (:func:`discovered`), and a result as the era writes it (:func:`shaped`).

Where the gateway keeps the upstream connections 2026 clients use, one per server and
client in each pool (the HTTP door's one, or a local connection's), is
:class:`ModernPool`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from mcp.server.streamable_http import REQUEST_CANCELLED  # not in mcp_types yet
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    validate_mcp_param_headers,
    x_mcp_header_map,
)
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types import methods as spec_methods
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    LATEST_MODERN_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)
from pydantic import ValidationError

if TYPE_CHECKING:
    from proxy.gateway.session import Session

__all__ = [
    "LISTENABLE",
    "InputExchange",
    "ModernPool",
    "check_request",
    "discovered",
    "envelope_of",
    "for_handshake",
    "handshake_answer",
    "handshake_envelope",
    "modern_headers",
    "only_2026",
    "param_headers",
    "shaped",
    "speaks_2026",
    "upstream_handshake",
    "with_envelope",
    "without_envelope",
    "without_subscription",
]

RESERVED_PREFIX = "io.modelcontextprotocol/"
# what a 2026 client may be asked mid-call, told to a server of the handshake era
_ASKABLE: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}}
# What a 2026 client is told about caching: nothing may be kept (Lockgate's policy can
# hide a tool at any moment, so a list is good only as long as it is read).
_NO_CACHE = {"ttlMs": 0, "cacheScope": "private"}
# What a subscriptions/listen stream can ask for that Lockgate honours: the filter's flag
# and its notification (resource subscriptions are not carried yet: not offered)
LISTENABLE = {
    "toolsListChanged": "notifications/tools/list_changed",
    "promptsListChanged": "notifications/prompts/list_changed",
    "resourcesListChanged": "notifications/resources/list_changed",
}
_LISTEN_FLAGS = ("subscribe",)


def check_request(method: str, version: str, params: Mapping[str, Any] | None) -> None:
    """Refuse a request the era does not have, or whose shape the era's schema refuses.

    Raises:
        MCPError: -32601 for a method of another era (``ping``, ``initialize``,
            ``logging/setLevel``…), -32602 for malformed params.
    """
    if method not in spec_methods.SPEC_CLIENT_METHODS:
        return  # a method of the server's own: forwarded as it is
    try:
        spec_methods.validate_client_request(method, version, params)
    except KeyError:
        raise MCPError(
            code=METHOD_NOT_FOUND, message=f"{method} does not exist at MCP {version}"
        ) from None
    except ValidationError as exc:
        raise MCPError(
            code=INVALID_PARAMS, message=f"invalid {method} params: {exc.errors()[0]['msg']}"
        ) from None


def without_envelope(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``params`` without the 2026 envelope (the ``io.modelcontextprotocol/`` keys of
    ``_meta``): a server reached through the handshake refuses them. What else
    ``_meta`` holds (a progress token, a client's own keys) stays."""
    if params is None:
        return None
    out = dict(params)
    meta = out.get("_meta")
    if isinstance(meta, Mapping):
        kept = {k: v for k, v in meta.items() if not str(k).startswith(RESERVED_PREFIX)}
        if kept:
            out["_meta"] = kept
        else:
            del out["_meta"]
    return out


def envelope_of(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The 2026 envelope of a request: the reserved keys of its ``_meta``."""
    meta = (params or {}).get("_meta")
    if not isinstance(meta, Mapping):
        return {}
    return {k: v for k, v in meta.items() if str(k).startswith(RESERVED_PREFIX)}


def modern_headers(method: str, params: Mapping[str, Any] | None) -> dict[str, str]:
    """The HTTP headers a 2026 request carries to a remote server (the SDK's
    streamable-HTTP server routes by them and checks them against the body)."""
    meta = (params or {}).get("_meta")
    version = meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, Mapping) else None
    headers = {MCP_METHOD_HEADER: method}
    if isinstance(version, str):
        headers[MCP_PROTOCOL_VERSION_HEADER] = version
    field = NAME_BEARING_METHODS.get(method)
    name = (params or {}).get(field) if field is not None else None
    if isinstance(name, str):
        headers[MCP_NAME_HEADER] = encode_header_value(name)
    return headers


def without_subscription(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A listen-stream frame's params without the server's subscription id (Lockgate
    tells it again with the id of each listening client's stream)."""
    out = dict(params or {})
    meta = out.get("_meta")
    if isinstance(meta, Mapping):
        kept = {k: v for k, v in meta.items() if k != SUBSCRIPTION_ID_META_KEY}
        if kept:
            out["_meta"] = kept
        else:
            del out["_meta"]
    return out


def handshake_envelope(init_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The 2026 envelope Lockgate sends for a handshake client to a server that speaks
    only 2026-07-28: the client's capabilities and information from its ``initialize``."""
    init = init_params or {}
    capabilities = init.get("capabilities")
    envelope: dict[str, Any] = {
        PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
        CLIENT_CAPABILITIES_META_KEY: dict(capabilities)
        if isinstance(capabilities, Mapping)
        else {},
    }
    if isinstance(init.get("clientInfo"), Mapping):
        envelope[CLIENT_INFO_META_KEY] = dict(init["clientInfo"])
    return envelope


def with_envelope(params: Mapping[str, Any] | None, envelope: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` carrying ``envelope`` in its ``_meta`` (what else it holds stays)."""
    out = dict(params or {})
    meta = out.get("_meta")
    out["_meta"] = {**(meta if isinstance(meta, Mapping) else {}), **envelope}
    return out


def only_2026(refusal: MCPError) -> bool:
    """Whether a server's refusal of ``initialize`` says it speaks only the 2026 era."""
    if refusal.error.code != UNSUPPORTED_PROTOCOL_VERSION:
        return False
    data = refusal.error.data
    supported = data.get("supported") if isinstance(data, Mapping) else None
    return (
        isinstance(supported, list)
        and bool(supported)
        and all(v in MODERN_PROTOCOL_VERSIONS for v in supported)
    )


def handshake_answer(
    discovered: Mapping[str, Any], init_params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The ``initialize`` result Lockgate gives a handshake client of a server that
    speaks only 2026-07-28, from the server's ``server/discover`` answer: the client's
    version where it is one of the handshake's, the server's capabilities and words."""
    requested = (init_params or {}).get("protocolVersion")
    meta = discovered.get("_meta")
    info = meta.get(SERVER_INFO_META_KEY) if isinstance(meta, Mapping) else None
    capabilities = discovered.get("capabilities")
    result: dict[str, Any] = {
        "protocolVersion": (
            requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
        ),
        "capabilities": dict(capabilities) if isinstance(capabilities, Mapping) else {},
        "serverInfo": dict(info)
        if isinstance(info, Mapping)
        else {"name": "unknown", "version": "0"},
    }
    if isinstance(discovered.get("instructions"), str):
        result["instructions"] = discovered["instructions"]
    return result


def for_handshake(result: Mapping[str, Any]) -> dict[str, Any]:
    """A 2026 server's result as a handshake client takes it: without the era's own
    fields (``resultType``, the caching fields, the server's information)."""
    out = {k: v for k, v in result.items() if k not in ("resultType", "ttlMs", "cacheScope")}
    meta = out.get("_meta")
    if isinstance(meta, Mapping):
        kept = {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY}
        if kept:
            out["_meta"] = kept
        else:
            del out["_meta"]
    return out


def param_headers(
    schema: Any, arguments: Any, given: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The ``Mcp-Param-*`` headers a 2026 ``tools/call`` carries on to a remote server.

    Over HTTP (``given``: the client's request headers) they are the client's own,
    checked first against its arguments where Lockgate has seen the tool's schema, as
    the server would check them; from a local client (no headers) they are made from the
    schema's ``x-mcp-header`` properties.

    Raises:
        MCPError: the client's headers disagree with its arguments (-32020).
    """
    valid = isinstance(schema, Mapping) and find_invalid_x_mcp_header(schema) is None
    if given is None:
        if not valid or not isinstance(arguments, Mapping):
            return {}
        return mcp_param_headers(x_mcp_header_map(schema), arguments)
    if valid:
        rejection = validate_mcp_param_headers(
            schema, arguments if isinstance(arguments, Mapping) else {}, given
        )
        if rejection is not None:
            raise MCPError(code=rejection.code, message=rejection.message, data=rejection.data)
    prefix = MCP_PARAM_HEADER_PREFIX.lower()
    return {k: v for k, v in given.items() if k.lower().startswith(prefix)}


def speaks_2026(discovered: Mapping[str, Any]) -> bool:
    """Whether a server's ``server/discover`` answer offers a version of the 2026 era."""
    versions = discovered.get("supportedVersions")
    return isinstance(versions, list) and any(v in MODERN_PROTOCOL_VERSIONS for v in versions)


def upstream_handshake(meta: Mapping[str, Any] | None, client: str) -> dict[str, Any]:
    """The ``initialize`` params a pooled upstream connection opens with, for a 2026
    client: the newest handshake version, the client's own name when its envelope gives
    one, and every capability Lockgate can carry as an input-required round (sampling,
    elicitation, roots): whether the client has it is known per request, from its
    envelope, and a question the client cannot answer is refused to the server."""
    info = (meta or {}).get(CLIENT_INFO_META_KEY)
    if not (isinstance(info, Mapping) and isinstance(info.get("name"), str)):
        info = {"name": client, "version": "unknown"}
    return {
        "protocolVersion": LATEST_HANDSHAKE_VERSION,
        "capabilities": _ASKABLE,
        "clientInfo": dict(info),
    }


def discovered(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A 2026 server's answer to ``server/discover`` as Lockgate gives it on: the
    versions both speak, and what the server can do less what Lockgate does not carry
    (changes announced on a ``subscriptions/listen`` stream); nothing may be cached."""
    out = dict(answer)
    versions = answer.get("supportedVersions")
    out["supportedVersions"] = [
        v for v in (versions if isinstance(versions, list) else []) if v in MODERN_PROTOCOL_VERSIONS
    ]
    capabilities: dict[str, Any] = {}
    raw = answer.get("capabilities")
    for name, value in (raw if isinstance(raw, Mapping) else {}).items():
        capabilities[name] = (
            {k: v for k, v in value.items() if k not in _LISTEN_FLAGS}
            if isinstance(value, Mapping)
            else value
        )
    out["capabilities"] = capabilities
    out.update(_NO_CACHE)
    return out


def shaped(method: str, result: Mapping[str, Any], server_info: Any) -> dict[str, Any]:
    """``result`` as the 2026 era writes it: its ``resultType``, the caching fields of a
    result that has them, and the server's information in ``_meta``."""
    out = dict(result)
    out.setdefault("resultType", "complete")
    if method in spec_methods.CACHEABLE_METHODS:
        for key, value in _NO_CACHE.items():
            out.setdefault(key, value)
    if isinstance(server_info, Mapping):
        meta = out.get("_meta")
        out["_meta"] = {
            **(meta if isinstance(meta, Mapping) else {}),
            SERVER_INFO_META_KEY: dict(server_info),
        }
    return out


class ModernPool:
    """The upstream sessions 2026 clients use, one per (server, client): made at a
    client's first request (concurrent first requests share the one being made),
    kept while they are used, ended with the pool (its door's life) or when idle."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], Session] = {}
        self.opening: dict[tuple[str, str], asyncio.Task[Session]] = {}
        # the calls waiting for a client's answers, by the requestState it was given
        self.exchanges: dict[str, InputExchange] = {}

    def forget(self, session: Session) -> None:
        key = (session.server, session.client)
        if self.sessions.get(key) is session:
            del self.sessions[key]


class InputExchange:
    """One call of a 2026 client whose handshake-era server asks the client something
    mid-call (sampling, elicitation, roots), as the era's input-required rounds.

    The call runs in a task of its own; the server's requests to the client are parked
    here (this is the call's channel in the session's ``inflight``, the way a handshake
    session's request stream is). The client's request, and each retry of it that brings
    ``inputResponses`` with the ``requestState`` it was given, waits for what comes first:
    the call's result, or questions for the client, which it gets as an input-required
    result. A parked question nobody answers within ``ttl`` seconds is refused to the
    server, which goes on without it.
    """

    can_send_request = True

    def __init__(
        self,
        *,
        owner: tuple[str, str, str, str],
        capabilities: Mapping[str, Any],
        ttl: float,
    ) -> None:
        self.state = secrets.token_urlsafe(32)
        self.owner = owner  # (server, client, method, name or uri): who may go on with it
        self.capabilities = capabilities  # what the client said it can answer
        self._ttl = ttl
        self._rounds = 0
        self._numbers = itertools.count(1)
        self._waiting: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        self._news = asyncio.Event()
        self.outcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[dict[str, Any]] | None = None

    def run(self, call: Coroutine[Any, Any, dict[str, Any]], on_end: Callable[[], object]) -> None:
        """Run the call on its own; its result (or error) is :attr:`outcome`. ``on_end``
        is called once nobody can collect it any more (``ttl`` after it ends)."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(call)

        def ended(task: asyncio.Task[dict[str, Any]]) -> None:
            if task.cancelled():
                self.outcome.cancel()
            elif (error := task.exception()) is not None:
                self.outcome.set_exception(error)
            else:
                self.outcome.set_result(task.result())
            self.outcome.exception() if not self.outcome.cancelled() else None  # retrieved
            loop.call_later(self._ttl, on_end)

        self._task.add_done_callback(ended)

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: Any = None
    ) -> dict[str, Any]:
        """A request of the server to the client: parked until the client answers it."""
        if not self.can_answer(method):
            raise MCPError(
                code=METHOD_NOT_FOUND,
                message=f"the client cannot answer {method} (it did not say it can)",
            )
        key = f"lockgate-{next(self._numbers)}"
        asked: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        request = {"method": method, "params": dict(params or {})}
        self._waiting[key] = (request, asked)
        self._news.set()
        try:
            return await asyncio.wait_for(asyncio.shield(asked), self._ttl)
        except TimeoutError:
            # the client did not come back: it has gone, and its call goes with it
            self.cancel()
            raise MCPError(
                code=INVALID_REQUEST,
                message=f"the client did not answer {method} within {self._ttl:g} s",
            ) from None
        finally:
            self._waiting.pop(key, None)

    def can_answer(self, method: str) -> bool:
        """Whether the client of this call said it can answer ``method``."""
        capability = _CAPABILITY_OF.get(method)
        return capability is not None and capability in self.capabilities

    def cancel(self) -> None:
        """End the call (its client went away): cancelled upstream, recorded so."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: Any = None) -> None:
        return None  # the era has no stream for them once the first answer has left

    def answer(self, responses: Mapping[str, Any]) -> None:
        """The client's answers to the questions it was given, by their keys."""
        for key, response in responses.items():
            found = self._waiting.get(key)
            if found is not None and not found[1].done() and isinstance(response, Mapping):
                found[1].set_result(dict(response))

    async def next_answer(self) -> dict[str, Any]:
        """The call's result once it has one, else the questions waiting for the client
        (an input-required result)."""
        while True:
            if self.outcome.cancelled():
                raise MCPError(code=REQUEST_CANCELLED, message="the call was cancelled")
            if self.outcome.done():
                return self.outcome.result()
            questions = {k: r for k, (r, f) in self._waiting.items() if not f.done()}
            if questions:
                self._rounds += 1
                if self._rounds > MAX_ROUNDS:
                    self.cancel()
                    raise MCPError(
                        code=INVALID_REQUEST,
                        message=f"the server asked for input more than {MAX_ROUNDS} times "
                        "in one call; Lockgate ended it",
                    )
                return {
                    "resultType": "input_required",
                    "inputRequests": questions,
                    "requestState": self.state,
                }
            self._news.clear()
            news: asyncio.Future[Any] = asyncio.ensure_future(self._news.wait())
            either: set[asyncio.Future[Any]] = {news, self.outcome}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                news.cancel()


MAX_ROUNDS = 10  # input-required rounds of one call, at most

_CAPABILITY_OF = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
