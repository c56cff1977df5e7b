#!/usr/bin/env bash
# Install the Debian packages atnb's devnet and tests need, when missing:
# PostgreSQL (the AppView's database), Chromium (browser tests),
# gnome-keyring and D-Bus (a real Secret Service for keyring tests),
# Node.js/npm (to install the pinned devnet packages) and a C++ toolchain
# (better-sqlite3 builds from source).
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb || missing+=(postgresql)
have /usr/bin/chromium || missing+=(chromium)
have gnome-keyring-daemon || missing+=(gnome-keyring)
have dbus-daemon || missing+=(dbus)
have dbus-run-session || missing+=(dbus-daemon)
have npm || missing+=(nodejs npm)
have g++ || missing+=(g++ make)
have runuser || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
