"""PySide6.QtGui, as PyInstaller's own hook collects it, less the Qt plugins Lockgate never
loads. A plugin left in the bundle also pulls in every library it links: the GTK 3 theme
plugin alone brings GTK, GDK, ATK, Cairo and Pango from the build machine (about 20 MB),
and the embedded-display platforms (eglfs, linuxfb, vnc) their own Qt libraries.

Kept on Linux: the xcb, wayland, offscreen and minimal platforms, the XDG desktop portal
theme, input contexts, xcb GL integrations, and the SVG, ICO, ICNS, PNG (built in), JPEG and GIF
image formats. Other platforms' plugins (windows, cocoa) are untouched.
"""

from __future__ import annotations

from pathlib import PurePath

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

_DROP_DIRS = {"egldeviceintegrations", "generic"}
_DROP = {
    "platforms": ("qeglfs", "qlinuxfb", "qvnc", "qvkkhrdisplay", "qminimalegl"),
    "platformthemes": ("qgtk3",),
    "imageformats": ("qpdf", "qtiff", "qwebp", "qtga", "qwbmp"),
}


def _wanted(src: str, dest: str) -> bool:
    folder = PurePath(dest).name
    if PurePath(dest).parent.name != "plugins":
        return True
    if folder in _DROP_DIRS:
        return False
    stem = PurePath(src).name.removeprefix("lib").split(".")[0]
    return stem not in _DROP.get(folder, ())


hiddenimports, binaries, datas = add_qt6_dependencies(__file__)
binaries = [(src, dest) for src, dest in binaries if _wanted(src, dest)]
