"""The client side of the local socket, kept light: a client launches it per server.

``connect`` is ``lockgate connect SERVER`` (hands the client's pipes to the gateway, or
relays their bytes where descriptors cannot be passed, or when ``LOCKGATE_BRIDGE=relay``);
``winpipe`` is the Windows end of the gateway's named pipe; ``control`` is the
request/answer client every command and the app's CLI use. Nothing here
imports the MCP SDK, the policy engine or Qt (tests/proxy/bridge/test_connect.py keeps it so).
"""
