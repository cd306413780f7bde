"""The policy engine: what policy.json says, and the verdict it gives each call.

Pure and synchronous (no I/O but the store's file reads): ``model`` parses and validates the
file, ``patterns`` matches tool names, ``argschema`` checks arguments (ECMA-262 patterns),
``decide`` gives the verdict, ``limits`` counts rate limits, ``store`` holds the policy in
force and its last good copy, ``edit`` changes the file in place for a click, ``starter``
writes a first policy, ``risk`` guesses how dangerous a tool is, ``replay`` decides the
recorded calls of a period under a candidate policy and the one in force.
"""
