"""Lockgate's Qt application (tray, windows, approvals). Imports ``proxy``; never the reverse."""
