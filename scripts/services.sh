#!/usr/bin/env bash
# services.sh installs and starts what the test suite needs. It is
# idempotent: a second run only checks. Everything it installs comes from the
# Go module proxy (through this module's go.sum) or Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/bin"
mkdir -p "$bin"

command -v go >/dev/null || { echo "services: Go is not installed" >&2; exit 1; }

# nats-server binary, the same version the code embeds, for the multi-node
# NATS cluster tests in integration/.
want=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
if [ ! -x "$bin/nats-server" ] || ! "$bin/nats-server" --version 2>/dev/null | grep -q "${want#v}"; then
  echo "services: building nats-server $want into bin/"
  go build -o "$bin/nats-server" github.com/nats-io/nats-server/v2
fi
echo "services: nats-server $("$bin/nats-server" --version | awk '{print $NF}') ready"

# PostgreSQL 15 with logical replication, listening on 127.0.0.1, with the
# role "sluice" and the database "sluice_test" for the tests (SLUICE_TEST_PG,
# default postgres://sluice@127.0.0.1:5432/sluice_test?sslmode=disable).
# Loopback connections are trusted: this is a test server, never a product one.
pg_ver=15
pg_etc=/etc/postgresql/$pg_ver/main
pg_bin=/usr/lib/postgresql/$pg_ver/bin
if [ ! -x "$pg_bin/postgres" ] || [ ! -d "$pg_etc" ]; then
  echo "services: installing postgresql-$pg_ver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "postgresql-$pg_ver" >/dev/null
  [ -d "$pg_etc" ] || pg_createcluster "$pg_ver" main
fi

pg_conf_changed=0
mkdir -p "$pg_etc/conf.d"
pg_dropin="$pg_etc/conf.d/sluice.conf"
pg_want="# Written by sluice scripts/services.sh.
wal_level = logical
listen_addresses = '127.0.0.1'
max_replication_slots = 20
max_wal_senders = 20"
if [ "$(cat "$pg_dropin" 2>/dev/null)" != "$pg_want" ]; then
  printf '%s\n' "$pg_want" >"$pg_dropin"
  pg_conf_changed=1
fi
# postgresql.conf of Debian includes conf.d; make sure of it.
if ! grep -Eq "^[[:space:]]*include_dir[[:space:]]*=[[:space:]]*'conf.d'" "$pg_etc/postgresql.conf"; then
  echo "include_dir = 'conf.d'" >>"$pg_etc/postgresql.conf"
  pg_conf_changed=1
fi

# Trust lines go before the first "host" line: pg_hba.conf is read top down.
pg_hba="$pg_etc/pg_hba.conf"
for line in "host replication all 127.0.0.1/32 trust" "host all all 127.0.0.1/32 trust"; do
  if ! grep -Eq "^${line// /[[:space:]]+}[[:space:]]*$" "$pg_hba"; then
    awk -v l="$line" '!done && /^[[:space:]]*host/ { print l; done=1 } { print } END { if (!done) print l }' \
      "$pg_hba" >"$pg_hba.sluice" && cat "$pg_hba.sluice" >"$pg_hba" && rm -f "$pg_hba.sluice"
    pg_conf_changed=1
  fi
done

# psql as the postgres superuser over the local socket (peer authentication).
pg_psql() { runuser -u postgres -- "$pg_bin/psql" -X -q -t -A -v ON_ERROR_STOP=1 -d postgres "$@"; }
pg_running() { pg_ctlcluster "$pg_ver" main status >/dev/null 2>&1; }
if ! pg_running; then
  echo "services: starting PostgreSQL $pg_ver"
  pg_ctlcluster "$pg_ver" main start
elif [ "$pg_conf_changed" = 1 ]; then
  if [ "$(pg_psql -c 'show wal_level' 2>/dev/null)" != logical ]; then
    echo "services: restarting PostgreSQL $pg_ver for wal_level = logical"
    pg_ctlcluster "$pg_ver" main restart
  else
    pg_ctlcluster "$pg_ver" main reload
  fi
