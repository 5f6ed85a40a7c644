#!/usr/bin/env bash
# The end-to-end benchmark report: starts the release server (SQLite, then
# PostgreSQL), seeds data, drives it with `loadgen`, and appends a dated
# section with every ratio to docs/benchmarks.md. Every figure is a ratio
# against a baseline measured in the same run. The server is pinned to CPU 0
# and the load to CPU 1, so the two do not fight over a core.
#
# Usage: [PUBLISH_BEFORE=DIR] scripts/bench.sh [SECONDS_PER_RUN]
#        (default 10; about 20 minutes in all, with scripts/bench-ingest.sh's
#        and scripts/bench-jetstream.sh's rows, and 2 more with
#        PUBLISH_BEFORE; needs h2load from nghttp2-client, pgbench, a local
#        PostgreSQL and, for the JetStream rows, NATS)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
root=$PWD
scratch=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$scratch"' EXIT

cargo build --quiet --release -p server -p loadgen

# The in-process benchmarks first (their figures are compared with below):
# the order cache and the 12-step pipeline. `SKIP_CRITERION=1` reuses the
# last results in target/criterion.
if [ "${SKIP_CRITERION:-0}" != 1 ]; then
    echo "criterion: cache and pipeline benchmarks..." >&2
    cargo bench --quiet -p storage --bench cache -- --warm-up-time 2 --measurement-time 8 >&2
    cargo bench --quiet -p transform-engine --bench pipeline -- --warm-up-time 2 --measurement-time 8 >&2
fi
bin=$root/target/release/orderflow
lg=$root/target/release/loadgen
pg=postgres://postgres@127.0.0.1:5432

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$PID/status"; }

start_server() { # DATABASE_URL [ENV=VALUE...]
    local url=$1
    shift
    local port
    port=$(free_port)
    env DATABASE_URL="$url" ORDERFLOW_LISTEN="127.0.0.1:$port" ORDERFLOW_METRICS_LISTEN="127.0.0.1:$(free_port)" \
        RUST_LOG=warn "$@" taskset -c 0 "$bin" >"$scratch/server.log" 2>&1 &
    PID=$!
    ADDR=http://127.0.0.1:$port
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server did not start:" >&2
    cat "$scratch/server.log" >&2
    exit 1
}
stop_server() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
load() { taskset -c 1 "$lg" --target "$ADDR" --json --duration "${secs}s" "$@"; }

echo "SQLite: cache hits vs Health/Check, latency by concurrency..." >&2
start_server "$scratch/bench.db"
health=$(load --workload health --concurrency 16)
hit16=$(load --workload get-hit --concurrency 16 --seed-orders 10000)
hit1=$(load --workload get-hit --concurrency 1 --seed-orders 1000)
hit64=$(load --workload get-hit --concurrency 64 --seed-orders 1000)
health1=$(load --workload health --concurrency 1)
health64=$(load --workload health --concurrency 64)
stop_server

echo "SQLite: PublishEvents through the 12-step pipeline, and memory under 10x overload..." >&2
start_server "$scratch/events.db" ORDERFLOW_PIPELINE="$root/crates/test-support/data/twelve-steps.toml" \
    ORDERFLOW_OVERFLOW_POLICY=drop-newest
publish=$(load --workload publish --concurrency 4 --batch 100)
before_kb=$(rss_kb)
peak_kb=$before_kb
load --workload publish --concurrency 40 --batch 100 >"$scratch/overload.json" &
loader=$!
while kill -0 "$loader" 2>/dev/null; do
    now=$(rss_kb)
    [ "$now" -gt "$peak_kb" ] && peak_kb=$now
    sleep 0.5
done
overload=$(cat "$scratch/overload.json")
sleep 2
after_kb=$(rss_kb)
stop_server

