"""The ``lockgate`` command line: ``main`` parses and dispatches to one module per group."""
