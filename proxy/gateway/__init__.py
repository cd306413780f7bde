"""The gateway: the core that sits between client sessions and their servers.

``core`` owns the sessions, the policy, the audit log and the servers; ``modern`` is what
the 2026-07-28 era adds (its requests, envelope and results, the pool of upstreams its
clients use, input-required rounds); ``pipeline`` is the
tools/call pipeline (decide, ask, record, send, inspect the result, record the outcome);
``pins`` holds each server's tool definitions as accepted and what is held; ``secretscan``
finds secrets in a result; ``session`` is one
client on one server; ``approvals`` holds the calls waiting for a person; ``events`` is
what the gateway tells its front ends; ``_sdk`` is every use of the SDK's private parts.
"""
