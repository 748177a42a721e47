#!/bin/sh
# InfluxDB 1.x with authentication for wardwatch: the admin, the database, a write-only user for ingest
# and a read-only user for dashboards and the console. Idempotent (existing users get the given password
# and exactly the given privilege). Needs curl and influxdb.conf's `auth-enabled = true`.
#
#   INFLUX_URL=http://127.0.0.1:8086 INFLUX_ADMIN_PASSWORD=... INGEST_PASSWORD=... READER_PASSWORD=... \
#       ./setup-users.sh
#
# Optional: INFLUX_ADMIN_USER (admin), INFLUX_DATABASE (wardwatch), INGEST_USER (ingest), READER_USER (reader).
# Then make the schema as the admin, once: WARDWATCH_INFLUX__USERNAME=admin WARDWATCH_INFLUX__PASSWORD=... \
#     wardwatch ingest schema --config /etc/wardwatch/ingest.toml
set -eu
url=${INFLUX_URL:-http://127.0.0.1:8086}
admin=${INFLUX_ADMIN_USER:-admin}
db=${INFLUX_DATABASE:-wardwatch}
ingest=${INGEST_USER:-ingest}
reader=${READER_USER:-reader}
for var in INFLUX_ADMIN_PASSWORD INGEST_PASSWORD READER_PASSWORD; do
    eval "value=\${$var:-}"
    if [ -z "$value" ]; then
        echo "setup-users.sh: set $var (e.g. $var=\$(openssl rand -hex 16))" >&2
        exit 2
    fi
done
quote() { printf "'%s'" "$(printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g")"; }

# q STATEMENT [anonymous]: run one InfluxQL statement; print the JSON answer; fail on an error
q() {
    if [ "${2:-}" = anonymous ]; then
        out=$(curl -sS -X POST "$url/query" --data-urlencode "q=$1")
    else
        out=$(curl -sS -X POST "$url/query" -u "$admin:$INFLUX_ADMIN_PASSWORD" --data-urlencode "q=$1")
    fi
    case $out in
        *'"error"'*) printf '%s\n' "$out"; return 1 ;;
    esac
    printf '%s\n' "$out"
}

# The first user may be made without credentials (only while there is none); afterwards the admin must log in.
q "CREATE USER \"$admin\" WITH PASSWORD $(quote "$INFLUX_ADMIN_PASSWORD") WITH ALL PRIVILEGES" anonymous >/dev/null || true
if ! q "SHOW USERS" >/dev/null; then
    echo "setup-users.sh: admin $admin cannot log in to $url: check INFLUX_ADMIN_PASSWORD" >&2
    exit 1
fi
q "CREATE DATABASE \"$db\"" >/dev/null
for pair in "$ingest:WRITE:$INGEST_PASSWORD" "$reader:READ:$READER_PASSWORD"; do
    user=${pair%%:*}
    rest=${pair#*:}
    privilege=${rest%%:*}
    password=${rest#*:}
    if ! q "CREATE USER \"$user\" WITH PASSWORD $(quote "$password")" >/dev/null 2>&1; then
        q "SET PASSWORD FOR \"$user\" = $(quote "$password")" >/dev/null
    fi
    q "REVOKE ALL ON \"$db\" FROM \"$user\"" >/dev/null
    q "GRANT $privilege ON \"$db\" TO \"$user\"" >/dev/null
    echo "$user: $privilege on $db"
done
