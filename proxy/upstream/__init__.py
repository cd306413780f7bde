"""The server side: connections from the gateway to the MCP servers it guards.

``connection`` opens one (stdio or HTTP) and speaks to it; ``pipelink`` is the fast
JSON-RPC engine on a stdio server's pipes; ``process`` starts and stops a stdio server's
process tree; ``catalog`` asks each server for its tools on its own connection;
``oauth`` signs in to a remote server that asks for it (the SDK's OAuth client, once) and
keeps its tokens fresh for every session (``TokenKeeper``, ``KeeperAuth``).
"""
