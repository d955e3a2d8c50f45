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
max_replication_slots = 10
max_wal_senders = 10"
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
if [ "$(pg_psql -c 'show wal_level')" != logical ]; then
  echo "services: restarting PostgreSQL $pg_ver for wal_level = logical"
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