fi
for _ in $(seq 1 100); do
  "$pg_bin/pg_isready" -q -h 127.0.0.1 -p 5432 && break
  sleep 0.1
done
"$pg_bin/pg_isready" -q -h 127.0.0.1 -p 5432 || { echo "services: PostgreSQL did not become ready" >&2; exit 1; }
# wal_level and the slot and sender counts take effect on a restart only
# (the test packages run beside each other, each holding a few slots).
if [ "$(pg_psql -c 'show wal_level')" != logical ] || [ "$(pg_psql -c 'show max_replication_slots')" != 20 ] ||
  [ "$(pg_psql -c 'show max_wal_senders')" != 20 ]; then
  echo "services: restarting PostgreSQL $pg_ver for wal_level = logical, max_replication_slots = 20, max_wal_senders = 20"
  pg_ctlcluster "$pg_ver" main restart
  for _ in $(seq 1 100); do "$pg_bin/pg_isready" -q -h 127.0.0.1 -p 5432 && break; sleep 0.1; done
fi
pg_state=$(pg_psql -c "select (select count(*) from pg_roles where rolname = 'sluice') || ',' || (select count(*) from pg_database where datname = 'sluice_test')")
if [ "${pg_state%,*}" = 0 ]; then
  pg_psql -c "create role sluice login superuser replication"
fi
if [ "${pg_state#*,}" = 0 ]; then
  pg_psql -c "create database sluice_test owner sluice"
fi
echo "services: PostgreSQL $pg_ver ready on 127.0.0.1:5432 (wal_level $(pg_psql -c 'show wal_level'), database sluice_test, role sluice)"

# ClickHouse for the clickhouse connector's tests and benchmark
# (SLUICE_TEST_CLICKHOUSE, default http://127.0.0.1:8123). Debian bookworm
# ships 18.16; it runs without systemd as the clickhouse user, from a
# configuration this script owns under /var/lib/sluice-clickhouse (data,
# logs, pid file beside it), listening on 127.0.0.1 only: HTTP 8123, native
# 9000 (for clickhouse-client). The default user has no password: a test
# server, never a product one.
ch_dir=/var/lib/sluice-clickhouse
ch_ready() { curl -fsS --max-time 2 'http://127.0.0.1:8123/?query=SELECT%20version()' 2>/dev/null; }
if [ ! -x /usr/sbin/clickhouse-server ] || ! command -v clickhouse-client >/dev/null || ! command -v curl >/dev/null; then
  echo "services: installing clickhouse-server and clickhouse-client"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clickhouse-server clickhouse-client curl >/dev/null
fi
ch_user=clickhouse
id "$ch_user" >/dev/null 2>&1 || ch_user=root
mkdir -p "$ch_dir"/{data,tmp,user_files,format_schemas,log}
ch_config="<?xml version=\"1.0\"?>
<!-- Written by sluice scripts/services.sh. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>$ch_dir/log/clickhouse-server.log</log>
        <errorlog>$ch_dir/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>8123</http_port>
    <tcp_port>9000</tcp_port>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$ch_dir/data/</path>
    <tmp_path>$ch_dir/tmp/</tmp_path>
    <user_files_path>$ch_dir/user_files/</user_files_path>
    <format_schema_path>$ch_dir/format_schemas/</format_schema_path>
    <users_config>$ch_dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>"
ch_users="<?xml version=\"1.0\"?>
<!-- Written by sluice scripts/services.sh. -->
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>"
ch_changed=0
[ "$(cat "$ch_dir/config.xml" 2>/dev/null)" = "$ch_config" ] || { printf '%s\n' "$ch_config" >"$ch_dir/config.xml"; ch_changed=1; }
[ "$(cat "$ch_dir/users.xml" 2>/dev/null)" = "$ch_users" ] || { printf '%s\n' "$ch_users" >"$ch_dir/users.xml"; ch_changed=1; }
chown -R "$ch_user": "$ch_dir"
ch_pid=$(cat "$ch_dir/clickhouse-server.pid" 2>/dev/null || true)
if [ "$ch_changed" = 1 ] && [ -n "$ch_pid" ] && kill -0 "$ch_pid" 2>/dev/null; then
  echo "services: restarting ClickHouse for its new configuration"
  kill "$ch_pid"
  for _ in $(seq 1 100); do kill -0 "$ch_pid" 2>/dev/null || break; sleep 0.1; done
