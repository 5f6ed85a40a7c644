#!/usr/bin/env bash
# Where durable PostgreSQL ingest spends its time (issue 30: "profile
# first"). Two measurements, same run:
#   1. CPU by process while durable StreamEventBatches runs through the
#      twelve-step pipeline into PostgreSQL (server on CPU 0, load on CPU
#      1, as scripts/bench-ingest.sh): the server, loadgen, PostgreSQL's
#      backends, its WAL writer and the rest, and how much of the two
#      cores nobody used; and, sampled from pg_stat_activity over the same
#      window, what the server's connections were doing (on CPU or
#      waiting, and for what), by statement;
#   2. PostgreSQL's own cost of storing the same rows, each way alone on an
#      empty events table, rounds alternated: binary COPY (what a bulk
#      loader would send), and the statement the server sends
#      for the log consumer's commit (ids reserved by `reserve_event_ids`,
#      then `INSERT ... OVERRIDING SYSTEM VALUE SELECT ... FROM unnest(...)
#      WITH ORDINALITY`, storage/src/feed.rs) over the same rows in pieces
#      of at most 256 KiB of events, as the server cuts them;
#   3. what the consumer's second commit on its way (two writers into
#      events) can add at best: text `\copy`
#      of all the rows as one stream, against the rows split in two and
#      loaded by two streams side by side, rounds alternated.
# Prints a Markdown table for docs/benchmarks.md.
#
# Usage: scripts/pg-ingest-breakdown.sh [SECONDS] [ROUNDS]   (defaults 10, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
root=$PWD
scratch=$(mktemp -d)
pg=postgres://postgres@127.0.0.1:5432/test
schema=ingest_breakdown_$$
trap 'kill "${PID:-}" 2>/dev/null || true; PGOPTIONS="-c client_min_messages=warning" psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE; DROP SCHEMA IF EXISTS ${schema}_load CASCADE" >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
[ "$secs" -ge 6 ] || { echo "SECONDS must be at least 6" >&2; exit 2; }

cargo build --quiet --release -p server -p loadgen
bin=$root/target/release/orderflow
lg=$root/target/release/loadgen
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

psql -q "$pg" -c "CREATE SCHEMA $schema; CREATE SCHEMA ${schema}_load" >/dev/null
url="$pg?options=-c%20search_path%3D$schema"
port=$(free_port)
metrics_port=$(free_port)
env DATABASE_URL="$url" ORDERFLOW_LISTEN="127.0.0.1:$port" ORDERFLOW_METRICS_LISTEN="127.0.0.1:$metrics_port" \
    ORDERFLOW_PIPELINE="$root/crates/test-support/data/twelve-steps.toml" RUST_LOG=warn \
    taskset -c 0 "$bin" >"$scratch/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

# The log consumer's time per commit (its two histograms' sums) over the
# run's middle.
consumer_seconds() {
    curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '
        /^orderflow_log_pipeline_seconds_sum / { p = $2 }
        /^orderflow_log_commit_seconds_sum / { c = $2 }
        /^orderflow_log_commit_seconds_count / { n = $2 }
        END { print p + 0, c + 0, n + 0 }'
}
(sleep 2; consumer_seconds >"$scratch/consumer.before"; sleep $((secs - 4)); consumer_seconds >"$scratch/consumer.after") &
CONSUMER=$!
# CPU by process over the run's middle (scripts/cpu-by-process.py).
(sleep 2; scripts/cpu-by-process.py $((secs - 4)) "$PID" >"$scratch/cpu.md") &
SAMPLER=$!
# What the server's connections do, sampled every ~10 ms over the same window.
(sleep 2; python3 - "$pg" $((secs - 4)) >"$scratch/waits.md" <<'PY'
import collections, subprocess, sys, time
url, seconds = sys.argv[1], float(sys.argv[2])
query = ("SELECT coalesce(wait_event_type || ': ' || wait_event, 'on CPU') || chr(9) "
         "|| left(regexp_replace(query, '\\s+', ' ', 'g'), 40) FROM pg_stat_activity "
         "WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid() "
         "AND query NOT LIKE '%pg_stat_activity%'; SELECT '--';\n")
psql = subprocess.Popen(["psql", "-qAt", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
seen, samples, end = collections.Counter(), 0, time.time() + seconds
while time.time() < end:
    psql.stdin.write(query)
    psql.stdin.flush()
    while (line := psql.stdout.readline().strip()) != "--":
        seen[line] += 1
    samples += 1
    time.sleep(0.01)
psql.stdin.close()
for what, count in seen.most_common(12):
    wait, _, statement = what.partition("\t")
    print(f"| {wait} | `{statement}` | {count / samples:.2f} |")
print(f"| ({samples} samples) | | |")
PY
) &
WAITS=$!
run=$(DATABASE_URL=$url taskset -c 1 "$lg" --target "http://127.0.0.1:$port" --json --duration "${secs}s" \
    --workload stream-batches --concurrency 4 --batch 1000 --window 8)
wait "$SAMPLER"
wait "$WAITS"
wait "$CONSUMER"
kill -TERM "$PID"
wait "$PID" || true
PID=
rate=$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["events_per_second"]))' "$run")

