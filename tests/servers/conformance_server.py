"""The server the MCP conformance suite expects, written for Lockgate's tests.

    python tests/servers/conformance_server.py --port PORT

Streamable HTTP on ``http://127.0.0.1:PORT/mcp`` (loopback only), until SIGTERM or
SIGINT. ``@modelcontextprotocol/conformance`` tests a server by calling tools, prompts
and resources of fixed names (``test_simple_text``, ``test://static-text``, ...) and
checking what comes back; this is a server with exactly those, so that every check of
``--suite all`` passes against it directly, at ``--spec-version 2025-11-25`` and at
``2026-07-28``. tests/system/test_conformance.py then runs the suite through Lockgate
against it: a check that passes here and fails there is Lockgate's doing.

Both eras are served on the one URL, which the SDK's transport routes by the request's
``MCP-Protocol-Version`` header:

- **2025-11-25** (the handshake era): ``initialize``, sessions, server-to-client
  requests on the call's stream, ``logging/setLevel``, ``resources/subscribe``, and an
  event store, so a client whose stream the server closes mid-call comes back with
  ``Last-Event-ID`` and gets the rest (SEP-1699; ``test_reconnection``).
- **2026-07-28** (sessionless): every request carries its own envelope; the SDK
  answers ``server/discover``, checks the envelope and the ``Mcp-*`` headers (the
  ``Mcp-Param-*`` ones against the schemas of :data:`TOOLS`), stamps cache hints and
  the server's identity; ``subscriptions/listen`` streams carry list changes.

What a person reading a failed check needs to know about this server:

- **One way to ask the client.** A handler that needs the client (sampling,
  elicitation, roots) calls :meth:`Call.ask`, whatever the era. In the handshake era
  that sends the requests to the client on the call's own stream and waits. In the
  2026 era it answers ``input_required`` (SEP-2322) with the questions still open and
  a ``requestState`` holding the answers given so far; the client calls again with
  ``inputResponses`` and the state, and the handler runs again from the top. The SDK's
  :class:`RequestStateBoundary` seals the state (AES-GCM, bound to the method, the
  tool and its arguments) and refuses a tampered one with -32602.
- **Capabilities are honoured.** Asking a client for something it did not declare
  fails with -32021 and ``data.requiredCapabilities`` (``test_missing_capability``
  needs ``sampling``; ``test_input_required_result_capabilities`` asks only for what
  was declared).
- **Lists change for real.** ``test_trigger_tool_change`` and
  ``test_trigger_prompt_change`` bump the revision in the description of
  ``test_dynamic_tool`` / ``test_dynamic_prompt`` and announce it on the listen
  streams (2026-07-28). In the handshake era nothing is sent: the server does not
  declare ``listChanged`` there.
- **Content** is made here: a 1x1 PNG and a short silent WAV built at import.

The suite's documentation of each scenario (``Server Implementation Requirements``)
says what each name must return; this server is written from that, on the SDK's
low-level ``Server``. It shares no code with the SDK's example everything-server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import struct
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.subscriptions import PromptsListChanged, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

# The handshake era's logging, sampling and roots are deprecated as of 2026-07-28; this
# server serves them on purpose, for the clients of that era.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

NAME = "lockgate-conformance-fixture"
RETRY_MS = 200  # the SSE `retry` a client waits before it reconnects (SEP-1699)
Context = ServerRequestContext[Any, Any]


# --- content ----------------------------------------------------------------------------


def one_pixel_png(red: int, green: int, blue: int) -> bytes:
    """A valid 1x1 truecolour PNG: signature, IHDR, one IDAT row, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8 bits, RGB
    row = b"\x00" + bytes((red, green, blue))  # filter byte, then the pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row))
        + chunk(b"IEND", b"")
    )


def silent_wav(samples: int = 16, rate: int = 8000) -> bytes:
    """A valid PCM WAV: mono, 16-bit, ``samples`` samples of silence."""
    data = b"\x00\x00" * samples
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


PNG = one_pixel_png(200, 30, 30)
WAV = silent_wav()


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def image() -> types.ImageContent:
    return types.ImageContent(type="image", data=b64(PNG), mime_type="image/png")


def embedded(uri: str, mime_type: str, body: str) -> types.EmbeddedResource:
    return types.EmbeddedResource(
        type="resource",
        resource=types.TextResourceContents(uri=uri, mime_type=mime_type, text=body),
    )


