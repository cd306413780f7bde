#!/usr/bin/env bash
# Install the Lockgate bundle this script sits in, for the current user only (no root):
#   ~/.local/opt/lockgate/           the bundle (replaced if there was one)
#   ~/.local/bin/lockgate            a symbolic link to its executable
#   ~/.local/share/applications/lockgate.desktop   the menu entry
#   ~/.local/share/icons/hicolor/*/apps/lockgate.* the icon
#
#   ./install.sh               install (or update)
#   ./install.sh --uninstall   remove exactly those (your policy, servers and log stay)
#
# PREFIX (default ~/.local) moves all of it.
set -euo pipefail

PREFIX=${PREFIX:-$HOME/.local}
HERE=$(cd "$(dirname "$0")" && pwd -P)
OPT=$PREFIX/opt/lockgate
BIN=$PREFIX/bin
SHARE=$PREFIX/share
ICONS=$SHARE/icons/hicolor

refresh() {  # menus and icon caches, where the desktop has the tools for it
    if command -v update-desktop-database >/dev/null; then
        update-desktop-database -q "$SHARE/applications" 2>/dev/null || true
    fi
    if command -v gtk-update-icon-cache >/dev/null && [ -f "$ICONS/index.theme" ]; then
        gtk-update-icon-cache -q -t "$ICONS" 2>/dev/null || true
    fi
}

if [ "${1:-}" = "--uninstall" ]; then
    if [ -L "$BIN/lockgate" ]; then rm -f "$BIN/lockgate"; fi
    rm -f "$SHARE/applications/lockgate.desktop"
    rm -f "$ICONS"/*/apps/lockgate.png "$ICONS/scalable/apps/lockgate.svg"
    rm -rf "$OPT"
    refresh
    echo "Lockgate removed. Its settings and audit log stay: \`lockgate paths\` showed where."
    exit 0
fi
if [ $# -gt 0 ]; then
    echo "usage: $0 [--uninstall]" >&2
    exit 2
fi
if [ ! -x "$HERE/lockgate" ] || [ ! -d "$HERE/_internal" ]; then
    echo "$HERE does not hold a Lockgate bundle (lockgate and _internal/)" >&2
    exit 1
fi

if [ "$HERE" != "$(cd "$OPT" 2>/dev/null && pwd -P)" ]; then
    mkdir -p "$PREFIX/opt"
    rm -rf "$OPT.new"
    cp -a "$HERE" "$OPT.new"  # -a keeps the bundle's symbolic links
    rm -rf "$OPT"
    mv "$OPT.new" "$OPT"
fi
mkdir -p "$BIN" "$SHARE/applications"
ln -sfn "$OPT/lockgate" "$BIN/lockgate"
# The menu entry names the executable by its full path: a desktop session's PATH often
# lacks ~/.local/bin until the next login.
sed -e "s|^Exec=lockgate|Exec=$OPT/lockgate|" -e "s|^TryExec=lockgate|TryExec=$OPT/lockgate|" \
    "$OPT/share/applications/lockgate.desktop" > "$SHARE/applications/lockgate.desktop"
mkdir -p "$ICONS"
cp -R "$OPT/share/icons/hicolor/." "$ICONS/"
refresh

echo "Lockgate installed in $OPT."
case ":$PATH:" in
    *":$BIN:"*) echo "Run \`lockgate\` for the app, or \`lockgate --help\`." ;;
    *) echo "$BIN is not on your PATH: add it, or run $BIN/lockgate." ;;
esac
