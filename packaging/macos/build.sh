#!/usr/bin/env bash
# Build Lockgate.app for macOS with PyInstaller.
#
# NOT RUN HERE: Lockgate's machines and CI are Linux, so this script has never run in CI.
# It needs a Mac with Python 3.11+ and the Xcode command line tools (iconutil, codesign,
# ditto); build on the oldest macOS you support, on the architecture you ship (a build
# is for the machine's own architecture: arm64 on Apple silicon, x86_64 on Intel).
#
#   packaging/macos/build.sh [--dist DIR] [--work DIR] [--zip]
#
#   --dist DIR   where the app goes (default dist): DIR/Lockgate.app
#   --work DIR   build folder (default build/macos)
#   --zip        also pack DIR/Lockgate-VERSION-macos-ARCH.zip (ditto keeps the symlinks)
#
# The app is a menu-bar app: Info.plist has LSUIElement=true, so no Dock icon and no menu
# bar of its own. Contents/MacOS/lockgate is also the command line: link it onto PATH
#   ln -s /Applications/Lockgate.app/Contents/MacOS/lockgate /usr/local/bin/lockgate
# and MCP clients launch `lockgate connect NAME` from there.
#
# The build signs ad hoc (PyInstaller's default; enough to run on the Mac that built it).
# To ship, set LOCKGATE_CODESIGN_IDENTITY="Developer ID Application: ..." and notarize the
# zip afterwards (xcrun notarytool submit ... --wait; xcrun stapler staple Lockgate.app).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(uname -s)" != Darwin ]; then
    echo "packaging/macos/build.sh builds on macOS only; on Linux use packaging/linux/build.sh" >&2
    exit 1
fi

DIST=dist
WORK=build/macos
ZIP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dist) DIST=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --zip) ZIP=1; shift ;;
        *) echo "usage: $0 [--dist DIR] [--work DIR] [--zip]" >&2; exit 2 ;;
    esac
done

VENV=${LOCKGATE_VENV:-.venv}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e .
fi
PY=$VENV/bin/python
if ! "$PY" -c 'import PyInstaller' 2>/dev/null; then
    say "installing PyInstaller into $VENV"
    "$PY" -m pip install -q "pyinstaller>=6.22"
fi
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

# The icon: Qt draws resources/lockgate.svg at every size an .icns holds, iconutil packs them.
mkdir -p "$WORK"
rm -rf "$WORK/lockgate.iconset"
"$PY" packaging/icons.py iconset "$WORK/lockgate.iconset"
iconutil -c icns -o "$WORK/lockgate.icns" "$WORK/lockgate.iconset"
ICON=$(cd "$WORK" && pwd -P)/lockgate.icns

say "building Lockgate $VERSION into $DIST/Lockgate.app"
LOCKGATE_ICON=$ICON "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$WORK/pyinstaller" packaging/lockgate.spec

APP=$DIST/Lockgate.app
PLIST=$APP/Contents/Info.plist
[ "$(/usr/libexec/PlistBuddy -c 'Print :LSUIElement' "$PLIST")" = true ] || {
    echo "$PLIST: LSUIElement is not true" >&2
    exit 1
}
"$APP/Contents/MacOS/lockgate" --version
codesign --verify --deep --strict "$APP"
say "built $APP ($(du -sh "$APP" | cut -f1))"

if [ "$ZIP" = 1 ]; then
    archive="$DIST/Lockgate-$VERSION-macos-$(uname -m).zip"
    rm -f "$archive"
    ditto -c -k --sequesterRsrc --keepParent "$APP" "$archive"
    say "packed $archive ($(du -h "$archive" | cut -f1))"
fi