def answer(*content: types.ContentBlock, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=list(content), is_error=is_error)


# --- asking the client, in either era ---------------------------------------------------

# What the client must have declared to be asked, and what its answer parses as.
CAPABILITY_OF = {
    "elicitation/create": "elicitation",
    "sampling/createMessage": "sampling",
    "roots/list": "roots",
}
ANSWER_TYPE: dict[str, type[BaseModel]] = {
    "elicitation/create": types.ElicitResult,
    "sampling/createMessage": types.CreateMessageResult,
    "roots/list": types.ListRootsResult,
}


class NeedInput(Exception):
    """Raised by :meth:`Call.ask` in the 2026 era: answer ``input_required`` with this.

    Not an error: the early answer of a handler that cannot finish this round.
    """

    def __init__(self, result: types.InputRequiredResult) -> None:
        super().__init__("input required")
        self.result = result


def missing_capability(capability: str) -> MCPError:
    return MCPError(
        code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"this needs the client's {capability!r} capability, which it did not declare",
        data={"requiredCapabilities": {capability: {}}},
    )


def elicit(message: str, **properties: dict[str, Any]) -> types.ElicitRequest:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return types.ElicitRequest(
        params=types.ElicitRequestFormParams(message=message, requested_schema=schema)
    )


def sample(prompt: str, max_tokens: int) -> types.CreateMessageRequest:
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=text(prompt))],
            max_tokens=max_tokens,
        )
    )


def roots() -> types.ListRootsRequest:
    return types.ListRootsRequest()


STRING = {"type": "string"}


@dataclass
class Call:
    """One tools/call or prompts/get, and what the client has answered so far.

    ``known`` is every answer of this call so far, in wire form: those carried in the
    (unsealed) ``requestState`` of earlier rounds and this round's ``inputResponses``.
    """

    ctx: Context
    arguments: dict[str, Any]
    known: dict[str, Any]
    carried_state: bool

    @classmethod
    def of(
        cls, ctx: Context, params: types.CallToolRequestParams | types.GetPromptRequestParams
    ) -> Call:
        known: dict[str, Any] = {}
        if params.request_state is not None:  # already verified and unsealed by the boundary
            try:
                known.update(json.loads(params.request_state)["answers"])
            except (ValueError, KeyError, TypeError):
                raise MCPError(
                    code=types.INVALID_PARAMS, message="requestState is not this server's"
                ) from None
        for key, response in (params.input_responses or {}).items():
            known[key] = response.model_dump(by_alias=True, mode="json", exclude_none=True)
        return cls(ctx, dict(params.arguments or {}), known, params.request_state is not None)

    @property
    def modern(self) -> bool:
        return self.ctx.protocol_version in MODERN_PROTOCOL_VERSIONS

    def declares(self, capability: str) -> bool:
        declared = self.ctx.session.client_capabilities
        return declared is not None and getattr(declared, capability, None) is not None

    async def ask(
        self, questions: Mapping[str, types.InputRequest], *, state_required: bool = False
    ) -> dict[str, Any]:
        """The client's answers to ``questions``, parsed (ElicitResult, CreateMessageResult
        or ListRootsResult), by key.

        Handshake era: asked now, on the call's stream. 2026 era: from what the client
        has answered; anything not (or not validly) answered yet raises
        :class:`NeedInput`, and the handler runs again on the client's next round. With
        ``state_required`` a round that did not echo ``requestState`` counts as not
        answered.
        """
        for question in questions.values():
            capability = CAPABILITY_OF[question.method]
            if not self.declares(capability):
                raise missing_capability(capability)
        if not self.modern:
            return {key: await self._ask_now(question) for key, question in questions.items()}
        answers: dict[str, Any] = {}
        for key, question in questions.items():
            with contextlib.suppress(KeyError, ValidationError):  # not answered, or not validly
                answers[key] = ANSWER_TYPE[question.method].model_validate(self.known[key])
        if len(answers) == len(questions) and (self.carried_state or not state_required):
            return answers
        still_open = {key: q for key, q in questions.items() if key not in answers}
        raise NeedInput(
            types.InputRequiredResult(
                # all answered but the state was not echoed: ask it all again
                input_requests=still_open or dict(questions),
                # What was answered so far, sealed by the boundary on the way out.
                request_state=json.dumps({"answers": self.known}),
            )
        )

    async def _ask_now(self, question: types.InputRequest) -> Any:
        return await self.ctx.session.send_request(
            question,
            ANSWER_TYPE[question.method],
            metadata=ServerMessageMetadata(related_request_id=self.ctx.request_id),
        )


