#!/usr/bin/env bash
# Install the wardwatch gateway on Raspberry Pi OS (Bookworm or later; Pi 3/4/5, Zero 2 W). Run as root.
#
#   sudo deploy/gateway/install.sh [WHEEL_OR_SOURCE]     (default: this checkout)
#
# Idempotent: re-running upgrades the package and keeps the config and the queue.
set -euo pipefail

SOURCE=${1:-"$(cd "$(dirname "$0")/../.." && pwd)"}
VENV=/opt/wardwatch/venv
CONFIG_DIR=/etc/wardwatch
UNIT=/etc/systemd/system/wardwatch-gateway.service
HERE="$(cd "$(dirname "$0")" && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo)" >&2
    exit 1
fi

echo "install: Debian packages (bluez, python3-venv, sqlite3)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends bluez python3-venv python3-pip sqlite3 >/dev/null
systemctl enable --now bluetooth >/dev/null 2>&1 || true
# A synchronised clock matters: every reading is time-stamped by it.
systemctl enable --now systemd-timesyncd >/dev/null 2>&1 || true

echo "install: service user 'wardwatch' (group bluetooth for BlueZ over D-Bus)"
if ! id wardwatch >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/wardwatch-gateway --no-create-home --shell /usr/sbin/nologin wardwatch
fi
usermod -a -G bluetooth wardwatch

echo "install: virtualenv $VENV with wardwatch[gateway]"
mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q --upgrade "${SOURCE}[gateway]" 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q --upgrade "wardwatch[gateway] @ file://${SOURCE}"

echo "install: config in $CONFIG_DIR"
install -d -m 0750 -o root -g wardwatch "$CONFIG_DIR"
if [ ! -f "$CONFIG_DIR/gateway.toml" ]; then
    install -m 0640 -o root -g wardwatch "$HERE/gateway.example.toml" "$CONFIG_DIR/gateway.toml"
    echo "install: EDIT $CONFIG_DIR/gateway.toml (gateway_id, ward, broker, devices: see 'wardwatch gateway scan')"
fi
if [ ! -f "$CONFIG_DIR/gateway.env" ]; then
    install -m 0640 -o root -g wardwatch /dev/null "$CONFIG_DIR/gateway.env"
    echo "# WARDWATCH_MQTT__PASSWORD=..." >"$CONFIG_DIR/gateway.env"
fi

echo "install: systemd unit"
install -m 0644 "$HERE/wardwatch-gateway.service" "$UNIT"
systemctl daemon-reload
systemctl enable wardwatch-gateway >/dev/null
if "$VENV/bin/wardwatch" gateway check --config "$CONFIG_DIR/gateway.toml"; then
    systemctl restart wardwatch-gateway
    echo "install: running. Logs: journalctl -u wardwatch-gateway -f"
else
    echo "install: the service is enabled but not started until the config is valid"
fi