fi
if ! ch_ready >/dev/null; then
  echo "services: starting ClickHouse"
  (cd "$ch_dir" && runuser -u "$ch_user" -- /usr/sbin/clickhouse-server --daemon \
    --config-file="$ch_dir/config.xml" --pid-file="$ch_dir/clickhouse-server.pid")
  for _ in $(seq 1 150); do ch_ready >/dev/null && break; sleep 0.2; done
fi
ch_version=$(ch_ready) || { echo "services: ClickHouse did not become ready (see $ch_dir/log/)" >&2; exit 1; }
echo "services: ClickHouse $ch_version ready on 127.0.0.1:8123 (HTTP) and :9000 (native), data in $ch_dir"

# versitygw v1.8.0, a real S3 server in Go, for the S3 tests of the files and
# iceberg connectors (SLUICE_TEST_S3, default http://127.0.0.1:7070). Built
# from the module proxy into bin/; it serves each subdirectory of
# /var/lib/sluice-versitygw/data as a bucket (the posix backend keeps object
# metadata in extended attributes), on 127.0.0.1 only, with the root
# credentials below: the tests pass them as AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY. A test server, never a product one.
vgw_ver=v1.8.0
vgw_dir=/var/lib/sluice-versitygw
vgw_addr=127.0.0.1:7070
vgw_access_key=sluice-test
vgw_secret_key=sluice-test-secret
vgw_have=$(go version -m "$bin/versitygw" 2>/dev/null | awk '$1 == "mod" { print $3 }' || true)
if [ "$vgw_have" != "$vgw_ver" ]; then
  echo "services: building versitygw $vgw_ver into bin/"
  GOBIN="$bin" go install "github.com/versity/versitygw/cmd/versitygw@$vgw_ver"
fi
mkdir -p "$vgw_dir/data"
# Any HTTP answer (an unsigned request gets 403) means the server is up.
vgw_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$vgw_addr/" 2>/dev/null)" != 000 ]; }
if ! vgw_ready; then
  echo "services: starting versitygw on $vgw_addr"
  ROOT_ACCESS_KEY="$vgw_access_key" ROOT_SECRET_KEY="$vgw_secret_key" \
    nohup "$bin/versitygw" --port "$vgw_addr" posix "$vgw_dir/data" >"$vgw_dir/versitygw.log" 2>&1 </dev/null &
  echo $! >"$vgw_dir/versitygw.pid"
  for _ in $(seq 1 100); do vgw_ready && break; sleep 0.1; done
fi
vgw_ready || { echo "services: versitygw did not become ready (see $vgw_dir/versitygw.log)" >&2; exit 1; }
echo "services: versitygw $vgw_ver ready on http://$vgw_addr (access key $vgw_access_key), buckets in $vgw_dir/data"

# Chromium from Debian for the web console's browser test (cmd/sluice
# TestConsoleInBrowser, driven with chromedp). The test finds it on PATH
# (or at SLUICE_TEST_CHROMIUM) and starts it headless itself; nothing runs
# here.
if ! command -v chromium >/dev/null; then
  echo "services: installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
echo "services: $(chromium --version 2>/dev/null | head -1) ready for the console test"

# iproute2 for the partition tests (integration/netsplit_test.go), which run
# every process in a network namespace of its own (`ip netns`, veth pairs,
# bridges) and need root.
if ! command -v ip >/dev/null || ! ip netns list >/dev/null 2>&1; then
  echo "services: installing iproute2"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq iproute2 >/dev/null
fi
echo "services: $(ip -V) ready for the partition tests"