# --- resumable streams (handshake era) --------------------------------------------------


Event = tuple[EventId, types.JSONRPCMessage | None]  # None: a priming event


class ReplayLog(EventStore):
    """The events of recent SSE streams, for a client that reconnects with Last-Event-ID.

    The SDK names a request's stream by its JSON-RPC id, and every session counts ids
    from the same start, so a stream id alone would mix sessions. Each priming event
    (``message is None``: the first event of every POST stream at 2025-11-25) opens a
    new *run* of that stream id; later events join the stream id's newest run, and a
    replay sends only the rest of the run the client's last event belongs to. Event ids
    are one counter, unique across all sessions. The oldest runs are forgotten beyond
    ``max_runs``.
    """

    def __init__(self, max_runs: int = 2000) -> None:
        self._ids = itertools.count(1)
        self._max_runs = max_runs
        self._runs: OrderedDict[int, tuple[StreamId, list[Event]]] = OrderedDict()
        self._newest_run: dict[StreamId, int] = {}
        self._run_of_event: dict[EventId, int] = {}

    async def store_event(
        self, stream_id: StreamId, message: types.JSONRPCMessage | None
    ) -> EventId:
        event_id = str(next(self._ids))
        run = self._newest_run.get(stream_id)
        if message is None or run is None or run not in self._runs:
            run = int(event_id)
            self._runs[run] = (stream_id, [])
            self._newest_run[stream_id] = run
            while len(self._runs) > self._max_runs:
                _, (old_stream, old_events) = self._runs.popitem(last=False)
                for old_id, _ in old_events:
                    self._run_of_event.pop(old_id, None)
                if self._newest_run.get(old_stream) not in self._runs:
                    self._newest_run.pop(old_stream, None)
        self._runs[run][1].append((event_id, message))
        self._run_of_event[event_id] = run
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        run = self._run_of_event.get(last_event_id)
        if run is None or run not in self._runs:
            return None
        stream_id, events = self._runs[run]
        seen = int(last_event_id)
        for event_id, message in list(events):
            if int(event_id) > seen and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


# --- the fixture ------------------------------------------------------------------------

ToolRun = Callable[[Call], Awaitable[types.CallToolResult]]
PromptRun = Callable[[Call], Awaitable[list[types.PromptMessage]]]


def no_arguments() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


