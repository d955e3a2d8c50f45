#!/usr/bin/env bash
# Starts a 3-node NATS cluster with JetStream on loopback from the nats-server
# binary (make services builds it into bin/), for trying a real cluster by hand:
#   deploy/nats-cluster.sh start|stop
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SLUICE_NATS_DIR:-.sluice/nats-cluster}
case "${1:-start}" in
start)
  mkdir -p "$dir"
  for i in 1 2 3; do
    "$PWD/bin/nats-server" -n "n$i" -a 127.0.0.1 -p $((4221 + i)) -js -sd "$dir/n$i" \
      --cluster_name sluice --cluster "nats://127.0.0.1:$((6221 + i))" \
      --routes nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224 \
      -l "$dir/n$i.log" -P "$dir/n$i.pid" &
  done
  echo "NATS cluster: nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
  ;;
stop)
  for i in 1 2 3; do [ -f "$dir/n$i.pid" ] && kill "$(cat "$dir/n$i.pid")" 2>/dev/null || true; done
  ;;
esac