echo "h2load: cached GetOrder vs Health/Check, 16 and 64 streams (default settings, then 1% trace sampling)..." >&2
hit_runs=$(SKIP_BUILD=1 scripts/bench-hit.sh 30000 9)
# JSON logs carry trace ids, so requests get spans (Settings::spans_observed),
# here 1% of them.
hit_sampled=$(SKIP_BUILD=1 scripts/bench-hit.sh 30000 9 ORDERFLOW_LOG_FORMAT=json ORDERFLOW_TRACE_SAMPLE_RATIO=0.01)
h2_ratio() { awk -v s="$2" '$1 == "ratio" && $2 == s { print $3 }' <<<"$1"; }
h2_p99() { # RUNS STREAMS RPC: the median p99 over rounds, in microseconds
    awk -v s="$2" -v r="$3" '$1 == s && $2 == r { print $5 }' <<<"$1" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "PostgreSQL: cache-miss capacity vs pgbench -S -M prepared (8, 32, 128 in flight)..." >&2
for db in orderflow_bench orderflow_pgbench; do
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
done
pgbench -q -i -s 10 -h 127.0.0.1 -U postgres orderflow_pgbench >/dev/null 2>&1
start_server "$pg/orderflow_bench" ORDERFLOW_CACHE_CAPACITY=1
miss_best=0
miss_rows=
# Each concurrency on one connection (a gRPC client's default: streams
# multiplexed) and on c/8 connections; the row keeps the better.
for c in 8 32 128; do
    best=0
    for conns in $(printf "%s\n" 1 $((c / 8)) | sort -u); do
        rps=$(json "$(load --workload get-miss --concurrency "$c" --connections "$conns" --seed-orders 2000)" rps | cut -d. -f1)
        [ "$rps" -gt "$best" ] && best=$rps
    done
    miss_rows="$miss_rows $c:$best"
    [ "$best" -gt "$miss_best" ] && miss_best=$best
done
stop_server
# pgbench needs a connection per client: 128 when PostgreSQL allows it,
# else as many as max_connections leaves room for (said in the report).
max_conn=$(psql -tA -h 127.0.0.1 -U postgres -c "SHOW max_connections")
pgbench_best=0
pgbench_rows=
for c in 8 32 $((max_conn - 10 < 128 ? max_conn - 10 : 128)); do
    tps=$(taskset -c 1 pgbench -S -M prepared -n -c "$c" -j 2 -T "$secs" -h 127.0.0.1 -U postgres orderflow_pgbench | awk '/^tps/ { print int($3) }')
    pgbench_rows="$pgbench_rows $c:$tps"
    [ "$tps" -gt "$pgbench_best" ] && pgbench_best=$tps
done

# The in-process pipeline figure to compare PublishEvents with (criterion's
# last run of the engine's path, if it exists).
estimate=$root/target/criterion/pipeline_12_steps/enum_event_major/new/estimates.json
inproc=$( [ -f "$estimate" ] && python3 -c 'import json,sys; print(int(10000 / (json.load(open(sys.argv[1]))["mean"]["point_estimate"] / 1e9)))' "$estimate" || echo 0)
dyn_estimate=${estimate/enum_event_major/dyn_event_major}
dyn=$( [ -f "$dyn_estimate" ] && python3 -c 'import json,sys; print(int(10000 / (json.load(open(sys.argv[1]))["mean"]["point_estimate"] / 1e9)))' "$dyn_estimate" || echo 0)

# Acknowledged ingest against each database's own bulk loader, and the
# blackhole front end against the in-process pipeline: its own script, run
# here so that this report holds every figure.
echo "acknowledged ingest (scripts/bench-ingest.sh)..." >&2
ingest_table=$(scripts/bench-ingest.sh "$secs")

# The JetStream log against JetStream alone, 1-3 replicas, acknowledged and
# committed (its own script; needs NATS with JetStream, which
# scripts/ensure-nats.sh starts if it is installed).
if scripts/ensure-nats.sh >/dev/null 2>&1; then
    echo "the JetStream log (scripts/bench-jetstream.sh)..." >&2
    jetstream_table=$(scripts/bench-jetstream.sh "$secs")
else
    jetstream_table="(not measured: no NATS with JetStream at 127.0.0.1:4222)"
fi

# Durable unary PublishEvent against the in-memory build before it (issue
# 30), alternated: only with PUBLISH_BEFORE=DIR, a directory holding that
# build's `orderflow` (a build of 9ac9746^; see scripts/bench-publish-ab.sh).
if [ -n "${PUBLISH_BEFORE:-}" ]; then
    echo "unary PublishEvent vs the in-memory build (scripts/bench-publish-ab.sh)..." >&2
    publish_ab=$(scripts/bench-publish-ab.sh "$PUBLISH_BEFORE" "$root/target/release" 3 "$secs" 64 | tail -1)
else
    publish_ab="(not measured: set PUBLISH_BEFORE to a directory with a build of 9ac9746^)"
fi

{
    echo
    echo "## End to end, scripts/bench.sh ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m); server on CPU 0, load on CPU 1, ${secs}s per run)"
    echo
    echo "| ratio | measured | baseline | ratio | goal |"
    echo "|---|---|---|---|---|"
    echo "| GetOrder from cache vs Health/Check, 16 concurrent (SQLite) | $(json "$hit16" rps | cut -d. -f1)/s | $(json "$health" rps | cut -d. -f1)/s | $(ratio "$(json "$hit16" rps)" "$(json "$health" rps)") | ≥ 0.9 |"
    echo "| GetOrder from cache vs Health/Check, h2load, 16 streams on one connection (median of 9 alternating rounds) | | | $(h2_ratio "$hit_runs" 16) | ≥ 0.95 |"
    echo "| the same, 64 streams | | | $(h2_ratio "$hit_runs" 64) | ≥ 0.95 |"
    echo "| the same with JSON logs (requests get spans) and ORDERFLOW_TRACE_SAMPLE_RATIO=0.01, 16 / 64 streams | | | $(h2_ratio "$hit_sampled" 16) / $(h2_ratio "$hit_sampled" 64) | ≥ 0.95 |"
    echo "| GetOrder cache-miss capacity (PostgreSQL), best of${miss_rows} in flight, vs the best \`pgbench -S -M prepared\` of${pgbench_rows} clients (both pinned to CPU 1; GetOrder on 1 or c/8 connections, the better) | ${miss_best}/s | ${pgbench_best}/s | $(ratio "$miss_best" "$pgbench_best") | ≥ 0.7 |"
    echo "| 12-step pipeline in process (criterion, one thread), enum dispatch vs the same steps as \`Vec<Box<dyn Transform>>\` | ${inproc}/s | ${dyn}/s | $( [ "$dyn" -gt 0 ] && ratio "$inproc" "$dyn" || echo n/a) | enum ≥ 10,000,000/s |"
    echo "| PublishEvents, 12-step pipeline, events/s vs the in-process pipeline (one core) | $(json "$publish" events_per_second | cut -d. -f1)/s | ${inproc}/s | $( [ "$inproc" -gt 0 ] && ratio "$(json "$publish" events_per_second)" "$inproc" || echo n/a) | (shows network + decoding cost) |"
    echo
    echo "Latency (µs), GetOrder from cache vs Health/Check on the same server:"
    echo
    echo "| concurrency | GetOrder p50 | GetOrder p99 | Health p50 | Health p99 |"
    echo "|---|---|---|---|---|"
    echo "| 1 | $(json "$hit1" p50_us) | $(json "$hit1" p99_us) | $(json "$health1" p50_us) | $(json "$health1" p99_us) |"
    echo "| 16 | $(json "$hit16" p50_us) | $(json "$hit16" p99_us) | $(json "$health" p50_us) | $(json "$health" p99_us) |"
    echo "| 64 | $(json "$hit64" p50_us) | $(json "$hit64" p99_us) | $(json "$health64" p50_us) | $(json "$health64" p99_us) |"
    echo
    echo "h2load (one connection; p99 in µs is the median over rounds; CPU is the server's time per request), default settings:"
    echo
    echo "| streams | GetOrder p99 | Health p99 | GetOrder p99, JSON logs, 1% sampled |"
    echo "|---|---|---|---|"
    for s in 16 64; do
        echo "| $s | $(h2_p99 "$hit_runs" $s GetOrder) | $(h2_p99 "$hit_runs" $s Health) | $(h2_p99 "$hit_sampled" $s GetOrder) |"
    done
    echo
    echo '```'
    echo "$hit_runs"
    echo "# ORDERFLOW_LOG_FORMAT=json ORDERFLOW_TRACE_SAMPLE_RATIO=0.01"
    echo "$hit_sampled"
    echo '```'
    echo
    echo "Acknowledged ingest (scripts/bench-ingest.sh, in this run):"
    echo
    echo "$ingest_table"
    echo
    echo "The JetStream log (scripts/bench-jetstream.sh, in this run):"
    echo
    echo "$jetstream_table"
    echo
    echo "Durable unary PublishEvent vs the in-memory build before it (scripts/bench-publish-ab.sh, 3 alternated rounds): $publish_ab"
    echo
    echo "Server resident memory around a 10x PublishEvents overload (40 streams vs 4; drop-newest):"
    echo "before $((before_kb / 1024)) MB, peak during $((peak_kb / 1024)) MB, 2 s after $((after_kb / 1024)) MB;"
    echo "during the overload the server accepted $(json "$overload" events_per_second | cut -d. -f1) events/s and shed the rest."
} | tee -a docs/benchmarks.md