# The schema the json-schema-2020-12 scenario looks for, keyword for keyword: tools/list
# must carry it unchanged (SEP-1613, SEP-2106).
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": STRING, "city": STRING},
        }
    },
    "properties": {
        "name": STRING,
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": STRING,
        "email": STRING,
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


@dataclass(frozen=True)
class FixtureTool:
    description: str
    run: ToolRun
    input_schema: Mapping[str, Any] = field(default_factory=no_arguments)


@dataclass(frozen=True)
class FixturePrompt:
    description: str
    run: PromptRun
    arguments: tuple[str, ...] = ()


def user(content: types.ContentBlock) -> types.PromptMessage:
    return types.PromptMessage(role="user", content=content)


class Fixture:
    """The tools, prompts and resources, and the little state they share."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.tool_revision = 1
        self.prompt_revision = 1
        # What resources/subscribe asked for (handshake era); nothing here changes, so nothing
        # is ever sent for them.
        self.subscribed: set[str] = set()
        self.tools: dict[str, FixtureTool] = {
            # content of every kind
            "test_simple_text": FixtureTool("Answers with one text block.", self.simple_text),
            "test_image_content": FixtureTool("Answers with a 1x1 PNG.", self.image_content),
            "test_audio_content": FixtureTool("Answers with a silent WAV.", self.audio_content),
            "test_embedded_resource": FixtureTool(
                "Answers with an embedded text resource.", self.embedded_resource
            ),
            "test_multiple_content_types": FixtureTool(
                "Answers with text, an image and an embedded resource.", self.mixed_content
            ),
            "test_error_handling": FixtureTool(
                "Always fails, as a tool result with isError.", self.error_handling
            ),
            # notifications on the call's own stream
            "test_tool_with_logging": FixtureTool(
                "Logs three messages while it runs.", self.with_logging
            ),
            "test_logging_tool": FixtureTool(
                "Logs three messages while it runs (sent only if the request asked for a "
                "log level, at 2026-07-28).",
                self.with_logging,
            ),
            "test_tool_with_progress": FixtureTool(
                "Reports progress 0, 50 and 100 of 100.", self.with_progress
            ),
            "test_reconnection": FixtureTool(
                "Closes its SSE stream mid-call; the client resumes with Last-Event-ID.",
                self.reconnection,
            ),
            # asking the client
            "test_sampling": FixtureTool(
                "Asks the client's model to complete the prompt.",
                self.sampling,
                {"type": "object", "properties": {"prompt": STRING}, "required": ["prompt"]},
            ),
            "test_elicitation": FixtureTool(
                "Asks the person for a username and an email address.",
                self.elicitation,
                {"type": "object", "properties": {"message": STRING}, "required": ["message"]},
            ),
            "test_elicitation_sep1034_defaults": FixtureTool(
                "Asks with a default for every primitive type (SEP-1034).",
                self.elicitation_defaults,
            ),
            "test_elicitation_sep1330_enums": FixtureTool(
                "Asks with each of the five enum shapes (SEP-1330).", self.elicitation_enums
            ),
            "test_streaming_elicitation": FixtureTool(
                "Asks the person a question: input_required at 2026-07-28, never a request "
                "of its own on the stream.",
                self.streaming_elicitation,
            ),
            "test_missing_capability": FixtureTool(
                "Needs the client's sampling capability: -32021 without it.",
                self.needs_sampling,
            ),
            # the multi-round-trip flow (SEP-2322)
            "test_input_required_result_elicitation": FixtureTool(
                "Asks for a name, then greets.", self.ir_elicitation
            ),
            "test_input_required_result_sampling": FixtureTool(
                "Asks the client's model a question, then repeats the answer.", self.ir_sampling
            ),
            "test_input_required_result_list_roots": FixtureTool(
                "Asks for the client's roots, then counts them.", self.ir_list_roots
            ),
            "test_input_required_result_request_state": FixtureTool(
                "Asks for a confirmation; completes only with the requestState echoed.",
                self.ir_request_state,
            ),
            "test_input_required_result_multiple_inputs": FixtureTool(
                "Asks for a name, a model's greeting and the roots at once.", self.ir_multiple
            ),
            "test_input_required_result_multi_round": FixtureTool(
                "Asks for a name, then for a colour: two rounds of questions.", self.ir_multi_round
            ),
            "test_input_required_result_tampered_state": FixtureTool(
                "Asks for a confirmation under a sealed requestState.", self.ir_tampered_state
            ),
            "test_input_required_result_capabilities": FixtureTool(
                "Asks only for what the client declared it can answer.", self.ir_capabilities
            ),
            # schemas and headers
            "json_schema_2020_12_tool": FixtureTool(
                "Tool with JSON Schema 2020-12 features", self.schema_tool, JSON_SCHEMA_2020_12
            ),
            "test_x_mcp_header": FixtureTool(
                "Repeats its region, which clients mirror into the Mcp-Param-Region header.",
                self.x_mcp_header,
                {
                    "type": "object",
                    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
                },
            ),
            # lists that change (subscriptions/listen, 2026-07-28)
            "test_trigger_tool_change": FixtureTool(
                "Revises test_dynamic_tool and announces the tool list changed.",
                self.trigger_tool_change,
            ),
            "test_trigger_prompt_change": FixtureTool(
                "Revises test_dynamic_prompt and announces the prompt list changed.",
                self.trigger_prompt_change,
            ),
        }
        self.prompts: dict[str, FixturePrompt] = {
            "test_simple_prompt": FixturePrompt("A prompt without arguments.", self.simple_prompt),
            "test_prompt_with_arguments": FixturePrompt(
                "A prompt that repeats its two arguments.",
                self.prompt_with_arguments,
                ("arg1", "arg2"),
            ),
            "test_prompt_with_embedded_resource": FixturePrompt(
                "A prompt that embeds the resource it is given.",
                self.prompt_with_embedded_resource,
                ("resourceUri",),
            ),
            "test_prompt_with_image": FixturePrompt(
                "A prompt with an image.", self.prompt_with_image
            ),
            "test_input_required_result_prompt": FixturePrompt(
                "A prompt that first asks the person for its context (SEP-2322).",
                self.ir_prompt,
            ),
        }

    # --- the listings, which the revision counters make change --------------------

    def tool_list(self) -> list[types.Tool]:
        listed = [
            types.Tool(
                name=name, description=tool.description, input_schema=dict(tool.input_schema)
            )
            for name, tool in self.tools.items()
        ]
        listed.append(
            types.Tool(
                name="test_dynamic_tool",
                description=f"Revision {self.tool_revision}, revised by test_trigger_tool_change.",
                input_schema=no_arguments(),
            )
        )
        return listed

    def prompt_list(self) -> list[types.Prompt]:
        listed = [
            types.Prompt(
                name=name,
                description=prompt.description,
                arguments=[
                    types.PromptArgument(name=arg, description=f"any text: {arg}", required=True)
                    for arg in prompt.arguments
                ],
            )
            for name, prompt in self.prompts.items()
        ]
        listed.append(
            types.Prompt(
                name="test_dynamic_prompt",
                description=f"Revision {self.prompt_revision}, revised by test_trigger_prompt_change.",
            )
        )
        return listed

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        """For the SDK's Mcp-Param-* header check (2026-07-28), before any handler runs."""
        tool = self.tools.get(name)
        return None if tool is None else tool.input_schema

    # --- the tools ----------------------------------------------------------------

    async def simple_text(self, call: Call) -> types.CallToolResult:
        return answer(text("This is a simple text response for testing."))

    async def image_content(self, call: Call) -> types.CallToolResult:
        return answer(image())

    async def audio_content(self, call: Call) -> types.CallToolResult:
        return answer(types.AudioContent(type="audio", data=b64(WAV), mime_type="audio/wav"))

    async def embedded_resource(self, call: Call) -> types.CallToolResult:
        return answer(
            embedded(
                "test://embedded-resource", "text/plain", "This is an embedded resource content."
            )
        )

    async def mixed_content(self, call: Call) -> types.CallToolResult:
        return answer(
            text("Multiple content types test:"),
            image(),
            embedded(
                "test://mixed-content-resource",
                "application/json",
                json.dumps({"test": "data", "value": 123}),
            ),
        )

    async def error_handling(self, call: Call) -> types.CallToolResult:
        return answer(text("This tool intentionally returns an error for testing"), is_error=True)

    async def with_logging(self, call: Call) -> types.CallToolResult:
        # At 2026-07-28 the SDK sends these only if the request's _meta named a log level.
        for step, message in enumerate(("started", "halfway", "finished")):
            if step:
                await asyncio.sleep(0.05)
            await call.ctx.session.send_log_message(
                "info",
                f"conformance tool {message}",
                logger=NAME,
                related_request_id=call.ctx.request_id,
            )
        return answer(text("Logged three messages."))

    async def with_progress(self, call: Call) -> types.CallToolResult:
        for step, done in enumerate((0, 50, 100)):
            if step:
                await asyncio.sleep(0.05)
            await call.ctx.session.report_progress(done, 100, f"{done} of 100")
        token = (call.ctx.meta or {}).get("progress_token")
        return answer(text(f"Reported progress against token {token!r}."))

    async def reconnection(self, call: Call) -> types.CallToolResult:
        session = call.ctx.session
        await session.send_log_message(
            "info", "closing the stream", logger=NAME, related_request_id=call.ctx.request_id
        )
        if call.ctx.close_sse_stream is not None:  # only with an event store, at 2025-11-25
            await call.ctx.close_sse_stream()
        await asyncio.sleep(RETRY_MS / 1000 * 2)  # while the client reconnects
        await session.send_log_message(
            "info", "after the reconnection", logger=NAME, related_request_id=call.ctx.request_id
        )
        return answer(text("test_reconnection finished."))

    async def sampling(self, call: Call) -> types.CallToolResult:
        reply = (
            await call.ask({"completion": sample(str(call.arguments.get("prompt", "")), 100)})
        )["completion"]
        said = reply.content.text if isinstance(reply.content, types.TextContent) else "(no text)"
        return answer(text(f"LLM response: {said}"))

    async def elicitation(self, call: Call) -> types.CallToolResult:
        question = types.ElicitRequest(
            params=types.ElicitRequestFormParams(
                message=str(call.arguments.get("message", "Who are you?")),
                requested_schema={
                    "type": "object",
                    "properties": {
                        "username": {"type": "string", "description": "Your username"},
                        "email": {"type": "string", "description": "Your email address"},
                    },
                    "required": ["username", "email"],
                },
            )
        )
        reply = (await call.ask({"identity": question}))["identity"]
        return answer(
            text(f"User response: action={reply.action}, content={json.dumps(reply.content)}")
        )

    async def elicitation_defaults(self, call: Call) -> types.CallToolResult:
        question = types.ElicitRequest(
            params=types.ElicitRequestFormParams(
                message="Check these details; each has a default.",
                requested_schema={
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "default": "John Doe"},
                        "age": {"type": "integer", "default": 30},
                        "score": {"type": "number", "default": 95.5},
                        "status": {
                            "type": "string",
                            "enum": ["active", "inactive", "pending"],
                            "default": "active",
                        },
                        "verified": {"type": "boolean", "default": True},
                    },
                },
            )
        )
        reply = (await call.ask({"details": question}))["details"]
        return answer(
            text(
                f"Elicitation completed: action={reply.action}, content={json.dumps(reply.content)}"
            )
        )

    async def elicitation_enums(self, call: Call) -> types.CallToolResult:
        def titled(prefix: str, titles: tuple[str, ...]) -> list[dict[str, str]]:
            return [{"const": f"{prefix}{i}", "title": t} for i, t in enumerate(titles, 1)]

        options = ["option1", "option2", "option3"]
        question = types.ElicitRequest(
            params=types.ElicitRequestFormParams(
                message="Pick from each kind of list.",
                requested_schema={
                    "type": "object",
                    "properties": {
                        "untitledSingle": {"type": "string", "enum": options},
                        "titledSingle": {
                            "type": "string",
                            "oneOf": titled(
                                "value", ("First Option", "Second Option", "Third Option")
                            ),
                        },
                        "legacyEnum": {
                            "type": "string",
                            "enum": ["opt1", "opt2", "opt3"],
                            "enumNames": ["Option One", "Option Two", "Option Three"],
                        },
                        "untitledMulti": {
                            "type": "array",
                            "items": {"type": "string", "enum": options},
                        },
                        "titledMulti": {
                            "type": "array",
                            "items": {
                                "anyOf": titled(
                                    "value", ("First Choice", "Second Choice", "Third Choice")
                                )
                            },
                        },
                    },
                },
            )
        )
        reply = (await call.ask({"choices": question}))["choices"]
        return answer(
            text(
                f"Elicitation completed: action={reply.action}, content={json.dumps(reply.content)}"
            )
        )

    async def streaming_elicitation(self, call: Call) -> types.CallToolResult:
        reply = (await call.ask({"answer": elicit("Anything to add?", answer=STRING)}))["answer"]
        return answer(text(f"Thanks: action={reply.action}."))

    async def needs_sampling(self, call: Call) -> types.CallToolResult:
        if not call.declares("sampling"):
            raise missing_capability("sampling")
        return answer(text("The client declared sampling."))

    async def ir_elicitation(self, call: Call) -> types.CallToolResult:
        reply = (await call.ask({"user_name": elicit("What is your name?", name=STRING)}))[
            "user_name"
        ]
        name = (reply.content or {}).get("name", "whoever you are")
        return answer(text(f"Hello, {name}!"))

    async def ir_sampling(self, call: Call) -> types.CallToolResult:
        reply = (
            await call.ask({"capital_question": sample("What is the capital of France?", 100)})
        )["capital_question"]
        said = reply.content.text if isinstance(reply.content, types.TextContent) else "(no text)"
        return answer(text(f"The model answered: {said}"))

    async def ir_list_roots(self, call: Call) -> types.CallToolResult:
        listed = (await call.ask({"client_roots": roots()}))["client_roots"].roots
        return answer(
            text(f"The client has {len(listed)} root(s): {', '.join(str(r.uri) for r in listed)}")
        )

    async def ir_request_state(self, call: Call) -> types.CallToolResult:
        confirm = elicit("Please confirm", ok={"type": "boolean"})
        await call.ask({"confirm": confirm}, state_required=True)
        return answer(text("state-ok: the requestState came back sealed and intact"))

    async def ir_multiple(self, call: Call) -> types.CallToolResult:
        replies = await call.ask(
            {
                "user_name": elicit("What is your name?", name=STRING),
                "greeting": sample("Generate a greeting", 50),
                "client_roots": roots(),
            }
        )
        return answer(text(f"All {len(replies)} inputs received."))

    async def ir_multi_round(self, call: Call) -> types.CallToolResult:
        first = await call.ask({"step1": elicit("Step 1: What is your name?", name=STRING)})
        second = await call.ask(
            {"step2": elicit("Step 2: What is your favorite color?", color=STRING)}
        )
        name = (first["step1"].content or {}).get("name")
        color = (second["step2"].content or {}).get("color")
        return answer(text(f"{name} likes {color}."))

    async def ir_tampered_state(self, call: Call) -> types.CallToolResult:
        await call.ask(
            {"confirm": elicit("Please confirm", ok={"type": "boolean"})}, state_required=True
        )
        return answer(text("state-ok: the sealed requestState verified"))

    async def ir_capabilities(self, call: Call) -> types.CallToolResult:
        questions: dict[str, types.InputRequest] = {}
        if call.declares("sampling"):
            questions["sample"] = sample("Say hello", 50)
        if call.declares("elicitation"):
            questions["ask"] = elicit("What is your name?", name=STRING)
        if call.declares("roots"):
            questions["roots"] = roots()
        replies = await call.ask(questions)
        return answer(text(f"Asked only for what was declared: {sorted(replies) or 'nothing'}."))

    async def schema_tool(self, call: Call) -> types.CallToolResult:
        return answer(text("json_schema_2020_12_tool ran."))

    async def x_mcp_header(self, call: Call) -> types.CallToolResult:
        return answer(text(f"region={call.arguments.get('region', '(none)')}"))

    async def trigger_tool_change(self, call: Call) -> types.CallToolResult:
        self.tool_revision += 1
        await self.bus.publish(ToolsListChanged())
        return answer(text(f"test_dynamic_tool is now at revision {self.tool_revision}."))

    async def trigger_prompt_change(self, call: Call) -> types.CallToolResult:
        self.prompt_revision += 1
        await self.bus.publish(PromptsListChanged())
        return answer(text(f"test_dynamic_prompt is now at revision {self.prompt_revision}."))

    # --- the prompts --------------------------------------------------------------

    async def simple_prompt(self, call: Call) -> list[types.PromptMessage]:
        return [user(text("This is a simple prompt for testing."))]

    async def prompt_with_arguments(self, call: Call) -> list[types.PromptMessage]:
        arg1, arg2 = call.arguments.get("arg1", ""), call.arguments.get("arg2", "")
        return [user(text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]

    async def prompt_with_embedded_resource(self, call: Call) -> list[types.PromptMessage]:
        uri = str(call.arguments.get("resourceUri", "test://example-resource"))
        return [
            user(embedded(uri, "text/plain", "Embedded resource content for testing.")),
            user(text("Please process the embedded resource above.")),
        ]

    async def prompt_with_image(self, call: Call) -> list[types.PromptMessage]:
        return [user(image()), user(text("Please analyze the image above."))]

    async def ir_prompt(self, call: Call) -> list[types.PromptMessage]:
        question = elicit("What context should the prompt use?", context=STRING)
        reply = (await call.ask({"user_context": question}))["user_context"]
        context = (reply.content or {}).get("context", "none given")
        return [user(text(f"Work within this context: {context}"))]

    # --- the resources ------------------------------------------------------------

    RESOURCES = (
        ("test://static-text", "static-text", "A fixed text.", "text/plain"),
        ("test://static-binary", "static-binary", "A fixed 1x1 PNG.", "image/png"),
        (
            "test://watched-resource",
            "watched-resource",
            "A text clients subscribe to.",
            "text/plain",
        ),
    )
    TEMPLATE = "test://template/{id}/data"

    def read(self, uri: str) -> types.TextResourceContents | types.BlobResourceContents:
        if uri == "test://static-text":
            return types.TextResourceContents(
                uri=uri,
                mime_type="text/plain",
                text="This is the content of the static text resource.",
            )
        if uri == "test://static-binary":
            return types.BlobResourceContents(uri=uri, mime_type="image/png", blob=b64(PNG))
        if uri == "test://watched-resource":
            return types.TextResourceContents(
                uri=uri, mime_type="text/plain", text="Nothing has changed here yet."
            )
        prefix, suffix = "test://template/", "/data"
        if uri.startswith(prefix) and uri.endswith(suffix) and len(uri) > len(prefix + suffix):
            item = uri[len(prefix) : -len(suffix)]
            body = {"id": item, "templateTest": True, "data": f"Data for ID: {item}"}
            return types.TextResourceContents(
                uri=uri, mime_type="application/json", text=json.dumps(body)
            )
        # SEP-2164: an unknown resource is -32602 naming it, never empty contents.
        raise MCPError(code=types.INVALID_PARAMS, message="Resource not found", data={"uri": uri})

    # --- the handlers the SDK calls -----------------------------------------------

    async def on_list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tool_list())

    async def on_call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        tool = self.tools.get(params.name)
        if tool is None:
            if params.name == "test_dynamic_tool":
                return answer(text(f"Revision {self.tool_revision}."))
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        try:
            return await tool.run(Call.of(ctx, params))
        except NeedInput as need:
            return need.result

    async def on_list_prompts(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=self.prompt_list())

    async def on_get_prompt(
        self, ctx: Context, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        prompt = self.prompts.get(params.name)
        if prompt is None:
            if params.name == "test_dynamic_prompt":
                return types.GetPromptResult(
                    messages=[user(text(f"Revision {self.prompt_revision}."))]
                )
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        missing = [arg for arg in prompt.arguments if arg not in (params.arguments or {})]
        if missing:
            raise MCPError(
                code=types.INVALID_PARAMS, message=f"Missing arguments: {', '.join(missing)}"
            )
        try:
            messages = await prompt.run(Call.of(ctx, params))
        except NeedInput as need:
            return need.result
        return types.GetPromptResult(description=prompt.description, messages=messages)

    async def on_list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(
            resources=[
                types.Resource(uri=uri, name=name, description=description, mime_type=mime)
                for uri, name, description, mime in self.RESOURCES
            ]
        )

    async def on_list_resource_templates(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        template = types.ResourceTemplate(
            uri_template=self.TEMPLATE,
            name="template-data",
            description="JSON naming the id in its URI.",
            mime_type="application/json",
        )
        return types.ListResourceTemplatesResult(resource_templates=[template])

    async def on_read_resource(
        self, ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return types.ReadResourceResult(contents=[self.read(str(params.uri))])

    async def on_subscribe(
        self, ctx: Context, params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        self.subscribed.add(str(params.uri))
        return types.EmptyResult()

    async def on_unsubscribe(
        self, ctx: Context, params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self.subscribed.discard(str(params.uri))
        return types.EmptyResult()

    async def on_set_logging_level(
        self, ctx: Context, params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        return types.EmptyResult()  # accepted; the suite asks no more of it

    async def on_completion(
        self, ctx: Context, params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        return types.CompleteResult(completion=types.Completion(values=[], total=0, has_more=False))


def build_server(fixture: Fixture) -> Server[Any]:
    server: Server[Any] = Server(
        NAME,
        version="1.0.0",
        get_tool_input_schema=fixture.input_schema,
        on_list_tools=fixture.on_list_tools,
        on_call_tool=fixture.on_call_tool,
        on_list_prompts=fixture.on_list_prompts,
        on_get_prompt=fixture.on_get_prompt,
        on_list_resources=fixture.on_list_resources,
        on_list_resource_templates=fixture.on_list_resource_templates,
        on_read_resource=fixture.on_read_resource,
        on_subscribe_resource=fixture.on_subscribe,
        on_unsubscribe_resource=fixture.on_unsubscribe,
        on_subscriptions_listen=ListenHandler(fixture.bus),
        on_set_logging_level=fixture.on_set_logging_level,
        on_completion=fixture.on_completion,
    )
    # Seals requestState on the way out and verifies it on the way in (a process-local
    # key: state from before a restart is refused, as it should be).
    server.middleware.append(
        RequestStateBoundary(RequestStateSecurity.ephemeral(), default_audience=NAME)
    )
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the loopback port to serve on")
    args = parser.parse_args(argv)
    app = build_server(Fixture()).streamable_http_app(
        event_store=ReplayLog(), retry_interval=RETRY_MS, host="127.0.0.1"
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
