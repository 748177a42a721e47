#!/bin/sh
# Write .env from .env.example: MQTT passwords from broker/credentials/, fresh random InfluxDB and
# Grafana secrets. Run after `wardwatch broker init ./broker --host HOST ...`, from this folder.
# Usage: ./make-env.sh [BROKER_DIR] [MQTT_HOST]    (defaults: ./broker, mqtt.example.org)
set -eu
broker=${1:-./broker}
host=${2:-mqtt.example.org}
if [ -e .env ]; then
    echo "make-env.sh: .env exists; not overwriting it" >&2
    exit 1
fi
password() {
    file="$broker/credentials/$1.toml"
    value=$(sed -n 's/^password = "\(.*\)"$/\1/p' "$file")
    if [ -z "$value" ]; then
        echo "make-env.sh: no password in $file (run wardwatch broker init first)" >&2
        exit 1
    fi
    printf '%s' "$value"
}
random() { openssl rand -hex "$1"; }
ingest=$(password ingest)
alerting=$(password alerting)
probe=$(password healthcheck)
admin=$(random 16)
token=$(random 32)
grafana=$(random 16)
umask 077
sed -e "s|^MQTT_HOST=.*|MQTT_HOST=$host|" \
    -e "s|^INGEST_MQTT_PASSWORD=.*|INGEST_MQTT_PASSWORD=$ingest|" \
    -e "s|^ALERTING_MQTT_PASSWORD=.*|ALERTING_MQTT_PASSWORD=$alerting|" \
    -e "s|^PROBE_MQTT_PASSWORD=.*|PROBE_MQTT_PASSWORD=$probe|" \
    -e "s|^INFLUX_ADMIN_PASSWORD=.*|INFLUX_ADMIN_PASSWORD=$admin|" \
    -e "s|^INFLUX_TOKEN=.*|INFLUX_TOKEN=$token|" \
    -e "s|^GRAFANA_ADMIN_PASSWORD=.*|GRAFANA_ADMIN_PASSWORD=$grafana|" \
    .env.example > .env
echo "wrote .env (mode 0600)"