echo "PostgreSQL alone: the same rows, binary COPY against the server's array insert..." >&2
rows=$(psql -qtA "$pg" -c "SELECT count(*) FROM $schema.events")
psql -q "$pg" -c "\\copy (SELECT event_id, body, received_at FROM $schema.events ORDER BY id) TO '$scratch/rows.bin' WITH (FORMAT binary)"
DATABASE_URL="$pg?options=-c%20search_path%3D${schema}_load" "$bin" migrate >/dev/null
load() { PGOPTIONS="-c search_path=${schema}_load -c client_min_messages=warning" psql -q "$pg" "$@"; }
# The pieces the server would send: at most 256 KiB of events each (a
# row's event id, body and an 8-byte stamp, `EVENT_BYTES_PER_ARRAY_INSERT`
# in storage/src/feed.rs), as three arrays, kept uncompressed (reading them back costs a copy, not a decompression).
load -c "CREATE TABLE pieces (piece BIGINT, e TEXT[], b TEXT[], r TIMESTAMP[])" \
    -c "ALTER TABLE pieces ALTER e SET STORAGE EXTERNAL, ALTER b SET STORAGE EXTERNAL, ALTER r SET STORAGE EXTERNAL" \
    -c "INSERT INTO pieces SELECT (upto - 1) / 262144, array_agg(event_id ORDER BY id), array_agg(body ORDER BY id), array_agg(received_at ORDER BY id) FROM (SELECT id, sum(coalesce(octet_length(event_id), 0) + octet_length(body) + 8) OVER (ORDER BY id) AS upto, event_id, body, received_at FROM $schema.events) numbered GROUP BY 1"
timed() { # label, then psql arguments: prints rows/s
    load -c "TRUNCATE events" -c "CHECKPOINT"
    local start
    start=$(now)
    load "$@"
    awk -v r="$rows" -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", r / (b - a) }'
}
psql -q "$pg" -c "\\copy (SELECT event_id, body, received_at FROM $schema.events ORDER BY id) TO '$scratch/rows.csv' CSV"
split -n l/2 -d "$scratch/rows.csv" "$scratch/half."
two_streams() { # prints rows/s
    load -c "TRUNCATE events" -c "CHECKPOINT"
    local start loaders=()
    start=$(now)
    for half in "$scratch"/half.*; do
        load -c "\\copy events(event_id, body, received_at) FROM '$half' CSV" &
        loaders+=("$!")
    done
    for loader in "${loaders[@]}"; do wait "$loader"; done
    awk -v r="$rows" -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", r / (b - a) }'
}
copies=()
inserts=()
ones=()
twos=()
for _ in $(seq 1 "$rounds"); do
    copies+=("$(timed -c "\\copy events(event_id, body, received_at) FROM '$scratch/rows.bin' WITH (FORMAT binary)")")
    ones+=("$(timed -c "\\copy events(event_id, body, received_at) FROM '$scratch/rows.csv' CSV")")
    twos+=("$(two_streams)")
    # One statement a piece, as the server sends them.
    inserts+=("$(timed -c "DO \$\$ DECLARE p RECORD; f BIGINT; BEGIN FOR p IN SELECT * FROM pieces ORDER BY piece LOOP f := reserve_event_ids(cardinality(p.e)); INSERT INTO events (id, event_id, body, received_at) OVERRIDING SYSTEM VALUE SELECT f + t.n - 1, t.e, t.b, t.r FROM unnest(p.e, p.b, p.r) WITH ORDINALITY AS t(e, b, r, n); END LOOP; END \$\$")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
copy=$(median "${copies[@]}")
insert=$(median "${inserts[@]}")
one=$(median "${ones[@]}")
two=$(median "${twos[@]}")

cat <<TABLE
Measured $(date -u +%Y-%m-%d) on $(nproc) cores, ${secs} s of durable StreamEventBatches into PostgreSQL (server on CPU 0, load on CPU 1; 4 streams x 1,000-event batches, window 8, the twelve-step pipeline): $rate events/s.

CPU used over the run's middle $((secs - 4)) s, in cores:

| process | cores |
|---|---|
$(cat "$scratch/cpu.md")

The log consumer over the same window: $(awk -v w=$((secs - 4)) 'NR == 1 { p = $1; c = $2; n = $3 } NR == 2 { p = $1 - p; c = $2 - c; printf "%d commits; the pipeline %.2f of the time; commits on their way %.2f on average (up to two at once: above 1, they overlapped)", $3 - n, p / w, c / w }' "$scratch/consumer.before" "$scratch/consumer.after") (\`orderflow_log_pipeline_seconds\`, \`orderflow_log_commit_seconds\`).

What the server's connections were doing over the same window (share of samples of \`pg_stat_activity\`; each active connection counts once per sample, so the shares add up to the average number busy):

| wait (or on CPU) | statement | share |
|---|---|---|
$(cat "$scratch/waits.md")

PostgreSQL alone storing the same $rows rows into an empty events table (median of $rounds alternated rounds; each from a checkpoint):

| how | rows/s | rounds |
|---|---|---|
| binary COPY (\`psql \\copy ... (FORMAT binary)\`) | $copy | ${copies[*]} |
| the server's statement, one a piece: ids reserved, arrays of at most 256 KiB, \`unnest ... WITH ORDINALITY\` | $insert | ${inserts[*]} |
| ratio, the server's statement / binary COPY | $(awk -v a="$insert" -v b="$copy" 'BEGIN { printf "%.2f", a / b }') | |
| text \`\\copy\`, one stream | $one | ${ones[*]} |
| text \`\\copy\`, two streams of half the rows each, side by side | $two | ${twos[*]} |
| ratio, two streams / one (the most two commits on their way can add) | $(awk -v a="$two" -v b="$one" 'BEGIN { printf "%.2f", a / b }') | |
TABLE
