#!/usr/bin/env bash
# Cache-miss GetOrder capacity on PostgreSQL, to compare builds: the server
# (release build, ORDERFLOW_CACHE_CAPACITY=1, so every lookup misses) on
# CPU 0, loadgen on CPU 1, SECONDS per run, at 8, 32 and 128 requests in
# flight on one connection and on c/8 connections (the loop bench.sh's
# miss row runs). Prints one tab-separated line per run:
#   concurrency  connections  requests_per_second  p99_us
# PostgreSQL at ORDERFLOW_BENCH_PG (default postgres://postgres@127.0.0.1:5432);
# a scratch database `orderflow_bench_miss` is made and dropped.
#
# Usage: scripts/bench-miss.sh [SECONDS]   (default 10)
#        BIN_DIR=dir runs that directory's orderflow and loadgen instead of
#        building this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
pg=${ORDERFLOW_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
bin_dir=${BIN_DIR:-$PWD/target/release}
[ -n "${BIN_DIR:-}" ] || cargo build --quiet --release -p server -p loadgen
db=orderflow_bench_miss
psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
env DATABASE_URL="$pg/$db" ORDERFLOW_LISTEN="127.0.0.1:$port" \
    ORDERFLOW_METRICS_LISTEN="127.0.0.1:$(free_port)" RUST_LOG=warn ORDERFLOW_CACHE_CAPACITY=1 \
    taskset -c 0 "$bin_dir/orderflow" >/dev/null 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db"' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
for c in 8 32 128; do
    for conns in $(printf "%s\n" 1 $((c / 8)) | sort -u); do
        taskset -c 1 "$bin_dir/loadgen" --target "http://127.0.0.1:$port" --json --duration "${secs}s" \
            --workload get-miss --concurrency "$c" --connections "$conns" --seed-orders 2000 |
            python3 -c 'import json, sys; r = json.load(sys.stdin); print(*sys.argv[1:], round(r["rps"]), r["p99_us"], sep="\t")' "$c" "$conns"
    done
done
