"""Runtime hook: the programs Lockgate starts get the user's environment, not the bundle's.

Before Python starts, PyInstaller's bootloader points ``LD_LIBRARY_PATH`` at the bundle's
private libraries (saving the user's own value in ``LD_LIBRARY_PATH_ORIG``), and leaves
``_PYI_*`` variables for itself. The dynamic loader read the path when the process started,
so changing it here only changes what children inherit. Lockgate's children are the MCP
servers in servers.json (node, npx, uvx, python, docker, ...) and whatever Qt starts, such
as the editor that "Open policy.json" opens through xdg-open. None of them may load this
bundle's libssl, libstdc++ or libglib in place of their own. ``PYINSTALLER_RESET_ENVIRONMENT``
tells a child that is itself a PyInstaller program (even another ``lockgate``) to start as
a program of its own rather than as part of this one.
"""


def _give_children_the_users_environment() -> None:
    import os  # noqa: PLC0415 (a runtime hook keeps its names out of the app's globals)

    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)
    os.environ["PYINSTALLER_RESET_ENVIRONMENT"] = "1"


_give_children_the_users_environment()
del _give_children_the_users_environment
