#!/usr/bin/env bash
# Resident memory of the real server while producers offer events far
# faster than it can take them, on one ingest RPC (WORKLOAD):
#   stream-batches (default)  16 StreamEventBatches streams of 1,000-event
#                             batches, 8 in flight each (128,000 events
#                             offered at any moment);
#   publish                   16 PublishEvents streams of 1,000 events each
#                             (each gathered into log batches, up to 32 of
#                             them on their way per stream);
#   publish-batch             128 callers of unary PublishEventBatch with
#                             1,000 events each (128,000 offered);
#   publish-one               512 callers of unary PublishEvent;
# against a backlog bound of 20,000 (`ORDERFLOW_LOG_MAX_BACKLOG`) on the
# SQLite default, or with STORE=postgres on PostgreSQL (a fresh schema in
# database `test` on 127.0.0.1:5432, where the consumer keeps two commits
# on their way); server on CPU 0, load on CPU 1. Every 5 s it samples the
# server's RSS (/proc) and `orderflow_log_backlog` (/metrics), then says
# whether memory stayed flat (max - min after the first 10 s, within
# FLAT_MB, default 8) and the backlog within its bound. Exits non-zero if
# either fails. Prints a Markdown table for docs/benchmarks.md.
#
# Usage: [WORKLOAD=...] [STORE=postgres] scripts/overload-log-memory.sh [SECONDS]   (default 60)
#   BIN_DIR=dir: run that directory's `orderflow` and `loadgen` instead of
#   building this tree's (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
flat_mb=${FLAT_MB:-8}
bound=20000
bin_dir=${BIN_DIR:-}
if [ -z "$bin_dir" ]; then
    cargo build --quiet --release -p server -p loadgen
    bin_dir=target/release
fi
scratch=$(mktemp -d)
url=$scratch/db
pg=postgres://postgres@127.0.0.1:5432/test
schema=overload_log_$$
trap 'kill "${PID:-}" "${LOAD:-}" 2>/dev/null || true; rm -rf "$scratch"; [ "${STORE:-}" != postgres ] || psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true' EXIT
case ${STORE:-sqlite} in
sqlite) ;;
postgres)
    psql -q "$pg" -c "CREATE SCHEMA $schema" >/dev/null
    url="$pg?options=-c%20search_path%3D$schema"
    ;;
*) echo "unknown STORE $STORE (sqlite or postgres)" >&2; exit 2 ;;
esac
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
metrics=$(free_port)
DATABASE_URL="$url" ORDERFLOW_LISTEN="127.0.0.1:$port" ORDERFLOW_METRICS_LISTEN="127.0.0.1:$metrics" \
    ORDERFLOW_LOG_MAX_BACKLOG=$bound ORDERFLOW_PIPELINE=crates/test-support/data/twelve-steps.toml RUST_LOG=warn \
    taskset -c 0 "$bin_dir/orderflow" >"$scratch/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
rss() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }
backlog() { curl -s "http://127.0.0.1:$metrics/metrics" | awk '/^orderflow_log_backlog / { print $2 }'; }
idle=$(rss)
workload=${WORKLOAD:-stream-batches}
case $workload in
stream-batches) shape=(--concurrency 16 --batch 1000 --window 8) ;;
publish) shape=(--concurrency 16 --batch 1000) ;;
publish-batch) shape=(--concurrency 128 --batch 1000) ;;
publish-one) shape=(--concurrency 512) ;;
*) echo "unknown WORKLOAD $workload" >&2; exit 2 ;;
esac
DATABASE_URL="$url" taskset -c 1 "$bin_dir/loadgen" --target "http://127.0.0.1:$port" --json \
    --duration "${seconds}s" --workload "$workload" "${shape[@]}" >"$scratch/load.json" &
LOAD=$!
echo "| t (s) | RSS (MB) | orderflow_log_backlog |"
echo "|---|---|---|"
echo "| 0 (idle) | $idle | $(backlog) |"
samples=()
highest=0
for t in $(seq 5 5 "$seconds"); do
    sleep 5
    kill -0 "$PID" 2>/dev/null || { echo "the server died" >&2; cat "$scratch/server.log" >&2; exit 1; }
    r=$(rss)
    b=$(backlog)
    echo "| $t | $r | $b |"
    [ "$t" -gt 10 ] && samples+=("$r")
    highest=$(awk -v a="$highest" -v b="${b:-0}" 'BEGIN { print (b > a) ? b : a }')
done
wait "$LOAD" || true
LOAD=
rate=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["events_per_second"]))' "$scratch/load.json")
spread=$(printf '%s\n' "${samples[@]}" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.1f", hi - lo }')
echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, ${seconds} s, release build, $workload (${shape[*]}): $rate events/s accepted;"
echo "RSS spread after 10 s: $spread MB (flat within $flat_mb MB: $(awk -v s="$spread" -v f="$flat_mb" 'BEGIN { print (s <= f) ? "yes" : "no" }'));"
echo "highest backlog sampled: $highest (bound $bound: $(awk -v h="$highest" -v b="$bound" 'BEGIN { print (h <= b) ? "within" : "EXCEEDED" }'))."
awk -v s="$spread" -v f="$flat_mb" -v h="$highest" -v b="$bound" 'BEGIN { exit !(s <= f && h <= b) }'
