#!/usr/bin/env bash
# Acknowledged ingest against the database's own bulk load, same run:
#   1. durable StreamEventBatches through the 12-step pipeline into SQLite
#      (the embedded default), verified against `events export` afterwards;
#   2. the baseline: the same number of output rows loaded by the `sqlite3`
#      shell's `.import` in one transaction (synchronous=FULL, WAL) into a
#      table of the events table's columns and index;
#   3. and 4., the same on PostgreSQL, against `psql \copy` into the real
#      events table of a fresh schema, and against a binary COPY of the
#      same rows (`\copy ... WITH (FORMAT binary)`, the file written by
#      COPY TO itself);
#   5. the same workload into the `blackhole` sink (SQLite log), server on
#      one core: the front end (decode, validate, log, pipeline) alone.
# The server is pinned to CPU 0 and the load to CPU 1. Prints a Markdown
# table for docs/benchmarks.md.
#
# Usage: scripts/bench-ingest.sh [SECONDS_PER_RUN]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
root=$PWD
scratch=$(mktemp -d)
pg=postgres://postgres@127.0.0.1:5432/test
schema=bench_ingest_$$
trap 'kill "${PID:-}" 2>/dev/null || true; psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE; DROP SCHEMA IF EXISTS ${schema}_copy CASCADE" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT

cargo build --quiet --release -p server -p loadgen
bin=$root/target/release/orderflow
lg=$root/target/release/loadgen
steps=$root/crates/test-support/data/twelve-steps.toml

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
now() { date +%s.%N; }

