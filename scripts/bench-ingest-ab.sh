#!/usr/bin/env bash
# Two builds of the server against each other on acknowledged ingest, same
# run, alternating rounds (this VM's speed drifts 2-3x between hours, so only
# a same-run ratio means anything): durable StreamEventBatches into SQLite,
# into PostgreSQL (a fresh schema per run in database `test` on
# 127.0.0.1:5432; skipped if none answers), and into the blackhole sink;
# server on CPU 0, load on CPU 1.
#
# Usage: [SINKS="database postgres blackhole"] scripts/bench-ingest-ab.sh BEFORE_DIR AFTER_DIR [ROUNDS] [SECONDS]
#   Each directory holds an `orderflow` and a `loadgen` binary, e.g.:
#     git worktree add /tmp/before <commit>
#     (cd /tmp/before && cargo build --release -p server -p loadgen)
#     mkdir /tmp/b && cp /tmp/before/target/release/{orderflow,loadgen} /tmp/b
# Prints each run, then the median events/s per build and sink and the
# after/before ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?before dir}
after=${2:?after dir}
rounds=${3:-3}
secs=${4:-10}
steps=$PWD/crates/test-support/data/twelve-steps.toml
scratch=$(mktemp -d)
pg=postgres://postgres@127.0.0.1:5432/test
schema=bench_ab_$$
trap 'kill "${PID:-}" 2>/dev/null || true; psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
sinks="database blackhole"
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    sinks="database postgres blackhole"
fi
# SINKS="blackhole" (say) runs only those.
sinks=${SINKS:-$sinks}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

run() { # DIR SINK -> events/s
    local dir=$1 sink=$2 port url=$scratch/db
    rm -f "$scratch"/db*
    if [ "$sink" = postgres ]; then
        PGOPTIONS="-c client_min_messages=warning" psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null
        url="$pg?options=-c%20search_path%3D$schema"
        sink=database
    fi
    port=$(free_port)
    env DATABASE_URL="$url" ORDERFLOW_LISTEN="127.0.0.1:$port" ORDERFLOW_METRICS_LISTEN="127.0.0.1:$(free_port)" \
        ORDERFLOW_PIPELINE="$steps" ORDERFLOW_EVENT_SINK="$sink" RUST_LOG=warn \
        taskset -c 0 "$dir/orderflow" >"$scratch/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    DATABASE_URL="$url" taskset -c 1 "$dir/loadgen" --target "http://127.0.0.1:$port" --json \
        --duration "${secs}s" --workload stream-batches --concurrency 4 --batch 1000 --window 8 |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["events_per_second"]))'
    kill -TERM "$PID"
    wait "$PID" || true
    PID=
}

declare -A results
for round in $(seq 1 "$rounds"); do
    for sink in $sinks; do
        for side in before after; do
            dir=$before
            [ "$side" = after ] && dir=$after
            rate=$(run "$dir" "$sink")
            echo "round $round $sink $side: $rate events/s" >&2
            results[$sink.$side]+="$rate "
        done
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "| sink | before (events/s, median of $rounds) | after | after/before |"
echo "|---|---|---|---|"
for sink in $sinks; do
    b=$(echo "${results[$sink.before]}" | median)
    a=$(echo "${results[$sink.after]}" | median)
    label="$sink (SQLite log)"
    [ "$sink" = postgres ] && label="database (PostgreSQL log)"
    echo "| $label | $b | $a | $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }') |"
done
