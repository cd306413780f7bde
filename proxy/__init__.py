"""Lockgate's proxy: the gateway between MCP clients and their servers, with no Qt.

The map (docs/architecture.md has the picture and the path of one call):

- :mod:`proxy.doors`: where clients come in: streamable HTTP (``http``, with its event
  store for resumable streams, ``resume``), the Unix
  socket (``local``, with its ``connect`` and ``control`` doors and the ``fastlane``),
  ``oversize`` (a message over the size limit, at either door), and ``serve``, which
  assembles a gateway with its doors.
- :mod:`proxy.gateway`: the core (``core``), the 2026-07-28 era (``modern``), the
  tools/call ``pipeline``, tool ``pins``, the ``secretscan`` of results, sessions,
  ``approvals``, ``events``, and ``control``, the one façade for front ends.
- :mod:`proxy.policy`: the policy engine: policy.json, patterns, argument schemas,
  decisions, rate limits, the policy in force, edits, the starter policy, risk, and
  ``poison`` (tool-poisoning findings in what servers say of their tools).
- :mod:`proxy.upstream`: connections to the real servers (PipeLink on stdio, the SDK's
  dispatcher on HTTP), their processes, the tool catalog, and the OAuth sign-in of
  remote servers.
- :mod:`proxy.audit`: the write-ahead audit log and redaction.
- :mod:`proxy.config`: paths, servers.json, settings.json, secrets (and OAuth sign-ins
  in the keyring), tokens, run info,
  the one-per-user instance lock, file watching, autostart, atomic writes, JSON text
  positions.
- :mod:`proxy.bridge`: the light client side of the socket (``lockgate connect``, fd
  passing or a relay, and the control client).
- :mod:`proxy.clients`: the MCP clients installed here, routed and put back.
- :mod:`proxy.cli`: the ``lockgate`` command line.
- :mod:`proxy.errors`: ``LockgateError``, the base of every error a person sees.
"""
