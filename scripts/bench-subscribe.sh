#!/usr/bin/env bash
# Following the stored events (SubscribeEvents), each figure a ratio to a
# baseline measured in the same run. Server on CPU 0, load on CPU 1.
#   1. Catch-up: one subscriber reads N stored events from position 0,
#      against the database's own shell reading the same rows (`sqlite3`;
#      `psql \copy (SELECT ...) TO '/dev/null'`). Target >= 0.5. Twice: a
#      `--lean` client (positions and times only) shows the server's rate;
#      a full one decodes every event and is limited by its own core.
#   2. Live tail: ingest (PublishEvents) at half its measured capacity while
#      one subscriber follows; lag from `stored_at` to arrival, p50 / p99.
#      Target p99 <= 50 ms.
#   3. Ingest (acknowledged StreamEventBatches) with 4 live (--lean)
#      subscribers,
#      against ingest with none. Target >= 0.8.
#   4. Ingest while retention removes events, against retention off.
#      Target >= 0.9.
# Prints a Markdown table for docs/benchmarks.md.
#
# Usage: [INGEST_ROUNDS=N] scripts/bench-subscribe.sh [SECONDS_PER_RUN] [CATCH_UP_EVENTS]
#        (defaults 10 and 200000; needs a local PostgreSQL for its rows;
#        INGEST_ROUNDS, default 1, alternates figures 3 and 4 with their
#        baseline that many times and reports medians)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
n=${2:-200000}
root=$PWD
scratch=$(mktemp -d)
pg=postgres://postgres@127.0.0.1:5432/test
schema=bench_subscribe_$$
trap 'kill "${PID:-}" 2>/dev/null || true; psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT

cargo build --quiet --release -p server -p loadgen
bin=$root/target/release/orderflow
lg=$root/target/release/loadgen
steps=$root/crates/test-support/data/twelve-steps.toml

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
now() { date +%s.%N; }
per_second() { awk -v r="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", r / (b - a) }'; }

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
load() { taskset -c 1 "$lg" --target "$ADDR" --json "$@"; }

# N events as JSON lines, for `orderflow events import`.
python3 - "$n" >"$scratch/events.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"event_id": f"e-{i}", "user_id": f"u-{i % 1000}", "action": "purchase",
                      "amount_cents": i % 5000, "attributes": {"k": "v"}}, separators=(",", ":")))
PY

catch_up() { # DATABASE_URL -> "events/s lean_events/s" of one subscriber reading all N
    local url=$1
    DATABASE_URL="$url" "$bin" events import "$scratch/events.jsonl" >/dev/null 2>&1
    local runs=()
    for lean in "" --lean; do
        # A fresh server each time: its shared pages start empty.
        start_server "$url"
        local run
        run=$(load --workload subscribe --concurrency 1 --max-page 10000 --requests "$n" --duration 300s $lean)
        stop_server
        [ "$(json "$run" events)" -ge "$n" ] || { echo "caught up on $(json "$run" events) of $n" >&2; exit 1; }
        runs+=("$(json "$run" events_per_second)")
    done
    echo "${runs[@]}"
}

echo "catch-up, SQLite..." >&2
sqlite_url=$scratch/catchup.db
read -r sqlite_follow sqlite_lean <<<"$(catch_up "$sqlite_url")"
start=$(now)
sqlite3 "$sqlite_url" "SELECT id, body, received_at FROM events" >/dev/null
sqlite_shell=$(per_second "$n" "$start" "$(now)")

pg_row=""
if pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "catch-up, PostgreSQL..." >&2
    psql -q "$pg" -c "CREATE SCHEMA $schema" >/dev/null
    pg_url="$pg?options=-c%20search_path%3D$schema"
    read -r pg_follow pg_lean <<<"$(catch_up "$pg_url")"
    start=$(now)
    PGOPTIONS="-c search_path=$schema" psql -q "$pg" -c "\\copy (SELECT id, body, received_at FROM events ORDER BY id) TO '/dev/null'"
    pg_shell=$(per_second "$n" "$start" "$(now)")
    pg_row="| catch-up from position 0, PostgreSQL, $n events, a \`--lean\` client | ${pg_lean%.*} events/s | \`psql \\copy (SELECT ...) TO '/dev/null'\`: $pg_shell rows/s | $(ratio "$pg_lean" "$pg_shell") |
