#!/usr/bin/env bash
# Several orderflow replicas on one PostgreSQL database, as local processes:
# the topology of deploy/compose.yaml without containers, for tests, demos
# and scripts/bench-coherence.sh.
#
#   scripts/cluster.sh up [N]     start N replicas (default 3), release build
#   scripts/cluster.sh status     each replica's readiness and order-cache health
#   scripts/cluster.sh down       SIGTERM every replica and wait for it
#
# Replica i (1..N) serves gRPC on 127.0.0.1:$((50060 + i)) and metrics on
# 127.0.0.1:$((9470 + i)); logs and pids live in .cluster/. The database is
# $CLUSTER_DATABASE_URL (default: schema `cluster` of the local `test`
# database, created if missing). Every replica runs the order cache's change
# feed, so a write through one is read through the others, and they share one
# JetStream stream for acknowledged ingest ($ORDERFLOW_EVENT_LOG, default the
# local NATS, started if down; stream $ORDERFLOW_NATS_STREAM, default
# CLUSTER_<schema>).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cluster
base=${CLUSTER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
schema=${CLUSTER_SCHEMA:-cluster}
bin=${ORDERFLOW_BIN:-target/release/orderflow}
export ORDERFLOW_EVENT_LOG=${ORDERFLOW_EVENT_LOG:-nats://127.0.0.1:4222}
export ORDERFLOW_NATS_STREAM=${ORDERFLOW_NATS_STREAM:-CLUSTER_${schema^^}}

url() {
    case "$base" in
        *\?*) echo "$base&options=-c%20search_path%3D$schema" ;;
        *) echo "$base?options=-c%20search_path%3D$schema" ;;
    esac
}

up() {
    local n=${1:-3}
    [ -n "${ORDERFLOW_BIN:-}" ] || cargo build --quiet --release -p server
    case "$ORDERFLOW_EVENT_LOG" in nats://127.0.0.1:4222) scripts/ensure-nats.sh ;; esac
    mkdir -p "$dir"
    PGOPTIONS="-c client_min_messages=warning" psql -q "$base" -c "CREATE SCHEMA IF NOT EXISTS $schema" >/dev/null
    # Migrate once before the replicas race to (they would serialise on the
    # advisory lock anyway).
    DATABASE_URL=$(url) "$bin" migrate >"$dir/migrate.log" 2>&1
    for i in $(seq 1 "$n"); do
        if [ -f "$dir/replica-$i.pid" ] && kill -0 "$(cat "$dir/replica-$i.pid")" 2>/dev/null; then
            echo "replica $i already running (pid $(cat "$dir/replica-$i.pid"))"
            continue
        fi
        env DATABASE_URL="$(url)" \
            ORDERFLOW_LISTEN="127.0.0.1:$((50060 + i))" \
            ORDERFLOW_METRICS_LISTEN="127.0.0.1:$((9470 + i))" \
            ORDERFLOW_LOG_FORMAT=json RUST_LOG="${RUST_LOG:-info}" \
            "$bin" >"$dir/replica-$i.log" 2>&1 &
        echo $! >"$dir/replica-$i.pid"
    done
    for i in $(seq 1 "$n"); do
        wait_serving "$i"
        echo "replica $i: http://127.0.0.1:$((50060 + i)) (metrics 127.0.0.1:$((9470 + i))/metrics, pid $(cat "$dir/replica-$i.pid"))"
    done
}

wait_serving() { # replica index
    local i=$1
    for _ in $(seq 1 150); do
        if ORDERFLOW_LISTEN="127.0.0.1:$((50060 + i))" "$bin" health --service order-cache >/dev/null 2>&1 &&
            ORDERFLOW_LISTEN="127.0.0.1:$((50060 + i))" "$bin" health >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    echo "replica $i did not become ready; its log:" >&2
    tail -20 "$dir/replica-$i.log" >&2
    exit 1
}

status() {
    for pidfile in "$dir"/replica-*.pid; do
        [ -e "$pidfile" ] || { echo "no replicas"; return 0; }
        local i=${pidfile##*replica-}
        i=${i%.pid}
        local listen="127.0.0.1:$((50060 + i))"
        local ready cache
        ready=$(ORDERFLOW_LISTEN=$listen "$bin" health 2>&1 >/dev/null && echo SERVING || echo NOT_SERVING)
        cache=$(ORDERFLOW_LISTEN=$listen "$bin" health --service order-cache 2>&1 >/dev/null && echo SERVING || echo NOT_SERVING)
        echo "replica $i ($listen, pid $(cat "$pidfile")): readiness $ready, order-cache $cache"
    done
}

down() {
    for pidfile in "$dir"/replica-*.pid; do
        [ -e "$pidfile" ] || continue
        local pid
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$pidfile"
    done
    echo "cluster down"
}

case "${1:-}" in
    up) up "${2:-3}" ;;
    status) status ;;
    down) down ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