start_server() { # DATABASE_URL [ENV=VALUE...]
    local url=$1
    shift
    local port
    port=$(free_port)
    env DATABASE_URL="$url" ORDERFLOW_LISTEN="127.0.0.1:$port" ORDERFLOW_METRICS_LISTEN="127.0.0.1:$(free_port)" \
        ORDERFLOW_PIPELINE="$steps" RUST_LOG=warn "$@" taskset -c 0 "$bin" >"$scratch/server.log" 2>&1 &
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
stream() { # DATABASE_URL: durable stream-batches, verified
    DATABASE_URL=$1 taskset -c 1 "$lg" --target "$ADDR" --json --duration "${secs}s" \
        --workload stream-batches --concurrency 4 --batch 1000 --window 8 \
        --verify --export-command "$bin events export"
}
stored() { # DATABASE_URL: rows in the events table
    DATABASE_URL=$1 "$bin" events export | wc -l
}

echo "SQLite: durable StreamEventBatches..." >&2
start_server "$scratch/ingest.db"
sqlite_run=$(stream "$scratch/ingest.db")
stop_server
sqlite_rate=$(json "$sqlite_run" events_per_second)
rows=$(stored "$scratch/ingest.db")

echo "SQLite: .import of the same $rows rows in one transaction..." >&2
sqlite3 -csv "$scratch/ingest.db" "SELECT event_id, body, received_at FROM events" >"$scratch/rows.csv"
cat >"$scratch/load.sql" <<SQL
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE events (event_id TEXT, body TEXT NOT NULL CHECK (body <> ''), received_at TIMESTAMP NOT NULL);
CREATE INDEX events_event_id ON events (event_id) WHERE event_id IS NOT NULL;
BEGIN;
.import --csv $scratch/rows.csv events
COMMIT;
SQL
start=$(now)
sqlite3 "$scratch/copy.db" <"$scratch/load.sql" >/dev/null
sqlite_copy=$(awk -v r="$rows" -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", r / (b - a) }')

echo "PostgreSQL: durable StreamEventBatches..." >&2
psql -q "$pg" -c "CREATE SCHEMA $schema; CREATE SCHEMA ${schema}_copy" >/dev/null
pg_url="$pg?options=-c%20search_path%3D$schema"
start_server "$pg_url"
pg_run=$(stream "$pg_url")
stop_server
pg_rate=$(json "$pg_run" events_per_second)
psql -q "$pg" -c "\\copy (SELECT event_id, body, received_at FROM $schema.events) TO '$scratch/pg.csv' CSV"
pg_rows=$(wc -l <"$scratch/pg.csv")

echo "PostgreSQL: \\copy of the same $pg_rows rows..." >&2
copy_url="$pg?options=-c%20search_path%3D${schema}_copy"
DATABASE_URL=$copy_url "$bin" migrate
start=$(now)
PGOPTIONS="-c search_path=${schema}_copy" psql -q "$pg" -c "\\copy events(event_id, body, received_at) FROM '$scratch/pg.csv' CSV"
pg_copy=$(awk -v r="$pg_rows" -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", r / (b - a) }')

echo "PostgreSQL: binary COPY of the same rows..." >&2
# The same rows in PostgreSQL's binary COPY format (written by COPY TO
# itself), loaded into an empty events table: the binary loader.
psql -q "$pg" -c "\\copy (SELECT event_id, body, received_at FROM $schema.events) TO '$scratch/pg.bin' WITH (FORMAT binary)"
PGOPTIONS="-c search_path=${schema}_copy -c client_min_messages=warning" psql -q "$pg" -c "TRUNCATE events"
start=$(now)
PGOPTIONS="-c search_path=${schema}_copy" psql -q "$pg" -c "\\copy events(event_id, body, received_at) FROM '$scratch/pg.bin' WITH (FORMAT binary)"
pg_binary=$(awk -v r="$pg_rows" -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", r / (b - a) }')

echo "PostgreSQL: two \\copy streams of half the rows each, in parallel..." >&2
# Not a target: how much two writers into events (the log consumer's two
# commits on their way, PostgreSQL) can add on this host at best, the same
# rows split in two and loaded side by side.
split -n l/2 -d "$scratch/pg.csv" "$scratch/pg-half."
PGOPTIONS="-c search_path=${schema}_copy -c client_min_messages=warning" psql -q "$pg" -c "TRUNCATE events"
start=$(now)
loaders=()
for half in "$scratch"/pg-half.*; do
    PGOPTIONS="-c search_path=${schema}_copy" psql -q "$pg" -c "\\copy events(event_id, body, received_at) FROM '$half' CSV" &
    loaders+=("$!")
done
for loader in "${loaders[@]}"; do wait "$loader"; done
pg_two=$(awk -v r="$pg_rows" -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", r / (b - a) }')

echo "blackhole (SQLite log, server on one core)..." >&2
start_server "$scratch/blackhole.db" ORDERFLOW_EVENT_SINK=blackhole
blackhole_run=$(DATABASE_URL="$scratch/blackhole.db" taskset -c 1 "$lg" --target "$ADDR" --json --duration "${secs}s" \
    --workload stream-batches --concurrency 4 --batch 1000 --window 8)
stop_server
blackhole_rate=$(json "$blackhole_run" events_per_second)

# The calibration for the blackhole row: the same twelve steps in process,
# each batch's kept events handed off as the server's consumer hands its
# outputs on (criterion's last run of `enum_event_major_handoff`, one
# thread; `cargo bench -p transform-engine --bench pipeline`, which
# scripts/bench.sh runs first).
estimate=$root/target/criterion/pipeline_12_steps/enum_event_major_handoff/new/estimates.json
inproc=$( [ -f "$estimate" ] && python3 -c 'import json,sys; print(int(10000 / (json.load(open(sys.argv[1]))["mean"]["point_estimate"] / 1e9)))' "$estimate" || echo 0)
if [ "$inproc" -gt 0 ]; then
    blackhole_row="| StreamEventBatches into the blackhole sink (decode, validate, log, pipeline) | ${blackhole_rate%.*} | the same steps in process (criterion, one thread): $inproc events/s | $(ratio "$blackhole_rate" "$inproc") |"
else
    blackhole_row="| StreamEventBatches into the blackhole sink | ${blackhole_rate%.*} | (no criterion run of the pipeline in target/criterion) | |"
fi

cat <<TABLE
Measured $(date -u +%Y-%m-%d) on $(nproc) cores (server on CPU 0, load on CPU 1), ${secs} s per run, 4 streams x 1,000-event batches, window 8, the twelve-step pipeline.

| figure | events/s | baseline | ratio |
|---|---|---|---|
| durable StreamEventBatches, SQLite (verified: $(json "$sqlite_run" verified_events) events stored once) | ${sqlite_rate%.*} | \`sqlite3 .import\`, one transaction: $sqlite_copy rows/s | $(ratio "$sqlite_rate" "$sqlite_copy") |
| durable StreamEventBatches, PostgreSQL (verified: $(json "$pg_run" verified_events)) | ${pg_rate%.*} | \`psql \\copy\`: $pg_copy rows/s | $(ratio "$pg_rate" "$pg_copy") |
| the same, against a binary COPY loader of the same rows | ${pg_rate%.*} | \`psql \\copy ... FROM ... (FORMAT binary)\`: $pg_binary rows/s | $(ratio "$pg_rate" "$pg_binary") |
$blackhole_row

Headroom for two writers into events, as the consumer's two commits on their way (not a target): two \`psql \\copy\` streams of half the rows each, side by side: $pg_two rows/s, $(ratio "$pg_two" "$pg_copy") of one stream.

Batch latency p50/p99 (us): SQLite $(json "$sqlite_run" p50_us)/$(json "$sqlite_run" p99_us), PostgreSQL $(json "$pg_run" p50_us)/$(json "$pg_run" p99_us), blackhole $(json "$blackhole_run" p50_us)/$(json "$blackhole_run" p99_us).
TABLE
