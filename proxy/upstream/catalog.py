"""What tools each server offers, asked of the server itself.

The gateway sees a server's tools only when a client lists them through it; the app's
"Tools & rules" view needs every tool of every server, before any agent has called. So
Lockgate asks each server on its own: a connection of its own (the same code as a client
session's upstream, secrets resolved the same way), the handshake, every page of
``tools/list``, then the server is stopped again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import anyio
from mcp.shared.exceptions import MCPError
from mcp_types import METHOD_NOT_FOUND

from proxy.config.secrets import SecretError, SecretStore
from proxy.config.servers import ServerSpec, resolve_secrets, secret_values
from proxy.policy.risk import Risk, classify
from proxy.upstream.connection import Upstream, UpstreamUnavailable
from proxy.upstream.oauth import KeeperAuth, TokenKeeper

__all__ = ["ServerTools", "list_all_tools", "list_tools"]

log = logging.getLogger(__name__)

_TIMEOUT = 30.0  # seconds for the handshake and each page
_MAX_PAGES = 100
HANDSHAKE_VERSION = "2025-11-25"  # the newest version of the initialize era


@dataclass(frozen=True)
class ServerTools:
    """One server's tools (each as the server described it, with its risk), or why not."""

    server: str
    tools: tuple[Mapping[str, Any], ...] = ()
    risks: tuple[Risk, ...] = ()
    error: str | None = None
    instructions: str | None = field(default=None, compare=False)


KeeperFor = Callable[[ServerSpec], TokenKeeper | None]


async def list_tools(
    spec: ServerSpec, secrets: SecretStore, errlog: TextIO, keeper: TokenKeeper | None = None
) -> ServerTools:
    """Start ``spec``, list its tools (each with its risk), stop it. Never raises for the
    server's faults: what went wrong is in ``error``. ``keeper`` holds a remote server's
    OAuth sign-in: without a usable one, the server is not asked."""
    found = await _listed(spec, secrets, errlog, keeper)
    return (await anyio.to_thread.run_sync(_classified, {spec.name: found}))[spec.name]


async def _listed(
    spec: ServerSpec, secrets: SecretStore, errlog: TextIO, keeper: TokenKeeper | None
) -> ServerTools:
    """:func:`list_tools` without the risks."""
    if keeper is not None:
        await keeper.load()
        if (refused := keeper.refusal()) is not None:
            return ServerTools(spec.name, error=refused)
    try:
        resolved = resolve_secrets(spec, secrets)
    except SecretError as exc:
        return ServerTools(spec.name, error=str(exc))

    async def no_requests(method: str, _params: Mapping[str, Any] | None) -> dict[str, Any]:
        raise MCPError(code=METHOD_NOT_FOUND, message=f"Lockgate is only listing tools ({method})")

    async def ignore(_method: str, _params: Mapping[str, Any] | None) -> None:
        return None

    upstream = Upstream(
        resolved,
        on_request=no_requests,
        on_notify=ignore,
        errlog=errlog,
        secrets=tuple(secret_values(spec, resolved)),
        auth=KeeperAuth(keeper) if keeper is not None else None,
        live_secrets=keeper.secrets if keeper is not None else (),
    )

    def failed(exc: Exception) -> ServerTools:
        why = keeper.explain(exc) if keeper is not None else None  # a 401 says no more
        return ServerTools(spec.name, error=upstream.scrub(why or _message(exc)))

    try:
        async with anyio.create_task_group() as tg:
            await tg.start(upstream.supervise)
            try:
                found = await _ask(upstream)
            finally:
                await upstream.aclose()
        return found
    except (UpstreamUnavailable, MCPError, OSError) as exc:
        return failed(exc)
    except BaseExceptionGroup as group:  # the task group's: a server that could not start
        faults, rest = group.split((UpstreamUnavailable, MCPError, OSError))
        if rest is not None or faults is None:
            raise
        return failed(_first(faults))


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _message(exc: Exception) -> str:
    return exc.error.message if isinstance(exc, MCPError) else str(exc)


async def _ask(upstream: Upstream) -> ServerTools:
    init = await upstream.request(
        "initialize",
        {
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "lockgate-catalog", "version": "1"},
        },
        {"timeout": _TIMEOUT},
    )
    await upstream.notify("notifications/initialized", None)
    tools: list[Mapping[str, Any]] = []
    if isinstance(init.get("capabilities"), dict) and "tools" in init["capabilities"]:
        cursor: Any = None
        for _ in range(_MAX_PAGES):
            page = await upstream.request(
                "tools/list", {"cursor": cursor} if cursor else None, {"timeout": _TIMEOUT}
            )
            listed = page.get("tools")
            if isinstance(listed, list):
                tools.extend(t for t in listed if isinstance(t, dict) and "name" in t)
            cursor = page.get("nextCursor")
            if not cursor:
                break
    instructions = init.get("instructions")
    return ServerTools(
        upstream.name,
        tuple(tools),
        instructions=instructions if isinstance(instructions, str) else None,
    )


async def list_all_tools(
    servers: Mapping[str, ServerSpec],
    secrets: SecretStore,
    errlog: Any,
    keeper_for: KeeperFor | None = None,
) -> dict[str, ServerTools]:
    """:func:`list_tools` for every server at once; ``errlog(name)`` gives each server's
    stderr file, ``keeper_for(spec)`` a remote server's sign-in (the gateway's own). Each
    tool's risk counts the other servers' tools (a description that names one of them in
    an instruction is shadowing it)."""
    found: dict[str, ServerTools] = {}

    async def one(spec: ServerSpec) -> None:
        keeper = keeper_for(spec) if keeper_for is not None else None
        found[spec.name] = await _listed(spec, secrets, errlog(spec.name), keeper)

    async with anyio.create_task_group() as tg:
        for spec in servers.values():
            tg.start_soon(one, spec)
    # about a millisecond a tool: on a worker thread, not the loop every call waits on
    return await anyio.to_thread.run_sync(
        _classified, {name: found[name] for name in sorted(found)}
    )


def _classified(listing: Mapping[str, ServerTools]) -> dict[str, ServerTools]:
    """Each server's tools with their risks, the other servers' tools known."""
    names = {server: [str(t["name"]) for t in found.tools] for server, found in listing.items()}
    out: dict[str, ServerTools] = {}
    for server, found in listing.items():
        others = [name for other, listed in names.items() if other != server for name in listed]
        risks = tuple(classify(t, other_tools=others) for t in found.tools)
        out[server] = replace(found, risks=risks)
    return out
