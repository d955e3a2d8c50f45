#!/bin/sh
# Makes what deploy/secure/docker-compose.yml mounts from ./material: a
# development CA and certificates (named after the compose services), the
# cluster's signing key, one NATS nkey per role, the nats-server
# configuration and the HTTP API's token. Run it once from the repository
# root: deploy/secure/setup.sh; then docker compose -f
# deploy/secure/docker-compose.yml up. Use your own CA in production.
set -eu
cd "$(dirname "$0")"
SLUICE=${SLUICE:-"go run ../../cmd/sluice"}
mkdir -p material
cd material
$SLUICE security certs --dir certs nats coordinator-a coordinator-b coordinator-c worker admin
[ -f cluster-key/cluster.key ] || $SLUICE security cluster-key --dir cluster-key
$SLUICE security nats-config --keys nats-keys --store-dir /data \
  --tls-cert /secure/certs/nats.crt --tls-key /secure/certs/nats.key \
  --tls-ca /secure/certs/ca.crt --tls-verify > nats.conf
[ -f api-token ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > api-token)
# The containers run as uid 65532: let it read what they need.
chmod -R a+rX . 2>/dev/null || true
echo "material in $(pwd); the HTTP API's token is in api-token"
