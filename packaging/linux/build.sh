#!/usr/bin/env bash
# Build Lockgate's Linux bundle with PyInstaller (one folder, no Python needed to run it).
#
#   packaging/linux/build.sh [--dist DIR] [--work DIR] [--tarball]
#
#   --dist DIR   where the bundle goes (default dist): DIR/lockgate/lockgate
#   --work DIR   PyInstaller's build folder (default build/pyinstaller)
#   --tarball    also pack DIR/lockgate-VERSION-linux-ARCH.tar.gz (unpack, run lockgate/install.sh)
#
# Uses the project's venv (LOCKGATE_VENV, default .venv; created if missing) and installs
# PyInstaller into it if it is not there. The bundle folder holds:
#   lockgate                    the executable: the tray app alone, the command line with a command
#   _internal/                  Python, Qt and the libraries (PyInstaller's layout)
#   share/applications/lockgate.desktop, share/icons/hicolor/...   the menu entry and icon
#   install.sh                  puts it in ~/.local (see that script)
set -euo pipefail
cd "$(dirname "$0")/../.."

DIST=dist
WORK=build/pyinstaller
TARBALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dist) DIST=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --tarball) TARBALL=1; shift ;;
        *) echo "usage: $0 [--dist DIR] [--work DIR] [--tarball]" >&2; exit 2 ;;
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
say "building Lockgate $VERSION into $DIST/lockgate"
start=$(date +%s)
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" packaging/lockgate.spec

BUNDLE=$DIST/lockgate
mkdir -p "$BUNDLE/share/applications" "$BUNDLE/share/icons"
cp packaging/linux/lockgate.desktop "$BUNDLE/share/applications/lockgate.desktop"
"$PY" packaging/icons.py hicolor "$BUNDLE/share/icons"
cp packaging/linux/install.sh "$BUNDLE/install.sh"
chmod 755 "$BUNDLE/install.sh"
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate --no-hints "$BUNDLE/share/applications/lockgate.desktop"
fi

# The bundle must run on its own: a quick look before anyone ships it.
"$BUNDLE/lockgate" --version >/dev/null

say "built $BUNDLE in $(($(date +%s) - start)) s, $(du -sh "$BUNDLE" | cut -f1)"

if [ "$TARBALL" = 1 ]; then
    archive="$DIST/lockgate-$VERSION-linux-$(uname -m).tar.gz"
    # tar keeps the symbolic links PyInstaller's one-folder layout relies on
    tar -C "$DIST" -czf "$archive" lockgate
    say "packed $archive ($(du -h "$archive" | cut -f1))"
fi