| the same, a full client | ${pg_follow%.*} events/s | as above | $(ratio "$pg_follow" "$pg_shell") |"
fi

echo "live tail at half the ingest capacity (SQLite)..." >&2
start_server "$scratch/capacity.db"
capacity=$(json "$(load --workload publish --concurrency 8 --batch 100 --duration "${secs}s")" rps)
stop_server
half=$(awk -v c="$capacity" 'BEGIN { printf "%.0f", c / 2 }')
# A fresh store: the subscriber is caught up from the start, so each lag is
# commit to delivery, not catching up.
start_server "$scratch/live.db"
load --workload subscribe --concurrency 1 --duration "$((secs + 2))s" >"$scratch/tail.json" &
tail_pid=$!
sleep 1
load --workload publish --concurrency 8 --batch 100 --rate "$half" --duration "${secs}s" >/dev/null
wait "$tail_pid"
stop_server
tail_run=$(cat "$scratch/tail.json")

ingest() { # DB ENV... -> acknowledged events/s, with SUBSCRIBERS subscribers following
    local db=$1
    shift
    rm -f "$db"*
    start_server "$db" ORDERFLOW_PIPELINE="$steps" "$@"
    local subscribers=()
    # The subscribers are lean clients: they share CPU 1 with the producer,
    # and four full decoders there would slow the producer, not the server.
    for _ in $(seq 1 "${SUBSCRIBERS:-0}"); do
        load --workload subscribe --lean --concurrency 1 --duration "$((secs + 2))s" >/dev/null &
        subscribers+=($!)
    done
    local run
    run=$(load --workload stream-batches --concurrency 4 --batch 1000 --window 8 --duration "${secs}s")
    for pid in "${subscribers[@]}"; do wait "$pid"; done
    stop_server
    json "$run" events_per_second
}

median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Rounds alternate the three runs (none, 4 subscribers, retention), so a
# drift of the machine's speed lands on all three; each figure is the
# median of its rounds.
rounds=${INGEST_ROUNDS:-1}
alones=() followeds=() retaineds=()
for round in $(seq 1 "$rounds"); do
    echo "ingest: alone, with 4 subscribers, with retention removing (SQLite), round $round of $rounds..." >&2
    alones+=("$(ingest "$scratch/ingest.db")")
    followeds+=("$(SUBSCRIBERS=4 ingest "$scratch/ingest.db")")
    retaineds+=("$(ingest "$scratch/ingest.db" ORDERFLOW_EVENT_RETENTION=2s)")
done
# One more baseline after the last round: each measured run has one before
# and after it.
alones+=("$(ingest "$scratch/ingest.db")")
baseline=$(echo "${alones[@]}" | median)
followed=$(echo "${followeds[@]}" | median)
retained=$(echo "${retaineds[@]}" | median)

cat <<TABLE
Measured $(date -u +%Y-%m-%d) on $(nproc) cores (server on CPU 0, load on CPU 1), ${secs} s per run.

| figure | value | baseline | ratio |
|---|---|---|---|
| catch-up from position 0, SQLite, $n events, a \`--lean\` client (the server's rate) | ${sqlite_lean%.*} events/s | \`sqlite3\` reading the same rows: $sqlite_shell rows/s | $(ratio "$sqlite_lean" "$sqlite_shell") |
| the same, a full client (\`orderflow_proto::Follow\`, every event decoded: its own core is the limit) | ${sqlite_follow%.*} events/s | as above | $(ratio "$sqlite_follow" "$sqlite_shell") |
$pg_row
| live tail at half the ingest capacity ($half PublishEvents/s of 100), lag from stored_at to arrival | p50 $(json "$tail_run" lag_p50_us) us, p99 $(json "$tail_run" lag_p99_us) us | target p99 50,000 us | |
| acknowledged ingest with 4 live subscribers (twelve steps, SQLite), median of $rounds | ${followed%.*} events/s | none, median of $((rounds + 1)): $baseline events/s (runs: ${alones[*]%.*}) | $(ratio "$followed" "$baseline") |
| acknowledged ingest while retention (2 s) removes, median of $rounds | ${retained%.*} events/s | retention off (as above) | $(ratio "$retained" "$baseline") |
TABLE
