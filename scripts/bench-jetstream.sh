#!/usr/bin/env bash
# Acknowledged ingest on the JetStream event log with 1, 2 and 3 replicas
# (scripts/cluster.sh, one PostgreSQL, one NATS), against JetStream alone
# publishing and consuming the same bytes (loadgen --workload
# jetstream-baseline), same run. Four producers in all, spread over the
# replicas, 1,000 events per batch, 8 batches in flight per producer. Two
# figures: events acknowledged (durable in JetStream) per second, and
# events committed (stored in PostgreSQL by the replicas' consumers) per
# second over the same window: the rate the deployment sustains, which
# acknowledgement outruns until the stream reaches its bound. Prints a
# Markdown table for docs/benchmarks.md.
#
# Usage: scripts/bench-jetstream.sh [SECONDS_PER_RUN]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
export CLUSTER_SCHEMA=bench_jetstream_$$
export ORDERFLOW_EVENT_LOG=nats://127.0.0.1:4222
export RUST_LOG=warn
pg=postgres://postgres@127.0.0.1:5432/test
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true; PGOPTIONS="-c client_min_messages=warning" psql -q "$pg" -c "DROP SCHEMA IF EXISTS $CLUSTER_SCHEMA CASCADE" >/dev/null 2>&1 || true' EXIT
scripts/ensure-nats.sh
cargo build --quiet --release -p server -p loadgen
lg=target/release/loadgen
json() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

baseline=$("$lg" --json --workload jetstream-baseline --batch 1000 --window 8 --duration "${secs}s")
base=$(json "$baseline" events_per_second)

declare -A rate committed
# Events stored in PostgreSQL (the replicas' outputs), all runs so far.
stored() { PGOPTIONS="-c client_min_messages=warning" psql -qtA "$pg" -c "SELECT count(*) FROM $CLUSTER_SCHEMA.events"; }
for replicas in 1 2 3; do
    export ORDERFLOW_NATS_STREAM=BENCH_${replicas}_$$
    scripts/cluster.sh up "$replicas" >/dev/null
    before=$(stored)
    outs=()
    for i in $(seq 1 "$replicas"); do
        # Four producers in all: replica i takes every replicas-th one.
        producers=$(( (4 - i) / replicas + 1 ))
        out=$(mktemp)
        outs+=("$out")
        "$lg" --json --workload stream-batches --target "http://127.0.0.1:$((50060 + i))" \
            --concurrency "$producers" --batch 1000 --window 8 --duration "${secs}s" >"$out" &
    done
    wait
    committed[$replicas]=$(awk -v a="$before" -v b="$(stored)" -v s="$secs" 'BEGIN { print (b - a) / s }')
    total=0
    for out in "${outs[@]}"; do
        total=$(awk -v a="$total" -v b="$(json "$(cat "$out")" events_per_second)" 'BEGIN { print a + b }')
        rm -f "$out"
    done
    rate[$replicas]=$total
    scripts/cluster.sh down >/dev/null
    "$lg" --workload health --delete-stream "$ORDERFLOW_NATS_STREAM"
done

echo "| setup | events/s acknowledged | ratio to JetStream alone | events/s committed in PostgreSQL |"
echo "|---|---|---|---|"
printf '| JetStream alone (publish + consume, same bytes) | %.0f | 1.00 | |\n' "$base"
for replicas in 1 2 3; do
    printf '| orderflow, %d replica(s) | %.0f | %s | %.0f |\n' "$replicas" "${rate[$replicas]}" \
        "$(ratio "${rate[$replicas]}" "$base")" "${committed[$replicas]}"
done
