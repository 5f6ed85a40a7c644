#!/usr/bin/env bash
# Unary PublishEvent on two builds, alternated in the same hour: CALLERS
# concurrent callers of `loadgen --workload publish-one` (one event a call)
# for SECONDS against each build's server on a fresh SQLite database
# (server on CPU 0, load on CPU 1, this tree's loadgen for both), ROUNDS
# times. Prints each run (events/s accepted, p50, p99, errors) and the
# median NEW/OLD throughput ratio. For issue #30: durable PublishEvent
# against the in-memory build before it (`OLD` = a build of 9ac9746^).
#
# Usage: scripts/bench-publish-ab.sh OLD_BIN_DIR NEW_BIN_DIR [ROUNDS] [SECONDS] [CALLERS]
#        (defaults 3, 10, 64; NEW_BIN_DIR's loadgen drives both)
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1
new=$2
rounds=${3:-3}
seconds=${4:-10}
callers=${5:-64}
scratch=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$scratch"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

run() { # NAME BIN_DIR
    local port db
    port=$(free_port)
    db="$scratch/$1-$RANDOM.db"
    DATABASE_URL="$db" ORDERFLOW_LISTEN="127.0.0.1:$port" ORDERFLOW_METRICS_LISTEN="127.0.0.1:$(free_port)" \
        RUST_LOG=warn taskset -c 0 "$2/orderflow" >"$scratch/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    taskset -c 1 "$new/loadgen" --target "http://127.0.0.1:$port" --json --workload publish-one \
        --concurrency "$callers" --duration "${seconds}s" >"$scratch/load.json"
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    python3 - "$1" "$scratch/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"{sys.argv[1]}\t{r['events_per_second']:.0f}\t{r['p50_us'] / 1000:.2f}\t{r['p99_us'] / 1000:.2f}\t{r['errors']}")
PY
}
echo -e "build\tevents/s\tp50 ms\tp99 ms\terrors"
for _ in $(seq 1 "$rounds"); do
    run old "$old"
    run new "$new"
done | tee "$scratch/runs.tsv"
python3 - "$scratch/runs.tsv" "$callers" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
med = lambda name, col: statistics.median(float(r[col]) for r in rows if r[0] == name)
print(f"{sys.argv[2]} callers: new/old throughput {med('new', 1) / med('old', 1):.2f} "
      f"(medians {med('new', 1):.0f} vs {med('old', 1):.0f} events/s; p50 {med('new', 2)} vs {med('old', 2)} ms; "
      f"p99 {med('new', 3)} vs {med('old', 3)} ms)")
PY
