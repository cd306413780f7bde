"""The gateway: the core that sits between client sessions and their servers.

``core`` owns the sessions, the policy, the audit log and the servers; ``pipeline`` is the
tools/call pipeline (decide, ask, record, send, record the outcome); ``session`` is one
client on one server; ``approvals`` holds the calls waiting for a person; ``events`` is
what the gateway tells its front ends; ``_sdk`` is every use of the SDK's private parts.
"""
