"""Render Lockgate's icon (resources/lockgate.svg) into what each platform's package needs.

    python packaging/icons.py hicolor DIR   # DIR/hicolor/{scalable,NxN}/apps/lockgate.*
    python packaging/icons.py ico FILE      # Windows: one .ico with 16 to 256 px images
    python packaging/icons.py iconset DIR   # macOS: DIR/*.png for `iconutil -c icns DIR`

Qt (PySide6, already a dependency) draws the SVG; nothing else is needed.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice  # noqa: TID251
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: TID251
from PySide6.QtSvg import QSvgRenderer  # noqa: TID251

SVG = Path(__file__).resolve().parent.parent / "resources" / "lockgate.svg"
HICOLOR_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def png(size: int) -> bytes:
    """The icon drawn at size x size pixels, as PNG bytes."""
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        raise SystemExit(f"cannot read {SVG}")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(0)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise SystemExit("Qt could not write PNG")
    buffer.close()
    return bytes(data.data())


def hicolor(root: Path) -> None:
    """The freedesktop icon theme layout, ready to copy into ~/.local/share/icons."""
    scalable = root / "hicolor" / "scalable" / "apps"
    scalable.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SVG, scalable / "lockgate.svg")
    for size in HICOLOR_SIZES:
        folder = root / "hicolor" / f"{size}x{size}" / "apps"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "lockgate.png").write_bytes(png(size))


def ico(path: Path) -> None:
    """A Windows icon: a header, one directory entry per size, then PNG-compressed images
    (which Windows reads for every size since Vista)."""
    images = [png(size) for size in ICO_SIZES]
    out = bytearray(struct.pack("<HHH", 0, 1, len(images)))
    offset = 6 + 16 * len(images)
    for size, data in zip(ICO_SIZES, images, strict=True):
        side = 0 if size >= 256 else size  # 0 means 256 in an ICO directory entry
        out += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
    for data in images:
        out += data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))


def iconset(folder: Path) -> None:
    """The PNGs macOS's iconutil turns into an .icns: each size at 1x and 2x."""
    folder.mkdir(parents=True, exist_ok=True)
    for size in (16, 32, 128, 256, 512):
        (folder / f"icon_{size}x{size}.png").write_bytes(png(size))
        (folder / f"icon_{size}x{size}@2x.png").write_bytes(png(size * 2))


def main(argv: list[str]) -> int:
    actions = {"hicolor": hicolor, "ico": ico, "iconset": iconset}
    if len(argv) != 2 or argv[0] not in actions:
        print(__doc__, file=sys.stderr)
        return 2
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    actions[argv[0]](Path(argv[1]))
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
